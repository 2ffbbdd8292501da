//! Pyroscope push, through the Connect API `push.v1.PusherService/Push`
//! (what Grafana Alloy's `pyroscope.write` uses), not the legacy `/ingest`
//! endpoint: labels travel as real label pairs instead of being escaped into a
//! `name=app{k=v}` query parameter, several services go in one request, and the
//! body is the gzipped pprof as is. Connect unary calls are plain HTTP POSTs of
//! the protobuf message (`Content-Type: application/proto`).
//! Messages: <https://github.com/grafana/pyroscope/blob/main/api/push/v1/push.proto>.

use std::time::Duration;

use prost::Message as _;

use crate::profile::Profile;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawSample {
    /// A pprof profile, gzipped or not.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    #[prost(string, tag = "2")]
    pub id: String,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// The request path under the server URL.
pub const PUSH_PATH: &str = "/push.v1.PusherService/Push";

/// The short labels Grafana's Kubernetes profile views (and Alloy's
/// `pyroscope.ebpf`) use, beside the OpenTelemetry-named ones.
const ALIASES: &[(&str, &str)] = &[
    ("k8s.namespace.name", "namespace"),
    ("k8s.pod.name", "pod"),
    ("k8s.container.name", "container"),
    ("k8s.node.name", "node"),
];

/// Series labels of a profile: `__name__="process_cpu"`, `service_name`, and
/// the resource attributes with Prometheus-style names (`host.name` →
/// `host_name`; the pod's also as [`ALIASES`]), sorted by name as Pyroscope
/// requires.
pub fn labels(profile: &Profile) -> Vec<LabelPair> {
    let mut labels = vec![
        LabelPair {
            name: "__name__".into(),
            value: "process_cpu".into(),
        },
        LabelPair {
            name: "service_name".into(),
            value: profile.target.service_name.clone(),
        },
    ];
    for (key, value) in &profile.target.attributes {
        let alias = ALIASES
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, a)| (*a).to_string());
        for name in std::iter::once(label_name(key)).chain(alias) {
            if !value.is_empty() && !labels.iter().any(|l| l.name == name) {
                labels.push(LabelPair {
                    name,
                    value: value.clone(),
                });
            }
        }
    }
    labels.sort();
    labels
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: other characters become `_`.
pub fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// Pushes to one Pyroscope server.
pub struct PyroscopeClient {
    url: String,
    auth: Option<(String, String)>,
    tenant: Option<String>,
    http: reqwest::Client,
}

impl PyroscopeClient {
    /// `base_url` like `http://pyroscope:4040`; `user:password@` in it is sent
    /// as basic auth. `tenant` sets `X-Scope-OrgID` (multi-tenant servers).
    pub fn new(
        base_url: &str,
        tenant: Option<String>,
        timeout: Duration,
    ) -> Result<PyroscopeClient, crate::Error> {
        let mut url = reqwest::Url::parse(base_url)
            .map_err(|e| crate::Error::Export(format!("Pyroscope URL {base_url:?}: {e}")))?;
        let auth = (!url.username().is_empty()).then(|| {
            (
                url.username().to_string(),
                url.password().unwrap_or("").to_string(),
            )
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let url = format!("{}{PUSH_PATH}", url.as_str().trim_end_matches('/'));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| crate::Error::Export(format!("HTTP client: {e}")))?;
        Ok(PyroscopeClient {
            url,
            auth,
            tenant,
            http,
        })
    }

    /// Sends one series per profile (`pprof_gz`: the gzipped pprof of each).
    pub async fn push(&self, profiles: &[(&Profile, &[u8])]) -> Result<(), crate::Error> {
        let request = PushRequest {
            series: profiles
                .iter()
                .map(|(profile, pprof)| RawProfileSeries {
                    labels: labels(profile),
                    samples: vec![RawSample {
                        raw_profile: pprof.to_vec(),
                        id: String::new(),
                    }],
                })
                .collect(),
        };
        let mut post = self
            .http
            .post(&self.url)
            .header("content-type", "application/proto")
            .header("connect-protocol-version", "1");
        if let Some((user, password)) = &self.auth {
            post = post.basic_auth(user, Some(password));
        }
        if let Some(tenant) = &self.tenant {
            post = post.header("x-scope-orgid", tenant);
        }
        let response = post
            .body(request.encode_to_vec())
            .send()
            .await
            .map_err(|e| crate::Error::Export(format!("POST {}: {e}", self.url)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(crate::Error::Export(format!(
                "POST {}: {status} {body}",
                self.url
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_follow_prometheus_rules() {
        assert_eq!(label_name("host.name"), "host_name");
        assert_eq!(label_name("k8s.pod.name"), "k8s_pod_name");
        assert_eq!(label_name("9lives"), "_9lives");
    }

    #[test]
    fn pod_attributes_also_get_the_short_kubernetes_labels() {
        let mut profile = crate::testing::profile();
        profile.target = std::sync::Arc::new(crate::Target {
            service_name: "web".into(),
            attributes: vec![
                ("k8s.namespace.name".into(), "shop".into()),
                ("k8s.pod.name".into(), "web-1".into()),
                ("k8s.container.name".into(), "app".into()),
                ("host.name".into(), "node-1".into()),
            ],
        });
        let labels: Vec<(String, String)> = labels(&profile)
            .into_iter()
            .map(|l| (l.name, l.value))
            .collect();
        let has = |n: &str, v: &str| labels.contains(&(n.to_string(), v.to_string()));
        assert!(has("service_name", "web"));
        assert!(has("namespace", "shop") && has("k8s_namespace_name", "shop"));
        assert!(has("pod", "web-1") && has("container", "app"));
        assert!(has("host_name", "node-1"));
        assert!(labels.windows(2).all(|w| w[0].0 < w[1].0), "sorted, unique");
    }
}

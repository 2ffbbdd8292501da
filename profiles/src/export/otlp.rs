//! OTLP profiles (`opentelemetry.proto.profiles.v1development`): the same
//! profiles as pprof, with one dictionary shared by every service in a request.
//! Sent with gRPC (`ProfilesService/Export`) or HTTP (`POST /v1development/profiles`).

use std::{collections::HashMap, time::Duration};

use opentelemetry_proto::tonic::{
    collector::profiles::v1development::{
        ExportProfilesServiceRequest, profiles_service_client::ProfilesServiceClient,
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    profiles::v1development as otlp,
    resource::v1::Resource,
};
use prost::Message as _;

use crate::{
    profile::{Link, Profile},
    symbolize::MappingInfo,
};

/// Interning tables of a request's dictionary; index 0 of each is the zero value.
struct Dictionary {
    dict: otlp::ProfilesDictionary,
    strings: HashMap<String, i32>,
    mappings: HashMap<MappingInfo, i32>,
    locations: HashMap<(i32, u64, i32), i32>,
    functions: HashMap<(i32, i32), i32>,
    stacks: HashMap<Vec<i32>, i32>,
    attributes: HashMap<(i32, String), i32>,
    links: HashMap<Link, i32>,
}

impl Dictionary {
    fn new() -> Dictionary {
        let mut d = Dictionary {
            dict: otlp::ProfilesDictionary {
                mapping_table: vec![otlp::Mapping::default()],
                location_table: vec![otlp::Location::default()],
                function_table: vec![otlp::Function::default()],
                link_table: vec![otlp::Link::default()],
                string_table: Vec::new(),
                attribute_table: vec![otlp::KeyValueAndUnit::default()],
                stack_table: vec![otlp::Stack::default()],
            },
            strings: HashMap::new(),
            mappings: HashMap::new(),
            locations: HashMap::new(),
            functions: HashMap::new(),
            stacks: HashMap::new(),
            attributes: HashMap::new(),
            links: HashMap::new(),
        };
        d.string("");
        d
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.dict.string_table.len() as i32;
        self.dict.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn attribute(&mut self, key: &str, value: any_value::Value) -> i32 {
        let key_index = self.string(key);
        let id = (key_index, format!("{value:?}"));
        if let Some(&i) = self.attributes.get(&id) {
            return i;
        }
        let i = self.dict.attribute_table.len() as i32;
        self.dict.attribute_table.push(otlp::KeyValueAndUnit {
            key_strindex: key_index,
            value: Some(AnyValue { value: Some(value) }),
            unit_strindex: 0,
        });
        self.attributes.insert(id, i);
        i
    }

    fn mapping(&mut self, m: &MappingInfo) -> i32 {
        if let Some(&i) = self.mappings.get(m) {
            return i;
        }
        let filename = self.string(&m.file);
        let attribute_indices = if m.build_id.is_empty() {
            Vec::new()
        } else {
            vec![self.attribute(
                "process.executable.build_id.gnu",
                any_value::Value::StringValue(m.build_id.to_string()),
            )]
        };
        let i = self.dict.mapping_table.len() as i32;
        self.dict.mapping_table.push(otlp::Mapping {
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename_strindex: filename,
            attribute_indices,
        });
        self.mappings.insert(m.clone(), i);
        i
    }

    fn location(&mut self, frame: &crate::symbolize::Frame) -> i32 {
        let mapping = self.mapping(&frame.mapping);
        let pseudo = match (frame.address, frame.lines.first()) {
            (0, Some(l)) => self.string(&l.function),
            _ => 0,
        };
        if let Some(&i) = self.locations.get(&(mapping, frame.address, pseudo)) {
            return i;
        }
        let mut lines = Vec::with_capacity(frame.lines.len());
        for l in frame.lines.iter() {
            let name = self.string(&l.function);
            let file = l.file.as_deref().map_or(0, |f| self.string(f));
            let next = self.dict.function_table.len() as i32;
            let function = *self.functions.entry((name, file)).or_insert(next);
            if function == next {
                self.dict.function_table.push(otlp::Function {
                    name_strindex: name,
                    system_name_strindex: name,
                    filename_strindex: file,
                    start_line: 0,
                });
            }
            lines.push(otlp::Line {
                function_index: function,
                line: i64::from(l.line),
                column: 0,
            });
        }
        let i = self.dict.location_table.len() as i32;
        self.dict.location_table.push(otlp::Location {
            mapping_index: mapping,
            address: frame.address,
            lines,
            attribute_indices: Vec::new(),
        });
        self.locations.insert((mapping, frame.address, pseudo), i);
        i
    }

    /// The link table entry of a sample's span; 0 (no link) when its trace
    /// is unknown, since a link needs both ids.
    fn link(&mut self, link: &Link) -> i32 {
        let Some(trace_id) = link.trace_id else {
            return 0;
        };
        if let Some(&i) = self.links.get(link) {
            return i;
        }
        let i = self.dict.link_table.len() as i32;
        self.dict.link_table.push(otlp::Link {
            trace_id: trace_id.to_vec(),
            span_id: link.span_id.to_vec(),
        });
        self.links.insert(*link, i);
        i
    }

    fn stack(&mut self, locations: Vec<i32>) -> i32 {
        if let Some(&i) = self.stacks.get(&locations) {
            return i;
        }
        let i = self.dict.stack_table.len() as i32;
        self.dict.stack_table.push(otlp::Stack {
            location_indices: locations.clone(),
        });
        self.stacks.insert(locations, i);
        i
    }
}

/// One request with a resource per service.
pub fn request(profiles: &[Profile]) -> ExportProfilesServiceRequest {
    let mut d = Dictionary::new();
    let (cpu, nanoseconds) = (d.string("cpu"), d.string("nanoseconds"));
    let value_type = otlp::ValueType {
        type_strindex: cpu,
        unit_strindex: nanoseconds,
    };
    let mut resource_profiles = Vec::with_capacity(profiles.len());
    for profile in profiles {
        let mut samples = Vec::with_capacity(profile.samples.len());
        for sample in &profile.samples {
            let locations = sample.frames.iter().map(|f| d.location(f)).collect();
            let stack_index = d.stack(locations);
            let mut attribute_indices = Vec::with_capacity(2);
            if sample.pid != 0 {
                attribute_indices.push(d.attribute(
                    "process.pid",
                    any_value::Value::IntValue(i64::from(sample.pid)),
                ));
            }
            if !sample.thread.is_empty() {
                attribute_indices.push(d.attribute(
                    "thread.name",
                    any_value::Value::StringValue(sample.thread.to_string()),
                ));
            }
            let link_index = sample.link.as_ref().map_or(0, |link| d.link(link));
            samples.push(otlp::Sample {
                stack_index,
                attribute_indices,
                link_index,
                values: vec![
                    i64::try_from(sample.count.saturating_mul(profile.period_ns))
                        .unwrap_or(i64::MAX),
                ],
                timestamps_unix_nano: Vec::new(),
            });
        }
        let mut attributes = vec![string_kv("service.name", &profile.target.service_name)];
        attributes.extend(
            profile
                .target
                .attributes
                .iter()
                .map(|(k, v)| string_kv(k, v)),
        );
        resource_profiles.push(otlp::ResourceProfiles {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_profiles: vec![otlp::ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: "agent".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                profiles: vec![otlp::Profile {
                    sample_type: Some(value_type),
                    samples,
                    time_unix_nano: profile.start_unix_ns,
                    duration_nano: profile.duration_ns,
                    period_type: Some(value_type),
                    period: i64::try_from(profile.period_ns).unwrap_or(0),
                    profile_id: profile_id(profile),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
    }
    ExportProfilesServiceRequest {
        resource_profiles,
        dictionary: Some(d.dict),
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// A 16-byte id unique per (service, interval), never all zeroes.
fn profile_id(profile: &Profile) -> Vec<u8> {
    use std::hash::BuildHasher as _;
    let state = std::collections::hash_map::RandomState::new();
    let mut id = Vec::with_capacity(16);
    for salt in 0..2u8 {
        let h = state.hash_one((salt, &profile.target, profile.start_unix_ns));
        id.extend_from_slice(&h.to_be_bytes());
    }
    id[15] |= 1;
    id
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Where and how to send OTLP profiles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    pub protocol: Protocol,
    /// gRPC: the collector's base URL. HTTP: the full URL of the profiles path.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub gzip: bool,
}

/// Sends requests to one collector.
pub struct OtlpExporter {
    config: OtlpConfig,
    http: reqwest::Client,
    grpc: Option<ProfilesServiceClient<tonic::transport::Channel>>,
}

impl OtlpExporter {
    pub fn new(config: OtlpConfig) -> Result<OtlpExporter, crate::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| crate::Error::Export(format!("HTTP client: {e}")))?;
        Ok(OtlpExporter {
            config,
            http,
            grpc: None,
        })
    }

    pub async fn export(
        &mut self,
        request: ExportProfilesServiceRequest,
    ) -> Result<(), crate::Error> {
        match self.config.protocol {
            Protocol::HttpProtobuf => self.export_http(request).await,
            Protocol::Grpc => self.export_grpc(request).await,
        }
    }

    async fn export_http(&self, request: ExportProfilesServiceRequest) -> Result<(), crate::Error> {
        let mut body = request.encode_to_vec();
        let mut post = self
            .http
            .post(&self.config.endpoint)
            .header("content-type", "application/x-protobuf");
        if self.config.gzip {
            body = crate::gzip_bytes(&body);
            post = post.header("content-encoding", "gzip");
        }
        for (k, v) in &self.config.headers {
            post = post.header(k, v);
        }
        let response = post
            .body(body)
            .send()
            .await
            .map_err(|e| crate::Error::Export(format!("POST {}: {e}", self.config.endpoint)))?;
        if !response.status().is_success() {
            return Err(crate::Error::Export(format!(
                "POST {}: {}",
                self.config.endpoint,
                response.status()
            )));
        }
        Ok(())
    }

    async fn export_grpc(
        &mut self,
        request: ExportProfilesServiceRequest,
    ) -> Result<(), crate::Error> {
        if self.grpc.is_none() {
            let channel = tonic::transport::Endpoint::from_shared(self.config.endpoint.clone())
                .map_err(|e| crate::Error::Export(format!("{}: {e}", self.config.endpoint)))?
                .timeout(self.config.timeout)
                .connect_timeout(self.config.timeout)
                .connect_lazy();
            let mut client = ProfilesServiceClient::new(channel);
            if self.config.gzip {
                client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
            }
            self.grpc = Some(client);
        }
        let Some(client) = self.grpc.as_mut() else {
            return Ok(());
        };
        let mut req = tonic::Request::new(request);
        for (k, v) in &self.config.headers {
            if let (Ok(k), Ok(v)) = (
                k.to_ascii_lowercase()
                    .parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
                v.parse(),
            ) {
                req.metadata_mut().insert(k, v);
            }
        }
        client
            .export(req)
            .await
            .map(|_| ())
            .map_err(|status| crate::Error::Export(format!("{}: {status}", self.config.endpoint)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn one_dictionary_with_zero_values_first_and_shared_entries() {
        let a = testing::profile();
        let mut b = testing::profile();
        b.target = std::sync::Arc::new(crate::Target {
            service_name: "other".into(),
            attributes: Vec::new(),
        });
        let request = request(&[a, b]);
        let d = request.dictionary.as_ref().unwrap();
        assert_eq!(d.string_table[0], "");
        assert_eq!(d.mapping_table[0], otlp::Mapping::default());
        assert_eq!(d.location_table[0], otlp::Location::default());
        assert_eq!(d.function_table[0], otlp::Function::default());
        assert_eq!(d.stack_table[0], otlp::Stack::default());
        assert_eq!(d.attribute_table[0], otlp::KeyValueAndUnit::default());
        // Both services' stacks share the dictionary: 3 stacks, 5 locations.
        assert_eq!(d.stack_table.len(), 1 + 3);
        assert_eq!(d.location_table.len(), 1 + 5);
        assert_eq!(request.resource_profiles.len(), 2);
        let p = &request.resource_profiles[0].scope_profiles[0].profiles[0];
        assert_eq!(p.samples.len(), 3);
        assert_eq!(p.samples[0].values, vec![3 * 52_631_578]);
        assert_eq!(p.profile_id.len(), 16);
        for s in &p.samples {
            assert!((s.stack_index as usize) < d.stack_table.len());
            for &a in &s.attribute_indices {
                let kv = &d.attribute_table[a as usize];
                let key = &d.string_table[kv.key_strindex as usize];
                assert!(key == "process.pid" || key == "thread.name", "{key}");
            }
        }
        // One link, shared by both services' linked samples; 0 means none.
        assert_eq!(d.link_table.len(), 2);
        assert_eq!(d.link_table[1].trace_id, vec![0x11; 16]);
        assert_eq!(d.link_table[1].span_id, testing::LINK.span_id.to_vec());
        let links: Vec<i32> = p.samples.iter().map(|s| s.link_index).collect();
        assert_eq!(links, [1, 0, 0]);
        let mut unknown_trace = testing::profile();
        unknown_trace.samples[0].link = Some(Link {
            trace_id: None,
            ..testing::LINK
        });
        let lone = super::request(&[unknown_trace]);
        assert_eq!(lone.dictionary.as_ref().unwrap().link_table.len(), 1);
        let build_ids: Vec<_> = d
            .mapping_table
            .iter()
            .flat_map(|m| &m.attribute_indices)
            .map(|&a| &d.attribute_table[a as usize])
            .collect();
        assert_eq!(build_ids.len(), 1, "only the mapping with a build id");
    }
}

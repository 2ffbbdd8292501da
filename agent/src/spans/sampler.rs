//! Which spans are kept. Errors and slow spans always; the rest by a ratio decided
//! on the trace id, so every agent keeps or drops the same traces whole.
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` are honoured
//! (<https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/>).

use anyhow::bail;

use super::{Span, Status};

#[derive(Clone, Debug, PartialEq)]
pub struct Sampler {
    /// Fraction of ordinary traces kept, 0.0–1.0.
    pub ratio: f64,
    /// Follow the sampled flag of an incoming `traceparent` (parentbased_*).
    pub parent_based: bool,
    /// Spans at least this long are always kept.
    pub slow_ns: u64,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            ratio: 1.0,
            parent_based: true,
            slow_ns: 500_000_000,
        }
    }
}

impl Sampler {
    /// From `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (either may be unset).
    pub fn from_env(
        sampler: Option<&str>,
        arg: Option<&str>,
        slow_ns: u64,
    ) -> anyhow::Result<Sampler> {
        let ratio_arg = || -> anyhow::Result<f64> {
            match arg {
                None => Ok(1.0),
                Some(a) => match a.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => {
                        bail!("OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1, got {a:?}")
                    }
                },
            }
        };
        let (ratio, parent_based) = match sampler.map(str::trim) {
            None | Some("parentbased_always_on") => (1.0, true),
            Some("always_on") => (1.0, false),
            Some("always_off") => (0.0, false),
            Some("parentbased_always_off") => (0.0, true),
            Some("traceidratio") => (ratio_arg()?, false),
            Some("parentbased_traceidratio") => (ratio_arg()?, true),
            Some(other) => bail!("unsupported OTEL_TRACES_SAMPLER {other:?}"),
        };
        Ok(Sampler {
            ratio,
            parent_based,
            slow_ns,
        })
    }

    /// `parent_sampled`: the sampled flag of an incoming traceparent, if any.
    pub fn keep(&self, span: &Span, parent_sampled: Option<bool>) -> bool {
        self.keeps(
            span.status == Status::Error,
            span.duration_ns(),
            &span.trace_id,
            parent_sampled,
        )
    }

    /// The same decision from what a span would carry, before building it.
    pub fn keeps(
        &self,
        error: bool,
        duration_ns: u64,
        trace_id: &[u8; 16],
        parent_sampled: Option<bool>,
    ) -> bool {
        if error || duration_ns >= self.slow_ns {
            return true;
        }
        if self.parent_based
            && let Some(sampled) = parent_sampled
        {
            return sampled;
        }
        self.ratio_keeps(trace_id)
    }

    /// The trace-id ratio rule: the low 8 bytes of the id against the ratio.
    fn ratio_keeps(&self, trace_id: &[u8; 16]) -> bool {
        if self.ratio >= 1.0 {
            return true;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        let x = u64::from_be_bytes(low) >> 1; // 63 bits, as the SDKs do
        (x as f64) < self.ratio * (1u64 << 63) as f64
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{discovery::Resource, spans::SpanKind};

    fn span(trace_low: u64, status: Status, duration: u64) -> Span {
        let mut trace_id = [0u8; 16];
        trace_id[8..].copy_from_slice(&trace_low.to_be_bytes());
        Span {
            trace_id,
            span_id: [1; 8],
            parent_span_id: None,
            trace_state: None,
            trace_flags: 1,
            name: "GET".into(),
            kind: SpanKind::Server,
            start_time_unix_nano: 0,
            end_time_unix_nano: duration,
            attributes: Vec::new(),
            status,
            resource: Arc::new(Resource {
                service_name: "s".into(),
                service_instance_id: "i".into(),
                pid: 1,
                executable_name: "s".into(),
                executable_path: "/s".into(),
                host_name: "h".into(),
                host_arch: "amd64",
                ..Resource::default()
            }),
        }
    }

    #[test]
    fn errors_and_slow_spans_are_always_kept() {
        let s = Sampler::from_env(Some("always_off"), None, 1000).unwrap();
        assert!(!s.keep(&span(1, Status::Unset, 10), None));
        assert!(s.keep(&span(1, Status::Error, 10), None));
        assert!(s.keep(&span(1, Status::Unset, 1000), None));
    }

    #[test]
    fn ratio_is_decided_by_trace_id() {
        let s = Sampler::from_env(Some("traceidratio"), Some("0.25"), u64::MAX).unwrap();
        let kept = (0..10_000u64)
            .filter(|i| {
                s.keep(
                    &span(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), Status::Unset, 1),
                    None,
                )
            })
            .count();
        assert!((2300..2700).contains(&kept), "{kept}");
        // Same trace, same decision.
        let a = span(0xdead_beef_0000_0000, Status::Unset, 1);
        assert_eq!(s.keep(&a, None), s.keep(&a, None));
    }

    #[test]
    fn parent_based_follows_the_incoming_flag() {
        let s = Sampler::from_env(Some("parentbased_traceidratio"), Some("0"), u64::MAX).unwrap();
        assert!(s.keep(&span(5, Status::Unset, 1), Some(true)));
        assert!(!s.keep(&span(5, Status::Unset, 1), None));
        assert!(Sampler::from_env(Some("traceidratio"), Some("2"), 0).is_err());
        assert!(Sampler::from_env(Some("jaeger_remote"), None, 0).is_err());
        assert_eq!(Sampler::from_env(None, None, 7).unwrap().ratio, 1.0);
    }
}

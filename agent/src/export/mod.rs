//! Where telemetry leaves the agent: Prometheus scrape endpoint, JSON lines on
//! stdout (and, next, OTLP).

pub mod otlp;
pub mod prometheus_server;
pub mod stdout;

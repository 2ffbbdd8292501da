//! An OTLP receiver for the tests, on `opentelemetry-proto`'s generated types: the
//! tonic `TraceService`/`MetricsService`/`LogsService` for gRPC, and `POST
//! /v1/traces`, `/v1/metrics`, `/v1/logs` decoded with prost for
//! HTTP/protobuf. It keeps every request.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming};
use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use prost::Message as _;
use tokio::{net::TcpListener, sync::mpsc};

use crate::http_receiver::{self, status};

/// What the receiver got.
pub struct Received {
    pub traces: mpsc::Receiver<ExportTraceServiceRequest>,
    pub metrics: mpsc::Receiver<ExportMetricsServiceRequest>,
    pub logs: mpsc::Receiver<ExportLogsServiceRequest>,
}

const QUEUE: usize = 4096;

#[derive(Clone)]
struct Sink {
    traces: mpsc::Sender<ExportTraceServiceRequest>,
    metrics: mpsc::Sender<ExportMetricsServiceRequest>,
    logs: mpsc::Sender<ExportLogsServiceRequest>,
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let _ = self.logs.send(request.into_inner()).await;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.traces.send(request.into_inner()).await;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let _ = self.metrics.send(request.into_inner()).await;
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn channels() -> (Sink, Received) {
    let (traces, traces_rx) = mpsc::channel(QUEUE);
    let (metrics, metrics_rx) = mpsc::channel(QUEUE);
    let (logs, logs_rx) = mpsc::channel(QUEUE);
    (
        Sink {
            traces,
            metrics,
            logs,
        },
        Received {
            traces: traces_rx,
            metrics: metrics_rx,
            logs: logs_rx,
        },
    )
}

/// A gRPC receiver on a free loopback port.
pub async fn grpc() -> anyhow::Result<(SocketAddr, Received)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (sink, received) = channels();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(sink.clone())
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .add_service(
                MetricsServiceServer::new(sink.clone())
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .add_service(
                LogsServiceServer::new(sink)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok((addr, received))
}

/// An HTTP/protobuf receiver on a free loopback port.
pub async fn http() -> anyhow::Result<(SocketAddr, Received)> {
    let (sink, received) = channels();
    let addr = http_receiver::serve(move |req| handle(req, sink.clone())).await?;
    Ok((addr, received))
}

async fn handle(req: Request<Incoming>, sink: Sink) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let Some(body) = http_receiver::body(req).await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let ok = match path.as_str() {
        "/v1/traces" => match ExportTraceServiceRequest::decode(body) {
            Ok(r) => sink.traces.send(r).await.is_ok(),
            Err(_) => false,
        },
        "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(r) => sink.metrics.send(r).await.is_ok(),
            Err(_) => false,
        },
        "/v1/logs" => match ExportLogsServiceRequest::decode(body) {
            Ok(r) => sink.logs.send(r).await.is_ok(),
            Err(_) => false,
        },
        _ => return status(StatusCode::NOT_FOUND),
    };
    status(if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    })
}

impl Received {
    /// Collects trace requests until `done` holds over them, or the deadline.
    pub async fn traces_until(
        &mut self,
        deadline: Duration,
        done: impl Fn(&[ExportTraceServiceRequest]) -> bool,
    ) -> Vec<ExportTraceServiceRequest> {
        let mut got = Vec::new();
        let until = tokio::time::Instant::now() + deadline;
        while !done(&got) {
            match tokio::time::timeout_at(until, self.traces.recv()).await {
                Ok(Some(r)) => got.push(r),
                _ => break,
            }
        }
        got
    }

    /// Collects metric requests until `done` holds over them, or the deadline.
    pub async fn metrics_until(
        &mut self,
        deadline: Duration,
        done: impl Fn(&[ExportMetricsServiceRequest]) -> bool,
    ) -> Vec<ExportMetricsServiceRequest> {
        let mut got = Vec::new();
        let until = tokio::time::Instant::now() + deadline;
        while !done(&got) {
            match tokio::time::timeout_at(until, self.metrics.recv()).await {
                Ok(Some(r)) => got.push(r),
                _ => break,
            }
        }
        got
    }
}

/// The agent's OTLP settings for tests: both signals over `protocol` to
/// these endpoints, short batching and metric intervals, and `resource`
/// added to every resource.
pub fn settings(
    protocol: agent::export::otlp::Protocol,
    traces: String,
    metrics: String,
    resource: Vec<(String, String)>,
) -> agent::export::otlp::OtlpSettings {
    agent::export::otlp::OtlpSettings {
        traces: Some(protocol),
        metrics: Some(protocol),
        logs: None,
        traces_endpoint: Some(traces),
        metrics_endpoint: Some(metrics),
        logs_endpoint: None,
        batching: agent::export::otlp::Batching {
            max_queue: 2048,
            delay: std::time::Duration::from_millis(100),
            max_batch: 512,
            timeout: std::time::Duration::from_secs(5),
        },
        metric_interval: std::time::Duration::from_millis(300),
        resource_attributes: resource,
    }
}

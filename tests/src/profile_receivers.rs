//! Receivers of profiles for the tests: a Pyroscope push endpoint
//! (`POST /push.v1.PusherService/Push`, Connect unary, protobuf body) and an
//! OTLP `ProfilesService` on gRPC (`opentelemetry-proto` types). Both keep
//! every request they get.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
    profiles_service_server::{ProfilesService, ProfilesServiceServer},
};
use profiles::export::pyroscope::PushRequest;
use prost::Message as _;
use tokio::{net::TcpListener, sync::mpsc};

use crate::http_receiver::{self, status};

/// One push as the server saw it.
#[derive(Debug)]
pub struct Push {
    pub path: String,
    pub content_type: String,
    pub request: PushRequest,
}

impl Push {
    /// The series of the service `service_name`, if pushed.
    pub fn series(
        &self,
        service_name: &str,
    ) -> Option<&profiles::export::pyroscope::RawProfileSeries> {
        self.request.series.iter().find(|s| {
            s.labels
                .iter()
                .any(|l| l.name == "service_name" && l.value == service_name)
        })
    }
}

/// A Pyroscope stand-in on a free loopback port.
pub async fn pyroscope() -> anyhow::Result<(SocketAddr, mpsc::Receiver<Push>)> {
    let (tx, rx) = mpsc::channel(64);
    let addr = http_receiver::serve(move |req| push(req, tx.clone())).await?;
    Ok((addr, rx))
}

async fn push(req: Request<Incoming>, tx: mpsc::Sender<Push>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(Ok(request)) = http_receiver::body(req).await.map(PushRequest::decode) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let _ = tx
        .send(Push {
            path,
            content_type,
            request,
        })
        .await;
    // Connect: an empty PushResponse.
    status(StatusCode::OK)
}

/// An OTLP profiles HTTP/protobuf receiver (`POST /v1development/profiles`,
/// gzip accepted) on a free loopback port.
pub async fn otlp_profiles_http()
-> anyhow::Result<(SocketAddr, mpsc::Receiver<ExportProfilesServiceRequest>)> {
    let (tx, rx) = mpsc::channel(64);
    let addr = http_receiver::serve(move |req| otlp_http(req, tx.clone())).await?;
    Ok((addr, rx))
}

async fn otlp_http(
    req: Request<Incoming>,
    tx: mpsc::Sender<ExportProfilesServiceRequest>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/v1development/profiles"
        || req
            .headers()
            .get("content-type")
            .is_none_or(|v| v.as_bytes() != b"application/x-protobuf")
    {
        return status(StatusCode::NOT_FOUND);
    }
    match http_receiver::body(req)
        .await
        .map(ExportProfilesServiceRequest::decode)
    {
        Some(Ok(request)) => {
            let _ = tx.send(request).await;
            status(StatusCode::OK)
        }
        _ => status(StatusCode::BAD_REQUEST),
    }
}

struct Sink(mpsc::Sender<ExportProfilesServiceRequest>);

#[tonic::async_trait]
impl ProfilesService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportProfilesServiceRequest>,
    ) -> Result<tonic::Response<ExportProfilesServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner()).await;
        Ok(tonic::Response::new(
            ExportProfilesServiceResponse::default(),
        ))
    }
}

/// An OTLP profiles gRPC receiver on a free loopback port.
pub async fn otlp_profiles()
-> anyhow::Result<(SocketAddr, mpsc::Receiver<ExportProfilesServiceRequest>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                ProfilesServiceServer::new(Sink(tx))
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok((addr, rx))
}

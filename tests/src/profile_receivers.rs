//! Receivers of profiles for the tests: a Pyroscope push endpoint
//! (`POST /push.v1.PusherService/Push`, Connect unary, protobuf body) and an
//! OTLP `ProfilesService` on gRPC (`opentelemetry-proto` types). Both keep
//! every request they get.

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
    profiles_service_server::{ProfilesService, ProfilesServiceServer},
};
use profiles::export::pyroscope::PushRequest;
use prost::Message as _;
use tokio::{net::TcpListener, sync::mpsc};

/// One push as the server saw it.
#[derive(Debug)]
pub struct Push {
    pub path: String,
    pub content_type: String,
    pub request: PushRequest,
}

/// A Pyroscope stand-in on a free loopback port.
pub async fn pyroscope() -> anyhow::Result<(SocketAddr, mpsc::Receiver<Push>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move { Ok::<_, Infallible>(push(req, tx).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
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
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(request) = PushRequest::decode(body) else {
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

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
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

/// An OTLP profiles HTTP/protobuf receiver (`POST /v1development/profiles`,
/// gzip accepted) on a free loopback port.
pub async fn otlp_profiles_http()
-> anyhow::Result<(SocketAddr, mpsc::Receiver<ExportProfilesServiceRequest>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move { Ok::<_, Infallible>(otlp_http(req, tx).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
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
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let body = if gzip {
        let mut out = Vec::new();
        if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
            .is_err()
        {
            return status(StatusCode::BAD_REQUEST);
        }
        Bytes::from(out)
    } else {
        body
    };
    match ExportProfilesServiceRequest::decode(body) {
        Ok(request) => {
            let _ = tx.send(request).await;
            status(StatusCode::OK)
        }
        Err(_) => status(StatusCode::BAD_REQUEST),
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

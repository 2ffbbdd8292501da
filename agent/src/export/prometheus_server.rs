//! `GET /metrics` on `--prometheus-listen` (default `127.0.0.1:9464`, the port
//! registered for OpenTelemetry Prometheus exporters), and the probes
//! orchestrators use: `/healthz` (the process serves) and `/readyz` (the
//! kernel programs are attached and the pipeline runs; never a backend's
//! reachability — a collector being down must not take the agent out).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

/// Renders the exposition on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds now (so a bad address fails at start) and serves until shutdown.
pub async fn serve(
    addr: SocketAddr,
    render: Render,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the Prometheus endpoint on {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a scrape connection");
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let render = Arc::clone(&render);
            let ready = Arc::clone(&ready);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let render = Arc::clone(&render);
                    let ready = ready.load(Ordering::Relaxed);
                    async move { Ok::<_, Infallible>(respond(&req, &render, ready)) }
                });
                if let Err(error) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, "scrape connection");
                }
            });
        }
    });
    Ok(bound)
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Status, content type and body for a request (`metrics` renders on demand).
fn route(
    method: &Method,
    path: &str,
    ready: bool,
    metrics: impl FnOnce() -> String,
) -> (StatusCode, &'static str, String) {
    match (method, path) {
        (&Method::GET, "/metrics") => (StatusCode::OK, CONTENT_TYPE, metrics()),
        (&Method::GET, "/healthz") => (StatusCode::OK, TEXT, "ok\n".into()),
        (&Method::GET, "/readyz") if ready => (StatusCode::OK, TEXT, "ready\n".into()),
        (&Method::GET, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "starting: kernel programs not attached yet\n".into(),
        ),
        (&Method::GET, "/") => (
            StatusCode::OK,
            TEXT,
            "agent: Prometheus metrics at /metrics, probes at /healthz and /readyz\n".into(),
        ),
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}

fn respond(req: &Request<Incoming>, render: &Render, ready: bool) -> Response<Full<Bytes>> {
    let (status, content_type, body) = route(req.method(), req.uri().path(), ready, || render());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_say_alive_and_ready_only_once_started() {
        let get = |path: &str, ready: bool| {
            let (status, _, body) = route(&Method::GET, path, ready, || "m".into());
            (status.as_u16(), body)
        };
        assert_eq!(get("/healthz", false), (200, "ok\n".into()));
        assert_eq!(get("/readyz", false).0, 503);
        assert_eq!(get("/readyz", true), (200, "ready\n".into()));
        assert_eq!(get("/metrics", true), (200, "m".into()));
        assert_eq!(get("/nope", true).0, 404);
        assert_eq!(
            route(&Method::POST, "/metrics", true, || "m".into())
                .0
                .as_u16(),
            404
        );
    }
}

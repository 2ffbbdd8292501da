//! Rust HTTP peers for the tests and the benchmark, in their own process so the
//! agent under test observes them:
//!
//! * `http_peer server [PORT]`: a hyper HTTP/1.1 server (keep-alive). Routes:
//!   `/users/<id>` (small JSON), `/status/<code>`, anything else 404. Prints
//!   `listening <port>`.
//! * `http_peer h2server [PORT]`: the same routes over HTTP/2 with prior
//!   knowledge (h2c, no upgrade), e.g. `curl --http2-prior-knowledge`.
//! * `http_peer client URL COUNT [TRACEPARENT]`: reqwest, COUNT sequential GETs
//!   over its keep-alive pool, each with the `traceparent` header if given.
//!   Prints `done <count>`.

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo};

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let (status, body) = if let Some(id) = path.strip_prefix("/users/") {
        (StatusCode::OK, format!("{{\"id\":\"{id}\"}}"))
    } else if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        (status, String::new())
    } else {
        (StatusCode::NOT_FOUND, "not found".into())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}

/// Serves [`handle`] on 127.0.0.1:`port`, HTTP/2 (prior knowledge) or HTTP/1.1.
async fn server(port: u16, h2: bool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening {}", listener.local_addr()?.port());
    loop {
        let (stream, _) = listener.accept().await?;
        let io = TokioIo::new(stream);
        tokio::spawn(async move {
            let _ = if h2 {
                http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service_fn(handle))
                    .await
            } else {
                http1::Builder::new()
                    .serve_connection(io, service_fn(handle))
                    .await
            };
        });
    }
}

async fn client(url: &str, count: usize, traceparent: Option<String>) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().http1_only().build()?;
    for _ in 0..count {
        let mut request = client.get(url);
        if let Some(tp) = &traceparent {
            request = request.header("traceparent", tp);
        }
        let response = request.send().await?;
        response.bytes().await?;
    }
    println!("done {count}");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(mode @ ("server" | "h2server")) => {
            let port = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            server(port, mode == "h2server").await
        }
        Some("client") => {
            let url = args
                .get(1)
                .ok_or_else(|| anyhow::anyhow!("client URL COUNT [TRACEPARENT]"))?;
            let count = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(1);
            client(url, count, args.get(3).cloned()).await
        }
        _ => anyhow::bail!(
            "usage: http_peer server [PORT] | h2server [PORT] | client URL COUNT [TRACEPARENT]"
        ),
    }
}

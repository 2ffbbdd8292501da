//! Rust gRPC peers (tonic over h2c, no protoc, no build script) for the tests
//! and `cargo xtask bench grpc`, in their own process so the agent under test
//! observes them. Service `demo.Echo`, message `Msg { bytes payload = 1 }`, the
//! same methods and answers as `peers/grpc_peer.py`:
//!
//! * `Unary`: echoes the request; a payload `size:N` answers N bytes.
//! * `ServerStream`: payload `N` answers N messages.
//! * `Fail`: aborts with the status code whose name is the payload (`NOT_FOUND`).
//!
//! Modes:
//!
//! * `tonic_peer server [PORT]`: serves on 127.0.0.1 (a free port by default),
//!   prints `listening <port>`, runs until killed. Any h2c client that sends
//!   length-prefixed messages works, e.g. `h2load -d FILE -H 'content-type:
//!   application/grpc' http://127.0.0.1:PORT/demo.Echo/Unary`.
//! * `tonic_peer client PORT COUNT`: on one channel, COUNT `Unary` calls, one
//!   `ServerStream("3")` and one `Fail("NOT_FOUND")`; prints one JSON line
//!   `{"calls":[{"method":"demo.Echo/Unary","code":"OK"},...]}`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    task::{Context, Poll},
};

use serde::Serialize;
use tonic::{
    Code, Request, Response, Status,
    body::Body,
    codegen::{Body as HttpBody, BoxFuture, BoxStream, Service, StdError, http},
    server::{Grpc, NamedService, ServerStreamingService, UnaryService},
};
use tonic_prost::ProstCodec;

const SERVICE: &str = "demo.Echo";

/// One call in the client's report (the fields in `grpc_peer.py`'s order).
#[derive(Serialize)]
struct Call {
    method: String,
    code: String,
}

/// `message Msg { bytes payload = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(bytes = "vec", tag = "1")]
    payload: Vec<u8>,
}

impl Msg {
    fn new(payload: impl Into<Vec<u8>>) -> Msg {
        Msg {
            payload: payload.into(),
        }
    }
}

/// The gRPC name of a code (`NOT_FOUND`), from its Rust name (`NotFound`).
fn code_name(code: Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// The code named `name` (`NOT_FOUND`), if there is one.
fn code_named(name: &str) -> Option<Code> {
    (0..=16).map(Code::from).find(|&c| code_name(c) == name)
}

fn unary(request: Msg) -> Result<Msg, Status> {
    let size = std::str::from_utf8(&request.payload)
        .ok()
        .and_then(|p| p.strip_prefix("size:")?.parse::<usize>().ok());
    Ok(match size {
        Some(n) => Msg::new(vec![b'x'; n]),
        None => request,
    })
}

fn fail(request: Msg) -> Result<Msg, Status> {
    let name = String::from_utf8_lossy(&request.payload);
    let code = code_named(&name).unwrap_or(Code::InvalidArgument);
    Err(Status::new(code, "asked to fail"))
}

type Handler = fn(Msg) -> Result<Msg, Status>;

/// A unary method: a plain function of the request message.
struct Unary(Handler);

impl UnaryService<Msg> for Unary {
    type Response = Msg;
    type Future = BoxFuture<Response<Msg>, Status>;

    fn call(&mut self, request: Request<Msg>) -> Self::Future {
        let result = (self.0)(request.into_inner()).map(Response::new);
        Box::pin(async move { result })
    }
}

/// `ServerStream`: payload `N` → N messages (`message 0`, `message 1`, …).
struct ServerStream;

impl ServerStreamingService<Msg> for ServerStream {
    type Response = Msg;
    type ResponseStream = BoxStream<Msg>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Msg>) -> Self::Future {
        let n = std::str::from_utf8(&request.get_ref().payload)
            .ok()
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(1);
        let messages = (0..n).map(|i| Ok(Msg::new(format!("message {i}"))));
        let stream: Self::ResponseStream = Box::pin(tokio_stream::iter(messages));
        Box::pin(async move { Ok(Response::new(stream)) })
    }
}

/// The `demo.Echo` service, routed by path as tonic's generated code does.
#[derive(Clone)]
struct Echo;

impl NamedService for Echo {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for Echo
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().strip_prefix("/demo.Echo/").unwrap_or("");
        let handler: Option<Handler> = match method {
            "Unary" => Some(unary),
            "Fail" => Some(fail),
            _ => None,
        };
        let stream = method == "ServerStream";
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<Msg, Msg>::default());
            Ok(match handler {
                Some(f) => grpc.unary(Unary(f), req).await,
                None if stream => grpc.server_streaming(ServerStream, req).await,
                None => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

async fn server(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening {}", listener.local_addr()?.port());
    tonic::transport::Server::builder()
        .add_service(Echo)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

async fn client(port: u16, count: usize) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    let codec = ProstCodec::<Msg, Msg>::default;
    let path = |m: &str| format!("/{SERVICE}/{m}").parse::<http::uri::PathAndQuery>();
    let mut calls = Vec::new();
    let mut record = |method: &str, result: Result<(), Status>| {
        let code = result.err().map_or(Code::Ok, |s| s.code());
        calls.push(Call {
            method: format!("{SERVICE}/{method}"),
            code: code_name(code),
        });
    };
    for i in 0..count {
        grpc.ready().await?;
        let request = Request::new(Msg::new(format!("hello {i}")));
        let result = grpc.unary(request, path("Unary")?, codec()).await;
        record("Unary", result.map(drop));
    }
    grpc.ready().await?;
    let result = async {
        let request = Request::new(Msg::new("3"));
        let mut stream = grpc
            .server_streaming(request, path("ServerStream")?, codec())
            .await?
            .into_inner();
        while stream.message().await?.is_some() {}
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let result = result.map_err(|e| match e.downcast::<Status>() {
        Ok(status) => status,
        Err(e) => Status::unknown(e.to_string()),
    });
    record("ServerStream", result);
    grpc.ready().await?;
    let request = Request::new(Msg::new("NOT_FOUND"));
    let result = grpc.unary(request, path("Fail")?, codec()).await;
    record("Fail", result.map(drop));
    println!("{}", serde_json::json!({ "calls": calls }));
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = args.get(1).and_then(|p| p.parse().ok());
    match args.first().map(String::as_str) {
        Some("server") => server(port.unwrap_or(0)).await,
        Some("client") => {
            let port = port.ok_or_else(|| anyhow::anyhow!("client PORT COUNT"))?;
            client(port, args.get(2).and_then(|c| c.parse().ok()).unwrap_or(1)).await
        }
        _ => anyhow::bail!("usage: tonic_peer server [PORT] | client PORT COUNT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_round_trip() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(code_named("UNAVAILABLE"), Some(Code::Unavailable));
        assert_eq!(code_named("nope"), None);
    }

    #[test]
    fn unary_sizes() {
        let payload = |r: Result<Msg, Status>| r.map(|m| m.payload).map_err(|s| s.code());
        assert_eq!(payload(unary(Msg::new("size:3"))), Ok(b"xxx".to_vec()));
        assert_eq!(payload(unary(Msg::new("hi"))), Ok(b"hi".to_vec()));
        assert_eq!(payload(fail(Msg::new("NOT_FOUND"))), Err(Code::NotFound));
        assert_eq!(payload(fail(Msg::new("nope"))), Err(Code::InvalidArgument));
    }
}

//! DNS server for the tests (UDP and TCP on one address), built on hickory-proto.
//!
//! `dns_peer ADDR` (e.g. `127.0.0.1:0` or `127.53.0.1:53`) prints `listening <port>`.
//! `dns_peer resolve SERVER NAME` looks NAME up with hickory-resolver against the
//! server at SERVER (`ip:port`) and prints the addresses, one per line.
//! Zone, all under `test`:
//! * `a.test`: A 10.1.0.1, AAAA fd00::1
//! * `www.test`: CNAME `web.test`, which is A 10.1.0.2 (a chain)
//! * `missing.test`: NXDOMAIN; `broken.test`: SERVFAIL
//! * `big.test`: 60 A records: truncated (TC, no answers) over UDP, whole over TCP
//! * `silent.test`: never answered
//! * anything else: NXDOMAIN

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    thread,
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME},
    },
};

/// The answer to `query`, or `None` to stay silent. `udp` answers are cut to 512 bytes.
fn answer(query: &Message, udp: bool) -> Option<Vec<u8>> {
    let q = query.queries.first()?;
    let name = q
        .name()
        .to_string()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.message_type = MessageType::Response;
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(q.clone());
    let record =
        |n: &str, data: RData| Record::from_rdata(Name::from_ascii(n).expect("name"), 60, data);
    match (name.as_str(), q.query_type()) {
        ("silent.test", _) => return None,
        ("a.test", RecordType::A) => {
            response.add_answer(record("a.test.", RData::A(A(Ipv4Addr::new(10, 1, 0, 1)))));
        }
        ("a.test", RecordType::AAAA) => {
            response.add_answer(record(
                "a.test.",
                RData::AAAA(AAAA("fd00::1".parse::<Ipv6Addr>().expect("v6"))),
            ));
        }
        ("a.test", _) => {}
        ("www.test", t) => {
            response.add_answer(record(
                "www.test.",
                RData::CNAME(CNAME(Name::from_ascii("web.test.").expect("name"))),
            ));
            if t == RecordType::A {
                response.add_answer(record("web.test.", RData::A(A(Ipv4Addr::new(10, 1, 0, 2)))));
            }
        }
        ("broken.test", _) => response.metadata.response_code = ResponseCode::ServFail,
        ("big.test", RecordType::A) => {
            if udp {
                response.metadata.truncation = true;
            } else {
                for i in 0..60 {
                    response
                        .add_answer(record("big.test.", RData::A(A(Ipv4Addr::new(10, 2, 0, i)))));
                }
            }
        }
        _ => response.metadata.response_code = ResponseCode::NXDomain,
    }
    response.to_vec().ok()
}

fn serve_udp(socket: UdpSocket) {
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            return;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if let Some(bytes) = answer(&query, true) {
            let _ = socket.send_to(&bytes, from);
        }
    }
}

fn serve_tcp(listener: TcpListener) {
    for mut stream in listener.incoming().map_while(Result::ok) {
        thread::spawn(move || {
            loop {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).is_err() {
                    return;
                }
                let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut buf).is_err() {
                    return;
                }
                let Ok(query) = Message::from_vec(&buf) else {
                    return;
                };
                if let Some(bytes) = answer(&query, false) {
                    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                    framed.extend(bytes);
                    if stream.write_all(&framed).is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// A real resolver client (hickory-resolver) against one server.
fn resolve(server: SocketAddr, name: &str) -> anyhow::Result<()> {
    use hickory_resolver::{
        Resolver,
        config::{NameServerConfig, ResolverConfig},
        net::runtime::TokioRuntimeProvider,
    };
    let mut ns = NameServerConfig::udp_and_tcp(server.ip());
    for connection in &mut ns.connections {
        connection.port = server.port();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let resolver = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![ns]),
            TokioRuntimeProvider::default(),
        )
        .build()?;
        for ip in resolver.lookup_ip(name).await?.iter() {
            println!("{ip}");
        }
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("resolve") {
        let server = args
            .get(1)
            .ok_or_else(|| anyhow::anyhow!("resolve SERVER NAME"))?
            .parse()?;
        return resolve(server, args.get(2).map_or("a.test", String::as_str));
    }
    let addr: SocketAddr = args.first().map_or("127.0.0.1:0", String::as_str).parse()?;
    // TCP first with the port asked for; UDP on the same port.
    let tcp = TcpListener::bind(addr)?;
    let port = tcp.local_addr()?.port();
    let udp = UdpSocket::bind(SocketAddr::new(addr.ip(), port))?;
    println!("listening {port}");
    thread::spawn(move || serve_tcp(tcp));
    serve_udp(udp);
    Ok(())
}

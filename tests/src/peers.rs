//! Real peers the tests drive: the Python HTTP/1.1, gRPC and h2c-upgrade servers (`peers/*.py`),
//! curl, and Python client snippets.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/http_server.py");

/// A peer server (Python, Rust or nginx) listening on loopback, killed on
/// drop, its scratch directory (if any) removed.
pub struct Server {
    child: Child,
    pub port: u16,
    dir: Option<std::path::PathBuf>,
}

/// Starts a server that prints `listening <port>` once ready.
pub fn spawn_listening(cmd: &mut Command) -> (Child, u16) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{cmd:?} said {line:?}"));
    (child, port)
}

impl Server {
    /// The HTTP/1.1 test server.
    pub fn start() -> Server {
        Server::run(&[SERVER])
    }

    /// The grpcio server (`peers/grpc_peer.py`, service `demo.Echo`).
    pub fn grpc() -> Server {
        Server::run(&[GRPC_PEER, "server"])
    }

    /// The HTTP/1.1 server that upgrades to h2c (`peers/h2c_upgrade_server.py`).
    pub fn h2c_upgrade() -> Server {
        Server::run(&[H2C_UPGRADE])
    }

    /// A Python peer that prints `listening <port>` once ready.
    fn run(args: &[&str]) -> Server {
        Server::spawn(Command::new("python3").args(args))
    }

    /// Any peer that prints `listening <port>` once ready (the Rust peers).
    pub fn spawn(cmd: &mut Command) -> Server {
        let (child, port) = spawn_listening(cmd);
        Server {
            child,
            port,
            dir: None,
        }
    }

    /// The server in a private mount namespace whose `/etc/resolv.conf` is
    /// `resolv` (so its lookups go to a test DNS server).
    pub fn start_with_resolv(resolv: &std::path::Path) -> Server {
        let script = format!(
            "mount --bind {} /etc/resolv.conf && exec python3 {SERVER}",
            resolv.display()
        );
        let (child, port) = spawn_listening(Command::new("unshare").args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]));
        Server {
            child,
            port,
            dir: None,
        }
    }

    /// Its pid (with `start_with_resolv`, `exec` keeps unshare's pid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs curl to completion off the async runtime; returns its pid and stdout.
pub async fn curl(args: Vec<String>) -> (u32, String) {
    tokio::task::spawn_blocking(move || {
        let child = Command::new("curl")
            .args(["-s", "--max-time", "20"])
            .args(&args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        let pid = child.id();
        let out = child.wait_with_output().expect("curl output");
        assert!(out.status.success(), "curl {args:?}: {}", out.status);
        (pid, String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .expect("join")
}

/// `curl -o /dev/null URL...` (several URLs share one keep-alive connection).
pub async fn curl_urls(urls: &[String]) -> u32 {
    let args = urls
        .iter()
        .flat_map(|u| ["-o".to_string(), "/dev/null".to_string(), u.clone()])
        .collect();
    curl(args).await.0
}

/// Runs a Python client snippet to completion; returns its pid.
pub async fn python(code: String) -> u32 {
    tokio::task::spawn_blocking(move || {
        let child = Command::new("python3")
            .arg("-c")
            .arg(&code)
            .spawn()
            .expect("python3");
        let pid = child.id();
        let out = child.wait_with_output().expect("python output");
        assert!(out.status.success(), "python client failed");
        pid
    })
    .await
    .expect("join")
}

const GRPC_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/grpc_peer.py");
const H2C_UPGRADE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/h2c_upgrade_server.py");

/// What a grpcio client scenario did: its pid and each call's method and the
/// status code the client library reported.
pub struct GrpcCalls {
    pub pid: u32,
    pub calls: Vec<(String, String)>,
}

/// Parses the client's JSON line.
fn grpc_calls(pid: u32, line: &str) -> GrpcCalls {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let calls = v["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (text("method"), text("code"))
        })
        .collect();
    GrpcCalls { pid, calls }
}

/// Runs a grpcio client scenario (`mix`, `big`, `concurrent`) to completion.
pub async fn grpc_client(port: u16, scenario: &str) -> GrpcCalls {
    let mut cmd = Command::new("python3");
    cmd.args([GRPC_PEER, "client", &port.to_string(), scenario]);
    grpc_calls_of(cmd).await
}

/// Runs any gRPC client that prints its calls as `grpc_peer.py` does (the
/// tonic peer too) to completion.
pub async fn grpc_calls_of(mut cmd: Command) -> GrpcCalls {
    tokio::task::spawn_blocking(move || {
        let child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let pid = child.id();
        let out = child.wait_with_output().expect("grpc client output");
        assert!(out.status.success(), "{cmd:?} failed");
        grpc_calls(pid, String::from_utf8_lossy(&out.stdout).trim())
    })
    .await
    .expect("join")
}

/// A grpcio client that makes calls in two rounds on one channel: `before`
/// calls, then (after [`LateClient::go`]) `after` more.
pub struct LateClient {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl LateClient {
    /// Starts it and waits until the first round is done.
    pub fn start(port: u16, before: usize, after: usize) -> LateClient {
        let mut child = Command::new("python3")
            .args([GRPC_PEER, "client", &port.to_string(), "late"])
            .args([before.to_string(), after.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("ready line");
        assert_eq!(line.trim(), "ready");
        LateClient { child, stdout }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs the second round to completion.
    pub fn go(mut self) -> GrpcCalls {
        use std::io::Write as _;
        let pid = self.pid();
        let mut stdin = self.child.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("go");
        drop(stdin);
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("calls line");
        let _ = self.child.wait();
        grpc_calls(pid, line.trim())
    }
}

impl Server {
    /// nginx serving HTTP/2 with prior knowledge (h2c) on a free port:
    /// `/status/503` answers 503, anything else 200.
    pub fn h2_nginx() -> Server {
        Server::nginx("h2", "http2", "")
    }

    /// nginx serving HTTPS (HTTP/1.1) with a self-signed certificate made
    /// here: `/status/503` answers 503, `/big` a 40 KiB file, anything else 200.
    pub fn tls_nginx() -> Server {
        Server::nginx("tls", "ssl", TLS_SERVER)
    }

    /// [`Server::tls_nginx`] with HTTP/2 (ALPN `h2`) beside HTTP/1.1.
    pub fn tls_h2_nginx() -> Server {
        Server::nginx("tls-h2", "ssl http2", TLS_SERVER)
    }

    /// nginx in plain HTTP/1.1: `/status/503` answers 503, anything else 200.
    pub fn plain_nginx() -> Server {
        Server::nginx("plain", "", "")
    }

    /// nginx as a reverse proxy: `/u/…` goes to `upstream` on loopback over
    /// a new connection per request (nginx's default), the rest as
    /// [`Server::plain_nginx`].
    pub fn proxy_nginx(upstream: u16) -> Server {
        Server::nginx(
            "proxy",
            "",
            &format!("location /u/ {{ proxy_pass http://127.0.0.1:{upstream}; }}"),
        )
    }

    /// nginx on a free loopback port, `listen … {listen}`, with `extra`
    /// server directives (`{d}`: its scratch directory). For `ssl`, the
    /// directory gets a self-signed certificate and a 40 KiB `big.txt`.
    fn nginx(name: &str, listen: &str, extra: &str) -> Server {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("e2e-{name}-nginx-{port}"));
        std::fs::create_dir_all(&dir).expect("nginx dir");
        let d = dir.display().to_string();
        if listen.starts_with("ssl") {
            self_signed_certificate(&dir);
            let big: String = (0..40 * 1024)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            std::fs::write(dir.join("big.txt"), big).expect("big.txt");
        }
        let extra = extra.replace("{d}", &d);
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; error_log stderr; \
             pid {d}/nginx.pid; events {{ worker_connections 256; }} \
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; \
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi; \
             server {{ listen 127.0.0.1:{port} {listen}; {extra} \
             location = /status/503 {{ return 503 \"unavailable\\n\"; }} \
             location / {{ return 200 \"ok\\n\"; }} }} }}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("nginx.conf");
        let child = Command::new("nginx")
            .args(["-e", "stderr", "-c"])
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx (Debian package nginx)");
        wait_listening(port, "nginx");
        Server {
            child,
            port,
            dir: Some(dir),
        }
    }
}

/// A loopback port nothing listens on (right now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits (up to 20 s) until something accepts connections on loopback `port`.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Writes `dir/cert.pem` and `dir/key.pem`: a self-signed certificate for
/// `localhost`, valid for a day.
pub fn self_signed_certificate(dir: &std::path::Path) {
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl (Debian package openssl)");
    assert!(status.success(), "openssl req");
}

/// `curl -k --http… -o /dev/null URL` for each path under `base`, on one
/// connection (`version`: `--http1.1`, `--http2`).
pub async fn curl_tls(base: &str, version: &str, paths: &[&str]) -> u32 {
    let args = paths
        .iter()
        .flat_map(|p| {
            ["-k", version, "-o", "/dev/null"]
                .map(String::from)
                .into_iter()
                .chain([format!("{base}{p}")])
        })
        .collect();
    curl(args).await.0
}

/// The certificate (made in the scratch directory) and the 40 KiB `/big`.
const TLS_SERVER: &str = "ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem; \
                          location = /big { alias {d}/big.txt; }";

/// Runs `h2load` (Debian `nghttp2-client`) to completion; returns its pid and
/// the requests it reports as succeeded.
pub async fn h2load(url: String, requests: u32, clients: u32, streams: u32) -> (u32, u32) {
    tokio::task::spawn_blocking(move || {
        let child = Command::new("h2load")
            .args(["-n", &requests.to_string(), "-c", &clients.to_string()])
            .args(["-m", &streams.to_string(), &url])
            .stdout(Stdio::piped())
            .spawn()
            .expect("h2load (Debian package nghttp2-client)");
        let pid = child.id();
        let out = child.wait_with_output().expect("h2load output");
        let text = String::from_utf8_lossy(&out.stdout);
        // "requests: 200 total, 200 started, 200 done, 200 succeeded, ..."
        let succeeded = text
            .lines()
            .find_map(|l| l.strip_prefix("requests: "))
            .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" succeeded")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("h2load said:\n{text}"));
        (pid, succeeded)
    })
    .await
    .expect("join")
}

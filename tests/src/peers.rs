//! Real peers the tests drive: the Python HTTP/1.1 server (`peers/http_server.py`),
//! curl, and Python client snippets.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/http_server.py");

/// The Python test server, killed on drop.
pub struct PyServer {
    child: Child,
    pub port: u16,
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

impl PyServer {
    pub fn start() -> PyServer {
        let (child, port) = spawn_listening(Command::new("python3").arg(SERVER));
        PyServer { child, port }
    }

    /// The server in a private mount namespace whose `/etc/resolv.conf` is
    /// `resolv` (so its lookups go to a test DNS server).
    pub fn start_with_resolv(resolv: &std::path::Path) -> PyServer {
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
        PyServer { child, port }
    }

    /// Its pid (with `start_with_resolv`, `exec` keeps unshare's pid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

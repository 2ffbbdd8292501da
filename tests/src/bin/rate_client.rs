//! Open-loop HTTP/1.1 keep-alive load at a fixed rate, for `cargo xtask bench
//! http`:
//!
//! `rate_client --url http://127.0.0.1:PORT/path --rate 10000 --seconds 10 --connections 16`
//!
//! The rate is spread over the connections, one thread and one blocking socket
//! each. Connection `i` sends its `k`-th request at `start + (k * connections + i)
//! / rate` (or at once when it is late: the previous response came after that
//! time), so the schedule never waits for the server. Latency runs from the
//! *scheduled* send time to the end of the response, which counts the time a
//! request waited behind a slow one (no coordinated omission). Responses are
//! parsed (status line, `Content-Length` or chunked); a `Connection: close`
//! response or a closed socket reconnects before the next request.
//!
//! Prints one JSON line: `{"scheduled":N,"sent":N,"completed":N,"errors":N,
//! "achieved_rate":R,"p50_us":..,"p90_us":..,"p99_us":..,"max_us":..,"cpu_s":..}`.
//! `completed` counts 2xx responses; `errors` counts failed requests (I/O or
//! parse errors, timeouts, other statuses).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// Time after the end of the schedule in which late requests are still sent.
const GRACE_NS: u64 = 5_000_000_000;
/// A request without a response for this long is an error.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
struct Options {
    host: String,
    port: u16,
    path: String,
    rate: f64,
    seconds: f64,
    connections: usize,
}

fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("{url}: bad port"))?),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok((host.to_string(), port, path.to_string()))
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut url = None;
    let (mut rate, mut seconds, mut connections) = (1000.0, 10.0, 16);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag} {value}: not a number");
        match flag.as_str() {
            "--url" => url = Some(value.clone()),
            "--rate" => rate = value.parse().map_err(|_| bad())?,
            "--seconds" => seconds = value.parse().map_err(|_| bad())?,
            "--connections" => connections = value.parse().map_err(|_| bad())?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let (host, port, path) = parse_url(&url)?;
    if !(rate > 0.0 && seconds > 0.0 && connections > 0) {
        return Err("--rate, --seconds and --connections must be positive".into());
    }
    Ok(Options {
        host,
        port,
        path,
        rate,
        seconds,
        connections,
    })
}

/// A complete response at the start of a buffer.
#[derive(Debug, PartialEq)]
struct Response {
    status: u16,
    /// Bytes of the buffer it takes.
    len: usize,
    /// `Connection: close` (or HTTP/1.0 without keep-alive).
    close: bool,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses one HTTP/1.x response at the start of `buf`: `Ok(None)` until it is
/// complete. Responses without a body length (read to close) are not supported:
/// the load needs keep-alive.
fn parse_response(buf: &[u8]) -> Result<Option<Response>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("header section over 64 KiB".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "header not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    let body_start = head_end + 4;
    let no_body = status / 100 == 1 || status == 204 || status == 304;
    let len = if no_body {
        Some(body_start)
    } else if chunked {
        chunked_end(&buf[body_start..])?.map(|n| body_start + n)
    } else if let Some(n) = length {
        (buf.len() >= body_start + n).then_some(body_start + n)
    } else {
        return Err("response without Content-Length or chunked encoding".into());
    };
    Ok(len.map(|len| Response { status, len, close }))
}

/// Length of a complete chunked body (through the trailer's empty line).
fn chunked_end(body: &[u8]) -> Result<Option<usize>, String> {
    let mut at = 0;
    loop {
        let Some(eol) = find(&body[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&body[at..at + eol]).map_err(|_| "bad chunk size")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        at += eol + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(eol) = find(&body[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if body.len() < at + size + 2 {
            return Ok(None);
        }
        if &body[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        at += size + 2;
    }
}

fn now_ns() -> u64 {
    // SAFETY: zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sleep_until(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: valid pointer; an absolute deadline on the clock `now_ns` reads.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

/// CPU time (user + system) of this process, in seconds.
fn process_cpu_seconds() -> f64 {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let s = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    s(ru.ru_utime) + s(ru.ru_stime)
}

#[derive(Default)]
struct Outcome {
    sent: u64,
    completed: u64,
    errors: u64,
    /// Per completed request, scheduled send to end of response, in ns.
    latencies: Vec<u64>,
    last_done_ns: u64,
}

struct Connection<'a> {
    options: &'a Options,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Connection<'_> {
    fn stream(&mut self) -> std::io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let stream = TcpStream::connect((self.options.host.as_str(), self.options.port))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            self.buf.clear();
            self.stream = Some(stream);
        }
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no stream"))
    }

    /// Sends one request and reads its response; the status, or an error (the
    /// connection is then dropped and the next request reconnects).
    fn request(&mut self, request: &[u8]) -> Result<u16, String> {
        let result = self.exchange(request);
        match &result {
            Ok((_, false)) => {}
            _ => self.stream = None,
        }
        result.map(|(status, _)| status)
    }

    fn exchange(&mut self, request: &[u8]) -> Result<(u16, bool), String> {
        let stream = self.stream().map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(request)
            .map_err(|e| format!("write: {e}"))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(response) = parse_response(&self.buf)? {
                self.buf.drain(..response.len);
                return Ok((response.status, response.close));
            }
            let stream = self.stream.as_mut().ok_or("no stream")?;
            let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before the response ended".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Connection `index`'s share of the schedule.
fn run_connection(options: &Options, index: usize, start_ns: u64, end_ns: u64) -> Outcome {
    // Timer slack is per thread (50 µs by default): wake at the scheduled time.
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: rate_client\r\n\r\n",
        options.path, options.host, options.port
    )
    .into_bytes();
    let interval_ns = 1e9 / options.rate;
    let mut connection = Connection {
        options,
        stream: None,
        buf: Vec::with_capacity(16 * 1024),
    };
    let mut outcome = Outcome {
        latencies: Vec::with_capacity(
            (options.rate * options.seconds / options.connections as f64) as usize + 16,
        ),
        ..Outcome::default()
    };
    // Connect before the schedule starts: the first requests measure requests.
    let _ = connection.stream();
    for k in 0.. {
        let slot = k * options.connections as u64 + index as u64;
        let scheduled = start_ns + (slot as f64 * interval_ns) as u64;
        if scheduled >= end_ns {
            break;
        }
        let now = now_ns();
        if now > end_ns + GRACE_NS {
            break;
        }
        if scheduled > now {
            sleep_until(scheduled);
        }
        outcome.sent += 1;
        match connection.request(&request) {
            Ok(status) if (200..300).contains(&status) => {
                let done = now_ns();
                outcome.completed += 1;
                outcome.latencies.push(done.saturating_sub(scheduled));
                outcome.last_done_ns = done;
            }
            Ok(_) | Err(_) => outcome.errors += 1,
        }
    }
    outcome
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "rate_client: {e}\nusage: rate_client --url http://HOST:PORT/PATH --rate N --seconds S --connections C"
            );
            std::process::exit(2);
        }
    };
    let cpu_start = process_cpu_seconds();
    // Threads start and connect first; the schedule starts a little later.
    let start_ns = now_ns() + 100_000_000;
    let end_ns = start_ns + (options.seconds * 1e9) as u64;
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.connections)
            .map(|i| {
                let options = &options;
                scope.spawn(move || run_connection(options, i, start_ns, end_ns))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let cpu = process_cpu_seconds() - cpu_start;
    let scheduled = (options.rate * options.seconds).ceil() as u64;
    let mut latencies: Vec<u64> = outcomes
        .iter()
        .flat_map(|o| o.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let sent: u64 = outcomes.iter().map(|o| o.sent).sum();
    let completed: u64 = outcomes.iter().map(|o| o.completed).sum();
    let errors: u64 = outcomes.iter().map(|o| o.errors).sum();
    let last = outcomes.iter().map(|o| o.last_done_ns).max().unwrap_or(0);
    let elapsed_s = (last.max(end_ns) - start_ns) as f64 / 1e9;
    let us = |p: f64| percentile(&latencies, p) as f64 / 1000.0;
    println!(
        "{{\"scheduled\":{scheduled},\"sent\":{sent},\"completed\":{completed},\"errors\":{errors},\
         \"achieved_rate\":{:.1},\"elapsed_s\":{elapsed_s:.3},\"p50_us\":{:.1},\"p90_us\":{:.1},\
         \"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"cpu_s\":{cpu:.3}}}",
        completed as f64 / elapsed_s,
        us(50.0),
        us(90.0),
        us(99.0),
        us(99.9),
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_response() {
        let nginx =
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/octet-stream\r\n\
                      Content-Length: 3\r\nConnection: keep-alive\r\n\r\nok\nHTTP/1.1";
        let r = parse_response(nginx).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(&nginx[r.len..], b"HTTP/1.1");
        assert!(!r.close);
        // Incomplete: the head, then part of the body.
        assert_eq!(parse_response(&nginx[..20]).unwrap(), None);
        let head_end = find(nginx, b"\r\n\r\n").unwrap() + 4;
        assert_eq!(parse_response(&nginx[..head_end + 2]).unwrap(), None);
    }

    #[test]
    fn chunked_response_with_extension_and_trailer() {
        let text = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                     2;x=y\r\nok\r\n1\r\n\n\r\n0\r\nX-Trailer: 1\r\n\r\nnext";
        let r = parse_response(text).unwrap().unwrap();
        assert_eq!(&text[r.len..], b"next");
        for cut in 0..r.len {
            assert_eq!(parse_response(&text[..cut]).unwrap(), None, "cut at {cut}");
        }
        let plain = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(parse_response(plain).unwrap().unwrap().len, plain.len());
    }

    #[test]
    fn connection_close_and_bodiless_statuses() {
        let r = parse_response(b"HTTP/1.1 503 x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.close), (503, true));
        let r = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.close), (204, false));
        assert!(
            parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap()
                .close
        );
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(parse_response(b"SSH-2.0 hello\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nbody").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    #[test]
    fn arguments_and_urls() {
        let args: Vec<String> = [
            "--url",
            "http://127.0.0.1:8080/a/b",
            "--rate",
            "10000",
            "--seconds",
            "2.5",
            "--connections",
            "4",
        ]
        .map(String::from)
        .to_vec();
        let o = parse_args(&args).unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.path.as_str()),
            ("127.0.0.1", 8080, "/a/b")
        );
        assert_eq!((o.rate, o.seconds, o.connections), (10000.0, 2.5, 4));
        assert_eq!(
            parse_url("http://localhost").unwrap(),
            ("localhost".into(), 80, "/".into())
        );
        assert!(parse_url("https://x/").is_err());
        assert!(parse_args(&["--rate".into(), "1".into()]).is_err());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.9), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}

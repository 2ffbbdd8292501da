//! Helpers of the profiling tests: building the burner programs, running them
//! with their CPU time measured, and reading the profiles the agent wrote.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use agent::{Settings, config::ProfilingSettings};
pub use profiles::pprof::proto::Profile;
use prost::Message as _;

/// A fresh directory for one test's binaries and profiles.
pub fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("e2e-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// Compiles `peers/burn.c` with frame pointers (leaf functions included) to `out`.
pub fn build_c_burner(out: &Path) -> PathBuf {
    cc_with_frame_pointers("burn.c", out, &[])
}

/// Compiles `peers/corr_server.c` (frame pointers, threads) to `out`.
pub fn build_corr_server(out: &Path) -> PathBuf {
    cc_with_frame_pointers("corr_server.c", out, &["-pthread"])
}

/// `cc` on a C peer with debug info and frame pointers (complete stacks).
fn cc_with_frame_pointers(source: &str, out: &Path, extra: &[&str]) -> PathBuf {
    let status = Command::new("cc")
        .args([
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
        ])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(peers_dir().join(source))
        .status()
        .expect("cc (install gcc)");
    assert!(status.success(), "cc failed");
    out.to_path_buf()
}

/// Compiles `peers/burn.rs` with `-C force-frame-pointers=yes` to `out`.
pub fn build_rust_burner(out: &Path) -> PathBuf {
    let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args([
            "-C",
            "force-frame-pointers=yes",
            "-C",
            "opt-level=1",
            "-g",
            "-o",
        ])
        .arg(out)
        .arg(peers_dir().join("burn.rs"))
        .status()
        .expect("rustc");
    assert!(status.success(), "rustc failed");
    out.to_path_buf()
}

/// A finished program: its pid and the CPU time it used.
pub struct Ran {
    pub pid: u32,
    pub cpu: Duration,
}

/// Runs `program args` to completion; CPU time (user + system) from `wait4`.
pub fn run_measured(program: &Path, args: &[&str]) -> Ran {
    #[expect(
        clippy::zombie_processes,
        reason = "reaped below with wait4, which also gives its rusage"
    )]
    let child = Command::new(program)
        .args(args)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let pid = child.id();
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child; reaped here instead of through `Child::wait`.
    let reaped = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid as i32, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{} failed",
        program.display()
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ran {
        pid,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
    }
}

/// Agent settings with profiling on at `frequency`, writing to `dir`, with an
/// interval longer than any test: profiles are written when the agent stops.
pub fn settings(frequency: u64, dir: &Path) -> Settings {
    Settings {
        profiling: ProfilingSettings {
            enabled: true,
            frequency,
            interval: Duration::from_secs(600),
            dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
        ..crate::settings()
    }
}

/// [`settings`] exporting to a Pyroscope receiver and an OTLP profiles
/// receiver over gRPC instead of a directory.
pub fn settings_to_receivers(
    frequency: u64,
    dir: &Path,
    pyroscope: std::net::SocketAddr,
    otlp: std::net::SocketAddr,
) -> Settings {
    let mut s = settings(frequency, dir);
    s.profiling.dir = None;
    s.profiling.pyroscope_url = Some(format!("http://{pyroscope}"));
    s.profiling.otlp = Some(profiles::export::otlp::OtlpConfig {
        protocol: profiles::export::otlp::Protocol::Grpc,
        endpoint: format!("http://{otlp}"),
        headers: Vec::new(),
        timeout: Duration::from_secs(5),
        gzip: true,
    });
    s
}

/// The pprof the agent wrote for `service`, gunzipped and decoded.
pub fn read_pprof(dir: &Path, service: &str) -> (Vec<u8>, Profile) {
    let path = dir.join(format!("{service}.pb.gz"));
    let gz = std::fs::read(&path).unwrap_or_else(|e| {
        let written: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        panic!("{}: {e}; the agent wrote {written:?}", path.display())
    });
    (gz.clone(), decode_gz(&gz))
}

pub fn decode_gz(gz: &[u8]) -> Profile {
    use std::io::Read as _;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .expect("gzip");
    Profile::decode(raw.as_slice()).expect("pprof")
}

/// One sample, resolved: function names leaf first (inlined functions
/// innermost first), the mapping file per location, count and labels.
#[derive(Clone, Debug)]
pub struct Stack {
    pub functions: Vec<String>,
    pub files: Vec<String>,
    /// Locations without any function (unsymbolized), as (mapping file, build id).
    pub unnamed: Vec<(String, String, bool)>,
    pub value: i64,
    pub pid: i64,
    pub thread: String,
    /// The `span_id` label: the request the thread was serving.
    pub span_id: Option<String>,
}

pub fn stacks(p: &Profile) -> Vec<Stack> {
    let s = |i: i64| p.string_table[i as usize].clone();
    p.sample
        .iter()
        .map(|sample| {
            let mut stack = Stack {
                functions: Vec::new(),
                files: Vec::new(),
                unnamed: Vec::new(),
                value: sample.value[0],
                pid: 0,
                thread: String::new(),
                span_id: None,
            };
            for id in &sample.location_id {
                let loc = &p.location[*id as usize - 1];
                let mapping = &p.mapping[loc.mapping_id as usize - 1];
                stack.files.push(s(mapping.filename));
                if loc.line.is_empty() {
                    stack.unnamed.push((
                        s(mapping.filename),
                        s(mapping.build_id),
                        mapping.has_functions,
                    ));
                }
                for line in &loc.line {
                    stack
                        .functions
                        .push(s(p.function[line.function_id as usize - 1].name));
                }
            }
            for label in &sample.label {
                match s(label.key).as_str() {
                    "pid" => stack.pid = label.num,
                    "thread_name" => stack.thread = s(label.str),
                    "span_id" => stack.span_id = Some(s(label.str)),
                    _ => {}
                }
            }
            stack
        })
        .collect()
}

/// Sum of values of the stacks that contain `function` (inclusive).
pub fn inclusive(stacks: &[Stack], function: &str) -> i64 {
    stacks
        .iter()
        .filter(|s| s.functions.iter().any(|f| f == function))
        .map(|s| s.value)
        .sum()
}

/// The functions directly calling `function`, by value.
pub fn callers(stacks: &[Stack], function: &str) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = Vec::new();
    for s in stacks {
        if let Some(i) = s.functions.iter().position(|f| f == function)
            && let Some(caller) = s.functions.get(i + 1)
        {
            match out.iter_mut().find(|(c, _)| c == caller) {
                Some((_, v)) => *v += s.value,
                None => out.push((caller.clone(), s.value)),
            }
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.1));
    out
}

/// The GNU build id of an ELF file, from `readelf -n`.
pub fn build_id(path: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .expect("readelf (binutils)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .unwrap_or_default()
}

/// The profile decoded by npm `pprof-format` (`tests/js/decode-pprof.mjs`).
pub fn decode_with_node(pprof_gz_path: &Path) -> serde_json::Value {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        js.join("node_modules/pprof-format").exists(),
        "npm pprof-format missing: run `npm ci --prefix tests/js` (cargo xtask test does)"
    );
    let out = Command::new("node")
        .arg(js.join("decode-pprof.mjs"))
        .arg(pprof_gz_path)
        .output()
        .expect("node (Node.js with npm; `cargo xtask setup` says when it is missing)");
    assert!(
        out.status.success(),
        "node decoder: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("decoder output")
}

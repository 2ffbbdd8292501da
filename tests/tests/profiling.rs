//! Continuous profiling end to end: programs with a known CPU shape (C and Rust,
//! built here with frame pointers), the real perf-event sampler, and the
//! profiles the agent writes, pushes to Pyroscope and sends as OTLP — decoded
//! with the crate's own pprof types and with an independent decoder (npm
//! `pprof-format`). Needs root; skips with a message otherwise.
//!
//! Every burner exits before the agent stops and drains: each test also shows
//! that a process gone before its interval ends is still symbolized.

use std::{path::Path, time::Duration};

use e2e::{
    Running, privileged, profile_receivers,
    profiling::{
        Stack, build_c_burner, build_id, build_rust_burner, callers, decode_gz, decode_with_node,
        inclusive, read_pprof, run_measured, settings, stacks, temp_dir,
    },
};
use profiles::pprof;

const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `program args` under an agent sampling at `frequency` and writing to
/// `dir`; returns the burner's pid and CPU time once the agent has stopped
/// (and so written its last profiles).
async fn profile_run(
    test: &str,
    frequency: u64,
    program: &Path,
    args: &[&str],
    dir: &Path,
) -> e2e::profiling::Ran {
    let (program, args) = (
        program.to_path_buf(),
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    profile_while(test, frequency, dir, move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_measured(&program, &args)
    })
    .await
}

/// Runs `burner` (on a blocking thread) under an agent, as [`profile_run`].
async fn profile_while(
    test: &str,
    frequency: u64,
    dir: &Path,
    burner: impl FnOnce() -> e2e::profiling::Ran + Send + 'static,
) -> e2e::profiling::Ran {
    let agent = Running::start(settings(frequency, dir))
        .await
        .expect("agent starts");
    let ran = tokio::task::spawn_blocking(burner).await.expect("burner");
    agent.handle.stop().await;
    eprintln!("{test}: pid {} used {:?} of CPU", ran.pid, ran.cpu);
    ran
}

fn mine(all: Vec<Stack>, pid: u32) -> Vec<Stack> {
    all.into_iter()
        .filter(|s| s.pid == i64::from(pid))
        .collect()
}

/// The profile the agent wrote for `service`, checked against Pyroscope's
/// rules, with the stacks of process `pid`.
fn service_stacks(dir: &Path, service: &str, pid: u32) -> (pprof::proto::Profile, Vec<Stack>) {
    let (_, profile) = read_pprof(dir, service);
    pprof::validate(&profile).expect("valid for Pyroscope");
    let stacks = mine(stacks(&profile), pid);
    (profile, stacks)
}

fn within(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= expected * tolerance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_program_functions_callers_ratio_and_sample_count() {
    if !privileged("c_program_functions_callers_ratio_and_sample_count") {
        return;
    }
    let dir = temp_dir("prof-c");
    let exe = build_c_burner(&dir.join("burn-c"));
    let frequency = 499;
    let ran = profile_run("c", frequency, &exe, &["cpu", "4"], &dir).await;

    let (_, profile) = read_pprof(&dir, "burn-c");
    pprof::validate(&profile).expect("valid for Pyroscope");
    let period = 1_000_000_000 / frequency as i64;
    assert_eq!(profile.period, period);
    let s = |i: i64| profile.string_table[i as usize].as_str();
    assert_eq!(
        (
            s(profile.sample_type[0].r#type),
            s(profile.sample_type[0].unit)
        ),
        ("cpu", "nanoseconds")
    );
    let stacks = mine(stacks(&profile), ran.pid);
    // Thread name label: the burner's comm, except for the instants between
    // fork and exec, when the child still has the test thread's name.
    let named: i64 = stacks
        .iter()
        .filter(|s| s.thread == "burn-c")
        .map(|s| s.value)
        .sum();
    let all: i64 = stacks.iter().map(|s| s.value).sum();
    let threads: std::collections::BTreeSet<&str> =
        stacks.iter().map(|s| s.thread.as_str()).collect();
    assert!(
        named * 100 >= all * 95,
        "thread_name burn-c on {named} of {all} ns; names {threads:?}"
    );

    // Every sample is a multiple of the period; their count matches CPU time.
    let samples: i64 = stacks.iter().map(|s| s.value / period).sum();
    let expected = ran.cpu.as_secs_f64() * frequency as f64;
    assert!(
        within(samples as f64, expected, 0.10),
        "{samples} samples for {:?} of CPU at {frequency} Hz (expected ~{expected:.0})",
        ran.cpu
    );

    let heavy = inclusive(&stacks, "burn_heavy");
    let light = inclusive(&stacks, "burn_light");
    let ratio = heavy as f64 / light.max(1) as f64;
    assert!(
        within(ratio, 2.0, 0.10),
        "burn_heavy:burn_light = {heavy}:{light} = {ratio:.2}, expected 2 ± 10%"
    );
    for f in ["burn_heavy", "burn_light"] {
        let callers = callers(&stacks, f);
        assert_eq!(
            callers.first().map(|c| c.0.as_str()),
            Some("run_cpu"),
            "{f} called by {callers:?}"
        );
    }
    assert_eq!(
        callers(&stacks, "run_cpu").first().map(|c| c.0.as_str()),
        Some("main")
    );

    // The same file through an independent decoder.
    let node = decode_with_node(&dir.join("burn-c.pb.gz"));
    assert_eq!(node["firstString"], "");
    assert_eq!(node["sampleType"][0][0], "cpu");
    assert_eq!(node["periodType"][1], "nanoseconds");
    assert_eq!(node["period"], period);
    let node_inclusive = |function: &str| -> i64 {
        node["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["labels"]["pid"] == ran.pid)
            .filter(|s| {
                s["stack"].as_array().unwrap().iter().any(|loc| {
                    loc["functions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|f| f == function)
                })
            })
            .map(|s| s["value"][0].as_i64().unwrap())
            .sum()
    };
    assert_eq!(node_inclusive("burn_heavy"), heavy);
    assert_eq!(node_inclusive("burn_light"), light);

    // And as a flamegraph.
    let svg = std::fs::read_to_string(dir.join("burn-c.svg")).expect("flamegraph");
    assert!(svg.starts_with("<?xml") && svg.contains("burn_heavy") && svg.contains("run_cpu"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_frames_of_a_syscall_loop() {
    if !privileged("kernel_frames_of_a_syscall_loop") {
        return;
    }
    let dir = temp_dir("prof-kernel");
    let exe = build_c_burner(&dir.join("burn-sys"));
    let ran = profile_run("kernel", 199, &exe, &["syscalls", "2"], &dir).await;
    let (_, stacks) = service_stacks(&dir, "burn-sys", ran.pid);
    let total: i64 = stacks.iter().map(|s| s.value).sum();
    assert!(total > 0, "no samples of the syscall loop");
    let in_kernel: i64 = stacks
        .iter()
        .filter(|s| s.files.iter().any(|f| f == "[kernel.kallsyms]"))
        .map(|s| s.value)
        .sum();
    assert!(
        in_kernel * 2 > total,
        "kernel frames in {in_kernel} of {total} ns: a getppid loop is mostly kernel time"
    );
    // Kernel and user halves in one stack: the syscall's kernel function over
    // the program's own frames (libc's getppid has no frame pointer, so its
    // caller run_syscalls may be skipped; main is not).
    let joined = stacks.iter().any(|s| {
        s.functions.iter().any(|f| f.contains("sys_getppid"))
            && s.files.iter().any(|f| f.ends_with("/burn-sys"))
            && s.functions.iter().any(|f| f == "main")
    });
    assert!(
        joined,
        "no stack with a sys_getppid kernel frame over burn-sys's own frames: {:?}",
        stacks.iter().take(3).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_program_demangled_with_callers_and_ratio() {
    if !privileged("rust_program_demangled_with_callers_and_ratio") {
        return;
    }
    let dir = temp_dir("prof-rust");
    let exe = build_rust_burner(&dir.join("burn-rust"));
    let frequency = 499;
    let ran = profile_run("rust", frequency, &exe, &["4"], &dir).await;
    let (profile, stacks) = service_stacks(&dir, "burn-rust", ran.pid);
    let spin_callers = callers(&stacks, "burn::spin");
    let by = |name: &str| spin_callers.iter().find(|c| c.0 == name).map_or(0, |c| c.1);
    let (heavy, light) = (by("burn::burn_heavy"), by("burn::burn_light"));
    let ratio = heavy as f64 / light.max(1) as f64;
    assert!(
        within(ratio, 2.0, 0.10),
        "burn::spin from burn_heavy:burn_light = {heavy}:{light} ({ratio:.2}); callers {spin_callers:?}"
    );
    for f in ["burn::burn_heavy", "burn::burn_light"] {
        assert_eq!(
            callers(&stacks, f).first().map(|c| c.0.as_str()),
            Some("burn::run_cpu"),
            "{f}"
        );
    }
    let samples: i64 = stacks.iter().map(|s| s.value / profile.period).sum();
    let expected = ran.cpu.as_secs_f64() * frequency as f64;
    assert!(
        within(samples as f64, expected, 0.10),
        "{samples} samples, expected ~{expected:.0}"
    );
    // Source lines come from DWARF.
    let has_lines = profile.location.iter().any(|l| {
        l.line.iter().any(|line| {
            let f = &profile.function[line.function_id as usize - 1];
            profile.string_table[f.filename as usize].ends_with("burn.rs") && line.line > 0
        })
    });
    assert!(has_lines, "no file:line for burn.rs frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_binary_keeps_module_address_and_build_id() {
    if !privileged("stripped_binary_keeps_module_address_and_build_id") {
        return;
    }
    let dir = temp_dir("prof-stripped");
    let exe = build_c_burner(&dir.join("burn-stripped"));
    let status = std::process::Command::new("strip")
        .arg(&exe)
        .status()
        .expect("strip (binutils)");
    assert!(status.success());
    let expected_build_id = build_id(&exe);
    assert!(!expected_build_id.is_empty(), "cc adds a GNU build id");
    let ran = profile_run("stripped", 199, &exe, &["cpu", "2"], &dir).await;
    let (_, stacks) = service_stacks(&dir, "burn-stripped", ran.pid);
    let unnamed: Vec<_> = stacks
        .iter()
        .flat_map(|s| s.unnamed.iter())
        .filter(|(file, _, _)| file.ends_with("/burn-stripped"))
        .collect();
    assert!(
        !unnamed.is_empty(),
        "frames of the stripped binary: {stacks:?}"
    );
    for (_, build_id, has_functions) in &unnamed {
        assert_eq!(build_id, &expected_build_id);
        assert!(
            !has_functions,
            "mapping of a stripped binary has_functions=false"
        );
    }
    let svg = std::fs::read_to_string(dir.join("burn-stripped.svg")).expect("flamegraph");
    assert!(
        svg.contains("burn-stripped+0x"),
        "module+offset frames in the flamegraph"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_executable_is_still_symbolized() {
    if !privileged("deleted_executable_is_still_symbolized") {
        return;
    }
    let dir = temp_dir("prof-deleted");
    let exe = build_c_burner(&dir.join("burn-deleted"));
    let ran = profile_while("deleted", 199, &dir, {
        let exe = exe.clone();
        move || {
            // Deleted while it runs, like a binary replaced by an upgrade.
            let remove = {
                let exe = exe.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(500));
                    std::fs::remove_file(&exe).expect("delete the running binary");
                })
            };
            let ran = run_measured(&exe, &["cpu", "2"]);
            remove.join().expect("deleter");
            ran
        }
    })
    .await;
    assert!(!exe.exists());
    let (_, stacks) = service_stacks(&dir, "burn-deleted", ran.pid);
    assert!(
        inclusive(&stacks, "burn_heavy") > 0 && inclusive(&stacks, "burn_light") > 0,
        "functions of the deleted binary: {:?}",
        stacks.iter().take(3).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_profiles_over_http_protobuf() {
    if !privileged("otlp_profiles_over_http_protobuf") {
        return;
    }
    let dir = temp_dir("prof-otlp-http");
    let exe = build_c_burner(&dir.join("burn-otlp-http"));
    let (addr, mut otlp) = profile_receivers::otlp_profiles_http()
        .await
        .expect("receiver");
    let mut s = settings(99, &dir);
    s.profiling.dir = None;
    // As resolved from OTEL_EXPORTER_OTLP_ENDPOINT + _PROTOCOL=http/protobuf
    // + _COMPRESSION=gzip (unit-tested in the agent).
    s.profiling.otlp = Some(profiles::export::otlp::OtlpConfig {
        protocol: profiles::export::otlp::Protocol::HttpProtobuf,
        endpoint: format!("http://{addr}/v1development/profiles"),
        headers: vec![("x-tenant".into(), "t1".into())],
        timeout: Duration::from_secs(5),
        gzip: true,
    });
    let agent = Running::start(s).await.expect("agent starts");
    let ran = tokio::task::spawn_blocking(move || run_measured(&exe, &["cpu", "1"]))
        .await
        .unwrap();
    agent.handle.stop().await;
    let request = tokio::time::timeout(DEADLINE, otlp.recv())
        .await
        .expect("an OTLP export within the deadline")
        .expect("request");
    let dict = request.dictionary.as_ref().expect("dictionary");
    let mine = request
        .resource_profiles
        .iter()
        .flat_map(|rp| &rp.scope_profiles[0].profiles[0].samples)
        .filter(|s| {
            s.attribute_indices.iter().any(|&a| {
                let kv = &dict.attribute_table[a as usize];
                dict.string_table[kv.key_strindex as usize] == "process.pid"
                    && format!("{:?}", kv.value).contains(&format!("IntValue({})", ran.pid))
            })
        })
        .count();
    assert!(mine > 0, "samples of pid {} in the OTLP request", ran.pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyroscope_push_and_otlp_profiles() {
    if !privileged("pyroscope_push_and_otlp_profiles") {
        return;
    }
    let dir = temp_dir("prof-export");
    let exe = build_c_burner(&dir.join("burn-export"));
    let (pyro_addr, mut pushes) = profile_receivers::pyroscope().await.expect("receiver");
    let (otlp_addr, mut otlp) = profile_receivers::otlp_profiles().await.expect("receiver");
    let s = e2e::profiling::settings_to_receivers(99, &dir, pyro_addr, otlp_addr);
    let agent = Running::start(s).await.expect("agent starts");
    let ran = tokio::task::spawn_blocking(move || run_measured(&exe, &["cpu", "2"]))
        .await
        .unwrap();
    agent.handle.stop().await;

    // Pyroscope: one series per service with its labels and a valid pprof.
    let push = tokio::time::timeout(DEADLINE, pushes.recv())
        .await
        .expect("a push within the deadline")
        .expect("push");
    assert_eq!(push.path, "/push.v1.PusherService/Push");
    assert_eq!(push.content_type, "application/proto");
    let series = push
        .series("burn-export")
        .expect("a series for burn-export");
    let label = |name: &str| {
        series
            .labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.clone())
    };
    assert_eq!(label("__name__").as_deref(), Some("process_cpu"));
    assert!(label("host_name").is_some_and(|h| !h.is_empty()));
    let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
    assert!(names.is_sorted(), "labels sorted: {names:?}");
    let profile = decode_gz(&series.samples[0].raw_profile);
    pprof::validate(&profile).expect("valid");
    let stacks = mine(stacks(&profile), ran.pid);
    assert!(inclusive(&stacks, "burn_heavy") > 0);

    // OTLP: a resource for the service, stacks through the shared dictionary.
    let request = tokio::time::timeout(DEADLINE, otlp.recv())
        .await
        .expect("an OTLP export within the deadline")
        .expect("request");
    let dict = request.dictionary.as_ref().expect("dictionary");
    assert_eq!(dict.string_table[0], "");
    assert_eq!(dict.mapping_table[0], Default::default());
    assert_eq!(dict.stack_table[0], Default::default());
    let resource = request
        .resource_profiles
        .iter()
        .find(|rp| {
            rp.resource.as_ref().is_some_and(|r| {
                r.attributes.iter().any(|kv| {
                    kv.key == "service.name"
                        && format!("{:?}", kv.value).contains("\"burn-export\"")
                })
            })
        })
        .expect("a resource for burn-export");
    let p = &resource.scope_profiles[0].profiles[0];
    let vt = p.sample_type.expect("sample type");
    assert_eq!(dict.string_table[vt.type_strindex as usize], "cpu");
    assert_eq!(dict.string_table[vt.unit_strindex as usize], "nanoseconds");
    assert_eq!(p.period, 1_000_000_000 / 99);
    let function_names = |sample: &opentelemetry_proto::tonic::profiles::v1development::Sample| {
        dict.stack_table[sample.stack_index as usize]
            .location_indices
            .iter()
            .flat_map(|&l| dict.location_table[l as usize].lines.iter())
            .map(|line| {
                let f = &dict.function_table[line.function_index as usize];
                dict.string_table[f.name_strindex as usize].clone()
            })
            .collect::<Vec<_>>()
    };
    let heavy: i64 = p
        .samples
        .iter()
        .filter(|s| function_names(s).iter().any(|f| f == "burn_heavy"))
        .map(|s| s.values[0])
        .sum();
    assert!(heavy > 0, "burn_heavy in the OTLP profile");
}

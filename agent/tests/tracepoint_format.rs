//! The kernel programs read tracepoint records at fixed offsets; these tests hold
//! those offsets against the running kernel's `format` files. Needs root (tracefs).

use std::{collections::HashMap, fs};

use agent::probe;
use agent_common::{Syscall, layout};

/// Parses a tracefs `format` file into name → (offset, size).
fn fields(category: &str, event: &str) -> HashMap<String, (usize, usize)> {
    let path = format!("{}/events/{category}/{event}/format", probe::TRACEFS);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut fields = HashMap::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("field:"))
    {
        let parts: Vec<&str> = line.split(';').map(str::trim).collect();
        let decl = parts[0].trim_start_matches("field:");
        let name = decl
            .rsplit([' ', '*'])
            .next()
            .unwrap_or_default()
            .split('[')
            .next()
            .unwrap_or_default()
            .to_string();
        let num = |key: &str| {
            parts
                .iter()
                .find_map(|p| p.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{key} in {line}"))
        };
        fields.insert(name, (num("offset:"), num("size:")));
    }
    fields
}

fn ready(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Straight to stderr, past libtest's capture: `cargo xtask test` counts these.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIPPED {test}: needs root to read (or mount) tracefs\n").as_bytes(),
        );
        return false;
    }
    // Mounts tracefs if needed, as the agent does.
    assert!(
        probe::probe()
            .get("tracefs")
            .is_some_and(|c| c.status == probe::Status::Ok)
    );
    true
}

#[test]
fn syscall_records_have_the_arguments_we_read_where_we_read_them() {
    if !ready("syscall_records_have_the_arguments_we_read_where_we_read_them") {
        return;
    }
    for syscall in Syscall::ALL {
        let enter = fields("syscalls", &format!("sys_enter_{}", syscall.name()));
        let mut args: Vec<(usize, usize)> = enter
            .iter()
            .filter(|(name, _)| !name.starts_with("common_") && *name != "__syscall_nr")
            .map(|(_, v)| *v)
            .collect();
        args.sort_unstable();
        assert!(
            args.len() >= syscall.args_used(),
            "{} has {} args",
            syscall.name(),
            args.len()
        );
        for (i, (offset, size)) in args.iter().enumerate() {
            assert_eq!(
                (*offset, *size),
                (layout::SYSCALL_ARGS + 8 * i, 8),
                "{} arg {i}",
                syscall.name()
            );
        }
        let exit = fields("syscalls", &format!("sys_exit_{}", syscall.name()));
        assert_eq!(
            exit.get("ret"),
            Some(&(layout::SYSCALL_ARGS, 8)),
            "{} ret",
            syscall.name()
        );
    }
}

#[test]
fn inet_sock_set_state_fields_are_where_we_read_them() {
    if !ready("inet_sock_set_state_fields_are_where_we_read_them") {
        return;
    }
    let fields = fields("sock", "inet_sock_set_state");
    for (name, offset) in layout::INET_SOCK_SET_STATE {
        assert_eq!(fields.get(name).map(|f| f.0), Some(offset), "{name}");
    }
}

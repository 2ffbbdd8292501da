//! The Rust twin of `burn.c` for the profiling tests: `burn_heavy` and
//! `burn_light`, called by `run_cpu`, spin for 2 and 1 ms of thread CPU time per
//! round. Built by the tests with `rustc -C force-frame-pointers=yes`; no
//! dependencies, so it builds with a bare `rustc`.

use std::hint::black_box;

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

fn cpu_now() -> f64 {
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer for the duration of the call.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[inline(never)]
fn spin(ms: f64) -> u64 {
    let end = cpu_now() + ms / 1e3;
    let mut sink = 0u64;
    while cpu_now() < end {
        for i in 0..20_000u64 {
            sink = black_box(sink.wrapping_add(i * 7));
        }
    }
    sink
}

// Using the result after the call keeps it from becoming a tail call (a jump
// would leave no frame of the caller on the stack).
#[inline(never)]
fn burn_heavy() {
    black_box(spin(2.0) + 1);
}

#[inline(never)]
fn burn_light() {
    black_box(spin(1.0) + 1);
}

#[inline(never)]
fn run_cpu(seconds: f64) {
    let end = cpu_now() + seconds;
    while cpu_now() < end {
        burn_heavy();
        burn_light();
    }
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    run_cpu(seconds);
}

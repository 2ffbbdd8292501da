//! Kernel timestamps are CLOCK_MONOTONIC (`bpf_ktime_get_ns`); exported times are
//! wall clock. The offset between the two is taken once per call to [`WallClock::new`]
//! and can be refreshed so that NTP steps are followed.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds of CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Converts monotonic timestamps to Unix-epoch nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: i128,
}

impl WallClock {
    pub fn new() -> WallClock {
        // Read the monotonic clock between two realtime reads to halve the error.
        let before = realtime_ns();
        let mono = monotonic_ns();
        let after = realtime_ns();
        let real = before / 2 + after / 2;
        WallClock {
            offset_ns: i128::from(real) - i128::from(mono),
        }
    }

    pub fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        u64::try_from(i128::from(monotonic_ns) + self.offset_ns).unwrap_or(0)
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_now_maps_to_wall_clock_now() {
        let clock = WallClock::new();
        let diff = clock.unix_ns(monotonic_ns()).abs_diff(realtime_ns());
        assert!(diff < 50_000_000, "{diff} ns apart");
    }
}

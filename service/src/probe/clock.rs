//! The clocks probe timestamps are read from. eBPF stamps use CLOCK_MONOTONIC
//! (`bpf_ktime_get_ns`); SO_TIMESTAMPING software stamps use CLOCK_REALTIME.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks always exist on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime cannot fail for a valid clock id");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in nanoseconds: the clock eBPF's `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in nanoseconds: the clock of SO_TIMESTAMPING software stamps.
pub fn realtime_ns() -> u64 {
    read(libc::CLOCK_REALTIME)
}

/// CLOCK_TAI − CLOCK_REALTIME in nanoseconds, from adjtimex(2)'s `tai` field
/// (whole seconds; 0 until an NTP daemon sets it, and 0 if adjtimex fails,
/// which a read-only call does not).
pub fn tai_offset_ns() -> i64 {
    // SAFETY: timex is plain data; all-zero is a valid value, and modes = 0 is
    // the read-only query that needs no privilege.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, writable timex.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return 0;
    }
    i64::from(tx.tai) * 1_000_000_000
}

/// Wall-clock time for a CLOCK_MONOTONIC reading, so kernel stamps can be shown
/// as dates. Exact to the offset between the clocks at the time of the call.
pub fn monotonic_to_wall(mono_ns: u64) -> SystemTime {
    let now_mono = monotonic_ns();
    let now_wall = SystemTime::now();
    if mono_ns <= now_mono {
        now_wall - Duration::from_nanos(now_mono - mono_ns)
    } else {
        now_wall + Duration::from_nanos(mono_ns - now_mono)
    }
}

/// Nanoseconds since the Unix epoch for a wall-clock time (0 before the epoch).
pub fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a);
    }

    #[test]
    fn tai_offset_is_what_the_clocks_differ_by() {
        // The kernel keeps CLOCK_TAI = CLOCK_REALTIME + the offset adjtimex reports,
        // which is what the eBPF ingress program relies on.
        let offset = tai_offset_ns();
        assert_eq!(offset % 1_000_000_000, 0, "{offset}");
        let real = realtime_ns() as i64;
        let tai = read(libc::CLOCK_TAI) as i64;
        let measured = tai - real;
        assert!(
            (measured - offset).abs() < 10_000_000,
            "TAI - REALTIME = {measured} ns, adjtimex says {offset} ns"
        );
    }

    #[test]
    fn monotonic_maps_to_now() {
        let wall = monotonic_to_wall(monotonic_ns());
        let drift = SystemTime::now().duration_since(wall).unwrap_or_default();
        assert!(drift < Duration::from_millis(100), "drift {drift:?}");
    }
}

//! What a running process costs, read from /proc while it runs: CPU time
//! (user + system of all its threads, `/proc/<pid>/stat`), memory (`VmRSS`,
//! `VmHWM` of `/proc/<pid>/status`) and storage I/O (`write_bytes`,
//! `read_bytes` of `/proc/<pid>/io`). Two samples give the cost of a window
//! of a long-running daemon, which `wait4` (see [`super::cpu`]) cannot.

use std::{path::PathBuf, time::Duration};

/// Errors reading a process's counters; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no parsable {field}")]
    Field { path: PathBuf, field: &'static str },
}

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU of every thread so far.
    pub cpu: Duration,
    pub rss_kib: u64,
    /// Peak resident set size so far.
    pub hwm_kib: u64,
    /// Bytes the process caused to be sent to storage (page-cache pages it
    /// dirtied, counted when dirtied; tmpfs does not count).
    pub write_bytes: u64,
    pub read_bytes: u64,
}

impl ProcSample {
    /// Reads the counters of process `pid` (needs root for another user's `io`).
    pub fn of(pid: u32) -> Result<ProcSample, ProcError> {
        let read = |name: &str| {
            let path = PathBuf::from(format!("/proc/{pid}/{name}"));
            std::fs::read_to_string(&path)
                .map(|text| (path.clone(), text))
                .map_err(|source| ProcError::Read { path, source })
        };
        let (stat_path, stat) = read("stat")?;
        let (status_path, status) = read("status")?;
        let (io_path, io) = read("io")?;
        let field = |path: &PathBuf, field| ProcError::Field {
            path: path.clone(),
            field,
        };
        let ticks = cpu_ticks(&stat).ok_or_else(|| field(&stat_path, "utime/stime"))?;
        Ok(ProcSample {
            cpu: ticks_to_duration(ticks),
            rss_kib: keyed(&status, "VmRSS:").ok_or_else(|| field(&status_path, "VmRSS"))?,
            hwm_kib: keyed(&status, "VmHWM:").ok_or_else(|| field(&status_path, "VmHWM"))?,
            write_bytes: keyed(&io, "write_bytes:")
                .ok_or_else(|| field(&io_path, "write_bytes"))?,
            read_bytes: keyed(&io, "read_bytes:").ok_or_else(|| field(&io_path, "read_bytes"))?,
        })
    }
}

/// utime + stime (clock ticks) from the text of `/proc/<pid>/stat`. The
/// command name (field 2) may contain spaces and parentheses, so fields are
/// counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz)
}

/// The first number after `key` on its line (`VmRSS:   1234 kB`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_survive_odd_command_names() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 9 0 123 456 789";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("4242 (x) S 1 2"), None);
    }

    #[test]
    fn keyed_numbers_come_from_their_own_line() {
        let status = "Name:\thopwatch\nVmHWM:\t   52000 kB\nVmRSS:\t   48000 kB\n";
        assert_eq!(keyed(status, "VmRSS:"), Some(48_000));
        assert_eq!(keyed(status, "VmHWM:"), Some(52_000));
        assert_eq!(keyed(status, "VmSwap:"), None);
        let io = "rchar: 10\nwchar: 20\nread_bytes: 4096\nwrite_bytes: 8192\n\
                  cancelled_write_bytes: 0\n";
        assert_eq!(keyed(io, "write_bytes:"), Some(8_192));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let before = ProcSample::of(std::process::id()).unwrap();
        // Spin long enough for a few clock ticks to be charged.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = ProcSample::of(std::process::id()).unwrap();
        assert!(after.cpu > before.cpu, "{before:?} then {after:?}");
        assert!(after.rss_kib > 0 && after.hwm_kib >= after.rss_kib);
    }
}

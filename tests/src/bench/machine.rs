//! The machine a benchmark ran on, as one line for the report: cores, CPU
//! model, memory, kernel and the date (UTC). Numbers without it are not
//! comparable across runs.

use std::{fmt, time::SystemTime};

/// What the benchmark ran on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: u64,
    pub kernel: String,
    /// YYYY-MM-DD, UTC.
    pub date: String,
}

impl Machine {
    /// Reads this machine's description from /proc and uname.
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown kernel".to_owned());
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            memory_gib: (mem_kib + (1 << 19)) >> 20,
            kernel,
            date: utc_date(SystemTime::now()),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cores ({}), {} GiB RAM, Linux {}, {}",
            self.cores, self.cpu_model, self.memory_gib, self.kernel, self.date
        )
    }
}

/// The UTC calendar date of `time`, YYYY-MM-DD.
pub fn utc_date(time: SystemTime) -> String {
    let mut stamp = humantime::format_rfc3339_seconds(time).to_string();
    stamp.truncate(10);
    stamp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn dates_are_calendar_dates() {
        let at = |secs| utc_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01");
        assert_eq!(at(951_782_400), "2000-02-29");
        assert_eq!(at(1_700_000_000), "2023-11-14");
    }
}

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

/// The machine-wide CPU counters of /proc/stat, to tell how busy the machine
/// was during a run: the "idle" runs share the cores with whatever else runs,
/// and on a virtual machine the hypervisor's steal time counts too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSample {
    total: u64,
    idle: u64,
    steal: u64,
}

/// How busy the machine was between two [`CpuSample`]s, in percent of all cores.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Busy {
    /// Not idle: user, system, interrupts and steal.
    pub busy_pct: f64,
    /// Taken by the hypervisor.
    pub steal_pct: f64,
}

impl CpuSample {
    /// Reads the aggregate `cpu` line of /proc/stat (zeros if unreadable).
    pub fn now() -> CpuSample {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        CpuSample::parse(&stat).unwrap_or_default()
    }

    fn parse(stat: &str) -> Option<CpuSample> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|n| n.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let field = |i: usize| v.get(i).copied().unwrap_or(0);
        Some(CpuSample {
            total: (0..8).map(field).sum(),
            idle: field(3) + field(4),
            steal: field(7),
        })
    }

    /// Busy and steal shares since `earlier`.
    pub fn since(&self, earlier: &CpuSample) -> Busy {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        Busy {
            busy_pct: 100.0 * (1.0 - self.idle.saturating_sub(earlier.idle) as f64 / total),
            steal_pct: 100.0 * self.steal.saturating_sub(earlier.steal) as f64 / total,
        }
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
    fn busy_and_steal_shares_between_samples() {
        let a = CpuSample::parse("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        let b = CpuSample::parse("cpu  200 0 200 800 100 0 0 100 0 0\n").unwrap();
        let busy = b.since(&a);
        assert_eq!((busy.busy_pct, busy.steal_pct), (75.0, 25.0));
    }

    #[test]
    fn dates_are_calendar_dates() {
        let at = |secs| utc_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01");
        assert_eq!(at(951_782_400), "2000-02-29");
        assert_eq!(at(1_700_000_000), "2023-11-14");
    }
}

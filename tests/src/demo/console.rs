//! What the demo prints: lines on stdout stamped with the time since the demo
//! started (the clock its timeline and banner use). Writes ignore a closed
//! stdout (`hopwatch-demo | head`): failing there must not skip the cleanup.

use std::io::Write as _;
use std::time::{Duration, Instant};

/// The demo's clock and its output.
#[derive(Debug, Clone, Copy)]
pub struct Console {
    start: Instant,
}

impl Console {
    /// Starts the clock now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// When the clock started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// A line stamped with the time since the start: `[+1:05] ...`.
    pub fn say(&self, line: impl std::fmt::Display) {
        plain(format_args!("[{}] {line}", clock(self.elapsed())));
    }
}

/// A line without a stamp.
pub fn plain(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// `+m:ss` for a time since the start.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("+{}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_minutes_and_seconds() {
        assert_eq!(clock(Duration::from_millis(45_900)), "+0:45");
        assert_eq!(clock(Duration::from_secs(3_725)), "+62:05");
    }
}

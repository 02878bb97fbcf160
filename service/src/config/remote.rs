//! `[[remote_write]]`: where hopwatch pushes its metrics with the Prometheus
//! remote-write 1.0 protocol, and how it backfills after an outage. Read once
//! at start (a change needs a restart); the pusher is `crate::remote`.

use std::path::PathBuf;
use std::time::Duration;

use crate::alerts::{Secret, WebhookUrl};

/// Which series are pushed: a budget, because hosted receivers cap series and
/// every series costs the box's uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesSet {
    /// Per target: its state, counters, window gauges and the destination's
    /// RTT sum and count; per hop only the loss ratio (25 series for a
    /// 10-hop target). docs/benchmarks.md measures it.
    Default,
    /// Every family of /metrics, per-hop histograms included.
    Full,
}

impl SeriesSet {
    pub const NAMES: [&'static str; 2] = ["default", "full"];

    pub fn parse(text: &str) -> Option<SeriesSet> {
        match text {
            "default" => Some(SeriesSet::Default),
            "full" => Some(SeriesSet::Full),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SeriesSet::Default => "default",
            SeriesSet::Full => "full",
        }
    }
}

/// How the receiver is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAuth {
    None,
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

/// One `[[remote_write]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteWriteConfig {
    /// Names the receiver in logs, /metrics and /healthz (default: `remote_write_N`).
    pub name: String,
    pub url: WebhookUrl,
    pub auth: RemoteAuth,
    /// A PEM file of CA certificates trusted for an https receiver, in
    /// addition to the system's.
    pub ca_file: Option<PathBuf>,
    /// How often a snapshot is pushed; also the spacing of backfilled samples.
    pub interval: Duration,
    /// How long one request may take.
    pub timeout: Duration,
    /// Extra labels on every series, sorted by name.
    pub labels: Vec<(String, String)>,
    pub series: SeriesSet,
    /// Missed intervals older than this are not backfilled (counted as dropped).
    pub backfill_max_age: Duration,
    /// Samples per second a backfill sends at most.
    pub backfill_samples_per_second: u32,
}

//! The allowed range, `(min, max)` inclusive, of every bounded key. Minimums
//! keep the daemon from flooding the network or the disk; maximums catch unit
//! mistakes ("5000s" meant as milliseconds) before they silence a target.

use std::time::Duration;

const SECOND: u64 = 1;
const HOUR: u64 = 3600 * SECOND;
const DAY: u64 = 24 * HOUR;
/// Ten years: retention beyond this is a typo, not a plan.
const TEN_YEARS: Duration = Duration::from_secs(3650 * DAY);

/// `[service] max_probes_per_second`
pub const PROBES_PER_SECOND: (u32, u32) = (1, 1_000_000);
/// `[service] interface`: Linux's IFNAMSIZ less the terminating NUL.
pub const INTERFACE_NAME_LEN: usize = 15;

/// `[storage] flush_interval`
pub const FLUSH_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(HOUR));
/// `[storage] raw_retention`
pub const RAW_RETENTION: (Duration, Duration) = (Duration::from_secs(HOUR), TEN_YEARS);
/// `[storage] minute_retention`
pub const MINUTE_RETENTION: (Duration, Duration) = (Duration::from_secs(HOUR), TEN_YEARS);
/// `[storage] hour_retention`
pub const HOUR_RETENTION: (Duration, Duration) = (Duration::from_secs(DAY), TEN_YEARS);
/// `[storage] event_retention`
pub const EVENT_RETENTION: (Duration, Duration) = (Duration::from_secs(HOUR), TEN_YEARS);
/// `[storage.raw_log] max_bytes`: at least 4 KiB, so a file holds some lines
/// before it rolls; at most 1 TiB.
pub const RAW_LOG_BYTES: (u64, u64) = (4096, 1 << 40);
/// `[storage.raw_log] keep`
pub const RAW_LOG_KEEP: (u32, u32) = (1, 100);

/// `[statistics] window`
pub const WINDOW: (u32, u32) = (1, 10_000);

/// `[enrichment] dns_timeout`
pub const DNS_TIMEOUT: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(30));

/// `interval`: at most ten rounds a second per target.
pub const INTERVAL: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(HOUR));
/// `timeout`
pub const TIMEOUT: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(60));

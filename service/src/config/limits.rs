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

/// `[alerts] loss_pct` (0 turns the check off)
pub const ALERT_LOSS_PCT: (f64, f64) = (0.0, 100.0);
/// `[alerts] latency_ms`, `jitter_ms` and `branch_latency_ms`: up to a minute, the longest probe timeout.
pub const ALERT_MS: (f64, f64) = (0.0, 60_000.0);
/// `[alerts] mos_below`: 0 (off) or a score up to 4.5, the scale's top.
pub const ALERT_MOS_BELOW: (f64, f64) = (0.0, 4.5);
/// `[alerts] unreachable_rounds` (0 turns the check off)
/// `[alerts] outbox_max_age`: an hour to a year.
pub const ALERT_OUTBOX_MAX_AGE: (Duration, Duration) = (
    Duration::from_secs(3600),
    Duration::from_secs(366 * 24 * 3600),
);
/// `[alerts] outbox_max_bytes`: 64 KiB (a few events) to 1 GiB.
pub const ALERT_OUTBOX_MAX_BYTES: (u64, u64) = (64 << 10, 1 << 30);
/// `[alerts] outbox_memory_events`: 0 (keep nothing in memory) to a million.
pub const ALERT_OUTBOX_MEMORY_EVENTS: (u32, u32) = (0, 1_000_000);
pub const ALERT_UNREACHABLE_ROUNDS: (u32, u32) = (0, 100_000);
/// `[alerts] raise_rounds` and `clear_rounds`
pub const ALERT_ROUNDS: (u32, u32) = (1, 100_000);
/// `[alerts] clear_ratio`: 1 is no hysteresis band; 0 clears only at zero.
pub const ALERT_CLEAR_RATIO: (f64, f64) = (0.0, 1.0);
/// `[alerts] mos_clear_margin`
pub const ALERT_MOS_CLEAR_MARGIN: (f64, f64) = (0.0, 3.5);

/// `[[webhook]] timeout`
pub const WEBHOOK_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(300));
/// `[[webhook]] retry_initial`: short values are for tests.
pub const WEBHOOK_RETRY_INITIAL: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(HOUR));
/// `[[webhook]] retry_max`: at least `retry_initial`, at most a day.
pub const WEBHOOK_RETRY_MAX: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(DAY));

/// `[web] max_body_bytes`
pub const WEB_MAX_BODY_BYTES: (u64, u64) = (1 << 10, 1 << 20);
/// `[web] request_timeout`
pub const WEB_REQUEST_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(600));
/// `[web] max_concurrent_reads`
pub const WEB_MAX_CONCURRENT_READS: (u32, u32) = (1, 1024);
/// `[web] max_live_streams`
pub const WEB_MAX_LIVE_STREAMS: (u32, u32) = (1, 100_000);
/// `[web] allowed_hosts`: names, not a way to list the internet.
pub const WEB_ALLOWED_HOSTS: usize = 64;
/// `[web] read_token` and `write_token`, in characters.
pub const WEB_TOKEN_LEN: (usize, usize) = (16, 256);
/// A `[[peer]]`'s probe interval: STAMP sessions go down to 1 ms for micro-bursts.
pub const PEER_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(HOUR));

/// `[service] vantage`: characters.
pub const VANTAGE_LEN: usize = 64;
/// `[[remote_write]] interval`
pub const REMOTE_WRITE_INTERVAL: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(HOUR));
/// `[[remote_write]] timeout`
pub const REMOTE_WRITE_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(300));
/// `[[remote_write]] backfill_max_age`: 0 turns backfill off; at most the
/// raw retention, checked separately (older rounds are not there to read).
pub const REMOTE_WRITE_BACKFILL_MAX_AGE: (Duration, Duration) = (Duration::ZERO, TEN_YEARS);
/// `[[remote_write]] backfill_samples_per_second`
pub const REMOTE_WRITE_BACKFILL_RATE: (u32, u32) = (100, 10_000_000);
/// `[[remote_write]] labels`: at most this many extra labels.
pub const REMOTE_WRITE_LABELS: usize = 16;

//! The built-in default of every optional key, in one place so the code, the
//! reference config and docs/configuration.md can be checked against each other.

use std::time::Duration;

use crate::probe::Protocol;

/// `[service] state_dir`
pub const STATE_DIR: &str = "/var/lib/hopwatch";

/// `[storage] flush_interval`: writes are batched this long; router flash
/// wears out. A minute makes each target's rounds one compressed chunk a
/// minute (docs/benchmarks.md, "Where the history goes").
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// `[storage] raw_retention`: 48 hours of raw rounds.
pub const RAW_RETENTION: Duration = Duration::from_secs(48 * HOUR);
/// `[storage] minute_retention`: 30 days of 1-minute rollups.
pub const MINUTE_RETENTION: Duration = Duration::from_secs(30 * DAY);
/// `[storage] hour_retention`: a year of 1-hour rollups.
pub const HOUR_RETENTION: Duration = Duration::from_secs(365 * DAY);
/// `[storage] event_retention`
pub const EVENT_RETENTION: Duration = Duration::from_secs(90 * DAY);
/// `[storage.raw_log] max_bytes`: 64 MiB before rollover.
pub const RAW_LOG_BYTES: u64 = 64 << 20;
/// `[storage.raw_log] keep`: rolled-over files kept.
pub const RAW_LOG_KEEP: u32 = 3;

/// `[statistics] window`: probes per hop in the sliding window.
pub const WINDOW: u32 = 100;

/// `[enrichment] dns_timeout`
pub const DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// `[defaults] protocol`
pub const PROTOCOL: Protocol = Protocol::Icmp;
/// `port` for UDP: the first port classic traceroute uses, closed on most hosts.
pub const UDP_PORT: u16 = 33434;
/// `port` for TCP: HTTP, open or at least answered (RST) on most hosts.
pub const TCP_PORT: u16 = 80;
/// `interval`: time between the starts of two rounds.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// `timeout`: how long a probe waits for its reply.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// `first_ttl`
pub const FIRST_TTL: u8 = 1;
/// `max_hops`
pub const MAX_HOPS: u8 = 30;
/// `final_hop_only`: probe every hop (mtr-style), not just the destination.
pub const FINAL_HOP_ONLY: bool = false;
/// `packet_size`: whole IP packet; fits every protocol's minimum over IPv4 and IPv6.
pub const PACKET_SIZE: u16 = 64;

/// A target's `multipath.branches`: the most ECMP branches kept probed.
pub const MULTIPATH_BRANCHES: u8 = 4;
/// The largest `multipath.branches`: each branch is one more probe per TTL
/// per round, so the cap bounds what one target can cost.
pub const MULTIPATH_MAX_BRANCHES: u8 = 8;
/// `multipath.confidence`: MDA's usual 95 %.
pub const MULTIPATH_CONFIDENCE: u8 = 95;
/// `multipath.rediscover`: how often the branches are looked for again.
pub const MULTIPATH_REDISCOVER: Duration = Duration::from_secs(HOUR);
/// `multipath.max_probes`: one discovery's probe budget. A 2-way diamond
/// over ~10 hops costs ~100 probes at 95 %; a 16-way one a few hundred.
pub const MULTIPATH_MAX_PROBES: u32 = 2000;

// The `[alerts]` defaults belong to the alert settings they fill in; they are
// re-exported here so every key's default is still found in this one file.
pub use crate::alerts::settings::defaults::{
    ALERT_BRANCH_LATENCY_MS, ALERT_CLEAR_RATIO, ALERT_CLEAR_ROUNDS, ALERT_HOP_COUNT_CHANGE,
    ALERT_JITTER_MS, ALERT_LATENCY_MS, ALERT_LATENCY_STAT, ALERT_LOSS_PCT, ALERT_MOS_BELOW,
    ALERT_MOS_CLEAR_MARGIN, ALERT_OUTBOX_MAX_AGE, ALERT_OUTBOX_MAX_BYTES,
    ALERT_OUTBOX_MEMORY_EVENTS, ALERT_RAISE_ROUNDS, ALERT_RETURN_PATH_CHANGE, ALERT_ROUTE_CHANGE,
    ALERT_UNREACHABLE_ROUNDS,
};

/// `[[webhook]] timeout`: one delivery attempt.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// `[[webhook]] retry_initial`
pub const WEBHOOK_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// `[[webhook]] retry_max`
pub const WEBHOOK_RETRY_MAX: Duration = Duration::from_secs(300);

/// `[web] listen`: loopback only, so exposing the API is a decision.
pub const WEB_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9470);
/// `[web] max_body_bytes`: a new target is well under 1 KiB.
pub const WEB_MAX_BODY_BYTES: u64 = 64 << 10;
/// `[web] request_timeout`: a month of history reads in well under a second
/// on a healthy store; ten seconds means something is wrong.
pub const WEB_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// `[web] max_concurrent_reads`: a few dashboards' worth of charts at once,
/// without letting a flood take the store or the blocking pool.
pub const WEB_MAX_CONCURRENT_READS: u32 = 8;
/// `[web] max_live_streams`: one per open page; 32 is many operators.
pub const WEB_MAX_LIVE_STREAMS: u32 = 32;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
/// A `[[peer]]`'s reflector port: STAMP's well-known port (RFC 8762).
pub const PEER_PORT: u16 = crate::peer::STAMP_PORT;

/// `[[remote_write]] interval`: one push every 15 s, Prometheus' usual scrape interval.
pub const REMOTE_WRITE_INTERVAL: Duration = Duration::from_secs(15);
/// `[[remote_write]] timeout`
pub const REMOTE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// `[[remote_write]] backfill_max_age`: six hours of missed pushes are sent again.
pub const REMOTE_WRITE_BACKFILL_MAX_AGE: Duration = Duration::from_secs(6 * HOUR);
/// `[[remote_write]] backfill_samples_per_second`
pub const REMOTE_WRITE_BACKFILL_SAMPLES_PER_SECOND: u32 = 20_000;

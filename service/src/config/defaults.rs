//! The built-in default of every optional key, in one place so the code, the
//! reference config and docs/configuration.md can be checked against each other.

use std::time::Duration;

use crate::probe::Protocol;

/// `[service] state_dir`
pub const STATE_DIR: &str = "/var/lib/hopwatch";

/// `[storage] flush_interval`: writes are batched this long; router flash wears out.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
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
/// `packet_size`: whole IP packet; fits every protocol's minimum over IPv4 and IPv6.
pub const PACKET_SIZE: u16 = 64;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

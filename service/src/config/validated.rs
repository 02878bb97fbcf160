//! The checked, typed configuration the daemon runs from: every default applied,
//! every value parsed and within its range. Built only by [`super::resolve`].

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::TargetId;
use crate::probe::{EngineConfig, FlowSpec, Protocol, SourceSelection, TimestampPreference, Ttl};

/// A whole config file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub service: ServiceConfig,
    pub storage: StorageConfig,
    pub statistics: StatisticsConfig,
    pub enrichment: EnrichmentConfig,
    /// `[web]`: the status pages, JSON API and /metrics.
    pub web: super::web::WebConfig,
    /// In file order; names are unique.
    pub targets: Vec<TargetConfig>,
    /// `[alerts]`, per-target `alerts` overrides and `[[webhook]]`s.
    pub alerts: crate::alerts::AlertsConfig,
    /// `[[peer]]`s: STAMP sessions, in file order; names are unique.
    pub peers: Vec<super::peers::PeerConfig>,
    /// `[reflector]`: `None` when the section is absent (no reflector runs).
    pub reflector: Option<super::peers::ReflectorSettings>,
    /// `[[remote_write]]`s, in file order; names are unique.
    pub remote_write: Vec<super::remote::RemoteWriteConfig>,
}

impl Config {
    /// The target named `id`, if configured.
    pub fn target(&self, id: &TargetId) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| &t.id == id)
    }

    /// The probe engine's settings: all from `[service]`.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            timestamps: self.service.timestamps,
            source: self.service.source.clone(),
            max_probes_per_second: self.service.max_probes_per_second,
            flow_range: None,
        }
    }
}

/// `[service]`: process-wide settings, read once at start.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The sled store's directory. Relative paths in the file are taken from the
    /// config file's directory.
    pub state_dir: PathBuf,
    pub timestamps: TimestampPreference,
    pub max_probes_per_second: Option<NonZeroU32>,
    pub source: SourceSelection,
    /// The `vantage` label on every series pushed by remote write: where the
    /// measurements are taken from (default: the host name).
    pub vantage: String,
}

/// `[storage]`: batching and retention of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// How long writes are batched in memory before one flush.
    pub flush_interval: Duration,
    pub raw_retention: Duration,
    pub minute_retention: Duration,
    pub hour_retention: Duration,
    pub event_retention: Duration,
    /// The per-probe JSONL log; `None` when not configured.
    pub raw_log: Option<RawLogConfig>,
}

/// `[storage.raw_log]`: a size-capped JSONL log of every probe, with rollover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLogConfig {
    pub path: PathBuf,
    /// Size at which the log is rolled over.
    pub max_bytes: u64,
    /// Rolled-over files kept besides the current one.
    pub keep: u32,
}

/// `[statistics]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatisticsConfig {
    /// Probes per hop in the sliding window.
    pub window: u32,
}

/// `[enrichment]`: what is looked up about responders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichmentConfig {
    pub reverse_dns: bool,
    pub dns_timeout: Duration,
    /// A MaxMind-format ASN database (.mmdb); `None` turns ASN lookups off.
    pub asn_database: Option<PathBuf>,
    /// A MaxMind-format city database (.mmdb) placing public responders on
    /// the target page's map; `None` turns positions off.
    pub city_database: Option<PathBuf>,
}

/// How a target is probed, after its overrides and `[defaults]` are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    pub protocol: Protocol,
    /// Destination port for UDP and TCP; 0 for ICMP, which has none.
    pub port: u16,
    /// Time between the starts of two rounds.
    pub interval: Duration,
    /// How long a probe waits for its reply.
    pub timeout: Duration,
    pub first_ttl: Ttl,
    pub max_hops: Ttl,
    /// Whole IP packet, headers included.
    pub packet_size: u16,
    /// One probe per round, to the destination only (TTL `max_hops`): a TCP
    /// handshake to `port` or an ICMP echo; the path is one row.
    pub final_hop_only: bool,
}

/// One `[[target]]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    pub id: TargetId,
    /// The host as written: a name (resolved by the daemon) or an IP literal.
    pub host: String,
    /// `host` parsed, when it is an IP literal.
    pub ip: Option<IpAddr>,
    pub label: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub probe: ProbeSettings,
    /// A paused target is not probed but keeps its history.
    pub paused: bool,
    /// `multipath`: `None` (the default) follows one flow only.
    pub multipath: Option<MultipathSettings>,
}

/// A target's `multipath` table, validated: how its ECMP branches are found
/// and how many are kept probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipathSettings {
    /// The most branches probed each round (1 to 8); discovery may find more.
    pub max_branches: u8,
    /// MDA's confidence that no branch was missed.
    pub confidence: crate::probe::multipath::Confidence,
    /// Time between two discoveries (a route change also starts one).
    pub rediscover: Duration,
    /// The most probes one discovery may send.
    pub max_probes: u32,
}

impl TargetConfig {
    /// What the label shows: the label, else the name.
    pub fn display_name(&self) -> &str {
        self.label.as_deref().unwrap_or(self.id.as_str())
    }

    /// The engine flow for this target once its host is resolved to `dst`.
    pub fn flow_spec(&self, dst: IpAddr) -> FlowSpec {
        FlowSpec {
            dst,
            protocol: self.probe.protocol,
            dst_port: self.probe.port,
            packet_size: usize::from(self.probe.packet_size),
            timeout: self.probe.timeout,
        }
    }
}

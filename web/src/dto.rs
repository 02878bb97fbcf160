//! The web crate's own data types: what the read model hands over and what the
//! JSON API serves. They mirror the service's live state and history without
//! depending on it, so the router can be tested with a fake read model.
//!
//! Conventions: times are Unix milliseconds (`*_ms`), round-trip times and
//! jitter nanoseconds (`*_ns`), loss percent (`*_pct`); `None` serialises as
//! `null` and means "not known yet" (no probe answered, no round yet).

use std::net::IpAddr;

use serde::{Deserialize, Serialize, Serializer};

/// What the service says about itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceInfo {
    /// hopwatch's version.
    pub version: String,
    /// The probe engine's timestamp source: `ebpf`, `kernel` or `userspace`.
    pub timestamp_source: String,
    /// When the daemon started.
    pub started_at_ms: u64,
    /// Probes per hop in the live statistics window.
    pub window_probes: u32,
    /// A city database (`[enrichment] city_database`) is open, so a public
    /// responder without a position is one it does not know.
    pub city_database: bool,
}

/// What a target is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Paused: not probed, history kept.
    Paused,
    /// Waiting for its host name to resolve.
    Resolving,
    /// Being probed.
    Running,
    /// Its host did not resolve or its flow could not open; retried.
    Failed,
}

impl TargetState {
    pub const ALL: [TargetState; 4] = [
        TargetState::Paused,
        TargetState::Resolving,
        TargetState::Running,
        TargetState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Paused => "paused",
            TargetState::Resolving => "resolving",
            TargetState::Running => "running",
            TargetState::Failed => "failed",
        }
    }
}

/// The destination's latency over the live window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub last_ns: Option<u64>,
    pub avg_ns: Option<f64>,
    pub best_ns: Option<u64>,
    pub worst_ns: Option<u64>,
    pub p50_ns: Option<u64>,
    pub p95_ns: Option<u64>,
}

/// What an alert is about: a `[[target]]` (its destination) or a `[[peer]]`
/// (a STAMP link), as webhook events (`target.subject`) and Alertmanager's
/// `subject` label say it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSubject {
    #[default]
    Target,
    Peer,
    /// The service itself: one of its components (`service:store`,
    /// `service:outbox`).
    Service,
}

impl AlertSubject {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSubject::Target => "target",
            AlertSubject::Peer => "peer",
            AlertSubject::Service => "service",
        }
    }
}

/// The prefix of a peer's alert key (`peer:NAME`); target names cannot
/// contain `:`, so the two never collide.
pub const PEER_KEY_PREFIX: &str = "peer:";

/// An alert that is firing now. Filled by the alerts module through the
/// service's read model; empty when it reports none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertDto {
    /// The rule, e.g. `loss` or `route_change`.
    pub name: String,
    /// The alert's identity, as the alerts module and its webhooks name it.
    pub id: String,
    /// A target's or a peer's alert.
    pub subject: AlertSubject,
    /// The subject's key, as webhooks (`target.name`), Alertmanager and
    /// /metrics (`target` label) name it: a target's name, or `peer:NAME`.
    pub target: String,
    /// When it started firing.
    pub since_ms: Option<u64>,
    /// One line for people (for a peer's loss, it names the lossy direction).
    pub summary: String,
    /// The value that raised it and the threshold it crossed, in `unit`
    /// (`pct`, `ms`, `mos` or `rounds`); `None` for route and hop-count changes.
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub unit: Option<String>,
    /// Where the problem is, as the raise's webhook event has it: for a
    /// target, the hop where it starts; for a peer's loss, the `direction`
    /// (`forward`, `backward`, `both`, `unknown`) with each direction's loss.
    pub localisation: Option<serde_json::Value>,
}

/// One alert's life, from raise to clear: the incident history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentDto {
    /// The alert's id, as its webhook events carry it (`alert_id`).
    pub id: String,
    /// The rule: `loss`, `latency`, `jitter`, `mos`, `unreachable`,
    /// `route_change` or `hop_count_change`.
    pub name: String,
    pub subject: AlertSubject,
    /// The subject's key: a target's name, or `peer:NAME`.
    pub target: String,
    pub label: Option<String>,
    pub raised_at_ms: u64,
    /// `None` while it is still raised.
    pub cleared_at_ms: Option<u64>,
    /// `recovered`, `check_disabled`, `target_removed` or `peer_removed`.
    pub clear_reason: Option<String>,
    /// How long it lasted, or has lasted so far.
    pub duration_ms: u64,
    /// The raise's summary.
    pub summary: String,
    /// The worst value its events reported (the lowest for MOS), in `unit`.
    pub peak_value: Option<f64>,
    pub threshold: Option<f64>,
    pub unit: Option<String>,
    /// Where the problem started, as last sent.
    pub localisation: Option<serde_json::Value>,
    /// How often the localisation was updated while it was raised.
    pub updates: u32,
}

/// One row of the overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSummary {
    /// The target's name in the config: its stable identity.
    pub id: String,
    /// What to show: the label, else the name.
    pub name: String,
    pub label: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// The host as configured (a name or an address).
    pub host: String,
    /// The address being probed, once resolved.
    pub address: Option<IpAddr>,
    /// `icmp`, `udp` or `tcp`.
    pub protocol: String,
    /// Destination port; 0 for ICMP.
    pub port: u16,
    pub interval_ms: u64,
    pub packet_size: u16,
    /// One probe per round to the destination only (a TCP handshake or an
    /// ICMP echo): `hops` has one row, the destination, and `hop_count` is
    /// `null` (not measured).
    pub final_hop_only: bool,
    pub state: TargetState,
    /// Why the target is not probed, when `state` is `failed`.
    pub error: Option<String>,
    pub paused: bool,
    /// The destination's TTL on the current path.
    pub hop_count: Option<u8>,
    pub rounds: u64,
    pub last_round_at_ms: Option<u64>,
    /// Path loss: the destination's loss over the window.
    pub loss_pct: Option<f64>,
    pub latency: Latency,
    /// Mean |ΔRTT| between consecutive answers at the destination, over the window.
    pub jitter_ns: Option<f64>,
    /// Mean opinion score, 1 to 4.5.
    pub mos: Option<f64>,
    pub alerts: Vec<AlertDto>,
    /// The timestamp source of the target's latest rounds.
    pub timestamp_source: Option<String>,
    /// The first localisation finding, for the overview ("loss starts at hop 3 ...").
    pub finding: Option<String>,
}

/// Loss, RTT and jitter over a set of probes (the live window, or since start).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatsDto {
    pub sent: u64,
    pub received: u64,
    pub loss_pct: Option<f64>,
    pub last_ns: Option<u64>,
    pub avg_ns: Option<f64>,
    pub best_ns: Option<u64>,
    pub worst_ns: Option<u64>,
    pub stddev_ns: Option<f64>,
    pub p50_ns: Option<u64>,
    pub p95_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    /// Mean |ΔRTT| between consecutive answered probes.
    pub jitter_ns: Option<f64>,
    pub jitter_max_ns: Option<u64>,
}

/// A responder address with what is known about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponderDto {
    pub address: IpAddr,
    /// Reverse DNS, once resolved.
    pub hostname: Option<String>,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
    /// Where the city database (`[enrichment] city_database`) places it:
    /// degrees north and east (WGS 84), the city and the country. `None`
    /// for special-purpose addresses and for addresses the database does
    /// not place; never guessed.
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub city: Option<String>,
    pub country: Option<String>,
    /// The IANA special-purpose block the address is in (e.g. `private (RFC
    /// 1918)`), which is why it has no AS or position: such addresses are
    /// never looked up. `None` for public addresses.
    pub special_purpose: Option<String>,
    /// Its share of the window's answers at this hop.
    pub share_pct: Option<f64>,
    pub avg_ns: Option<f64>,
    pub last_seen_ms: Option<u64>,
}

/// One TTL of the live hop table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HopRow {
    pub ttl: u8,
    /// Every responder seen at this TTL, busiest first (more than one: ECMP or
    /// a load balancer). Empty while the TTL has never answered.
    pub responders: Vec<ResponderDto>,
    /// Answers from responders beyond the tracked ones.
    pub other_responders: u64,
    pub window: StatsDto,
    pub since_start: StatsDto,
    /// RFC 3550 interarrival jitter estimate.
    pub jitter_rfc3550_ns: Option<f64>,
    /// Loses replies that later hops do not: likely ICMP rate limiting, so its
    /// loss is not path loss.
    pub rate_limited: bool,
    /// Takes longer to answer than a hop after it in most rounds: its router
    /// generates ICMP slowly, so its latency is not path latency.
    pub slow_responder: bool,
    pub is_destination: bool,
    /// MPLS label stacks (RFC 4950) the responders at this TTL reported in
    /// their latest ICMP errors, one entry per responder that reported any.
    pub mpls: Vec<HopLabelsDto>,
    /// Header rewrites first seen in the quotes of this hop: a middlebox sits
    /// between the hop before and this one.
    pub middleboxes: Vec<MiddleboxDto>,
}

/// The MPLS label stack one responder reported, outermost first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HopLabelsDto {
    pub responder: IpAddr,
    pub labels: Vec<MplsLabelDto>,
    /// The stack as mtr prints it: `Lbl 24001 TC 0 S 1 TTL 1`, entries joined by `, `.
    pub text: String,
}

/// One RFC 4950 label stack entry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MplsLabelDto {
    pub label: u32,
    pub traffic_class: u8,
    pub bottom_of_stack: bool,
    pub ttl: u8,
}

/// A header field the quoted probe header shows rewritten, at the first hop
/// whose ICMP error shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MiddleboxDto {
    pub ttl: u8,
    /// The responder whose quote first showed it.
    pub responder: IpAddr,
    /// `dscp`, `ecn`, `source_address`, `ttl` or `length`.
    pub field: String,
    /// What the probe was sent with (for `ttl`: the 1 a time-exceeded quote should carry).
    pub from: FieldValueDto,
    /// What the quote shows.
    pub to: FieldValueDto,
    /// For people: `DSCP 0 → 46 at hop 3 (198.18.2.2)`.
    pub summary: String,
}

/// A header field's value: a number, or an address for `source_address`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FieldValueDto {
    Number(u32),
    Address(IpAddr),
}

/// One TTL of the current path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathHopDto {
    pub ttl: u8,
    pub responder: Option<IpAddr>,
    pub responders: Vec<IpAddr>,
}

/// Where a degradation of the destination begins.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingDto {
    /// `loss` or `latency`.
    pub kind: String,
    pub ttl: u8,
    pub responder: Option<IpAddr>,
    /// How sure the analysis is of this hop, 0 to 1.
    pub confidence: f64,
    /// The rounds every hop was compared over (those since the onset).
    pub rounds: usize,
    pub summary: String,
}

/// A route change, hop-count change, alert or other event of a target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventDto {
    pub target: String,
    pub at_ms: u64,
    /// `route_changed`, `hop_count_changed`, or a kind the alerts module records.
    pub kind: String,
    /// One line for people.
    pub summary: String,
    /// The event's own fields (for `route_changed`: `before`, `after` and
    /// `first_changed_ttl`, and `branch` when it is a multipath branch's;
    /// for `hop_count_changed`: `before` and `after`).
    pub detail: serde_json::Value,
    /// The AS number and organisation of each address in `detail`'s
    /// `before` and `after` paths that the ASN database (`[enrichment]
    /// asn_database`) knows; left out when none is known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub as_info: Vec<AsInfoDto>,
}

/// What the ASN database says about one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AsInfoDto {
    pub address: IpAddr,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
}

/// The destination, whatever TTL it answers at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationDto {
    pub ttl: Option<u8>,
    pub address: Option<IpAddr>,
    pub window: StatsDto,
    pub since_start: StatsDto,
    pub jitter_rfc3550_ns: Option<f64>,
    pub mos: Option<f64>,
    /// The E-model's transmission rating behind the MOS.
    pub r_factor: Option<f64>,
}

/// Everything the target page shows live.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetDetail {
    #[serde(flatten)]
    pub summary: TargetSummary,
    /// Probes per hop in the live window.
    pub window_probes: u32,
    pub hops: Vec<HopRow>,
    pub path: Vec<PathHopDto>,
    /// Diverging rounds seen towards a route change not yet confirmed.
    pub pending_change_rounds: u32,
    pub destination: DestinationDto,
    pub findings: Vec<FindingDto>,
    /// The latest events, oldest first (older ones: the events endpoint).
    pub recent_events: Vec<EventDto>,
    /// Every confirmed middlebox fact of the path, by field (also on the hops).
    pub middleboxes: Vec<MiddleboxDto>,
    /// A multipath target's latest discovery; `None` for other targets and
    /// before the first discovery.
    pub multipath: Option<MultipathDto>,
    /// A multipath target's ECMP branches, each probed over its own flow;
    /// empty for other targets.
    pub branches: Vec<BranchDto>,
    /// Loss on one branch that the others do not have, worst first.
    pub branch_findings: Vec<BranchFindingDto>,
}

/// What the latest multipath discovery found and cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultipathDto {
    pub discovered_at_ms: u64,
    pub probes_sent: u32,
    pub discovery_ms: u64,
    /// Branches found; `branches` lists those probed (up to the configured cap).
    pub found: usize,
    /// Why discovery stopped: `complete`, or a budget or limit.
    pub stop: String,
}

/// One ECMP branch of a multipath target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchDto {
    /// From 1; the `branch` label of its metrics.
    pub index: u8,
    /// The wire flow identifier kept for it (UDP/TCP source port, ICMP id).
    pub flow_id: u16,
    /// The last hop it shares with every other branch (the balancing router).
    pub split_ttl: Option<u8>,
    /// The first hop after the split where it meets every other branch again.
    pub join_ttl: Option<u8>,
    /// The responder at each TTL from the first as discovery saw it
    /// (`null` where nothing answered).
    pub discovered: Vec<Option<IpAddr>>,
    pub rounds: u64,
    pub hops: Vec<BranchHopDto>,
    /// End to end: the destination over this branch's flow, over the window.
    pub end_to_end: StatsDto,
}

/// One hop of one branch, over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchHopDto {
    pub ttl: u8,
    pub responder: Option<IpAddr>,
    pub window: StatsDto,
}

/// A loss on one branch only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchFindingDto {
    /// `loss` (the branch loses what another does not) or `latency` (it is
    /// slower end to end than its fastest sibling).
    pub kind: String,
    pub branch: u8,
    /// The hop and responder that name the branch.
    pub through_ttl: u8,
    pub through: Option<IpAddr>,
    /// The branch's end-to-end loss over the window.
    pub loss_pct: f64,
    /// Latency findings: the branch's end-to-end median over the window (ms),
    /// the sibling it is compared with (the fastest) and that sibling's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sibling: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sibling_latency_ms: Option<f64>,
    /// Where along the branch the loss or the extra delay starts.
    pub ttl: u8,
    pub confidence: f64,
    /// "loss on branch 2 (through 198.18.3.2 at hop 2): loss starts at ...",
    /// "latency on branch 2 (through 198.18.3.2 at hop 2): 24.1 ms end to end
    /// against 4.0 ms on branch 1; ...".
    pub summary: String,
}

/// Which hop of a target a series is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HopRef {
    /// The target itself, at whatever TTL it answered.
    Destination,
    Ttl(u8),
}

impl Serialize for HopRef {
    /// `"destination"` or the TTL as a number.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HopRef::Destination => s.serialize_str("destination"),
            HopRef::Ttl(ttl) => s.serialize_u8(*ttl),
        }
    }
}

impl std::fmt::Display for HopRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HopRef::Destination => f.write_str("destination"),
            HopRef::Ttl(ttl) => write!(f, "{ttl}"),
        }
    }
}

/// One point of a stored series: a round (raw) or a bucket starting at `at_ms`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PointDto {
    pub at_ms: u64,
    pub sent: u64,
    pub lost: u64,
    pub min_ns: Option<u64>,
    pub avg_ns: Option<f64>,
    pub max_ns: Option<u64>,
    pub stddev_ns: Option<f64>,
    pub p50_ns: Option<u64>,
    pub p95_ns: Option<u64>,
    pub p99_ns: Option<u64>,
}

impl PointDto {
    /// A point of one probe: answered after `rtt_ns`, or lost.
    pub fn single(at_ms: u64, rtt_ns: Option<u64>) -> PointDto {
        match rtt_ns {
            None => PointDto {
                at_ms,
                sent: 1,
                lost: 1,
                ..PointDto::default()
            },
            Some(v) => PointDto {
                at_ms,
                sent: 1,
                lost: 0,
                min_ns: Some(v),
                avg_ns: Some(v as f64),
                max_ns: Some(v),
                stddev_ns: Some(0.0),
                p50_ns: Some(v),
                p95_ns: Some(v),
                p99_ns: Some(v),
            },
        }
    }

    pub fn received(&self) -> u64 {
        self.sent.saturating_sub(self.lost)
    }
}

/// One hop's stored history over a range, as the store serves it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesDto {
    pub hop: HopRef,
    /// The dominant responder at this TTL now, when known.
    pub responder: Option<IpAddr>,
    /// `raw`, `1m` or `1h`.
    pub resolution: String,
    /// Bucket width of the stored points; 0 for raw rounds.
    pub interval_ms: u64,
    pub points: Vec<PointDto>,
    /// All points merged.
    pub total: PointDto,
}

/// A target's recent destination samples for the overview's sparkline: one
/// value per round, oldest first, in microseconds (`null` for a lost round).
/// Compact on purpose: the overview fetches a thousand of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sparkline {
    pub target: String,
    /// When the newest of them started.
    pub last_at_ms: Option<u64>,
    pub rtt_us: Vec<Option<u32>>,
}

/// How a target is measured, for the header of an export.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MeasurementDto {
    pub probe_interval_ms: u64,
    pub protocol: String,
    pub port: u16,
    pub packet_size: u16,
    /// Probes per hop in the live window, and the time that covers.
    pub window_probes: u32,
    pub window_ms: u64,
    pub timestamp_source: Option<String>,
}

/// One hop's totals over a range, for the export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HopTotalDto {
    pub hop: HopRef,
    pub responder: Option<IpAddr>,
    pub hostname: Option<String>,
    /// The responder's AS number and organisation, when the ASN database
    /// knows them. Exported only on request (`asn=true`), so they are not
    /// serialised with the rest.
    #[serde(skip)]
    pub asn: Option<u32>,
    #[serde(skip)]
    pub as_org: Option<String>,
    #[serde(flatten)]
    pub total: PointDto,
}

/// The per-hop summary of a target over a range, as the read model gives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HopSummaryDto {
    pub measurement: MeasurementDto,
    /// The resolution the totals were computed from.
    pub resolution: String,
    /// TTLs in order, then the destination.
    pub hops: Vec<HopTotalDto>,
}

/// The engine's state for /readyz.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineHealth {
    pub running: bool,
    pub timestamp_source: String,
    pub probes_sent_total: u64,
    pub in_flight: u64,
}

/// The store's state for /readyz.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreHealthDto {
    /// The last flush succeeded.
    pub ok: bool,
    pub consecutive_failures: u64,
    pub last_flush_ok_at_ms: Option<u64>,
    pub last_error_at_ms: Option<u64>,
    pub pending_bytes: u64,
}

/// How many targets are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetCounts {
    pub total: usize,
    pub running: usize,
    pub paused: usize,
    pub resolving: usize,
    pub failed: usize,
}

/// One webhook's delivery health (`GET /api/v1/webhooks`). It never holds a
/// secret: the URL keeps only its scheme, host and port (receivers keep
/// their tokens in the path, the query or the user info), and of the HMAC
/// secret only whether there is one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDto {
    /// The `name` of its `[[webhook]]`.
    pub name: String,
    /// `json`, `slack` or `alertmanager`.
    pub format: String,
    /// `scheme://host[:port]/…`.
    pub url: String,
    /// Requests carry an HMAC-SHA256 signature.
    pub signed: bool,
    /// The latest attempt failed (`consecutive_failures` > 0).
    pub failing: bool,
    /// Events waiting in the outbox for this webhook.
    pub pending: u64,
    /// Events the receiver accepted since the daemon started.
    pub delivered: u64,
    /// Alertmanager: re-sends of firing alerts accepted since start.
    pub resent: u64,
    /// Attempts that failed since start.
    pub failed_attempts: u64,
    /// Attempts that failed since the last success.
    pub consecutive_failures: u64,
    pub last_success_at_ms: Option<u64>,
    pub last_error_at_ms: Option<u64>,
    /// What the latest failure was, e.g. `the receiver answered HTTP 500`.
    pub last_error: Option<String>,
    /// When the next retry of a failed event is due.
    pub next_retry_at_ms: Option<u64>,
    /// Targets whose oldest event waits for a retry.
    pub retrying_targets: Vec<String>,
    /// Events dropped undelivered since start because they waited longer
    /// than `[alerts] outbox_max_age`.
    pub dropped_age: u64,
    /// Events dropped undelivered since start because the outbox held more
    /// than `[alerts] outbox_max_bytes`.
    pub dropped_bytes: u64,
}

/// One of the daemon's components (`store`, `outbox`, `probe_engine`,
/// `reflector`) for
/// /healthz and /readyz. The error behind a degraded state is in the daemon's
/// log only: these endpoints are open, and errors name files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentHealthDto {
    pub component: String,
    /// `ok`; `fresh` (the old files could not be opened, were quarantined,
    /// and a new empty one is in use); `disabled` (not even a fresh one
    /// opened: no history, or alerts in memory only); `retrying` (the
    /// reflector could not bind and is retried); `lossy` (the probe engine's
    /// eBPF programs dropped events within the last minute).
    pub state: String,
    /// `state` is not `ok`.
    pub degraded: bool,
    /// Names of the copies moved aside since the daemon started, in the state
    /// directory (`store.quarantined-20261205T130403Z`).
    pub quarantined: Vec<String>,
}

/// One `[[remote_write]]` receiver's state, for `/healthz`, which is open:
/// no URL and no error text (those are in the daemon's log only).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RemoteWriteDto {
    pub name: String,
    /// The last push succeeded (or none was tried yet).
    pub ok: bool,
    pub last_success_at_ms: Option<u64>,
    pub last_error_at_ms: Option<u64>,
    /// From the oldest sample the receiver has not got to now; 0 when up to date.
    pub backlog_seconds: f64,
    /// Push intervals missed and not yet backfilled.
    pub backlog_intervals: u64,
    pub samples_sent: u64,
    pub samples_backfilled: u64,
    pub samples_dropped: u64,
}

/// The daemon's health, for /readyz.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthDto {
    pub engine: EngineHealth,
    pub store: StoreHealthDto,
    /// Every component's state; a degraded one does not make the daemon
    /// unready (monitoring goes on without it).
    pub components: Vec<ComponentHealthDto>,
    pub targets: TargetCounts,
    /// The newest round of any target.
    pub last_round_at_ms: Option<u64>,
    /// The daemon is stopping.
    pub shutting_down: bool,
    /// `[[remote_write]]` receivers; a failing one does not make the daemon
    /// unready (it backfills when the receiver is back).
    pub remote_write: Vec<RemoteWriteDto>,
}

/// A new target, as the UI or an API client submits it. Durations are written
/// as in the config file ("1s", "500ms"); the service validates everything
/// against the same rules as the config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewTarget {
    pub name: String,
    pub host: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub packet_size: Option<u16>,
    #[serde(default)]
    pub max_hops: Option<u8>,
    #[serde(default)]
    pub final_hop_only: Option<bool>,
    #[serde(default)]
    pub paused: Option<bool>,
}

/// What is wrong with one entry of a list of targets (`POST
/// /api/v1/targets` with a JSON array): its position from 0, the field, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryError {
    pub index: usize,
    /// The field, or `null` when the entry as a whole is wrong (not an object).
    pub field: Option<String>,
    pub reason: String,
}

/// The running configuration with its secrets redacted (`GET /api/v1/config`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigDto {
    /// The file it was loaded from.
    pub path: Option<String>,
    /// The keys whose values were replaced, e.g. `web.write_token`,
    /// `webhook[0].url`.
    pub redacted: Vec<String>,
    /// Every key the file sets, as JSON.
    pub config: serde_json::Value,
    /// The same as a TOML file (no comments), for `format=toml`.
    #[serde(skip)]
    pub toml: String,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlOutcome {
    pub target: String,
    /// `paused`, `resumed`, `added` or `removed`.
    pub action: String,
    /// False when the target already was in the requested state.
    pub changed: bool,
    /// Where the change was saved, so it survives a restart.
    pub persisted_to: Option<String>,
}

/// What a peer's STAMP session is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    Paused,
    /// Starting, or about to be retried.
    Starting,
    Running,
    /// The last attempt failed (see `error`); retried every few seconds.
    Failed,
}

impl PeerState {
    pub const ALL: [PeerState; 4] = [
        PeerState::Paused,
        PeerState::Starting,
        PeerState::Running,
        PeerState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Paused => "paused",
            PeerState::Starting => "starting",
            PeerState::Running => "running",
            PeerState::Failed => "failed",
        }
    }
}

/// Min / mean / max of one delay over a peer's window, nanoseconds. One-way
/// delays may be negative when the two clocks disagree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DelayDto {
    pub min_ns: i64,
    pub mean_ns: f64,
    pub max_ns: i64,
}

/// One direction of a peer link over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeerDirectionDto {
    /// One-way delay; believe it only when `owd_reliable`.
    pub owd: Option<DelayDto>,
    /// Probes lost in this direction.
    pub lost: u64,
    /// Lost share (0 to 100) of the probes that travelled this way.
    pub loss_pct: Option<f64>,
    pub jitter_ns: Option<f64>,
    pub duplicates: u64,
}

/// A peer's window: the last `window_probes` probes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeerWindowDto {
    pub probes: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_pct: Option<f64>,
    /// Losses not yet attributed to a direction (after the last answer).
    pub lost_unknown_direction: u64,
    pub reordered: u64,
    pub rtt: Option<DelayDto>,
    pub rtt_jitter_ns: Option<f64>,
    pub forward: PeerDirectionDto,
    pub backward: PeerDirectionDto,
    /// Whether one-way delays can be trusted: `synchronized`, `shared_clock`
    /// or `unreliable` (see `owd_doubt`); `null` before the first answer.
    pub owd_verdict: Option<String>,
    pub owd_reliable: bool,
    /// Why one-way delays are flagged, when they are.
    pub owd_doubt: Option<String>,
    /// The sum of both clocks' error estimates, when synchronised.
    pub owd_error_bound_ns: Option<u64>,
    /// Timestamp source of the answers: `kernel` or `userspace`.
    pub timestamp_source: Option<String>,
}

/// Counters since the session (re)started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeerTotalsDto {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub lost_forward: Option<u64>,
    pub lost_backward: Option<u64>,
    pub duplicates_forward: u64,
    pub duplicates_backward: u64,
    pub reordered_forward: u64,
    pub reordered_backward: u64,
}

/// One series of a peer's stored history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerSeriesDto {
    /// `rtt`, `forward` or `backward` (one-way delays).
    pub series: String,
    pub points: Vec<PointDto>,
    /// All points merged.
    pub total: PointDto,
}

/// A peer's stored history over a range: RTT and the one-way delay each way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerHistoryDto {
    pub peer: String,
    /// `raw` (one point per batch of a second's probes), `1m` or `1h`.
    pub resolution: String,
    /// Bucket width of the stored points; 0 for raw batches.
    pub interval_ms: u64,
    pub series: Vec<PeerSeriesDto>,
}

/// One `[[peer]]`: a STAMP link measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerDto {
    pub name: String,
    pub label: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub address: IpAddr,
    pub port: u16,
    /// `udp` or `tcp`.
    pub mode: String,
    pub interval_ms: f64,
    pub packet_size: u16,
    pub state: PeerState,
    pub error: Option<String>,
    /// Our end of the session, while it runs.
    pub local: Option<String>,
    pub window_probes: u32,
    pub window: PeerWindowDto,
    pub totals: Option<PeerTotalsDto>,
    /// The peer's alerts firing now (loss, latency, jitter), oldest first.
    pub alerts: Vec<AlertDto>,
}

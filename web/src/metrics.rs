//! The Prometheus exposition of /metrics: a [`MetricsSnapshot`] taken from the
//! read model at scrape time, encoded by `prometheus-client` (OpenMetrics
//! text: `# HELP`, `# TYPE` and `# UNIT` lines, `_total` counters, base units).
//! docs/metrics.md lists every metric and explains how label cardinality is
//! bounded: hop series are keyed by TTL, never by responder; the responder is
//! a label only on one info series per hop, which is replaced (not added to)
//! when the dominant responder changes.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::dto::{AlertSubject, PEER_KEY_PREFIX};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the latency histogram buckets: 100 µs (a LAN hop
/// seen with kernel timestamps) to 5 s (past the default probe timeout).
pub const RTT_BUCKETS_SECONDS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram over [`RTT_BUCKETS_SECONDS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts, one per bound, then the overflow
    /// (`+Inf`) bucket. Inline rather than a `Vec`: the daemon keeps one per
    /// hop of every target, and the heap block cost 40 bytes more each.
    pub buckets: [u64; RTT_BUCKETS_SECONDS.len() + 1],
    pub sum_seconds: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; RTT_BUCKETS_SECONDS.len() + 1],
            sum_seconds: 0.0,
        }
    }
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let i = RTT_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(RTT_BUCKETS_SECONDS.len());
        if let Some(bucket) = self.buckets.get_mut(i) {
            *bucket += 1;
        }
        self.sum_seconds += seconds;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Counters of the probe engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineMetrics {
    pub probes_sent: u64,
    pub probes_answered: u64,
    pub probes_timed_out: u64,
    pub send_errors: u64,
    pub replies_unmatched: u64,
    pub in_flight: u64,
    /// The eBPF programs' counters; `None` when eBPF is not the source.
    pub kernel: Option<KernelMetrics>,
}

/// Counters kept by the eBPF programs, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelMetrics {
    pub egress_stamped: u64,
    pub egress_map_full: u64,
    pub ingress_matched: u64,
    pub ingress_unmatched: u64,
    pub parse_errors: u64,
    pub ringbuf_drops: u64,
    /// Matched replies timed at TC ingress, not by the skb's receive stamp.
    pub ingress_tc_clock: u64,
}

/// Counters of the history store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreMetrics {
    pub write_bytes: u64,
    pub flushes: u64,
    pub flush_errors: u64,
    pub dropped_rounds: u64,
    pub dropped_events: u64,
    pub pending_bytes: u64,
    pub healthy: bool,
}

/// One component of the daemon (`store`, `outbox`, `reflector`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComponentMetrics {
    pub component: String,
    /// Not running normally: quarantined and fresh, disabled, or retrying.
    pub degraded: bool,
    /// Copies of its files moved aside since the daemon started.
    pub quarantined_files: u64,
}

/// One `[[remote_write]]` receiver hopwatch pushes to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteWriteMetrics {
    /// The receiver's name in the config (label `remote`).
    pub name: String,
    /// Unix seconds of the last push it accepted; `None` before the first.
    pub last_success_seconds: Option<f64>,
    /// From the oldest sample it has not got yet to now; 0 when up to date.
    pub backlog_seconds: f64,
    pub samples_sent: u64,
    pub samples_backfilled: u64,
    pub samples_dropped: u64,
    pub requests_failed: u64,
    pub bytes_sent: u64,
    /// Series in the last push.
    pub series: u64,
}

/// One hop (TTL) of one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HopMetrics {
    pub ttl: u8,
    /// The dominant responder now.
    pub responder: Option<String>,
    pub probes_sent: u64,
    pub probes_received: u64,
    /// Over the live window.
    pub loss_ratio: Option<f64>,
    pub jitter_seconds: Option<f64>,
    pub rate_limited: bool,
    /// Answers later than a hop after it in most rounds (slow ICMP generation).
    pub slow_responder: bool,
    /// `None` when per-hop histograms are turned off.
    pub rtt: Option<Histogram>,
}

/// One target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetMetrics {
    pub target: String,
    /// `paused`, `resolving`, `running` or `failed`.
    pub state: String,
    pub hop_count: Option<u8>,
    pub mos: Option<f64>,
    /// Path loss over the live window.
    pub loss_ratio: Option<f64>,
    pub jitter_seconds: Option<f64>,
    pub rounds: u64,
    pub route_changes: u64,
    pub hop_count_changes: u64,
    /// Names of the alerts firing now.
    pub alerts_firing: Vec<String>,
    /// The destination's probes and RTTs.
    pub probes_sent: u64,
    pub probes_received: u64,
    pub rtt: Histogram,
    pub hops: Vec<HopMetrics>,
    /// A multipath target's ECMP branches (empty for others). Labelled by
    /// branch index, at most the configured cap (8), never by address.
    pub branches: Vec<BranchMetrics>,
    /// Probes the latest multipath discovery sent; `None` for other targets.
    pub discovery_probes: Option<u64>,
}

/// One ECMP branch of a multipath target, over the live window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BranchMetrics {
    /// From 1: the `branch` label.
    pub branch: u8,
    pub rounds: u64,
    /// End to end: the destination's lost share over this branch's flow.
    pub loss_ratio: Option<f64>,
    pub rtt_avg_seconds: Option<f64>,
    pub jitter_seconds: Option<f64>,
    pub split_ttl: Option<u8>,
    pub join_ttl: Option<u8>,
    /// Per TTL: `(ttl, loss ratio)`.
    pub hop_loss: Vec<(u8, f64)>,
}

/// The alert outbox's losses and its events waiting in memory. Labels are
/// webhook names (bounded by the config) and the reason (`age`, `bytes`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertOutboxMetrics {
    /// Alert events kept in memory now because the outbox cannot be written.
    pub unpersisted: u64,
    /// Events dropped since start because too many waited in memory.
    pub unpersisted_dropped: u64,
    /// Per webhook and reason, deliveries dropped undelivered since start.
    pub deliveries_dropped: Vec<DroppedDeliveries>,
}

/// One webhook's deliveries dropped for one reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DroppedDeliveries {
    pub webhook: String,
    /// `age` (older than `outbox_max_age`) or `bytes` (beyond `outbox_max_bytes`).
    pub reason: &'static str,
    pub count: u64,
}

/// Everything /metrics exports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub version: String,
    pub timestamp_source: String,
    pub engine: EngineMetrics,
    pub store: StoreMetrics,
    /// Completed rounds the per-target and per-hop probe counters and
    /// histograms missed because their consumer fell behind the pipeline.
    pub live_rounds_skipped: u64,
    /// Failed webhook deliveries; `None` while no alerts module reports them.
    pub webhook_delivery_failures: Option<u64>,
    /// What the alert outbox keeps in memory and what it dropped; `None`
    /// while no alerts module reports them.
    pub alert_outbox: Option<AlertOutboxMetrics>,
    /// The store, outbox and reflector; empty when the daemon reports none.
    pub components: Vec<ComponentMetrics>,
    pub targets: Vec<TargetMetrics>,
    /// `[[peer]]`s (STAMP links), in config order.
    pub peers: Vec<PeerMetrics>,
    /// `[[remote_write]]` receivers, in config order.
    pub remote_write: Vec<RemoteWriteMetrics>,
    /// Where the daemon's memory goes; `None` while the daemon reports none.
    pub memory: Option<MemoryMetrics>,
}

/// The daemon's heap, from the allocator's books and by part.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryMetrics {
    /// Bytes allocated from the heaps and not freed; `None` where the
    /// allocator cannot say (and so for the two below).
    pub heap_in_use_bytes: Option<u64>,
    /// Bytes of big allocations in their own mappings, touched or not.
    pub heap_mapped_bytes: Option<u64>,
    /// Bytes of free pieces the allocator keeps (partly returned to the system).
    pub heap_free_bytes: Option<u64>,
    /// Estimated bytes of the targets' running analyses.
    pub analysis_bytes: u64,
    /// Estimated bytes of the targets' recent events.
    pub recent_events_bytes: u64,
}

/// One peer's values for /metrics: gauges over its window, counters since its
/// session started. Labels are the peer's name (bounded by the config) and,
/// for per-direction series, `direction` (`forward` or `backward`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerMetrics {
    pub peer: String,
    /// `paused`, `starting`, `running` or `failed`.
    pub state: &'static str,
    pub rtt_seconds: Option<f64>,
    pub forward_owd_seconds: Option<f64>,
    pub backward_owd_seconds: Option<f64>,
    /// 1 when one-way delays can be trusted (clocks synchronised or shared).
    pub owd_reliable: bool,
    pub loss_ratio: Option<f64>,
    pub forward_loss_ratio: Option<f64>,
    pub backward_loss_ratio: Option<f64>,
    pub jitter_seconds: Option<f64>,
    pub probes_sent: u64,
    pub probes_received: u64,
    pub reordered_forward: u64,
    pub reordered_backward: u64,
    pub duplicates_forward: u64,
    pub duplicates_backward: u64,
    /// Names of the peer's alerts firing now (`loss`, `latency`, `jitter`).
    pub alerts_firing: Vec<String>,
}

/// Encodes a snapshot as OpenMetrics text.
pub fn encode(snapshot: MetricsSnapshot) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    encode_chunked(snapshot, |chunk| {
        out.push_str(&chunk);
        true
    })?;
    Ok(out)
}

/// About how many bytes of text [`encode_chunked`] hands over at a time.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Encodes `snapshot`, handing the text to `send` in chunks of about
/// [`CHUNK_BYTES`] as they fill. At a thousand 10-hop targets the text is
/// ~19 MB (per-hop histograms); built whole, it and the copies its growth
/// made took ~30 MiB of the daemon's memory at every scrape
/// (docs/benchmarks.md, issue 15 step 11). A `send` that returns false (the
/// scraper went away) stops the encoding with an error.
pub fn encode_chunked(
    snapshot: MetricsSnapshot,
    send: impl FnMut(String) -> bool,
) -> Result<(), std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut out = ChunkWriter {
        chunk: String::with_capacity(CHUNK_BYTES),
        send,
    };
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    out.flush()
}

/// Collects text into a chunk and sends it once full.
struct ChunkWriter<S: FnMut(String) -> bool> {
    chunk: String,
    send: S,
}

impl<S: FnMut(String) -> bool> ChunkWriter<S> {
    fn flush(&mut self) -> std::fmt::Result {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.chunk, String::with_capacity(CHUNK_BYTES));
        if (self.send)(full) {
            Ok(())
        } else {
            Err(std::fmt::Error)
        }
    }
}

impl<S: FnMut(String) -> bool> std::fmt::Write for ChunkWriter<S> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.chunk.push_str(text);
        if self.chunk.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SnapshotCollector(MetricsSnapshot);

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes families of one metric: its descriptor once, then one sample per label set.
struct Family<'e, 'w> {
    encoder: &'e mut DescriptorEncoder<'w>,
}

impl Family<'_, '_> {
    fn counter<'a>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        samples: impl IntoIterator<Item = (Labels<'a>, u64)>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, unit, MetricType::Counter)?;
        let mut samples: Vec<(Labels<'a>, u64)> = samples.into_iter().collect();
        if let [(labels, value)] = samples.as_slice() {
            if labels.is_empty() {
                return ConstCounter::new(*value).encode(metric);
            }
        }
        for (labels, value) in samples.drain(..) {
            ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge of `f64` (measurements) or `i64` (counts and flags, printed without a fraction).
    fn gauge<'a, G: EncodeGaugeValue + Copy + std::fmt::Debug>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        samples: impl IntoIterator<Item = (Labels<'a>, G)>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, unit, MetricType::Gauge)?;
        let mut samples: Vec<(Labels<'a>, G)> = samples.into_iter().collect();
        if let [(labels, value)] = samples.as_slice() {
            if labels.is_empty() {
                return ConstGauge::new(*value).encode(metric);
            }
        }
        for (labels, value) in samples.drain(..) {
            ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn info<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = Labels<'a>>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Info)?;
        for labels in samples {
            metric.encode_info(&labels)?;
        }
        Ok(())
    }

    fn histogram<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'a>, &'a Histogram)>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = self.encoder.encode_descriptor(
            name,
            help,
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, h) in samples {
            // The encoder accumulates per-bucket counts and prints infinity as `+Inf`.
            let buckets: Vec<(f64, u64)> = RTT_BUCKETS_SECONDS
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY))
                .zip(h.buckets.iter().copied())
                .collect();
            metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count(), &buckets, None)?;
        }
        Ok(())
    }
}

fn p(m: &PeerMetrics) -> Labels<'_> {
    vec![("peer", m.peer.as_str())]
}

fn pd<'a>(m: &'a PeerMetrics, direction: &'static str) -> Labels<'a> {
    vec![("peer", m.peer.as_str()), ("direction", direction)]
}

/// Both directions of a per-direction peer value that is known.
fn directions<'a, T: Copy + 'a>(
    peers: &'a [PeerMetrics],
    get: impl Fn(&PeerMetrics) -> (Option<T>, Option<T>) + 'a,
) -> impl Iterator<Item = (Labels<'a>, T)> + 'a {
    peers.iter().flat_map(move |m| {
        let (forward, backward) = get(m);
        [("forward", forward), ("backward", backward)]
            .into_iter()
            .filter_map(move |(d, v)| Some((pd(m, d), v?)))
    })
}

fn remote_labels(m: &RemoteWriteMetrics) -> Labels<'_> {
    vec![("remote", m.name.as_str())]
}

fn encode_remote_write(
    f: &mut Family<'_, '_>,
    remotes: &[RemoteWriteMetrics],
) -> Result<(), std::fmt::Error> {
    if remotes.is_empty() {
        return Ok(());
    }
    f.gauge(
        "hopwatch_remote_write_last_success_timestamp_seconds",
        "Unix time of the last push the remote-write receiver accepted",
        None,
        remotes
            .iter()
            .filter_map(|m| Some((remote_labels(m), m.last_success_seconds?))),
    )?;
    f.gauge(
        "hopwatch_remote_write_backlog_seconds",
        "Age of the oldest sample the receiver has not got yet (an outage, or a backfill in progress); 0 when up to date",
        None,
        remotes.iter().map(|m| (remote_labels(m), m.backlog_seconds)),
    )?;
    f.counter(
        "hopwatch_remote_write_samples_sent",
        "Samples the receiver accepted in live pushes",
        None,
        remotes.iter().map(|m| (remote_labels(m), m.samples_sent)),
    )?;
    f.counter(
        "hopwatch_remote_write_samples_backfilled",
        "Samples rebuilt from history and accepted after an outage",
        None,
        remotes
            .iter()
            .map(|m| (remote_labels(m), m.samples_backfilled)),
    )?;
    f.counter(
        "hopwatch_remote_write_samples_dropped",
        "Samples given up: refused by the receiver, older than backfill_max_age, or with no history to rebuild them from",
        None,
        remotes.iter().map(|m| (remote_labels(m), m.samples_dropped)),
    )?;
    f.counter(
        "hopwatch_remote_write_requests_failed",
        "Remote-write requests that failed (no connection, timeout, HTTP error)",
        None,
        remotes
            .iter()
            .map(|m| (remote_labels(m), m.requests_failed)),
    )?;
    f.counter(
        "hopwatch_remote_write_sent",
        "Compressed remote-write request bytes sent",
        Some(&Unit::Bytes),
        remotes.iter().map(|m| (remote_labels(m), m.bytes_sent)),
    )?;
    f.gauge(
        "hopwatch_remote_write_series",
        "Series in the last live push",
        None,
        remotes.iter().map(|m| (remote_labels(m), m.series as i64)),
    )
}

fn encode_peers(f: &mut Family<'_, '_>, peers: &[PeerMetrics]) -> Result<(), std::fmt::Error> {
    if peers.is_empty() {
        return Ok(());
    }
    f.gauge(
        "hopwatch_peer_state",
        "1 for the state each peer's STAMP session is in (paused, starting, running, failed)",
        None,
        peers.iter().flat_map(|m| {
            ["paused", "starting", "running", "failed"]
                .into_iter()
                .map(move |state| {
                    (
                        vec![("peer", m.peer.as_str()), ("state", state)],
                        i64::from(m.state == state),
                    )
                })
        }),
    )?;
    f.gauge(
        "hopwatch_peer_rtt_seconds",
        "Mean STAMP round-trip time over the window, without the reflector's hold time",
        None,
        peers.iter().filter_map(|m| Some((p(m), m.rtt_seconds?))),
    )?;
    f.gauge(
        "hopwatch_peer_owd_seconds",
        "Mean one-way delay over the window by direction; see hopwatch_peer_owd_reliable",
        None,
        directions(peers, |m| (m.forward_owd_seconds, m.backward_owd_seconds)),
    )?;
    f.gauge(
        "hopwatch_peer_owd_reliable",
        "1 when one-way delays can be trusted (both clocks synchronised, or one shared clock)",
        None,
        peers.iter().map(|m| (p(m), i64::from(m.owd_reliable))),
    )?;
    f.gauge(
        "hopwatch_peer_loss_ratio",
        "Lost share of the window's probes (0 to 1), by direction; without direction, both",
        None,
        peers
            .iter()
            .filter_map(|m| Some((p(m), m.loss_ratio?)))
            .chain(directions(peers, |m| {
                (m.forward_loss_ratio, m.backward_loss_ratio)
            })),
    )?;
    f.gauge(
        "hopwatch_peer_jitter_seconds",
        "RFC 3550 jitter of the round-trip time over the window",
        None,
        peers.iter().filter_map(|m| Some((p(m), m.jitter_seconds?))),
    )?;
    f.counter(
        "hopwatch_peer_probes_sent",
        "STAMP test packets sent since the session started",
        None,
        peers.iter().map(|m| (p(m), m.probes_sent)),
    )?;
    f.counter(
        "hopwatch_peer_probes_received",
        "STAMP replies received since the session started",
        None,
        peers.iter().map(|m| (p(m), m.probes_received)),
    )?;
    f.counter(
        "hopwatch_peer_reordered",
        "Packets that arrived out of order since the session started, by direction",
        None,
        directions(peers, |m| {
            (Some(m.reordered_forward), Some(m.reordered_backward))
        }),
    )?;
    f.counter(
        "hopwatch_peer_duplicates",
        "Duplicated packets since the session started, by direction",
        None,
        directions(peers, |m| {
            (Some(m.duplicates_forward), Some(m.duplicates_backward))
        }),
    )?;
    f.gauge(
        "hopwatch_peer_alerts_firing",
        "Alerts firing now for the peer",
        None,
        peers.iter().map(|m| (p(m), m.alerts_firing.len() as i64)),
    )?;
    Ok(())
}

/// `hopwatch_alert_firing`: one series per firing alert of a target or a
/// peer. The labels are the ones hopwatch's Alertmanager webhooks send:
/// `target` is the alert's subject key (a target's name, or `peer:NAME`) and
/// `subject` says which (`target` or `peer`), so one selector covers both and
/// `subject` tells them apart.
fn encode_alert_firing(
    f: &mut Family<'_, '_>,
    targets: &[TargetMetrics],
    peers: &[PeerMetrics],
) -> Result<(), std::fmt::Error> {
    let peer_keys: Vec<String> = peers
        .iter()
        .map(|m| format!("{PEER_KEY_PREFIX}{}", m.peer))
        .collect();
    let subjects = targets
        .iter()
        .map(|m| (m.target.as_str(), AlertSubject::Target, &m.alerts_firing))
        .chain(
            peers
                .iter()
                .zip(&peer_keys)
                .map(|(m, key)| (key.as_str(), AlertSubject::Peer, &m.alerts_firing)),
        );
    f.gauge(
        "hopwatch_alert_firing",
        "1 for each alert firing now, by subject (target, or peer:NAME) and rule",
        None,
        subjects.flat_map(|(key, subject, alerts)| {
            alerts.iter().map(move |alert| {
                (
                    vec![
                        ("target", key),
                        ("subject", subject.as_str()),
                        ("alert", alert.as_str()),
                    ],
                    1i64,
                )
            })
        }),
    )
}

/// The heap as the allocator counts it, and the estimated share of the
/// parts that grow with the targets: whether memory that rises is kept by
/// hopwatch or lost to fragmentation, and by which part.
fn encode_memory(f: &mut Family<'_, '_>, m: &MemoryMetrics) -> Result<(), std::fmt::Error> {
    if let (Some(in_use), Some(mapped), Some(free)) =
        (m.heap_in_use_bytes, m.heap_mapped_bytes, m.heap_free_bytes)
    {
        f.gauge(
            "hopwatch_heap",
            "Bytes the C library's allocator holds: in_use (allocated from its heaps), mapped (big allocations in their own mappings, untouched pages included) or free (kept for reuse, partly returned to the system)",
            Some(&Unit::Bytes),
            [
                (vec![("state", "in_use")], in_use as i64),
                (vec![("state", "mapped")], mapped as i64),
                (vec![("state", "free")], free as i64),
            ],
        )?;
    }
    f.gauge(
        "hopwatch_live_state",
        "Estimated bytes of the targets' live state, part of the heap in use: analysis (windows, since-start histograms, paths) or recent_events",
        Some(&Unit::Bytes),
        [
            (vec![("part", "analysis")], m.analysis_bytes as i64),
            (vec![("part", "recent_events")], m.recent_events_bytes as i64),
        ],
    )
}

fn comp(m: &ComponentMetrics) -> Labels<'_> {
    vec![("component", m.component.as_str())]
}

/// The series of multipath targets' branches: `target` and `branch` (an
/// index up to the configured cap of 8), and `ttl` for the per-hop loss.
fn encode_branches(
    f: &mut Family<'_, '_>,
    targets: &[TargetMetrics],
) -> Result<(), std::fmt::Error> {
    let labels: Vec<(&TargetMetrics, &BranchMetrics, String)> = targets
        .iter()
        .flat_map(|m| m.branches.iter().map(move |b| (m, b, b.branch.to_string())))
        .collect();
    let branches = || {
        labels.iter().map(|(m, b, index)| {
            (
                vec![("target", m.target.as_str()), ("branch", index.as_str())],
                *b,
            )
        })
    };
    f.gauge(
        "hopwatch_target_branches",
        "ECMP branches probed for a multipath target",
        None,
        targets
            .iter()
            .filter(|m| m.discovery_probes.is_some())
            .map(|m| (t(m), m.branches.len() as i64)),
    )?;
    f.gauge(
        "hopwatch_target_discovery_probes",
        "Probes the latest multipath discovery of the target sent",
        None,
        targets
            .iter()
            .filter_map(|m| Some((t(m), m.discovery_probes? as i64))),
    )?;
    f.counter(
        "hopwatch_branch_rounds",
        "Rounds probed over the branch's flow since its discovery",
        None,
        branches().map(|(l, b)| (l, b.rounds)),
    )?;
    f.gauge(
        "hopwatch_branch_loss_ratio",
        "End-to-end loss over the branch's flow: the destination's lost share of the live window (0 to 1)",
        None,
        branches().filter_map(|(l, b)| Some((l, b.loss_ratio?))),
    )?;
    f.gauge(
        "hopwatch_branch_rtt_avg_seconds",
        "Average round-trip time to the destination over the branch's flow, live window",
        None,
        branches().filter_map(|(l, b)| Some((l, b.rtt_avg_seconds?))),
    )?;
    f.gauge(
        "hopwatch_branch_jitter_seconds",
        "Mean absolute RTT change between consecutive answers of the destination over the branch's flow",
        None,
        branches().filter_map(|(l, b)| Some((l, b.jitter_seconds?))),
    )?;
    f.gauge(
        "hopwatch_branch_split_ttl",
        "The last TTL the branch shares with every other branch (the balancing router)",
        None,
        branches().filter_map(|(l, b)| Some((l, i64::from(b.split_ttl?)))),
    )?;
    f.gauge(
        "hopwatch_branch_join_ttl",
        "The first TTL after the split where the branch meets every other branch again",
        None,
        branches().filter_map(|(l, b)| Some((l, i64::from(b.join_ttl?)))),
    )?;
    let ttls: Vec<Vec<String>> = labels
        .iter()
        .map(|(_, b, _)| b.hop_loss.iter().map(|(ttl, _)| ttl_label(*ttl)).collect())
        .collect();
    f.gauge(
        "hopwatch_branch_hop_loss_ratio",
        "Lost share of the live window at this TTL over the branch's flow (0 to 1)",
        None,
        labels.iter().zip(&ttls).flat_map(|((m, b, index), ttls)| {
            b.hop_loss.iter().zip(ttls).map(move |((_, loss), ttl)| {
                (
                    vec![
                        ("target", m.target.as_str()),
                        ("branch", index.as_str()),
                        ("ttl", ttl.as_str()),
                    ],
                    *loss,
                )
            })
        }),
    )?;
    Ok(())
}

fn t(m: &TargetMetrics) -> Labels<'_> {
    vec![("target", m.target.as_str())]
}

fn ttl_label(ttl: u8) -> String {
    ttl.to_string()
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let mut f = Family {
            encoder: &mut encoder,
        };
        let none = || Vec::<(&'static str, &str)>::new();

        // ---- the daemon itself ----
        f.info(
            "hopwatch_build",
            "hopwatch's version",
            [vec![("version", s.version.as_str())]],
        )?;
        f.info(
            "hopwatch_timestamp_source",
            "Where probe and reply timestamps are taken: ebpf (TC hooks in the kernel), kernel (SO_TIMESTAMPING) or userspace",
            [vec![("source", s.timestamp_source.as_str())]],
        )?;
        let e = &s.engine;
        f.counter(
            "hopwatch_probes_sent",
            "Probes sent by the engine; rate() gives probes per second",
            None,
            [(none(), e.probes_sent)],
        )?;
        f.counter(
            "hopwatch_probes_answered",
            "Probes answered",
            None,
            [(none(), e.probes_answered)],
        )?;
        f.counter(
            "hopwatch_probes_timed_out",
            "Probes that got no reply within their timeout",
            None,
            [(none(), e.probes_timed_out)],
        )?;
        f.counter(
            "hopwatch_probe_send_errors",
            "Probes that could not be sent",
            None,
            [(none(), e.send_errors)],
        )?;
        f.counter(
            "hopwatch_replies_unmatched",
            "Replies that matched no probe in flight (late or duplicate)",
            None,
            [(none(), e.replies_unmatched)],
        )?;
        f.gauge(
            "hopwatch_probes_in_flight",
            "Probes waiting for a reply",
            None,
            [(none(), e.in_flight as i64)],
        )?;
        if let Some(k) = &e.kernel {
            f.counter(
                "hopwatch_kernel_egress_stamped",
                "Outgoing probes timestamped by the eBPF TC egress program",
                None,
                [(none(), k.egress_stamped)],
            )?;
            f.counter(
                "hopwatch_kernel_egress_map_full",
                "Outgoing probes whose timestamp could not be stored (map full)",
                None,
                [(none(), k.egress_map_full)],
            )?;
            f.counter(
                "hopwatch_kernel_ingress_matched",
                "Replies matched to a probe by the eBPF TC ingress program",
                None,
                [(none(), k.ingress_matched)],
            )?;
            f.counter(
                "hopwatch_kernel_ingress_unmatched",
                "Replies to our probes the kernel found no timestamp for",
                None,
                [(none(), k.ingress_unmatched)],
            )?;
            f.counter(
                "hopwatch_kernel_parse_failures",
                "Candidate replies the eBPF program could not parse",
                None,
                [(none(), k.parse_errors)],
            )?;
            f.counter(
                "hopwatch_kernel_ringbuf_drops",
                "Matched replies lost because the kernel ring buffer was full",
                None,
                [(none(), k.ringbuf_drops)],
            )?;
            f.counter(
                "hopwatch_kernel_ingress_tc_clock",
                "Matched replies timed at TC ingress because the kernel gave them no receive timestamp",
                None,
                [(none(), k.ingress_tc_clock)],
            )?;
        }
        let st = &s.store;
        f.counter(
            "hopwatch_store_write",
            "Bytes of keys and values written to the history store",
            Some(&Unit::Bytes),
            [(none(), st.write_bytes)],
        )?;
        f.counter(
            "hopwatch_store_flushes",
            "Successful flushes of the history store",
            None,
            [(none(), st.flushes)],
        )?;
        f.counter(
            "hopwatch_store_flush_errors",
            "Failed flushes of the history store (full disk, I/O errors)",
            None,
            [(none(), st.flush_errors)],
        )?;
        f.counter(
            "hopwatch_store_dropped_rounds",
            "Rounds dropped because the store's write buffer was full",
            None,
            [(none(), st.dropped_rounds)],
        )?;
        f.counter(
            "hopwatch_store_dropped_events",
            "Events dropped because the store's write buffer was full",
            None,
            [(none(), st.dropped_events)],
        )?;
        f.gauge(
            "hopwatch_store_pending",
            "Bytes waiting in memory for the disk",
            Some(&Unit::Bytes),
            [(none(), st.pending_bytes as i64)],
        )?;
        f.gauge(
            "hopwatch_store_healthy",
            "1 when the last flush of the history store succeeded",
            None,
            [(none(), i64::from(st.healthy))],
        )?;
        encode_remote_write(&mut f, &s.remote_write)?;
        f.counter(
            "hopwatch_live_rounds_skipped",
            "Completed rounds missing from the probe counters, latency histograms and sparklines because their consumer fell behind",
            None,
            [(none(), s.live_rounds_skipped)],
        )?;
        if let Some(m) = &s.memory {
            encode_memory(&mut f, m)?;
        }
        if !s.components.is_empty() {
            f.gauge(
                "hopwatch_component_degraded",
                "1 while a component runs degraded (quarantined and fresh, disabled, or retrying)",
                None,
                s.components
                    .iter()
                    .map(|m| (comp(m), i64::from(m.degraded))),
            )?;
            f.counter(
                "hopwatch_quarantined_files",
                "Unopenable stores or outboxes moved aside (never deleted) since start",
                None,
                s.components.iter().map(|m| (comp(m), m.quarantined_files)),
            )?;
        }
        if let Some(failures) = s.webhook_delivery_failures {
            f.counter(
                "hopwatch_webhook_delivery_failures",
                "Webhook delivery attempts that failed",
                None,
                [(none(), failures)],
            )?;
        }
        if let Some(outbox) = &s.alert_outbox {
            f.gauge(
                "hopwatch_alert_events_unpersisted",
                "Alert events kept in memory because the outbox cannot be written (lost on restart)",
                None,
                [(none(), outbox.unpersisted as i64)],
            )?;
            f.counter(
                "hopwatch_alert_events_unpersisted_dropped",
                "Alert events dropped because too many waited in memory for the outbox",
                None,
                [(none(), outbox.unpersisted_dropped)],
            )?;
            f.counter(
                "hopwatch_webhook_deliveries_dropped",
                "Undelivered webhook deliveries dropped from the outbox, by reason (age, bytes)",
                None,
                outbox.deliveries_dropped.iter().map(|d| {
                    (
                        vec![("webhook", d.webhook.as_str()), ("reason", d.reason)],
                        d.count,
                    )
                }),
            )?;
        }

        // ---- per target ----
        let targets = &s.targets;
        f.gauge(
            "hopwatch_target_state",
            "1 for the state each target is in (paused, resolving, running, failed)",
            None,
            targets.iter().flat_map(|m| {
                ["paused", "resolving", "running", "failed"]
                    .into_iter()
                    .map(move |state| {
                        (
                            vec![("target", m.target.as_str()), ("state", state)],
                            i64::from(m.state == state),
                        )
                    })
            }),
        )?;
        f.counter(
            "hopwatch_target_rounds",
            "Rounds completed (one probe per TTL each)",
            None,
            targets.iter().map(|m| (t(m), m.rounds)),
        )?;
        f.gauge(
            "hopwatch_target_hop_count",
            "The destination's TTL on the current path",
            None,
            targets
                .iter()
                .filter_map(|m| Some((t(m), i64::from(m.hop_count?)))),
        )?;
        f.gauge(
            "hopwatch_target_mos",
            "Mean opinion score of the destination (1 to 4.5), from the live window",
            None,
            targets.iter().filter_map(|m| Some((t(m), m.mos?))),
        )?;
        f.gauge(
            "hopwatch_target_loss_ratio",
            "Path loss: the destination's lost share of the live window (0 to 1)",
            None,
            targets.iter().filter_map(|m| Some((t(m), m.loss_ratio?))),
        )?;
        f.gauge(
            "hopwatch_target_jitter_seconds",
            "Mean absolute RTT change between consecutive answers of the destination, live window",
            None,
            targets
                .iter()
                .filter_map(|m| Some((t(m), m.jitter_seconds?))),
        )?;
        f.counter(
            "hopwatch_target_probes_sent",
            "Probes that could have reached the destination (one per round)",
            None,
            targets.iter().map(|m| (t(m), m.probes_sent)),
        )?;
        f.counter(
            "hopwatch_target_probes_received",
            "Rounds in which the destination answered",
            None,
            targets.iter().map(|m| (t(m), m.probes_received)),
        )?;
        f.histogram(
            "hopwatch_target_rtt",
            "Round-trip time to the destination",
            targets.iter().map(|m| (t(m), &m.rtt)),
        )?;
        f.counter(
            "hopwatch_target_route_changes",
            "Confirmed route changes since the daemon started",
            None,
            targets.iter().map(|m| (t(m), m.route_changes)),
        )?;
        f.counter(
            "hopwatch_target_hop_count_changes",
            "Confirmed hop-count changes since the daemon started",
            None,
            targets.iter().map(|m| (t(m), m.hop_count_changes)),
        )?;
        f.gauge(
            "hopwatch_target_alerts_firing",
            "Alerts firing now for the target",
            None,
            targets.iter().map(|m| (t(m), m.alerts_firing.len() as i64)),
        )?;
        encode_alert_firing(&mut f, targets, &s.peers)?;
        encode_branches(&mut f, targets)?;

        // ---- per peer (STAMP links) ----
        encode_peers(&mut f, &s.peers)?;

        // ---- per hop ----
        let ttls: Vec<Vec<String>> = targets
            .iter()
            .map(|m| m.hops.iter().map(|h| ttl_label(h.ttl)).collect())
            .collect();
        let hops = || {
            targets.iter().zip(&ttls).flat_map(|(m, labels)| {
                m.hops.iter().zip(labels).map(move |(h, ttl)| {
                    (
                        vec![("target", m.target.as_str()), ("ttl", ttl.as_str())],
                        h,
                    )
                })
            })
        };
        f.info(
            "hopwatch_hop_responder",
            "The dominant responder at each TTL (one series per hop; replaced when it changes)",
            hops().filter_map(|(mut labels, h)| {
                labels.push(("responder", h.responder.as_deref()?));
                Some(labels)
            }),
        )?;
        f.counter(
            "hopwatch_hop_probes_sent",
            "Probes sent at this TTL",
            None,
            hops().map(|(l, h)| (l, h.probes_sent)),
        )?;
        f.counter(
            "hopwatch_hop_probes_received",
            "Probes at this TTL that were answered",
            None,
            hops().map(|(l, h)| (l, h.probes_received)),
        )?;
        f.gauge(
            "hopwatch_hop_loss_ratio",
            "Lost share of the live window at this TTL (0 to 1); see hopwatch_hop_rate_limited",
            None,
            hops().filter_map(|(l, h)| Some((l, h.loss_ratio?))),
        )?;
        f.gauge(
            "hopwatch_hop_jitter_seconds",
            "Mean absolute RTT change between consecutive answers at this TTL, live window",
            None,
            hops().filter_map(|(l, h)| Some((l, h.jitter_seconds?))),
        )?;
        f.gauge(
            "hopwatch_hop_rate_limited",
            "1 when this TTL loses replies later hops do not (ICMP rate limiting, not path loss)",
            None,
            hops().map(|(l, h)| (l, i64::from(h.rate_limited))),
        )?;
        f.gauge(
            "hopwatch_hop_slow_responder",
            "1 when this TTL answers later than a TTL after it (slow ICMP generation, not path latency)",
            None,
            hops().map(|(l, h)| (l, i64::from(h.slow_responder))),
        )?;
        f.histogram(
            "hopwatch_hop_rtt",
            "Round-trip time of the answers at this TTL",
            hops().filter_map(|(l, h)| Some((l, h.rtt.as_ref()?))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let mut h = Histogram::default();
        h.observe(0.0001);
        h.observe(0.00011);
        h.observe(10.0);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[RTT_BUCKETS_SECONDS.len()], 1, "+Inf");
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds - 10.00021).abs() < 1e-9);
    }

    #[test]
    fn branch_series_are_labelled_by_index_and_ttl_only() {
        let snapshot = MetricsSnapshot {
            targets: vec![
                TargetMetrics {
                    target: "edge".into(),
                    state: "running".into(),
                    discovery_probes: Some(52),
                    branches: vec![BranchMetrics {
                        branch: 2,
                        rounds: 7,
                        loss_ratio: Some(0.3),
                        rtt_avg_seconds: Some(0.002),
                        jitter_seconds: None,
                        split_ttl: Some(1),
                        join_ttl: Some(4),
                        hop_loss: vec![(2, 0.25)],
                    }],
                    ..TargetMetrics::default()
                },
                // Not multipath: no branch series at all.
                TargetMetrics {
                    target: "plain".into(),
                    state: "running".into(),
                    ..TargetMetrics::default()
                },
            ],
            ..MetricsSnapshot::default()
        };
        let text = encode(snapshot).unwrap();
        for line in [
            r#"hopwatch_target_branches{target="edge"} 1"#,
            r#"hopwatch_target_discovery_probes{target="edge"} 52"#,
            r#"hopwatch_branch_rounds_total{target="edge",branch="2"} 7"#,
            r#"hopwatch_branch_loss_ratio{target="edge",branch="2"} 0.3"#,
            r#"hopwatch_branch_rtt_avg_seconds{target="edge",branch="2"} 0.002"#,
            r#"hopwatch_branch_split_ttl{target="edge",branch="2"} 1"#,
            r#"hopwatch_branch_join_ttl{target="edge",branch="2"} 4"#,
            r#"hopwatch_branch_hop_loss_ratio{target="edge",branch="2",ttl="2"} 0.25"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in {text}");
        }
        assert!(!text.contains("hopwatch_branch_jitter_seconds{"), "{text}");
        assert!(!text.contains(r#"target="plain",branch"#), "{text}");
        assert!(
            !text.contains(r#"hopwatch_target_branches{target="plain"}"#),
            "{text}"
        );
    }

    fn firing(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with("hopwatch_alert_firing{"))
            .collect()
    }

    #[test]
    fn a_peer_and_a_target_of_one_name_fire_separate_series() {
        let peer = |name: &str, alerts: &[&str]| PeerMetrics {
            peer: name.into(),
            state: "running",
            alerts_firing: alerts.iter().map(|a| (*a).to_owned()).collect(),
            ..PeerMetrics::default()
        };
        let snapshot = MetricsSnapshot {
            targets: vec![TargetMetrics {
                target: "gw".into(),
                state: "running".into(),
                alerts_firing: vec!["loss".into(), "route_change".into()],
                ..TargetMetrics::default()
            }],
            peers: vec![peer("gw", &["loss", "jitter"]), peer("quiet", &[])],
            ..MetricsSnapshot::default()
        };
        let text = encode(snapshot).unwrap();
        assert_eq!(
            firing(&text),
            [
                r#"hopwatch_alert_firing{target="gw",subject="target",alert="loss"} 1"#,
                r#"hopwatch_alert_firing{target="gw",subject="target",alert="route_change"} 1"#,
                r#"hopwatch_alert_firing{target="peer:gw",subject="peer",alert="loss"} 1"#,
                r#"hopwatch_alert_firing{target="peer:gw",subject="peer",alert="jitter"} 1"#,
            ],
            "{text}"
        );
        for line in [
            r#"hopwatch_peer_alerts_firing{peer="gw"} 2"#,
            r#"hopwatch_peer_alerts_firing{peer="quiet"} 0"#,
            r#"hopwatch_target_alerts_firing{target="gw"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in {text}");
        }
    }

    #[test]
    fn nothing_firing_exports_no_alert_series() {
        let snapshot = MetricsSnapshot {
            peers: vec![PeerMetrics {
                peer: "b".into(),
                state: "failed",
                ..PeerMetrics::default()
            }],
            ..MetricsSnapshot::default()
        };
        let text = encode(snapshot).unwrap();
        assert!(firing(&text).is_empty(), "{text}");
        assert!(
            text.contains("# TYPE hopwatch_alert_firing gauge"),
            "{text}"
        );
    }

    #[test]
    fn remote_write_receivers_export_their_state() {
        let text = encode(MetricsSnapshot {
            remote_write: vec![RemoteWriteMetrics {
                name: "central".into(),
                last_success_seconds: Some(1_700_000_000.5),
                backlog_seconds: 75.0,
                samples_sent: 10,
                samples_backfilled: 20,
                samples_dropped: 3,
                requests_failed: 4,
                bytes_sent: 999,
                series: 25,
            }],
            ..MetricsSnapshot::default()
        })
        .unwrap();
        for line in [
            "hopwatch_remote_write_last_success_timestamp_seconds{remote=\"central\"} 1700000000.5",
            "hopwatch_remote_write_backlog_seconds{remote=\"central\"} 75.0",
            "hopwatch_remote_write_samples_sent_total{remote=\"central\"} 10",
            "hopwatch_remote_write_samples_backfilled_total{remote=\"central\"} 20",
            "hopwatch_remote_write_samples_dropped_total{remote=\"central\"} 3",
            "hopwatch_remote_write_requests_failed_total{remote=\"central\"} 4",
            "hopwatch_remote_write_sent_bytes_total{remote=\"central\"} 999",
            "hopwatch_remote_write_series{remote=\"central\"} 25",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        let none = encode(MetricsSnapshot::default()).unwrap();
        assert!(!none.contains("hopwatch_remote_write"), "{none}");
    }

    #[test]
    fn components_export_degraded_flags_and_quarantine_counts() {
        let component = |name: &str, degraded: bool, quarantined_files: u64| ComponentMetrics {
            component: name.into(),
            degraded,
            quarantined_files,
        };
        let text = encode(MetricsSnapshot {
            components: vec![
                component("store", true, 1),
                component("outbox", false, 0),
                component("reflector", true, 0),
            ],
            ..MetricsSnapshot::default()
        })
        .unwrap();
        for line in [
            "# TYPE hopwatch_component_degraded gauge",
            r#"hopwatch_component_degraded{component="store"} 1"#,
            r#"hopwatch_component_degraded{component="outbox"} 0"#,
            r#"hopwatch_component_degraded{component="reflector"} 1"#,
            "# TYPE hopwatch_quarantined_files counter",
            r#"hopwatch_quarantined_files_total{component="store"} 1"#,
            r#"hopwatch_quarantined_files_total{component="outbox"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in {text}");
        }
        let none = encode(MetricsSnapshot::default()).unwrap();
        assert!(!none.contains("hopwatch_component_degraded"), "{none}");
    }

    #[test]
    fn the_alert_outbox_exports_what_it_holds_in_memory_and_what_it_dropped() {
        let dropped = |webhook: &str, reason, count| DroppedDeliveries {
            webhook: webhook.into(),
            reason,
            count,
        };
        let text = encode(MetricsSnapshot {
            alert_outbox: Some(AlertOutboxMetrics {
                unpersisted: 3,
                unpersisted_dropped: 2,
                deliveries_dropped: vec![dropped("ops", "age", 4), dropped("ops", "bytes", 0)],
            }),
            ..MetricsSnapshot::default()
        })
        .unwrap();
        for line in [
            "# TYPE hopwatch_alert_events_unpersisted gauge",
            "hopwatch_alert_events_unpersisted 3",
            "# TYPE hopwatch_alert_events_unpersisted_dropped counter",
            "hopwatch_alert_events_unpersisted_dropped_total 2",
            "# TYPE hopwatch_webhook_deliveries_dropped counter",
            r#"hopwatch_webhook_deliveries_dropped_total{webhook="ops",reason="age"} 4"#,
            r#"hopwatch_webhook_deliveries_dropped_total{webhook="ops",reason="bytes"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in {text}");
        }
        let none = encode(MetricsSnapshot::default()).unwrap();
        assert!(
            !none.contains("hopwatch_alert_events_unpersisted"),
            "{none}"
        );
    }

    #[test]
    fn rounds_the_round_tap_skipped_are_a_counter_always_exported() {
        let text = encode(MetricsSnapshot {
            live_rounds_skipped: 7,
            ..MetricsSnapshot::default()
        })
        .unwrap();
        for line in [
            "# TYPE hopwatch_live_rounds_skipped counter",
            "hopwatch_live_rounds_skipped_total 7",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in {text}");
        }
        let none = encode(MetricsSnapshot::default()).unwrap();
        assert!(
            none.lines()
                .any(|l| l == "hopwatch_live_rounds_skipped_total 0"),
            "{none}"
        );
    }

    #[test]
    fn memory_is_the_heap_by_state_and_the_live_state_by_part() {
        let text = encode(MetricsSnapshot {
            memory: Some(MemoryMetrics {
                heap_in_use_bytes: Some(30 << 20),
                heap_mapped_bytes: Some(35 << 20),
                heap_free_bytes: Some(9 << 20),
                analysis_bytes: 12 << 20,
                recent_events_bytes: 4096,
            }),
            ..MetricsSnapshot::default()
        })
        .unwrap();
        for line in [
            "# TYPE hopwatch_heap_bytes gauge",
            r#"hopwatch_heap_bytes{state="in_use"} 31457280"#,
            r#"hopwatch_heap_bytes{state="mapped"} 36700160"#,
            r#"hopwatch_heap_bytes{state="free"} 9437184"#,
            "# TYPE hopwatch_live_state_bytes gauge",
            r#"hopwatch_live_state_bytes{part="analysis"} 12582912"#,
            r#"hopwatch_live_state_bytes{part="recent_events"} 4096"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in {text}");
        }
        // Without the allocator's count only the estimates are exported.
        let estimates_only = encode(MetricsSnapshot {
            memory: Some(MemoryMetrics::default()),
            ..MetricsSnapshot::default()
        })
        .unwrap();
        assert!(
            !estimates_only.contains("hopwatch_heap_bytes"),
            "{estimates_only}"
        );
        assert!(estimates_only.contains("hopwatch_live_state_bytes"));
        let none = encode(MetricsSnapshot::default()).unwrap();
        assert!(!none.contains("hopwatch_live_state"), "{none}");
    }

    #[test]
    fn a_large_scrape_is_handed_over_in_chunks_that_add_up_to_the_whole() {
        // 300 targets of 10 hops with histograms: about 5 MB of text.
        let hop = |ttl: u8| HopMetrics {
            ttl,
            responder: Some(format!("198.18.{ttl}.1")),
            rtt: Some(Histogram::default()),
            ..HopMetrics::default()
        };
        let snapshot = MetricsSnapshot {
            targets: (0..300)
                .map(|i| TargetMetrics {
                    target: format!("t{i:04}"),
                    hops: (1..=10).map(hop).collect(),
                    ..TargetMetrics::default()
                })
                .collect(),
            ..MetricsSnapshot::default()
        };
        let whole = encode(snapshot.clone()).unwrap();
        assert!(whole.len() > 20 * CHUNK_BYTES, "{} bytes", whole.len());
        let mut chunks: Vec<String> = Vec::new();
        encode_chunked(snapshot.clone(), |chunk| {
            chunks.push(chunk);
            true
        })
        .unwrap();
        assert!(chunks.len() > 20);
        // A chunk is sent once it passes the mark: over it by one write at most.
        assert!(chunks.iter().all(|c| c.len() < CHUNK_BYTES + 4096));
        assert_eq!(chunks.concat(), whole);
        // A scraper that goes away stops the encoding at its chunk.
        let mut sent = 0;
        let stopped = encode_chunked(snapshot, |_| {
            sent += 1;
            sent < 3
        });
        assert!(stopped.is_err());
        assert_eq!(sent, 3);
    }
}

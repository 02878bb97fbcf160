//! The probe engine: picks the best timestamp source this host allows, owns
//! the sockets and the correlator, and hands out [`Flow`]s that send probes.
//!
//! One engine serves thousands of targets: every probe is a small future, and
//! replies reach their probe through the correlator, whichever source read them.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hopwatch_probe_common::{ProbeFilter, ProbeKey};
use tokio::task::JoinHandle;

use super::correlate::{Correlator, ReplyObservation, ReplyTiming};
use super::ebpf::{EbpfError, EbpfTimestamper, KernelCounters};
use super::quote::{self, SentHeader};
use super::receive::{spawn_receivers, ReceiveError};
use super::transport::{
    OutgoingProbe, ProbeTransport, RawTransport, SendStamp, SourceSelection, TransportError,
};
use super::types::{Answer, Outcome, ProbeResult, Rtt, TimestampPreference, TimestampSource, Ttl};
use super::wire::{ProbePacket, Protocol, WireError};
use crate::sys;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub timestamps: TimestampPreference,
    pub source: SourceSelection,
    /// Global limit on probes per second across all flows; `None` is unlimited.
    pub max_probes_per_second: Option<NonZeroU32>,
    /// ICMP identifiers / source ports this process may use. `None` picks a
    /// block from the process id, so several hopwatch processes can coexist.
    pub flow_range: Option<Range<u16>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timestamps: TimestampPreference::Auto,
            source: SourceSelection::default(),
            max_probes_per_second: None,
            flow_range: None,
        }
    }
}

/// Errors starting the engine or opening flows.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("eBPF timestamps were required but could not be set up: {0}")]
    EbpfRequired(#[source] EbpfError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    #[error("the flow range {start}..{end} is empty")]
    EmptyFlowRange { start: u16, end: u16 },
    #[error("all {capacity} flows of this engine are in use; raise the flow range")]
    FlowsExhausted { capacity: usize },
    #[error("no route to {dst}: cannot pick a source address: {source}")]
    NoRoute { dst: IpAddr, source: std::io::Error },
    #[error("the source address {src} and the target {dst} are of different IP versions")]
    FamilyMismatch { src: IpAddr, dst: IpAddr },
    #[error("invalid probe for {dst}: {source}")]
    Probe { dst: IpAddr, source: WireError },
}

/// Errors of a single probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Send(#[from] TransportError),
    #[error("building the probe: {0}")]
    Build(#[from] WireError),
}

/// What one target is probed with; constant for the flow's life, so ECMP
/// routers keep the flow on one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    pub dst: IpAddr,
    pub protocol: Protocol,
    /// Destination port for UDP and TCP; ignored for ICMP.
    pub dst_port: u16,
    /// IP packet size in bytes, headers included (like mtr `-s`).
    pub packet_size: usize,
    /// How long to wait for a reply.
    pub timeout: Duration,
}

/// Counters of the engine's own activity.
#[derive(Debug, Default)]
struct EngineCounters {
    sent: AtomicU64,
    answered: AtomicU64,
    timed_out: AtomicU64,
    send_errors: AtomicU64,
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub probes_sent: u64,
    pub probes_answered: u64,
    pub probes_timed_out: u64,
    pub send_errors: u64,
    pub replies_unmatched: u64,
    pub in_flight: u64,
    /// Kernel-side counters, when eBPF is the source.
    pub kernel: Option<KernelCounters>,
}

struct Inner {
    transport: Arc<dyn ProbeTransport>,
    correlator: Arc<Correlator>,
    source: TimestampSource,
    source_selection: SourceSelection,
    rate: Option<DefaultDirectRateLimiter>,
    flows: Mutex<FlowAllocator>,
    counters: EngineCounters,
    ebpf: Option<EbpfTimestamper>,
    /// The kernel programs' last losses and when the watcher saw them.
    kernel_losses: Mutex<Option<(u64, KernelLosses)>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The probe engine. Cheap to clone; the last clone stops its tasks and
/// detaches the eBPF programs.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Parts for an engine with a custom transport (tests, simulations).
pub struct EngineParts {
    pub transport: Arc<dyn ProbeTransport>,
    pub correlator: Arc<Correlator>,
    pub source: TimestampSource,
    pub flow_range: Range<u16>,
    pub max_probes_per_second: Option<NonZeroU32>,
    /// Source addresses; unset families are looked up in the routing table.
    pub source_selection: SourceSelection,
}

impl Engine {
    /// Starts the engine in the calling thread's network namespace, with the
    /// best timestamp source `config.timestamps` allows. Must run inside a tokio
    /// runtime. The source chosen, and why a better one was not, are logged.
    pub async fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        let flow_range = config.flow_range.clone().unwrap_or_else(default_flow_range);
        if flow_range.is_empty() {
            return Err(EngineError::EmptyFlowRange {
                start: flow_range.start,
                end: flow_range.end,
            });
        }
        let correlator = Arc::new(Correlator::new());
        let mut tasks = Vec::new();
        let mut ebpf = None;
        let mut preference = config.timestamps;

        if matches!(
            preference,
            TimestampPreference::Auto | TimestampPreference::Ebpf
        ) {
            let filter = ProbeFilter::flows(flow_range.start, flow_range.end);
            match EbpfTimestamper::load(filter) {
                Ok((timestamper, events)) => {
                    tasks.push(tokio::spawn(forward_kernel_events(
                        events,
                        Arc::clone(&correlator),
                    )));
                    ebpf = Some(timestamper);
                }
                Err(err) if preference == TimestampPreference::Ebpf => {
                    return Err(EngineError::EbpfRequired(err))
                }
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        "eBPF timestamps unavailable; falling back to kernel software timestamps (SO_TIMESTAMPING)"
                    );
                    preference = TimestampPreference::Kernel;
                }
            }
        }

        let (transport, source) = if ebpf.is_some() {
            (
                RawTransport::open(&config.source, false)?,
                TimestampSource::Ebpf,
            )
        } else {
            let kernel = if preference == TimestampPreference::Kernel {
                match open_kernel_timestamping(&config.source, &correlator) {
                    Ok(opened) => Some(opened),
                    Err(err @ EngineError::Transport(TransportError::NoPrivilege { .. })) => {
                        return Err(err)
                    }
                    Err(err) if config.timestamps == TimestampPreference::Kernel => {
                        return Err(err)
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "kernel software timestamps unavailable; falling back to the userspace clock");
                        None
                    }
                }
            } else {
                None
            };
            match kernel {
                Some((transport, receivers)) => {
                    tasks.extend(receivers);
                    (transport, TimestampSource::Kernel)
                }
                None => {
                    let transport = RawTransport::open(&config.source, false)?;
                    tasks.extend(spawn_receivers(false, Arc::clone(&correlator))?);
                    (transport, TimestampSource::Userspace)
                }
            }
        };
        tracing::info!(
            timestamp_source = %source,
            flows = ?flow_range,
            "probe engine started"
        );
        let mut engine = Engine::from_parts(EngineParts {
            transport: Arc::new(transport),
            correlator,
            source,
            flow_range,
            max_probes_per_second: config.max_probes_per_second,
            source_selection: config.source,
        });
        let watch_kernel = ebpf.is_some();
        let inner = Arc::get_mut(&mut engine.inner).expect("the engine was just built");
        inner.ebpf = ebpf;
        inner.tasks = tasks;
        if watch_kernel {
            // Holds only a weak reference, so it ends with the engine.
            tokio::spawn(watch_kernel_losses(Arc::downgrade(&engine.inner)));
        }
        Ok(engine)
    }

    /// An engine over a custom transport; replies are fed to `parts.correlator`.
    pub fn from_parts(parts: EngineParts) -> Engine {
        let rate = parts
            .max_probes_per_second
            .map(|per_second| RateLimiter::direct(Quota::per_second(per_second)));
        Engine {
            inner: Arc::new(Inner {
                transport: parts.transport,
                correlator: parts.correlator,
                source: parts.source,
                source_selection: parts.source_selection,
                rate,
                flows: Mutex::new(FlowAllocator::new(parts.flow_range)),
                counters: EngineCounters::default(),
                ebpf: None,
                kernel_losses: Mutex::new(None),
                tasks: Vec::new(),
            }),
        }
    }

    /// When (ms since the epoch) and what the kernel programs last lost,
    /// as counted over one [`KERNEL_LOSS_CHECK`]; `None` if never.
    pub fn last_kernel_losses(&self) -> Option<(u64, KernelLosses)> {
        *sys::lock(&self.inner.kernel_losses)
    }

    /// The timestamp source every result of this engine carries (unless a
    /// single probe's kernel stamp went missing; its result then says so).
    pub fn timestamp_source(&self) -> TimestampSource {
        self.inner.source
    }

    /// Opens a flow to one target: picks the source address, allocates the
    /// flow identifier and checks the probe can be built.
    pub fn open_flow(&self, spec: FlowSpec) -> Result<Flow, EngineError> {
        let src = source_address(spec.dst, &self.inner.source_selection)?;
        let flow_id = self.lock_flows().allocate()?;
        let flow = Flow {
            engine: self.clone(),
            spec,
            src,
            flow_id,
            // A random start: two processes that happen to share a flow id
            // (or a flow id reused after release) do not share probe identities.
            next_seq: AtomicU32::new(fastrand::u32(..)),
        };
        // Validate the size and addresses once, so probing never fails on them.
        flow.packet(0)
            .build(&mut Vec::new())
            .map_err(|source| EngineError::Probe {
                dst: flow.spec.dst,
                source,
            })?;
        Ok(flow)
    }

    /// A snapshot of the counters, including the kernel's when eBPF is loaded.
    pub fn stats(&self) -> EngineStats {
        let c = &self.inner.counters;
        EngineStats {
            probes_sent: c.sent.load(Ordering::Relaxed),
            probes_answered: c.answered.load(Ordering::Relaxed),
            probes_timed_out: c.timed_out.load(Ordering::Relaxed),
            send_errors: c.send_errors.load(Ordering::Relaxed),
            replies_unmatched: self.inner.correlator.unmatched(),
            in_flight: self.inner.correlator.in_flight() as u64,
            kernel: self.inner.ebpf.as_ref().and_then(|e| e.counters().ok()),
        }
    }

    fn lock_flows(&self) -> std::sync::MutexGuard<'_, FlowAllocator> {
        sys::lock(&self.inner.flows)
    }
}

/// Sockets for the `kernel` source: SO_TIMESTAMPING on sends and receives.
fn open_kernel_timestamping(
    source: &SourceSelection,
    correlator: &Arc<Correlator>,
) -> Result<(RawTransport, Vec<JoinHandle<()>>), EngineError> {
    let transport = RawTransport::open(source, true)?;
    let receivers = spawn_receivers(true, Arc::clone(correlator))?;
    Ok((transport, receivers))
}

async fn forward_kernel_events(mut events: super::ebpf::ReplyEvents, correlator: Arc<Correlator>) {
    loop {
        match events.next().await {
            Ok(event) => {
                if let Some(observation) = super::kernel_event::observation(&event) {
                    correlator.deliver(observation);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "reading eBPF reply events failed; no more replies");
                return;
            }
        }
    }
}

/// How often the kernel programs' loss counters are checked.
pub const KERNEL_LOSS_CHECK: Duration = Duration::from_secs(10);

/// Warns, at most every [`KERNEL_LOSS_CHECK`], when the kernel programs lost
/// replies (a full ring buffer: the reader fell more than a ring of events
/// behind) or stamps (a full in-flight map): each such probe counts as lost
/// though the network answered it, so the loss figures are wrong until it
/// stops. The counters are also on /metrics
/// (`hopwatch_kernel_ringbuf_drops_total`, `..._egress_map_full_total`).
async fn watch_kernel_losses(engine: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(KERNEL_LOSS_CHECK);
    let mut last: Option<KernelCounters> = None;
    loop {
        tick.tick().await;
        let Some(inner) = engine.upgrade() else {
            return;
        };
        let now = inner.ebpf.as_ref().and_then(|e| e.counters().ok());
        drop(inner);
        let Some(now) = now else {
            continue;
        };
        if let Some(last) = last {
            if let Some(losses) = KernelLosses::between(&last, &now) {
                if let Some(inner) = engine.upgrade() {
                    *sys::lock(&inner.kernel_losses) = Some((sys::now_ms(), losses));
                }
                tracing::warn!(
                    replies_dropped_ring_full = losses.replies,
                    stamps_dropped_map_full = losses.stamps,
                    "the eBPF programs lost {} replies and {} send stamps in the last {} s: those probes count as lost though they may have been answered (the ring buffer or the in-flight map is full: fewer targets, or a longer interval)",
                    losses.replies,
                    losses.stamps,
                    KERNEL_LOSS_CHECK.as_secs()
                );
            }
        }
        last = Some(now);
    }
}

/// What the kernel programs lost between two readings of their counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLosses {
    /// Matched replies dropped because the ring buffer was full.
    pub replies: u64,
    /// Outgoing probes whose stamp the in-flight map could not take.
    pub stamps: u64,
}

impl KernelLosses {
    /// `None` when nothing was lost.
    fn between(before: &KernelCounters, after: &KernelCounters) -> Option<KernelLosses> {
        let losses = KernelLosses {
            replies: after.ringbuf_drop.wrapping_sub(before.ringbuf_drop),
            stamps: after.egress_map_full.wrapping_sub(before.egress_map_full),
        };
        (losses.replies > 0 || losses.stamps > 0).then_some(losses)
    }
}

/// One target's probe flow. Dropping it returns its identifier to the engine.
pub struct Flow {
    engine: Engine,
    spec: FlowSpec,
    src: IpAddr,
    flow_id: u16,
    next_seq: AtomicU32,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.engine.lock_flows().release(self.flow_id);
    }
}

impl Flow {
    pub fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    /// The source address probes leave from.
    pub fn source(&self) -> IpAddr {
        self.src
    }

    /// The ICMP identifier or source port this flow uses on the wire.
    pub fn flow_id(&self) -> u16 {
        self.flow_id
    }

    fn packet(&self, n: u32) -> ProbePacket {
        ProbePacket {
            protocol: self.spec.protocol,
            src: self.src,
            dst: self.spec.dst,
            flow: self.flow_id,
            dst_port: self.spec.dst_port,
            seq: wire_seq(self.spec.protocol, self.flow_id, n),
            packet_size: self.spec.packet_size,
        }
    }

    /// Sends one probe with `ttl` and waits for its reply or its timeout.
    pub async fn probe(&self, ttl: Ttl) -> Result<ProbeResult, ProbeError> {
        let inner = &self.engine.inner;
        let packet = self.packet(self.next_seq.fetch_add(1, Ordering::Relaxed));
        let key = packet.key();
        let mut bytes = Vec::with_capacity(self.spec.packet_size);
        packet.build(&mut bytes)?;
        if let Some(rate) = &inner.rate {
            rate.until_ready().await;
        }
        let reply = inner.correlator.register(key);
        let sent = inner.transport.send(&OutgoingProbe {
            dst: self.spec.dst,
            protocol: self.spec.protocol,
            ttl,
            bytes: &bytes,
        });
        let stamp = match sent {
            Ok(stamp) => stamp,
            Err(err) => {
                inner.correlator.cancel(&key);
                inner.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                return Err(err.into());
            }
        };
        inner.counters.sent.fetch_add(1, Ordering::Relaxed);
        let (outcome, source) = match tokio::time::timeout(self.spec.timeout, reply).await {
            Ok(Ok(observation)) => {
                inner.counters.answered.fetch_add(1, Ordering::Relaxed);
                let (rtt, source) = self.rtt(&stamp, &observation);
                let reply = observation.reply;
                let sent = SentHeader {
                    src: self.src,
                    tos: 0,
                    ip_len: u16::try_from(packet.ip_len()).unwrap_or(u16::MAX),
                };
                let quote = reply
                    .quote
                    .map(|quoted| quote::reading(&sent, &quoted, reply.kind, &reply.mpls));
                (
                    Outcome::Answered(Answer {
                        responder: reply.responder,
                        kind: reply.kind,
                        icmp_type: reply.icmp_type,
                        icmp_code: reply.icmp_code,
                        rtt,
                        mpls: reply.mpls,
                        reply_ttl: reply.reply_ttl,
                        quote,
                    }),
                    source,
                )
            }
            Ok(Err(_)) | Err(_) => {
                inner.correlator.cancel(&key);
                inner.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                (Outcome::TimedOut, inner.source)
            }
        };
        Ok(ProbeResult {
            target: self.spec.dst,
            ttl,
            protocol: self.spec.protocol,
            key,
            dst_port: self.spec.dst_port,
            sent_at: stamp.sent_at,
            outcome,
            source,
        })
    }

    /// The RTT by the best clock both ends of this probe were read with.
    fn rtt(&self, stamp: &SendStamp, observation: &ReplyObservation) -> (Rtt, TimestampSource) {
        match observation.timing {
            ReplyTiming::Ebpf { tx_ns, rx_ns } => (
                Rtt::from_nanos(rx_ns.saturating_sub(tx_ns)),
                TimestampSource::Ebpf,
            ),
            ReplyTiming::KernelRx { rx_realtime_ns } => {
                let tx = stamp
                    .kernel_tx
                    .and_then(|id| self.engine.inner.transport.take_tx_stamp(id));
                match tx {
                    Some(tx_ns) => (
                        Rtt::from_nanos(rx_realtime_ns.saturating_sub(tx_ns)),
                        TimestampSource::Kernel,
                    ),
                    None => user_rtt(stamp, observation),
                }
            }
            ReplyTiming::UserspaceOnly => user_rtt(stamp, observation),
        }
    }
}

fn user_rtt(stamp: &SendStamp, observation: &ReplyObservation) -> (Rtt, TimestampSource) {
    (
        Rtt::from_nanos(
            observation
                .user_rx_mono_ns
                .saturating_sub(stamp.user_mono_ns),
        ),
        TimestampSource::Userspace,
    )
}

/// The per-probe part of the wire identity for probe number `n` of a flow.
/// UDP checksums 0 and 0xffff are avoided: 0 means "no checksum" in IPv4 and
/// both encode the same one's-complement value.
fn wire_seq(protocol: Protocol, flow_id: u16, n: u32) -> u32 {
    match protocol {
        Protocol::Icmp => n & 0xffff,
        Protocol::Udp => 1 + n % 0xfffe,
        // Any 32-bit value works; the flow id in the high half helps reading captures.
        Protocol::Tcp => (u32::from(flow_id) << 16).wrapping_add(n),
    }
}

/// The address the kernel would send from to reach `dst`, honouring the
/// configured source address and interface. Connecting a UDP socket asks the
/// routing table without sending anything.
fn source_address(dst: IpAddr, selection: &SourceSelection) -> Result<IpAddr, EngineError> {
    let configured = match dst {
        IpAddr::V4(_) => selection.v4.map(IpAddr::V4),
        IpAddr::V6(_) => selection.v6.map(IpAddr::V6),
    };
    if let Some(src) = configured {
        return Ok(src);
    }
    let no_route = |source| EngineError::NoRoute { dst, source };
    let domain = if dst.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, None).map_err(no_route)?;
    if let Some(interface) = &selection.interface {
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(no_route)?;
    }
    socket
        .connect(&SocketAddr::new(dst, 9).into())
        .map_err(no_route)?;
    let local = socket.local_addr().map_err(no_route)?;
    let src = local
        .as_socket()
        .map(|a| a.ip())
        .ok_or_else(|| no_route(std::io::Error::other("no IP source address")))?;
    if src.is_ipv6() != dst.is_ipv6() {
        return Err(EngineError::FamilyMismatch { src, dst });
    }
    Ok(src)
}

/// One of 15 blocks of 4096 flow identifiers, picked at random (mixed with
/// the process id), so concurrent hopwatch processes (a daemon and a one-shot
/// trace) rarely share one; when they do, random sequence starts keep their
/// probe identities apart.
fn default_flow_range() -> Range<u16> {
    const BLOCK: u32 = 4096;
    let block = 1 + (std::process::id() ^ fastrand::u32(..)) % 15;
    let start = (block * BLOCK) as u16;
    start..(block * BLOCK + BLOCK - 1) as u16
}

/// Hands out flow identifiers from a range, reusing released ones last.
struct FlowAllocator {
    range: Range<u16>,
    next: u16,
    free: std::collections::VecDeque<u16>,
}

impl FlowAllocator {
    fn new(range: Range<u16>) -> Self {
        FlowAllocator {
            next: range.start,
            range,
            free: Default::default(),
        }
    }

    fn allocate(&mut self) -> Result<u16, EngineError> {
        if self.next < self.range.end {
            self.next += 1;
            return Ok(self.next - 1);
        }
        self.free.pop_front().ok_or(EngineError::FlowsExhausted {
            capacity: self.range.len(),
        })
    }

    /// Released identifiers queue at the back: a late reply to a closed flow
    /// then finds nothing rather than a new flow's probe.
    fn release(&mut self, id: u16) {
        if self.range.contains(&id) {
            self.free.push_back(id);
        }
    }
}

/// Builds the wire key for tests and tools that predict probe identities.
pub fn probe_key(spec: &FlowSpec, src: IpAddr, flow_id: u16, n: u32) -> ProbeKey {
    ProbePacket {
        protocol: spec.protocol,
        src,
        dst: spec.dst,
        flow: flow_id,
        dst_port: spec.dst_port,
        seq: wire_seq(spec.protocol, flow_id, n),
        packet_size: spec.packet_size,
    }
    .key()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_losses_are_what_the_loss_counters_gained_and_none_without() {
        let before = KernelCounters {
            egress_stamped: 100,
            ringbuf_drop: 3,
            egress_map_full: 1,
            ..KernelCounters::default()
        };
        let quiet = KernelCounters {
            egress_stamped: 5_000,
            ingress_matched: 4_990,
            ..before
        };
        assert_eq!(KernelLosses::between(&before, &quiet), None);
        let dropping = KernelCounters {
            ringbuf_drop: 40,
            ..quiet
        };
        assert_eq!(
            KernelLosses::between(&before, &dropping),
            Some(KernelLosses {
                replies: 37,
                stamps: 0
            })
        );
        let map_full = KernelCounters {
            egress_map_full: 9,
            ..quiet
        };
        assert_eq!(
            KernelLosses::between(&before, &map_full),
            Some(KernelLosses {
                replies: 0,
                stamps: 8
            })
        );
    }

    #[test]
    fn udp_sequences_never_use_checksum_zero_or_ffff() {
        for n in (0..200_000u32).chain([u32::MAX - 1, u32::MAX]) {
            let s = wire_seq(Protocol::Udp, 5000, n);
            assert!(s != 0 && s != 0xffff && s <= 0xffff, "n={n} gave {s}");
        }
    }

    #[test]
    fn flow_allocator_hands_out_each_id_once_and_reuses_released_ones_last() {
        let mut alloc = FlowAllocator::new(100..103);
        let a = alloc.allocate().unwrap();
        let b = alloc.allocate().unwrap();
        alloc.release(a);
        let c = alloc.allocate().unwrap();
        assert_eq!((a, b, c), (100, 101, 102));
        assert_eq!(alloc.allocate().unwrap(), a);
        assert!(matches!(
            alloc.allocate(),
            Err(EngineError::FlowsExhausted { capacity: 3 })
        ));
    }

    #[test]
    fn default_flow_range_is_a_nonempty_block_above_4096() {
        let range = default_flow_range();
        assert!(range.start >= 4096);
        assert!(range.len() >= 4000);
    }
}

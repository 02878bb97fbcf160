//! Per-target probing rounds for the daemon: every interval, one probe per TTL
//! from the first up to the destination, gathered into a [`RoundRecord`]; or,
//! for a `final_hop_only` target, one probe to the destination alone.
//!
//! Rounds start on a fixed cadence and may overlap when the timeout is longer
//! than the interval, so one slow round never delays the next (SmokePing-style
//! steady sampling). A target task only ever talks to the engine and to the
//! channel its records go out on.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::TargetConfig;
use crate::model::{HopAnswer, HopSample, RoundRecord, TargetId};
use crate::probe::clock::unix_nanos;
use crate::probe::parse::ReplyKind;
use crate::probe::{
    Engine, EngineError, Flow, FlowSpec, Outcome, ProbeResult, TimestampSource, Ttl,
};
use crate::sys;

/// How one target is probed.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSchedule {
    pub id: TargetId,
    pub flow: FlowSpec,
    pub first_ttl: Ttl,
    pub max_ttl: Ttl,
    /// Time between the starts of two rounds.
    pub interval: Duration,
    /// One probe per round, with TTL `max_ttl`, recorded as the path's only row.
    pub final_hop_only: bool,
}

impl TargetSchedule {
    /// How `target` is probed once its host is resolved to `dst`. Built here,
    /// not by the config, so the config knows nothing of the scheduler.
    pub fn of(target: &TargetConfig, dst: IpAddr) -> TargetSchedule {
        TargetSchedule {
            id: target.id.clone(),
            flow: target.flow_spec(dst),
            first_ttl: target.probe.first_ttl,
            max_ttl: target.probe.max_hops,
            interval: target.probe.interval,
            final_hop_only: target.probe.final_hop_only,
        }
    }
}

/// A running target. Dropping it stops probing; rounds already in flight are
/// abandoned.
pub struct TargetRunner {
    task: JoinHandle<()>,
}

impl Drop for TargetRunner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TargetRunner {
    /// Opens the target's flow and starts its rounds. Round numbers come from
    /// `next_seq`, which the caller keeps, so a paused or edited target resumes
    /// where it left off.
    pub fn start(
        engine: &Engine,
        schedule: TargetSchedule,
        next_seq: Arc<AtomicU64>,
        records: mpsc::Sender<RoundRecord>,
    ) -> Result<TargetRunner, EngineError> {
        let flow = Arc::new(engine.open_flow(schedule.flow.clone())?);
        Ok(TargetRunner::on_flow(flow, schedule, next_seq, records))
    }

    /// Runs the rounds over a flow already open: an ECMP branch's kept flow,
    /// probed exactly like a target's own.
    pub fn on_flow(
        flow: Arc<Flow>,
        schedule: TargetSchedule,
        next_seq: Arc<AtomicU64>,
        records: mpsc::Sender<RoundRecord>,
    ) -> TargetRunner {
        let task = tokio::spawn(run_rounds(flow, schedule, next_seq, records));
        TargetRunner { task }
    }
}

async fn run_rounds(
    flow: Arc<Flow>,
    schedule: TargetSchedule,
    next_seq: Arc<AtomicU64>,
    records: mpsc::Sender<RoundRecord>,
) {
    let depth = Arc::new(Mutex::new(ProbeDepth::default()));
    let start = tokio::time::Instant::now() + start_offset(&schedule.id, schedule.interval);
    let mut ticker = tokio::time::interval_at(start, schedule.interval);
    // A tick that fires late (a busy CPU) keeps the grid: the next round
    // starts on time, not one interval after the late one, so lateness
    // below an interval costs no round. A tick missed entirely is skipped,
    // never made up in a burst of probes.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let schedule = Arc::new(schedule);
    // Rounds overlap, and a round whose probes all answer finishes before an
    // earlier one still waiting on a timeout; records leave in round order.
    // Each round is its own task (its probes run while this loop waits on a
    // full records channel); their handles wait here in the order issued.
    // (A channel of finished rounds cost ~5 KiB per target: docs/benchmarks.md.)
    let mut in_flight: FuturesOrdered<JoinHandle<RoundRecord>> = FuturesOrdered::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if records.is_closed() {
                    return;
                }
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                let flow = Arc::clone(&flow);
                let schedule = Arc::clone(&schedule);
                let depth = Arc::clone(&depth);
                in_flight.push_back(tokio::spawn(async move {
                    if schedule.final_hop_only {
                        return run_final_hop_round(&flow, &schedule, seq).await;
                    }
                    let last = sys::lock(&depth).last_ttl(schedule.max_ttl.get());
                    let round = run_round(&flow, &schedule, seq, last).await;
                    sys::lock(&depth).observe(&round, last);
                    round
                }));
            }
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let round = match done {
                    Ok(round) => round,
                    Err(err) => {
                        // A round's task panicked: that round is missing (a gap
                        // in the sequence), the rounds after it still leave.
                        tracing::error!(target = %schedule.id, error = %err, "a probing round failed; it is missing from the history");
                        continue;
                    }
                };
                if records.send(round).await.is_err() {
                    // The daemon is shutting this target down.
                    return;
                }
            }
        }
    }
}

/// Where in its interval a target's rounds start, fixed by its name. Targets
/// that share an interval would otherwise probe in lockstep: every round the
/// same target would get a rate-limiting router's whole ICMP budget and the
/// others none, and all probes would leave in one burst.
fn start_offset(id: &TargetId, interval: Duration) -> Duration {
    // FNV-1a: stable across releases and platforms, unlike std's hasher.
    let hash = id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let nanos = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(hash) % nanos) as u64)
}

/// Rounds in a row whose probe at the destination's TTL timed out before the
/// path is probed up to the maximum again.
const REDISCOVER_AFTER_MISSES: u8 = 3;

/// How far rounds probe: up to the destination's TTL once a round reached
/// it, and up to the maximum while it is unknown.
///
/// One lost reply at the destination's TTL keeps that depth. Probing past it
/// after every loss would give the next round extra probes that reach the
/// destination at higher TTLs, and count it as answered when its own probe
/// was lost: destination loss would read far below the loss of the hop in
/// front of it (measured: 10 % against 21–30 %), and the rate-limit and
/// localisation findings that compare the two would go wrong. The path is
/// rediscovered at once when a router answers at the destination's TTL (the
/// path got longer), and after a few lost rounds in a row (a longer path
/// behind silent routers, or the destination gone).
#[derive(Debug, Default)]
struct ProbeDepth {
    destination_ttl: Option<u8>,
    misses: u8,
}

impl ProbeDepth {
    fn last_ttl(&self, max_ttl: u8) -> u8 {
        self.destination_ttl.unwrap_or(max_ttl)
    }

    /// Learns from a finished round that probed up to `probed_to`.
    fn observe(&mut self, round: &RoundRecord, probed_to: u8) {
        if let Some(ttl) = round.destination_ttl {
            self.destination_ttl = Some(ttl.get());
            self.misses = 0;
            return;
        }
        let router_answered_last = round
            .hops
            .iter()
            .any(|h| h.ttl.get() == probed_to && !h.is_lost() && !h.reached());
        self.misses = self.misses.saturating_add(1);
        if router_answered_last || self.misses >= REDISCOVER_AFTER_MISSES {
            self.destination_ttl = None;
        }
    }
}

/// Probes TTLs `first..=last` at once and waits for every answer or timeout.
async fn run_round(flow: &Flow, schedule: &TargetSchedule, seq: u64, last: u8) -> RoundRecord {
    let started_at_ms = unix_nanos(SystemTime::now()) / 1_000_000;
    let probes = (schedule.first_ttl.get()..=last.max(schedule.first_ttl.get())).map(|ttl| {
        let ttl = Ttl::new(ttl).expect("TTLs start at first_ttl, which is non-zero");
        async move { (ttl, flow.probe(ttl).await) }
    });
    let results = futures::future::join_all(probes).await;
    round_record(&schedule.id, seq, started_at_ms, flow.spec().dst, results)
}

/// The row a final-hop-only target's one probe is recorded at: the path it
/// shows has one row, the destination, whatever TTL the probe left with.
pub const FINAL_HOP_ROW: Ttl = Ttl::MIN;

/// Sends a final-hop-only target's one probe, with TTL `max_ttl` so it reaches
/// the destination, and waits for its answer or timeout.
async fn run_final_hop_round(flow: &Flow, schedule: &TargetSchedule, seq: u64) -> RoundRecord {
    let started_at_ms = unix_nanos(SystemTime::now()) / 1_000_000;
    let result = flow.probe(schedule.max_ttl).await;
    final_hop_record(&schedule.id, seq, started_at_ms, result)
}

/// A final-hop-only round's record: one row, answered only when the
/// destination proved it is up: an ICMP echo reply, or a TCP SYN-ACK (the
/// handshake's time, SYN out to SYN-ACK in). A TCP RST (the port is closed),
/// an ICMP error from a router (host unreachable, or a path longer than
/// `max_hops`) and silence are all a lost round.
fn final_hop_record(
    id: &TargetId,
    seq: u64,
    started_at_ms: u64,
    result: Result<ProbeResult, crate::probe::ProbeError>,
) -> RoundRecord {
    let (sample, source) = match result {
        Ok(result) => {
            let sample = match &result.outcome {
                Outcome::Answered(answer)
                    if matches!(answer.kind, ReplyKind::EchoReply | ReplyKind::TcpSynAck) =>
                {
                    HopSample::answered(
                        FINAL_HOP_ROW,
                        HopAnswer {
                            responder: answer.responder,
                            rtt: answer.rtt,
                            is_destination: true,
                            reply_ttl: answer.reply_ttl,
                            quote: answer.quote,
                        },
                    )
                }
                Outcome::Answered(answer) => {
                    tracing::debug!(target = %id, responder = %answer.responder, kind = %answer.kind,
                        "final-hop probe answered, but not by a service that is up");
                    HopSample::lost(FINAL_HOP_ROW)
                }
                Outcome::TimedOut => HopSample::lost(FINAL_HOP_ROW),
            };
            (sample, result.source)
        }
        Err(err) => {
            tracing::debug!(target = %id, error = %err, "final-hop probe not sent");
            (HopSample::lost(FINAL_HOP_ROW), TimestampSource::Ebpf)
        }
    };
    RoundRecord {
        target: id.clone(),
        seq,
        started_at_ms,
        destination_ttl: (!sample.is_lost()).then_some(FINAL_HOP_ROW),
        hops: vec![sample],
        source,
    }
}

/// Folds a round's probe results into its record. Send failures (no route,
/// interface down) count as lost probes: the path is unusable at that moment.
fn round_record(
    id: &TargetId,
    seq: u64,
    started_at_ms: u64,
    dst: IpAddr,
    results: Vec<(Ttl, Result<ProbeResult, crate::probe::ProbeError>)>,
) -> RoundRecord {
    let mut hops = Vec::with_capacity(results.len());
    let mut source = TimestampSource::Ebpf;
    let mut destination_ttl = None;
    for (ttl, result) in results {
        let sample = match result {
            Ok(result) => {
                source = source.max(result.source);
                match &result.outcome {
                    Outcome::Answered(answer) => {
                        let is_destination =
                            answer.kind.reached_destination() || answer.responder == dst;
                        if is_destination && destination_ttl.is_none() {
                            destination_ttl = Some(ttl);
                        }
                        HopSample::answered(
                            ttl,
                            HopAnswer {
                                responder: answer.responder,
                                rtt: answer.rtt,
                                is_destination,
                                reply_ttl: answer.reply_ttl,
                                quote: answer.quote,
                            },
                        )
                    }
                    Outcome::TimedOut => HopSample::lost(ttl),
                }
            }
            Err(err) => {
                tracing::debug!(target = %id, ttl = ttl.get(), error = %err, "probe not sent");
                HopSample::lost(ttl)
            }
        };
        hops.push(sample);
    }
    hops.sort_by_key(|h| h.ttl);
    RoundRecord {
        target: id.clone(),
        seq,
        started_at_ms,
        hops,
        destination_ttl,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_takes_the_targets_flow_ttls_and_interval() {
        let config = crate::config::Config::parse(
            "[[target]]\nname = \"dns\"\nhost = \"2001:db8::53\"\nprotocol = \"udp\"\n\
             port = 53\ninterval = \"500ms\"\nfirst_ttl = 2\nmax_hops = 16\npacket_size = 128\n",
            "scheduler-unit.toml",
        )
        .unwrap();
        let target = &config.targets[0];
        let dst: IpAddr = "2001:db8::53".parse().unwrap();
        let schedule = TargetSchedule::of(target, dst);
        assert_eq!(schedule.id, target.id);
        assert_eq!(schedule.flow, target.flow_spec(dst));
        assert_eq!(schedule.flow.dst_port, 53);
        assert_eq!(schedule.flow.packet_size, 128);
        assert_eq!(schedule.first_ttl.get(), 2);
        assert_eq!(schedule.max_ttl.get(), 16);
        assert_eq!(schedule.interval, Duration::from_millis(500));
    }

    fn round(seq: u64) -> RoundRecord {
        RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq,
            started_at_ms: seq,
            hops: Vec::new(),
            destination_ttl: None,
            source: TimestampSource::Ebpf,
        }
    }

    fn probed(hops: &[(u8, Option<bool>)], destination_ttl: Option<u8>) -> RoundRecord {
        let ip = "198.18.0.1".parse().unwrap();
        RoundRecord {
            hops: hops
                .iter()
                .map(|&(ttl, answer)| {
                    HopSample::answered_or_lost(
                        ttl,
                        ip,
                        answer.map(|_| 1_000),
                        answer == Some(true),
                    )
                })
                .collect(),
            destination_ttl: destination_ttl.and_then(Ttl::new),
            ..round(0)
        }
    }

    #[test]
    fn a_lost_destination_reply_keeps_the_probe_depth() {
        let mut depth = ProbeDepth::default();
        assert_eq!(depth.last_ttl(30), 30, "unknown: probe to the maximum");
        depth.observe(&probed(&[(1, Some(false)), (2, Some(true))], Some(2)), 30);
        assert_eq!(depth.last_ttl(30), 2);
        // Lost at TTL 2, twice: still probe to 2, no extra chances.
        let lost = probed(&[(1, Some(false)), (2, None)], None);
        depth.observe(&lost, 2);
        depth.observe(&lost, 2);
        assert_eq!(depth.last_ttl(30), 2);
        // An answer resets the count.
        depth.observe(&probed(&[(1, Some(false)), (2, Some(true))], Some(2)), 2);
        depth.observe(&lost, 2);
        depth.observe(&lost, 2);
        assert_eq!(depth.last_ttl(30), 2);
        // The third miss in a row rediscovers.
        depth.observe(&lost, 2);
        assert_eq!(depth.last_ttl(30), 30);
    }

    #[test]
    fn a_router_at_the_destination_ttl_rediscovers_at_once() {
        let mut depth = ProbeDepth::default();
        depth.observe(&probed(&[(1, Some(false)), (2, Some(true))], Some(2)), 30);
        // The path got longer: a router now answers at TTL 2.
        depth.observe(&probed(&[(1, Some(false)), (2, Some(false))], None), 2);
        assert_eq!(depth.last_ttl(30), 30);
        depth.observe(
            &probed(
                &[(1, Some(false)), (2, Some(false)), (3, Some(true))],
                Some(3),
            ),
            30,
        );
        assert_eq!(depth.last_ttl(30), 3);
    }

    #[test]
    fn targets_start_at_different_points_of_their_interval() {
        let second = Duration::from_secs(1);
        let offsets: Vec<Duration> = ["dst", "web", "core", "edge", "dst-v6"]
            .iter()
            .map(|name| start_offset(&TargetId::new(*name).unwrap(), second))
            .collect();
        assert!(offsets.iter().all(|o| *o < second), "{offsets:?}");
        let mut distinct = offsets.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), offsets.len(), "{offsets:?}");
        // Fixed by the name: a restart keeps the phase.
        let dst = TargetId::new("dst").unwrap();
        assert_eq!(start_offset(&dst, second), offsets[0]);
    }
}

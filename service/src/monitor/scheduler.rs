//! Per-target probing rounds for the daemon: every interval, one probe per TTL
//! from the first up to the destination, gathered into a [`RoundRecord`].
//!
//! Rounds start on a fixed cadence and may overlap when the timeout is longer
//! than the interval, so one slow round never delays the next (SmokePing-style
//! steady sampling). A target task only ever talks to the engine and to the
//! channel its records go out on.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::{HopSample, RoundRecord, TargetId};
use crate::probe::clock::unix_nanos;
use crate::probe::{
    Engine, EngineError, Flow, FlowSpec, Outcome, ProbeResult, TimestampSource, Ttl,
};

/// How one target is probed.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSchedule {
    pub id: TargetId,
    pub flow: FlowSpec,
    pub first_ttl: Ttl,
    pub max_ttl: Ttl,
    /// Time between the starts of two rounds.
    pub interval: Duration,
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
        let task = tokio::spawn(run_rounds(flow, schedule, next_seq, records));
        Ok(TargetRunner { task })
    }
}

async fn run_rounds(
    flow: Arc<Flow>,
    schedule: TargetSchedule,
    next_seq: Arc<AtomicU64>,
    records: mpsc::Sender<RoundRecord>,
) {
    // The destination's TTL from the latest round that reached it; 0 while unknown,
    // in which case rounds probe up to the maximum to (re)discover the path.
    let destination_ttl = Arc::new(AtomicU8::new(0));
    let mut ticker = tokio::time::interval(schedule.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let schedule = Arc::new(schedule);
    // Rounds overlap, and a round whose probes all answer finishes before an
    // earlier one still waiting on a timeout; records leave in round order.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<RoundRecord>();
    let mut in_order = RoundOrder::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if records.is_closed() {
                    return;
                }
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                in_order.issued(seq);
                let flow = Arc::clone(&flow);
                let schedule = Arc::clone(&schedule);
                let done_tx = done_tx.clone();
                let destination_ttl = Arc::clone(&destination_ttl);
                tokio::spawn(async move {
                    let known = destination_ttl.load(Ordering::Relaxed);
                    let last = if known == 0 { schedule.max_ttl.get() } else { known };
                    let round = run_round(&flow, &schedule, seq, last).await;
                    destination_ttl.store(round.destination_ttl.unwrap_or(0), Ordering::Relaxed);
                    // The receiver lives as long as this target runs.
                    let _ = done_tx.send(round);
                });
            }
            Some(round) = done_rx.recv() => {
                for round in in_order.completed(round) {
                    if records.send(round).await.is_err() {
                        // The daemon is shutting this target down.
                        return;
                    }
                }
            }
        }
    }
}

/// Puts completed rounds back in the order they were issued.
#[derive(Default)]
struct RoundOrder {
    next_to_emit: Option<u64>,
    waiting: std::collections::BTreeMap<u64, RoundRecord>,
}

impl RoundOrder {
    fn issued(&mut self, seq: u64) {
        self.next_to_emit.get_or_insert(seq);
    }

    /// The rounds that can leave now that `round` is done, in order.
    fn completed(&mut self, round: RoundRecord) -> Vec<RoundRecord> {
        self.waiting.insert(round.seq, round);
        let mut ready = Vec::new();
        while let Some(next) = self.next_to_emit {
            match self.waiting.remove(&next) {
                Some(round) => {
                    ready.push(round);
                    self.next_to_emit = Some(next + 1);
                }
                None => break,
            }
        }
        ready
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
                        let reached = answer.kind.reached_destination() || answer.responder == dst;
                        if reached && destination_ttl.is_none() {
                            destination_ttl = Some(ttl.get());
                        }
                        HopSample {
                            ttl: ttl.get(),
                            responder: Some(answer.responder),
                            rtt_ns: Some(answer.rtt.as_nanos()),
                            reached,
                        }
                    }
                    Outcome::TimedOut => lost(ttl),
                }
            }
            Err(err) => {
                tracing::debug!(target = %id, ttl = ttl.get(), error = %err, "probe not sent");
                lost(ttl)
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

fn lost(ttl: Ttl) -> HopSample {
    HopSample {
        ttl: ttl.get(),
        responder: None,
        rtt_ns: None,
        reached: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn rounds_leave_in_the_order_they_were_issued() {
        let mut order = RoundOrder::default();
        for seq in 10..14 {
            order.issued(seq);
        }
        assert!(order.completed(round(11)).is_empty(), "11 waits for 10");
        assert!(order.completed(round(13)).is_empty());
        let seqs = |v: Vec<RoundRecord>| v.into_iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(order.completed(round(10))), vec![10, 11]);
        assert_eq!(seqs(order.completed(round(12))), vec![12, 13]);
    }
}

//! Tracing a path in rounds, mtr-style: every round probes each TTL from the
//! first up to the destination's hop once, and results stream out as they land.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use super::engine::{Engine, EngineError, FlowSpec, ProbeError};
use super::types::{ProbeResult, Ttl};

/// What to trace and how often.
#[derive(Debug, Clone)]
pub struct TraceSpec {
    pub flow: FlowSpec,
    pub first_ttl: Ttl,
    pub max_ttl: Ttl,
    /// Rounds to run; `None` runs until the stream is dropped.
    pub rounds: Option<u32>,
    /// Time between the starts of two rounds.
    pub interval: Duration,
}

/// A stream of probe results (in completion order) for a trace. Dropping it
/// stops the trace.
pub type TraceStream = ReceiverStream<Result<ProbeResult, ProbeError>>;

impl Engine {
    /// Starts tracing `spec.flow.dst`. Probes of a round go out together; a
    /// round does not wait for the previous one's replies, like mtr.
    ///
    /// Once the destination answers at some TTL, later rounds stop there.
    pub fn trace(&self, spec: TraceSpec) -> Result<TraceStream, EngineError> {
        let flow = Arc::new(self.open_flow(spec.flow.clone())?);
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            // The lowest TTL at which the destination answered; 0 until it has.
            let destination_ttl = Arc::new(AtomicU8::new(0));
            let mut probes = JoinSet::new();
            let mut ticker = tokio::time::interval(spec.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut round = 0u32;
            while spec.rounds.is_none_or(|rounds| round < rounds) {
                ticker.tick().await;
                if tx.is_closed() {
                    return;
                }
                let reached = destination_ttl.load(Ordering::Relaxed);
                let last = if reached == 0 {
                    spec.max_ttl.get()
                } else {
                    reached.min(spec.max_ttl.get())
                };
                for ttl in spec.first_ttl.get()..=last {
                    let ttl = Ttl::new(ttl)
                        .expect("the range starts at the first TTL, which is non-zero");
                    let flow = Arc::clone(&flow);
                    let tx = tx.clone();
                    let destination_ttl = Arc::clone(&destination_ttl);
                    probes.spawn(async move {
                        let result = flow.probe(ttl).await;
                        if let Ok(result) = &result {
                            if result.reached_destination() {
                                destination_ttl
                                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                                        (d == 0 || ttl.get() < d).then_some(ttl.get())
                                    })
                                    .ok();
                            }
                        }
                        // A closed receiver means the caller stopped listening.
                        let _ = tx.send(result).await;
                    });
                }
                // Reap finished probes so the set does not grow without bound.
                while probes.try_join_next().is_some() {}
                round += 1;
            }
            while probes.join_next().await.is_some() {}
        });
        Ok(ReceiverStream::new(rx))
    }
}

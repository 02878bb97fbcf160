//! The pipeline: every finished round goes to the live analysis, to the
//! round subscribers (the web layer's probe counters, histograms and
//! sparklines), to the store and the optional per-probe raw log, and the
//! events it causes go to the store and to subscribers (live updates); then
//! the alert engine judges the round. Everything live is fed from here, never
//! from the store, so a failing store degrades history only.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::live::{LiveState, TargetEvent};
use crate::alerts::Alerts;
use crate::analysis::PathEvent;
use crate::model::{BranchUpdate, RoundRecord};
use crate::store::{RawLog, Store, StoredEvent};

/// Where the pipeline sends what it produces.
pub struct Outputs {
    /// Each round of a live target, once, as it completes.
    pub rounds: broadcast::Sender<Arc<RoundRecord>>,
    /// Path events.
    pub events: broadcast::Sender<TargetEvent>,
}

/// What the pipeline receives.
pub struct Inputs {
    /// Every target's rounds over its own flow.
    pub rounds: mpsc::Receiver<RoundRecord>,
    /// Multipath targets' branch layouts and branch rounds: the rounds go to
    /// the live analysis and to the store (each branch its own series), and
    /// are judged by the alerts with the target's next round; a branch's
    /// route change is an event like the target's own.
    pub branches: mpsc::Receiver<BranchUpdate>,
}

/// Runs until every sender of `rounds` is gone.
pub async fn run(
    inputs: Inputs,
    live: Arc<LiveState>,
    store: Arc<Store>,
    mut raw_log: Option<RawLog>,
    outputs: Outputs,
    alerts: Arc<Alerts>,
) {
    let Outputs {
        rounds: completed,
        events,
    } = outputs;
    let Inputs {
        mut rounds,
        branches,
    } = inputs;
    let mut branches = Some(branches);
    let mut store_failing = false;
    loop {
        let round = tokio::select! {
            round = rounds.recv() => match round {
                Some(round) => round,
                None => break,
            },
            update = next_branch_update(&mut branches) => {
                match update {
                    Some(update) => {
                        // A branch's route change: stored and sent like the
                        // target's own (the branch prober hears it and
                        // discovers again); the alerts judge the target's
                        // own flow only.
                        if let Some(event) = live.record_branch(&update) {
                            if let Err(err) = store.record_event(&stored(&event)) {
                                tracing::warn!(error = %err, target = %event.target, "storing an event failed");
                            }
                            tracing::info!(target = %event.target, event = ?event.event, "path event");
                            let _ = events.send(event);
                        }
                        // Like a target's round: stored even when the live
                        // view dropped it (multipath just turned off), since
                        // it was measured; a failure is in the store's health.
                        if let BranchUpdate::Round { branch, round } = &update {
                            if let Err(err) = store.record_branch_round(*branch, round) {
                                tracing::debug!(error = %err, target = %round.target, %branch, "storing a branch round failed");
                            }
                        }
                    }
                    // Every branch prober is gone: main rounds only.
                    None => branches = None,
                }
                continue;
            }
        };
        // Shared, not copied: every subscriber reads the same round.
        let round = Arc::new(round);
        // A round of a target removed meanwhile goes to history only.
        let caused = match live.record_round(&round) {
            Some(caused) => {
                // No subscriber is fine (no web server).
                let _ = completed.send(Arc::clone(&round));
                caused
            }
            None => Vec::new(),
        };
        // The store buffers in memory and reports disk trouble through its
        // health; log the first failure of a run of them, not every round.
        match store.record_round(&round) {
            Ok(()) => store_failing = false,
            Err(err) if !store_failing => {
                store_failing = true;
                tracing::error!(error = %err, "storing rounds failed; probing and the live view go on");
            }
            Err(_) => {}
        }
        if let Some(log) = raw_log.as_mut() {
            if let Err(err) = log.write_round(&round) {
                tracing::warn!(error = %err, "writing the raw probe log failed");
            }
        }
        let path_events: Vec<PathEvent> = caused.iter().map(|e| e.event.clone()).collect();
        for event in caused {
            if let Err(err) = store.record_event(&stored(&event)) {
                tracing::warn!(error = %err, target = %event.target, "storing an event failed");
            }
            tracing::info!(target = %event.target, event = ?event.event, "path event");
            // No subscriber is fine: alerts and live updates are optional.
            let _ = events.send(event);
        }
        // The alert rules read the target's snapshot as of this round.
        if let Some(view) = live.target(&round.target) {
            alerts
                .on_round(&view.alert_info(), &view.analysis, &path_events)
                .await;
        }
    }
    if let Some(log) = raw_log.as_mut() {
        let _ = log.flush();
    }
}

/// The next branch update; never, once their channel has closed.
async fn next_branch_update(
    branches: &mut Option<mpsc::Receiver<BranchUpdate>>,
) -> Option<BranchUpdate> {
    match branches {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The store's form of a path event.
pub fn stored(event: &TargetEvent) -> StoredEvent {
    StoredEvent {
        target: event.target.clone(),
        at_ms: event.event.at_ms(),
        kind: event.event.kind().to_owned(),
        payload: serde_json::to_value(&event.event).unwrap_or(serde_json::Value::Null),
    }
}

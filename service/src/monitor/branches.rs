//! A multipath target's branches: discovering its ECMP paths (MDA over the
//! engine), then probing one kept flow per branch every round, exactly like
//! the target's own flow; discovering again on the target's `rediscover`
//! schedule and after a route change of its own flow.
//!
//! A discovery opens a few dozen flows at once and the engine has 4096 flow
//! identifiers for the whole process, so the daemon runs at most
//! [`MAX_CONCURRENT_DISCOVERIES`] at a time ([`Discoveries`]); a target
//! waiting for its turn keeps probing its old branches. Like the scheduler,
//! this task talks only to the engine and to the channel its updates go out on
//! (plus the path-event broadcast, to hear of route changes).

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::live::TargetEvent;
use super::scheduler::{TargetRunner, TargetSchedule};
use crate::analysis::PathEvent;
use crate::config::validated::MultipathSettings;
use crate::model::{BranchIndex, BranchLayout, BranchPath, BranchUpdate, RoundRecord};
use crate::probe::clock::unix_nanos;
use crate::probe::multipath::{MdaConfig, MultipathSpec, MultipathTrace};
use crate::probe::Engine;

/// Discoveries running at once in the whole daemon.
pub const MAX_CONCURRENT_DISCOVERIES: usize = 1;

/// A route change starts a discovery at most this soon after the last one: a
/// flapping route must not turn into a stream of discoveries.
pub const ROUTE_CHANGE_HOLDOFF: Duration = Duration::from_secs(60);

/// How long to wait after a discovery failed (no flow identifiers left, no
/// route) before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Rounds a branch may have waiting for the pipeline before its prober waits.
const BRANCH_QUEUE: usize = 64;

/// The daemon-wide turn-taking of discoveries.
#[derive(Clone)]
pub struct Discoveries(Arc<Semaphore>);

impl Default for Discoveries {
    fn default() -> Self {
        Discoveries(Arc::new(Semaphore::new(MAX_CONCURRENT_DISCOVERIES)))
    }
}

/// What every branch prober shares: where updates go, the route changes it
/// listens to, and the discovery limit.
#[derive(Clone)]
pub struct BranchOutputs {
    pub updates: mpsc::Sender<BranchUpdate>,
    pub events: broadcast::Sender<TargetEvent>,
    pub discoveries: Discoveries,
}

/// A running branch prober. Dropping it stops discovery and every branch's
/// rounds, and returns their flows to the engine.
pub struct BranchProber {
    task: JoinHandle<()>,
}

impl Drop for BranchProber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BranchProber {
    pub fn start(
        engine: Engine,
        schedule: TargetSchedule,
        settings: MultipathSettings,
        outputs: BranchOutputs,
    ) -> BranchProber {
        let route_changes = outputs.events.subscribe();
        let task = tokio::spawn(run(engine, schedule, settings, outputs, route_changes));
        BranchProber { task }
    }
}

/// One branch being probed: its rounds and the task forwarding them.
struct RunningBranch {
    path: BranchPath,
    _runner: TargetRunner,
    forward: JoinHandle<()>,
}

impl Drop for RunningBranch {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

async fn run(
    engine: Engine,
    schedule: TargetSchedule,
    settings: MultipathSettings,
    outputs: BranchOutputs,
    mut route_changes: broadcast::Receiver<TargetEvent>,
) {
    let id = schedule.id.clone();
    // Round numbers per branch index, kept across discoveries so a branch
    // that is found again continues its rounds.
    let seqs: Vec<Arc<AtomicU64>> = (0..settings.max_branches)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let mut running: Vec<RunningBranch> = Vec::new();
    loop {
        let trace = {
            let Ok(_turn) = outputs.discoveries.0.acquire().await else {
                return;
            };
            engine.discover_multipath(spec(&schedule, &settings)).await
        };
        let trace = match trace {
            Ok(trace) => trace,
            Err(err) => {
                tracing::warn!(target = %id, error = %err, "multipath discovery failed; retrying in 30 s");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        let discovered = tokio::time::Instant::now();
        let previous: Vec<BranchPath> = running.iter().map(|b| b.path.clone()).collect();
        let (layout, flows) = layout(&schedule, &settings, trace, &previous);
        tracing::info!(target = %id, found = layout.found, probed = layout.branches.len(),
            probes = layout.probes_sent, elapsed_ms = layout.elapsed_ms, stop = %layout.stop,
            "multipath discovery");
        // The new branches replace the old only now, so a branch is never
        // left unprobed while discovery runs.
        running.clear();
        if outputs
            .updates
            .send(BranchUpdate::Discovered(layout.clone()))
            .await
            .is_err()
        {
            return;
        }
        for (path, flow) in layout.branches.into_iter().zip(flows) {
            let (tx, rx) = mpsc::channel(BRANCH_QUEUE);
            let seq = Arc::clone(&seqs[usize::from(path.index.get() - 1)]);
            let runner = TargetRunner::on_flow(Arc::new(flow), schedule.clone(), seq, tx);
            let forward = tokio::spawn(forward(path.index, rx, outputs.updates.clone()));
            running.push(RunningBranch {
                path,
                _runner: runner,
                forward,
            });
        }
        wait_for_rediscovery(&id, &settings, discovered, &mut route_changes).await;
    }
}

/// Returns when it is time to discover again: `rediscover` after the last
/// discovery, or a route change of the target's own flow (not before
/// [`ROUTE_CHANGE_HOLDOFF`] has passed since the last discovery).
async fn wait_for_rediscovery(
    id: &crate::model::TargetId,
    settings: &MultipathSettings,
    discovered: tokio::time::Instant,
    route_changes: &mut broadcast::Receiver<TargetEvent>,
) {
    let mut due = discovered + settings.rediscover;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due) => return,
            event = route_changes.recv() => match event {
                Ok(event) if &event.target == id
                    && matches!(event.event, PathEvent::RouteChanged { .. }) =>
                {
                    let soonest = discovered + ROUTE_CHANGE_HOLDOFF;
                    due = due.min(soonest.max(tokio::time::Instant::now()));
                    tracing::info!(target = %id, "route changed: rediscovering the branches");
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                // No more events (shutting down): the schedule alone remains.
                Err(broadcast::error::RecvError::Closed) => {
                    tokio::time::sleep_until(due).await;
                    return;
                }
            },
        }
    }
}

fn spec(schedule: &TargetSchedule, settings: &MultipathSettings) -> MultipathSpec {
    MultipathSpec {
        flow: schedule.flow.clone(),
        mda: MdaConfig {
            confidence: settings.confidence,
            first_ttl: schedule.first_ttl,
            max_ttl: schedule.max_ttl,
            max_probes: settings.max_probes,
            ..MdaConfig::default()
        },
    }
}

/// The layout to publish and the flows to probe, in the same order. A branch
/// whose path was already probed keeps its index (and so its statistics and
/// series); new paths take the lowest free indexes. At most `max_branches`.
fn layout(
    schedule: &TargetSchedule,
    settings: &MultipathSettings,
    trace: MultipathTrace,
    previous: &[BranchPath],
) -> (BranchLayout, Vec<crate::probe::Flow>) {
    let found = trace.branches.len();
    let mut kept: Vec<(BranchPath, crate::probe::Flow)> = Vec::new();
    let mut unplaced = Vec::new();
    for branch in trace.branches {
        let hops: Vec<Option<IpAddr>> = branch.branch.path.iter().map(|v| v.address()).collect();
        let path = BranchPath {
            index: BranchIndex::at(0).expect("index 1 exists"),
            flow_id: branch.flow.flow_id(),
            hops,
            reached_destination: branch.branch.reached_destination,
        };
        unplaced.push((path, branch.flow));
    }
    // First the paths probed before, at their old index.
    let mut rest = Vec::new();
    for (mut path, flow) in unplaced {
        match previous.iter().find(|p| p.hops == path.hops) {
            Some(old) if !kept.iter().any(|(k, _)| k.index == old.index) => {
                path.index = old.index;
                kept.push((path, flow));
            }
            _ => rest.push((path, flow)),
        }
    }
    for (mut path, flow) in rest {
        let free = (0..usize::from(settings.max_branches))
            .filter_map(BranchIndex::at)
            .find(|i| !kept.iter().any(|(k, _)| k.index == *i));
        let Some(index) = free else {
            // Over the cap: the flow goes back to the engine.
            continue;
        };
        path.index = index;
        kept.push((path, flow));
    }
    kept.sort_by_key(|(p, _)| p.index);
    let (branches, flows): (Vec<BranchPath>, Vec<crate::probe::Flow>) = kept.into_iter().unzip();
    let layout = BranchLayout {
        target: schedule.id.clone(),
        discovered_at_ms: unix_nanos(SystemTime::now()) / 1_000_000,
        first_ttl: schedule.first_ttl,
        probes_sent: trace.discovery.probes_sent,
        elapsed_ms: trace.elapsed.as_millis() as u64,
        found,
        stop: trace.discovery.stop.to_string(),
        branches,
    };
    (layout, flows)
}

/// Hands a branch's rounds on to the pipeline, tagged with the branch.
async fn forward(
    branch: BranchIndex,
    mut rounds: mpsc::Receiver<RoundRecord>,
    updates: mpsc::Sender<BranchUpdate>,
) {
    while let Some(round) = rounds.recv().await {
        if updates
            .send(BranchUpdate::Round { branch, round })
            .await
            .is_err()
        {
            return;
        }
    }
}

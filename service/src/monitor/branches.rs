//! A multipath target's branches: discovering its ECMP paths (MDA over the
//! engine), then probing one kept flow per branch every round, exactly like
//! the target's own flow; discovering again on the target's `rediscover`
//! schedule and after a route change of its own flow or of a branch's kept
//! flow (the branch analysis tells it, [`crate::analysis::branches`]).
//!
//! A discovery opens a few dozen flows at once and the engine has 4096 flow
//! identifiers for the whole process, so the daemon runs at most
//! [`MAX_CONCURRENT_DISCOVERIES`] at a time ([`Discoveries`]); a target
//! waiting for its turn keeps probing its old branches. Like the scheduler,
//! this task talks only to the engine and to the channel its updates go out on
//! (plus the path-event broadcast, to hear of route changes), and once, when
//! it starts, to the store: the paths the branches' stored rounds last took
//! ([`remembered`]), so a branch keeps its index (and its stored series its
//! path) across a restart of the daemon or of the target.

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
use crate::model::{BranchIndex, BranchLayout, BranchPath, BranchUpdate, RoundRecord, TargetId};
use crate::probe::clock::unix_nanos;
use crate::probe::multipath::{MdaConfig, MultipathSpec, MultipathTrace};
use crate::probe::Engine;
use crate::store::Store;

/// Discoveries running at once in the whole daemon.
pub const MAX_CONCURRENT_DISCOVERIES: usize = 1;

/// A route change starts a discovery at once, but at most this soon after
/// the last discovery a route change started: a flapping route must not turn
/// into a stream of discoveries. (Counted from the last route-started
/// discovery, not from the one at start or on schedule: a route change in
/// the first minute of the daemon is no flap, and its branches must not stay
/// stale for that minute.)
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
    /// Where the branches' rounds are stored, read once per prober for the
    /// paths they last took.
    pub store: Arc<Store>,
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
    // When the last discovery a route change started ran, and whether the
    // next one is started by a route change.
    let mut route_discovered: Option<tokio::time::Instant> = None;
    let mut by_route = false;
    // Until the first discovery, the paths stored rounds last took stand in
    // for the running branches (none yet).
    let mut remembered = {
        let store = Arc::clone(&outputs.store);
        let (id, first_ttl) = (id.clone(), schedule.first_ttl.get());
        let now = unix_nanos(SystemTime::now()) / 1_000_000;
        tokio::task::spawn_blocking(move || self::remembered(&store, &id, first_ttl, now))
            .await
            .unwrap_or_default()
    };
    loop {
        let (trace, began_ms) = {
            let Ok(_turn) = outputs.discoveries.0.acquire().await else {
                return;
            };
            let began_ms = unix_nanos(SystemTime::now()) / 1_000_000;
            let trace = engine.discover_multipath(spec(&schedule, &settings)).await;
            (trace, began_ms)
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
        if by_route {
            route_discovered = Some(discovered);
        }
        let previous: Vec<BranchPath> = if running.is_empty() {
            std::mem::take(&mut remembered)
        } else {
            running.iter().map(|b| b.path.clone()).collect()
        };
        let (layout, flows) = layout(&schedule, &settings, trace, &previous);
        tracing::info!(target = %id, found = layout.found, probed = layout.branches.len(),
            probes = layout.probes_sent, elapsed_ms = layout.elapsed_ms, stop = %layout.stop,
            route_change = by_route, "multipath discovery");
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
        by_route = wait_for_rediscovery(
            &id,
            &settings,
            discovered,
            began_ms,
            route_discovered,
            ROUTE_CHANGE_HOLDOFF,
            &mut route_changes,
        )
        .await;
    }
}

/// Returns when it is time to discover again, and whether a route change
/// made it so: `rediscover` after the last discovery (`discovered`), or a
/// route change of the target's own flow or of one of its branches' kept
/// flows (a `route_changed` event naming the branch, from the branch
/// analysis): at once, but not before `holdoff` ([`ROUTE_CHANGE_HOLDOFF`])
/// has passed since the last discovery a route change started
/// (`route_discovered`). A branch's change first seen before that
/// discovery began (`discovery_began_ms`, Unix ms) is ignored.
async fn wait_for_rediscovery(
    id: &crate::model::TargetId,
    settings: &MultipathSettings,
    discovered: tokio::time::Instant,
    discovery_began_ms: u64,
    route_discovered: Option<tokio::time::Instant>,
    holdoff: Duration,
    route_changes: &mut broadcast::Receiver<TargetEvent>,
) -> bool {
    let mut due = discovered + settings.rediscover;
    let mut by_route = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due) => return by_route,
            event = route_changes.recv() => match event {
                Ok(event) if &event.target == id => {
                    let PathEvent::RouteChanged { at_ms, branch, .. } = event.event else {
                        continue;
                    };
                    // A branch's change first seen before the last discovery
                    // began is in that discovery already (its rounds were
                    // still confirming it meanwhile).
                    if branch.is_some() && at_ms < discovery_began_ms {
                        continue;
                    }
                    let now = tokio::time::Instant::now();
                    let soonest = route_discovered.map_or(now, |at| (at + holdoff).max(now));
                    if soonest < due {
                        due = soonest;
                        by_route = true;
                    }
                    let in_ms = due.saturating_duration_since(now).as_millis() as u64;
                    match branch {
                        Some(branch) => tracing::info!(target = %id, %branch, in_ms,
                            "route of branch {branch} changed: rediscovering"),
                        None => tracing::info!(target = %id, in_ms,
                            "route changed: rediscovering the branches"),
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                // No more events (shutting down): the schedule alone remains.
                Err(broadcast::error::RecvError::Closed) => {
                    tokio::time::sleep_until(due).await;
                    return by_route;
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
    let paths: Vec<Vec<Option<IpAddr>>> = trace
        .branches
        .iter()
        .map(|b| b.branch.path.iter().map(|v| v.address()).collect())
        .collect();
    let indexes = assign_indexes(&paths, previous, settings.max_branches);
    let mut kept: Vec<(BranchPath, crate::probe::Flow)> = Vec::new();
    for ((branch, hops), index) in trace.branches.into_iter().zip(paths).zip(indexes) {
        // Over the cap: the flow is dropped here and goes back to the engine.
        let Some(index) = index else { continue };
        let path = BranchPath {
            index,
            flow_id: branch.flow.flow_id(),
            hops,
            reached_destination: branch.branch.reached_destination,
        };
        kept.push((path, branch.flow));
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

/// The index of each newly found path: a path probed before keeps its old
/// index (so its statistics and series continue), the others take the
/// lowest free ones; `None` beyond `max` branches.
fn assign_indexes(
    paths: &[Vec<Option<IpAddr>>],
    previous: &[BranchPath],
    max: u8,
) -> Vec<Option<BranchIndex>> {
    let mut indexes: Vec<Option<BranchIndex>> = paths
        .iter()
        .map(|hops| previous.iter().find(|p| &p.hops == hops).map(|p| p.index))
        .collect();
    // Two new paths equal to one old one (cannot happen: discovery's
    // branches differ) would share it; keep the first.
    for i in 0..indexes.len() {
        if indexes[..i].contains(&indexes[i]) {
            indexes[i] = None;
        }
    }
    let mut taken: Vec<BranchIndex> = indexes.iter().flatten().copied().collect();
    let kept_before = indexes.clone();
    for (i, index) in indexes.iter_mut().enumerate() {
        if kept_before[i].is_some() {
            continue;
        }
        *index = (0..usize::from(max))
            .filter_map(BranchIndex::at)
            .find(|candidate| !taken.contains(candidate));
        if let Some(new) = *index {
            taken.push(new);
        }
    }
    indexes
}

/// How much of a branch's newest stored rounds tells the path it took.
const REMEMBER_MS: u64 = 60_000;

/// The path each of `target`'s stored branches took in its newest minute
/// of rounds (up to `now_ms`), from `first_ttl`, as discovery would list
/// it: indexes are given to paths found again by this ([`assign_indexes`]).
/// A store that cannot be read remembers nothing: the branches are numbered
/// afresh.
fn remembered(store: &Store, target: &TargetId, first_ttl: u8, now_ms: u64) -> Vec<BranchPath> {
    store
        .branches_of(target)
        .into_iter()
        .filter_map(|index| {
            let series = target.branch_series(index);
            let last = store.last_round(&series).ok()??.started_at_ms.min(now_ms);
            let rounds = store
                .rounds(&series, last.saturating_sub(REMEMBER_MS), last + 1)
                .ok()?;
            path_of(index, &rounds, first_ttl)
        })
        .collect()
}

/// The path `rounds` took: its most common destination TTL, and the most
/// common responder at each TTL from `first_ttl` up to it (`None` where none
/// answered); `None` when no round reached the destination.
fn path_of(index: BranchIndex, rounds: &[RoundRecord], first_ttl: u8) -> Option<BranchPath> {
    let destination = most_common(
        rounds
            .iter()
            .filter_map(|r| r.destination_ttl.map(|t| t.get())),
    )?;
    let hops = (first_ttl..=destination)
        .map(|ttl| {
            most_common(
                rounds
                    .iter()
                    .flat_map(|r| r.path_samples())
                    .filter(|h| h.ttl.get() == ttl)
                    .filter_map(|h| h.responder()),
            )
        })
        .collect();
    Some(BranchPath {
        index,
        // Not a flow of this process: only the path is compared.
        flow_id: 0,
        hops,
        reached_destination: true,
    })
}

/// The value seen most often (the smallest of a tie), `None` for none.
fn most_common<T: Ord + Copy>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts = std::collections::BTreeMap::new();
    for v in values {
        *counts.entry(v).or_insert(0u32) += 1;
    }
    let most = counts.values().copied().max()?;
    counts.into_iter().find(|(_, n)| *n == most).map(|(v, _)| v)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hops(via: &str) -> Vec<Option<IpAddr>> {
        vec![
            Some("198.18.0.2".parse().unwrap()),
            Some(via.parse().unwrap()),
        ]
    }

    fn index(n: u8) -> Option<BranchIndex> {
        BranchIndex::new(n)
    }

    /// A round over the path `via` (TTL 1 the balancer, 2 `via`, 3 the
    /// destination), whose probes past TTL 1 are lost in every third round.
    fn branch_round(seq: u64, via: &str) -> RoundRecord {
        use crate::model::HopSample;
        let lost = seq.is_multiple_of(3);
        let hop = |ttl: u8, at: &str, lost: bool| {
            HopSample::answered_or_lost(
                ttl,
                at.parse().unwrap(),
                (!lost).then_some(50_000),
                ttl == 3,
            )
        };
        RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq,
            started_at_ms: 1_700_000_000_000 + seq * 100,
            hops: vec![
                hop(1, "198.18.0.2", false),
                hop(2, via, lost),
                hop(3, "198.19.0.1", lost),
            ],
            destination_ttl: (!lost).then(|| crate::probe::Ttl::new(3).unwrap()),
            source: crate::probe::TimestampSource::Ebpf,
        }
    }

    /// After a restart, a path found again gets the index its stored rounds
    /// have, whatever order discovery lists the paths in, so each branch's
    /// stored series goes on with its own path.
    #[test]
    fn stored_branches_keep_their_indexes_when_discovered_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::store::StoreConfig::default()).unwrap();
        let target = TargetId::new("t").unwrap();
        for seq in 0..50 {
            store
                .record_branch_round(index(1).unwrap(), &branch_round(seq, "198.18.1.2"))
                .unwrap();
            store
                .record_branch_round(index(2).unwrap(), &branch_round(seq, "198.18.2.2"))
                .unwrap();
        }
        let now = 1_700_000_000_000 + 60_000;
        store.flush_at(now).unwrap();
        let old = remembered(&store, &target, 1, now);
        let path = |via: &str| {
            vec![
                Some("198.18.0.2".parse().unwrap()),
                Some(via.parse().unwrap()),
                Some("198.19.0.1".parse().unwrap()),
            ]
        };
        assert_eq!(
            old.iter()
                .map(|p| (p.index, p.hops.clone()))
                .collect::<Vec<_>>(),
            vec![
                (index(1).unwrap(), path("198.18.1.2")),
                (index(2).unwrap(), path("198.18.2.2"))
            ],
            "the lost probes do not hide the path"
        );
        // Discovery lists them the other way round, with a new third one.
        let found = [path("198.18.2.2"), path("198.18.3.2"), path("198.18.1.2")];
        assert_eq!(
            assign_indexes(&found, &old, 4),
            vec![index(2), index(3), index(1)]
        );
        // A target without stored branches remembers none.
        assert!(remembered(&store, &TargetId::new("u").unwrap(), 1, now).is_empty());
        assert_eq!(path_of(index(1).unwrap(), &[], 1), None);
    }

    #[test]
    fn branches_are_numbered_in_discovery_order_up_to_the_cap() {
        let paths = [hops("198.18.1.2"), hops("198.18.2.2"), hops("198.18.3.2")];
        assert_eq!(
            assign_indexes(&paths, &[], 2),
            vec![index(1), index(2), None]
        );
    }

    #[test]
    fn a_branch_found_again_keeps_its_index_and_new_ones_take_free_ones() {
        let old = |n: u8, via: &str| BranchPath {
            index: BranchIndex::new(n).unwrap(),
            flow_id: 1,
            hops: hops(via),
            reached_destination: true,
        };
        let previous = [old(1, "198.18.1.2"), old(2, "198.18.2.2")];
        // Found in the other order, and branch 1's path is gone.
        let paths = [hops("198.18.2.2"), hops("198.18.9.2")];
        assert_eq!(
            assign_indexes(&paths, &previous, 4),
            vec![index(2), index(1)]
        );
    }

    /// Settings that rediscover every 900 ms, with a holdoff of 400 ms
    /// after a route change's discovery.
    fn quick_rediscovery() -> (MultipathSettings, Duration) {
        let settings = MultipathSettings {
            max_branches: 4,
            confidence: crate::probe::multipath::Confidence::DEFAULT,
            rediscover: Duration::from_millis(900),
            max_probes: 100,
        };
        (settings, Duration::from_millis(400))
    }

    #[tokio::test]
    async fn a_route_change_rediscovers_at_once_then_once_per_holdoff_and_other_targets_do_not() {
        let id = crate::model::TargetId::new("t").unwrap();
        let (settings, holdoff) = quick_rediscovery();
        let (events, mut rx) = broadcast::channel(8);
        let change = |target: &str| TargetEvent {
            target: crate::model::TargetId::new(target).unwrap(),
            event: PathEvent::RouteChanged {
                at_ms: 0,
                before: Vec::new(),
                after: Vec::new(),
                first_changed_ttl: 2,
                branch: None,
            },
        };
        // Right after the discovery at start (no route change started one
        // yet): a change of this target's flow rediscovers at once.
        let discovered = tokio::time::Instant::now();
        events.send(change("other")).unwrap();
        events.send(change("t")).unwrap();
        let by_route =
            wait_for_rediscovery(&id, &settings, discovered, 0, None, holdoff, &mut rx).await;
        let waited = discovered.elapsed();
        assert!(by_route && waited < holdoff / 2, "{waited:?}");
        // The next change, right after that route-started discovery, waits
        // for the holdoff: a flapping route is one discovery per holdoff.
        let discovered = tokio::time::Instant::now();
        events.send(change("t")).unwrap();
        let by_route = wait_for_rediscovery(
            &id,
            &settings,
            discovered,
            0,
            Some(discovered),
            holdoff,
            &mut rx,
        )
        .await;
        let waited = discovered.elapsed();
        assert!(
            by_route && waited >= holdoff && waited < settings.rediscover,
            "{waited:?}"
        );
        // Another target's change alone: the schedule decides.
        let discovered = tokio::time::Instant::now();
        events.send(change("other")).unwrap();
        let by_route =
            wait_for_rediscovery(&id, &settings, discovered, 0, None, holdoff, &mut rx).await;
        assert!(!by_route && discovered.elapsed() >= settings.rediscover);
    }
    #[tokio::test]
    async fn a_branch_route_change_rediscovers_like_the_targets_own_unless_already_discovered() {
        let id = crate::model::TargetId::new("t").unwrap();
        let (settings, holdoff) = quick_rediscovery();
        let (events, mut rx) = broadcast::channel(8);
        let branch_change = |at_ms: u64| TargetEvent {
            target: id.clone(),
            event: PathEvent::RouteChanged {
                at_ms,
                before: Vec::new(),
                after: Vec::new(),
                first_changed_ttl: 2,
                branch: BranchIndex::new(2),
            },
        };
        // Branch 2's flow moved after the last discovery began: at once.
        let discovered = tokio::time::Instant::now();
        events.send(branch_change(1_000)).unwrap();
        let by_route =
            wait_for_rediscovery(&id, &settings, discovered, 1_000, None, holdoff, &mut rx).await;
        let waited = discovered.elapsed();
        assert!(by_route && waited < holdoff / 2, "{waited:?}");
        // ... and the same holdoff as the target's own flow.
        let discovered = tokio::time::Instant::now();
        events.send(branch_change(2_000)).unwrap();
        let by_route = wait_for_rediscovery(
            &id,
            &settings,
            discovered,
            1_000,
            Some(discovered),
            holdoff,
            &mut rx,
        )
        .await;
        let waited = discovered.elapsed();
        assert!(
            by_route && waited >= holdoff && waited < settings.rediscover,
            "{waited:?}"
        );
        // A change first seen before the last discovery began is in it.
        let discovered = tokio::time::Instant::now();
        events.send(branch_change(500)).unwrap();
        let by_route =
            wait_for_rediscovery(&id, &settings, discovered, 1_000, None, holdoff, &mut rx).await;
        assert!(!by_route && discovered.elapsed() >= settings.rediscover);
    }
}

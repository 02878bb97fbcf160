//! The set of monitored targets: per target, a supervisor task that resolves
//! its host and opens its flow (retrying until it can), then hands the
//! running rounds to the target's slot and ends; and the rules for applying a
//! config reload without touching targets that did not change.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::branches::{BranchOutputs, BranchProber};
use super::live::LiveState;
use super::scheduler::{TargetRunner, TargetSchedule};
use crate::config::{ChangeAction, Config, ConfigDiff, TargetConfig};
use crate::model::{RoundRecord, TargetId};
use crate::probe::Engine;

/// How long to wait before trying again to resolve a host or open a flow.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// What a target is doing, for the live view and the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TargetStatus {
    /// Paused in the config: not probed; its history is kept.
    Paused,
    /// Waiting for its host name to resolve.
    Resolving,
    /// Probing this address.
    Running { address: IpAddr },
    /// The host did not resolve or the flow could not open; retried every 30 s.
    Failed { error: String },
}

/// A target's probing once it runs: its rounds and, for a multipath target,
/// its branch prober. Dropping it stops both.
struct Probing {
    _rounds: TargetRunner,
    _branches: Option<BranchProber>,
}

/// Where a supervisor leaves the probing it started, so that its task can end
/// rather than stay parked to be aborted: a parked task held ~1.2 KiB per
/// target (its state machine, mostly the target's config, twice), and so
/// would its join handle after it ended. The slot holds a cell's only strong
/// reference and its supervisor a weak one: replacing or dropping the cell
/// stops what is in it and tells the supervisor (detached, no handle) to
/// give up when it next wakes; one that finishes after its slot let go drops
/// its probing at once.
type ProbingCell = Arc<OnceLock<Probing>>;

struct Slot {
    config: TargetConfig,
    /// Round numbers continue across pauses and edits.
    next_seq: Arc<AtomicU64>,
    probing: ProbingCell,
}

/// Every configured target and its probing.
pub struct TargetSet {
    engine: Engine,
    records: mpsc::Sender<RoundRecord>,
    /// Where multipath targets' branch probers send their updates.
    branches: BranchOutputs,
    live: Arc<LiveState>,
    slots: HashMap<TargetId, Slot>,
}

impl TargetSet {
    pub fn new(
        engine: Engine,
        records: mpsc::Sender<RoundRecord>,
        branches: BranchOutputs,
        live: Arc<LiveState>,
    ) -> Self {
        TargetSet {
            engine,
            records,
            branches,
            live,
            slots: HashMap::new(),
        }
    }

    /// Starts every target of a freshly loaded config.
    pub fn start_all(&mut self, config: &Config) {
        for target in &config.targets {
            self.add(target.clone());
        }
    }

    /// Applies a reload: only targets the diff names are touched.
    pub fn apply(&mut self, new: &Config, diff: &ConfigDiff) {
        for id in &diff.removed {
            self.slots.remove(id);
            self.live.remove_target(id);
            tracing::info!(target = %id, "target removed");
        }
        for id in &diff.added {
            if let Some(target) = new.target(id) {
                self.add(target.clone());
                tracing::info!(target = %id, "target added");
            }
        }
        for id in diff.paused.iter().chain(&diff.resumed) {
            if let Some(target) = new.target(id) {
                self.restart(target.clone());
                tracing::info!(target = %id, paused = target.paused, "target paused or resumed");
            }
        }
        for change in &diff.changed {
            let Some(target) = new.target(&change.id) else {
                continue;
            };
            match change.action {
                ChangeAction::Describe => {
                    if let Some(slot) = self.slots.get_mut(&change.id) {
                        slot.config = target.clone();
                    }
                    self.live.update_config(target);
                }
                ChangeAction::Reschedule | ChangeAction::ReopenFlow => self.restart(target.clone()),
            }
            tracing::info!(target = %change.id, keys = ?change.keys, "target changed");
        }
    }

    /// Targets being monitored (paused ones included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn add(&mut self, config: TargetConfig) {
        let next_seq = Arc::new(AtomicU64::new(self.live.next_round_seq(&config.id)));
        self.live.add_target(&config);
        let mut slot = Slot {
            config,
            next_seq,
            probing: ProbingCell::default(),
        };
        self.supervise(&mut slot);
        self.slots.insert(slot.config.id.clone(), slot);
    }

    /// Stops a target's probing and starts it again with its new settings,
    /// keeping its round numbering and its history.
    fn restart(&mut self, config: TargetConfig) {
        let Some(mut slot) = self.slots.remove(&config.id) else {
            self.add(config);
            return;
        };
        slot.config = config;
        self.live.update_config(&slot.config);
        self.supervise(&mut slot);
        self.slots.insert(slot.config.id.clone(), slot);
    }

    /// Stops whatever the slot was probing and, unless it is paused, starts a
    /// supervisor with a fresh cell.
    fn supervise(&self, slot: &mut Slot) {
        slot.probing = ProbingCell::default();
        if slot.config.paused {
            self.live.set_status(&slot.config.id, TargetStatus::Paused);
            return;
        }
        let engine = self.engine.clone();
        let config = slot.config.clone();
        let next_seq = Arc::clone(&slot.next_seq);
        let records = self.records.clone();
        let branches = self.branches.clone();
        let live = Arc::clone(&self.live);
        let probing = Arc::downgrade(&slot.probing);
        tokio::spawn(supervise(
            engine, config, next_seq, records, branches, live, probing,
        ));
    }
}

/// Resolves the host and opens the flow, retrying failures, then leaves the
/// running rounds in `probing` and returns. Returns without them as soon as
/// it sees that the slot let go of `probing`.
async fn supervise(
    engine: Engine,
    config: TargetConfig,
    next_seq: Arc<AtomicU64>,
    records: mpsc::Sender<RoundRecord>,
    branches: BranchOutputs,
    live: Arc<LiveState>,
    probing: Weak<OnceLock<Probing>>,
) {
    let id = config.id.clone();
    // The target was removed, paused or restarted: checked after every wait.
    let let_go = || probing.strong_count() == 0;
    loop {
        if let_go() {
            return;
        }
        live.set_status(&id, TargetStatus::Resolving);
        let address = match config.ip {
            Some(ip) => Ok(ip),
            None => resolve(&config.host).await,
        };
        if let_go() {
            return;
        }
        let failure = match address {
            Ok(address) => {
                let schedule = TargetSchedule::of(&config, address);
                match TargetRunner::start(
                    &engine,
                    schedule.clone(),
                    Arc::clone(&next_seq),
                    records.clone(),
                ) {
                    Ok(runner) => {
                        let branches = config.multipath.map(|settings| {
                            BranchProber::start(
                                engine.clone(),
                                schedule,
                                settings,
                                branches.clone(),
                            )
                        });
                        let started = Probing {
                            _rounds: runner,
                            _branches: branches,
                        };
                        // A slot that let go of the cell meanwhile leaves
                        // `started` to be dropped here, which stops it.
                        let Some(cell) = probing.upgrade() else {
                            return;
                        };
                        live.set_status(&id, TargetStatus::Running { address });
                        tracing::info!(target = %id, %address, "probing");
                        // Each cell has one supervisor, which sets it once.
                        let _ = cell.set(started);
                        return;
                    }
                    Err(err) => err.to_string(),
                }
            }
            Err(err) => err,
        };
        tracing::warn!(target = %id, host = %config.host, error = %failure, "target not probed; retrying in 30 s");
        live.set_status(&id, TargetStatus::Failed { error: failure });
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

async fn resolve(host: &str) -> Result<IpAddr, String> {
    let mut addrs = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|err| format!("cannot resolve {host:?}: {err}"))?;
    addrs
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| format!("{host:?} has no address"))
}

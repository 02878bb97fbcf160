//! The set of monitored targets: one supervisor task per target that resolves
//! its host, opens its flow and keeps its rounds going, and the rules for
//! applying a config reload without touching targets that did not change.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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

struct Slot {
    config: TargetConfig,
    /// Round numbers continue across pauses and edits.
    next_seq: Arc<AtomicU64>,
    supervisor: Option<JoinHandle<()>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(task) = self.supervisor.take() {
            task.abort();
        }
    }
}

/// Every configured target and its supervisor.
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
            supervisor: None,
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
        if let Some(task) = slot.supervisor.take() {
            task.abort();
        }
        slot.config = config;
        self.live.update_config(&slot.config);
        self.supervise(&mut slot);
        self.slots.insert(slot.config.id.clone(), slot);
    }

    fn supervise(&self, slot: &mut Slot) {
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
        slot.supervisor = Some(tokio::spawn(async move {
            supervise(engine, config, next_seq, records, branches, live).await;
        }));
    }
}

/// Resolves the host, opens the flow and keeps the runner alive; retries
/// failures. Aborting this task drops the runner, which stops its rounds.
async fn supervise(
    engine: Engine,
    config: TargetConfig,
    next_seq: Arc<AtomicU64>,
    records: mpsc::Sender<RoundRecord>,
    branches: BranchOutputs,
    live: Arc<LiveState>,
) {
    let id = config.id.clone();
    loop {
        live.set_status(&id, TargetStatus::Resolving);
        let address = match config.ip {
            Some(ip) => Ok(ip),
            None => resolve(&config.host).await,
        };
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
                        live.set_status(&id, TargetStatus::Running { address });
                        tracing::info!(target = %id, %address, "probing");
                        let branches = config.multipath.map(|settings| {
                            BranchProber::start(
                                engine.clone(),
                                schedule,
                                settings,
                                branches.clone(),
                            )
                        });
                        // Hold the runners until this supervisor is aborted.
                        let _runner = runner;
                        let _branches = branches;
                        std::future::pending::<()>().await;
                        unreachable!("pending never completes");
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

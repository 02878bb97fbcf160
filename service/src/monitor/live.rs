//! The live read model: every target's config, status, running analysis and
//! recent events, updated by the pipeline and read by the web API.
//!
//! Writers hold the lock for one round's update; readers take snapshots, so
//! serving a page never waits on probing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::Serialize;

use super::targets::TargetStatus;
use crate::alerts::TargetInfo;
use crate::analysis::{AnalysisConfig, PathEvent, TargetAnalysis, TargetSnapshot};
use crate::config::TargetConfig;
use crate::model::{BranchUpdate, RoundRecord, TargetId};
use crate::sys;

/// How many recent events the live view keeps per target (older ones are in the store).
const RECENT_EVENTS: usize = 50;

/// A target event with its target, as the live view and the store keep it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetEvent {
    pub target: TargetId,
    #[serde(flatten)]
    pub event: PathEvent,
}

struct TargetLive {
    config: TargetConfig,
    status: TargetStatus,
    analysis: TargetAnalysis,
    recent_events: VecDeque<TargetEvent>,
}

/// What the API serves for one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    pub id: TargetId,
    pub name: String,
    pub host: String,
    pub label: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub protocol: crate::probe::Protocol,
    pub port: u16,
    pub interval_ms: u64,
    pub packet_size: u16,
    /// One probe per round to the destination only; the path is one row.
    pub final_hop_only: bool,
    pub paused: bool,
    pub status: TargetStatus,
    pub analysis: TargetSnapshot,
    pub recent_events: Vec<TargetEvent>,
}

impl TargetView {
    /// What this target's alerts say about it.
    pub fn alert_info(&self) -> TargetInfo<'_> {
        TargetInfo {
            id: &self.id,
            label: self.label.as_deref(),
            host: &self.host,
            address: match &self.status {
                TargetStatus::Running { address } => Some(*address),
                _ => None,
            },
            tags: &self.tags,
        }
    }
}

/// Approximate bytes of every target's live state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveMemory {
    /// The running analyses: windows, since-start histograms, responders, path.
    pub analysis_bytes: u64,
    /// The recent events kept for the API, up to fifty a target.
    pub recent_events_bytes: u64,
}

/// Live state of every target.
pub struct LiveState {
    analysis_config: AnalysisConfig,
    targets: RwLock<BTreeMap<TargetId, TargetLive>>,
}

impl LiveState {
    pub fn new(analysis_config: AnalysisConfig) -> LiveState {
        LiveState {
            analysis_config,
            targets: RwLock::new(BTreeMap::new()),
        }
    }

    /// Adds a target, or refreshes its config if it is already known (its
    /// analysis, and so its live statistics, are kept).
    pub fn add_target(&self, config: &TargetConfig) {
        let mut targets = self.write();
        match targets.get_mut(&config.id) {
            Some(live) => live.config = config.clone(),
            None => {
                targets.insert(
                    config.id.clone(),
                    TargetLive {
                        config: config.clone(),
                        status: TargetStatus::Resolving,
                        analysis: TargetAnalysis::new(config.id.clone(), &self.analysis_config),
                        recent_events: VecDeque::new(),
                    },
                );
            }
        }
    }

    pub fn remove_target(&self, id: &TargetId) {
        self.write().remove(id);
    }

    /// Takes a target's edited config. A switch between probing every hop and
    /// `final_hop_only` starts its live analysis afresh: the two modes' rows
    /// (one per TTL, or the destination's alone) cannot be mixed in one window.
    pub fn update_config(&self, config: &TargetConfig) {
        if let Some(live) = self.write().get_mut(&config.id) {
            if live.config.probe.final_hop_only != config.probe.final_hop_only {
                live.analysis = TargetAnalysis::new(config.id.clone(), &self.analysis_config);
                tracing::info!(target = %config.id, "final_hop_only changed: live statistics start afresh");
            }
            if config.multipath.is_none() && live.config.multipath.is_some() {
                live.analysis.clear_branches();
            }
            live.config = config.clone();
        }
    }

    /// Adds a multipath target's branch layout or branch round, and returns
    /// the route change of a branch it confirmed (kept with the target's
    /// recent events). An update of a target removed meanwhile, or no longer
    /// multipath, is dropped.
    pub fn record_branch(&self, update: &BranchUpdate) -> Option<TargetEvent> {
        let target = match update {
            BranchUpdate::Discovered(layout) => &layout.target,
            BranchUpdate::Round { round, .. } => &round.target,
        };
        let mut targets = self.write();
        let live = targets.get_mut(target)?;
        // An update still queued when multipath was turned off is stale.
        live.config.multipath.as_ref()?;
        let event = TargetEvent {
            target: target.clone(),
            event: live.analysis.record_branch(update)?,
        };
        if live.recent_events.len() == RECENT_EVENTS {
            live.recent_events.pop_front();
        }
        live.recent_events.push_back(event.clone());
        Some(event)
    }

    pub fn set_status(&self, id: &TargetId, status: TargetStatus) {
        if let Some(live) = self.write().get_mut(id) {
            live.status = status;
        }
    }

    /// The number the target's next round should get: rounds continue after
    /// a pause or an edit, so the analysis sees them in order.
    pub fn next_round_seq(&self, id: &TargetId) -> u64 {
        self.read()
            .get(id)
            .and_then(|live| live.analysis.snapshot().last_seq)
            .map_or(0, |seq| seq + 1)
    }

    /// Adds a round to its target's analysis and returns the events it caused.
    /// A round of a target removed meanwhile is ignored: `None`.
    pub fn record_round(&self, round: &RoundRecord) -> Option<Vec<TargetEvent>> {
        let mut targets = self.write();
        let live = targets.get_mut(&round.target)?;
        let events = match live.analysis.record(round) {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(error = %err, "round not added to the live statistics");
                return Some(Vec::new());
            }
        };
        let events: Vec<TargetEvent> = events
            .into_iter()
            .map(|event| TargetEvent {
                target: round.target.clone(),
                event,
            })
            .collect();
        for event in &events {
            if live.recent_events.len() == RECENT_EVENTS {
                live.recent_events.pop_front();
            }
            live.recent_events.push_back(event.clone());
        }
        Some(events)
    }

    /// One target's full view.
    pub fn target(&self, id: &TargetId) -> Option<TargetView> {
        self.read().get(id).map(view)
    }

    /// Every target's full view, in name order.
    pub fn targets(&self) -> Vec<TargetView> {
        self.read().values().map(view).collect()
    }

    /// Approximate bytes the targets' live state holds, by part: what the
    /// daemon's memory metrics break the heap down into.
    pub fn memory(&self) -> LiveMemory {
        let mut memory = LiveMemory::default();
        for live in self.read().values() {
            memory.analysis_bytes += live.analysis.approx_memory_bytes() as u64;
            // The events' own heap (names, addresses) is not counted: a few
            // dozen bytes each, and bounded by the same RECENT_EVENTS.
            memory.recent_events_bytes +=
                (live.recent_events.capacity() * std::mem::size_of::<TargetEvent>()) as u64;
        }
        memory
    }

    pub fn target_ids(&self) -> Vec<TargetId> {
        self.read().keys().cloned().collect()
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<TargetId, TargetLive>> {
        // Updates are single map operations or one analysis step: a panic in
        // one leaves the map usable, so poisoning is ignored.
        sys::read(&self.targets)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<TargetId, TargetLive>> {
        sys::write(&self.targets)
    }
}

fn view(live: &TargetLive) -> TargetView {
    let c = &live.config;
    TargetView {
        id: c.id.clone(),
        name: c.display_name().to_owned(),
        host: c.host.clone(),
        label: c.label.clone(),
        description: c.description.clone(),
        tags: c.tags.clone(),
        protocol: c.probe.protocol,
        port: c.probe.port,
        interval_ms: c.probe.interval.as_millis() as u64,
        packet_size: c.probe.packet_size,
        final_hop_only: c.probe.final_hop_only,
        paused: c.paused,
        status: live.status.clone(),
        analysis: live.analysis.snapshot(),
        recent_events: live.recent_events.iter().cloned().collect(),
    }
}

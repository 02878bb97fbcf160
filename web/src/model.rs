//! The two narrow traits the web layer is built on: [`ReadModel`] for
//! everything it shows and [`Control`] for the writes (pause, resume, add,
//! remove). The service implements both over its monitor and store; tests
//! implement them with fakes.
//!
//! Methods are synchronous: the router calls the ones that read history or
//! change the config on tokio's blocking pool, so an implementation may do
//! disk I/O and take locks.

use std::error::Error;
use std::path::PathBuf;

use tokio::sync::broadcast;

use crate::dto::{
    AlertDto, ComponentHealthDto, ConfigDto, ControlOutcome, EntryError, EventDto, HealthDto,
    HopRef, HopSummaryDto, IncidentDto, NewTarget, PeerDto, PeerHistoryDto, SeriesDto, ServiceInfo,
    Sparkline, TargetDetail, TargetSummary, WebhookDto,
};
use crate::metrics::MetricsSnapshot;
use crate::query::TimeRange;

/// A boxed error from the implementation, kept for the log (never shown to clients).
pub type Source = Box<dyn Error + Send + Sync + 'static>;

/// Which hops a series request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopSelection {
    One(HopRef),
    /// Every TTL of the path, then the destination.
    All,
}

/// One ECMP branch of a multipath target, as `branch=N` names it: its
/// `index` in the target's `branches`, from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BranchRef(u8);

impl BranchRef {
    /// `n` from 1; `None` for 0.
    pub const fn new(n: u8) -> Option<BranchRef> {
        if n == 0 {
            None
        } else {
            Some(BranchRef(n))
        }
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

impl std::fmt::Display for BranchRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whose stored rounds a history request reads: the target's own flow, or
/// the kept flow of one of its ECMP branches (`branch=N`), stored alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowSelection {
    #[default]
    Target,
    Branch(BranchRef),
}

impl FlowSelection {
    pub fn branch(self) -> Option<BranchRef> {
        match self {
            FlowSelection::Target => None,
            FlowSelection::Branch(branch) => Some(branch),
        }
    }
}

/// Everything the UI, the JSON API and /metrics read.
pub trait ReadModel: Send + Sync + 'static {
    fn service(&self) -> ServiceInfo;

    /// Every target, in name order.
    fn targets(&self) -> Vec<TargetSummary>;

    /// One target; `None` when there is no target with this name.
    fn target(&self, id: &str) -> Option<TargetDetail>;

    /// Recent destination samples of every target.
    fn sparklines(&self) -> Vec<Sparkline>;

    /// Stored history of one hop or all hops of `flow` over `range`;
    /// `Ok(None)` for an unknown target. A branch of a target without
    /// multipath is [`ReadError::NotMultipath`], one it neither has nor has
    /// history of [`ReadError::UnknownBranch`]. Points come at the store's
    /// resolution for the span; the router downsamples.
    fn series(
        &self,
        id: &str,
        flow: FlowSelection,
        hops: HopSelection,
        range: TimeRange,
    ) -> Result<Option<Vec<SeriesDto>>, ReadError>;

    /// Per-hop totals of `flow` over `range`; `Ok(None)` for an unknown
    /// target, branch errors as for [`ReadModel::series`].
    fn hop_summary(
        &self,
        id: &str,
        flow: FlowSelection,
        range: TimeRange,
    ) -> Result<Option<HopSummaryDto>, ReadError>;

    /// Stored events of a target in `range`, oldest first; `Ok(None)` for an unknown target.
    fn events(&self, id: &str, range: TimeRange) -> Result<Option<Vec<EventDto>>, ReadError>;

    fn health(&self) -> HealthDto;

    /// The components' states alone (cheaper than [`ReadModel::health`]), for
    /// /healthz. Default: none reported.
    fn components(&self) -> Vec<ComponentHealthDto> {
        Vec::new()
    }

    /// Every `[[remote_write]]` receiver's state, for /healthz and the UI.
    /// Default: none configured.
    fn remote_write(&self) -> Vec<crate::dto::RemoteWriteDto> {
        Vec::new()
    }

    /// Every configured webhook's delivery health, in config order; empty
    /// when none is configured.
    fn webhooks(&self) -> Vec<WebhookDto>;

    /// Everything /metrics exports, at this instant.
    fn metrics(&self) -> MetricsSnapshot;

    /// Called once a scrape's snapshot has been encoded and dropped: at a
    /// thousand targets it was ~10 MiB of small pieces, and a daemon may
    /// hand those pages back to the system rather than keep them resident
    /// until its next housekeeping.
    fn scrape_done(&self) {}

    /// Events as they happen (route changes, alerts), for live updates.
    fn subscribe(&self) -> broadcast::Receiver<EventDto>;

    /// Every alert firing now, targets' and peers', oldest first. By
    /// default gathered from [`ReadModel::targets`] and [`ReadModel::peers`].
    fn alerts(&self) -> Vec<AlertDto> {
        let targets = self.targets().into_iter().flat_map(|t| t.alerts);
        let peers = self.peers().into_iter().flat_map(|p| p.alerts);
        let mut all: Vec<AlertDto> = targets.chain(peers).collect();
        sort_alerts(&mut all);
        all
    }

    /// The incidents (alerts from raise to clear) raised at some moment in
    /// `range`, of `target` (a target's name or `peer:NAME`) when given,
    /// newest first. None by default: a read model without alerts.
    fn incidents(&self, range: TimeRange, target: Option<&str>) -> Vec<IncidentDto> {
        let _ = (range, target);
        Vec::new()
    }

    /// Every `[[peer]]` (STAMP link), in config order. None by default: a read
    /// model without peers.
    fn peers(&self) -> Vec<PeerDto> {
        Vec::new()
    }

    /// One peer; `None` when there is no peer with this name.
    fn peer(&self, name: &str) -> Option<PeerDto> {
        self.peers().into_iter().find(|p| p.name == name)
    }

    /// A configured peer's stored history over `range`; `Ok(None)` for an
    /// unknown peer (and by default: a read model without peers). Points
    /// come at the store's resolution for the span; the router downsamples.
    fn peer_history(
        &self,
        name: &str,
        range: TimeRange,
    ) -> Result<Option<PeerHistoryDto>, ReadError> {
        let _ = (name, range);
        Ok(None)
    }

    /// The running configuration with every secret redacted. By default
    /// not available: a read model without a config file.
    fn config(&self) -> Result<ConfigDto, ConfigReadError> {
        Err(ConfigReadError::Unavailable)
    }
}

/// Why the configuration cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum ConfigReadError {
    /// This server has no configuration file to show (404).
    #[error("this server has no configuration file to show")]
    Unavailable,
    /// The file cannot be shown as the running configuration (409), e.g. it
    /// was edited since the daemon loaded it.
    #[error("{reason}")]
    Conflict { reason: String },
    /// Reading it failed (500; details only in the log).
    #[error("reading the configuration failed: {source}")]
    Failed { source: Source },
}

/// Puts alerts in the order the API lists them: oldest first, then by
/// subject key and rule, so the order is stable between requests.
pub fn sort_alerts(alerts: &mut [AlertDto]) {
    alerts.sort_by(|a, b| (a.since_ms, &a.target, &a.name).cmp(&(b.since_ms, &b.target, &b.name)));
}

/// Why history could not be read. The router answers a request naming a
/// branch the target does not have with 400 or 404 and the reason; the
/// store's failures it logs and answers 500 or 503 without the details.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// `branch=N` for a target without `multipath` (400).
    #[error("target {target:?} is not a multipath target, so it has no branches")]
    NotMultipath { target: String },
    /// `branch=N` for a branch the target neither probes now nor has
    /// history of (404). `known` lists those it has, in index order.
    #[error("target {target:?} has no branch {branch}{}", known_branches(known))]
    UnknownBranch {
        target: String,
        branch: BranchRef,
        known: Vec<BranchRef>,
    },
    /// The history store is reopening after a write error; try again later.
    #[error("the history store is unavailable: {source}")]
    Unavailable { source: Source },
    #[error("reading {what} failed: {source}")]
    Failed { what: &'static str, source: Source },
}

/// "; its branches: 1, 2", or that it has none yet.
fn known_branches(known: &[BranchRef]) -> String {
    if known.is_empty() {
        return " (it has none yet: discovery has not finished)".to_owned();
    }
    let list: Vec<String> = known.iter().map(|b| b.to_string()).collect();
    format!("; its branches: {}", list.join(", "))
}

/// The writes the UI and API may make. Each one is persisted before it is
/// applied, so it survives a restart.
pub trait Control: Send + Sync + 'static {
    fn set_paused(&self, id: &str, paused: bool) -> Result<ControlOutcome, ControlError>;
    fn add_target(&self, target: &NewTarget) -> Result<ControlOutcome, ControlError>;
    fn remove_target(&self, id: &str) -> Result<ControlOutcome, ControlError>;

    /// Adds every target of the list, or none: when any entry is invalid,
    /// nothing changes and [`ControlError::Entries`] names each bad entry.
    /// By default refused (a control that cannot add several at once).
    fn add_targets(&self, targets: &[NewTarget]) -> Result<Vec<ControlOutcome>, ControlError> {
        let _ = targets;
        Err(ControlError::Conflict {
            reason: "this server cannot add a list of targets".to_owned(),
        })
    }
}

/// Why a write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no target named {id:?}")]
    UnknownTarget { id: String },
    #[error("a target named {id:?} already exists")]
    TargetExists { id: String },
    /// A field of the request is invalid (400).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The change cannot be made in the current state (409), e.g. the config
    /// file on disk does not validate.
    #[error("{reason}")]
    Conflict { reason: String },
    /// Entries of a list of targets are invalid (400); nothing was changed.
    #[error("{} of the targets are invalid; nothing was added", errors.len())]
    Entries { errors: Vec<EntryError> },
    /// The daemon is stopping (503).
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// Saving the change failed (500; details only in the log).
    #[error("saving the change to {} failed: {source}", path.display())]
    Persist { path: PathBuf, source: Source },
}

/// Writes turned off: every call is refused. For read-only deployments and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoControl;

impl Control for NoControl {
    fn set_paused(&self, _: &str, _: bool) -> Result<ControlOutcome, ControlError> {
        Err(ControlError::Conflict {
            reason: "this server does not accept changes".to_owned(),
        })
    }

    fn add_target(&self, _: &NewTarget) -> Result<ControlOutcome, ControlError> {
        self.set_paused("", false)
    }

    fn remove_target(&self, _: &str) -> Result<ControlOutcome, ControlError> {
        self.set_paused("", false)
    }
}

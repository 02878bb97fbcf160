//! Component health: how each component that may run degraded (the history
//! store, the alert outbox, the probe engine's kernel programs, the
//! reflector) is running, as `/healthz`,
//! `/readyz` and `/metrics` report it, and the quarantine that moves a broken
//! sled database aside (never deleting it).
//!
//! "Degraded, loud, never dead": a store or outbox that cannot be opened is
//! moved to `<state_dir>/<name>.quarantined-<UTC time>` and a fresh one is
//! created; if even that fails, the component runs without its disk (history
//! disabled, alerts in memory only) and says so at error level and in health.
//! A contended lock (another process owns the files) is never quarantined.
//!
//! It sits below everything that opens a database (the alert outbox, the
//! monitor's store), so each can report its own state without reaching up.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

/// The component names used in health and metrics labels.
pub const STORE: &str = "store";
pub const OUTBOX: &str = "outbox";
pub const PROBE_ENGINE: &str = "probe_engine";
pub const REFLECTOR: &str = "reflector";

/// The marker in a quarantined copy's name; `hopwatch check` lists files
/// carrying it.
pub const QUARANTINE_MARKER: &str = ".quarantined-";

/// How a component is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentMode {
    /// Opened (or bound) normally.
    Ok,
    /// The old files could not be opened and were moved aside; a fresh,
    /// empty one is in use. Degraded: the old history or alerts are not read.
    Fresh,
    /// Not even a fresh one could be opened: the store keeps no history,
    /// the outbox keeps alerts in memory only (lost on restart).
    Disabled,
    /// The reflector could not bind and is retried in the background.
    Retrying,
    /// The probe engine's eBPF programs dropped events lately (a full ring
    /// buffer or in-flight map): probes the network answered count as lost.
    Lossy,
}

/// One component's state, as health and metrics show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentStatus {
    pub component: &'static str,
    pub mode: ComponentMode,
    /// Why it is degraded (the open or bind error), kept while it is.
    pub error: Option<String>,
    /// Copies this process moved aside (full paths).
    pub quarantined: Vec<PathBuf>,
}

impl ComponentStatus {
    pub fn ok(component: &'static str) -> ComponentStatus {
        ComponentStatus {
            component,
            mode: ComponentMode::Ok,
            error: None,
            quarantined: Vec::new(),
        }
    }

    pub fn degraded(&self) -> bool {
        self.mode != ComponentMode::Ok
    }

    /// What is wrong, for people (an alert's summary), while degraded. The
    /// open error names files: it goes to webhooks, which only the operator
    /// configured, but never to the open health endpoints.
    pub fn problem(&self) -> Option<String> {
        let what = match (self.component, self.mode) {
            (_, ComponentMode::Ok) => return None,
            (STORE, ComponentMode::Fresh) => {
                "the history store could not be opened; it was moved aside and a fresh, empty one is in use (the old history is not read)"
            }
            (STORE, _) => "the history store could not be opened at all: no history is kept",
            (OUTBOX, ComponentMode::Fresh) => {
                "the alert outbox could not be opened; it was moved aside and a fresh one is in use (alerts owed before are not sent)"
            }
            (OUTBOX, _) => {
                "the alert outbox could not be opened at all: alerts are kept in memory only and lost on restart"
            }
            (_, ComponentMode::Retrying) => "it could not start and is retried every 30 s",
            (_, ComponentMode::Lossy) => {
                "the kernel programs are dropping events (a full ring buffer or in-flight map): probes the network answered count as lost, so loss figures read high"
            }
            (_, _) => "it runs degraded",
        };
        let mut text = what.to_owned();
        if !self.quarantined.is_empty() {
            let moved: Vec<String> = self
                .quarantined
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            text.push_str(&format!("; moved aside to {}", moved.join(", ")));
        }
        if let Some(error) = &self.error {
            text.push_str(&format!("; error: {error}"));
        }
        Some(text)
    }
}

/// A status shared between the task that changes it (the reflector's
/// retries) and the readers (health and metrics).
pub type SharedStatus = Arc<Mutex<ComponentStatus>>;

/// Why a broken store or outbox could not be moved aside.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("cannot create the quarantine directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list {path} to quarantine its files: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move {from} to {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
}

/// `<dir>/<name>.quarantined-<YYYYMMDDTHHMMSSZ>`, with `-2`, `-3`… appended if
/// a quarantine of the same second exists already.
pub fn quarantine_path(dir: &Path, name: &str, at: SystemTime) -> PathBuf {
    // RFC 3339 without `-` and `:`: sorts by time and needs no quoting.
    let stamp: String = humantime::format_rfc3339_seconds(at)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let base = format!("{name}{QUARANTINE_MARKER}{stamp}");
    let mut path = dir.join(&base);
    let mut n = 2;
    while path.symlink_metadata().is_ok() {
        path = dir.join(format!("{base}-{n}"));
        n += 1;
    }
    path
}

/// Moves the directory `path` aside to `<parent>/<name>.quarantined-<time>`
/// (one rename: same filesystem, so the bytes are kept as they were).
pub fn quarantine_dir(path: &Path) -> Result<PathBuf, QuarantineError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "outbox".into(), |n| n.to_string_lossy());
    let to = quarantine_path(parent, &name, SystemTime::now());
    std::fs::rename(path, &to).map_err(|source| QuarantineError::Rename {
        from: path.to_path_buf(),
        to: to.clone(),
        source,
    })?;
    Ok(to)
}

/// Moves the history store's files out of `state_dir` into
/// `<state_dir>/store.quarantined-<time>/`. The store is the state directory
/// itself, which also holds the outbox and perhaps the raw log: only the
/// store's own files move, so those stay where they are. The rounds' files
/// go with sled's: they name targets by the numbers sled's `targets` tree
/// gave out, which a fresh store gives out again.
/// `is_store_file` says which names in `state_dir` are the store's
/// (`store::is_store_file`).
pub fn quarantine_store(
    state_dir: &Path,
    is_store_file: impl Fn(&str) -> bool,
) -> Result<PathBuf, QuarantineError> {
    let to = quarantine_path(state_dir, STORE, SystemTime::now());
    std::fs::create_dir(&to).map_err(|source| QuarantineError::CreateDir {
        path: to.clone(),
        source,
    })?;
    let list_err = |source| QuarantineError::List {
        path: state_dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(state_dir).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        let name = entry.file_name();
        if !is_store_file(&name.to_string_lossy()) {
            continue;
        }
        let dest = to.join(&name);
        std::fs::rename(entry.path(), &dest).map_err(|source| QuarantineError::Rename {
            from: entry.path(),
            to: dest,
            source,
        })?;
    }
    Ok(to)
}

/// Quarantined copies in `state_dir`, sorted by name (oldest first per
/// component).
pub fn list_quarantined(state_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(state_dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .contains(QUARANTINE_MARKER)
        {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Whether sled failed only because another handle holds its file lock:
/// another process owns the files, which are not broken and must not move.
pub fn is_lock_contention(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e) if e.to_string().contains("could not acquire lock"))
}

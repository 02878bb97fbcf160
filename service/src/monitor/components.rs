//! Opening the history store so that it cannot stop monitoring: a store
//! that cannot be opened is quarantined and replaced, or runs disabled (see
//! [`crate::health`] for the quarantine and the status health reports).
//!
//! The quarantine helpers and statuses are re-exported here, where the CLI
//! and the tests have always found them.

use std::path::Path;
use std::sync::Arc;

pub use crate::health::{
    is_lock_contention, list_quarantined, quarantine_dir, quarantine_path, quarantine_store,
    ComponentMode, ComponentStatus, QuarantineError, SharedStatus, OUTBOX, QUARANTINE_MARKER,
    REFLECTOR, STORE,
};
pub use crate::store::is_store_file;
use crate::store::{Store, StoreConfig, StoreError};

fn store_lock_contention(error: &StoreError) -> bool {
    match error {
        StoreError::Open { source, .. } | StoreError::Sled { source, .. } => {
            is_lock_contention(source)
        }
        _ => false,
    }
}

/// The store and how it opened.
pub struct OpenedStore {
    pub store: Arc<Store>,
    pub status: ComponentStatus,
}

impl OpenedStore {
    /// A store the caller opened normally.
    pub fn ok(store: Arc<Store>) -> OpenedStore {
        OpenedStore {
            store,
            status: ComponentStatus::ok(STORE),
        }
    }
}

/// Opens the history store in `state_dir`; never fails. A store that cannot
/// be opened is quarantined and replaced by a fresh one; if that fails too
/// (read-only or full disk), the store runs disabled: monitoring, the live
/// view and alerts go on, history is not kept.
pub fn open_store(state_dir: &Path, config: StoreConfig) -> OpenedStore {
    let error = match Store::open(state_dir, config.clone()) {
        Ok(store) => return OpenedStore::ok(Arc::new(store)),
        Err(error) => error,
    };
    let mut status = ComponentStatus {
        component: STORE,
        mode: ComponentMode::Disabled,
        error: Some(error.to_string()),
        quarantined: Vec::new(),
    };
    if store_lock_contention(&error) {
        tracing::error!(
            path = %state_dir.display(),
            %error,
            "history store is locked by another process; running without history"
        );
        return disabled_store(state_dir, config, status);
    }
    match quarantine_store(state_dir, is_store_file) {
        Ok(to) => {
            tracing::error!(
                path = %state_dir.display(),
                quarantined = %to.display(),
                %error,
                "history store cannot be opened; moved it aside and starting a fresh one"
            );
            status.quarantined.push(to);
        }
        Err(quarantine) => {
            tracing::error!(
                path = %state_dir.display(),
                %error,
                %quarantine,
                "history store cannot be opened nor moved aside; running without history"
            );
            return disabled_store(state_dir, config, status);
        }
    }
    match Store::open(state_dir, config.clone()) {
        Ok(store) => {
            status.mode = ComponentMode::Fresh;
            OpenedStore {
                store: Arc::new(store),
                status,
            }
        }
        Err(fresh) => {
            tracing::error!(
                path = %state_dir.display(),
                error = %fresh,
                "a fresh history store cannot be opened either; running without history"
            );
            status.error = Some(fresh.to_string());
            disabled_store(state_dir, config, status)
        }
    }
}

fn disabled_store(state_dir: &Path, config: StoreConfig, status: ComponentStatus) -> OpenedStore {
    let reason = status.error.clone().unwrap_or_default();
    OpenedStore {
        store: Arc::new(Store::disabled(state_dir, config, reason)),
        status,
    }
}

/// How often the store's and the outbox's health is handed to the alerts.
pub const ALERT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Flushes that fail in a row before a store that opened fine counts as
/// degraded: one failure may be a moment's full disk that the next flush
/// rides out with its writes still in memory.
pub const STORE_FAILED_FLUSHES: u64 = 2;

/// What is wrong with the history store now, for its `store` alert: how it
/// opened (`status`), else whether its writes keep failing.
pub fn store_problem(status: &ComponentStatus, store: &Store) -> Option<String> {
    if let Some(problem) = status.problem() {
        return Some(problem);
    }
    let health = store.health();
    (health.consecutive_failures >= STORE_FAILED_FLUSHES).then(|| {
        format!(
            "the history store cannot write: {} flushes failed in a row, {} bytes wait in memory (the oldest rounds are dropped past the cap); last error: {}",
            health.consecutive_failures,
            health.pending_bytes,
            health.last_error.as_deref().unwrap_or("unknown")
        )
    })
}

/// Hands the store's and the outbox's health to the alerts every
/// [`ALERT_EVERY`], which raise (and later clear) their `store` and `outbox`
/// alerts, until aborted.
pub async fn judge(
    store: Arc<Store>,
    store_status: ComponentStatus,
    alerts: Arc<crate::alerts::Alerts>,
) {
    use crate::alerts::AlertKind;
    let mut tick = tokio::time::interval(ALERT_EVERY);
    loop {
        tick.tick().await;
        let problem = store_problem(&store_status, &store);
        alerts
            .on_component(STORE, AlertKind::Store, problem.as_deref())
            .await;
        let outbox = alerts.outbox_status().problem();
        alerts
            .on_component(OUTBOX, AlertKind::Outbox, outbox.as_deref())
            .await;
    }
}

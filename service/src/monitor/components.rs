//! Opening the history store so that it cannot stop monitoring: a store
//! that cannot be opened is quarantined and replaced, or runs disabled (see
//! [`crate::health`] for the quarantine and the status health reports).
//!
//! The quarantine helpers and statuses are re-exported here, where the CLI
//! and the tests have always found them.

use std::path::Path;
use std::sync::Arc;

pub use crate::health::{
    is_lock_contention, is_sled_file, list_quarantined, quarantine_dir, quarantine_path,
    quarantine_store, ComponentMode, ComponentStatus, QuarantineError, SharedStatus, OUTBOX,
    QUARANTINE_MARKER, REFLECTOR, STORE,
};
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
    match quarantine_store(state_dir) {
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

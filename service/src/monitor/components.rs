//! Opening the history store so that it cannot stop monitoring: a store
//! that cannot be opened is quarantined and replaced, or runs disabled (see
//! [`crate::health`] for the quarantine and the status health reports).
//!
//! The quarantine helpers and statuses are re-exported here, where the CLI
//! and the tests have always found them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

pub use crate::health::{
    is_lock_contention, list_quarantined, quarantine_dir, quarantine_path, quarantine_store,
    ComponentMode, ComponentStatus, QuarantineError, SharedStatus, OUTBOX, PROBE_ENGINE,
    QUARANTINE_MARKER, REFLECTOR, STORE,
};
use crate::probe::{Engine, KernelLosses, KERNEL_LOSS_CHECK};
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

/// How long the probe engine reads as degraded after its kernel programs
/// last lost an event: long enough for a health check polled every 30 s to
/// see a brief burst, short enough to clear soon after the load eases.
pub const KERNEL_LOSS_HOLD: Duration = Duration::from_secs(60);

/// The probe engine's state for health and metrics: `lossy` for
/// [`KERNEL_LOSS_HOLD`] after its eBPF programs last dropped an event (a
/// full ring buffer or in-flight map), when the loss figures read high.
pub fn engine_status(engine: &Engine, now_ms: u64) -> ComponentStatus {
    kernel_loss_status(engine.last_kernel_losses(), now_ms)
}

/// [`engine_status`] given the kernel programs' last losses (`seen`: when,
/// and what).
fn kernel_loss_status(seen: Option<(u64, KernelLosses)>, now_ms: u64) -> ComponentStatus {
    let mut status = ComponentStatus::ok(PROBE_ENGINE);
    let hold_ms = KERNEL_LOSS_HOLD.as_millis() as u64;
    let recent = seen.filter(|(at_ms, _)| now_ms.saturating_sub(*at_ms) < hold_ms);
    if let Some((at_ms, losses)) = recent {
        status.mode = ComponentMode::Lossy;
        status.error = Some(format!(
            "{} replies (ring buffer full) and {} send stamps (in-flight map full) lost in the {} s before {}; fewer targets or a longer interval",
            losses.replies,
            losses.stamps,
            KERNEL_LOSS_CHECK.as_secs(),
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(at_ms))
        ));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_reads_lossy_for_a_minute_after_its_kernel_programs_lost_events() {
        let ok = ComponentStatus::ok(PROBE_ENGINE);
        assert_eq!(kernel_loss_status(None, 1_000_000), ok);
        let losses = KernelLosses {
            replies: 37,
            stamps: 2,
        };
        let at_ms = 1_700_000_000_000;
        let hold = KERNEL_LOSS_HOLD.as_millis() as u64;
        let lossy = kernel_loss_status(Some((at_ms, losses)), at_ms + hold - 1);
        assert_eq!(lossy.mode, ComponentMode::Lossy);
        assert!(lossy.degraded());
        let error = lossy.error.as_deref().unwrap();
        assert!(
            error.starts_with("37 replies (ring buffer full) and 2 send stamps")
                && error.contains("2023-11-14T22:13:20Z"),
            "{error}"
        );
        assert!(lossy.problem().unwrap().contains("count as lost"));
        assert_eq!(kernel_loss_status(Some((at_ms, losses)), at_ms + hold), ok);
    }
}

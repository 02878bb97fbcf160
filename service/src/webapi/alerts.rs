//! The hook through which the web layer shows alerts: which alerts are firing
//! per target and how many webhook deliveries failed. [`crate::alerts::Alerts`]
//! implements it; [`NoAlerts`] stands in where no alert subsystem runs.

use std::collections::HashMap;

use hopwatch_web::dto::AlertDto;

use crate::alerts::Alerts;

/// What the web layer needs from the alert subsystem.
pub trait AlertSource: Send + Sync + 'static {
    /// The alerts firing now, by target name.
    fn active(&self) -> HashMap<String, Vec<AlertDto>>;

    /// Failed webhook delivery attempts since start; `None` when no webhooks run.
    fn webhook_failures(&self) -> Option<u64>;
}

/// No alert subsystem: nothing fires, no webhook fails.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAlerts;

impl AlertSource for NoAlerts {
    fn active(&self) -> HashMap<String, Vec<AlertDto>> {
        HashMap::new()
    }

    fn webhook_failures(&self) -> Option<u64> {
        None
    }
}

impl AlertSource for Alerts {
    fn active(&self) -> HashMap<String, Vec<AlertDto>> {
        let mut by_target: HashMap<String, Vec<AlertDto>> = HashMap::new();
        for alert in Alerts::active(self) {
            by_target
                .entry(alert.target.to_string())
                .or_default()
                .push(AlertDto {
                    name: alert.kind.as_str().to_owned(),
                    id: alert.alert_id,
                    since_ms: Some(alert.raised_at_ms),
                    summary: alert.summary,
                });
        }
        by_target
    }

    fn webhook_failures(&self) -> Option<u64> {
        Some(self.counters().failed_attempts)
    }
}

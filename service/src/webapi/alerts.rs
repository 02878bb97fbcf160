//! The hook through which the web layer shows alerts: which alerts are firing
//! per target, each webhook's delivery health, and how many deliveries
//! failed. [`crate::alerts::Alerts`] implements it; [`NoAlerts`] stands in
//! where no alert subsystem runs.

use std::collections::HashMap;

use hopwatch_web::dto::{AlertDto, WebhookDto};

use crate::alerts::{Alerts, WebhookStatus};

/// What the web layer needs from the alert subsystem.
pub trait AlertSource: Send + Sync + 'static {
    /// The alerts firing now, by target name.
    fn active(&self) -> HashMap<String, Vec<AlertDto>>;

    /// Failed webhook delivery attempts since start; `None` when no webhooks run.
    fn webhook_failures(&self) -> Option<u64>;

    /// Every webhook's delivery health, in config order.
    fn webhooks(&self) -> Vec<WebhookDto>;
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

    fn webhooks(&self) -> Vec<WebhookDto> {
        Vec::new()
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

    fn webhooks(&self) -> Vec<WebhookDto> {
        self.delivery_status().into_iter().map(webhook).collect()
    }
}

/// A webhook's status in the web crate's terms. The status holds nothing
/// secret already (a redacted URL, errors scrubbed of the URL, no key).
pub fn webhook(status: WebhookStatus) -> WebhookDto {
    WebhookDto {
        name: status.name,
        format: status.format.as_str().to_owned(),
        url: status.url,
        signed: status.signed,
        failing: status.consecutive_failures > 0,
        pending: status.pending,
        delivered: status.delivered,
        resent: status.resent,
        failed_attempts: status.failed_attempts,
        consecutive_failures: status.consecutive_failures,
        last_success_at_ms: status.last_success_ms,
        last_error_at_ms: status.last_error_ms,
        last_error: status.last_error,
        next_retry_at_ms: status.next_retry_ms,
        retrying_targets: status.retrying_targets,
    }
}

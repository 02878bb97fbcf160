//! The alert settings: thresholds from `[alerts]` with each target's and each
//! peer's `alerts` overrides applied, the outbox's bounds, and the
//! `[[webhook]]` receivers with their filters. They are the alerts' own
//! types, kept here with the alerts: the config resolver fills them in from
//! the file (`config::resolve::alerts`), and the alerts read nothing else of
//! the config.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use super::kind::AlertKind;
use super::secret::{Secret, WebhookUrl};
use super::subject::Subject;
use crate::model::TargetId;

/// The defaults of the `[alerts]` keys (docs/configuration.md lists them
/// with the others; `config::defaults` re-exports them).
pub mod defaults {
    use std::time::Duration;

    const DAY: u64 = 24 * 60 * 60;

    /// `[alerts] loss_pct`: the destination losing 5% of the window.
    pub const ALERT_LOSS_PCT: f64 = 5.0;
    /// `[alerts] latency_ms`: off; a sensible latency bound depends on the path.
    pub const ALERT_LATENCY_MS: f64 = 0.0;
    /// `[alerts] latency_stat`
    pub const ALERT_LATENCY_STAT: super::LatencyStat = super::LatencyStat::Avg;
    /// `[alerts] jitter_ms`: off.
    pub const ALERT_JITTER_MS: f64 = 0.0;
    /// `[alerts] mos_below`: off (loss and latency already cover what MOS sums up).
    pub const ALERT_MOS_BELOW: f64 = 0.0;
    /// `[alerts] unreachable_rounds`
    pub const ALERT_UNREACHABLE_ROUNDS: u32 = 10;
    /// `[alerts] route_change`
    pub const ALERT_ROUTE_CHANGE: bool = true;
    /// `[alerts] hop_count_change`
    pub const ALERT_HOP_COUNT_CHANGE: bool = true;
    /// `[alerts] return_path_change`: off (asymmetric routing moves often and
    /// harmlessly on some networks; the event is stored either way).
    pub const ALERT_RETURN_PATH_CHANGE: bool = false;
    /// `[alerts] branch_latency_ms`: the smallest excess the analysis
    /// reports a slow branch at (`analysis::branches::LATENCY_MIN_EXCESS_NS`).
    pub const ALERT_BRANCH_LATENCY_MS: f64 = 5.0;
    /// `[alerts] raise_rounds`
    pub const ALERT_RAISE_ROUNDS: u32 = 3;
    /// `[alerts] clear_rounds`
    pub const ALERT_CLEAR_ROUNDS: u32 = 10;
    /// `[alerts] clear_ratio`
    pub const ALERT_CLEAR_RATIO: f64 = 0.8;
    /// `[alerts] mos_clear_margin`
    pub const ALERT_MOS_CLEAR_MARGIN: f64 = 0.3;

    /// `[alerts] outbox_max_age`: a week, past any outage someone would still
    /// want paged about afterwards.
    pub const ALERT_OUTBOX_MAX_AGE: Duration = Duration::from_secs(7 * DAY);
    /// `[alerts] outbox_max_bytes`: 16 MiB of undelivered events' JSON.
    pub const ALERT_OUTBOX_MAX_BYTES: u64 = 16 << 20;
    /// `[alerts] outbox_memory_events`: events kept in memory while the outbox
    /// cannot be written.
    pub const ALERT_OUTBOX_MEMORY_EVENTS: u32 = 1_000;
}

/// `[alerts]`, the per-target and per-peer overrides and `[[webhook]]`s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertsConfig {
    /// The thresholds of targets and peers without overrides.
    pub rules: AlertRules,
    /// Targets with an `alerts` table: `[alerts]` with their keys applied.
    pub targets: BTreeMap<TargetId, AlertRules>,
    /// Peers with an `alerts` table, by peer name: `[alerts]` with their
    /// keys applied (peers take only loss, latency, jitter and hysteresis keys).
    pub peers: BTreeMap<TargetId, AlertRules>,
    /// In file order; names are unique.
    pub webhooks: Vec<WebhookConfig>,
    /// `[alerts] outbox_*`: how much the outbox keeps.
    pub outbox: OutboxLimits,
}

/// The bounds of the alert outbox (see `crate::alerts::outbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Undelivered events older than this are dropped.
    pub max_age: Duration,
    /// Undelivered events' JSON beyond this is dropped, oldest first.
    pub max_bytes: u64,
    /// Events kept in memory while the outbox cannot be written.
    pub memory_events: u32,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_age: defaults::ALERT_OUTBOX_MAX_AGE,
            max_bytes: defaults::ALERT_OUTBOX_MAX_BYTES,
            memory_events: defaults::ALERT_OUTBOX_MEMORY_EVENTS,
        }
    }
}

impl AlertsConfig {
    /// The thresholds that apply to target `id`.
    pub fn rules_for(&self, id: &TargetId) -> &AlertRules {
        self.targets.get(id).unwrap_or(&self.rules)
    }

    /// The thresholds that apply to peer `name`.
    pub fn rules_for_peer(&self, name: &TargetId) -> &AlertRules {
        self.peers.get(name).unwrap_or(&self.rules)
    }

    /// Whether the thresholds (not the webhooks) differ from `other`'s.
    pub fn rules_differ(&self, other: &AlertsConfig) -> bool {
        self.rules != other.rules || self.targets != other.targets || self.peers != other.peers
    }
}

/// Which latency statistic of the destination's window `latency_ms` is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyStat {
    Avg,
    P50,
    P95,
    P99,
}

impl LatencyStat {
    pub const NAMES: [&'static str; 4] = ["avg", "p50", "p95", "p99"];

    pub fn as_str(self) -> &'static str {
        match self {
            LatencyStat::Avg => "avg",
            LatencyStat::P50 => "p50",
            LatencyStat::P95 => "p95",
            LatencyStat::P99 => "p99",
        }
    }
}

impl FromStr for LatencyStat {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "avg" => LatencyStat::Avg,
            "p50" => LatencyStat::P50,
            "p95" => LatencyStat::P95,
            "p99" => LatencyStat::P99,
            _ => return Err(()),
        })
    }
}

impl fmt::Display for LatencyStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The alert thresholds of one target. A threshold of 0 turns its check off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AlertRules {
    /// Raise when the destination's window loss is at least this (percent).
    pub loss_pct: f64,
    /// Raise when the destination's window `latency_stat` is at least this (ms).
    pub latency_ms: f64,
    pub latency_stat: LatencyStat,
    /// Raise when the destination's window mean jitter is at least this (ms).
    pub jitter_ms: f64,
    /// Raise when a multipath target's branch is slower end to end than its
    /// fastest sibling by at least this (ms) and the analysis finds it slow.
    pub branch_latency_ms: f64,
    /// Raise when the destination's MOS is below this (1 to 4.5).
    pub mos_below: f64,
    /// Raise when a target that has answered before stays silent this many rounds.
    pub unreachable_rounds: u32,
    pub route_change: bool,
    pub hop_count_change: bool,
    /// Raise when the return path changes while the forward path holds.
    pub return_path_change: bool,
    /// Rounds a condition must hold before it raises.
    pub raise_rounds: u32,
    /// Rounds the recovery must hold before a raised alert clears.
    pub clear_rounds: u32,
    /// Loss, latency and jitter clear at or below threshold x this.
    pub clear_ratio: f64,
    /// MOS clears at or above `mos_below` + this.
    pub mos_clear_margin: f64,
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules {
            loss_pct: defaults::ALERT_LOSS_PCT,
            latency_ms: defaults::ALERT_LATENCY_MS,
            latency_stat: defaults::ALERT_LATENCY_STAT,
            jitter_ms: defaults::ALERT_JITTER_MS,
            branch_latency_ms: defaults::ALERT_BRANCH_LATENCY_MS,
            mos_below: defaults::ALERT_MOS_BELOW,
            unreachable_rounds: defaults::ALERT_UNREACHABLE_ROUNDS,
            route_change: defaults::ALERT_ROUTE_CHANGE,
            hop_count_change: defaults::ALERT_HOP_COUNT_CHANGE,
            return_path_change: defaults::ALERT_RETURN_PATH_CHANGE,
            raise_rounds: defaults::ALERT_RAISE_ROUNDS,
            clear_rounds: defaults::ALERT_CLEAR_ROUNDS,
            clear_ratio: defaults::ALERT_CLEAR_RATIO,
            mos_clear_margin: defaults::ALERT_MOS_CLEAR_MARGIN,
        }
    }
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// hopwatch's own JSON event (schema `hopwatch.alert.v1`).
    Json,
    /// A Slack-compatible incoming-webhook message (`{"text": ...}`).
    Slack,
    /// Prometheus Alertmanager's `POST /api/v2/alerts` body.
    Alertmanager,
}

impl WebhookFormat {
    pub const NAMES: [&'static str; 3] = ["json", "slack", "alertmanager"];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
            WebhookFormat::Alertmanager => "alertmanager",
        }
    }
}

impl FromStr for WebhookFormat {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "json" => WebhookFormat::Json,
            "slack" => WebhookFormat::Slack,
            "alertmanager" => WebhookFormat::Alertmanager,
            _ => return Err(()),
        })
    }
}

/// Which alerts a webhook receives. Empty lists accept everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookFilter {
    /// Targets by name and peers as `peer:NAME`; with `tags`, a subject
    /// matching either is accepted.
    pub targets: Vec<Subject>,
    /// Targets and peers having any of these tags.
    pub tags: Vec<String>,
    pub kinds: Vec<AlertKind>,
}

impl WebhookFilter {
    /// Whether an alert of `kind` about `id` (a target or a peer, with
    /// `tags`) goes to this webhook. The service's own alerts (`store`,
    /// `outbox`) concern every target, so only `kinds` filters them.
    pub fn accepts(&self, id: &Subject, tags: &[String], kind: AlertKind) -> bool {
        let by_target = (self.targets.is_empty() && self.tags.is_empty())
            || matches!(id, Subject::Service(_))
            || self.targets.contains(id)
            || tags.iter().any(|t| self.tags.contains(t));
        by_target && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

/// One `[[webhook]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Its identity: its outbox queue and its delivery status are keyed by it.
    pub name: String,
    pub url: WebhookUrl,
    pub format: WebhookFormat,
    /// When set, every request carries `X-Hopwatch-Signature: sha256=<hex>`.
    pub secret: Option<Secret>,
    pub filter: WebhookFilter,
    /// Limit of one delivery attempt, connection included.
    pub timeout: Duration,
    /// First retry delay; each failure doubles it (plus jitter) up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_accept_by_target_or_tag_and_by_kind() {
        let a = Subject::parse("a").unwrap();
        let b = Subject::parse("b").unwrap();
        let wan = vec!["wan".to_owned()];
        let all = WebhookFilter::default();
        assert!(all.accepts(&a, &[], AlertKind::Loss));
        let some = WebhookFilter {
            targets: vec![a.clone()],
            tags: vec!["wan".into()],
            kinds: vec![AlertKind::Unreachable, AlertKind::Loss],
        };
        assert!(some.accepts(&a, &[], AlertKind::Loss));
        assert!(some.accepts(&b, &wan, AlertKind::Unreachable));
        assert!(
            !some.accepts(&b, &[], AlertKind::Loss),
            "b is neither named nor tagged"
        );
        assert!(
            !some.accepts(&a, &[], AlertKind::Latency),
            "latency is not wanted"
        );
        // The service's own alerts pass target and tag filters; kinds still apply.
        let store = Subject::service("store");
        assert!(some.accepts(&store, &[], AlertKind::Unreachable));
        assert!(!some.accepts(&store, &[], AlertKind::Store));
        let stores = WebhookFilter {
            targets: vec![a.clone()],
            kinds: vec![AlertKind::Store],
            ..WebhookFilter::default()
        };
        assert!(stores.accepts(&store, &[], AlertKind::Store));
    }

    #[test]
    fn filters_name_peers_apart_from_targets() {
        let target = Subject::parse("dc1").unwrap();
        let peer = Subject::parse("peer:dc1").unwrap();
        let wan = vec!["wan".to_owned()];
        let peers_only = WebhookFilter {
            targets: vec![peer.clone()],
            ..WebhookFilter::default()
        };
        assert!(peers_only.accepts(&peer, &[], AlertKind::Loss));
        assert!(
            !peers_only.accepts(&target, &[], AlertKind::Loss),
            "naming the peer does not take the target of the same name"
        );
        let by_tag = WebhookFilter {
            tags: vec!["wan".into()],
            kinds: vec![AlertKind::Jitter],
            ..WebhookFilter::default()
        };
        assert!(by_tag.accepts(&peer, &wan, AlertKind::Jitter));
        assert!(!by_tag.accepts(&peer, &wan, AlertKind::Loss));
        assert!(!by_tag.accepts(&peer, &[], AlertKind::Jitter));
    }
}

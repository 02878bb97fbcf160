//! Resolving `[alerts]`, each target's and each peer's `alerts` overrides and
//! the `[[webhook]]`s: every threshold in range, every webhook URL http(s),
//! every filter naming targets (by name), peers (as `peer:NAME`) and alert
//! kinds that exist. Errors carry the line like the rest.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use toml::Spanned;

use super::{at, duration, integer, Ctx};
use crate::alerts::settings::{
    AlertRules, AlertsConfig, LatencyStat, OutboxLimits, WebhookConfig, WebhookFilter,
    WebhookFormat,
};
use crate::alerts::{AlertKind, Secret, Subject, WebhookUrl, PEER_PREFIX};
use crate::config::error::{ConfigError, Problem, Section};
use crate::config::peers::PeerConfig;
use crate::config::raw::{RawAlertRules, RawConfig, RawWebhook};
use crate::config::units::size_in;
use crate::config::validated::TargetConfig;
use crate::config::{defaults, limits};
use crate::model::TargetId;

/// The `name` of the `index`th webhook from an untyped parse, for errors found
/// before the typed decode finished.
pub(super) fn lenient_webhook_name(ctx: &Ctx<'_>, index: usize) -> Option<Box<str>> {
    let table: toml::Table = toml::from_str(ctx.text).ok()?;
    let name = table
        .get("webhook")?
        .as_array()?
        .get(index)?
        .get("name")?
        .as_str()?;
    valid_name(name).then(|| name.into())
}

pub(super) fn resolve(
    ctx: &Ctx<'_>,
    raw: &RawConfig,
    targets: &[TargetConfig],
    peers: &[PeerConfig],
) -> Result<AlertsConfig, ConfigError> {
    let global = rules(
        ctx,
        &Section::Table("alerts"),
        &raw.alerts,
        &AlertRules::default(),
    )?;
    let mut per_target = BTreeMap::new();
    // Targets were resolved in file order, so they pair up with their raw tables.
    for (index, (raw_target, target)) in raw.target.iter().zip(targets).enumerate() {
        if let Some(overrides) = &raw_target.get_ref().alerts {
            let section = Section::Target {
                index,
                name: Some(target.id.to_string()),
            };
            outbox_keys_absent(ctx, &section, overrides.get_ref())?;
            let resolved = rules(ctx, &section, overrides.get_ref(), &global)?;
            per_target.insert(target.id.clone(), resolved);
        }
    }
    let mut per_peer = BTreeMap::new();
    // Peers too were resolved in file order.
    for (index, (raw_peer, peer)) in raw.peer.iter().zip(peers).enumerate() {
        if let Some(overrides) = &raw_peer.get_ref().alerts {
            let section = Section::Peer {
                index,
                name: Some(peer.name.as_str().into()),
            };
            let resolved = rules(ctx, &section, &overrides.get_ref().rules(), &global)?;
            per_peer.insert(peer.name.clone(), resolved);
        }
    }
    let mut webhooks = Vec::with_capacity(raw.webhook.len());
    let mut seen = HashMap::new();
    for (index, hook) in raw.webhook.iter().enumerate() {
        webhooks.push(webhook(ctx, index, hook, targets, peers, &mut seen)?);
    }
    Ok(AlertsConfig {
        rules: global,
        targets: per_target,
        peers: per_peer,
        webhooks,
        outbox: outbox_limits(ctx, &raw.alerts)?,
    })
}

/// `[alerts] outbox_*`.
fn outbox_limits(ctx: &Ctx<'_>, raw: &RawAlertRules) -> Result<OutboxLimits, ConfigError> {
    let section = Section::Table("alerts");
    let max_age = duration(
        ctx,
        &section,
        "outbox_max_age",
        raw.outbox_max_age.as_ref(),
        defaults::ALERT_OUTBOX_MAX_AGE,
        limits::ALERT_OUTBOX_MAX_AGE,
    )?;
    let max_bytes = match &raw.outbox_max_bytes {
        Some(size) => {
            let (min, max) = limits::ALERT_OUTBOX_MAX_BYTES;
            size_in(size.get_ref(), min, max)
                .map_err(|problem| ctx.invalid(&section, "outbox_max_bytes", at(size), problem))?
        }
        None => defaults::ALERT_OUTBOX_MAX_BYTES,
    };
    let memory_events = match &raw.outbox_memory_events {
        Some(v) => integer(
            ctx,
            &section,
            "outbox_memory_events",
            v,
            limits::ALERT_OUTBOX_MEMORY_EVENTS,
        )?,
        None => defaults::ALERT_OUTBOX_MEMORY_EVENTS,
    };
    Ok(OutboxLimits {
        max_age,
        max_bytes,
        memory_events,
    })
}

/// A target's `alerts` table takes thresholds only: the outbox is shared.
fn outbox_keys_absent(
    ctx: &Ctx<'_>,
    section: &Section,
    raw: &RawAlertRules,
) -> Result<(), ConfigError> {
    let written = [
        ("outbox_max_age", raw.outbox_max_age.as_ref().map(at)),
        ("outbox_max_bytes", raw.outbox_max_bytes.as_ref().map(at)),
        (
            "outbox_memory_events",
            raw.outbox_memory_events.as_ref().map(at),
        ),
    ];
    match written
        .into_iter()
        .find_map(|(key, place)| Some((key, place?)))
    {
        Some((key, place)) => {
            Err(ctx.invalid(section, key, place, Problem::OutboxKeyOutsideAlerts))
        }
        None => Ok(()),
    }
}

/// `raw`'s thresholds over `base` (the built-in defaults for `[alerts]`,
/// `[alerts]` for a target or a peer).
fn rules(
    ctx: &Ctx<'_>,
    section: &Section,
    raw: &RawAlertRules,
    base: &AlertRules,
) -> Result<AlertRules, ConfigError> {
    let num = |key, value: &Option<Spanned<f64>>, range, default| match value {
        Some(v) => float(ctx, section, key, v, range),
        None => Ok(default),
    };
    let count = |key, value: &Option<Spanned<i64>>, range, default| match value {
        Some(v) => integer(ctx, section, key, v, range),
        None => Ok(default),
    };
    let mos_below = num(
        "mos_below",
        &raw.mos_below,
        limits::ALERT_MOS_BELOW,
        base.mos_below,
    )?;
    if mos_below > 0.0 && mos_below < 1.0 {
        let v = raw
            .mos_below
            .as_ref()
            .expect("only a written value is below 1");
        let problem = Problem::BelowMinimum {
            value: mos_below.to_string(),
            min: "1 (the lowest score; 0 turns the check off)".to_owned(),
        };
        return Err(ctx.invalid(section, "mos_below", at(v), problem));
    }
    let latency_stat = match &raw.latency_stat {
        Some(v) => LatencyStat::from_str(v.get_ref()).map_err(|()| {
            let problem = Problem::Choice {
                given: v.get_ref().clone(),
                expected: &LatencyStat::NAMES,
            };
            ctx.invalid(section, "latency_stat", at(v), problem)
        })?,
        None => base.latency_stat,
    };
    Ok(AlertRules {
        loss_pct: num(
            "loss_pct",
            &raw.loss_pct,
            limits::ALERT_LOSS_PCT,
            base.loss_pct,
        )?,
        latency_ms: num(
            "latency_ms",
            &raw.latency_ms,
            limits::ALERT_MS,
            base.latency_ms,
        )?,
        latency_stat,
        jitter_ms: num(
            "jitter_ms",
            &raw.jitter_ms,
            limits::ALERT_MS,
            base.jitter_ms,
        )?,
        branch_latency_ms: num(
            "branch_latency_ms",
            &raw.branch_latency_ms,
            limits::ALERT_MS,
            base.branch_latency_ms,
        )?,
        mos_below,
        unreachable_rounds: count(
            "unreachable_rounds",
            &raw.unreachable_rounds,
            limits::ALERT_UNREACHABLE_ROUNDS,
            base.unreachable_rounds,
        )?,
        route_change: raw
            .route_change
            .as_ref()
            .map_or(base.route_change, |v| *v.get_ref()),
        hop_count_change: raw
            .hop_count_change
            .as_ref()
            .map_or(base.hop_count_change, |v| *v.get_ref()),
        return_path_change: raw
            .return_path_change
            .as_ref()
            .map_or(base.return_path_change, |v| *v.get_ref()),
        raise_rounds: count(
            "raise_rounds",
            &raw.raise_rounds,
            limits::ALERT_ROUNDS,
            base.raise_rounds,
        )?,
        clear_rounds: count(
            "clear_rounds",
            &raw.clear_rounds,
            limits::ALERT_ROUNDS,
            base.clear_rounds,
        )?,
        clear_ratio: num(
            "clear_ratio",
            &raw.clear_ratio,
            limits::ALERT_CLEAR_RATIO,
            base.clear_ratio,
        )?,
        mos_clear_margin: num(
            "mos_clear_margin",
            &raw.mos_clear_margin,
            limits::ALERT_MOS_CLEAR_MARGIN,
            base.mos_clear_margin,
        )?,
    })
}

fn float(
    ctx: &Ctx<'_>,
    section: &Section,
    key: &'static str,
    value: &Spanned<f64>,
    (min, max): (f64, f64),
) -> Result<f64, ConfigError> {
    let x = *value.get_ref();
    let problem = if !x.is_finite() {
        Problem::NotFinite
    } else if x < min {
        Problem::BelowMinimum {
            value: x.to_string(),
            min: min.to_string(),
        }
    } else if x > max {
        Problem::AboveMaximum {
            value: x.to_string(),
            max: max.to_string(),
        }
    } else {
        return Ok(x);
    };
    Err(ctx.invalid(section, key, at(value), problem))
}

/// Webhook names key the outbox on disk: the same characters as target names.
fn valid_name(name: &str) -> bool {
    TargetId::new(name).is_ok()
}

fn webhook(
    ctx: &Ctx<'_>,
    index: usize,
    raw: &Spanned<RawWebhook>,
    targets: &[TargetConfig],
    peers: &[PeerConfig],
    seen: &mut HashMap<String, usize>,
) -> Result<WebhookConfig, ConfigError> {
    let header = raw.span().start;
    let hook = raw.get_ref();
    let anonymous = Section::Webhook { index, name: None };
    let Some(name_value) = &hook.name else {
        return Err(ctx.missing(&anonymous, "name", header));
    };
    let name = name_value.get_ref().clone();
    if !valid_name(&name) {
        let problem = Problem::WebhookName { given: name };
        return Err(ctx.invalid(&anonymous, "name", at(name_value), problem));
    }
    let section = Section::Webhook {
        index,
        name: Some(name.as_str().into()),
    };
    let line = ctx.line(name_value.span().start);
    if let Some(&first_line) = seen.get(&name) {
        let problem = Problem::DuplicateWebhook { name, first_line };
        return Err(ctx.invalid(&section, "name", at(name_value), problem));
    }
    seen.insert(name.clone(), line);

    let Some(url_value) = &hook.url else {
        return Err(ctx.missing(&section, "url", header));
    };
    let url = WebhookUrl::parse(url_value.get_ref())
        .map_err(|e| ctx.invalid(&section, "url", at(url_value), Problem::WebhookUrl(e)))?;
    let format = match &hook.format {
        Some(v) => WebhookFormat::from_str(v.get_ref()).map_err(|()| {
            let problem = Problem::Choice {
                given: v.get_ref().clone(),
                expected: &WebhookFormat::NAMES,
            };
            ctx.invalid(&section, "format", at(v), problem)
        })?,
        None => WebhookFormat::Json,
    };
    let secret = match &hook.secret {
        // Taken exactly as written: whitespace may be part of a key.
        Some(v) if v.get_ref().0.is_empty() => {
            return Err(ctx.invalid(&section, "secret", at(v), Problem::Empty))
        }
        Some(v) => Some(Secret::new(v.get_ref().0.as_bytes())),
        None => None,
    };

    let mut filter = WebhookFilter::default();
    if let Some(names) = &hook.targets {
        for name in names.get_ref() {
            let subject = match name.trim().strip_prefix(PEER_PREFIX) {
                Some(peer) => peers
                    .iter()
                    .find(|p| p.name.as_str() == peer)
                    .map(|p| Subject::Peer(p.name.clone()))
                    .ok_or_else(|| Problem::UnknownPeer {
                        name: peer.to_owned(),
                    }),
                None => targets
                    .iter()
                    .find(|t| t.id.as_str() == name.trim())
                    .map(|t| Subject::Target(t.id.clone()))
                    .ok_or_else(|| Problem::UnknownTarget { name: name.clone() }),
            };
            match subject {
                Ok(subject) => filter.targets.push(subject),
                Err(problem) => return Err(ctx.invalid(&section, "targets", at(names), problem)),
            }
        }
    }
    if let Some(tags) = &hook.tags {
        if tags.get_ref().iter().any(|t| t.trim().is_empty()) {
            return Err(ctx.invalid(&section, "tags", at(tags), Problem::Empty));
        }
        filter.tags = tags.get_ref().iter().map(|t| t.trim().to_owned()).collect();
    }
    if let Some(kinds) = &hook.kinds {
        for kind in kinds.get_ref() {
            let kind = AlertKind::from_str(kind)
                .map_err(|e| ctx.invalid(&section, "kinds", at(kinds), Problem::AlertKind(e)))?;
            filter.kinds.push(kind);
        }
    }

    let timeout = duration(
        ctx,
        &section,
        "timeout",
        hook.timeout.as_ref(),
        defaults::WEBHOOK_TIMEOUT,
        limits::WEBHOOK_TIMEOUT,
    )?;
    let retry_initial = duration(
        ctx,
        &section,
        "retry_initial",
        hook.retry_initial.as_ref(),
        defaults::WEBHOOK_RETRY_INITIAL,
        limits::WEBHOOK_RETRY_INITIAL,
    )?;
    let retry_max = duration(
        ctx,
        &section,
        "retry_max",
        hook.retry_max.as_ref(),
        defaults::WEBHOOK_RETRY_MAX,
        limits::WEBHOOK_RETRY_MAX,
    )?;
    if retry_max < retry_initial {
        let (key, place) = match (&hook.retry_max, &hook.retry_initial) {
            (Some(v), _) => ("retry_max", at(v)),
            (None, Some(v)) => ("retry_initial", at(v)),
            (None, None) => unreachable!("the built-in defaults are ordered"),
        };
        let problem = Problem::RetryMaxBelowInitial {
            retry_max: humantime::format_duration(retry_max).to_string(),
            retry_initial: humantime::format_duration(retry_initial).to_string(),
        };
        return Err(ctx.invalid(&section, key, place, problem));
    }
    Ok(WebhookConfig {
        name,
        url,
        format,
        secret,
        filter,
        timeout,
        retry_initial,
        retry_max,
    })
}

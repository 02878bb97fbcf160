//! Resolving `[[remote_write]]` and `[service] vantage`: a unique name, an
//! http(s) URL, one authentication method at most, durations and a rate in
//! range, extra labels that are label names and not hopwatch's own, and a
//! backfill age the raw history can serve.

use std::collections::HashMap;

use toml::Spanned;

use super::{at, duration, integer, nonempty, Ctx};
use crate::alerts::{Secret, WebhookUrl};
use crate::config::error::{ConfigError, Problem, Section};
use crate::config::raw::RawRemoteWrite;
use crate::config::remote::{RemoteAuth, RemoteWriteConfig, SeriesSet};
use crate::config::validated::StorageConfig;
use crate::config::{defaults, limits};
use crate::model::TargetId;

/// Labels hopwatch itself puts on pushed series; an extra label may not take one.
pub const RESERVED_LABELS: [&str; 16] = [
    "vantage",
    "target",
    "ttl",
    "le",
    "state",
    "responder",
    "subject",
    "alert",
    "peer",
    "direction",
    "component",
    "webhook",
    "reason",
    "version",
    "source",
    "remote",
];

/// The host name, the default vantage: what `hostname` prints.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty() && check_vantage(name).is_ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A vantage is a label value: printable, at most 64 characters.
pub(crate) fn check_vantage(name: &str) -> Result<(), Problem> {
    if name.chars().any(char::is_control) {
        return Err(Problem::Unprintable {
            given: name.to_owned(),
        });
    }
    let len = name.chars().count();
    if len > limits::VANTAGE_LEN {
        return Err(Problem::AboveMaximum {
            value: format!("{len} characters"),
            max: format!("{} characters", limits::VANTAGE_LEN),
        });
    }
    Ok(())
}

/// Prometheus' label name syntax, less the `__` prefix it reserves.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

pub(super) fn lenient_name(ctx: &Ctx<'_>, index: usize) -> Option<Box<str>> {
    let table: toml::Table = toml::from_str(ctx.text).ok()?;
    let name = table
        .get("remote_write")?
        .as_array()?
        .get(index)?
        .get("name")?
        .as_str()?;
    TargetId::new(name).ok().map(|id| id.as_str().into())
}

pub(super) fn resolve(
    ctx: &Ctx<'_>,
    raw: &[Spanned<RawRemoteWrite>],
    storage: &StorageConfig,
) -> Result<Vec<RemoteWriteConfig>, ConfigError> {
    let mut seen = HashMap::new();
    raw.iter()
        .enumerate()
        .map(|(index, table)| one(ctx, index, table, storage, &mut seen))
        .collect()
}

fn one(
    ctx: &Ctx<'_>,
    index: usize,
    raw: &Spanned<RawRemoteWrite>,
    storage: &StorageConfig,
    seen: &mut HashMap<String, usize>,
) -> Result<RemoteWriteConfig, ConfigError> {
    let header = raw.span().start;
    let table = raw.get_ref();
    let anonymous = Section::RemoteWrite { index, name: None };
    let name = match &table.name {
        Some(value) => {
            let name = value.get_ref().clone();
            if TargetId::new(&name).is_err() {
                let problem = Problem::RemoteWriteName { given: name };
                return Err(ctx.invalid(&anonymous, "name", at(value), problem));
            }
            let line = ctx.line(value.span().start);
            if let Some(&first_line) = seen.get(&name) {
                let problem = Problem::DuplicateRemoteWrite { name, first_line };
                return Err(ctx.invalid(&anonymous, "name", at(value), problem));
            }
            seen.insert(name.clone(), line);
            name
        }
        None => format!("remote_write_{}", index + 1),
    };
    let section = Section::RemoteWrite {
        index,
        name: table.name.as_ref().map(|_| name.as_str().into()),
    };
    let Some(url_value) = &table.url else {
        return Err(ctx.missing(&section, "url", header));
    };
    let url = WebhookUrl::parse(url_value.get_ref())
        .map_err(|e| ctx.invalid(&section, "url", at(url_value), Problem::WebhookUrl(e)))?;

    let auth = match (&table.username, &table.password, &table.bearer_token) {
        (None, None, None) => RemoteAuth::None,
        (Some(user), Some(password), None) => RemoteAuth::Basic {
            username: nonempty(ctx, &section, "username", user)?,
            password: Secret::new(password.get_ref().0.as_bytes()),
        },
        (None, None, Some(token)) => {
            if token.get_ref().0.trim().is_empty() {
                return Err(ctx.invalid(&section, "bearer_token", at(token), Problem::Empty));
            }
            RemoteAuth::Bearer(Secret::new(token.get_ref().0.trim().as_bytes()))
        }
        (Some(user), None, None) => {
            let problem = Problem::HalfBasicAuth {
                given: "username",
                other: "password",
            };
            return Err(ctx.invalid(&section, "username", at(user), problem));
        }
        (None, Some(password), None) => {
            let problem = Problem::HalfBasicAuth {
                given: "password",
                other: "username",
            };
            return Err(ctx.invalid(&section, "password", at(password), problem));
        }
        (_, _, Some(token)) => {
            return Err(ctx.invalid(&section, "bearer_token", at(token), Problem::TwoAuthMethods))
        }
    };
    let ca_file = table
        .ca_file
        .as_ref()
        .map(|v| nonempty(ctx, &section, "ca_file", v).map(|p| ctx.path_from_config(&p)))
        .transpose()?;
    let interval = duration(
        ctx,
        &section,
        "interval",
        table.interval.as_ref(),
        defaults::REMOTE_WRITE_INTERVAL,
        limits::REMOTE_WRITE_INTERVAL,
    )?;
    let timeout = duration(
        ctx,
        &section,
        "timeout",
        table.timeout.as_ref(),
        defaults::REMOTE_WRITE_TIMEOUT,
        limits::REMOTE_WRITE_TIMEOUT,
    )?;
    let mut labels = Vec::new();
    if let Some(value) = &table.labels {
        let map = value.get_ref();
        if map.len() > limits::REMOTE_WRITE_LABELS {
            let problem = Problem::AboveMaximum {
                value: format!("{} labels", map.len()),
                max: format!("{} labels", limits::REMOTE_WRITE_LABELS),
            };
            return Err(ctx.invalid(&section, "labels", at(value), problem));
        }
        for (key, text) in map {
            let problem = if !is_label_name(key) {
                Some(Problem::LabelName { given: key.clone() })
            } else if RESERVED_LABELS.contains(&key.as_str()) {
                Some(Problem::ReservedLabel { given: key.clone() })
            } else if text.is_empty() {
                Some(Problem::Empty)
            } else if text.chars().any(char::is_control) {
                Some(Problem::Unprintable {
                    given: text.clone(),
                })
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ctx.invalid(&section, "labels", at(value), problem));
            }
            labels.push((key.clone(), text.clone()));
        }
    }
    let series = match &table.series {
        Some(value) => SeriesSet::parse(value.get_ref().trim()).ok_or_else(|| {
            let problem = Problem::Choice {
                given: value.get_ref().clone(),
                expected: &SeriesSet::NAMES,
            };
            ctx.invalid(&section, "series", at(value), problem)
        })?,
        None => SeriesSet::Default,
    };
    let backfill_max_age = duration(
        ctx,
        &section,
        "backfill_max_age",
        table.backfill_max_age.as_ref(),
        defaults::REMOTE_WRITE_BACKFILL_MAX_AGE.min(storage.raw_retention),
        limits::REMOTE_WRITE_BACKFILL_MAX_AGE,
    )?;
    if let Some(value) = &table.backfill_max_age {
        if backfill_max_age > storage.raw_retention {
            let problem = Problem::BackfillBeyondRetention {
                max_age: value.get_ref().trim().to_owned(),
                retention: humantime::format_duration(storage.raw_retention).to_string(),
            };
            return Err(ctx.invalid(&section, "backfill_max_age", at(value), problem));
        }
    }
    let backfill_samples_per_second = match &table.backfill_samples_per_second {
        Some(value) => integer(
            ctx,
            &section,
            "backfill_samples_per_second",
            value,
            limits::REMOTE_WRITE_BACKFILL_RATE,
        )?,
        None => defaults::REMOTE_WRITE_BACKFILL_SAMPLES_PER_SECOND,
    };
    Ok(RemoteWriteConfig {
        name,
        url,
        auth,
        ca_file,
        interval,
        timeout,
        labels,
        series,
        backfill_max_age,
        backfill_samples_per_second,
    })
}

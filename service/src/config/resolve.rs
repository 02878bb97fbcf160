//! Turns the config text into a [`Config`]: decodes it into the raw structs,
//! checks and parses every value, applies `[defaults]` and the built-in defaults
//! to each target, and turns every failure into a [`ConfigError`] with the line.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_path_to_error::Segment;
use toml::Spanned;

use super::error::{line_of, ConfigError, Problem, Section};
use super::raw::{
    keys_of, RawAlertRules, RawConfig, RawEnrichment, RawProbe, RawRawLog, RawService,
    RawStatistics, RawStorage, RawTarget, RawWebhook,
};
use super::units::{duration_in, int_in, size_in};
use super::validated::{
    Config, EnrichmentConfig, ProbeSettings, RawLogConfig, ServiceConfig, StatisticsConfig,
    StorageConfig, TargetConfig,
};
use super::{defaults, limits};
use crate::model::TargetId;
use crate::probe::wire::MAX_PACKET_SIZE;
use crate::probe::{Protocol, SourceSelection, TimestampPreference, Ttl};

mod alerts;
mod peers;
mod remote;
mod web;

/// Parses and validates a whole file; `path` is named in errors and is where
/// relative paths in the file are taken from.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let ctx = Ctx { text, path };
    let deserializer = toml::Deserializer::parse(text).map_err(|err| ctx.syntax(&err))?;
    let raw: RawConfig =
        serde_path_to_error::deserialize(deserializer).map_err(|err| ctx.decode(err))?;
    resolve(&ctx, raw)
}

/// The text being validated and the name it is reported under.
struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    fn invalid(
        &self,
        section: &Section,
        key: &'static str,
        at: At<()>,
        problem: Problem,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: self.line(at.offset),
            section: section.clone(),
            key,
            inherited: at.inherited,
            problem: Box::new(problem),
        }
    }

    fn missing(&self, section: &Section, key: &'static str, offset: usize) -> ConfigError {
        ConfigError::Missing {
            path: self.path.to_owned(),
            line: self.line(offset),
            section: section.clone(),
            key,
        }
    }

    fn syntax(&self, err: &toml::de::Error) -> ConfigError {
        let line = self.line(err.span().map_or(0, |s| s.start));
        ConfigError::Syntax {
            path: self.path.to_owned(),
            line,
            message: err.message().trim_end().to_owned(),
            text: self
                .text
                .lines()
                .nth(line - 1)
                .unwrap_or("")
                .trim()
                .to_owned(),
        }
    }

    /// Maps a decoder error to the table and key it is in. The path says where;
    /// whether the key is unknown is decided against the derive's own field list,
    /// not by reading the decoder's message.
    fn decode(&self, err: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let segments: Vec<Seg> = err
            .path()
            .iter()
            .filter_map(|segment| match segment {
                // `toml::Spanned` decodes through a map with these private keys.
                Segment::Map { key } if key.starts_with("$__serde_spanned_private") => None,
                Segment::Map { key } => Some(Seg::Key(key.clone())),
                Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => Some(Seg::Other),
            })
            .collect();
        let inner = err.into_inner();
        let line = self.line(inner.span().map_or(0, |s| s.start));

        let (section, expected, rest) = match segments.as_slice() {
            [Seg::Key(t), Seg::Index(index), Seg::Key(a), rest @ ..]
                if t == "target" && a == "alerts" && !rest.is_empty() =>
            {
                (
                    Section::Target {
                        index: *index,
                        name: self.lenient_target_name(*index),
                    },
                    keys_of::<RawAlertRules>(),
                    rest,
                )
            }
            [Seg::Key(t), Seg::Index(index), Seg::Key(m), rest @ ..]
                if t == "target" && m == "multipath" && !rest.is_empty() =>
            {
                (
                    Section::Target {
                        index: *index,
                        name: self.lenient_target_name(*index),
                    },
                    keys_of::<super::raw::RawMultipath>(),
                    rest,
                )
            }
            [Seg::Key(p), Seg::Index(index), Seg::Key(a), rest @ ..]
                if p == "peer" && a == "alerts" && !rest.is_empty() =>
            {
                (
                    Section::Peer {
                        index: *index,
                        name: peers::lenient_peer_name(self, *index),
                    },
                    keys_of::<super::raw::RawPeerAlertRules>(),
                    rest,
                )
            }
            [Seg::Key(w), Seg::Index(index), rest @ ..] if w == "webhook" && !rest.is_empty() => (
                Section::Webhook {
                    index: *index,
                    name: alerts::lenient_webhook_name(self, *index),
                },
                keys_of::<RawWebhook>(),
                rest,
            ),
            [Seg::Key(p), Seg::Index(index), rest @ ..] if p == "peer" && !rest.is_empty() => (
                Section::Peer {
                    index: *index,
                    name: peers::lenient_peer_name(self, *index),
                },
                keys_of::<super::raw::RawPeer>(),
                rest,
            ),
            [Seg::Key(r), Seg::Index(index), rest @ ..]
                if r == "remote_write" && !rest.is_empty() =>
            {
                (
                    Section::RemoteWrite {
                        index: *index,
                        name: remote::lenient_name(self, *index),
                    },
                    keys_of::<super::raw::RawRemoteWrite>(),
                    rest,
                )
            }
            [Seg::Key(t), Seg::Index(index), rest @ ..] if t == "target" && !rest.is_empty() => (
                Section::Target {
                    index: *index,
                    name: self.lenient_target_name(*index),
                },
                keys_of::<RawTarget>(),
                rest,
            ),
            [Seg::Key(s), Seg::Key(r), rest @ ..]
                if s == "storage" && r == "raw_log" && !rest.is_empty() =>
            {
                (
                    Section::Table("storage.raw_log"),
                    keys_of::<RawRawLog>(),
                    rest,
                )
            }
            [Seg::Key(table), rest @ ..] if !rest.is_empty() && table_keys(table).is_some() => {
                let (name, keys) = table_keys(table).expect("checked by the guard");
                (Section::Table(name), keys, rest)
            }
            rest => (Section::Root, keys_of::<RawConfig>(), rest),
        };
        let key = match rest.first() {
            Some(Seg::Key(key)) => key.clone(),
            _ => String::new(),
        };
        if !key.is_empty() && !expected.contains(&key.as_str()) {
            return ConfigError::UnknownKey {
                path: self.path.to_owned(),
                line,
                section,
                suggestion: closest(&key, expected),
                key,
                expected,
            };
        }
        ConfigError::WrongType {
            path: self.path.to_owned(),
            line,
            section,
            key,
            message: inner.message().trim_end().to_owned(),
        }
    }

    /// The `name` of the `index`th target from an untyped parse, for naming the
    /// target in an error found before the typed decode finished.
    fn lenient_target_name(&self, index: usize) -> Option<String> {
        let table: toml::Table = toml::from_str(self.text).ok()?;
        let name = table
            .get("target")?
            .as_array()?
            .get(index)?
            .get("name")?
            .as_str()?;
        TargetId::new(name).ok().map(|id| id.to_string())
    }

    /// Relative paths are taken from the config file's directory, so a config
    /// and its state can move together and the daemon's working directory
    /// (`/` under systemd) does not matter.
    fn path_from_config(&self, value: &str) -> PathBuf {
        let value = Path::new(value);
        match self.path.parent() {
            Some(dir) if value.is_relative() => dir.join(value),
            _ => value.to_owned(),
        }
    }
}

/// One step of a decoder error's path.
enum Seg {
    Key(String),
    Index(usize),
    Other,
}

/// The fixed tables and their keys.
fn table_keys(table: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match table {
        "service" => ("service", keys_of::<RawService>()),
        "storage" => ("storage", keys_of::<RawStorage>()),
        "statistics" => ("statistics", keys_of::<RawStatistics>()),
        "enrichment" => ("enrichment", keys_of::<RawEnrichment>()),
        "web" => ("web", keys_of::<super::raw::RawWeb>()),
        "defaults" => ("defaults", keys_of::<RawProbe>()),
        "alerts" => ("alerts", keys_of::<RawAlertRules>()),
        "reflector" => ("reflector", keys_of::<super::raw::RawReflector>()),
        _ => return None,
    })
}

/// The expected key closest to a mistyped one, if it is close enough to be a typo.
fn closest(key: &str, expected: &'static [&'static str]) -> Option<&'static str> {
    expected
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(key, candidate), *candidate))
        .filter(|(distance, _)| *distance <= (key.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// A value and where it was written: the byte offset of the value, and whether a
/// target took it from `[defaults]`.
#[derive(Debug, Clone, Copy)]
struct At<T> {
    value: T,
    offset: usize,
    inherited: bool,
}

impl<T> At<T> {
    fn place(&self) -> At<()> {
        At {
            value: (),
            offset: self.offset,
            inherited: self.inherited,
        }
    }
}

fn at<T>(spanned: &Spanned<T>) -> At<()> {
    At {
        value: (),
        offset: spanned.span().start,
        inherited: false,
    }
}

fn resolve(ctx: &Ctx<'_>, raw: RawConfig) -> Result<Config, ConfigError> {
    let service = service(ctx, &raw.service)?;
    let storage = storage(ctx, &raw.storage)?;
    let statistics = statistics(ctx, &raw.statistics)?;
    let enrichment = enrichment(ctx, &raw.enrichment)?;
    let web = web::resolve(ctx, &raw.web)?;

    let defaults_section = Section::Table("defaults");
    let defaults = layer(ctx, &defaults_section, &raw.defaults)?;
    // The defaults are checked as a whole too, so a config without targets (or
    // whose targets override the mistake) still reports it.
    settings(ctx, &defaults_section, &defaults, Family::Template, 0)?;

    let mut targets = Vec::with_capacity(raw.target.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, target) in raw.target.iter().enumerate() {
        targets.push(resolve_target(ctx, index, target, &defaults, &mut seen)?);
    }
    let peers = peers::resolve(ctx, &raw.peer, &raw.defaults)?;
    // Webhook filters and per-peer thresholds name targets and peers.
    let alerts = alerts::resolve(ctx, &raw, &targets, &peers)?;
    let reflector = raw
        .reflector
        .as_ref()
        .map(|r| peers::reflector(ctx, r))
        .transpose()?;
    let remote_write = remote::resolve(ctx, &raw.remote_write, &storage)?;
    Ok(Config {
        service,
        storage,
        statistics,
        enrichment,
        web,
        targets,
        alerts,
        peers,
        reflector,
        remote_write,
    })
}

fn nonempty(
    ctx: &Ctx<'_>,
    section: &Section,
    key: &'static str,
    value: &Spanned<String>,
) -> Result<String, ConfigError> {
    let text = value.get_ref().trim();
    if text.is_empty() {
        return Err(ctx.invalid(section, key, at(value), Problem::Empty));
    }
    Ok(text.to_owned())
}

/// The label, description and tags of a target or a peer.
struct Descriptive {
    label: Option<String>,
    description: Option<String>,
    tags: Vec<String>,
}

/// Checks a table's `label`, `description` and `tags`: none may be blank.
fn descriptive(
    ctx: &Ctx<'_>,
    section: &Section,
    label: Option<&Spanned<String>>,
    description: Option<&Spanned<String>>,
    tags: Option<&Spanned<Vec<String>>>,
) -> Result<Descriptive, ConfigError> {
    let label = label
        .map(|l| nonempty(ctx, section, "label", l))
        .transpose()?;
    let description = description
        .map(|d| nonempty(ctx, section, "description", d))
        .transpose()?;
    let tags = match tags {
        Some(tags) => {
            if tags.get_ref().iter().any(|tag| tag.trim().is_empty()) {
                return Err(ctx.invalid(section, "tags", at(tags), Problem::Empty));
            }
            tags.get_ref()
                .iter()
                .map(|tag| tag.trim().to_owned())
                .collect()
        }
        None => Vec::new(),
    };
    Ok(Descriptive {
        label,
        description,
        tags,
    })
}

fn duration(
    ctx: &Ctx<'_>,
    section: &Section,
    key: &'static str,
    value: Option<&Spanned<String>>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(value) => duration_in(value.get_ref(), min, max)
            .map_err(|problem| ctx.invalid(section, key, at(value), problem)),
    }
}

fn integer<T>(
    ctx: &Ctx<'_>,
    section: &Section,
    key: &'static str,
    value: &Spanned<i64>,
    (min, max): (T, T),
) -> Result<T, ConfigError>
where
    T: Into<i64> + TryFrom<i64> + Copy,
{
    int_in(*value.get_ref(), min.into(), max.into())
        .map(|v| T::try_from(v).ok().expect("within the bounds of T"))
        .map_err(|problem| ctx.invalid(section, key, at(value), problem))
}

fn service(ctx: &Ctx<'_>, raw: &RawService) -> Result<ServiceConfig, ConfigError> {
    let section = Section::Table("service");
    let state_dir = match &raw.state_dir {
        Some(dir) => ctx.path_from_config(&nonempty(ctx, &section, "state_dir", dir)?),
        None => PathBuf::from(defaults::STATE_DIR),
    };
    let timestamps = match &raw.timestamps {
        Some(value) => TimestampPreference::from_str(value.get_ref().trim())
            .map_err(|e| ctx.invalid(&section, "timestamps", at(value), Problem::Timestamps(e)))?,
        None => TimestampPreference::Auto,
    };
    let max_probes_per_second = match &raw.max_probes_per_second {
        Some(value) => {
            let rate = integer(
                ctx,
                &section,
                "max_probes_per_second",
                value,
                limits::PROBES_PER_SECOND,
            )?;
            Some(NonZeroU32::new(rate).expect("the minimum is 1"))
        }
        None => None,
    };
    let address = |key: &'static str, value: &Spanned<String>, family: &'static str| {
        ctx.invalid(
            &section,
            key,
            at(value),
            Problem::Address {
                given: value.get_ref().clone(),
                family,
            },
        )
    };
    let v4 = match &raw.source_v4 {
        Some(value) => Some(
            Ipv4Addr::from_str(value.get_ref().trim())
                .map_err(|_| address("source_v4", value, "IPv4"))?,
        ),
        None => None,
    };
    let v6 = match &raw.source_v6 {
        Some(value) => Some(
            Ipv6Addr::from_str(value.get_ref().trim())
                .map_err(|_| address("source_v6", value, "IPv6"))?,
        ),
        None => None,
    };
    let interface = match &raw.interface {
        Some(value) => {
            let name = nonempty(ctx, &section, "interface", value)?;
            if name.len() > limits::INTERFACE_NAME_LEN {
                let problem = Problem::InterfaceName {
                    len: name.len(),
                    given: name,
                    max: limits::INTERFACE_NAME_LEN,
                };
                return Err(ctx.invalid(&section, "interface", at(value), problem));
            }
            Some(name)
        }
        None => None,
    };
    let vantage = match &raw.vantage {
        Some(value) => {
            let name = nonempty(ctx, &section, "vantage", value)?;
            remote::check_vantage(&name)
                .map_err(|problem| ctx.invalid(&section, "vantage", at(value), problem))?;
            name
        }
        None => remote::host_name(),
    };
    Ok(ServiceConfig {
        state_dir,
        timestamps,
        max_probes_per_second,
        source: SourceSelection { v4, v6, interface },
        vantage,
    })
}

fn storage(ctx: &Ctx<'_>, raw: &RawStorage) -> Result<StorageConfig, ConfigError> {
    let section = Section::Table("storage");
    let raw_log = match &raw.raw_log {
        Some(log) => Some(raw_log(ctx, log)?),
        None => None,
    };
    Ok(StorageConfig {
        flush_interval: duration(
            ctx,
            &section,
            "flush_interval",
            raw.flush_interval.as_ref(),
            defaults::FLUSH_INTERVAL,
            limits::FLUSH_INTERVAL,
        )?,
        raw_retention: duration(
            ctx,
            &section,
            "raw_retention",
            raw.raw_retention.as_ref(),
            defaults::RAW_RETENTION,
            limits::RAW_RETENTION,
        )?,
        minute_retention: duration(
            ctx,
            &section,
            "minute_retention",
            raw.minute_retention.as_ref(),
            defaults::MINUTE_RETENTION,
            limits::MINUTE_RETENTION,
        )?,
        hour_retention: duration(
            ctx,
            &section,
            "hour_retention",
            raw.hour_retention.as_ref(),
            defaults::HOUR_RETENTION,
            limits::HOUR_RETENTION,
        )?,
        event_retention: duration(
            ctx,
            &section,
            "event_retention",
            raw.event_retention.as_ref(),
            defaults::EVENT_RETENTION,
            limits::EVENT_RETENTION,
        )?,
        raw_log,
    })
}

fn raw_log(ctx: &Ctx<'_>, raw: &Spanned<RawRawLog>) -> Result<RawLogConfig, ConfigError> {
    let section = Section::Table("storage.raw_log");
    let table = raw.get_ref();
    let path = match &table.path {
        Some(path) => ctx.path_from_config(&nonempty(ctx, &section, "path", path)?),
        None => return Err(ctx.missing(&section, "path", raw.span().start)),
    };
    let max_bytes = match &table.max_bytes {
        Some(size) => {
            let (min, max) = limits::RAW_LOG_BYTES;
            size_in(size.get_ref(), min, max)
                .map_err(|problem| ctx.invalid(&section, "max_bytes", at(size), problem))?
        }
        None => defaults::RAW_LOG_BYTES,
    };
    let keep = match &table.keep {
        Some(keep) => integer(ctx, &section, "keep", keep, limits::RAW_LOG_KEEP)?,
        None => defaults::RAW_LOG_KEEP,
    };
    Ok(RawLogConfig {
        path,
        max_bytes,
        keep,
    })
}

fn statistics(ctx: &Ctx<'_>, raw: &RawStatistics) -> Result<StatisticsConfig, ConfigError> {
    let section = Section::Table("statistics");
    let window = match &raw.window {
        Some(window) => integer(ctx, &section, "window", window, limits::WINDOW)?,
        None => defaults::WINDOW,
    };
    Ok(StatisticsConfig { window })
}

fn enrichment(ctx: &Ctx<'_>, raw: &RawEnrichment) -> Result<EnrichmentConfig, ConfigError> {
    let section = Section::Table("enrichment");
    let asn_database = match &raw.asn_database {
        Some(path) => Some(ctx.path_from_config(&nonempty(ctx, &section, "asn_database", path)?)),
        None => None,
    };
    let city_database = match &raw.city_database {
        Some(path) => Some(ctx.path_from_config(&nonempty(ctx, &section, "city_database", path)?)),
        None => None,
    };
    Ok(EnrichmentConfig {
        reverse_dns: raw.reverse_dns.as_ref().is_none_or(|v| *v.get_ref()),
        dns_timeout: duration(
            ctx,
            &section,
            "dns_timeout",
            raw.dns_timeout.as_ref(),
            defaults::DNS_TIMEOUT,
            limits::DNS_TIMEOUT,
        )?,
        asn_database,
        city_database,
    })
}

/// One layer of probe settings (`[defaults]` or one target's overrides), each
/// value checked on its own.
#[derive(Debug, Default, Clone)]
struct Layer {
    protocol: Option<At<Protocol>>,
    port: Option<At<u16>>,
    interval: Option<At<Duration>>,
    timeout: Option<At<Duration>>,
    first_ttl: Option<At<u8>>,
    max_hops: Option<At<u8>>,
    packet_size: Option<At<u16>>,
    paused: Option<At<bool>>,
    final_hop_only: Option<At<bool>>,
}

impl Layer {
    /// This layer's values where it has them, else `defaults`' (marked inherited).
    fn over(self, defaults: &Layer) -> Layer {
        fn pick<T: Copy>(own: Option<At<T>>, inherited: Option<At<T>>) -> Option<At<T>> {
            own.or(inherited.map(|at| At {
                inherited: true,
                ..at
            }))
        }
        Layer {
            protocol: pick(self.protocol, defaults.protocol),
            port: pick(self.port, defaults.port),
            interval: pick(self.interval, defaults.interval),
            timeout: pick(self.timeout, defaults.timeout),
            first_ttl: pick(self.first_ttl, defaults.first_ttl),
            max_hops: pick(self.max_hops, defaults.max_hops),
            packet_size: pick(self.packet_size, defaults.packet_size),
            paused: pick(self.paused, defaults.paused),
            final_hop_only: pick(self.final_hop_only, defaults.final_hop_only),
        }
    }
}

fn layer(ctx: &Ctx<'_>, section: &Section, raw: &RawProbe) -> Result<Layer, ConfigError> {
    fn with<T>(spanned: &Spanned<impl Sized>, value: T) -> At<T> {
        At {
            value,
            offset: spanned.span().start,
            inherited: false,
        }
    }
    let protocol = match &raw.protocol {
        Some(value) => Some(with(
            value,
            Protocol::from_str(value.get_ref().trim())
                .map_err(|e| ctx.invalid(section, "protocol", at(value), Problem::Protocol(e)))?,
        )),
        None => None,
    };
    let durations = |key, value: Option<&Spanned<String>>, (min, max)| -> Result<_, ConfigError> {
        value
            .map(|v| {
                duration_in(v.get_ref(), min, max)
                    .map(|d| with(v, d))
                    .map_err(|problem| ctx.invalid(section, key, at(v), problem))
            })
            .transpose()
    };
    let ints =
        |key, value: Option<&Spanned<i64>>, (min, max): (u16, u16)| -> Result<_, ConfigError> {
            value
                .map(|v| integer(ctx, section, key, v, (min, max)).map(|n| with(v, n)))
                .transpose()
        };
    let ttl = |key, value: Option<&Spanned<i64>>| -> Result<_, ConfigError> {
        value
            .map(|v| integer(ctx, section, key, v, (1u8, u8::MAX)).map(|n| with(v, n)))
            .transpose()
    };
    Ok(Layer {
        protocol,
        port: ints("port", raw.port.as_ref(), (1, u16::MAX))?,
        interval: durations("interval", raw.interval.as_ref(), limits::INTERVAL)?,
        timeout: durations("timeout", raw.timeout.as_ref(), limits::TIMEOUT)?,
        first_ttl: ttl("first_ttl", raw.first_ttl.as_ref())?,
        max_hops: ttl("max_hops", raw.max_hops.as_ref())?,
        packet_size: ints(
            "packet_size",
            raw.packet_size.as_ref(),
            (1, u16::try_from(MAX_PACKET_SIZE).expect("65535 fits")),
        )?,
        paused: raw.paused.as_ref().map(|v| with(v, *v.get_ref())),
        final_hop_only: raw.final_hop_only.as_ref().map(|v| with(v, *v.get_ref())),
    })
}

/// What a target's address family is known to be, for the packet size minimum.
#[derive(Debug, Clone, Copy)]
enum Family {
    V4,
    V6,
    /// A host name: it may resolve to either, so both minimums must hold.
    Either,
    /// `[defaults]` on its own: only the smallest minimum is certain to apply.
    Template,
}

/// Applies the built-in defaults to a merged layer and checks the values that
/// constrain each other. `fallback` is where to point when the culprit is a
/// built-in default (the target's header).
fn settings(
    ctx: &Ctx<'_>,
    section: &Section,
    merged: &Layer,
    family: Family,
    fallback: usize,
) -> Result<(ProbeSettings, bool), ConfigError> {
    let builtin = At {
        value: (),
        offset: fallback,
        inherited: false,
    };
    let protocol = merged.protocol.map_or(defaults::PROTOCOL, |p| p.value);
    let port = match (protocol, merged.port) {
        (Protocol::Icmp, Some(port)) => {
            // A port written next to icmp is a mistake; one inherited from
            // [defaults] by a target that switched to icmp is just unused. In
            // [defaults] a port with the built-in icmp is meant for the targets
            // that pick udp or tcp.
            let explicit_icmp = merged.protocol.is_some_and(|p| !p.inherited);
            let mistaken = match family {
                Family::Template => explicit_icmp,
                _ => !port.inherited,
            };
            if mistaken {
                return Err(ctx.invalid(section, "port", port.place(), Problem::PortWithIcmp));
            }
            0
        }
        (Protocol::Icmp, None) => 0,
        (Protocol::Udp, port) => port.map_or(defaults::UDP_PORT, |p| p.value),
        (Protocol::Tcp, port) => port.map_or(defaults::TCP_PORT, |p| p.value),
    };

    let first_ttl = merged.first_ttl.map_or(defaults::FIRST_TTL, |t| t.value);
    let max_hops = merged.max_hops.map_or(defaults::MAX_HOPS, |t| t.value);
    if first_ttl > max_hops {
        // Point at the one this table wrote, when it wrote one.
        let (key, place) = match (merged.first_ttl, merged.max_hops) {
            (Some(f), _) if !f.inherited => ("first_ttl", f.place()),
            (_, Some(m)) if !m.inherited => ("max_hops", m.place()),
            (Some(f), _) => ("first_ttl", f.place()),
            (_, Some(m)) => ("max_hops", m.place()),
            (None, None) => ("first_ttl", builtin),
        };
        let problem = Problem::FirstTtlAboveMaxHops {
            first_ttl,
            max_hops,
        };
        return Err(ctx.invalid(section, key, place, problem));
    }

    let final_hop_only = final_hop_only(ctx, section, merged, protocol)?;

    let packet_size = merged
        .packet_size
        .map_or(defaults::PACKET_SIZE, |p| p.value);
    let (min, family_name) = match family {
        Family::V4 => (protocol.min_packet_size(false), "IPv4"),
        Family::V6 => (protocol.min_packet_size(true), "IPv6"),
        Family::Either => (
            protocol.min_packet_size(true),
            "IPv6 (the host name may resolve to either)",
        ),
        Family::Template => (protocol.min_packet_size(false), "IPv4"),
    };
    if usize::from(packet_size) < min {
        let place = merged.packet_size.map_or(builtin, |p| p.place());
        let problem = Problem::PacketTooSmall {
            size: packet_size,
            min,
            protocol,
            family: family_name,
        };
        return Err(ctx.invalid(section, "packet_size", place, problem));
    }

    let settings = ProbeSettings {
        protocol,
        port,
        interval: merged.interval.map_or(defaults::INTERVAL, |i| i.value),
        timeout: merged.timeout.map_or(defaults::TIMEOUT, |t| t.value),
        first_ttl: Ttl::new(first_ttl).expect("checked to be at least 1"),
        max_hops: Ttl::new(max_hops).expect("checked to be at least 1"),
        packet_size,
        final_hop_only,
    };
    Ok((settings, merged.paused.is_some_and(|p| p.value)))
}

/// Checks `final_hop_only` against the keys it constrains: only a probe whose
/// answer proves the destination is up (a TCP SYN-ACK, an ICMP echo reply)
/// can be the one probe of a round, and `first_ttl` means nothing when no
/// path is probed. The error points at whichever of the two keys this table
/// wrote, so a target inheriting one from `[defaults]` is told what to change.
fn final_hop_only(
    ctx: &Ctx<'_>,
    section: &Section,
    merged: &Layer,
    protocol: Protocol,
) -> Result<bool, ConfigError> {
    let Some(mode) = merged.final_hop_only.filter(|m| m.value) else {
        return Ok(defaults::FINAL_HOP_ONLY);
    };
    if protocol == Protocol::Udp {
        let (key, place) = match merged.protocol {
            Some(p) if mode.inherited && !p.inherited => ("protocol", p.place()),
            _ => ("final_hop_only", mode.place()),
        };
        let problem = Problem::FinalHopOnlyProtocol { protocol };
        return Err(ctx.invalid(section, key, place, problem));
    }
    if let Some(first) = merged.first_ttl.filter(|f| !f.inherited) {
        let problem = Problem::FirstTtlWithFinalHopOnly;
        return Err(ctx.invalid(section, "first_ttl", first.place(), problem));
    }
    Ok(true)
}

fn resolve_target(
    ctx: &Ctx<'_>,
    index: usize,
    raw: &Spanned<RawTarget>,
    defaults: &Layer,
    seen: &mut HashMap<String, usize>,
) -> Result<TargetConfig, ConfigError> {
    let header = raw.span().start;
    let target = raw.get_ref();
    let anonymous = Section::Target { index, name: None };

    let Some(name) = &target.name else {
        return Err(ctx.missing(&anonymous, "name", header));
    };
    let id = TargetId::new(name.get_ref().clone())
        .map_err(|e| ctx.invalid(&anonymous, "name", at(name), Problem::TargetName(e)))?;
    let section = Section::Target {
        index,
        name: Some(id.to_string()),
    };
    let line = ctx.line(name.span().start);
    if let Some(&first_line) = seen.get(id.as_str()) {
        let problem = Problem::DuplicateName {
            name: id.to_string(),
            first_line,
        };
        return Err(ctx.invalid(&section, "name", at(name), problem));
    }
    seen.insert(id.to_string(), line);

    let Some(host_value) = &target.host else {
        return Err(ctx.missing(&section, "host", header));
    };
    let host = nonempty(ctx, &section, "host", host_value)?;
    let ip = IpAddr::from_str(&host).ok();
    if ip.is_none() && !is_host_name(&host) {
        let problem = Problem::Host { given: host };
        return Err(ctx.invalid(&section, "host", at(host_value), problem));
    }
    let family = match ip {
        Some(IpAddr::V4(_)) => Family::V4,
        Some(IpAddr::V6(_)) => Family::V6,
        None => Family::Either,
    };

    let Descriptive {
        label,
        description,
        tags,
    } = descriptive(
        ctx,
        &section,
        target.label.as_ref(),
        target.description.as_ref(),
        target.tags.as_ref(),
    )?;

    let merged = layer(ctx, &section, &target.probe())?.over(defaults);
    let (probe, paused) = settings(ctx, &section, &merged, family, header)?;
    let multipath = target
        .multipath
        .as_ref()
        .map(|raw| multipath(ctx, &section, raw, &probe))
        .transpose()?;
    Ok(TargetConfig {
        id,
        host,
        ip,
        label,
        description,
        tags,
        probe,
        paused,
        multipath,
    })
}

/// A target's `multipath` table. Branches are paths probed hop by hop, so a
/// `final_hop_only` target (one probe, no path) cannot have them.
fn multipath(
    ctx: &Ctx<'_>,
    section: &Section,
    raw: &Spanned<super::raw::RawMultipath>,
    probe: &super::validated::ProbeSettings,
) -> Result<super::validated::MultipathSettings, ConfigError> {
    use crate::probe::multipath::Confidence;
    if probe.final_hop_only {
        return Err(ctx.invalid(
            section,
            "multipath",
            at(raw),
            Problem::MultipathWithFinalHopOnly,
        ));
    }
    let table = raw.get_ref();
    let max_branches = match &table.branches {
        Some(v) => integer(
            ctx,
            section,
            "multipath.branches",
            v,
            (1u8, defaults::MULTIPATH_MAX_BRANCHES),
        )?,
        None => defaults::MULTIPATH_BRANCHES,
    };
    let confidence = match &table.confidence {
        Some(v) => {
            let percent: u8 = integer(ctx, section, "multipath.confidence", v, (50u8, 99u8))?;
            Confidence::new(percent).expect("50..=99 is a valid confidence")
        }
        None => Confidence::new(defaults::MULTIPATH_CONFIDENCE).expect("the default is valid"),
    };
    let rediscover = duration(
        ctx,
        section,
        "multipath.rediscover",
        table.rediscover.as_ref(),
        defaults::MULTIPATH_REDISCOVER,
        (Duration::from_secs(60), Duration::from_secs(7 * 24 * 3600)),
    )?;
    let max_probes = match &table.max_probes {
        Some(v) => integer(ctx, section, "multipath.max_probes", v, (16u32, 20_000u32))?,
        None => defaults::MULTIPATH_MAX_PROBES,
    };
    Ok(super::validated::MultipathSettings {
        max_branches,
        confidence,
        rediscover,
        max_probes,
    })
}

/// A DNS name as resolvers take it: dot-separated labels of letters, digits,
/// '-' and '_', at most 63 bytes each and 253 in all, and not all-numeric at the
/// end (so a mistyped address such as "198.18.0.300" is not taken for a name).
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let last_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
    !name.is_empty() && name.len() <= 253 && labels_ok && !last_numeric
}

#[cfg(test)]
mod tests {
    use super::is_host_name;

    #[test]
    fn host_names_are_told_from_garbage() {
        assert!(is_host_name("gw.lab.example"));
        assert!(is_host_name("localhost"));
        assert!(is_host_name("a-b_c.example."));
        assert!(!is_host_name("198.18.0.300"));
        assert!(!is_host_name("has space.example"));
        assert!(!is_host_name("[2001:db8::1]"));
        assert!(!is_host_name("a..b"));
        assert!(!is_host_name(&"x".repeat(64)));
    }
}

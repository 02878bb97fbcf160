//! Resolving `[[peer]]`s: a unique name, an IP literal, a mode, and the timing
//! keys with `[defaults]` (`interval`, `timeout`, `paused`) under them. Peer
//! intervals go down to 1 ms; packet sizes must hold a STAMP packet. Also
//! `[reflector]`, the daemon's own STAMP reflector.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::str::FromStr;

use ipnet::IpNet;
use toml::Spanned;

use super::{at, descriptive, integer, Ctx, Descriptive};
use crate::config::error::{ConfigError, Problem, Section};
use crate::config::peers::{PeerConfig, PeerMode, ReflectorSettings};
use crate::config::raw::{RawPeer, RawProbe, RawReflector};
use crate::config::units::duration_in;
use crate::config::{defaults, limits};
use crate::model::TargetId;
use crate::peer::{ClockTrust, RateLimits};

const MODES: &[&str] = &["udp", "tcp"];
const CLOCKS: &[&str] = &["sync", "shared"];

/// The `name` of the `index`th peer from an untyped parse, for errors found
/// before the typed decode finished.
pub(super) fn lenient_peer_name(ctx: &Ctx<'_>, index: usize) -> Option<Box<str>> {
    let table: toml::Table = toml::from_str(ctx.text).ok()?;
    let name = table
        .get("peer")?
        .as_array()?
        .get(index)?
        .get("name")?
        .as_str()?;
    TargetId::new(name).ok().map(|id| id.as_str().into())
}

pub(super) fn resolve(
    ctx: &Ctx<'_>,
    raw: &[Spanned<RawPeer>],
    defaults: &RawProbe,
) -> Result<Vec<PeerConfig>, ConfigError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    raw.iter()
        .enumerate()
        .map(|(index, peer)| resolve_peer(ctx, index, peer, defaults, &mut seen))
        .collect()
}

fn resolve_peer(
    ctx: &Ctx<'_>,
    index: usize,
    raw: &Spanned<RawPeer>,
    defaults: &RawProbe,
    seen: &mut HashMap<String, usize>,
) -> Result<PeerConfig, ConfigError> {
    let header = raw.span().start;
    let peer = raw.get_ref();
    let anonymous = Section::Peer { index, name: None };
    let Some(name_value) = &peer.name else {
        return Err(ctx.missing(&anonymous, "name", header));
    };
    let name = TargetId::new(name_value.get_ref().clone())
        .map_err(|e| ctx.invalid(&anonymous, "name", at(name_value), Problem::TargetName(e)))?;
    let section = Section::Peer {
        index,
        name: Some(name.as_str().into()),
    };
    let line = ctx.line(name_value.span().start);
    if let Some(&first_line) = seen.get(name.as_str()) {
        let problem = Problem::DuplicatePeer {
            name: name.to_string(),
            first_line,
        };
        return Err(ctx.invalid(&section, "name", at(name_value), problem));
    }
    seen.insert(name.to_string(), line);

    let Some(address_value) = &peer.address else {
        return Err(ctx.missing(&section, "address", header));
    };
    let address = IpAddr::from_str(address_value.get_ref().trim()).map_err(|_| {
        let problem = Problem::PeerAddress {
            given: address_value.get_ref().clone(),
        };
        ctx.invalid(&section, "address", at(address_value), problem)
    })?;
    let port = match &peer.port {
        Some(port) => integer(ctx, &section, "port", port, (1u16, u16::MAX))?,
        None => defaults::PEER_PORT,
    };
    let mode = match &peer.mode {
        Some(value) => match value.get_ref().trim() {
            "udp" => PeerMode::Udp,
            "tcp" => PeerMode::Tcp,
            other => {
                let problem = Problem::Choice {
                    given: other.to_owned(),
                    expected: MODES,
                };
                return Err(ctx.invalid(&section, "mode", at(value), problem));
            }
        },
        None => PeerMode::Udp,
    };
    let clock = match &peer.clock {
        Some(value) => match value.get_ref().trim() {
            "sync" => ClockTrust::FromSyncState,
            "shared" => ClockTrust::SharedClock,
            other => {
                let problem = Problem::Choice {
                    given: other.to_owned(),
                    expected: CLOCKS,
                };
                return Err(ctx.invalid(&section, "clock", at(value), problem));
            }
        },
        None => ClockTrust::FromSyncState,
    };

    // Own value first, then [defaults]' (reported against [defaults]' line).
    let timing = |key: &'static str,
                  own: &Option<Spanned<String>>,
                  inherited: &Option<Spanned<String>>,
                  (min, max),
                  default| {
        match own.as_ref().or(inherited.as_ref()) {
            None => Ok(default),
            Some(value) => duration_in(value.get_ref(), min, max).map_err(|problem| {
                let mut place = at(value);
                place.inherited = own.is_none();
                ctx.invalid(&section, key, place, problem)
            }),
        }
    };
    let interval = timing(
        "interval",
        &peer.interval,
        &defaults.interval,
        limits::PEER_INTERVAL,
        defaults::INTERVAL,
    )?;
    let timeout = timing(
        "timeout",
        &peer.timeout,
        &defaults.timeout,
        limits::TIMEOUT,
        defaults::TIMEOUT,
    )?;
    let paused = peer
        .paused
        .as_ref()
        .or(defaults.paused.as_ref())
        .is_some_and(|p| *p.get_ref());

    let min = mode.min_packet_size(address.is_ipv6());
    let packet_size = match &peer.packet_size {
        Some(size) => {
            let size_value = integer(ctx, &section, "packet_size", size, (1u16, u16::MAX))?;
            if usize::from(size_value) < min {
                let problem = Problem::PeerPacketTooSmall {
                    size: size_value,
                    min,
                    mode: mode_name(mode),
                    family: if address.is_ipv6() { "IPv6" } else { "IPv4" },
                };
                return Err(ctx.invalid(&section, "packet_size", at(size), problem));
            }
            size_value
        }
        None => u16::try_from(min).expect("a STAMP packet's minimum fits"),
    };

    let Descriptive {
        label,
        description,
        tags,
    } = descriptive(
        ctx,
        &section,
        peer.label.as_ref(),
        peer.description.as_ref(),
        peer.tags.as_ref(),
    )?;
    Ok(PeerConfig {
        name,
        address,
        port,
        mode,
        label,
        description,
        tags,
        interval,
        timeout,
        packet_size,
        clock,
        paused,
    })
}

fn mode_name(mode: PeerMode) -> &'static str {
    match mode {
        PeerMode::Udp => "udp",
        PeerMode::Tcp => "tcp",
    }
}

/// `[reflector]`: specific listen addresses (port 862 unless given), allowed
/// prefixes, and rate limits.
pub(super) fn reflector(
    ctx: &Ctx<'_>,
    raw: &Spanned<RawReflector>,
) -> Result<ReflectorSettings, ConfigError> {
    let section = Section::Table("reflector");
    let r = raw.get_ref();
    let Some(listen_value) = &r.listen else {
        return Err(ctx.missing(&section, "listen", raw.span().start));
    };
    if listen_value.get_ref().is_empty() {
        return Err(ctx.invalid(&section, "listen", at(listen_value), Problem::Empty));
    }
    let mut listen = Vec::new();
    for given in listen_value.get_ref() {
        let text = given.trim();
        let addr = SocketAddr::from_str(text)
            .or_else(|_| IpAddr::from_str(text).map(|ip| SocketAddr::new(ip, defaults::PEER_PORT)))
            .map_err(|_| {
                let problem = Problem::Address {
                    given: given.clone(),
                    family: "IP or IP:port",
                };
                ctx.invalid(&section, "listen", at(listen_value), problem)
            })?;
        if addr.ip().is_unspecified() {
            let problem = Problem::UnspecifiedListen {
                given: given.clone(),
            };
            return Err(ctx.invalid(&section, "listen", at(listen_value), problem));
        }
        listen.push(addr);
    }
    let allow = match &r.allow {
        Some(value) => value
            .get_ref()
            .iter()
            .map(|given| {
                let text = given.trim();
                IpNet::from_str(text)
                    .or_else(|_| IpAddr::from_str(text).map(IpNet::from))
                    .map_err(|_| {
                        let problem = Problem::Prefix {
                            given: given.clone(),
                        };
                        ctx.invalid(&section, "allow", at(value), problem)
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let defaults = RateLimits::default();
    let pps = |key, value: &Option<Spanned<i64>>, default: NonZeroU32| match value {
        Some(v) => integer(ctx, &section, key, v, (1u32, u32::MAX))
            .map(|n| NonZeroU32::new(n).expect("at least 1")),
        None => Ok(default),
    };
    Ok(ReflectorSettings {
        listen,
        allow,
        per_source_pps: pps("per_source_pps", &r.per_source_pps, defaults.per_source_pps)?,
        global_pps: pps("global_pps", &r.global_pps, defaults.global_pps)?,
        tcp: r.tcp.as_ref().is_none_or(|v| *v.get_ref()),
    })
}

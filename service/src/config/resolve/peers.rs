//! Resolving `[[peer]]`s: a unique name, an IP literal, a mode, and the timing
//! keys with `[defaults]` (`interval`, `timeout`, `paused`) under them. Peer
//! intervals go down to 1 ms; packet sizes must hold a STAMP packet.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;

use toml::Spanned;

use super::{at, integer, nonempty, Ctx};
use crate::config::error::{ConfigError, Problem, Section};
use crate::config::peers::{PeerConfig, PeerMode};
use crate::config::raw::{RawPeer, RawProbe};
use crate::config::units::duration_in;
use crate::config::{defaults, limits};
use crate::model::TargetId;
use crate::peer::ClockTrust;

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

    let label = peer
        .label
        .as_ref()
        .map(|l| nonempty(ctx, &section, "label", l))
        .transpose()?;
    let description = peer
        .description
        .as_ref()
        .map(|d| nonempty(ctx, &section, "description", d))
        .transpose()?;
    let tags = match &peer.tags {
        Some(tags) => {
            if tags.get_ref().iter().any(|tag| tag.trim().is_empty()) {
                return Err(ctx.invalid(&section, "tags", at(tags), Problem::Empty));
            }
            tags.get_ref()
                .iter()
                .map(|tag| tag.trim().to_owned())
                .collect()
        }
        None => Vec::new(),
    };
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

//! Resolving `[web]`: a listen address that parses, tokens long enough to
//! resist guessing and safe to put in an HTTP header, a body limit, deadline
//! and concurrency limits in range, and allowed host names that are names.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use toml::Spanned;

use super::{at, duration, integer, is_host_name, Ctx};
use crate::config::error::{ConfigError, Problem, Section};
use crate::config::raw::RawWeb;
use crate::config::units::size_in;
use crate::config::web::WebConfig;
use crate::config::{defaults, limits};

pub(super) fn resolve(ctx: &Ctx<'_>, raw: &RawWeb) -> Result<WebConfig, ConfigError> {
    let section = Section::Table("web");
    let listen = match &raw.listen {
        Some(value) => SocketAddr::from_str(value.get_ref().trim()).map_err(|_| {
            ctx.invalid(
                &section,
                "listen",
                at(value),
                Problem::Address {
                    given: value.get_ref().clone(),
                    family: "IP:port",
                },
            )
        })?,
        None => defaults::WEB_LISTEN,
    };
    let token = |key: &'static str, value: &Option<Spanned<String>>| {
        value
            .as_ref()
            .map(|v| {
                check_token(v.get_ref())
                    .map(|()| hopwatch_web::Token::new(v.get_ref().clone()))
                    .map_err(|problem| ctx.invalid(&section, key, at(v), problem))
            })
            .transpose()
    };
    let read_token = token("read_token", &raw.read_token)?;
    let write_token = token("write_token", &raw.write_token)?;
    let max_body_bytes = match &raw.max_body_bytes {
        Some(size) => {
            let (min, max) = limits::WEB_MAX_BODY_BYTES;
            size_in(size.get_ref(), min, max)
                .map_err(|problem| ctx.invalid(&section, "max_body_bytes", at(size), problem))?
        }
        None => defaults::WEB_MAX_BODY_BYTES,
    };
    let request_timeout = duration(
        ctx,
        &section,
        "request_timeout",
        raw.request_timeout.as_ref(),
        defaults::WEB_REQUEST_TIMEOUT,
        limits::WEB_REQUEST_TIMEOUT,
    )?;
    let max_concurrent_reads = match &raw.max_concurrent_reads {
        Some(value) => integer(
            ctx,
            &section,
            "max_concurrent_reads",
            value,
            limits::WEB_MAX_CONCURRENT_READS,
        )?,
        None => defaults::WEB_MAX_CONCURRENT_READS,
    };
    let max_live_streams = match &raw.max_live_streams {
        Some(value) => integer(
            ctx,
            &section,
            "max_live_streams",
            value,
            limits::WEB_MAX_LIVE_STREAMS,
        )?,
        None => defaults::WEB_MAX_LIVE_STREAMS,
    };
    let allowed_hosts = match &raw.allowed_hosts {
        Some(names) => allowed_hosts(names.get_ref())
            .map_err(|problem| ctx.invalid(&section, "allowed_hosts", at(names), problem))?,
        None => Vec::new(),
    };
    Ok(WebConfig {
        enabled: raw.enabled.as_ref().is_none_or(|v| *v.get_ref()),
        listen,
        read_token,
        write_token,
        max_body_bytes,
        hop_histograms: raw.hop_histograms.as_ref().is_none_or(|v| *v.get_ref()),
        request_timeout,
        max_concurrent_reads,
        max_live_streams,
        allowed_hosts,
    })
}

/// Host names as a browser sends them, without port: the check compares
/// names, so a port or a URL here would never match and is a mistake.
/// IP addresses are accepted (and always answered anyway).
fn allowed_hosts(names: &[String]) -> Result<Vec<String>, Problem> {
    if names.len() > limits::WEB_ALLOWED_HOSTS {
        return Err(Problem::AboveMaximum {
            value: format!("{} names", names.len()),
            max: format!("{} names", limits::WEB_ALLOWED_HOSTS),
        });
    }
    names
        .iter()
        .map(|name| {
            let trimmed = name.trim();
            let bare = trimmed
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(trimmed);
            if IpAddr::from_str(bare).is_ok() || is_host_name(trimmed) {
                let name = trimmed.strip_suffix('.').unwrap_or(trimmed);
                Ok(name.to_ascii_lowercase())
            } else {
                Err(Problem::Host {
                    given: name.clone(),
                })
            }
        })
        .collect()
}

/// A token is 16 to 256 visible ASCII characters: enough to resist guessing,
/// and safe in an `Authorization` header. The error never repeats the token.
fn check_token(token: &str) -> Result<(), Problem> {
    let (min, max) = limits::WEB_TOKEN_LEN;
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::Token {
            reason: "has a space or a character outside visible ASCII",
        });
    }
    if token.len() < min {
        return Err(Problem::BelowMinimum {
            value: format!("a token of {} characters", token.len()),
            min: format!("{min} characters"),
        });
    }
    if token.len() > max {
        return Err(Problem::AboveMaximum {
            value: format!("a token of {} characters", token.len()),
            max: format!("{max} characters"),
        });
    }
    Ok(())
}

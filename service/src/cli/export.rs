//! `hopwatch export`: a stored series of one target and hop over a time range,
//! as CSV or JSON, read straight from the store.
//!
//! sled allows one process per store, so this reads a stopped daemon's store
//! (or a copy of it); a running daemon serves the same data through its API.

use std::io::Write;
use std::time::SystemTime;

use clap::Args;

use super::{exit, ConfigArg};
use crate::config::{Config, ConfigError};
use crate::model::{BranchIndex, InvalidTargetId, TargetId};
use crate::monitor::store_config;
use crate::probe::clock::unix_nanos;
use crate::store::{
    write_series, ExportError, ExportFormat, ExportMeta, Hop, Resolution, Store, StoreError,
};

#[derive(Debug, Args)]
#[command(mut_arg("config", |a| {
    a.help("The daemon's config file (for the store location and the target's settings)")
}))]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArg,

    /// Target name.
    #[arg(short = 't', long)]
    pub target: String,

    /// An ECMP branch of a multipath target (its `index`, from 1): that
    /// branch's stored history instead of the target's own flow.
    #[arg(long, value_parser = parse_branch)]
    pub branch: Option<BranchIndex>,

    /// Which hop: `destination` or a TTL (1-255).
    #[arg(long, default_value = "destination", value_parser = parse_hop)]
    pub hop: Hop,

    /// Start of the range: an RFC 3339 time, or an age such as `24h` or `30d`.
    #[arg(long, default_value = "24h")]
    pub from: String,

    /// End of the range: an RFC 3339 time, or an age; default now.
    #[arg(long)]
    pub to: Option<String>,

    /// Point spacing: auto, raw, 1m or 1h.
    #[arg(long, default_value = "auto", value_parser = parse_resolution)]
    pub resolution: Resolution,

    /// csv or json.
    #[arg(long, default_value = "csv")]
    pub format: ExportFormat,
}

fn parse_hop(s: &str) -> Result<Hop, String> {
    if s == "destination" || s == "dest" {
        return Ok(Hop::Destination);
    }
    match s.parse::<u8>() {
        Ok(ttl) if ttl > 0 => Ok(Hop::Ttl(ttl)),
        _ => Err(format!(
            "{s:?} is neither `destination` nor a TTL from 1 to 255"
        )),
    }
}

fn parse_branch(s: &str) -> Result<BranchIndex, String> {
    s.parse::<u8>()
        .ok()
        .and_then(BranchIndex::new)
        .ok_or_else(|| format!("{s:?} is not a branch index from 1 to 255"))
}

fn parse_resolution(s: &str) -> Result<Resolution, String> {
    s.parse::<Resolution>().map_err(|err| err.to_string())
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportCliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Target(#[from] InvalidTargetId),
    #[error("--{flag} {value:?} is neither an RFC 3339 time nor an age like 24h: {reason}")]
    Time {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// `--branch N` for a branch the store has no rounds of.
    #[error(
        "--branch {branch}: the store has no rounds of branch {branch} of {target}{}",
        stored_branches(stored)
    )]
    UnknownBranch {
        target: TargetId,
        branch: BranchIndex,
        stored: Vec<BranchIndex>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// "; it has rounds of branches 1, 2", or that it has none.
fn stored_branches(stored: &[BranchIndex]) -> String {
    if stored.is_empty() {
        return " (it has no branch rounds: is the target multipath?)".to_owned();
    }
    let list: Vec<String> = stored.iter().map(|b| b.to_string()).collect();
    format!("; it has rounds of branches {}", list.join(", "))
}

pub fn run(args: ExportArgs) -> i32 {
    match export(&args) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("hopwatch export: {err}");
            match err {
                ExportCliError::Config(_)
                | ExportCliError::Target(_)
                | ExportCliError::Time { .. }
                | ExportCliError::UnknownBranch { .. } => exit::USAGE,
                _ => exit::OTHER,
            }
        }
    }
}

/// Unix milliseconds for a time flag: RFC 3339, or an age before `now`.
fn parse_time(flag: &'static str, value: &str, now: SystemTime) -> Result<u64, ExportCliError> {
    let at = match humantime::parse_rfc3339_weak(value) {
        Ok(time) => time,
        Err(rfc_err) => match humantime::parse_duration(value) {
            Ok(age) => now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH),
            Err(_) => {
                return Err(ExportCliError::Time {
                    flag,
                    value: value.to_owned(),
                    reason: rfc_err.to_string(),
                })
            }
        },
    };
    Ok(unix_nanos(at) / 1_000_000)
}

fn export(args: &ExportArgs) -> Result<(), ExportCliError> {
    let config = Config::load(&args.config.path)?;
    let id = TargetId::new(args.target.clone())?;
    let now = SystemTime::now();
    let from_ms = parse_time("from", &args.from, now)?;
    let to_ms = match &args.to {
        Some(to) => parse_time("to", to, now)?,
        None => unix_nanos(now) / 1_000_000,
    };
    let store = Store::open(&config.service.state_dir, store_config(&config))?;
    let series_id = match args.branch {
        None => id.clone(),
        Some(branch) => {
            let stored = store.branches_of(&id);
            if !stored.contains(&branch) {
                return Err(ExportCliError::UnknownBranch {
                    target: id,
                    branch,
                    stored,
                });
            }
            id.branch_series(branch)
        }
    };
    // A branch's series is written under its target, with a `branch` line.
    let series = store.series(&series_id, args.hop, from_ms, to_ms, args.resolution)?;
    let target = config.target(&id);
    let meta = ExportMeta {
        probe_interval_ms: target.map(|t| t.probe.interval.as_millis() as u64),
        protocol: target.map(|t| t.probe.protocol),
        packet_size: target.map(|t| t.probe.packet_size),
        sample_count: Some(series.total.sent),
        window_ms: target.map(|t| {
            (t.probe.interval.saturating_mul(config.statistics.window)).as_millis() as u64
        }),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    write_series(&series, &meta, args.format, &mut out)?;
    out.flush().ok();
    Ok(())
}

//! Config errors: every one names the file, the line and the key, so an operator
//! can go straight to the mistake.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::model::InvalidTargetId;
use crate::probe::types::UnknownTimestampPreference;
use crate::probe::wire::UnknownProtocol;
use crate::probe::Protocol;

/// The table a key is in, as the operator would name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// Keys outside any table.
    Root,
    /// A `[table]` such as `defaults` or `storage.raw_log`.
    Table(&'static str),
    /// The `index`th `[[target]]` (from 0), with its name when it has a readable one.
    Target { index: usize, name: Option<String> },
    /// The `index`th `[[webhook]]` (from 0), with its name when it has a readable
    /// one (boxed, so `Section`, and every config error, stays as small as before).
    Webhook {
        index: usize,
        name: Option<Box<str>>,
    },
    /// The `index`th `[[peer]]` (from 0), with its name when it has a readable one.
    Peer {
        index: usize,
        name: Option<Box<str>>,
    },
    /// The `index`th `[[remote_write]]` (from 0), with its name when it has one.
    RemoteWrite {
        index: usize,
        name: Option<Box<str>>,
    },
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Root => f.write_str("the top level"),
            Section::Table(name) => write!(f, "[{name}]"),
            Section::Target {
                name: Some(name), ..
            } => write!(f, "target {name:?}"),
            Section::Target { index, name: None } => write!(f, "[[target]] #{}", index + 1),
            Section::Webhook {
                name: Some(name), ..
            } => write!(f, "webhook {name:?}"),
            Section::Webhook { index, name: None } => write!(f, "[[webhook]] #{}", index + 1),
            Section::Peer {
                name: Some(name), ..
            } => write!(f, "peer {name:?}"),
            Section::Peer { index, name: None } => write!(f, "[[peer]] #{}", index + 1),
            Section::RemoteWrite {
                name: Some(name), ..
            } => write!(f, "remote_write {name:?}"),
            Section::RemoteWrite { index, name: None } => {
                write!(f, "[[remote_write]] #{}", index + 1)
            }
        }
    }
}

/// What is wrong with a value that has the right type.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{value} is below the minimum of {min}")]
    BelowMinimum { value: String, min: String },
    #[error("{value} is above the maximum of {max}")]
    AboveMaximum { value: String, max: String },
    #[error("{given:?} is not a duration ({source}); write for example \"100ms\", \"5s\", \"48h\" or \"30d\"")]
    Duration {
        given: String,
        source: humantime::DurationError,
    },
    #[error("{given:?} is not a size ({source}); write a byte count or for example \"512KiB\", \"64MiB\"")]
    Size {
        given: String,
        source: parse_size::Error,
    },
    #[error(transparent)]
    Protocol(UnknownProtocol),
    #[error(transparent)]
    Timestamps(UnknownTimestampPreference),
    #[error("{given:?} is not an {family} address")]
    Address { given: String, family: &'static str },
    #[error("{given:?} is neither an IP address nor a host name")]
    Host { given: String },
    #[error(transparent)]
    TargetName(InvalidTargetId),
    #[error("the name {name:?} is already used by the target on line {first_line}")]
    DuplicateName { name: String, first_line: usize },
    #[error("first_ttl {first_ttl} is above max_hops {max_hops}")]
    FirstTtlAboveMaxHops { first_ttl: u8, max_hops: u8 },
    #[error("{size} bytes is below the minimum of {min} for a {protocol} probe over {family}")]
    PacketTooSmall {
        size: u16,
        min: usize,
        protocol: Protocol,
        family: &'static str,
    },
    #[error("icmp probes have no port; remove it or set protocol to udp or tcp")]
    PortWithIcmp,
    #[error("final_hop_only needs protocol tcp (a handshake to the port) or icmp (an echo); a {protocol} probe cannot tell that the destination answered")]
    FinalHopOnlyProtocol { protocol: Protocol },
    #[error("first_ttl has no meaning with final_hop_only (its one probe leaves with TTL max_hops); remove it")]
    FirstTtlWithFinalHopOnly,
    #[error("multipath needs a target probed hop by hop; remove it or final_hop_only")]
    MultipathWithFinalHopOnly,
    #[error("an interface name has at most {max} characters, {given:?} has {len}")]
    InterfaceName {
        given: String,
        len: usize,
        max: usize,
    },
    #[error("must not be empty")]
    Empty,
    /// A bearer token that is not visible ASCII (the token itself is never shown).
    #[error("the token {reason}; use 16 to 256 visible ASCII characters")]
    Token { reason: &'static str },
    #[error("must be a finite number")]
    NotFinite,
    #[error("{given:?} is not one of {}", expected.join(", "))]
    Choice {
        given: String,
        expected: &'static [&'static str],
    },
    #[error(transparent)]
    AlertKind(crate::alerts::UnknownAlertKind),
    #[error(transparent)]
    WebhookUrl(crate::alerts::WebhookUrlError),
    #[error("invalid webhook name {given:?}: use 1 to 64 characters of letters, digits, '.', '_' and '-'")]
    WebhookName { given: String },
    #[error("the name {name:?} is already used by the webhook on line {first_line}")]
    DuplicateWebhook { name: String, first_line: usize },
    #[error("{given:?} is not an IP address; a peer's address must be an IPv4 or IPv6 literal")]
    PeerAddress { given: String },
    #[error("{given:?} is not an IP prefix such as 198.18.0.0/15 or 2001:db8::/32")]
    Prefix { given: String },
    #[error("{given} is not a specific address: the reflector binds only to addresses peers are meant to reach")]
    UnspecifiedListen { given: String },
    #[error("the name {name:?} is already used by the peer on line {first_line}")]
    DuplicatePeer { name: String, first_line: usize },
    #[error("{size} bytes is below the minimum of {min} for a STAMP {mode} probe over {family}")]
    PeerPacketTooSmall {
        size: u16,
        min: usize,
        mode: &'static str,
        family: &'static str,
    },
    #[error("no [[target]] is named {name:?}")]
    UnknownTarget { name: String },
    #[error("no [[peer]] is named {name:?}")]
    UnknownPeer { name: String },
    #[error("invalid name {given:?}: use 1 to 64 characters of letters, digits, '.', '_' and '-'")]
    RemoteWriteName { given: String },
    #[error("the name {name:?} is already used by the remote_write on line {first_line}")]
    DuplicateRemoteWrite { name: String, first_line: usize },
    #[error("{given:?} is not a Prometheus label name (letters, digits and '_', not starting with a digit or \"__\")")]
    LabelName { given: String },
    #[error("the label {given:?} is hopwatch's own; pick another name")]
    ReservedLabel { given: String },
    #[error("{given:?} has a control character; use printable characters")]
    Unprintable { given: String },
    #[error("use either username and password or bearer_token, not both")]
    TwoAuthMethods,
    #[error("{given:?} needs {other} too")]
    HalfBasicAuth {
        given: &'static str,
        other: &'static str,
    },
    #[error("{max_age} is longer than [storage] raw_retention ({retention}): the rounds to backfill from are gone by then")]
    BackfillBeyondRetention { max_age: String, retention: String },
    #[error("the alert outbox is one for all targets and peers: set this in [alerts]")]
    OutboxKeyOutsideAlerts,
    #[error("{retry_max} is below retry_initial ({retry_initial})")]
    RetryMaxBelowInitial {
        retry_max: String,
        retry_initial: String,
    },
}

/// Why a config could not be loaded. Every variant but [`ConfigError::Read`]
/// carries the line (1-based) and the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    /// Not valid TOML (including keys given twice); `message` is the TOML
    /// parser's, `text` the offending line.
    #[error("{}:{line}: {message} (in `{text}`)", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
        text: String,
    },

    #[error(
        "{}:{line}: unknown key {key:?} in {section}; expected one of {}{}",
        path.display(),
        expected.join(", "),
        match suggestion { Some(s) => format!(" (did you mean {s:?}?)"), None => String::new() }
    )]
    UnknownKey {
        path: PathBuf,
        line: usize,
        section: Section,
        key: String,
        expected: &'static [&'static str],
        suggestion: Option<&'static str>,
    },

    /// A value of the wrong TOML type; `message` is the TOML decoder's.
    #[error("{}:{line}: {section}: {key}: {message}", path.display())]
    WrongType {
        path: PathBuf,
        line: usize,
        section: Section,
        key: String,
        message: String,
    },

    #[error("{}:{line}: {section}: the required key {key:?} is missing", path.display())]
    Missing {
        path: PathBuf,
        line: usize,
        section: Section,
        key: &'static str,
    },

    /// A value of the right type that is out of range, unparseable or inconsistent.
    /// `inherited` is set when a target's error is in a value it took from `[defaults]`.
    #[error(
        "{}:{line}: {section}: {key}{}: {problem}",
        path.display(),
        if *inherited { " (from [defaults])" } else { "" }
    )]
    Invalid {
        path: PathBuf,
        line: usize,
        section: Section,
        key: &'static str,
        inherited: bool,
        /// Boxed to keep `Result<_, ConfigError>` small.
        problem: Box<Problem>,
    },
}

impl ConfigError {
    /// The config file the error is in.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::Syntax { path, .. }
            | ConfigError::UnknownKey { path, .. }
            | ConfigError::WrongType { path, .. }
            | ConfigError::Missing { path, .. }
            | ConfigError::Invalid { path, .. } => path,
        }
    }

    /// The 1-based line the error is on; `None` when the file could not be read.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { line, .. }
            | ConfigError::UnknownKey { line, .. }
            | ConfigError::WrongType { line, .. }
            | ConfigError::Missing { line, .. }
            | ConfigError::Invalid { line, .. } => Some(*line),
        }
    }

    /// The key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
            ConfigError::UnknownKey { key, .. } | ConfigError::WrongType { key, .. } => Some(key),
            ConfigError::Missing { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

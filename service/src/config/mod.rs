//! The daemon's configuration (`hopwatch run -c <config>`): a TOML file of global
//! settings, probe `[defaults]` and `[[target]]`s that override them, decoded and
//! validated into a typed [`Config`], and compared across reloads by [`ConfigDiff`].
//!
//! Every key, its default and its range are documented in docs/configuration.md;
//! `deploy/examples/hopwatch.toml` is the commented reference file.
//!
//! ```
//! use hopwatch::config::Config;
//!
//! let config = Config::parse(
//!     r#"
//!     [defaults]
//!     interval = "2s"
//!
//!     [[target]]
//!     name = "gw"
//!     host = "198.18.0.1"
//!     "#,
//!     "hopwatch.toml",
//! )?;
//! assert_eq!(config.targets[0].probe.interval, std::time::Duration::from_secs(2));
//!
//! let err = Config::parse("[defaults]\nintervall = \"2s\"\n", "hopwatch.toml").unwrap_err();
//! assert!(err.to_string().starts_with("hopwatch.toml:2: unknown key \"intervall\" in [defaults]"));
//! # Ok::<(), hopwatch::config::ConfigError>(())
//! ```

pub mod defaults;
pub mod diff;
pub mod error;
pub mod limits;
pub mod peers;
pub mod properties;
mod raw;
pub mod redact;
pub mod remote;
mod resolve;
mod units;
pub mod validated;
pub mod web;

use std::path::Path;

// The alert settings are the alerts' own types; the config fills them in.
pub use crate::alerts::settings::{
    AlertRules, AlertsConfig, LatencyStat, OutboxLimits, WebhookConfig, WebhookFilter,
    WebhookFormat,
};
pub use diff::{ChangeAction, ConfigDiff, GlobalChange, TargetChange};
pub use error::{ConfigError, Problem, Section};
pub use peers::{PeerChange, PeerConfig, PeerDiff, PeerMode, ReflectorSettings};
pub use remote::{RemoteAuth, RemoteWriteConfig, SeriesSet};
pub use validated::{
    Config, EnrichmentConfig, ProbeSettings, RawLogConfig, ServiceConfig, StatisticsConfig,
    StorageConfig, TargetConfig,
};
pub use web::WebConfig;

impl Config {
    /// Reads and validates the config file at `path`. Relative paths inside it
    /// are taken from its directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates config `text`. `path` names the file in errors, and relative
    /// paths inside it are taken from its directory.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        resolve::parse(text, path.as_ref())
    }
}

#[cfg(test)]
mod tests;

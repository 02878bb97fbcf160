//! Errors from setting up responder enrichment: the resolver, the ASN
//! database and the city database. Each variant names what was being opened or configured.
//! Lookups themselves never fail to the caller: their outcome is a state
//! ([`super::Lookup`]) or an absent field, and the reason is logged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hickory_resolver::net::NetError;

/// Why an [`super::Enricher`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// Reverse DNS spawns its lookups on the caller's tokio runtime.
    #[error("reverse DNS needs a tokio runtime: build the enricher inside one")]
    NoRuntime,

    /// A zero timeout would fail every lookup.
    #[error("dns_timeout must be more than zero, got {timeout:?}")]
    ZeroTimeout { timeout: Duration },

    /// At least one lookup must be allowed to run at a time.
    #[error("dns_concurrency must be at least 1")]
    ZeroConcurrency,

    /// The system's resolver configuration could not be read (no explicit
    /// `dns_servers` were configured, so it is the only source of servers).
    #[error("cannot read the system resolver configuration {path}: {source}")]
    SystemResolverConfig {
        path: PathBuf,
        #[source]
        source: NetError,
    },

    /// The resolver rejected its configuration.
    #[error("cannot build a DNS resolver for servers {servers:?}: {source}")]
    Resolver {
        servers: Vec<SocketAddr>,
        #[source]
        source: NetError,
    },

    /// The ASN database file is missing or unreadable.
    #[error("cannot read the ASN database {path} ([enrichment] asn_database): {source}")]
    AsnDatabaseRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a valid MaxMind DB (truncated, corrupt, another format).
    #[error(
        "the ASN database {path} ([enrichment] asn_database) is not a valid MaxMind DB file: {source}"
    )]
    AsnDatabaseInvalid {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },

    /// The city database file is missing or unreadable.
    #[error("cannot read the city database {path} ([enrichment] city_database): {source}")]
    CityDatabaseRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The city database is not a valid MaxMind DB (truncated, corrupt, another format).
    #[error(
        "the city database {path} ([enrichment] city_database) is not a valid MaxMind DB file: {source}"
    )]
    CityDatabaseInvalid {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
}

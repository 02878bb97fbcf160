//! The DNS side of reverse lookups: builds the stub resolver (from
//! /etc/resolv.conf or from explicit servers) and turns one PTR query into an
//! [`Outcome`] under a hard deadline.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use crate::enrich::error::EnrichError;

/// Where the system resolver configuration is read from (hickory's own choice
/// on Unix; named here for error messages).
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Builds a resolver for `servers`, or from the system configuration when the
/// list is empty. Caching is left to our own cache (one place decides TTLs),
/// and one attempt per server fits the caller's overall deadline.
pub(super) fn build(
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<TokioResolver, EnrichError> {
    let mut builder = if servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|source| EnrichError::SystemResolverConfig {
            path: PathBuf::from(RESOLV_CONF),
            source,
        })?
    } else {
        let config =
            ResolverConfig::from_name_servers(servers.iter().map(|s| name_server(*s)).collect());
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.cache_size = 0;
    // /etc/hosts holds forward entries only as far as hickory is concerned;
    // skipping it keeps answers coming from the configured servers.
    opts.use_hosts_file = ResolveHosts::Never;
    builder.build().map_err(|source| EnrichError::Resolver {
        servers: servers.to_vec(),
        source,
    })
}

/// UDP, with TCP for truncated answers, on the configured port.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let connection = |mut c: ConnectionConfig| {
        c.port = addr.port();
        c
    };
    NameServerConfig::new(
        addr.ip(),
        true,
        vec![
            connection(ConnectionConfig::udp()),
            connection(ConnectionConfig::tcp()),
        ],
    )
}

/// What one reverse lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The PTR name (no trailing dot) and the smallest TTL among the PTR records.
    Name { name: String, ttl: Duration },
    /// NXDOMAIN or no PTR record; `negative_ttl` from the SOA when the answer had one.
    NoName { negative_ttl: Option<Duration> },
    /// Timeout, server failure, refusal, network error; `reason` is for logs.
    Failed { reason: String },
}

/// One PTR lookup for `ip`, given at most `deadline` in all.
pub(super) async fn reverse(resolver: &TokioResolver, ip: IpAddr, deadline: Duration) -> Outcome {
    match tokio::time::timeout(deadline, resolver.reverse_lookup(ip)).await {
        Err(_) => Outcome::Failed {
            reason: format!("no answer within {deadline:?}"),
        },
        Ok(Ok(lookup)) => {
            let ptrs = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::PTR(ptr) => Some((ptr.0.to_ascii(), record.ttl)),
                    _ => None,
                });
            let ttl = ptrs.clone().map(|(_, ttl)| ttl).min();
            match (ptrs.map(|(name, _)| name).next(), ttl) {
                (Some(name), Some(ttl)) => Outcome::Name {
                    name: name.trim_end_matches('.').to_owned(),
                    ttl: Duration::from_secs(u64::from(ttl)),
                },
                // An answer without PTR data (only a CNAME chain to nothing).
                _ => Outcome::NoName { negative_ttl: None },
            }
        }
        Ok(Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords { negative_ttl, .. })))) => {
            Outcome::NoName {
                negative_ttl: negative_ttl.map(|s| Duration::from_secs(u64::from(s))),
            }
        }
        Ok(Err(e)) => Outcome::Failed {
            reason: e.to_string(),
        },
    }
}

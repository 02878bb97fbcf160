//! Responder enrichment: a hop's responder address gets a host name (reverse
//! DNS) and, for public addresses, an AS number and organisation (a local
//! MaxMind-format ASN database) and a position (a local MaxMind-format city
//! database, for the map). Nothing here ever waits on the network for a
//! caller: probing and the live view read what is known and move on; the
//! databases are files, so no lookup of theirs leaves the box.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hopwatch::enrich::EnrichError> {
//! use hopwatch::enrich::{EnrichConfig, Enricher};
//! let enricher = Enricher::new(EnrichConfig {
//!     asn_database: Some("/var/lib/GeoIP/GeoLite2-ASN.mmdb".into()),
//!     ..EnrichConfig::default()
//! })?;
//! let info = enricher.responder_info("1.0.0.1".parse().unwrap());
//! // First call: hostname is None and a lookup is queued; asn is known at once.
//! # let _ = info;
//! # Ok(()) }
//! ```
//!
//! # Reverse DNS
//! [`Enricher::lookup_cached`] answers from a bounded cache at once
//! ([`Lookup`]: `Resolved`, `Pending`, `NotFound`, `Failed`). A miss queues one
//! background lookup per address (concurrent callers share it), at most
//! `dns_concurrency` run at a time, each given `dns_timeout` in all. Names are
//! cached for the TTL of the answer, "no name" for the negative TTL (or
//! [`DnsCachePolicy::negative_ttl`] when the answer has no SOA), failures for
//! [`DnsCachePolicy::failure_ttl`], all clamped by the policy. Servers come
//! from `dns_servers`, or from /etc/resolv.conf when that list is empty.
//! Every address is looked up, private ones included: internal PTR zones are
//! common on the networks hopwatch watches.
//!
//! # ASN
//! Only public addresses are looked up: private, loopback, link-local,
//! shared (CGN), documentation, benchmarking (198.18.0.0/15), multicast,
//! reserved and the other IANA special-purpose blocks are skipped (see
//! [`special_purpose`]). The database is read once, at [`Enricher::new`].
//!
//! # Position
//! The same rule and the same once-at-start reading for the city database
//! ([`CityDatabase`]): public addresses only, and an address the database
//! does not place has no position (never a guess).
//!
//! The enricher must be built inside a tokio runtime; its background lookups
//! are tasks of that runtime and stop when the enricher is dropped.

mod asn;
mod city;
mod error;
mod mmdb;
mod rdns;
mod special;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

pub use asn::{AsnDatabase, AsnLookup, AsnRecord};
pub use city::{CityDatabase, GeoLookup, GeoRecord};
pub use error::EnrichError;
pub use mmdb::DbLookup;
pub use rdns::{DnsCachePolicy, DnsStats, Lookup, RdnsConfig, ReverseDns};
pub use special::{is_public, special_purpose};

/// Default deadline for one reverse lookup.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of reverse lookups running at once.
pub const DEFAULT_DNS_CONCURRENCY: usize = 16;
/// Default number of addresses waiting for a lookup slot.
pub const DEFAULT_DNS_QUEUE: usize = 4096;

/// What to enrich responders with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrichConfig {
    /// Look up host names of responders.
    pub reverse_dns: bool,
    /// Deadline for one reverse lookup, all servers and retries included.
    pub dns_timeout: Duration,
    /// DNS servers to ask; empty means the system's (/etc/resolv.conf).
    pub dns_servers: Vec<SocketAddr>,
    /// Reverse lookups running at once.
    pub dns_concurrency: usize,
    /// Addresses waiting for a lookup slot; beyond it misses are retried on a later call.
    pub dns_queue: usize,
    /// Cache size and TTL bounds.
    pub dns_cache: DnsCachePolicy,
    /// A MaxMind-format ASN database (GeoLite2-ASN.mmdb); `None` turns ASN lookups off.
    pub asn_database: Option<PathBuf>,
    /// A MaxMind-format city database (GeoLite2-City.mmdb); `None` turns positions off.
    pub city_database: Option<PathBuf>,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            reverse_dns: true,
            dns_timeout: DEFAULT_DNS_TIMEOUT,
            dns_servers: Vec::new(),
            dns_concurrency: DEFAULT_DNS_CONCURRENCY,
            dns_queue: DEFAULT_DNS_QUEUE,
            dns_cache: DnsCachePolicy::default(),
            asn_database: None,
            city_database: None,
        }
    }
}

/// What is known about one responder, as the web API serves it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResponderInfo {
    /// Its reverse DNS name, once resolved.
    pub hostname: Option<String>,
    /// Its AS number (public addresses in the ASN database only).
    pub asn: Option<u32>,
    /// The organisation that AS is registered to.
    pub as_org: Option<String>,
    /// Where the city database places it (public addresses in it only).
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub city: Option<String>,
    pub country: Option<String>,
}

/// Lookup counters of one database (ASN or city).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AsnStats {
    /// Lookups that found a network.
    pub hits: u64,
    /// Public addresses the database has nothing for.
    pub misses: u64,
    /// Special-purpose addresses not looked up.
    pub skipped: u64,
    /// Entries that could not be decoded.
    pub errors: u64,
}

/// Counters for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EnrichStats {
    /// `None` when reverse DNS is off.
    pub dns: Option<DnsStats>,
    /// `None` when no ASN database is configured.
    pub asn: Option<AsnStats>,
    /// `None` when no city database is configured.
    pub city: Option<AsnStats>,
}

#[derive(Debug, Default)]
struct AsnCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    skipped: AtomicU64,
    errors: AtomicU64,
}

/// Enriches responder addresses; share it behind an `Arc`.
#[derive(Debug)]
pub struct Enricher {
    rdns: Option<ReverseDns>,
    asn: Option<AsnDatabase>,
    asn_counters: AsnCounters,
    city: Option<CityDatabase>,
    city_counters: AsnCounters,
}

impl Enricher {
    /// Opens the ASN and city databases (if configured) and starts reverse DNS (if on).
    /// Must be called inside a tokio runtime when `reverse_dns` is on.
    pub fn new(config: EnrichConfig) -> Result<Enricher, EnrichError> {
        // The database first: a bad path is the likelier mistake, and it needs no runtime.
        let asn = config
            .asn_database
            .as_deref()
            .map(AsnDatabase::open)
            .transpose()?;
        let city = config
            .city_database
            .as_deref()
            .map(CityDatabase::open)
            .transpose()?;
        let rdns = if config.reverse_dns {
            Some(ReverseDns::new(RdnsConfig {
                servers: config.dns_servers,
                timeout: config.dns_timeout,
                concurrency: config.dns_concurrency,
                queue: config.dns_queue,
                cache: config.dns_cache,
            })?)
        } else {
            None
        };
        Ok(Enricher {
            rdns,
            asn,
            asn_counters: AsnCounters::default(),
            city,
            city_counters: AsnCounters::default(),
        })
    }

    /// The reverse DNS state of `ip`; queues a lookup on a miss. Never waits.
    /// `None` when reverse DNS is off.
    pub fn lookup_cached(&self, ip: IpAddr) -> Option<Lookup> {
        self.rdns.as_ref().map(|r| r.lookup_cached(ip))
    }

    /// The AS of `ip`; `None` when no database is configured.
    pub fn lookup_asn(&self, ip: IpAddr) -> Option<AsnLookup> {
        let db = self.asn.as_ref()?;
        let result = db.lookup(ip);
        count(&result, &self.asn_counters, ip, "ASN", db.path());
        Some(result)
    }

    /// Where `ip` is; `None` when no city database is configured.
    pub fn lookup_position(&self, ip: IpAddr) -> Option<GeoLookup> {
        let db = self.city.as_ref()?;
        let result = db.lookup(ip);
        count(&result, &self.city_counters, ip, "city", db.path());
        Some(result)
    }

    /// Whether a city database is open (so a hop without a position is
    /// unknown to it, not merely unlooked-up).
    pub fn has_city_database(&self) -> bool {
        self.city.is_some()
    }

    /// Everything known about `ip` now. Never waits: a name not yet resolved is
    /// `None` and its lookup is queued.
    pub fn responder_info(&self, ip: IpAddr) -> ResponderInfo {
        let hostname = match self.lookup_cached(ip) {
            Some(Lookup::Resolved(name)) => Some(name),
            _ => None,
        };
        let (asn, as_org) = match self.lookup_asn(ip) {
            Some(AsnLookup::Found(record)) => (record.asn, record.org),
            _ => (None, None),
        };
        let place = match self.lookup_position(ip) {
            Some(GeoLookup::Found(record)) => Some(record),
            _ => None,
        };
        ResponderInfo {
            hostname,
            asn,
            as_org,
            latitude: place.as_ref().map(|p| p.latitude),
            longitude: place.as_ref().map(|p| p.longitude),
            city: place.as_ref().and_then(|p| p.city.clone()),
            country: place.and_then(|p| p.country),
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> EnrichStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counts = |c: &AsnCounters| AsnStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            skipped: get(&c.skipped),
            errors: get(&c.errors),
        };
        EnrichStats {
            dns: self.rdns.as_ref().map(ReverseDns::stats),
            asn: self.asn.as_ref().map(|_| counts(&self.asn_counters)),
            city: self.city.as_ref().map(|_| counts(&self.city_counters)),
        }
    }
}

/// Counts a database lookup's outcome; an unreadable entry is also logged.
fn count<T>(result: &DbLookup<T>, c: &AsnCounters, ip: IpAddr, what: &str, path: &Path) {
    let counter = match result {
        DbLookup::Found(_) => &c.hits,
        DbLookup::NotInDatabase => &c.misses,
        DbLookup::Skipped(_) => &c.skipped,
        DbLookup::Error(reason) => {
            tracing::warn!(%ip, path = %path.display(), %reason, "{what} database entry unreadable");
            &c.errors
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

//! The reverse DNS cache: one entry per responder address, bounded in size
//! (least recently used goes first), each entry expiring after its own TTL.
//!
//! TTLs come from the answer (the PTR records' TTL, or the negative TTL of the
//! zone's SOA for "no such name") and are clamped by [`DnsCachePolicy`], so a
//! zero TTL does not turn every probe round into a query and a week-long one
//! does not pin a stale name.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;

/// How long the reverse DNS cache keeps each kind of answer, and how many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCachePolicy {
    /// Most addresses kept; the least recently used is dropped first.
    pub capacity: u64,
    /// Floor for a name's TTL (answers with TTL 0 are common for local data).
    pub min_ttl: Duration,
    /// Cap for a name's TTL.
    pub max_ttl: Duration,
    /// How long "no name" is kept when the answer carries no SOA (and so no
    /// negative TTL of its own).
    pub negative_ttl: Duration,
    /// Cap for "no name" when the SOA gives a negative TTL.
    pub max_negative_ttl: Duration,
    /// How long a failure (timeout, SERVFAIL, REFUSED, network error) is kept
    /// before the address is tried again.
    pub failure_ttl: Duration,
}

impl Default for DnsCachePolicy {
    fn default() -> Self {
        DnsCachePolicy {
            capacity: 65_536,
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            negative_ttl: Duration::from_secs(300),
            max_negative_ttl: Duration::from_secs(3600),
            failure_ttl: Duration::from_secs(60),
        }
    }
}

impl DnsCachePolicy {
    /// TTL for a name whose PTR records said `answer_ttl`.
    pub(super) fn name_ttl(&self, answer_ttl: Duration) -> Duration {
        answer_ttl.clamp(self.min_ttl, self.max_ttl.max(self.min_ttl))
    }

    /// TTL for "no name"; `soa_ttl` is the negative TTL from the answer's SOA.
    pub(super) fn not_found_ttl(&self, soa_ttl: Option<Duration>) -> Duration {
        soa_ttl
            .unwrap_or(self.negative_ttl)
            .min(self.max_negative_ttl)
    }
}

/// Where an address stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// A lookup is queued or running.
    Pending,
    Resolved(Arc<str>),
    NotFound,
    Failed,
}

/// A cache value: the state and how long it lives from when it was stored.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub state: State,
    pub ttl: Duration,
}

/// Each entry expires `ttl` after it was stored; replacing it (pending → answer)
/// restarts the clock with the new entry's TTL, and reads do not extend it.
struct EntryExpiry;

impl Expiry<IpAddr, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &IpAddr, value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &IpAddr,
        value: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub(super) type RdnsCache = Cache<IpAddr, Entry>;

pub(super) fn build(capacity: u64) -> RdnsCache {
    Cache::builder()
        .max_capacity(capacity)
        // Plain LRU: moka's default admission policy may refuse a new address
        // in favour of frequent ones, and a refused pending entry would queue
        // the same lookup again on every call.
        .eviction_policy(EvictionPolicy::lru())
        .expire_after(EntryExpiry)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_clamped() {
        let p = DnsCachePolicy::default();
        assert_eq!(p.name_ttl(Duration::ZERO), p.min_ttl);
        assert_eq!(
            p.name_ttl(Duration::from_secs(600)),
            Duration::from_secs(600)
        );
        assert_eq!(p.name_ttl(Duration::from_secs(30 * 86_400)), p.max_ttl);
        assert_eq!(p.not_found_ttl(None), p.negative_ttl);
        assert_eq!(
            p.not_found_ttl(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            p.not_found_ttl(Some(Duration::from_secs(86_400))),
            p.max_negative_ttl
        );
    }

    #[test]
    fn entries_expire_after_their_own_ttl() {
        let cache = build(16);
        let short: IpAddr = [192, 0, 2, 1].into();
        let long: IpAddr = [192, 0, 2, 2].into();
        let entry = |ttl| Entry {
            state: State::NotFound,
            ttl,
        };
        cache.insert(short, entry(Duration::from_millis(50)));
        cache.insert(long, entry(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            cache.get(&short).is_none(),
            "the 50 ms entry outlived its TTL"
        );
        assert!(cache.get(&long).is_some(), "the 60 s entry expired early");
    }

    #[test]
    fn replacing_an_entry_restarts_its_ttl() {
        let cache = build(16);
        let ip: IpAddr = [192, 0, 2, 1].into();
        cache.insert(
            ip,
            Entry {
                state: State::Pending,
                ttl: Duration::from_millis(50),
            },
        );
        cache.insert(
            ip,
            Entry {
                state: State::Resolved("a.example".into()),
                ttl: Duration::from_secs(60),
            },
        );
        std::thread::sleep(Duration::from_millis(120));
        let got = cache.get(&ip).map(|e| e.state);
        assert_eq!(got, Some(State::Resolved("a.example".into())));
    }

    #[test]
    fn size_is_bounded() {
        let cache = build(8);
        for i in 0..100u8 {
            cache.insert(
                IpAddr::from([192, 0, 2, i]),
                Entry {
                    state: State::NotFound,
                    ttl: Duration::from_secs(60),
                },
            );
        }
        cache.run_pending_tasks();
        assert!(
            cache.entry_count() <= 8,
            "{} entries kept",
            cache.entry_count()
        );
        // LRU keeps the most recent.
        assert!(cache.get(&IpAddr::from([192, 0, 2, 99])).is_some());
    }
}

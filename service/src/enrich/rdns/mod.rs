//! Reverse DNS for responders that never blocks its caller: a cache answers at
//! once, and a miss queues a background lookup.
//!
//! The first [`ReverseDns::lookup_cached`] for an address stores a pending
//! entry and queues the address; later calls see `Pending` (one query per
//! address, however many callers ask) until a background task stores the
//! answer. One dispatcher task takes addresses from a bounded queue and runs at
//! most `concurrency` lookups at once, each under the lookup timeout. When the
//! queue is full the address is not queued (counted as `queue_full`) and the
//! next call for it tries again.

mod cache;
mod resolver;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Semaphore};

pub use cache::DnsCachePolicy;
use cache::{Entry, RdnsCache, State};
use resolver::Outcome;

use super::error::EnrichError;

/// What the cache knows about an address right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "name", rename_all = "snake_case")]
pub enum Lookup {
    /// The PTR name, without the trailing dot.
    Resolved(String),
    /// A lookup is queued or running.
    Pending,
    /// The server says the address has no name (NXDOMAIN or no PTR record).
    NotFound,
    /// The lookup timed out or the server failed; retried after the policy's
    /// `failure_ttl`.
    Failed,
}

impl Lookup {
    /// The name, when there is one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Lookup::Resolved(name) => Some(name),
            _ => None,
        }
    }
}

/// Counters for metrics; monotonic except `cache_entries` and `in_flight`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DnsStats {
    /// Calls answered from a finished entry (a name, no name, or a failure).
    pub cache_hits: u64,
    /// Calls that found nothing and queued a lookup.
    pub cache_misses: u64,
    /// Calls that found a lookup already under way.
    pub pending_hits: u64,
    /// Lookups that returned a name.
    pub resolved: u64,
    /// Lookups that returned "no name".
    pub not_found: u64,
    /// Lookups that timed out or failed.
    pub failures: u64,
    /// Misses not queued because the queue was full.
    pub queue_full: u64,
    /// Lookups queued or running now.
    pub in_flight: u64,
    /// Addresses in the cache (approximate: the cache settles evictions lazily).
    pub cache_entries: u64,
}

#[derive(Default)]
struct Counters {
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    pending_hits: AtomicU64,
    resolved: AtomicU64,
    not_found: AtomicU64,
    failures: AtomicU64,
    queue_full: AtomicU64,
    in_flight: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How a [`ReverseDns`] resolves and caches.
#[derive(Clone, Debug)]
pub struct RdnsConfig {
    /// Servers to ask; empty means the system's (/etc/resolv.conf).
    pub servers: Vec<SocketAddr>,
    /// Deadline for one lookup, all servers and retries included.
    pub timeout: Duration,
    /// Lookups running at once.
    pub concurrency: usize,
    /// Addresses waiting for a lookup slot before new misses are turned away.
    pub queue: usize,
    pub cache: DnsCachePolicy,
}

/// The reverse DNS cache and its background lookups.
pub struct ReverseDns {
    cache: RdnsCache,
    queue: mpsc::Sender<IpAddr>,
    /// How long a pending entry may stand before the address can be queued
    /// again: a safety net for a lookup whose task never reported (runtime
    /// shutting down); normally the answer replaces it much sooner.
    pending_ttl: Duration,
    /// How long a failure is kept (from the policy).
    failure_ttl: Duration,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for ReverseDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReverseDns")
            .field("stats", &self.stats())
            .finish()
    }
}

impl ReverseDns {
    /// Builds the resolver and starts the dispatcher on the current tokio
    /// runtime, which must be running (lookups are its tasks).
    pub fn new(config: RdnsConfig) -> Result<ReverseDns, EnrichError> {
        let runtime = Handle::try_current().map_err(|_| EnrichError::NoRuntime)?;
        if config.timeout.is_zero() {
            return Err(EnrichError::ZeroTimeout {
                timeout: config.timeout,
            });
        }
        if config.concurrency == 0 {
            return Err(EnrichError::ZeroConcurrency);
        }
        let dns = resolver::build(&config.servers, config.timeout)?;
        let cache = cache::build(config.cache.capacity);
        let counters = Arc::new(Counters::default());
        let (queue, rx) = mpsc::channel(config.queue.max(1));
        let pending_ttl = config.timeout.saturating_mul(4) + Duration::from_secs(60);
        let failure_ttl = config.cache.failure_ttl;
        let dispatcher = Dispatcher {
            dns,
            cache: cache.clone(),
            policy: config.cache,
            timeout: config.timeout,
            limit: Arc::new(Semaphore::new(config.concurrency)),
            counters: counters.clone(),
        };
        // The dispatcher ends when the last sender (this ReverseDns) is dropped.
        runtime.spawn(dispatcher.run(rx));
        Ok(ReverseDns {
            cache,
            queue,
            pending_ttl,
            failure_ttl,
            counters,
        })
    }

    /// What is known about `ip` now; never waits. The first call for an
    /// unknown (or expired) address queues a lookup and returns `Pending`.
    pub fn lookup_cached(&self, ip: IpAddr) -> Lookup {
        let entry = self.cache.entry(ip).or_insert_with(|| Entry {
            state: State::Pending,
            ttl: self.pending_ttl,
        });
        if !entry.is_fresh() {
            let state = entry.into_value().state;
            bump(match state {
                State::Pending => &self.counters.pending_hits,
                _ => &self.counters.cache_hits,
            });
            return match state {
                State::Pending => Lookup::Pending,
                State::Resolved(name) => Lookup::Resolved(name.to_string()),
                State::NotFound => Lookup::NotFound,
                State::Failed => Lookup::Failed,
            };
        }
        // This call inserted the pending entry, so it alone queues the lookup.
        bump(&self.counters.cache_misses);
        // Counted before sending: the lookup may finish (and count itself out)
        // before try_send returns.
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let sent = self.queue.try_send(ip);
        if sent.is_err() {
            self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => Lookup::Pending,
            Err(TrySendError::Full(_)) => {
                // Forget the pending entry so a later call can queue it again.
                bump(&self.counters.queue_full);
                self.cache.invalidate(&ip);
                Lookup::Pending
            }
            Err(TrySendError::Closed(_)) => {
                // The runtime the dispatcher ran on has shut down: no lookup
                // can run, so say so rather than stay pending for ever.
                bump(&self.counters.failures);
                tracing::debug!(%ip, "reverse DNS: the runtime running lookups has stopped");
                self.cache.insert(
                    ip,
                    Entry {
                        state: State::Failed,
                        ttl: self.failure_ttl,
                    },
                );
                Lookup::Failed
            }
        }
    }

    /// Current counters.
    pub fn stats(&self) -> DnsStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DnsStats {
            cache_hits: get(&c.cache_hits),
            cache_misses: get(&c.cache_misses),
            pending_hits: get(&c.pending_hits),
            resolved: get(&c.resolved),
            not_found: get(&c.not_found),
            failures: get(&c.failures),
            queue_full: get(&c.queue_full),
            in_flight: get(&c.in_flight),
            cache_entries: self.cache.entry_count(),
        }
    }
}

/// Takes queued addresses and runs their lookups, `limit` at a time.
struct Dispatcher {
    dns: hickory_resolver::TokioResolver,
    cache: RdnsCache,
    policy: DnsCachePolicy,
    timeout: Duration,
    limit: Arc<Semaphore>,
    counters: Arc<Counters>,
}

impl Dispatcher {
    async fn run(self, mut rx: mpsc::Receiver<IpAddr>) {
        let this = Arc::new(self);
        while let Some(ip) = rx.recv().await {
            // Waiting here (not in a spawned task) is what bounds the work:
            // the queue fills up instead of tasks piling up.
            let Ok(permit) = this.limit.clone().acquire_owned().await else {
                return; // never closed; nothing left to do if it were
            };
            let this = this.clone();
            tokio::spawn(async move {
                this.resolve(ip).await;
                drop(permit);
            });
        }
    }

    async fn resolve(&self, ip: IpAddr) {
        let outcome = resolver::reverse(&self.dns, ip, self.timeout).await;
        let entry = match outcome {
            Outcome::Name { name, ttl } => {
                bump(&self.counters.resolved);
                tracing::debug!(%ip, %name, ?ttl, "reverse DNS");
                Entry {
                    state: State::Resolved(name.into()),
                    ttl: self.policy.name_ttl(ttl),
                }
            }
            Outcome::NoName { negative_ttl } => {
                bump(&self.counters.not_found);
                tracing::debug!(%ip, ?negative_ttl, "reverse DNS: no name");
                Entry {
                    state: State::NotFound,
                    ttl: self.policy.not_found_ttl(negative_ttl),
                }
            }
            Outcome::Failed { reason } => {
                bump(&self.counters.failures);
                tracing::debug!(%ip, %reason, "reverse DNS failed");
                Entry {
                    state: State::Failed,
                    ttl: self.policy.failure_ttl,
                }
            }
        };
        self.cache.insert(ip, entry);
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

//! Correlation: the table of probes in flight, keyed by their identity on the
//! wire, that hands each reply to the probe it answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hopwatch_probe_common::ProbeKey;
use tokio::sync::oneshot;

use super::parse::Reply;
use crate::sys;

/// How a reply's arrival was timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTiming {
    /// eBPF stamps at TC egress and ingress, both CLOCK_MONOTONIC.
    Ebpf { tx_ns: u64, rx_ns: u64 },
    /// SO_TIMESTAMPING software receive stamp, CLOCK_REALTIME.
    KernelRx { rx_realtime_ns: u64 },
    /// No kernel stamp: only the userspace clock at receive.
    UserspaceOnly,
}

/// One reply, parsed and timed, on its way to the probe it answers.
#[derive(Debug, Clone)]
pub struct ReplyObservation {
    pub reply: Reply,
    pub timing: ReplyTiming,
    /// CLOCK_MONOTONIC when userspace read the reply.
    pub user_rx_mono_ns: u64,
}

/// Probes in flight. Registering happens before the send, so a reply that
/// arrives before `sendmsg` returns still finds its probe.
#[derive(Default)]
pub struct Correlator {
    pending: Mutex<HashMap<ProbeKey, oneshot::Sender<ReplyObservation>>>,
    unmatched: AtomicU64,
    duplicates: AtomicU64,
}

impl Correlator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a probe about to be sent; the receiver resolves with its reply.
    /// A stale probe with the same key (a sequence that wrapped) is dropped,
    /// which its waiter sees as a timeout.
    pub fn register(&self, key: ProbeKey) -> oneshot::Receiver<ReplyObservation> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(key, tx);
        rx
    }

    /// Forgets a probe that timed out or could not be sent.
    pub fn cancel(&self, key: &ProbeKey) {
        self.lock().remove(key);
    }

    /// Hands a reply to its probe. Returns false when no probe was waiting:
    /// a reply to a probe that already timed out, a duplicate, or someone else's.
    pub fn deliver(&self, observation: ReplyObservation) -> bool {
        let waiter = self.lock().remove(&observation.reply.key);
        match waiter {
            Some(tx) => {
                if tx.send(observation).is_err() {
                    // The prober gave up between our lookup and the send.
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                true
            }
            None => {
                self.unmatched.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Probes currently waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    /// Replies that matched no waiting probe.
    pub fn unmatched(&self) -> u64 {
        self.unmatched.load(Ordering::Relaxed) + self.duplicates.load(Ordering::Relaxed)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ProbeKey, oneshot::Sender<ReplyObservation>>> {
        // A panic elsewhere while holding the lock leaves the map consistent
        // (single insert/remove calls), so poisoning is safe to ignore.
        sys::lock(&self.pending)
    }
}

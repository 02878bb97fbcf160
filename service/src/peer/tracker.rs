//! The sender's book of probes in flight, shared by the UDP and TCP senders: it
//! records each send (T1, later corrected by the kernel's transmit stamp), turns
//! each reply into a [`Reflection`] (RTT without the reflector's hold time, both
//! one-way delays, the OWD verdict), notices duplicates and late replies, times
//! probes out, and feeds [`SessionStats`] and the sample stream.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::clock::{ClockSync, ClockTrust, OwdValidity};
use super::metrics::{Direction, Reflection, ReflectorKind, Sample, SessionStats, Summary};
use super::socket::TxStamp;
use super::wire::ReflectorPacket;
use crate::probe::TimestampSource;

/// State shared between a session's thread and its handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub stats: Mutex<SessionStats>,
    /// Samples the consumer was too slow to take.
    pub dropped_samples: AtomicU64,
}

impl Shared {
    pub fn new(reflector: ReflectorKind) -> Arc<Self> {
        Arc::new(Shared {
            stats: Mutex::new(SessionStats::new(reflector)),
            dropped_samples: AtomicU64::new(0),
        })
    }

    pub fn summary(&self) -> Summary {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .summary()
    }
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    /// The userspace clock just before the send (CLOCK_REALTIME ns).
    user_tx_ns: u64,
    /// The kernel's transmit stamp, once read from the error queue.
    kernel_tx_ns: Option<u64>,
    /// The OPT_ID the kernel will report the transmit stamp under.
    tx_id: u32,
    deadline: Instant,
    answered: bool,
}

/// Why a reply was not turned into a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ignored {
    /// Its probe timed out already.
    Late,
    /// The reflector left T2 or T3 empty.
    NoTimestamps,
    /// A sequence number we never sent.
    Unknown,
}

/// Probes in flight, in send order.
pub(crate) struct Tracker {
    pending: VecDeque<Pending>,
    next_seq: u64,
    timeout: Duration,
    trust: ClockTrust,
    clock: ClockSync,
    clock_read_at: Instant,
    reflector: ReflectorKind,
    shared: Arc<Shared>,
    samples: Option<SyncSender<Sample>>,
}

impl Tracker {
    pub fn new(
        timeout: Duration,
        trust: ClockTrust,
        reflector: ReflectorKind,
        shared: Arc<Shared>,
        samples: Option<SyncSender<Sample>>,
    ) -> Self {
        Tracker {
            pending: VecDeque::new(),
            next_seq: 0,
            timeout,
            trust,
            clock: ClockSync::read(),
            clock_read_at: Instant::now(),
            reflector,
            shared,
            samples,
        }
    }

    /// The sequence number the next probe carries (RFC 8762: from 0, +1 per packet).
    pub fn next_seq(&self) -> u32 {
        self.next_seq as u32
    }

    /// Our clock's state (re-read at most once a second), for our Error Estimate.
    pub fn clock(&mut self) -> ClockSync {
        if self.clock_read_at.elapsed() >= Duration::from_secs(1) {
            self.clock = ClockSync::read();
            self.clock_read_at = Instant::now();
        }
        self.clock
    }

    /// Records a probe handed to the kernel.
    pub fn sent(&mut self, user_tx_ns: u64, tx_id: u32) {
        self.pending.push_back(Pending {
            seq: self.next_seq,
            user_tx_ns,
            kernel_tx_ns: None,
            tx_id,
            deadline: Instant::now() + self.timeout,
            answered: false,
        });
        self.next_seq += 1;
        self.with_stats(SessionStats::sent);
    }

    /// Skips a sequence number whose send failed (it was never on the wire).
    pub fn send_failed(&mut self) {
        self.next_seq += 1;
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// When the oldest probe times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.front().map(|p| p.deadline)
    }

    /// Attaches a kernel transmit stamp to the probe sent under its OPT_ID. The
    /// stamp comes right after the send, so the search starts at the newest probe.
    pub fn tx_stamp(&mut self, stamp: TxStamp) {
        if let Some(p) = self.pending.iter_mut().rev().find(|p| p.tx_id == stamp.id) {
            p.kernel_tx_ns = Some(stamp.tx_ns);
        }
    }

    fn with_stats<T>(&self, f: impl FnOnce(&mut SessionStats) -> T) -> T {
        f(&mut self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    fn emit(&self, sample: Sample) {
        if let Some(tx) = &self.samples {
            match tx.try_send(sample) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    self.shared.dropped_samples.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Times out every probe whose deadline has passed.
    pub fn expire(&mut self, now: Instant) {
        while let Some(front) = self.pending.front() {
            if front.deadline > now {
                break;
            }
            let p = self.pending.pop_front().expect("front exists");
            if !p.answered {
                self.with_stats(SessionStats::lost);
                self.emit(Sample::Lost {
                    seq: p.seq as u32,
                    sent_unix_ns: p.kernel_tx_ns.unwrap_or(p.user_tx_ns),
                });
            }
        }
    }

    /// Times out everything still in flight (the session is ending).
    pub fn expire_all(&mut self) {
        let all = Instant::now() + self.timeout + Duration::from_secs(1);
        for p in &mut self.pending {
            p.deadline = p.deadline.min(all);
        }
        self.expire(all);
    }

    /// Turns a reply received at `rx_ns` (from `rx_source`) into a sample.
    pub fn reply(
        &mut self,
        reply: &ReflectorPacket,
        rx_ns: u64,
        rx_source: TimestampSource,
        rx_ttl: Option<u8>,
    ) -> Result<(), Ignored> {
        let latest = self.next_seq.saturating_sub(1);
        let diff = i64::from(reply.sender_seq.wrapping_sub(latest as u32) as i32);
        let seq = latest.checked_add_signed(diff).ok_or(Ignored::Unknown)?;
        if seq >= self.next_seq {
            return Err(Ignored::Unknown);
        }
        let Some(front) = self.pending.front().map(|p| p.seq) else {
            self.with_stats(SessionStats::late);
            return Err(Ignored::Late);
        };
        if seq < front {
            self.with_stats(SessionStats::late);
            return Err(Ignored::Late);
        }
        let index = (seq - front) as usize;
        let Some(pending) = self.pending.get(index) else {
            return Err(Ignored::Unknown);
        };
        let (Some(t2), Some(t3)) = (
            reply.receive_timestamp.to_unix_nanos(),
            reply.timestamp.to_unix_nanos(),
        ) else {
            return Err(Ignored::NoTimestamps);
        };
        let (t1, tx_source) = match pending.kernel_tx_ns {
            Some(ns) => (ns, TimestampSource::Kernel),
            None => (pending.user_tx_ns, TimestampSource::Userspace),
        };
        let already = pending.answered;
        let (t1, t2, t3, t4) = (
            i128::from(t1),
            i128::from(t2),
            i128::from(t3),
            i128::from(rx_ns),
        );
        let hold = t3 - t2;
        let rtt = ((t4 - t1) - hold).max(0);
        let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let clock = self.clock();
        let reflection = Reflection {
            seq: reply.sender_seq,
            reflector_seq: reply.seq,
            rtt_ns: u64::try_from(rtt).unwrap_or(u64::MAX),
            forward_ns: clamp(t2 - t1),
            backward_ns: clamp(t4 - t3),
            reflector_hold_ns: clamp(hold),
            forward_ttl: reply.sender_ttl,
            backward_ttl: rx_ttl,
            source: tx_source.max(rx_source),
            owd: OwdValidity::judge(self.trust, clock, reply.error),
            sent_unix_ns: t1 as u64,
        };
        if already && self.reflector == ReflectorKind::Stateless {
            // Without the reflector's numbering the direction is unknown.
            self.with_stats(|s| s.duplicate(Direction::Unknown));
            self.emit(Sample::Duplicate {
                seq: reply.sender_seq,
                reflector_seq: reply.seq,
                direction: Direction::Unknown,
            });
            return Ok(());
        }
        match self.with_stats(|s| s.reply(seq, &reflection)) {
            Some(direction) => self.emit(Sample::Duplicate {
                seq: reply.sender_seq,
                reflector_seq: reply.seq,
                direction,
            }),
            None => {
                if let Some(p) = self.pending.get_mut(index) {
                    p.answered = true;
                }
                self.emit(Sample::Reflected(reflection));
            }
        }
        Ok(())
    }
}

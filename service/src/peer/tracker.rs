//! The sender's book of probes in flight, shared by the UDP and TCP senders: it
//! records each send (T1, later replaced by the kernel's transmit stamp, or by
//! the one the eBPF egress program wrote into the packet), turns
//! each reply into a [`Reflection`] (RTT without the reflector's hold time, both
//! one-way delays, the OWD verdict), notices duplicates and late replies, times
//! probes out, and feeds [`SessionStats`] and the sample stream.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::clock::{ClockSync, ClockTrust, OwdValidity};
use super::metrics::{Direction, Reflection, ReflectorKind, Sample, SessionStats, Summary};
use super::socket::TxStamp;
use super::timestamp::{TimestampFormat, WireTimestamp};
use super::wire::ReflectorPacket;
use crate::probe::TimestampSource;
use crate::sys;

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
        sys::lock(&self.stats).summary()
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
    /// The eBPF egress program writes T1 into our packets (see kernel_tx.rs);
    /// the reflector echoes it back as the Sender Timestamp.
    kernel_t1: bool,
}

/// An echoed T1 later than our userspace clock by more than this was not
/// written by our egress program (or the reflector mangled it).
const MAX_SEND_PATH_NS: u64 = 1_000_000_000;

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
            kernel_t1: false,
        }
    }

    /// Takes T1 from the echoed Sender Timestamp of each reply, where the eBPF
    /// egress program wrote it (falls back per probe when it did not).
    pub fn use_kernel_t1(&mut self) {
        self.kernel_t1 = true;
    }

    /// T1 as the egress program wrote it into our packet and the reflector
    /// echoed it back; `None` when the packet left with our userspace time (the
    /// program could not rewrite it) or the echo is implausible.
    fn echoed_kernel_t1(&self, pending: &Pending, reply: &ReflectorPacket) -> Option<u64> {
        if !self.kernel_t1 {
            return None;
        }
        let echoed = reply.sender_timestamp;
        if echoed.format() != TimestampFormat::Ntp
            || echoed == WireTimestamp::ntp_from_unix_nanos(pending.user_tx_ns)
        {
            return None;
        }
        let ns = echoed.to_unix_nanos()?;
        // Written after we read the clock (1 ns for NTP-fraction rounding).
        let after = ns + 1 >= pending.user_tx_ns;
        (after && ns.saturating_sub(pending.user_tx_ns) < MAX_SEND_PATH_NS).then_some(ns)
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
        f(&mut sys::lock(&self.shared.stats))
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
        let (t1, tx_source) = match (self.echoed_kernel_t1(pending, reply), pending.kernel_tx_ns) {
            (Some(ns), _) => (ns, TimestampSource::Ebpf),
            (None, Some(ns)) => (ns, TimestampSource::Kernel),
            (None, None) => (pending.user_tx_ns, TimestampSource::Userspace),
        };
        // T4's kernel receive stamp is the skb stamp the probe engine's eBPF
        // ingress uses too, so eBPF T1 with it is the eBPF source.
        let source = match (tx_source, rx_source) {
            (TimestampSource::Ebpf, TimestampSource::Kernel) => TimestampSource::Ebpf,
            (tx, rx) => tx.max(rx),
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
            source,
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use super::*;
    use crate::peer::timestamp::ErrorEstimate;

    const USER_TX: u64 = 1_800_000_000_000_000_000;

    /// A tracker with one probe sent at USER_TX (kernel stamp `kernel_tx`), and
    /// the sample a reply echoing `echoed` as the Sender Timestamp produces.
    fn reflect(kernel_t1: bool, kernel_tx: Option<u64>, echoed: u64) -> Reflection {
        let (tx, rx) = sync_channel(4);
        let mut tracker = Tracker::new(
            Duration::from_secs(1),
            ClockTrust::SharedClock,
            ReflectorKind::Stateful,
            Shared::new(ReflectorKind::Stateful),
            Some(tx),
        );
        if kernel_t1 {
            tracker.use_kernel_t1();
        }
        tracker.sent(USER_TX, 0);
        if let Some(tx_ns) = kernel_tx {
            tracker.tx_stamp(TxStamp { id: 0, tx_ns });
        }
        let reply = ReflectorPacket {
            seq: 0,
            timestamp: WireTimestamp::ntp_from_unix_nanos(USER_TX + 60_000),
            error: ErrorEstimate::ntp(true, 1_000),
            ssid: 1,
            receive_timestamp: WireTimestamp::ntp_from_unix_nanos(USER_TX + 50_000),
            sender_seq: 0,
            sender_timestamp: WireTimestamp::ntp_from_unix_nanos(echoed),
            sender_error: ErrorEstimate::ntp(true, 1_000),
            sender_ttl: 64,
        };
        tracker
            .reply(&reply, USER_TX + 100_000, TimestampSource::Kernel, Some(64))
            .unwrap();
        match rx.try_recv().unwrap() {
            Sample::Reflected(r) => r,
            other => panic!("expected a reflection, got {other:?}"),
        }
    }

    #[test]
    fn t1_is_the_time_the_egress_program_wrote_into_the_packet() {
        // Written 7 µs after our clock read; the driver stamp came 12 µs after.
        let r = reflect(true, Some(USER_TX + 12_000), USER_TX + 7_000);
        assert_eq!(r.sent_unix_ns, USER_TX + 7_000);
        assert_eq!(r.source, TimestampSource::Ebpf);
        // T4 − T1 − (T3 − T2) = 93 µs − 10 µs.
        assert_eq!(r.rtt_ns, 83_000);
        assert_eq!(r.forward_ns, 43_000);
    }

    #[test]
    fn an_echo_of_our_own_time_means_the_packet_was_not_rewritten() {
        let r = reflect(true, Some(USER_TX + 12_000), USER_TX);
        assert_eq!(r.sent_unix_ns, USER_TX + 12_000);
        assert_eq!(r.source, TimestampSource::Kernel);
        let r = reflect(true, None, USER_TX);
        assert_eq!(r.sent_unix_ns, USER_TX);
        assert_eq!(r.source, TimestampSource::Userspace);
    }

    #[test]
    fn implausible_echoes_are_not_taken_as_t1() {
        // Before we read the clock, or a second later: not our program's work.
        for echoed in [USER_TX - 1_000_000, USER_TX + 2_000_000_000] {
            let r = reflect(true, Some(USER_TX + 12_000), echoed);
            assert_eq!(r.sent_unix_ns, USER_TX + 12_000, "echoed {echoed}");
            assert_eq!(r.source, TimestampSource::Kernel);
        }
    }

    #[test]
    fn without_kernel_t1_the_echo_is_ignored() {
        let r = reflect(false, Some(USER_TX + 12_000), USER_TX + 7_000);
        assert_eq!(r.sent_unix_ns, USER_TX + 12_000);
        assert_eq!(r.source, TimestampSource::Kernel);
    }
}

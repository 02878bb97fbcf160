//! The delay element's thread: it enters the namespace (so its netlink socket binds the
//! queue there), keeps held packets in a deadline heap, and sleeps in `ppoll` until the
//! next deadline or the next packet. Timer slack is set to 1 ns so wake-ups are not
//! rounded up by the default 50 µs. It also owns the record of what it actually did
//! (how long each packet was really held), which tests judge measurements against.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io::{self, Read, Write},
    os::{fd::AsFd, unix::net::UnixStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hopwatch::sys::lock;

use super::netlink::{NfqSocket, Verdict};
use crate::{
    error::{LabError, Result},
    netns::enter::{spawn_in, NsThread},
};

/// How long to hold packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DelaySpec {
    /// Base one-way delay added to every packet.
    pub delay: Duration,
    /// Each packet gets a uniformly random extra in `[-jitter, +jitter]` (like netem's
    /// default), never below zero.
    pub jitter: Duration,
    /// Keep packets in arrival order even when jitter would reorder them (a packet is
    /// never released before the one queued ahead of it).
    pub preserve_order: bool,
}

impl DelaySpec {
    /// A fixed delay, no jitter.
    pub fn fixed(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Delay with jitter.
    pub fn jittered(delay: Duration, jitter: Duration) -> Self {
        Self {
            delay,
            jitter,
            preserve_order: false,
        }
    }
}

/// What the element has done, including how late it released packets compared with
/// their deadlines (its own added error) and how long it actually held them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ElementStats {
    /// Packets received from the kernel.
    pub queued: u64,
    /// Packets accepted after their hold time.
    pub accepted: u64,
    /// Packets dropped on purpose ([`NfqElement::drop_next`]).
    pub dropped: u64,
    /// Packets held right now.
    pub held: usize,
    /// Times the kernel could not deliver notifications (those packets were lost).
    pub overruns: u64,
    /// Verdicts the kernel rejected.
    pub verdict_errors: u64,
    /// Mean lateness of releases after their deadline. Deadlines start when the
    /// element reads the packet, so the kernel-to-element notification latency (tens
    /// of µs) is not included; measure end to end for that.
    pub late_mean: Duration,
    /// 99th percentile lateness (10 µs resolution, capped at 10 ms).
    pub late_p99: Duration,
    /// Worst lateness.
    pub late_max: Duration,
    /// Packets whose actual hold time is in `hold_*` (those released on stop are not:
    /// their hold was cut short).
    pub holds: u64,
    /// Shortest actual hold: from reading the packet off the queue to its verdict.
    /// On a busy machine the element releases late, so tests compare measured delays
    /// with these figures, not with the [`DelaySpec`]: the element's lateness is the
    /// lab's error, not the product's. The kernel-to-element latency before the read
    /// is not included, so a delay measured across the element is never below this.
    pub hold_min: Duration,
    /// Mean actual hold.
    pub hold_mean: Duration,
    /// Longest actual hold.
    pub hold_max: Duration,
}

/// Individual hold times kept for [`NfqElement::holds`]: plenty for a test's
/// traffic, and a bound on memory when the lab CLI runs an element for hours.
const HOLD_LOG_CAP: usize = 100_000;

/// Lateness histogram: 10 µs buckets up to 10 ms, then one overflow bucket.
const HIST_STEP_US: u64 = 10;
const HIST_BUCKETS: usize = 1001;

#[derive(Debug)]
struct Accumulator {
    stats: ElementStats,
    late_sum: Duration,
    hist: Vec<u64>,
    hold_sum: Duration,
    hold_log: Vec<Duration>,
}

impl Accumulator {
    fn new() -> Self {
        Self {
            stats: ElementStats::default(),
            late_sum: Duration::ZERO,
            hist: vec![0; HIST_BUCKETS],
            hold_sum: Duration::ZERO,
            hold_log: Vec::new(),
        }
    }

    /// Forgets lateness and hold times (not the packet counters), so that a test can
    /// measure one phase of traffic on its own.
    fn reset_timing(&mut self) {
        let s = &mut self.stats;
        (s.late_max, s.holds, s.hold_min, s.hold_max) =
            (Duration::ZERO, 0, Duration::ZERO, Duration::ZERO);
        self.late_sum = Duration::ZERO;
        self.hist.fill(0);
        self.hold_sum = Duration::ZERO;
        self.hold_log.clear();
    }

    fn record_hold(&mut self, hold: Duration) {
        let s = &mut self.stats;
        s.hold_min = if s.holds == 0 {
            hold
        } else {
            s.hold_min.min(hold)
        };
        s.hold_max = s.hold_max.max(hold);
        s.holds += 1;
        self.hold_sum += hold;
        if self.hold_log.len() < HOLD_LOG_CAP {
            self.hold_log.push(hold);
        }
    }

    fn record_late(&mut self, late: Duration) {
        self.late_sum += late;
        self.stats.late_max = self.stats.late_max.max(late);
        let bucket = (late.as_micros() as u64 / HIST_STEP_US).min(HIST_BUCKETS as u64 - 1);
        self.hist[bucket as usize] += 1;
    }

    fn snapshot(&self) -> ElementStats {
        let mut s = self.stats;
        let released: u64 = self.hist.iter().sum();
        if released > 0 {
            s.late_mean = self.late_sum / released as u32;
            let want = released - released / 100;
            let mut seen = 0;
            for (i, n) in self.hist.iter().enumerate() {
                seen += n;
                if seen >= want {
                    s.late_p99 = Duration::from_micros((i as u64 + 1) * HIST_STEP_US);
                    break;
                }
            }
        }
        if s.holds > 0 {
            s.hold_mean = self.hold_sum.div_f64(s.holds as f64);
        }
        s
    }
}

#[derive(Debug)]
struct Control {
    spec: DelaySpec,
    drop_next: u64,
}

#[derive(Debug)]
struct Shared {
    control: Mutex<Control>,
    stats: Mutex<Accumulator>,
    stop: AtomicBool,
}

/// A running delay element bound to one NFQUEUE queue in one namespace. It does not
/// install the iptables rule that feeds it (see [`crate::Lab::delay`]); stop it after
/// that rule is gone, or the kernel drops what is still queued.
#[derive(Debug)]
pub struct NfqElement {
    ns: String,
    queue: u16,
    shared: Arc<Shared>,
    wake: UnixStream,
    thread: Option<NsThread<Result<()>>>,
}

impl NfqElement {
    /// Starts the element inside namespace `ns`, bound to `queue`; returns once the
    /// queue is bound, so a rule added afterwards loses nothing.
    pub fn start(ns: &str, queue: u16, spec: DelaySpec) -> Result<Self> {
        let shared = Arc::new(Shared {
            control: Mutex::new(Control { spec, drop_next: 0 }),
            stats: Mutex::new(Accumulator::new()),
            stop: AtomicBool::new(false),
        });
        let (wake, wake_rx) = UnixStream::pair().map_err(|source| LabError::Nfqueue {
            ns: ns.to_owned(),
            queue,
            op: "create wake-up socket",
            source,
        })?;
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<()>>(1);
        let thread_shared = Arc::clone(&shared);
        let ns_owned = ns.to_owned();
        let thread = spawn_in(ns, &format!("nfq-{queue}"), move || {
            let nfq_err = |op, source| LabError::Nfqueue {
                ns: ns_owned.clone(),
                queue,
                op,
                source,
            };
            let sock = match NfqSocket::open(queue) {
                Ok(sock) => sock,
                Err(e) => {
                    let _ = ready_tx.send(Err(nfq_err("bind queue", e)));
                    return Ok(());
                }
            };
            let _ = ready_tx.send(Ok(()));
            run(sock, &thread_shared, wake_rx).map_err(|(op, e)| nfq_err(op, e))
        })?;
        let mut element = Self {
            ns: ns.to_owned(),
            queue,
            shared,
            wake,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(element),
            Ok(Err(e)) => {
                let _ = element.shutdown();
                Err(e)
            }
            Err(_) => Err(element
                .shutdown()
                .err()
                .unwrap_or(LabError::ThreadPanicked {
                    thread: format!("nfq-{queue}"),
                })),
        }
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The NFQUEUE queue number it serves.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Changes delay and jitter for packets queued from now on.
    pub fn set(&self, spec: DelaySpec) {
        lock(&self.shared.control).spec = spec;
    }

    /// The current delay settings.
    pub fn spec(&self) -> DelaySpec {
        lock(&self.shared.control).spec
    }

    /// Drops the next `n` packets that arrive (a burst of consecutive losses).
    pub fn drop_next(&self, n: u64) {
        lock(&self.shared.control).drop_next += n;
    }

    /// Packets still to be dropped by [`drop_next`](Self::drop_next).
    pub fn pending_drops(&self) -> u64 {
        lock(&self.shared.control).drop_next
    }

    /// Counters, lateness and hold times so far.
    pub fn stats(&self) -> ElementStats {
        lock(&self.shared.stats).snapshot()
    }

    /// Each packet's actual hold (as in [`ElementStats::hold_mean`]) in release order,
    /// since the start or [`reset_timing`](Self::reset_timing); only the first
    /// 100,000 are kept. A test whose measurement covers only some of the element's
    /// packets (those answered, say) bounds it with the shortest and longest of these.
    pub fn holds(&self) -> Vec<Duration> {
        lock(&self.shared.stats).hold_log.clone()
    }

    /// Starts lateness and hold times afresh (the packet counters keep counting), so
    /// that [`stats`](Self::stats) describes only the traffic from now on.
    pub fn reset_timing(&self) {
        lock(&self.shared.stats).reset_timing();
    }

    /// Accepts everything still held, closes the queue and returns the final stats.
    pub fn stop(mut self) -> Result<ElementStats> {
        self.shutdown()?;
        Ok(self.stats())
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.write_all(&[1]);
        let name = format!("nfq-{}", self.queue);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| thread.join())) {
            Ok(result) => result,
            Err(_) => Err(LabError::ThreadPanicked { thread: name }),
        }
    }
}

impl Drop for NfqElement {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("hopwatch-lab: stopping delay element: {e}");
        }
    }
}

/// Small xorshift generator for jitter: statistical quality is plenty for test
/// traffic, and it keeps the lab free of a RNG dependency.
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn hold(&mut self, spec: &DelaySpec) -> Duration {
        if spec.jitter.is_zero() {
            return spec.delay;
        }
        let offset = (self.unit() * 2.0 - 1.0) * spec.jitter.as_secs_f64();
        Duration::from_secs_f64((spec.delay.as_secs_f64() + offset).max(0.0))
    }
}

/// Wakes at least this often even when idle (only to notice a lost wake-up).
const IDLE_WAKE: Duration = Duration::from_millis(200);

type Failure = (&'static str, io::Error);

/// Real-time priority for the element thread: on a busy two-core machine a normal
/// thread often wakes milliseconds after its deadline because a compiler or another
/// test holds the CPU. The thread sleeps in ppoll between releases, and the kernel's
/// RT throttling bounds it anyway.
const RT_PRIORITY: libc::c_int = 10;

/// Makes the calling thread SCHED_FIFO; best effort (it only sharpens timing).
fn raise_priority() -> bool {
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    // SAFETY: pid 0 names the calling thread, and `param` is a valid sched_param that
    // outlives the call; the call does not retain the pointer.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

fn run(mut sock: NfqSocket, shared: &Shared, mut wake: UnixStream) -> Result<(), Failure> {
    // Without these, every ppoll wake-up may be up to 50 µs late (timer slack) or
    // much later under CPU contention.
    let _ = nix::sys::prctl::set_timerslack(1);
    if !raise_priority() {
        tracing::debug!("delay element runs without real-time priority");
    }
    wake.set_nonblocking(true)
        .map_err(|e| ("configure wake-up socket", e))?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Jitter::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    // (deadline, arrival order, packet id, when it was read off the queue)
    let mut heap: BinaryHeap<Reverse<(Instant, u64, u32, Instant)>> = BinaryHeap::new();
    let mut seq: u64 = 0;
    let mut last_deadline = Instant::now();
    let mut ids = Vec::with_capacity(256);
    // (lateness, actual hold) of each packet released in this round
    let mut released = Vec::with_capacity(256);

    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        if !stopping {
            let timeout = heap
                .peek()
                .map(|Reverse((deadline, ..))| deadline.saturating_duration_since(Instant::now()))
                .unwrap_or(IDLE_WAKE)
                .min(IDLE_WAKE);
            let (_, woken) = sock
                .wait_readable(wake.as_fd(), timeout)
                .map_err(|e| ("poll", e))?;
            if woken {
                let mut sink = [0u8; 64];
                let _ = wake.read(&mut sink);
            }
        }

        // Take everything the kernel has queued; each datagram is stamped when read.
        let (mut queued, mut dropped, mut overruns) = (0u64, 0u64, 0u64);
        loop {
            let before = ids.len();
            match sock.recv_ids(&mut ids) {
                Ok(false) => break,
                Ok(true) => {
                    let now = Instant::now();
                    let fresh = ids.len() - before;
                    if fresh == 0 {
                        continue;
                    }
                    queued += fresh as u64;
                    let mut control = lock(&shared.control);
                    for &id in &ids[before..] {
                        if control.drop_next > 0 && !stopping {
                            control.drop_next -= 1;
                            dropped += 1;
                            sock.verdict(id, Verdict::Drop)
                                .map_err(|e| ("send verdicts", e))?;
                            continue;
                        }
                        let hold = if stopping {
                            Duration::ZERO
                        } else {
                            rng.hold(&control.spec)
                        };
                        let mut deadline = now + hold;
                        if control.spec.preserve_order {
                            deadline = deadline.max(last_deadline);
                        }
                        last_deadline = last_deadline.max(deadline);
                        seq += 1;
                        heap.push(Reverse((deadline, seq, id, now)));
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => overruns += 1,
                Err(e) => return Err(("receive packets", e)),
            }
        }
        ids.clear();

        // Release what is due (everything, when stopping).
        let now = Instant::now();
        // The release time is taken before the verdicts are sent: the kernel passes
        // each packet on inside the send, so a stamp taken after it could fall after
        // the packet's arrival at the far end, and a hold must never exceed the delay
        // measured across the element.
        while let Some(&Reverse((deadline, _, id, read))) = heap.peek() {
            if deadline > now && !stopping {
                break;
            }
            heap.pop();
            released.push((
                now.saturating_duration_since(deadline),
                now.saturating_duration_since(read),
            ));
            sock.verdict(id, Verdict::Accept)
                .map_err(|e| ("send verdicts", e))?;
        }
        sock.flush().map_err(|e| ("send verdicts", e))?;

        {
            let mut acc = lock(&shared.stats);
            acc.stats.queued += queued;
            acc.stats.dropped += dropped;
            acc.stats.overruns += overruns;
            acc.stats.accepted += released.len() as u64;
            acc.stats.held = heap.len();
            acc.stats.verdict_errors = sock.verdict_errors;
            if !stopping {
                for &(late, hold) in &released {
                    acc.record_late(late);
                    acc.record_hold(hold);
                }
            }
        }
        released.clear();
        if stopping && heap.is_empty() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let mut rng = Jitter::new(42);
        let spec = DelaySpec::jittered(Duration::from_millis(20), Duration::from_millis(5));
        let holds: Vec<Duration> = (0..10_000).map(|_| rng.hold(&spec)).collect();
        let min = holds.iter().min().unwrap();
        let max = holds.iter().max().unwrap();
        assert!(*min >= Duration::from_millis(15) && *min < Duration::from_millis(16));
        assert!(*max <= Duration::from_millis(25) && *max > Duration::from_millis(24));
        let mean = holds.iter().sum::<Duration>() / holds.len() as u32;
        assert!((mean.as_secs_f64() - 0.020).abs() < 0.0005, "{mean:?}");
    }

    #[test]
    fn p99_comes_from_the_histogram() {
        let mut acc = Accumulator::new();
        for _ in 0..99 {
            acc.record_late(Duration::from_micros(5));
        }
        acc.record_late(Duration::from_millis(3));
        let s = acc.snapshot();
        assert_eq!(s.late_p99, Duration::from_micros(10));
        assert_eq!(s.late_max, Duration::from_millis(3));
    }

    #[test]
    fn hold_times_summarise_and_reset() {
        let mut acc = Accumulator::new();
        assert_eq!(acc.snapshot().hold_mean, Duration::ZERO);
        for ms in [5, 7, 6] {
            acc.record_late(Duration::from_millis(ms - 5));
            acc.record_hold(Duration::from_millis(ms));
        }
        acc.stats.accepted = 3;
        let s = acc.snapshot();
        assert_eq!(s.holds, 3);
        assert_eq!(
            (s.hold_min, s.hold_mean, s.hold_max),
            (
                Duration::from_millis(5),
                Duration::from_millis(6),
                Duration::from_millis(7)
            )
        );
        acc.reset_timing();
        acc.record_late(Duration::ZERO);
        acc.record_hold(Duration::from_millis(9));
        let s = acc.snapshot();
        assert_eq!((s.accepted, s.holds), (3, 1));
        assert_eq!(acc.hold_log, [Duration::from_millis(9)]);
        assert_eq!((s.hold_min, s.hold_max), (s.hold_mean, s.hold_mean));
        assert_eq!(s.late_max, Duration::ZERO);
        assert_eq!(s.late_mean, Duration::ZERO);
    }
}

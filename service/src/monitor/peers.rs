//! The daemon's `[[peer]]`s: one STAMP session per peer (the
//! [`Session`](crate::peer::Session) sender on its own thread), its samples
//! kept over the same window as targets' hops, and windowed statistics for
//! the API and /metrics, a batch of its probes every second into the
//! history store, and every second its window handed to the alert rules
//! ([`judge`]). Reloads start, stop and restart sessions by name and never
//! touch targets.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::alerts::Alerts;
use crate::config::{Config, PeerConfig, PeerDiff};
use crate::model::TargetId;
use crate::peer::{Direction, OwdValidity, Sample, Session, Summary};
use crate::probe::TimestampSource;
use crate::store::{now_ms, PeerBatch, PeerSeries, Store};

/// How long a failed session waits before it is started again.
const RETRY: Duration = Duration::from_secs(5);
/// How often the session thread looks at its stop flag and refreshes totals.
const TICK: Duration = Duration::from_millis(100);
/// How often a peer's probes go to the store, as one batch: a raw history
/// point per second, like a target probed once a second, whatever the
/// probe interval (at 1 ms one value per probe would be 1,000 keys a second).
const BATCH: Duration = Duration::from_secs(1);
/// How often each peer's window is judged by the alert rules: a peer's
/// "round", at the history batch's pace (its window changes with every
/// probe; judging it per probe at 1 ms would be a thousand rounds a second).
pub const ALERT_EVERY: Duration = BATCH;

/// Where a peer's session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    Paused,
    /// Starting, or waiting to start again after a failure.
    Starting,
    Running,
    /// The last attempt failed; retried every few seconds.
    Failed {
        error: String,
    },
}

/// One peer as the API shows it.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub config: PeerConfig,
    pub state: PeerState,
    /// Our end of the session, while it runs.
    pub local: Option<SocketAddr>,
    /// The last `window` probes.
    pub window: WindowStats,
    /// How many probes the window holds when full (`[statistics] window`).
    pub window_probes: usize,
    /// Probes resolved into the window since this peer's runner started
    /// (session restarts included): it grows whenever `window` took new
    /// probes, so the alert rules judge each update once.
    pub resolved: u64,
    /// Everything since the session (re)started, from the sender itself.
    pub totals: Option<Summary>,
}

/// Statistics over the probes in the window (serialised into peer alerts'
/// snapshots).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowStats {
    /// Probes resolved (answered or lost).
    pub probes: u64,
    pub received: u64,
    pub lost: u64,
    /// Probes lost on the way to the reflector (its counter did not advance).
    pub lost_forward: u64,
    /// Probes reflected whose reply never came back.
    pub lost_backward: u64,
    /// Losses after the last answer, whose direction is not known yet.
    pub lost_unknown: u64,
    pub duplicates_forward: u64,
    pub duplicates_backward: u64,
    /// Replies that arrived after one to a later probe.
    pub reordered: u64,
    pub rtt: Option<DelayWindow>,
    /// Nearest-rank percentiles of the window's RTTs (the rule targets' hop
    /// windows follow), nanoseconds.
    pub rtt_p50_ns: Option<u64>,
    pub rtt_p95_ns: Option<u64>,
    pub rtt_p99_ns: Option<u64>,
    pub forward: Option<DelayWindow>,
    pub backward: Option<DelayWindow>,
    /// RFC 3550 jitter of the RTT and of each one-way delay, nanoseconds.
    pub jitter_rtt_ns: Option<f64>,
    pub jitter_forward_ns: Option<f64>,
    pub jitter_backward_ns: Option<f64>,
    /// Whether the one-way delays can be believed (latest answer's verdict).
    pub owd: Option<OwdValidity>,
    pub source: Option<TimestampSource>,
}

impl WindowStats {
    /// Lost share of the window's probes, 0..=1.
    pub fn loss_ratio(&self) -> Option<f64> {
        (self.probes > 0).then(|| self.lost as f64 / self.probes as f64)
    }

    /// Forward / backward loss as a share of the probes that could be lost there.
    pub fn direction_loss_ratio(&self, direction: Direction) -> Option<f64> {
        if self.probes == 0 {
            return None;
        }
        Some(match direction {
            Direction::Forward => self.lost_forward as f64 / self.probes as f64,
            // Only packets that reached the reflector can be lost on the way back.
            Direction::Backward => {
                let reached = self.probes - self.lost_forward;
                if reached == 0 {
                    0.0
                } else {
                    self.lost_backward as f64 / reached as f64
                }
            }
            Direction::Unknown => self.lost_unknown as f64 / self.probes as f64,
        })
    }
}

/// Min / mean / max of one delay over the window, nanoseconds (one-way delays
/// may be negative when the clocks disagree).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DelayWindow {
    pub min_ns: i64,
    pub mean_ns: f64,
    pub max_ns: i64,
    pub samples: u64,
}

impl DelayWindow {
    fn of(values: impl Iterator<Item = i64>) -> Option<DelayWindow> {
        let (mut min, mut max, mut sum, mut n) = (i64::MAX, i64::MIN, 0i128, 0u64);
        for v in values {
            min = min.min(v);
            max = max.max(v);
            sum += i128::from(v);
            n += 1;
        }
        (n > 0).then(|| DelayWindow {
            min_ns: min,
            mean_ns: sum as f64 / n as f64,
            max_ns: max,
            samples: n,
        })
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `q` of all values at or below it.
fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
    sorted.get(rank - 1).copied()
}

/// RFC 3550 §6.4.1: J += (|D| − J) / 16 over consecutive values.
fn jitter(values: impl Iterator<Item = i64>) -> Option<f64> {
    let (mut last, mut j, mut n) = (None::<i64>, 0.0f64, 0u64);
    for v in values {
        if let Some(prev) = last {
            j += ((v - prev).unsigned_abs() as f64 - j) / 16.0;
            n += 1;
        }
        last = Some(v);
    }
    (n > 0).then_some(j)
}

/// One resolved probe in the window, its sequence number unwrapped to 64 bits.
#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    sample: Sample,
}

/// The last `capacity` probes of one peer, in the order they resolved.
#[derive(Debug, Clone)]
pub struct PeerWindow {
    capacity: usize,
    entries: VecDeque<Entry>,
    /// Entries that are probes (not duplicates), kept so pushing is O(1).
    probes: usize,
    /// Highest sender sequence seen, for unwrapping the 32-bit ones.
    highest: Option<u64>,
    /// Probes pushed since the window was made; [`PeerWindow::clear`] keeps it.
    resolved: u64,
}

impl PeerWindow {
    pub fn new(capacity: usize) -> PeerWindow {
        PeerWindow {
            capacity: capacity.max(1),
            entries: VecDeque::new(),
            probes: 0,
            highest: None,
            resolved: 0,
        }
    }

    /// How many probes the window holds when full.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Probes pushed since the window was made (not reset by a clear).
    pub fn resolved(&self) -> u64 {
        self.resolved
    }

    pub fn push(&mut self, sample: Sample) {
        let seq32 = match sample {
            Sample::Reflected(r) => r.seq,
            Sample::Duplicate { seq, .. } | Sample::Lost { seq, .. } => seq,
        };
        let seq = match self.highest {
            None => u64::from(seq32),
            Some(hi) => {
                let diff = i64::from(seq32.wrapping_sub(hi as u32) as i32);
                hi.saturating_add_signed(diff)
            }
        };
        self.highest = Some(self.highest.map_or(seq, |hi| hi.max(seq)));
        let is_probe = |sample: &Sample| !matches!(sample, Sample::Duplicate { .. });
        self.probes += usize::from(is_probe(&sample));
        self.resolved += u64::from(is_probe(&sample));
        self.entries.push_back(Entry { seq, sample });
        // Duplicates do not count against the window: it holds `capacity` probes.
        while self.probes > self.capacity {
            if let Some(old) = self.entries.pop_front() {
                self.probes -= usize::from(is_probe(&old.sample));
            }
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.probes = 0;
        self.highest = None;
    }

    pub fn stats(&self) -> WindowStats {
        let mut stats = WindowStats::default();
        // Answered probes by sender sequence → reflector sequence.
        let mut answered: BTreeMap<u64, u32> = BTreeMap::new();
        let mut lost: Vec<u64> = Vec::new();
        let mut highest_answered: Option<u64> = None;
        for entry in &self.entries {
            match entry.sample {
                Sample::Reflected(r) => {
                    stats.probes += 1;
                    stats.received += 1;
                    if highest_answered.is_some_and(|hi| entry.seq < hi) {
                        stats.reordered += 1;
                    }
                    highest_answered =
                        Some(highest_answered.map_or(entry.seq, |h| h.max(entry.seq)));
                    answered.insert(entry.seq, r.reflector_seq);
                    stats.owd = Some(r.owd);
                    stats.source = Some(stats.source.map_or(r.source, |s| s.max(r.source)));
                }
                Sample::Lost { .. } => {
                    stats.probes += 1;
                    stats.lost += 1;
                    lost.push(entry.seq);
                }
                Sample::Duplicate { direction, .. } => match direction {
                    Direction::Forward => stats.duplicates_forward += 1,
                    Direction::Backward | Direction::Unknown => stats.duplicates_backward += 1,
                },
            }
        }
        lost.sort_unstable();
        // Between two answers (s1, r1) and (s2, r2) the reflector counted
        // r2 − r1 − 1 probes whose replies never came back; the rest of the
        // s2 − s1 − 1 never reached it.
        let mut attributed_forward = 0u64;
        let mut attributed_backward = 0u64;
        let mut pairs = answered.iter().peekable();
        while let Some((&s1, &r1)) = pairs.next() {
            let Some(&(&s2, &r2)) = pairs.peek() else {
                break;
            };
            let missing = s2 - s1 - 1;
            let lost_here =
                (lost.partition_point(|&s| s < s2) - lost.partition_point(|&s| s <= s1)) as u64;
            let backward = u64::from(r2.wrapping_sub(r1).wrapping_sub(1)).min(lost_here);
            attributed_backward += backward;
            attributed_forward += lost_here.min(missing).saturating_sub(backward);
        }
        stats.lost_forward = attributed_forward;
        stats.lost_backward = attributed_backward;
        stats.lost_unknown = stats.lost - attributed_forward - attributed_backward;

        let reflections = || {
            self.entries.iter().filter_map(|e| match e.sample {
                Sample::Reflected(r) => Some(r),
                _ => None,
            })
        };
        stats.rtt = DelayWindow::of(reflections().map(|r| r.rtt_ns as i64));
        let mut rtts: Vec<u64> = reflections().map(|r| r.rtt_ns).collect();
        rtts.sort_unstable();
        stats.rtt_p50_ns = nearest_rank(&rtts, 0.50);
        stats.rtt_p95_ns = nearest_rank(&rtts, 0.95);
        stats.rtt_p99_ns = nearest_rank(&rtts, 0.99);
        stats.forward = DelayWindow::of(reflections().map(|r| r.forward_ns));
        stats.backward = DelayWindow::of(reflections().map(|r| r.backward_ns));
        stats.jitter_rtt_ns = jitter(reflections().map(|r| r.rtt_ns as i64));
        stats.jitter_forward_ns = jitter(reflections().map(|r| r.forward_ns));
        stats.jitter_backward_ns = jitter(reflections().map(|r| r.backward_ns));
        stats
    }
}

/// The store's form of a batch of resolved probes. Loss is attributed to a
/// direction as in the window (by the reflector's counter), within the batch;
/// one-way delays are kept only while the clocks are trusted, and a negative
/// one (clocks off by more than the delay) counts as zero.
fn history_batch(samples: &[Sample]) -> PeerBatch {
    let mut window = PeerWindow::new(samples.len());
    for sample in samples {
        window.push(*sample);
    }
    let stats = window.stats();
    let mut batch = PeerBatch::default();
    for sample in samples {
        match sample {
            Sample::Reflected(r) => {
                batch.push(PeerSeries::Rtt, Some(r.rtt_ns));
                if r.owd.is_reliable() {
                    let ns = |v: i64| Some(u64::try_from(v).unwrap_or(0));
                    batch.push(PeerSeries::Forward, ns(r.forward_ns));
                    batch.push(PeerSeries::Backward, ns(r.backward_ns));
                }
            }
            Sample::Lost { .. } => batch.push(PeerSeries::Rtt, None),
            Sample::Duplicate { .. } => {}
        }
    }
    for _ in 0..stats.lost_forward {
        batch.push(PeerSeries::Forward, None);
    }
    for _ in 0..stats.lost_backward {
        batch.push(PeerSeries::Backward, None);
    }
    batch
}

/// A peer's probes on their way to the store.
struct History<'a> {
    store: &'a Store,
    peer: &'a TargetId,
    samples: Vec<Sample>,
    started: Instant,
    /// Unix ms of the batch being collected; strictly increasing, so two
    /// batches never share a key.
    at_ms: u64,
}

impl History<'_> {
    fn new<'a>(store: &'a Store, peer: &'a TargetId) -> History<'a> {
        History {
            store,
            peer,
            samples: Vec::new(),
            started: Instant::now(),
            at_ms: now_ms(),
        }
    }

    /// Hands the batch to the store once it is [`BATCH`] old, or now if `all`.
    fn maybe_record(&mut self, all: bool) {
        if !all && self.started.elapsed() < BATCH {
            return;
        }
        if !self.samples.is_empty() {
            let batch = history_batch(&self.samples);
            if let Err(error) = self.store.record_peer_batch(self.peer, self.at_ms, &batch) {
                tracing::warn!(peer = %self.peer, %error, "peer history not recorded");
            }
            self.samples.clear();
        }
        self.started = Instant::now();
        self.at_ms = now_ms().max(self.at_ms + 1);
    }
}

/// What the session thread shares with readers.
#[derive(Debug)]
struct Live {
    state: PeerState,
    local: Option<SocketAddr>,
    window: PeerWindow,
    totals: Option<Summary>,
}

/// One peer's running session thread.
struct PeerRunner {
    config: PeerConfig,
    live: Arc<Mutex<Live>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeerRunner {
    fn start(config: PeerConfig, window: usize, store: Option<Arc<Store>>) -> PeerRunner {
        let live = Arc::new(Mutex::new(Live {
            state: if config.paused {
                PeerState::Paused
            } else {
                PeerState::Starting
            },
            local: None,
            window: PeerWindow::new(window),
            totals: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (!config.paused)
            .then(|| {
                let name = config.name.clone();
                let live_for_error = Arc::clone(&live);
                let (config, live, stop) = (config.clone(), Arc::clone(&live), Arc::clone(&stop));
                std::thread::Builder::new()
                    .name(format!("peer-{name}"))
                    .spawn(move || run_session(&config, &live, &stop, store.as_deref()))
                    .map_err(|err| {
                        tracing::error!(peer = %name, error = %err, "cannot start the peer thread");
                        lock(&live_for_error).state = PeerState::Failed {
                            error: format!("starting the session thread: {err}"),
                        };
                    })
                    .ok()
            })
            .flatten();
        PeerRunner {
            config,
            live,
            stop,
            thread,
        }
    }

    fn view(&self) -> PeerView {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        PeerView {
            config: self.config.clone(),
            state: live.state.clone(),
            local: live.local,
            window: live.window.stats(),
            window_probes: live.window.capacity(),
            resolved: live.window.resolved(),
            totals: live.totals.clone(),
        }
    }
}

impl Drop for PeerRunner {
    /// Stops the session without waiting for it: the thread lets the probes
    /// in flight finish (up to the timeout) on its own, so a reload never
    /// blocks on it. [`PeerSet::shutdown`] is the one that waits.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn lock(live: &Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    live.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs sessions for one peer until `stop`, starting again after failures.
fn run_session(config: &PeerConfig, live: &Mutex<Live>, stop: &AtomicBool, store: Option<&Store>) {
    while !stop.load(Ordering::Relaxed) {
        lock(live).state = PeerState::Starting;
        match Session::start(config.sender_config()) {
            Ok(session) => {
                {
                    let mut l = lock(live);
                    l.state = PeerState::Running;
                    l.local = Some(session.local_addr());
                    l.window.clear();
                }
                tracing::info!(peer = %config.name, reflector = %config.reflector(), "peer session started");
                let mut history = store.map(|store| History::new(store, &config.name));
                let error = pump(&session, live, stop, history.as_mut());
                session.stop();
                if let Some(history) = &mut history {
                    history.maybe_record(true);
                }
                let ended = session.wait();
                let mut l = lock(live);
                l.local = None;
                match (error, ended) {
                    (_, Err(err)) => {
                        l.state = PeerState::Failed {
                            error: err.to_string(),
                        }
                    }
                    (Some(err), Ok(_)) => l.state = PeerState::Failed { error: err },
                    (None, Ok(summary)) => l.totals = Some(summary),
                }
            }
            Err(err) => {
                tracing::warn!(peer = %config.name, error = %err, "peer session failed to start");
                lock(live).state = PeerState::Failed {
                    error: err.to_string(),
                };
            }
        }
        let retry_at = Instant::now() + RETRY;
        while !stop.load(Ordering::Relaxed) && Instant::now() < retry_at {
            std::thread::sleep(TICK);
        }
    }
}

/// Moves samples into the window (and the history batch) until `stop` or
/// the session ends; returns why it ended early, if it did.
fn pump(
    session: &Session,
    live: &Mutex<Live>,
    stop: &AtomicBool,
    mut history: Option<&mut History<'_>>,
) -> Option<String> {
    let mut refreshed = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(history) = history.as_deref_mut() {
            history.maybe_record(false);
        }
        match session.samples().recv_timeout(TICK) {
            Ok(sample) => {
                let mut l = lock(live);
                l.window.push(sample);
                let mut keep = |sample: Sample| {
                    if let Some(history) = history.as_deref_mut() {
                        history.samples.push(sample);
                    }
                };
                keep(sample);
                // Take what is queued under one lock.
                while let Ok(sample) = session.samples().try_recv() {
                    l.window.push(sample);
                    keep(sample);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Some("the session ended".to_owned())
            }
        }
        if refreshed.elapsed() >= TICK {
            refreshed = Instant::now();
            lock(live).totals = Some(session.summary());
        }
        if session.is_finished() {
            return Some("the session ended".to_owned());
        }
    }
    None
}

/// Every configured peer's session.
pub struct PeerSet {
    window: usize,
    /// Where each peer's history goes; `None` keeps only the live window.
    store: Option<Arc<Store>>,
    peers: Vec<PeerRunner>,
}

impl PeerSet {
    /// Starts a session for every peer in `config` that is not paused;
    /// their history goes to `store`, if given.
    pub fn start(config: &Config, store: Option<Arc<Store>>) -> PeerSet {
        let window = config.statistics.window as usize;
        PeerSet {
            window,
            peers: config
                .peers
                .iter()
                .map(|p| PeerRunner::start(p.clone(), window, store.clone()))
                .collect(),
            store,
        }
    }

    /// Applies a reload: new peers start, removed ones stop, changed ones
    /// restart (or only take the new description); the others keep running.
    pub fn apply(&mut self, new: &Config, diff: &PeerDiff) {
        self.peers
            .retain(|p| !diff.removed.contains(&p.config.name));
        for change in &diff.changed {
            let Some(config) = new.peers.iter().find(|p| p.name == change.name) else {
                continue;
            };
            if let Some(slot) = self.peers.iter_mut().find(|p| p.config.name == change.name) {
                if change.restart {
                    *slot = PeerRunner::start(config.clone(), self.window, self.store.clone());
                } else {
                    slot.config = config.clone();
                }
            }
        }
        for name in &diff.added {
            if let Some(config) = new.peers.iter().find(|p| &p.name == name) {
                self.peers.push(PeerRunner::start(
                    config.clone(),
                    self.window,
                    self.store.clone(),
                ));
            }
        }
        // Keep the file's order.
        let order = |name: &TargetId| new.peers.iter().position(|p| &p.name == name);
        self.peers.sort_by_key(|p| order(&p.config.name));
    }

    /// Stops every session at once, then waits for them all to end.
    pub fn shutdown(mut self) {
        for peer in &self.peers {
            peer.stop.store(true, Ordering::Relaxed);
        }
        for peer in &mut self.peers {
            if let Some(thread) = peer.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Every peer, in config order.
    pub fn views(&self) -> Vec<PeerView> {
        self.peers.iter().map(PeerRunner::view).collect()
    }

    pub fn view(&self, name: &str) -> Option<PeerView> {
        self.peers
            .iter()
            .find(|p| p.config.name.as_str() == name)
            .map(PeerRunner::view)
    }
}

/// Hands every peer's window to the alert rules every [`ALERT_EVERY`], until
/// the peer set is gone (the monitor shut down or was dropped). Holds the set
/// weakly, so it never keeps sessions alive.
pub async fn judge(peers: Weak<Mutex<Option<PeerSet>>>, alerts: Arc<Alerts>) {
    let mut tick = tokio::time::interval(ALERT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(peers) = peers.upgrade() else {
            return;
        };
        let views = match peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            Some(set) => set.views(),
            None => return,
        };
        drop(peers);
        for view in &views {
            alerts.on_peer(view).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::{OwdValidity, Reflection};

    fn reflected(seq: u32, reflector_seq: u32, rtt_ms: u64, forward_ms: i64) -> Sample {
        Sample::Reflected(Reflection {
            seq,
            reflector_seq,
            rtt_ns: rtt_ms * 1_000_000,
            forward_ns: forward_ms * 1_000_000,
            backward_ns: (rtt_ms as i64 - forward_ms) * 1_000_000,
            reflector_hold_ns: 10_000,
            forward_ttl: 64,
            backward_ttl: Some(64),
            source: TimestampSource::Kernel,
            owd: OwdValidity::SharedClock,
            sent_unix_ns: 0,
        })
    }

    fn lost(seq: u32) -> Sample {
        Sample::Lost {
            seq,
            sent_unix_ns: 0,
        }
    }

    #[test]
    fn loss_is_attributed_to_the_direction_the_reflector_counter_shows() {
        let mut window = PeerWindow::new(100);
        // seq 0..=5: seq 1 never reached the reflector (r did not advance),
        // seq 3's reply was lost (r advanced from 1 to 3), seq 5 is still open.
        window.push(reflected(0, 0, 30, 20));
        window.push(reflected(2, 1, 30, 20));
        window.push(reflected(4, 3, 30, 20));
        window.push(lost(1));
        window.push(lost(3));
        window.push(lost(5));
        let stats = window.stats();
        assert_eq!((stats.probes, stats.received, stats.lost), (6, 3, 3));
        assert_eq!(stats.lost_forward, 1);
        assert_eq!(stats.lost_backward, 1);
        assert_eq!(stats.lost_unknown, 1);
        assert_eq!(
            stats.direction_loss_ratio(Direction::Forward),
            Some(1.0 / 6.0)
        );
        // 5 probes reached the reflector, one reply was lost.
        assert_eq!(
            stats.direction_loss_ratio(Direction::Backward),
            Some(1.0 / 5.0)
        );
        assert_eq!(stats.loss_ratio(), Some(0.5));
    }

    #[test]
    fn delays_and_jitter_cover_the_window_only() {
        let mut window = PeerWindow::new(3);
        window.push(reflected(0, 0, 1000, 900));
        for (i, rtt) in [(1u32, 30u64), (2, 40), (3, 30)] {
            window.push(reflected(i, i, rtt, 20));
        }
        let stats = window.stats();
        assert_eq!(stats.probes, 3, "the oldest probe left the window");
        let rtt = stats.rtt.expect("answers in the window");
        assert_eq!((rtt.min_ns, rtt.max_ns), (30_000_000, 40_000_000));
        let forward = stats.forward.expect("answers in the window");
        assert_eq!(forward.mean_ns, 20_000_000.0);
        let backward = stats.backward.expect("answers in the window");
        assert_eq!((backward.min_ns, backward.max_ns), (10_000_000, 20_000_000));
        // |40−30| then |30−40|: J = 10/16, then J += (10 − J)/16.
        let j1 = 10_000_000.0 / 16.0;
        let j2 = j1 + (10_000_000.0 - j1) / 16.0;
        assert!((stats.jitter_rtt_ns.expect("three answers") - j2).abs() < 1.0);
        assert_eq!(stats.jitter_forward_ns, Some(0.0));
        // Nearest rank over [30, 30, 40] ms.
        assert_eq!(stats.rtt_p50_ns, Some(30_000_000));
        assert_eq!(stats.rtt_p95_ns, Some(40_000_000));
        assert_eq!(stats.rtt_p99_ns, Some(40_000_000));
        // Every probe counts as resolved, the one that left the window too,
        // and a clear (a session restart) does not start the count over.
        assert_eq!(window.resolved(), 4);
        window.clear();
        assert_eq!((window.stats().probes, window.resolved()), (0, 4));
        assert_eq!(window.stats().rtt_p50_ns, None);
    }

    #[test]
    fn reordering_duplicates_and_wrapping_sequences() {
        let mut window = PeerWindow::new(10);
        window.push(reflected(u32::MAX, 7, 10, 5));
        window.push(reflected(1, 9, 10, 5));
        window.push(reflected(0, 8, 10, 5));
        window.push(Sample::Duplicate {
            seq: 1,
            reflector_seq: 10,
            direction: Direction::Forward,
        });
        let stats = window.stats();
        assert_eq!(stats.probes, 3);
        assert_eq!(stats.reordered, 1, "seq 0 came after seq 1");
        assert_eq!(stats.duplicates_forward, 1);
        assert_eq!(stats.lost, 0);
        assert_eq!(window.resolved(), 3, "a duplicate is not a probe");
    }

    #[test]
    fn duplicates_do_not_push_probes_out_of_the_window() {
        let mut window = PeerWindow::new(2);
        window.push(reflected(0, 0, 10, 5));
        window.push(reflected(1, 1, 10, 5));
        window.push(Sample::Duplicate {
            seq: 1,
            reflector_seq: 2,
            direction: Direction::Backward,
        });
        let stats = window.stats();
        assert_eq!((stats.probes, stats.duplicates_backward), (2, 1));
        window.push(reflected(2, 3, 10, 5));
        assert_eq!(window.stats().probes, 2);
    }

    #[test]
    fn a_history_batch_keeps_rtt_trusted_delays_and_directional_loss() {
        let unreliable = match reflected(5, 4, 30, 20) {
            Sample::Reflected(r) => Sample::Reflected(Reflection {
                owd: OwdValidity::Unreliable {
                    reason: crate::peer::OwdDoubt::LocalUnsynchronized,
                },
                ..r
            }),
            other => other,
        };
        let samples = [
            reflected(0, 0, 30, 20),
            lost(1), // the reflector's counter did not move: forward
            reflected(2, 1, 30, 20),
            lost(3),                 // the counter moved past it: backward
            reflected(4, 3, 30, -5), // clocks off: forward counts as 0
            Sample::Duplicate {
                seq: 4,
                reflector_seq: 3,
                direction: Direction::Backward,
            },
            unreliable, // RTT only
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::store::StoreConfig::default()).unwrap();
        let peer = TargetId::new("p").unwrap();
        store
            .record_peer_batch(&peer, 1_000, &history_batch(&samples))
            .unwrap();
        store.flush().unwrap();
        let h = store
            .peer_history(&peer, 0, 2_000, crate::store::Resolution::Raw)
            .unwrap();
        let totals = |s: PeerSeries| {
            let t = &h.get(s).unwrap().total;
            (t.sent, t.lost, t.min_ns, t.max_ns)
        };
        assert_eq!(
            totals(PeerSeries::Rtt),
            (6, 2, Some(30_000_000), Some(30_000_000))
        );
        assert_eq!(
            totals(PeerSeries::Forward),
            (4, 1, Some(0), Some(20_000_000))
        );
        assert_eq!(
            totals(PeerSeries::Backward),
            (4, 1, Some(10_000_000), Some(35_000_000))
        );
    }

    fn config(text: &str) -> Config {
        Config::parse(text, "hopwatch.toml").expect("a valid config")
    }

    #[test]
    fn a_peer_set_measures_over_loopback_and_follows_reloads() {
        let reflector =
            crate::peer::Reflector::start(crate::peer::ReflectorConfig::new(vec!["127.0.0.1:0"
                .parse()
                .unwrap()]))
            .expect("a loopback reflector");
        let port = reflector.local_addrs()[0].port();
        let running = config(&format!(
            "[[peer]]\nname = \"lo\"\naddress = \"127.0.0.1\"\nport = {port}\ninterval = \"5ms\"\n\
             clock = \"shared\"\n[[peer]]\nname = \"idle\"\naddress = \"127.0.0.1\"\npaused = true\n"
        ));
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(dir.path(), crate::store::StoreConfig::default()).unwrap());
        let started_ms = now_ms();
        let mut set = PeerSet::start(&running, Some(Arc::clone(&store)));
        let deadline = Instant::now() + Duration::from_secs(10);
        let view = loop {
            let view = set.view("lo").expect("configured");
            if view.window.received >= 20 || Instant::now() > deadline {
                break view;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(view.state, PeerState::Running, "{view:?}");
        assert!(view.window.received >= 20, "{view:?}");
        assert_eq!(view.window.lost, 0, "{view:?}");
        assert_eq!(view.window.owd, Some(OwdValidity::SharedClock));
        assert_eq!(view.window_probes, 100, "[statistics] window");
        assert!(view.resolved >= view.window.probes, "{view:?}");
        assert!(view.window.rtt.expect("answers").mean_ns < 50e6, "{view:?}");
        assert_eq!(
            set.view("idle").expect("configured").state,
            PeerState::Paused
        );
        // A batch a second reaches the store, with RTT and (shared clock) OWD.
        let lo = TargetId::new("lo").unwrap();
        let history = loop {
            store.flush().unwrap();
            let history = store
                .peer_history(&lo, started_ms, now_ms() + 1, crate::store::Resolution::Raw)
                .unwrap();
            if !history.series[0].points.is_empty() || Instant::now() > deadline {
                break history;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let rtt = history.get(PeerSeries::Rtt).unwrap();
        assert!(!rtt.points.is_empty(), "{history:?}");
        assert!(rtt.total.sent >= 20 && rtt.total.lost == 0, "{history:?}");
        assert!(rtt.total.max_ns.unwrap() < 50_000_000, "{history:?}");
        let forward = history.get(PeerSeries::Forward).unwrap();
        assert_eq!(forward.total.sent, rtt.total.sent, "{history:?}");

        let reloaded = config(
            "[[peer]]\nname = \"idle\"\naddress = \"127.0.0.1\"\npaused = true\nlabel = \"I\"\n",
        );
        let diff = PeerDiff::between(&running.peers, &reloaded.peers);
        set.apply(&reloaded, &diff);
        let views = set.views();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].config.display_name(), "I");
        assert!(set.view("lo").is_none());
    }
}

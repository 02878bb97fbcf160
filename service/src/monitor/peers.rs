//! The daemon's `[[peer]]`s: one STAMP session per peer (the
//! [`Session`](crate::peer::Session) sender on its own thread), its samples
//! kept over the same window as targets' hops, and windowed statistics for
//! the API and /metrics, a batch of its probes every second into the
//! history store, and every second its window handed to the alert rules
//! ([`judge`]). Reloads start, stop and restart sessions by name and never
//! touch targets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::alerts::{Alerts, PeerInfo, PeerLink, SessionState};
pub use crate::analysis::peer_window::{DelayWindow, PeerWindow, WindowStats};
use crate::config::{Config, PeerConfig, PeerDiff};
use crate::model::TargetId;
use crate::peer::{Sample, Session, Summary};
use crate::store::{PeerBatch, PeerSeries, Store};
use crate::sys::{self, now_ms};

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

impl PeerView {
    /// What this peer's alerts say about it.
    pub fn alert_info(&self) -> PeerInfo<'_> {
        PeerInfo {
            name: &self.config.name,
            label: self.config.label.as_deref(),
            address: self.config.address,
            tags: &self.config.tags,
        }
    }

    /// This update of the peer's window, as its alert rules judge it.
    pub fn alert_link(&self) -> PeerLink<'_> {
        PeerLink {
            state: match &self.state {
                PeerState::Paused => SessionState::Paused,
                PeerState::Starting => SessionState::Starting,
                PeerState::Running => SessionState::Running,
                PeerState::Failed { error } => SessionState::Failed { error },
            },
            window: &self.window,
            window_probes: self.window_probes,
            resolved: self.resolved,
        }
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
                        sys::lock(&live_for_error).state = PeerState::Failed {
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
        let live = sys::lock(&self.live);
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

/// Runs sessions for one peer until `stop`, starting again after failures.
fn run_session(config: &PeerConfig, live: &Mutex<Live>, stop: &AtomicBool, store: Option<&Store>) {
    while !stop.load(Ordering::Relaxed) {
        sys::lock(live).state = PeerState::Starting;
        match Session::start(config.sender_config()) {
            Ok(session) => {
                {
                    let mut l = sys::lock(live);
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
                let mut l = sys::lock(live);
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
                sys::lock(live).state = PeerState::Failed {
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
                let mut l = sys::lock(live);
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
            sys::lock(live).totals = Some(session.summary());
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
        let views = match sys::lock(&peers).as_ref() {
            Some(set) => set.views(),
            None => return,
        };
        drop(peers);
        for view in &views {
            alerts.on_peer(&view.alert_info(), &view.alert_link()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::peer_window::test_samples::{lost, reflected};
    use crate::peer::{Direction, OwdValidity, Reflection};

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

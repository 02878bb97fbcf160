//! The delivery worker: drains the outbox to the webhooks, one lane per
//! (webhook, subject: a target, or a peer as `peer:NAME`). A lane sends its oldest event and only moves on once
//! the receiver accepted it (any 2xx), so events arrive in order per target;
//! a failing lane waits (exponential backoff with jitter) without holding up
//! other targets or other webhooks. Every attempt has a timeout. Failures are
//! logged, counted and shown in [`WebhookStatus`].
//!
//! Alertmanager webhooks also get every firing alert again every
//! [`DeliveryOptions::resend_every`] (Alertmanager resolves an alert nobody
//! re-sends). A re-send is not an outbox event: it is rebuilt from the raised
//! alerts, goes through the lane like an event (so it never overtakes the
//! clear of the same alert) and only when the lane has nothing queued. It
//! carries the alert's latest localisation, so it never takes an update back.
//!
//! The worker also keeps the outbox bounded: at every enqueue and every
//! [`PRUNE_EVERY`] it has the outbox drop deliveries older than
//! [`DeliveryOptions::max_age`] or beyond [`DeliveryOptions::max_bytes`]
//! (see [`Outbox::prune`]), takes them off their lanes and counts them per
//! webhook and reason.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use super::error::{AlertsError, DeliveryError};
use super::event::{now_ms, AlertEvent};
use super::format;
use super::outbox::{DropReason, Outbox, Queued};
use super::settings::{WebhookConfig, WebhookFormat};
use super::sign::{self, IDEMPOTENCY_HEADER, SIGNATURE_HEADER};
use super::subject::Subject;
use crate::sys;

/// The retry delays of a lane: `retry_initial`, doubling up to `retry_max`;
/// each delay gets up to 100% added at random (so delays stay between the
/// exponential step and twice it), so lanes that failed together do not retry
/// together.
pub fn backoff(retry_initial: Duration, retry_max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(retry_initial)
        .with_max_delay(retry_max.max(retry_initial))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// How often the outbox is checked for deliveries past their age.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How the worker keeps Alertmanager's view current and the outbox bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// How often firing alerts are re-sent to Alertmanager webhooks. Each
    /// send (the raise included) is valid for [`DeliveryOptions::valid_for`].
    pub resend_every: Duration,
    /// `[alerts] outbox_max_age`: older undelivered events are dropped.
    pub max_age: Duration,
    /// `[alerts] outbox_max_bytes`: the undelivered events' JSON beyond it
    /// is dropped, oldest first.
    pub max_bytes: u64,
}

impl DeliveryOptions {
    /// Prometheus' own default resend delay.
    pub const DEFAULT_RESEND: Duration = Duration::from_secs(60);

    /// How long Alertmanager keeps a firing alert it hears nothing more
    /// about: four re-send intervals, as Prometheus does, so three lost
    /// re-sends in a row do not resolve it.
    pub fn valid_for(&self) -> Duration {
        self.resend_every * 4
    }
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            resend_every: Self::DEFAULT_RESEND,
            max_age: super::settings::defaults::ALERT_OUTBOX_MAX_AGE,
            max_bytes: super::settings::defaults::ALERT_OUTBOX_MAX_BYTES,
        }
    }
}

/// Delivery counters over all webhooks, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCounters {
    /// Events accepted by a receiver (one per webhook), since start.
    pub delivered: u64,
    /// Attempts that failed (error, timeout or non-2xx), since start.
    pub failed_attempts: u64,
    /// Deliveries waiting in the outbox now.
    pub pending: u64,
}

/// One webhook's delivery state, for the UI and the API. Holds no URL path,
/// query or credentials, and no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookStatus {
    pub name: String,
    /// `scheme://host[:port]/…` only.
    pub url: String,
    pub format: WebhookFormat,
    /// Whether requests are signed (the secret itself is never shown).
    pub signed: bool,
    /// Events waiting in the outbox for this webhook.
    pub pending: u64,
    /// Events accepted since start.
    pub delivered: u64,
    /// Alertmanager only: re-sends of firing alerts accepted since start.
    pub resent: u64,
    /// Attempts that failed since start (events and re-sends).
    pub failed_attempts: u64,
    /// Attempts that failed since the last one that succeeded: 0 when healthy.
    pub consecutive_failures: u64,
    pub last_success_ms: Option<u64>,
    /// The latest failure (scrubbed of the URL), and when.
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    /// When the next retry of a failed delivery is due, if one waits.
    pub next_retry_ms: Option<u64>,
    /// Targets whose head-of-line event is waiting for a retry.
    pub retrying_targets: Vec<String>,
    /// Deliveries dropped undelivered since start: older than the outbox's
    /// maximum age.
    pub dropped_age: u64,
    /// Deliveries dropped undelivered since start: beyond the outbox's byte
    /// budget.
    pub dropped_bytes: u64,
}

#[derive(Default)]
struct HookStats {
    delivered: AtomicU64,
    dropped_age: AtomicU64,
    dropped_bytes: AtomicU64,
    resent: AtomicU64,
    failed_attempts: AtomicU64,
    consecutive_failures: AtomicU64,
    last: Mutex<LastOutcome>,
}

impl HookStats {
    fn last(&self) -> std::sync::MutexGuard<'_, LastOutcome> {
        // Single field writes: a panic leaves them usable.
        sys::lock(&self.last)
    }
}

#[derive(Default)]
struct LastOutcome {
    success_ms: Option<u64>,
    error: Option<String>,
    error_ms: Option<u64>,
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<u64>,
    in_flight: bool,
    retry_at: Option<Instant>,
    backoff: Option<ExponentialBackoff>,
}

impl Lane {
    /// Free to start an attempt at `now`.
    fn ready(&self, now: Instant) -> bool {
        !self.in_flight && self.retry_at.is_none_or(|at| at <= now)
    }
}

type LaneKey = (usize, Subject);

struct Shared {
    hooks: Vec<WebhookConfig>,
    names: Vec<String>,
    options: DeliveryOptions,
    lanes: Mutex<BTreeMap<LaneKey, Lane>>,
    stats: Vec<HookStats>,
    wake: Notify,
}

impl Shared {
    fn lanes(&self) -> std::sync::MutexGuard<'_, BTreeMap<LaneKey, Lane>> {
        // Lane updates are single field writes: a panic leaves them usable.
        sys::lock(&self.lanes)
    }

    /// The `endsAt` of a firing alert sent now.
    fn valid_until_ms(&self) -> u64 {
        now_ms() + self.options.valid_for().as_millis() as u64
    }
}

/// The running delivery worker.
pub struct Delivery {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// The HTTP client of every webhook. Without the system's CA certificates
/// (no `ca-certificates` package, or an unreadable /etc/ssl/certs) the default
/// TLS setup does not build; rather than stop the daemon over it, the client
/// trusts no certificate authority: `http://` webhooks work, `https://` ones
/// fail each attempt with a certificate error (logged, counted, retried) and
/// their alerts wait in the outbox until the certificates are installed and
/// the daemon restarted. Found by booting the package in a minimal Debian
/// (deploy/vm.sh test).
fn webhook_client() -> Result<reqwest::Client, AlertsError> {
    let builder = || {
        reqwest::Client::builder()
            // A redirected POST would become a GET: a 3xx is a failure to fix.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hopwatch/", env!("CARGO_PKG_VERSION")))
    };
    match builder().build() {
        Ok(client) => Ok(client),
        Err(error) => {
            tracing::error!(
                error = %sys::error_chain(&error),
                "webhooks: the system's CA certificates cannot be used (is the ca-certificates \
                 package installed?); https:// webhooks will fail until they can be and hopwatch \
                 is restarted, http:// webhooks work"
            );
            builder()
                .tls_certs_only([])
                .build()
                .map_err(AlertsError::Client)
        }
    }
}

impl Delivery {
    /// Loads what the outbox still owes and starts delivering, with the
    /// default options. Needs a tokio runtime.
    pub fn start(outbox: Arc<Outbox>, hooks: Vec<WebhookConfig>) -> Result<Delivery, AlertsError> {
        Delivery::start_with(outbox, hooks, DeliveryOptions::default())
    }

    /// [`Delivery::start`] with `options`.
    pub fn start_with(
        outbox: Arc<Outbox>,
        hooks: Vec<WebhookConfig>,
        options: DeliveryOptions,
    ) -> Result<Delivery, AlertsError> {
        // reqwest is built without a TLS provider of its own; ring is ours.
        // An error means one is installed already, which is all we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = webhook_client()?;
        let names: Vec<String> = hooks.iter().map(|h| h.name.clone()).collect();
        let mut lanes: BTreeMap<LaneKey, Lane> = BTreeMap::new();
        for Queued {
            webhook,
            target,
            seq,
        } in outbox.queued()?
        {
            if let Some(hook) = names.iter().position(|n| *n == webhook) {
                lanes
                    .entry((hook, target))
                    .or_default()
                    .queue
                    .push_back(seq);
            }
        }
        let pending: usize = lanes.values().map(|l| l.queue.len()).sum();
        if pending > 0 {
            tracing::info!(pending, "resuming undelivered alerts from the outbox");
        }
        let shared = Arc::new(Shared {
            stats: hooks.iter().map(|_| HookStats::default()).collect(),
            hooks,
            names,
            options,
            lanes: Mutex::new(lanes),
            wake: Notify::new(),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(
            Arc::clone(&shared),
            Arc::clone(&outbox),
            client,
            stopped,
        ));
        Ok(Delivery {
            shared,
            outbox,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Queues committed deliveries: `(webhook name, subject, seq)`.
    pub fn enqueue(&self, deliveries: impl IntoIterator<Item = (String, Subject, u64)>) {
        let mut lanes = self.shared.lanes();
        for (webhook, target, seq) in deliveries {
            if let Some(hook) = self.shared.names.iter().position(|n| *n == webhook) {
                lanes
                    .entry((hook, target))
                    .or_default()
                    .queue
                    .push_back(seq);
            }
        }
        drop(lanes);
        // A commit is when the outbox grows: keep it within its budget now.
        prune(&self.shared, &self.outbox);
        self.shared.wake.notify_one();
    }

    pub fn counters(&self) -> DeliveryCounters {
        let pending = self
            .shared
            .lanes()
            .values()
            .map(|l| l.queue.len() as u64)
            .sum();
        let sum = |f: fn(&HookStats) -> &AtomicU64| {
            self.shared
                .stats
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum()
        };
        DeliveryCounters {
            delivered: sum(|s| &s.delivered),
            failed_attempts: sum(|s| &s.failed_attempts),
            pending,
        }
    }

    pub fn status(&self) -> Vec<WebhookStatus> {
        let lanes = self.shared.lanes();
        let (now, now_wall) = (Instant::now(), now_ms());
        self.shared
            .hooks
            .iter()
            .zip(&self.shared.stats)
            .enumerate()
            .map(|(i, (hook, stats))| {
                let mine = || lanes.iter().filter(move |((h, _), _)| *h == i);
                // Lanes in a retry cycle: their head event failed and is
                // waiting (or being retried right now).
                let waiting =
                    || mine().filter(|(_, l)| !l.queue.is_empty() && l.retry_at.is_some());
                let last = stats.last();
                WebhookStatus {
                    name: hook.name.clone(),
                    url: hook.url.redacted(),
                    format: hook.format,
                    signed: hook.secret.is_some(),
                    pending: mine().map(|(_, l)| l.queue.len() as u64).sum(),
                    delivered: stats.delivered.load(Ordering::Relaxed),
                    resent: stats.resent.load(Ordering::Relaxed),
                    failed_attempts: stats.failed_attempts.load(Ordering::Relaxed),
                    consecutive_failures: stats.consecutive_failures.load(Ordering::Relaxed),
                    last_success_ms: last.success_ms,
                    last_error: last.error.clone(),
                    last_error_ms: last.error_ms,
                    // Due in the past or in flight: now.
                    next_retry_ms: waiting()
                        .filter_map(|(_, l)| l.retry_at)
                        .min()
                        .map(|at| now_wall + at.saturating_duration_since(now).as_millis() as u64),
                    retrying_targets: waiting().map(|((_, t), _)| t.to_string()).collect(),
                    dropped_age: stats.dropped_age.load(Ordering::Relaxed),
                    dropped_bytes: stats.dropped_bytes.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Stops the worker. Attempts in flight are abandoned; their events stay in
    /// the outbox and are sent again (same id) after the next start.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = sys::lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// What one attempt sends.
enum Job {
    /// The outbox event `seq`, the head of its lane.
    Event(u64),
    /// Alertmanager: the lane's firing alerts (their raise events with their
    /// latest localisation), again.
    Resend(Vec<AlertEvent>),
}

/// What an attempt was, once it is over.
#[derive(Debug, Clone, Copy)]
enum Sent {
    Event(u64),
    Resend(usize),
}

struct Done {
    hook: usize,
    target: Subject,
    sent: Sent,
    /// The event id, or what was re-sent, on a 2xx.
    result: Result<String, DeliveryError>,
}

/// Attempts in flight, and the lane each belongs to.
struct Attempts {
    set: JoinSet<Done>,
    lanes: HashMap<tokio::task::Id, LaneKey>,
}

impl Attempts {
    /// Starts `job` on the lane `key`, which the caller marked in flight.
    fn spawn(
        &mut self,
        shared: &Arc<Shared>,
        outbox: &Arc<Outbox>,
        client: &reqwest::Client,
        key: LaneKey,
        job: Job,
    ) {
        let (hook, target) = key.clone();
        let shared = Arc::clone(shared);
        let (client, outbox) = (client.clone(), Arc::clone(outbox));
        let handle = self.set.spawn(async move {
            let config = &shared.hooks[hook];
            let valid_until = shared.valid_until_ms();
            let (sent, result) = match job {
                Job::Event(seq) => (
                    Sent::Event(seq),
                    attempt(&client, config, &outbox, seq, valid_until).await,
                ),
                Job::Resend(raises) => (
                    Sent::Resend(raises.len()),
                    resend(&client, config, &raises, valid_until).await,
                ),
            };
            Done {
                hook,
                target,
                sent,
                result,
            }
        });
        self.lanes.insert(handle.id(), key);
    }
}

async fn run(
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    client: reqwest::Client,
    mut stopped: watch::Receiver<bool>,
) {
    let mut attempts = Attempts {
        set: JoinSet::new(),
        lanes: HashMap::new(),
    };
    let resends = shared
        .hooks
        .iter()
        .any(|h| h.format == WebhookFormat::Alertmanager);
    // The first tick is at once: after a restart, alerts Alertmanager may have
    // let expire meanwhile fire again right away.
    let mut resend_tick = tokio::time::interval(shared.options.resend_every);
    resend_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is at once: what aged out while the service was
    // stopped goes before it is attempted.
    let mut prune_tick = tokio::time::interval(PRUNE_EVERY);
    prune_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let wake_at = {
            let now = Instant::now();
            let mut lanes = shared.lanes();
            let mut wake_at: Option<Instant> = None;
            for (key, lane) in lanes.iter_mut() {
                let Some(&seq) = lane.queue.front() else {
                    continue;
                };
                if lane.in_flight {
                    continue;
                }
                if let Some(at) = lane.retry_at.filter(|at| *at > now) {
                    wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
                    continue;
                }
                lane.in_flight = true;
                attempts.spawn(&shared, &outbox, &client, key.clone(), Job::Event(seq));
            }
            wake_at
        };
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stopped.changed() => break,
            done = attempts.set.join_next_with_id(), if !attempts.set.is_empty() => {
                match done {
                    Some(Ok((id, done))) => {
                        attempts.lanes.remove(&id);
                        finish(&shared, &outbox, done);
                    }
                    Some(Err(err)) => {
                        // A panicking attempt: free its lane to try again later.
                        if let Some(key) = attempts.lanes.remove(&err.id()) {
                            if let Some(lane) = shared.lanes().get_mut(&key) {
                                lane.in_flight = false;
                            }
                        }
                        tracing::error!(error = %err, "a webhook delivery attempt panicked");
                    }
                    None => {}
                }
            }
            _ = resend_tick.tick(), if resends => {
                start_resends(&shared, &outbox, &client, &mut attempts);
            }
            _ = prune_tick.tick() => prune(&shared, &outbox),
            _ = shared.wake.notified() => {}
            _ = sleep => {}
        }
    }
    // Abandon attempts in flight, and wait until they are gone, so the outbox
    // is closed (and its lock released) when shutdown returns.
    attempts.set.abort_all();
    while attempts.set.join_next().await.is_some() {}
}

/// Starts a re-send of the firing alerts on every Alertmanager lane that is
/// idle: nothing queued (a queued event, the clear perhaps, goes first and
/// the next tick re-sends what still fires), nothing in flight, no retry due.
fn start_resends(
    shared: &Arc<Shared>,
    outbox: &Arc<Outbox>,
    client: &reqwest::Client,
    attempts: &mut Attempts,
) {
    let active = match outbox.active_all() {
        Ok(active) => active,
        Err(err) => {
            tracing::warn!(error = %err, "reading raised alerts to re-send them failed");
            return;
        }
    };
    let mut firing: BTreeMap<LaneKey, Vec<AlertEvent>> = BTreeMap::new();
    for alert in active {
        // Alerts raised before raise events were kept cannot be rebuilt;
        // they clear as before, and Alertmanager resolves them meanwhile.
        let Some(raise) = alert.firing() else {
            continue;
        };
        for (i, hook) in shared.hooks.iter().enumerate() {
            if hook.format == WebhookFormat::Alertmanager
                && hook
                    .filter
                    .accepts(&alert.target, &raise.target.tags, alert.kind)
            {
                firing
                    .entry((i, alert.target.clone()))
                    .or_default()
                    .push(raise.clone());
            }
        }
    }
    let now = Instant::now();
    let mut lanes = shared.lanes();
    for (key, raises) in firing {
        let lane = lanes.entry(key.clone()).or_default();
        if lane.queue.is_empty() && lane.ready(now) {
            lane.in_flight = true;
            attempts.spawn(shared, outbox, client, key, Job::Resend(raises));
        }
    }
}

/// Has the outbox drop what is too old or over its byte budget, takes the
/// dropped deliveries off their lanes and counts them.
fn prune(shared: &Shared, outbox: &Outbox) {
    let options = &shared.options;
    let dropped = match outbox.prune(now_ms(), options.max_age, options.max_bytes) {
        Ok(dropped) => dropped,
        Err(err) => {
            tracing::warn!(error = %err, "bounding the alert outbox failed; tried again later");
            return;
        }
    };
    if dropped.is_empty() {
        return;
    }
    let mut lanes = shared.lanes();
    for d in dropped {
        let Some(hook) = shared.names.iter().position(|n| *n == d.webhook) else {
            continue;
        };
        if let Some(lane) = lanes.get_mut(&(hook, d.target.clone())) {
            lane.queue.retain(|seq| *seq != d.seq);
        }
        let stats = &shared.stats[hook];
        match d.reason {
            DropReason::Age => &stats.dropped_age,
            DropReason::Bytes => &stats.dropped_bytes,
        }
        .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            webhook = %d.webhook,
            target = %d.target,
            seq = d.seq,
            reason = d.reason.as_str(),
            max_age = ?options.max_age,
            max_bytes = options.max_bytes,
            "undelivered alert dropped from the outbox: it is past the outbox's bounds"
        );
    }
}

/// Records the outcome of one attempt on its lane.
fn finish(shared: &Shared, outbox: &Outbox, done: Done) {
    let hook = &shared.hooks[done.hook];
    let stats = &shared.stats[done.hook];
    let mut lanes = shared.lanes();
    let Some(lane) = lanes.get_mut(&(done.hook, done.target.clone())) else {
        return;
    };
    lane.in_flight = false;
    match (done.sent, done.result) {
        (sent, Ok(what)) => {
            if let Sent::Event(seq) = sent {
                if let Err(err) = outbox.delivered(&hook.name, &done.target, seq, &shared.names) {
                    // The event stays on disk and is sent again after a restart,
                    // with the same id: a duplicate, never a loss.
                    tracing::error!(webhook = %hook.name, error = %err, "could not mark an alert delivered");
                }
                // The head may have been pruned while in flight.
                if lane.queue.front() == Some(&seq) {
                    lane.queue.pop_front();
                }
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(webhook = %hook.name, target = %done.target, event = %what, "alert delivered");
            } else {
                stats.resent.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(webhook = %hook.name, target = %done.target, alerts = %what, "firing alerts re-sent");
            }
            lane.retry_at = None;
            lane.backoff = None;
            stats.consecutive_failures.store(0, Ordering::Relaxed);
            stats.last().success_ms = Some(now_ms());
        }
        (Sent::Event(_), Err(DeliveryError::Missing { seq })) => {
            // Nothing left to send; do not block the lane on it.
            if lane.queue.front() == Some(&seq) {
                lane.queue.pop_front();
            }
            tracing::error!(webhook = %hook.name, target = %done.target, seq, "alert event missing from the outbox; skipped");
        }
        (sent, Err(err)) => {
            let backoff = lane
                .backoff
                .get_or_insert_with(|| backoff(hook.retry_initial, hook.retry_max));
            let delay = backoff.next().unwrap_or(hook.retry_max);
            lane.retry_at = Some(Instant::now() + delay);
            stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            stats.consecutive_failures.fetch_add(1, Ordering::Relaxed);
            let message = hook.url.scrub(&err.chain());
            match sent {
                Sent::Event(seq) => tracing::warn!(
                    webhook = %hook.name,
                    url = %hook.url,
                    target = %done.target,
                    seq,
                    error = %message,
                    retry_in = ?delay,
                    "alert delivery failed; will retry"
                ),
                Sent::Resend(alerts) => tracing::warn!(
                    webhook = %hook.name,
                    url = %hook.url,
                    target = %done.target,
                    alerts,
                    error = %message,
                    "re-sending firing alerts to Alertmanager failed; the next re-send tries again"
                ),
            }
            let mut last = stats.last();
            last.error = Some(message);
            last.error_ms = Some(now_ms());
        }
    }
}

/// One POST of event `seq` to `hook`; returns the event id on a 2xx.
async fn attempt(
    client: &reqwest::Client,
    hook: &WebhookConfig,
    outbox: &Outbox,
    seq: u64,
    valid_until_ms: u64,
) -> Result<String, DeliveryError> {
    let stored = outbox.event(seq)?.ok_or(DeliveryError::Missing { seq })?;
    let event: AlertEvent = serde_json::from_slice(&stored).map_err(|source| {
        DeliveryError::Outbox(AlertsError::Corrupt {
            path: outbox.path().to_owned(),
            seq,
            source,
        })
    })?;
    let body = format::render(hook.format, &stored, &event, valid_until_ms)
        .map_err(|source| DeliveryError::Render { seq, source })?;
    post(client, hook, body, &event.id).await?;
    Ok(event.id)
}

/// One POST re-sending the firing alerts `raises` to an Alertmanager `hook`.
async fn resend(
    client: &reqwest::Client,
    hook: &WebhookConfig,
    raises: &[AlertEvent],
    valid_until_ms: u64,
) -> Result<String, DeliveryError> {
    let body = format::alertmanager_resend(raises, valid_until_ms).map_err(|source| {
        DeliveryError::Render {
            seq: raises.first().map_or(0, |e| e.seq),
            source,
        }
    })?;
    // The idempotency key names what is re-sent and until when, so a
    // receiver that deduplicates on it still takes the next re-send.
    let key = format!(
        "{}-resend-{valid_until_ms}",
        raises.first().map_or("", |e| e.alert_id.as_str())
    );
    post(client, hook, body, &key).await?;
    Ok(raises.len().to_string())
}

/// POSTs `body` to `hook`, signed when it has a secret; a 2xx is success.
async fn post(
    client: &reqwest::Client,
    hook: &WebhookConfig,
    body: Vec<u8>,
    idempotency_key: &str,
) -> Result<(), DeliveryError> {
    let mut request = client
        .post(hook.url.expose().clone())
        .timeout(hook.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_HEADER, idempotency_key);
    if let Some(secret) = &hook.secret {
        request = request.header(SIGNATURE_HEADER, sign::signature(secret, &body));
    }
    let response = request.body(body).send().await.map_err(|err| {
        if err.is_timeout() {
            DeliveryError::Timeout
        } else {
            DeliveryError::Request(err.without_url())
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(DeliveryError::Status {
            status: status.as_u16(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(1_000);
        for _ in 0..50 {
            let delays: Vec<Duration> = backoff(initial, max).take(8).collect();
            let steps = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
            for (delay, step) in delays.iter().zip(steps) {
                let step = Duration::from_millis(step);
                assert!(
                    *delay >= step && *delay < step * 2,
                    "{delay:?} for step {step:?}"
                );
            }
        }
        // Jitter: two schedules differ somewhere.
        let a: Vec<_> = backoff(initial, max).take(5).collect();
        let b: Vec<_> = backoff(initial, max).take(5).collect();
        let c: Vec<_> = backoff(initial, max).take(5).collect();
        assert!(a != b || b != c, "delays are randomised");
    }
}

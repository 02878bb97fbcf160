//! The delivery worker: drains the outbox to the webhooks, one lane per
//! (webhook, target). A lane sends its oldest event and only moves on once
//! the receiver accepted it (any 2xx), so events arrive in order per target;
//! a failing lane waits (exponential backoff with jitter) without holding up
//! other targets or other webhooks. Every attempt has a timeout. Failures are
//! logged, counted and shown in [`WebhookStatus`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::error::{AlertsError, DeliveryError};
use super::event::{now_ms, AlertEvent};
use super::format;
use super::outbox::{Outbox, Queued};
use super::sign::{self, IDEMPOTENCY_HEADER, SIGNATURE_HEADER};
use crate::config::{WebhookConfig, WebhookFormat};
use crate::model::TargetId;

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

/// One webhook's delivery state, for the UI and the API. Holds no URL path or
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookStatus {
    pub name: String,
    /// `scheme://host[:port]/…` only.
    pub url: String,
    pub format: WebhookFormat,
    pub pending: u64,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub last_success_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    /// Targets whose head-of-line event is waiting for a retry.
    pub retrying_targets: Vec<String>,
}

#[derive(Default)]
struct HookStats {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    last: Mutex<LastOutcome>,
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

type LaneKey = (usize, TargetId);

struct Shared {
    hooks: Vec<WebhookConfig>,
    names: Vec<String>,
    lanes: Mutex<BTreeMap<LaneKey, Lane>>,
    stats: Vec<HookStats>,
    wake: Notify,
}

impl Shared {
    fn lanes(&self) -> std::sync::MutexGuard<'_, BTreeMap<LaneKey, Lane>> {
        // Lane updates are single field writes: a panic leaves them usable.
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running delivery worker.
pub struct Delivery {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Delivery {
    /// Loads what the outbox still owes and starts delivering. Needs a tokio runtime.
    pub fn start(outbox: Arc<Outbox>, hooks: Vec<WebhookConfig>) -> Result<Delivery, AlertsError> {
        // reqwest is built without a TLS provider of its own; ring is ours.
        // An error means one is installed already, which is all we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            // A redirected POST would become a GET: a 3xx is a failure to fix.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hopwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AlertsError::Client)?;
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
            lanes: Mutex::new(lanes),
            wake: Notify::new(),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(Arc::clone(&shared), outbox, client, stopped));
        Ok(Delivery {
            shared,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Queues committed deliveries: `(webhook name, target, seq)`.
    pub fn enqueue(&self, deliveries: impl IntoIterator<Item = (String, TargetId, u64)>) {
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
        self.shared
            .hooks
            .iter()
            .zip(&self.shared.stats)
            .enumerate()
            .map(|(i, (hook, stats))| {
                let mine = lanes.iter().filter(|((h, _), _)| *h == i);
                let last = stats.last.lock().unwrap_or_else(|e| e.into_inner());
                WebhookStatus {
                    name: hook.name.clone(),
                    url: hook.url.redacted(),
                    format: hook.format,
                    pending: mine.clone().map(|(_, l)| l.queue.len() as u64).sum(),
                    delivered: stats.delivered.load(Ordering::Relaxed),
                    failed_attempts: stats.failed_attempts.load(Ordering::Relaxed),
                    last_success_ms: last.success_ms,
                    last_error: last.error.clone(),
                    last_error_ms: last.error_ms,
                    retrying_targets: mine
                        .filter(|(_, l)| l.retry_at.is_some() && !l.queue.is_empty())
                        .map(|((_, t), _)| t.to_string())
                        .collect(),
                }
            })
            .collect()
    }

    /// Stops the worker. Attempts in flight are abandoned; their events stay in
    /// the outbox and are sent again (same id) after the next start.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

struct Done {
    hook: usize,
    target: TargetId,
    seq: u64,
    result: Result<String, DeliveryError>,
}

async fn run(
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    client: reqwest::Client,
    mut stopped: watch::Receiver<bool>,
) {
    let mut attempts: JoinSet<Done> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, LaneKey> = HashMap::new();
    loop {
        let wake_at = {
            let now = Instant::now();
            let mut lanes = shared.lanes();
            let mut wake_at: Option<Instant> = None;
            for ((hook, target), lane) in lanes.iter_mut() {
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
                let key = (*hook, target.clone());
                let (hook, target) = (*hook, target.clone());
                let config = shared.hooks[hook].clone();
                let (client, outbox) = (client.clone(), Arc::clone(&outbox));
                let handle = attempts.spawn(async move {
                    let result = attempt(&client, &config, &outbox, seq).await;
                    Done {
                        hook,
                        target,
                        seq,
                        result,
                    }
                });
                running.insert(handle.id(), key);
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
            done = attempts.join_next_with_id(), if !attempts.is_empty() => {
                match done {
                    Some(Ok((id, done))) => {
                        running.remove(&id);
                        finish(&shared, &outbox, done);
                    }
                    Some(Err(err)) => {
                        // A panicking attempt: free its lane to try again later.
                        if let Some(key) = running.remove(&err.id()) {
                            if let Some(lane) = shared.lanes().get_mut(&key) {
                                lane.in_flight = false;
                            }
                        }
                        tracing::error!(error = %err, "a webhook delivery attempt panicked");
                    }
                    None => {}
                }
            }
            _ = shared.wake.notified() => {}
            _ = sleep => {}
        }
    }
    // Abandon attempts in flight, and wait until they are gone, so the outbox
    // is closed (and its lock released) when shutdown returns.
    attempts.abort_all();
    while attempts.join_next().await.is_some() {}
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
    match done.result {
        Ok(event_id) => {
            if let Err(err) = outbox.delivered(&hook.name, &done.target, done.seq, &shared.names) {
                // The event stays on disk and is sent again after a restart,
                // with the same id: a duplicate, never a loss.
                tracing::error!(webhook = %hook.name, error = %err, "could not mark an alert delivered");
            }
            lane.queue.pop_front();
            lane.retry_at = None;
            lane.backoff = None;
            stats.delivered.fetch_add(1, Ordering::Relaxed);
            stats
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .success_ms = Some(now_ms());
            tracing::info!(webhook = %hook.name, target = %done.target, event = %event_id, "alert delivered");
        }
        Err(DeliveryError::Missing { seq }) => {
            // Nothing left to send; do not block the lane on it.
            lane.queue.pop_front();
            tracing::error!(webhook = %hook.name, target = %done.target, seq, "alert event missing from the outbox; skipped");
        }
        Err(err) => {
            let backoff = lane
                .backoff
                .get_or_insert_with(|| backoff(hook.retry_initial, hook.retry_max));
            let delay = backoff.next().unwrap_or(hook.retry_max);
            lane.retry_at = Some(Instant::now() + delay);
            stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let message = err.chain();
            tracing::warn!(
                webhook = %hook.name,
                url = %hook.url,
                target = %done.target,
                seq = done.seq,
                error = %message,
                retry_in = ?delay,
                "alert delivery failed; will retry"
            );
            let mut last = stats.last.lock().unwrap_or_else(|e| e.into_inner());
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
) -> Result<String, DeliveryError> {
    let stored = outbox.event(seq)?.ok_or(DeliveryError::Missing { seq })?;
    let event: AlertEvent = serde_json::from_slice(&stored).map_err(|source| {
        DeliveryError::Outbox(AlertsError::Corrupt {
            path: outbox.path().to_owned(),
            seq,
            source,
        })
    })?;
    let body = format::render(hook.format, &stored, &event)
        .map_err(|source| DeliveryError::Render { seq, source })?;
    let mut request = client
        .post(hook.url.expose().clone())
        .timeout(hook.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_HEADER, event.id.as_str());
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
    Ok(event.id)
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

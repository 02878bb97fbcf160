//! Pushing metrics to Prometheus remote-write receivers (`[[remote_write]]`),
//! with backfill after outages: every `interval`, each receiver gets the
//! /metrics snapshot's series ([`series`], cut to the configured budget, with
//! `vantage` and the extra labels) as one remote-write 1.0 request
//! ([`proto`]). When a receiver cannot be reached, the ticks it missed are
//! rebuilt from the store's history once it answers again ([`backfill`]),
//! oldest first, at a bounded rate, as far back as `backfill_max_age`.
//! The state of each receiver (last success, backlog, dropped samples) is
//! shown in /metrics, /healthz and the UI through [`RemoteWrite::status`].

pub mod backfill;
pub mod proto;
pub mod series;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopwatch_web::metrics::MetricsSnapshot;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::backfill::{Backfill, Gap};
use self::proto::{Sample, TimeSeries, WriteRequest};
use self::series::Values;
use crate::config::{Config, RemoteAuth, RemoteWriteConfig};
use crate::store::Store;
use crate::sys::{self, now_ms};

/// Samples in one backfill request at most (Prometheus' own
/// `max_samples_per_send` default).
pub const MAX_SAMPLES_PER_REQUEST: usize = 2000;
/// How long a backfill waits for the store to flush the rounds it needs,
/// beyond two of its flush intervals.
const FLUSH_WAIT: Duration = Duration::from_secs(60);
/// Rounds still in flight when a push succeeded: they are stored a probe
/// timeout later; the backfill waits for a flush this much past the gap.
const ROUND_SLACK_MS: u64 = 5_000;

/// Where the pushed series come from: the /metrics snapshot of the moment.
pub type SnapshotSource = Arc<dyn Fn() -> MetricsSnapshot + Send + Sync>;

/// One receiver's state, for /metrics, /healthz and the UI.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceiverStatus {
    pub name: String,
    /// Scheme, host and port only: receivers keep credentials in URLs.
    pub url: String,
    pub last_success_at_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<u64>,
    /// Since when pushes fail; `None` while they succeed.
    pub failing_since_ms: Option<u64>,
    /// Push ticks missed and not yet backfilled (or dropped).
    pub backlog_ticks: u64,
    /// The oldest tick a backfill still has to send.
    pub backfill_next_ms: Option<u64>,
    pub requests_sent: u64,
    pub requests_failed: u64,
    pub samples_sent: u64,
    pub samples_backfilled: u64,
    /// Samples given up: refused by the receiver, older than
    /// `backfill_max_age`, or not rebuildable (no history).
    pub samples_dropped: u64,
    /// Compressed request bytes sent (live and backfill).
    pub bytes_sent: u64,
    /// Series in the last live push.
    pub series: u64,
}

impl ReceiverStatus {
    /// How far behind the receiver is: from the oldest tick it has not got
    /// (an outage's start, or a backfill's next tick) to `now_ms`.
    pub fn backlog_seconds(&self, now_ms: u64) -> f64 {
        let oldest = match (self.failing_since_ms, self.backfill_next_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        oldest.map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1000.0)
    }
}

/// Why the pusher could not start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote_write {name:?}: cannot read ca_file {}: {source}", path.display())]
    CaFile {
        name: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("remote_write {name:?}: ca_file {} has no usable PEM certificate: {source}", path.display())]
    CaPem {
        name: String,
        path: std::path::PathBuf,
        source: reqwest::Error,
    },
    #[error("remote_write {name:?}: cannot build the HTTP client: {source}")]
    Client {
        name: String,
        source: reqwest::Error,
    },
}

/// The running pushers; stopped when dropped.
pub struct RemoteWrite {
    statuses: Vec<Arc<Mutex<ReceiverStatus>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl RemoteWrite {
    /// Starts one pusher per `[[remote_write]]` (none without any). `store`
    /// is where backfills read history. Needs a tokio runtime.
    pub fn start(
        config: &Config,
        store: Arc<Store>,
        snapshot: SnapshotSource,
    ) -> Result<RemoteWrite, RemoteError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let intervals: Arc<HashMap<String, Duration>> = Arc::new(
            config
                .targets
                .iter()
                .map(|t| (t.id.to_string(), t.probe.interval))
                .collect(),
        );
        let slack_ms = ROUND_SLACK_MS
            + config
                .targets
                .iter()
                .map(|t| u64::try_from(t.probe.timeout.as_millis()).unwrap_or(0))
                .max()
                .unwrap_or(0);
        let mut statuses = Vec::new();
        let mut tasks = Vec::new();
        for receiver in &config.remote_write {
            let client = client(receiver)?;
            let status = Arc::new(Mutex::new(ReceiverStatus {
                name: receiver.name.clone(),
                url: receiver.url.redacted(),
                ..ReceiverStatus::default()
            }));
            let common = series::common_labels(&config.service.vantage, &receiver.labels);
            let (gaps, gap_rx) = mpsc::unbounded_channel();
            let pusher = Pusher {
                config: Arc::new(receiver.clone()),
                client,
                status: Arc::clone(&status),
            };
            tasks.push(tokio::spawn(pusher.clone().backfill_loop(
                gap_rx,
                Arc::clone(&store),
                config.statistics.window,
                Arc::clone(&intervals),
                slack_ms,
            )));
            tasks.push(tokio::spawn(pusher.live_loop(
                Arc::clone(&snapshot),
                common,
                gaps,
            )));
            tracing::info!(
                remote_write = %receiver.name,
                url = %receiver.url.redacted(),
                vantage = %config.service.vantage,
                interval = ?receiver.interval,
                series = receiver.series.as_str(),
                "pushing metrics with remote write"
            );
            statuses.push(status);
        }
        Ok(RemoteWrite { statuses, tasks })
    }

    /// Every receiver's state, in config order.
    pub fn status(&self) -> Vec<ReceiverStatus> {
        self.statuses.iter().map(|s| sys::lock(s).clone()).collect()
    }
}

impl Drop for RemoteWrite {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn client(receiver: &RemoteWriteConfig) -> Result<reqwest::Client, RemoteError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hopwatch/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &receiver.ca_file {
        let pem = std::fs::read(path).map_err(|source| RemoteError::CaFile {
            name: receiver.name.clone(),
            path: path.clone(),
            source,
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| RemoteError::CaPem {
                name: receiver.name.clone(),
                path: path.clone(),
                source,
            })?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|source| RemoteError::Client {
        name: receiver.name.clone(),
        source,
    })
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// Worth retrying: no connection, a timeout, 429 or 5xx.
    #[error("{0}")]
    Retry(String),
    /// The receiver refused the data (another 4xx): retrying would not help.
    #[error("refused: {0}")]
    Refused(String),
}

#[derive(Clone)]
struct Pusher {
    config: Arc<RemoteWriteConfig>,
    client: reqwest::Client,
    status: Arc<Mutex<ReceiverStatus>>,
}

fn samples(request: &WriteRequest) -> u64 {
    request
        .timeseries
        .iter()
        .map(|t| t.samples.len() as u64)
        .sum()
}

impl Pusher {
    async fn send(&self, request: &WriteRequest) -> Result<u64, SendError> {
        let body = proto::encode(request).map_err(|e| SendError::Refused(e.to_string()))?;
        let bytes = body.len() as u64;
        let mut post = self
            .client
            .post(self.config.url.expose().clone())
            .timeout(self.config.timeout)
            .body(body);
        for (name, value) in proto::HEADERS {
            post = post.header(name, value);
        }
        post = match &self.config.auth {
            RemoteAuth::None => post,
            RemoteAuth::Basic { username, password } => post.basic_auth(
                username,
                Some(String::from_utf8_lossy(password.expose()).into_owned()),
            ),
            RemoteAuth::Bearer(token) => {
                post.bearer_auth(String::from_utf8_lossy(token.expose()).into_owned())
            }
        };
        let response = post
            .send()
            .await
            // reqwest's messages quote the URL, which may hold a credential.
            .map_err(|e| SendError::Retry(self.config.url.scrub(&sys::error_chain(&e))))?;
        let code = response.status();
        if code.is_success() {
            return Ok(bytes);
        }
        let text: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let message = self
            .config
            .url
            .scrub(&format!("HTTP {code}: {}", text.trim()));
        if code.as_u16() == 429 || code.is_server_error() {
            Err(SendError::Retry(message))
        } else {
            Err(SendError::Refused(message))
        }
    }

    /// Sends one tick's series in requests of at most
    /// [`MAX_SAMPLES_PER_REQUEST`] (receivers cap request sizes); the first
    /// failure fails the tick. A tick sent again by the backfill after a
    /// partial failure repeats identical samples, which receivers accept.
    async fn send_all(&self, mut series: Vec<TimeSeries>) -> Result<u64, SendError> {
        let mut bytes = 0;
        while !series.is_empty() {
            let rest = series.split_off(series.len().min(MAX_SAMPLES_PER_REQUEST));
            let request = WriteRequest { timeseries: series };
            bytes += self.send(&request).await?;
            series = rest;
        }
        Ok(bytes)
    }

    fn failed(&self, error: &SendError) {
        let mut status = sys::lock(&self.status);
        status.requests_failed += 1;
        status.last_error = Some(error.to_string());
        status.last_error_at_ms = Some(now_ms());
    }

    /// One push of the live snapshot per interval. A tick that fails is
    /// left to the backfill, which gets the whole outage once a push works.
    async fn live_loop(
        self,
        snapshot: SnapshotSource,
        common: Vec<proto::Label>,
        gaps: mpsc::UnboundedSender<Gap>,
    ) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let set = self.config.series;
        let interval_ms = u64::try_from(self.config.interval.as_millis()).unwrap_or(u64::MAX);
        // The last tick the receiver got, and what it got then.
        let mut last_ok: Option<(u64, Values)> = None;
        let mut missed = false;
        // Ticks of the current outage, counted in the backlog until the gap
        // (whose tick count is what the backfill will send) replaces them.
        let mut missed_ticks = 0u64;
        loop {
            ticker.tick().await;
            let now = now_ms();
            let (snapshot, common) = (Arc::clone(&snapshot), common.clone());
            let Ok(values) = tokio::task::spawn_blocking(move || {
                series::from_snapshot(snapshot(), set, &common)
            })
            .await
            else {
                continue;
            };
            let series: Vec<TimeSeries> = values
                .iter()
                .map(|(labels, value)| TimeSeries {
                    labels: labels.clone(),
                    samples: vec![Sample {
                        value: *value,
                        timestamp: i64::try_from(now).unwrap_or(i64::MAX),
                    }],
                })
                .collect();
            let count = series.len() as u64;
            match self.send_all(series).await {
                Ok(bytes) => {
                    {
                        let mut status = sys::lock(&self.status);
                        status.requests_sent += 1;
                        status.samples_sent += count;
                        status.bytes_sent += bytes;
                        status.last_success_at_ms = Some(now);
                        status.failing_since_ms = None;
                        status.series = values.len() as u64;
                    }
                    if missed {
                        missed = false;
                        let failed_ticks = std::mem::take(&mut missed_ticks);
                        match last_ok.take() {
                            Some((from_ms, before)) => {
                                tracing::info!(
                                    remote_write = %self.config.name,
                                    missed_seconds = (now - from_ms) / 1000,
                                    "the receiver answers again; backfilling what it missed"
                                );
                                let gap = Gap {
                                    from_ms,
                                    to_ms: now,
                                    interval_ms,
                                    before,
                                    after: values.clone(),
                                };
                                {
                                    let mut status = sys::lock(&self.status);
                                    status.backlog_ticks =
                                        status.backlog_ticks.saturating_sub(failed_ticks)
                                            + gap.ticks().len() as u64;
                                }
                                let _ = gaps.send(gap);
                            }
                            None => {
                                // Nothing was pushed before: no base for the
                                // counters, so those ticks cannot be rebuilt.
                                let mut status = sys::lock(&self.status);
                                status.backlog_ticks =
                                    status.backlog_ticks.saturating_sub(failed_ticks);
                                status.samples_dropped += failed_ticks * values.len() as u64;
                            }
                        }
                    }
                    last_ok = Some((now, values));
                }
                Err(error @ SendError::Refused(_)) => {
                    tracing::warn!(remote_write = %self.config.name, %error, "the receiver refused a push");
                    self.failed(&error);
                    sys::lock(&self.status).samples_dropped += count;
                    last_ok = Some((now, values));
                }
                Err(error) => {
                    if !missed {
                        tracing::warn!(remote_write = %self.config.name, %error, "a push failed; the missed samples will be backfilled");
                    }
                    missed = true;
                    missed_ticks += 1;
                    self.failed(&error);
                    let mut status = sys::lock(&self.status);
                    status.failing_since_ms.get_or_insert(now);
                    status.backlog_ticks += 1;
                }
            }
        }
    }

    /// Sends each gap's ticks rebuilt from history, oldest first, at most
    /// `backfill_samples_per_second`; a failed request is retried after an
    /// interval, so an outage during a backfill loses nothing either.
    async fn backfill_loop(
        self,
        mut gaps: mpsc::UnboundedReceiver<Gap>,
        store: Arc<Store>,
        window: u32,
        intervals: Arc<HashMap<String, Duration>>,
        slack_ms: u64,
    ) {
        let max_age_ms =
            u64::try_from(self.config.backfill_max_age.as_millis()).unwrap_or(u64::MAX);
        while let Some(gap) = gaps.recv().await {
            let ticks = gap.ticks().len() as u64;
            let mut backfill = Backfill::new(gap.clone(), window, &intervals);
            let per_tick = backfill.series_per_tick().max(1);
            sys::lock(&self.status).backfill_next_ms = backfill.next_tick_ms();
            // The rounds of the gap must be on disk before they can be read.
            let waited = std::time::Instant::now();
            let wait_limit = store.config().flush_interval * 2 + FLUSH_WAIT;
            let flushed = loop {
                let health = store.health();
                if health
                    .last_flush_ok_at_ms
                    .is_some_and(|t| t >= gap.to_ms + slack_ms)
                {
                    break true;
                }
                if store.is_disabled() || waited.elapsed() > wait_limit {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            if !flushed || max_age_ms == 0 {
                tracing::warn!(
                    remote_write = %self.config.name,
                    ticks,
                    "the missed samples cannot be rebuilt (no history, or backfill_max_age = 0); dropped"
                );
                let mut status = sys::lock(&self.status);
                status.samples_dropped += ticks * per_tick as u64;
                status.backlog_ticks = status.backlog_ticks.saturating_sub(ticks);
                status.backfill_next_ms = None;
                continue;
            }
            let started = std::time::Instant::now();
            let mut sent = 0u64;
            loop {
                let skipped = backfill.skip_before(now_ms().saturating_sub(max_age_ms)) as u64;
                if skipped > 0 {
                    let mut status = sys::lock(&self.status);
                    status.samples_dropped += skipped * per_tick as u64;
                    status.backlog_ticks = status.backlog_ticks.saturating_sub(skipped);
                }
                if backfill.remaining_ticks() == 0 {
                    break;
                }
                let take = (MAX_SAMPLES_PER_REQUEST / per_tick).max(1);
                let remaining = backfill.remaining_ticks() as u64;
                let store_ref = Arc::clone(&store);
                let Ok((back, chunk)) = tokio::task::spawn_blocking(move || {
                    let chunk = backfill.next_chunk(&store_ref, take);
                    (backfill, chunk)
                })
                .await
                else {
                    break;
                };
                backfill = back;
                let done = remaining - backfill.remaining_ticks() as u64;
                let timeseries = match chunk {
                    Ok(series) => series,
                    Err(error) => {
                        tracing::warn!(remote_write = %self.config.name, %error, "reading history for a backfill failed; those samples are dropped");
                        let mut status = sys::lock(&self.status);
                        status.samples_dropped += done * per_tick as u64;
                        status.backlog_ticks = status.backlog_ticks.saturating_sub(done);
                        continue;
                    }
                };
                let request = WriteRequest { timeseries };
                let count = samples(&request);
                loop {
                    match self.send(&request).await {
                        Ok(bytes) => {
                            let mut status = sys::lock(&self.status);
                            status.requests_sent += 1;
                            status.samples_backfilled += count;
                            status.bytes_sent += bytes;
                            break;
                        }
                        Err(error @ SendError::Refused(_)) => {
                            tracing::warn!(remote_write = %self.config.name, %error, "the receiver refused backfilled samples (is out-of-order ingestion enabled?)");
                            self.failed(&error);
                            sys::lock(&self.status).samples_dropped += count;
                            break;
                        }
                        Err(error) => {
                            self.failed(&error);
                            tokio::time::sleep(self.config.interval).await;
                        }
                    }
                }
                {
                    let mut status = sys::lock(&self.status);
                    status.backlog_ticks = status.backlog_ticks.saturating_sub(done);
                    status.backfill_next_ms = backfill.next_tick_ms();
                }
                sent += count;
                // The rate limit: this many samples take this long at least.
                let due = Duration::from_secs_f64(
                    sent as f64 / f64::from(self.config.backfill_samples_per_second),
                );
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            sys::lock(&self.status).backfill_next_ms = None;
            tracing::info!(
                remote_write = %self.config.name,
                samples = sent,
                seconds = started.elapsed().as_secs_f64(),
                "backfill done"
            );
        }
    }
}

#[cfg(test)]
mod tests;

//! The router's shared state: the read model and control, the tokens and
//! limits, the stop signal for live streams, the overview cache, and the
//! semaphores that bound history reads and live streams (the policy and
//! middleware around them are in [`crate::limits`]).
//!
//! The overview (every target's summary) is the most requested and the most
//! expensive read, so it is built at most once per `overview_max_age` and
//! shared by every request and live stream, each row serialised once.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex, OwnedSemaphorePermit, Semaphore};

use crate::auth::Tokens;
use crate::error::ApiError;
use crate::limits::HostCheck;
use crate::model::{Control, ReadModel};

/// What a server is configured with.
#[derive(Debug, Clone)]
pub struct WebSettings {
    pub tokens: Tokens,
    /// Request bodies larger than this are refused (413).
    pub max_body_bytes: usize,
    /// How often live streams look for changes.
    pub live_interval: Duration,
    /// How long one overview is served before it is built again.
    pub overview_max_age: Duration,
    /// A request not answered within this gets 503 (live streams exempt).
    pub request_timeout: Duration,
    /// History reads (store queries on the blocking pool) running at once.
    pub max_concurrent_reads: usize,
    /// How long a history read waits for a free slot before it gets 503.
    pub read_queue_wait: Duration,
    /// Live streams open at once; more are refused with 429.
    pub max_live_streams: usize,
    /// Which `Host` headers are answered.
    pub hosts: HostCheck,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            tokens: Tokens::default(),
            max_body_bytes: 64 * 1024,
            live_interval: Duration::from_secs(1),
            overview_max_age: Duration::from_millis(900),
            request_timeout: Duration::from_secs(10),
            max_concurrent_reads: 8,
            // Long enough to ride out a burst of page loads, short enough
            // that a client under a flood learns quickly to back off.
            read_queue_wait: Duration::from_secs(1),
            max_live_streams: 32,
            hosts: HostCheck::default(),
        }
    }
}

/// One target's row of the overview, serialised once.
#[derive(Debug)]
pub struct OverviewRow {
    pub id: String,
    /// Changes whenever anything in the row does.
    pub hash: u64,
    pub json: String,
}

/// Every target's row at one instant.
#[derive(Debug)]
pub struct Overview {
    pub built: Instant,
    pub rows: Vec<OverviewRow>,
    /// The rows as one JSON array.
    pub array: String,
}

/// The state every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub read: Arc<dyn ReadModel>,
    pub control: Arc<dyn Control>,
    pub settings: WebSettings,
    pub stop: watch::Sender<bool>,
    overview: Mutex<Option<Arc<Overview>>>,
    /// One permit per history read running.
    reads: Arc<Semaphore>,
    /// One permit per open live stream.
    streams: Arc<Semaphore>,
}

impl AppState {
    pub fn new(
        read: Arc<dyn ReadModel>,
        control: Arc<dyn Control>,
        settings: WebSettings,
    ) -> AppState {
        // Semaphore::MAX_PERMITS caps what tokio can count; no config comes near.
        let permits = |n: usize| Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS)));
        let reads = permits(settings.max_concurrent_reads);
        let streams = permits(settings.max_live_streams);
        AppState {
            inner: Arc::new(Inner {
                read,
                control,
                settings,
                stop: watch::channel(false).0,
                overview: Mutex::new(None),
                reads,
                streams,
            }),
        }
    }

    pub fn settings(&self) -> &WebSettings {
        &self.inner.settings
    }

    /// Ends every live stream, so a graceful shutdown does not wait on them.
    pub fn stop_live_streams(&self) {
        self.inner.stop.send_replace(true);
    }

    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// Runs a read-model call on the blocking pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ReadModel) -> T + Send + 'static,
    {
        let read = Arc::clone(&self.inner.read);
        Ok(tokio::task::spawn_blocking(move || f(read.as_ref())).await?)
    }

    /// Runs a history read (a store query: series, heatmaps, events, exports,
    /// incidents) on the blocking pool, at most `max_concurrent_reads` at
    /// once; one that finds no slot within `read_queue_wait` gets 503. The
    /// slot goes with the call into the pool, so a request that times out
    /// does not free it before the query really ends.
    pub(crate) async fn history<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ReadModel) -> T + Send + 'static,
    {
        let wait = self.inner.settings.read_queue_wait;
        let slot = Arc::clone(&self.inner.reads).acquire_owned();
        let slot = match tokio::time::timeout(wait, slot).await {
            Ok(Ok(slot)) => slot,
            // The semaphore is never closed; treat it like a full one.
            Ok(Err(_)) | Err(_) => return Err(ApiError::Busy),
        };
        let read = Arc::clone(&self.inner.read);
        Ok(tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f(read.as_ref())
        })
        .await?)
    }

    /// A place for one more live stream, held for as long as it is open.
    pub(crate) fn live_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.inner.streams)
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyStreams {
                limit: self.inner.settings.max_live_streams,
            })
    }

    /// Runs a control call on the blocking pool.
    pub(crate) async fn control<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Control) -> T + Send + 'static,
    {
        let control = Arc::clone(&self.inner.control);
        Ok(tokio::task::spawn_blocking(move || f(control.as_ref())).await?)
    }

    /// The overview, rebuilt when older than `overview_max_age`. Concurrent
    /// callers wait for one rebuild instead of each doing their own.
    pub(crate) async fn overview(&self) -> Result<Arc<Overview>, ApiError> {
        let mut cached = self.inner.overview.lock().await;
        if let Some(overview) = cached.as_ref() {
            if overview.built.elapsed() < self.inner.settings.overview_max_age {
                return Ok(Arc::clone(overview));
            }
        }
        let overview = Arc::new(
            self.read(|read| {
                let targets = read.targets();
                let mut rows = Vec::with_capacity(targets.len());
                for target in targets {
                    let json = serde_json::to_string(&target)?;
                    let mut hasher = DefaultHasher::new();
                    json.hash(&mut hasher);
                    rows.push(OverviewRow {
                        id: target.id,
                        hash: hasher.finish(),
                        json,
                    });
                }
                let array = join_array(rows.iter().map(|r| r.json.as_str()));
                Ok::<_, serde_json::Error>(Overview {
                    built: Instant::now(),
                    rows,
                    array,
                })
            })
            .await?
            .map_err(|err| ApiError::internal("serialising the overview", err))?,
        );
        *cached = Some(Arc::clone(&overview));
        Ok(overview)
    }
}

/// `[a,b,c]` from already serialised JSON values.
pub(crate) fn join_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push(']');
    out
}

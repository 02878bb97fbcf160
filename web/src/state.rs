//! The router's shared state: the read model and control, the tokens and
//! limits, the stop signal for live streams, and the overview cache.
//!
//! The overview (every target's summary) is the most requested and the most
//! expensive read, so it is built at most once per `overview_max_age` and
//! shared by every request and live stream, each row serialised once.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex};

use crate::auth::Tokens;
use crate::error::ApiError;
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
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            tokens: Tokens::default(),
            max_body_bytes: 64 * 1024,
            live_interval: Duration::from_secs(1),
            overview_max_age: Duration::from_millis(900),
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
}

impl AppState {
    pub fn new(
        read: Arc<dyn ReadModel>,
        control: Arc<dyn Control>,
        settings: WebSettings,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                read,
                control,
                settings,
                stop: watch::channel(false).0,
                overview: Mutex::new(None),
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

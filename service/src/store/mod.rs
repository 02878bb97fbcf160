//! The history store: the one module that owns sled and the history's
//! files. It keeps per-target round results, 1-minute and 1-hour rollups per
//! hop, and events, with retention, batched writes, crash recovery and
//! full-disk tolerance.
//!
//! # Layout
//! Raw rounds: one compressed chunk ([`chunk`]) per target and flush,
//! appended to `rounds/raw-<hour>-<n>.seg`, one file per hour of the rounds'
//! start ([`segment`]). Minute rollups: the last minutes' in memory, then
//! every ten minutes one section per hour appended to
//! `rollups/m1-<hour>-<n>.seg`, each target's minutes packed in columns in
//! one compressed block found through the section's index
//! ([`rollup_files`], [`rollup_block`]). Hour rollups: the same, a section
//! per flush that rolled hours, appended to `rollups/h1-<day>-<n>.seg`.
//! A multipath target's ECMP branches are stored as targets of their own,
//! named `<target>#branch<N>` ([`Store::record_branch_round`]): each is one
//! more series of the same hop count, in the same files and rollups, under
//! the same retention. Nothing else in the layout knows about branches.
//! sled trees: `meta` (schema version), `targets` (name → u32), `events`,
//! `raw`, which holds STAMP peers' batches ([`peers`]) and the rounds an
//! older hopwatch stored there, and `m1` and `h1`, the minute and hour
//! rollups an older hopwatch stored (read beside the files until they
//! expire). Key layouts are in [`keys`], value formats
//! in [`codec`].
//!
//! # Writes and flash wear
//! [`Store::record_round`] and [`Store::record_event`] only encode into an
//! in-memory buffer. Every `flush_interval` (default 60 s, on a grid just
//! after each minute closes) the flusher appends each target's new rounds as
//! one chunk to the hour's file and syncs it, applies the rest as one
//! `sled::Batch` per tree, derives the rollups of minutes and hours that
//! closed (minutes into memory, written as a section when ten minutes are
//! complete), sweeps expired keys and files when due, then calls
//! `sled::Db::flush` (one fsync). Measured (docs/benchmarks.md, "Where the
//! history goes"): one sled value per round wrote 51–60 MiB per 10-hop target
//! and day at 100 targets; a minute's chunk appended to a file writes each
//! round once, 0.7–1.8 MiB. A crash or power cut loses at most the last
//! interval of raw rounds; the live view and alerts never depend on the
//! store. Reads of raw rounds include the buffer, so the interval does not
//! delay the graphs.
//!
//! # Crash safety
//! Rollups are never buffered: they are computed at flush time from the
//! rounds of minutes not rolled up yet (kept in memory from the flushes that
//! wrote them, a few seconds' worth with minute flushes) and hours from
//! minute rollups, keyed deterministically, and a minute or hour is only
//! marked done in memory after the flush that wrote it succeeded. On open
//! the done-marks are rebuilt from the newest minute section (or, in a
//! store an older hopwatch wrote, the last rollup in sled) and the rounds
//! after them read back from the files, so the minutes in memory lost to
//! `kill -9` are simply computed again (raw rounds are kept 48 h, far longer
//! than a minute waits in memory). A round that arrives after its minute was
//! rolled up marks that minute (and its hour) for recomputation from the
//! files, written at once; since that mark lives in memory, the open rolls
//! the ten minutes before the newest round (and their hour) up again, so
//! late rounds written just before a crash are never left uncounted. A new target's number is synced to sled before any of its
//! rounds is appended: a file's record names its target by that number.
//!
//! # Full disk
//! A failed flush keeps its writes in memory, capped at `max_pending_bytes`
//! (oldest raw rounds dropped first, then oldest events, all counted), records
//! the error in [`Store::health`], and reopens sled at the next flush: sled
//! 0.34 poisons a database after an I/O error until it is reopened. A
//! rounds file whose append failed is not appended to again (the retry
//! starts the hour's next file), and rounds written twice by a retried flush
//! are read once.
//!
//! # A store that cannot be opened
//! The monitor opens the store through `monitor::components::open_store`,
//! which quarantines one that does not open and starts a fresh one; if that
//! fails too, [`Store::disabled`] stands in: same interface, no history.

pub mod buffer;
pub mod chunk;
pub mod codec;
mod compress;
pub mod error;
pub mod export;
mod flush;
mod hourfiles;
pub mod keys;
mod open_buckets;
mod open_minutes;
pub mod packed;
pub mod peers;
pub mod query;
pub mod rawlog;
pub mod rollup;
pub mod rollup_block;
pub mod rollup_files;
pub mod schema;
pub mod segment;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::{RoundRecord, TargetId};
use crate::sys::{self, now_ms};
use buffer::{Entry, WriteBuffer};
use codec::{encode, EventV1};
use flush::FlushState;
use keys::{event_key, TargetNum};
use rollup_files::{Grain, RollupFiles};
use schema::{TargetMap, Trees};
use segment::Segments;

pub use error::StoreError;
pub use export::{write_series, ExportError, ExportFormat, ExportMeta};
pub use peers::{PeerBatch, PeerHistory, PeerSeries, PeerSeriesPoints};
pub use query::{Hop, Point, Resolution, Series};
pub use rawlog::{RawLog, RawLogError};

/// The directory, inside the store's, of the raw rounds' hourly files.
pub const ROUNDS_DIR: &str = "rounds";

/// The directory, inside the store's, of the minute rollups' hourly files.
pub const ROLLUPS_DIR: &str = "rollups";

/// Whether `name` in the state directory is one of the history store's
/// files: those sled 0.34 keeps in a database directory (`conf`, `db`,
/// `blobs/`, `snap.*`) and the rounds' and rollups' directories beside them.
/// The state directory also holds the outbox and perhaps the raw log.
pub fn is_store_file(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs" | ROUNDS_DIR | ROLLUPS_DIR) || name.starts_with("snap.")
}
pub const MINUTE_MS: u64 = 60_000;
pub const HOUR_MS: u64 = 3_600_000;
const DAY: Duration = Duration::from_secs(86_400);

/// How the store keeps history. Durations are retention windows measured back
/// from "now" at each sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// How often buffered writes go to disk (see the module docs for the
    /// trade-off). Default 60 s: a chunk of a minute per target.
    pub flush_interval: Duration,
    /// Raw per-round results. Default 48 h. Rollups are recomputed from raw
    /// rounds after a crash, so keep this well above `close_delay` + an hour.
    pub raw_retention: Duration,
    /// 1-minute rollups. Default 30 days.
    pub minute_retention: Duration,
    /// 1-hour rollups. Default 365 days.
    pub hour_retention: Duration,
    /// Events (route changes, alerts). Default 90 days.
    pub event_retention: Duration,
    /// How often expired keys are deleted. Default 10 minutes.
    pub sweep_interval: Duration,
    /// How long after a minute ends its rollup is computed, so rounds that
    /// finish late (their start time is in the minute) are still in it.
    /// Later ones trigger a recomputation. Default 15 s.
    pub close_delay: Duration,
    /// Most bytes (keys + values) held in memory while the disk refuses
    /// writes; beyond it the oldest raw rounds are dropped. Default 64 MiB,
    /// about 20 minutes of 1,000 ten-hop targets at one round per second.
    pub max_pending_bytes: usize,
    /// sled's page cache. Default 4 MiB: sled holds several times this in
    /// memory (sled issues #986, #1309). With 64 MiB a 1,000-target daemon's
    /// RSS grew 112 → 344 MiB in 15 minutes without levelling off; with 4 MiB
    /// it levelled off at ~150 MiB (docs/benchmarks.md). Reads that miss it
    /// come from the OS page cache.
    pub cache_capacity_bytes: u64,
    /// How often sled's background thread reclaims the space of swept data
    /// (see `schema::sled_config`). Default 5 s, the flush interval. The
    /// history benchmark shortens it to keep pace with its synthetic clock.
    pub reclaim_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            flush_interval: Duration::from_secs(60),
            raw_retention: 2 * DAY,
            minute_retention: 30 * DAY,
            hour_retention: 365 * DAY,
            event_retention: 90 * DAY,
            sweep_interval: Duration::from_secs(600),
            close_delay: Duration::from_secs(15),
            max_pending_bytes: 64 << 20,
            cache_capacity_bytes: 4 << 20,
            reclaim_interval: Duration::from_secs(5),
        }
    }
}

/// A route change, alert or other event of one target. The payload is free
/// JSON owned by whoever records the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub target: TargetId,
    /// Unix milliseconds.
    pub at_ms: u64,
    pub kind: String,
    pub payload: serde_json::Value,
}

/// The store's state for health endpoints and logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreHealth {
    pub path: PathBuf,
    /// The last flush succeeded (or none was attempted yet).
    pub ok: bool,
    /// The last write error, kept after recovery for diagnosis.
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<u64>,
    pub consecutive_failures: u64,
    pub last_flush_ok_at_ms: Option<u64>,
    /// Bytes waiting in memory for the disk (including an in-progress flush).
    pub pending_bytes: u64,
}

/// Counters for metrics (all totals since the process started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreMetrics {
    /// Bytes of keys and values handed to sled (inserts and removals).
    pub write_bytes_total: u64,
    pub flushes_total: u64,
    pub flush_errors_total: u64,
    /// Raw rounds dropped because the pending buffer hit its cap.
    pub dropped_rounds_total: u64,
    pub dropped_events_total: u64,
    /// Keys (and the rounds' hourly files) removed by retention sweeps.
    pub swept_keys_total: u64,
    /// Stored values that could not be decoded and were skipped.
    pub corrupt_values_total: u64,
    pub pending_bytes: u64,
}

/// What one successful flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Successful flushes of this store so far, this one included.
    pub seq: u64,
    pub rounds: usize,
    pub events: usize,
    pub rollups: usize,
    pub swept: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct Counters {
    write_bytes: AtomicU64,
    flushes: AtomicU64,
    flush_errors: AtomicU64,
    dropped_rounds: AtomicU64,
    dropped_events: AtomicU64,
    swept: AtomicU64,
    corrupt: AtomicU64,
    inflight_bytes: AtomicU64,
}

#[derive(Default)]
struct HealthState {
    last_error: Option<String>,
    last_error_at_ms: Option<u64>,
    consecutive_failures: u64,
    last_flush_ok_at_ms: Option<u64>,
}

/// The history store. Share it as `Arc<Store>`; every method takes `&self`.
pub struct Store {
    path: PathBuf,
    config: StoreConfig,
    /// `None` between a write error and a successful reopen.
    db: RwLock<Option<Arc<Trees>>>,
    targets: RwLock<TargetMap>,
    pending: Mutex<WriteBuffer>,
    flush: Mutex<FlushState>,
    /// Where the raw rounds' files are ([`ROUNDS_DIR`]).
    rounds_dir: PathBuf,
    /// The appender of those files; `None` for a disabled store.
    segments: Mutex<Option<Segments>>,
    /// The minute rollups: the last minutes' in memory, then hourly files
    /// ([`ROLLUPS_DIR`]).
    minutes: RollupFiles,
    /// The hour rollups: daily files beside the minutes'.
    hours: RollupFiles,
    event_seq: AtomicU32,
    counters: Counters,
    health: Mutex<HealthState>,
    /// Why the store runs without a database ([`Store::disabled`]): writes
    /// are dropped (and counted) at each flush instead of reopening sled.
    disabled: Option<String>,
}

impl Store {
    /// Opens the store at `path` (creating and initialising an empty
    /// directory), then rolls up whatever a crash left un-rolled.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store, StoreError> {
        Store::open_at(path, config, now_ms())
    }

    /// [`Store::open`] with an explicit "now" for the catch-up flush, for
    /// simulations that write with a synthetic clock.
    pub fn open_at(
        path: impl AsRef<Path>,
        config: StoreConfig,
        now_ms: u64,
    ) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let trees = Trees::open(&path, config.cache_capacity_bytes, config.reclaim_interval)?;
        let targets = TargetMap::load(&path, &trees.targets)?;
        let rounds_dir = path.join(ROUNDS_DIR);
        let segments = Segments::open(&rounds_dir)?;
        let minutes = RollupFiles::open(&path.join(ROLLUPS_DIR), Grain::MINUTES)?;
        let hours = RollupFiles::open(&path.join(ROLLUPS_DIR), Grain::HOURS)?;
        let state = FlushState::load(&path, &trees, &targets, &segments, &minutes, &hours)?;
        // Event keys carry a per-process sequence; starting it from the clock
        // keeps a restarted process from reusing (time, sequence) pairs.
        let seq_seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let store = Store {
            path,
            config,
            db: RwLock::new(Some(Arc::new(trees))),
            targets: RwLock::new(targets),
            pending: Mutex::new(WriteBuffer::default()),
            flush: Mutex::new(state),
            rounds_dir,
            segments: Mutex::new(Some(segments)),
            minutes,
            hours,
            event_seq: AtomicU32::new(seq_seed),
            counters: Counters::default(),
            health: Mutex::new(HealthState::default()),
            disabled: None,
        };
        // Recompute rollups interrupted by a crash. A failure here (a full
        // disk) is in health and retried by the next flush; the store is open.
        if let Err(error) = store.flush_at(now_ms) {
            tracing::warn!(path = %store.path.display(), %error, "store catch-up flush failed");
        }
        Ok(store)
    }

    /// A store without a database, for when neither the store at `path` nor
    /// a fresh one could be opened (see `monitor::components`): monitoring
    /// goes on, history is not kept. Reads answer `Unavailable`; each flush
    /// drops what was recorded (counted in the metrics) and never reopens
    /// sled, whose directory may hold numbers this store does not know.
    pub fn disabled(path: impl AsRef<Path>, config: StoreConfig, reason: String) -> Store {
        let health = HealthState {
            last_error: Some(reason.clone()),
            last_error_at_ms: Some(now_ms()),
            consecutive_failures: 1,
            last_flush_ok_at_ms: None,
        };
        Store {
            path: path.as_ref().to_path_buf(),
            config,
            db: RwLock::new(None),
            targets: RwLock::new(TargetMap::default()),
            pending: Mutex::new(WriteBuffer::default()),
            flush: Mutex::new(FlushState::default()),
            rounds_dir: path.as_ref().join(ROUNDS_DIR),
            segments: Mutex::new(None),
            minutes: RollupFiles::reader(&path.as_ref().join(ROLLUPS_DIR), Grain::MINUTES),
            hours: RollupFiles::reader(&path.as_ref().join(ROLLUPS_DIR), Grain::HOURS),
            event_seq: AtomicU32::new(0),
            counters: Counters::default(),
            health: Mutex::new(health),
            disabled: Some(reason),
        }
    }

    /// Whether this store keeps no history ([`Store::disabled`]).
    pub fn is_disabled(&self) -> bool {
        self.disabled.is_some()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The target's number, allocating one (written with the next flush) for
    /// a target the store has not seen.
    fn target_num(&self, id: &TargetId) -> Result<TargetNum, StoreError> {
        if let Some(num) = sys::read(&self.targets).get(id) {
            return Ok(num);
        }
        let mut targets = sys::write(&self.targets);
        if let Some(num) = targets.get(id) {
            return Ok(num);
        }
        let num = targets
            .allocate(id)
            .ok_or_else(|| StoreError::TargetsExhausted {
                path: self.path.clone(),
            })?;
        sys::lock(&self.pending).push_target(num, id.clone());
        Ok(num)
    }

    fn lookup(&self, id: &TargetId) -> Option<TargetNum> {
        sys::read(&self.targets).get(id)
    }

    /// Buffers one round for the next flush. Never touches the disk.
    pub fn record_round(&self, round: &RoundRecord) -> Result<(), StoreError> {
        self.record_round_as(&round.target, round)
    }

    /// Buffers `round` under the series `series` (the stored value does not
    /// name its target: the key's number does).
    fn record_round_as(&self, series: &TargetId, round: &RoundRecord) -> Result<(), StoreError> {
        let num = self.target_num(series)?;
        let mut pending = sys::lock(&self.pending);
        pending.push_round(num, round);
        self.enforce_cap(&mut pending);
        Ok(())
    }

    /// Buffers one round over an ECMP branch's kept flow of `round.target`
    /// for the next flush: stored as the branch's own series
    /// ([`TargetId::branch_series`]), read back with the same calls as a
    /// target's under that name. Never touches the disk.
    pub fn record_branch_round(
        &self,
        branch: crate::model::BranchIndex,
        round: &RoundRecord,
    ) -> Result<(), StoreError> {
        self.record_round_as(&round.target.branch_series(branch), round)
    }

    /// Buffers one event for the next flush. Never touches the disk.
    pub fn record_event(&self, event: &StoredEvent) -> Result<(), StoreError> {
        let num = self.target_num(&event.target)?;
        let seq = self.event_seq.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            key: event_key(num, event.at_ms, seq).to_vec(),
            value: encode(&EventV1 {
                kind: event.kind.clone(),
                payload_json: event.payload.to_string(),
            }),
        };
        let mut pending = sys::lock(&self.pending);
        pending.push_event(entry);
        self.enforce_cap(&mut pending);
        Ok(())
    }

    fn enforce_cap(&self, pending: &mut WriteBuffer) {
        let dropped = pending.enforce_cap(self.config.max_pending_bytes);
        if dropped.rounds + dropped.events > 0 {
            self.counters
                .dropped_rounds
                .fetch_add(dropped.rounds, Ordering::Relaxed);
            self.counters
                .dropped_events
                .fetch_add(dropped.events, Ordering::Relaxed);
            tracing::warn!(
                path = %self.path.display(),
                rounds = dropped.rounds,
                events = dropped.events,
                cap_bytes = self.config.max_pending_bytes,
                "store write buffer full; dropped the oldest unwritten history"
            );
        }
    }

    /// Writes everything buffered, with the wall clock as "now".
    pub fn flush(&self) -> Result<FlushReport, StoreError> {
        self.flush_at(now_ms())
    }

    /// Writes everything buffered; `now_ms` decides which minutes and hours
    /// have closed and what retention has expired.
    pub fn flush_at(&self, now_ms: u64) -> Result<FlushReport, StoreError> {
        let mut state = sys::lock(&self.flush);
        let batch = std::mem::take(&mut *sys::lock(&self.pending));
        if self.disabled.is_some() {
            return Err(self.drop_disabled(&batch, now_ms));
        }
        self.counters
            .inflight_bytes
            .store(batch.bytes() as u64, Ordering::Relaxed);
        let result = self.write_out(&mut state, &batch, now_ms);
        self.counters.inflight_bytes.store(0, Ordering::Relaxed);
        let mut health = sys::lock(&self.health);
        match result {
            Ok(mut report) => {
                let seq = self.counters.flushes.fetch_add(1, Ordering::Relaxed) + 1;
                report.seq = seq;
                self.counters
                    .write_bytes
                    .fetch_add(report.bytes, Ordering::Relaxed);
                self.counters
                    .swept
                    .fetch_add(report.swept, Ordering::Relaxed);
                if health.consecutive_failures > 0 {
                    tracing::info!(
                        path = %self.path.display(),
                        failures = health.consecutive_failures,
                        "store writes resumed"
                    );
                }
                health.consecutive_failures = 0;
                health.last_flush_ok_at_ms = Some(now_ms);
                Ok(report)
            }
            Err(error) => {
                // Keep the writes, oldest first, in front of what arrived since.
                let mut pending = sys::lock(&self.pending);
                let mut kept = batch;
                kept.append(std::mem::take(&mut *pending));
                *pending = kept;
                self.enforce_cap(&mut pending);
                let pending_bytes = pending.bytes();
                drop(pending);
                state.reopen_needed = true;
                self.counters.flush_errors.fetch_add(1, Ordering::Relaxed);
                health.consecutive_failures += 1;
                health.last_error = Some(error.to_string());
                health.last_error_at_ms = Some(now_ms);
                tracing::warn!(
                    path = %self.path.display(),
                    %error,
                    pending_bytes,
                    failures = health.consecutive_failures,
                    "store flush failed; keeping writes in memory"
                );
                Err(error)
            }
        }
    }

    /// A disabled store's flush: what was recorded is gone, and counted.
    fn drop_disabled(&self, batch: &WriteBuffer, now_ms: u64) -> StoreError {
        self.counters
            .dropped_rounds
            .fetch_add((batch.raw.len() + batch.rounds()) as u64, Ordering::Relaxed);
        self.counters
            .dropped_events
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        self.counters.flush_errors.fetch_add(1, Ordering::Relaxed);
        let mut health = sys::lock(&self.health);
        health.consecutive_failures += 1;
        health.last_error_at_ms = Some(now_ms);
        StoreError::Unavailable {
            path: self.path.clone(),
        }
    }

    /// The open trees for reading, or `Unavailable` while reopening after a
    /// write error.
    fn trees(&self) -> Result<Arc<Trees>, StoreError> {
        sys::read(&self.db)
            .clone()
            .ok_or_else(|| StoreError::Unavailable {
                path: self.path.clone(),
            })
    }

    /// Bytes waiting for the disk, including a flush in progress.
    fn pending_bytes(&self) -> u64 {
        sys::lock(&self.pending).bytes() as u64
            + self.counters.inflight_bytes.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> StoreHealth {
        let health = sys::lock(&self.health);
        StoreHealth {
            path: self.path.clone(),
            ok: health.consecutive_failures == 0,
            last_error: health.last_error.clone(),
            last_error_at_ms: health.last_error_at_ms,
            consecutive_failures: health.consecutive_failures,
            last_flush_ok_at_ms: health.last_flush_ok_at_ms,
            pending_bytes: self.pending_bytes(),
        }
    }

    pub fn metrics(&self) -> StoreMetrics {
        let c = &self.counters;
        StoreMetrics {
            write_bytes_total: c.write_bytes.load(Ordering::Relaxed),
            flushes_total: c.flushes.load(Ordering::Relaxed),
            flush_errors_total: c.flush_errors.load(Ordering::Relaxed),
            dropped_rounds_total: c.dropped_rounds.load(Ordering::Relaxed),
            dropped_events_total: c.dropped_events.load(Ordering::Relaxed),
            swept_keys_total: c.swept.load(Ordering::Relaxed),
            corrupt_values_total: c.corrupt.load(Ordering::Relaxed),
            pending_bytes: self.pending_bytes(),
        }
    }

    /// Bytes the store's files take on disk now: sled's, the rounds' and the
    /// minute rollups'.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let sled = self
            .trees()?
            .db
            .size_on_disk()
            .map_err(|source| StoreError::Sled {
                path: self.path.clone(),
                op: "measure size on disk",
                source,
            })?;
        Ok(sled
            + Segments::reader(&self.rounds_dir).size()?
            + self.minutes.size()?
            + self.hours.size()?)
    }

    /// Starts a thread that flushes every `flush_interval` and once more when
    /// the returned [`Flusher`] is stopped or dropped. Flush errors are logged
    /// and kept in [`Store::health`]; the thread carries on.
    pub fn spawn_flusher(self: &Arc<Self>) -> Result<Flusher, StoreError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let store = Arc::clone(self);
        let interval = self.config.flush_interval;
        let offset = self.config.close_delay + Duration::from_secs(1);
        let thread = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || loop {
                let wait = until_next_flush(now_ms(), interval, offset);
                let last = !matches!(
                    stopped.recv_timeout(wait),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
                // The error is already logged and in health.
                let _ = store.flush();
                sys::return_freed_memory();
                if last {
                    break;
                }
            })
            .map_err(|source| StoreError::SpawnFlusher {
                path: self.path.clone(),
                source,
            })?;
        Ok(Flusher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// How long from `now_ms` to the next flush. Flushes keep a grid of the
/// interval shifted by `offset` (the close delay and a second), so with a
/// minute's interval each flush comes just after a minute closes: it rolls
/// that minute up, and the rounds kept in memory for the next rollup are
/// only the few seconds since.
fn until_next_flush(now_ms: u64, interval: Duration, offset: Duration) -> Duration {
    let interval = (interval.as_millis() as u64).max(1);
    let phase = offset.as_millis() as u64 % interval;
    let next = (now_ms.saturating_sub(phase) / interval + 1) * interval + phase;
    Duration::from_millis(next - now_ms)
}

impl Drop for Store {
    /// Writes what is buffered, so an orderly shutdown loses nothing.
    fn drop(&mut self) {
        if !sys::lock(&self.pending).is_empty() {
            // The clock of the last flush, so a store driven by a synthetic
            // clock is not swept against the wall clock on the way out.
            let now = sys::lock(&self.flush).last_now_ms.unwrap_or_else(now_ms);
            let _ = self.flush_at(now);
        }
    }
}

/// The background flush thread; stopping it (or dropping it) flushes once more.
pub struct Flusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Stops the thread after a final flush, and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

//! The persistent outbox: alert events waiting for delivery, per webhook and
//! target, in their own sled database under `<state_dir>/outbox` (the history
//! store is a separate database with its own write budget).
//!
//! Layout of the one tree (keys are prefix-tagged; names cannot contain NUL):
//! - `m` + name: metadata (the next sequence number, this instance's id);
//! - `e` + seq (u64 big-endian): an event's JSON, exactly the bytes sent;
//! - `q` + webhook + NUL + subject + NUL + seq: the event is owed to that
//!   webhook. Keys sort by seq within (webhook, subject): delivery order.
//!   The value is when it was queued (ms since the epoch, u64 big-endian;
//!   empty in outboxes written before the outbox had a maximum age);
//! - `a` + subject + NUL + kind: a raised alert (its id, when, its raise
//!   event without the snapshot, and the localisation its latest update
//!   sent), so a restart can still clear it without repeating or missing an
//!   update, a target or peer removed from the config gets a clear that names
//!   it, and Alertmanager gets the same alert re-sent while it fires;
//! - `s` + target: the target has answered at least once;
//! - `i` + raised-at + alert id: the alert's incident record (see
//!   [`super::incidents`]), written in the same batch as its events.
//!
//! A subject is a target's name or `peer:NAME` (see [`super::subject`]):
//! outboxes written before peers had alerts hold target names only, which
//! read unchanged.
//!
//! Every commit is one atomic batch followed by a flush to disk. Alerts are
//! rare, and an alert lost to a power cut is worse than a few extra flash
//! writes: durability wins here, unlike the history store's batching.
//! Deliveries are removed without a flush: losing a removal only means the
//! event is sent again, with the same id, which receivers deduplicate.
//!
//! It also owns the two ways an alert survives a sick disk without filling
//! it:
//! - a commit that sled cannot write (read-only or full filesystem) does not
//!   lose its events: they are kept in memory, in order, at most
//!   [`Outbox::set_memory_limit`] of them (the oldest dropped first, counted),
//!   read from there by the delivery worker (same ids, same bytes), seen by
//!   [`Outbox::active`], and written ahead of the next commit's events;
//! - [`Outbox::prune`] drops queued deliveries older than a maximum age or
//!   beyond a budget of event bytes, oldest first, so a receiver that is gone
//!   for good cannot grow the outbox without end.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::AlertsError;
use super::event::{AlertEvent, StartHop};
use super::incidents::{self, Incident};
use super::kind::{AlertKind, AlertState};
use super::subject::Subject;
use crate::model::TargetId;
use crate::sys;

const META_NEXT_SEQ: &[u8] = b"mnext_seq";
const META_INSTANCE: &[u8] = b"minstance";
const EVENT: u8 = b'e';
const QUEUE: u8 = b'q';
const ACTIVE: u8 = b'a';
const ANSWERED: u8 = b's';
/// How long to wait for a previous process (or a monitor being shut down in
/// the same process) to release the database's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// An alert that is raised and not yet cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    /// What the alert is about (serialised as its key, as before peers).
    pub target: Subject,
    pub kind: AlertKind,
    pub alert_id: String,
    pub raised_at_ms: u64,
    pub summary: String,
    /// The raise event as sent, without its per-hop snapshot (records written
    /// before this field existed have none).
    #[serde(default)]
    pub raise: Option<AlertEvent>,
    /// The localisation of the alert's latest update, once it had one.
    /// Before that (and in records written before updates existed) the
    /// raise's is the latest: see [`ActiveAlert::localisation`].
    #[serde(default)]
    pub updated_localisation: Option<serde_json::Value>,
}

impl ActiveAlert {
    /// The localisation the alert's events last sent: its latest update's,
    /// else its raise's.
    pub fn localisation(&self) -> Option<&serde_json::Value> {
        self.updated_localisation
            .as_ref()
            .or_else(|| self.raise.as_ref()?.localisation.as_ref())
    }

    /// The hop where the last sent localisation says the problem starts.
    pub fn sent_hop(&self) -> Option<StartHop> {
        self.localisation().and_then(StartHop::of)
    }

    /// The alert as it fires now, for re-sending it: its raise event with the
    /// latest localisation (so a re-send never takes an update back).
    pub fn firing(&self) -> Option<AlertEvent> {
        let mut event = self.raise.clone()?;
        if let Some(place) = &self.updated_localisation {
            event.localisation = Some(place.clone());
        }
        Some(event)
    }
}

/// What a previous run left: which targets answered and which alerts are raised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Persisted {
    pub answered: Vec<TargetId>,
    pub active: Vec<ActiveAlert>,
}

/// One queued delivery: the event `seq` owed to `webhook` for `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub webhook: String,
    pub target: Subject,
    pub seq: u64,
}

/// Events kept in memory by default when the outbox cannot write them.
pub const MEMORY_EVENTS: usize = 1_000;

/// Why [`Outbox::prune`] dropped a queued delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// It waited longer than the maximum age.
    Age,
    /// The undelivered events took more than the byte budget.
    Bytes,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Age => "age",
            DropReason::Bytes => "bytes",
        }
    }
}

/// A queued delivery [`Outbox::prune`] dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub webhook: String,
    pub target: Subject,
    pub seq: u64,
    pub reason: DropReason,
}

/// How many events are kept in memory only, and how many the memory bound
/// dropped since start, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryCounts {
    pub held: u64,
    pub dropped: u64,
}

/// An event the outbox could not write, kept until a later commit can.
struct Held {
    event: AlertEvent,
    /// Its JSON, exactly what is sent and what will be stored.
    body: Vec<u8>,
    /// The webhooks that do not have it yet: one that got it from memory is
    /// not queued again when the event is finally written.
    owed: Vec<String>,
}

/// What the outbox holds in memory only, oldest first.
#[derive(Default)]
struct Unwritten {
    events: VecDeque<Held>,
    answered: Vec<TargetId>,
    /// Events the memory bound dropped, since start.
    dropped: u64,
}

/// The sled-backed outbox.
pub struct Outbox {
    db: sled::Db,
    path: PathBuf,
    instance: String,
    next_seq: Mutex<u64>,
    /// Opened with [`Outbox::open_in_memory`]: nothing survives a restart.
    in_memory: bool,
    unwritten: Mutex<Unwritten>,
    memory_limit: AtomicUsize,
    /// Tests make writes fail here, as a read-only or full disk would.
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicBool,
}

/// sled's settings for an outbox, without its location.
fn sled_config() -> sled::Config {
    sled::Config::new()
        // Commits flush explicitly; this background flush only persists
        // removals of delivered events, which may be lost harmlessly.
        .flush_every_ms(Some(1000))
        .cache_capacity(4 << 20)
        .mode(sled::Mode::LowSpace)
}

fn queue_key(webhook: &str, target: &Subject, seq: u64) -> Vec<u8> {
    let mut key = queue_prefix(webhook, target);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn queue_prefix(webhook: &str, target: &Subject) -> Vec<u8> {
    let mut key = vec![QUEUE];
    key.extend_from_slice(webhook.as_bytes());
    key.push(0);
    key.extend_from_slice(target.key().as_bytes());
    key.push(0);
    key
}

fn event_key(seq: u64) -> [u8; 9] {
    let mut key = [EVENT; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn active_key(target: &Subject, kind: AlertKind) -> Vec<u8> {
    let mut key = vec![ACTIVE];
    key.extend_from_slice(target.key().as_bytes());
    key.push(0);
    key.extend_from_slice(kind.as_str().as_bytes());
    key
}

fn answered_key(target: &TargetId) -> Vec<u8> {
    let mut key = vec![ANSWERED];
    key.extend_from_slice(target.as_str().as_bytes());
    key
}

/// Splits a queue key into (webhook, target, seq).
fn parse_queue_key(key: &[u8]) -> Option<Queued> {
    let rest = key.strip_prefix(&[QUEUE])?;
    let (names, seq) = rest.split_at(rest.len().checked_sub(8)?);
    let mut parts = names.split(|b| *b == 0);
    let webhook = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let target = Subject::parse(std::str::from_utf8(parts.next()?).ok()?).ok()?;
    Some(Queued {
        webhook,
        target,
        seq: u64::from_be_bytes(seq.try_into().ok()?),
    })
}

/// The subject an event is about.
fn subject_of(event: &AlertEvent) -> Subject {
    Subject::parse(&event.target.name).expect("events are built from valid subject keys")
}

/// What the raised alert `current` of `event`'s subject and kind becomes
/// with `event`: a raise creates it, an update notes the localisation it
/// sent, a clear removes it (`Some(None)`). `None`: `event` is an update of
/// an alert not raised (any more), to be dropped.
fn next_record(
    current: Option<ActiveAlert>,
    event: &AlertEvent,
    target: &Subject,
) -> Option<Option<ActiveAlert>> {
    match event.state {
        AlertState::Raised => Some(Some(ActiveAlert {
            target: target.clone(),
            kind: event.kind,
            alert_id: event.alert_id.clone(),
            raised_at_ms: event.raised_at_ms,
            summary: event.summary.clone(),
            raise: Some(AlertEvent {
                snapshot: serde_json::Value::Null,
                ..event.clone()
            }),
            updated_localisation: None,
        })),
        AlertState::Updated => match current {
            Some(active) if active.alert_id == event.alert_id => Some(Some(ActiveAlert {
                updated_localisation: event.localisation.clone(),
                ..active
            })),
            _ => None,
        },
        AlertState::Cleared => Some(None),
    }
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`. Queues of webhooks no longer in
    /// `webhooks` are dropped (with a warning), and so are events no webhook
    /// still owes.
    pub fn open(path: &Path, webhooks: &[String]) -> Result<Outbox, AlertsError> {
        Outbox::open_config(sled_config().path(path), path, webhooks)
    }

    /// An outbox that lives in memory (sled's temporary database, under
    /// `/dev/shm` on Linux, deleted when dropped), for when the one at `path`
    /// cannot be opened at all: alerts are still raised and delivered, but a
    /// restart forgets what was owed. `path` only names it in errors.
    pub fn open_in_memory(path: &Path, webhooks: &[String]) -> Result<Outbox, AlertsError> {
        let mut outbox = Outbox::open_config(sled_config().temporary(true), path, webhooks)?;
        outbox.in_memory = true;
        Ok(outbox)
    }

    /// Whether this outbox is [`Outbox::open_in_memory`]'s.
    pub fn in_memory(&self) -> bool {
        self.in_memory
    }

    fn open_config(
        config: sled::Config,
        path: &Path,
        webhooks: &[String],
    ) -> Result<Outbox, AlertsError> {
        let open_err = |source| AlertsError::Open {
            path: path.to_owned(),
            source,
        };
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled's file lock: a previous owner is still closing.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(open_err(e)),
            }
        };
        let sled_err = |op| {
            let path = path.to_owned();
            move |source| AlertsError::Sled { path, op, source }
        };
        let next_seq = db
            .get(META_NEXT_SEQ)
            .map_err(sled_err("reading the sequence"))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(1, u64::from_be_bytes);
        let instance = match db
            .get(META_INSTANCE)
            .map_err(sled_err("reading the instance id"))?
        {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                // Event ids start with this, so two boxes posting to one
                // receiver never share an id.
                let id = format!("{:016x}", fastrand::u64(..));
                db.insert(META_INSTANCE, id.as_bytes())
                    .map_err(sled_err("writing the instance id"))?;
                db.flush().map_err(sled_err("flushing"))?;
                id
            }
        };
        let outbox = Outbox {
            db,
            path: path.to_owned(),
            instance,
            next_seq: Mutex::new(next_seq),
            in_memory: false,
            unwritten: Mutex::new(Unwritten::default()),
            memory_limit: AtomicUsize::new(MEMORY_EVENTS),
            #[cfg(test)]
            fail_writes: std::sync::atomic::AtomicBool::new(false),
        };
        outbox.drop_orphans(webhooks)?;
        outbox.prune_incidents(super::event::now_ms())?;
        Ok(outbox)
    }

    fn err(&self, op: &'static str) -> impl Fn(sled::Error) -> AlertsError + '_ {
        move |source| AlertsError::Sled {
            path: self.path.clone(),
            op,
            source,
        }
    }

    fn drop_orphans(&self, webhooks: &[String]) -> Result<(), AlertsError> {
        let mut batch = sled::Batch::default();
        let mut owed = std::collections::BTreeSet::new();
        let mut dropped = 0usize;
        for item in self.db.scan_prefix([QUEUE]) {
            let (key, _) = item.map_err(self.err("scanning the queues"))?;
            match parse_queue_key(&key) {
                Some(q) if webhooks.contains(&q.webhook) => {
                    owed.insert(q.seq);
                }
                other => {
                    if let Some(q) = other {
                        tracing::warn!(webhook = %q.webhook, target = %q.target, seq = q.seq,
                            "dropping an undelivered alert: its webhook is no longer configured");
                    }
                    batch.remove(key);
                    dropped += 1;
                }
            }
        }
        for item in self.db.scan_prefix([EVENT]) {
            let (key, _) = item.map_err(self.err("scanning the events"))?;
            let seq = <[u8; 8]>::try_from(&key[1..]).map(u64::from_be_bytes).ok();
            if seq.is_none_or(|seq| !owed.contains(&seq)) {
                batch.remove(key);
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.db
                .apply_batch(batch)
                .map_err(self.err("dropping orphans"))?;
            self.db.flush().map_err(self.err("flushing"))?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This outbox's random id, the prefix of every alert and event id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// A fresh sequence number; it is persisted by the next [`Outbox::commit`].
    pub fn reserve_seq(&self) -> u64 {
        let mut next = sys::lock(&self.next_seq);
        let seq = *next;
        *next += 1;
        seq
    }

    /// What a previous run left, with what this run holds in memory only
    /// applied over it.
    pub fn persisted(&self) -> Result<Persisted, AlertsError> {
        let mut persisted = Persisted::default();
        for item in self.db.scan_prefix([ANSWERED]) {
            let (key, _) = item.map_err(self.err("reading answered targets"))?;
            if let Some(id) = std::str::from_utf8(&key[1..])
                .ok()
                .and_then(|s| TargetId::new(s).ok())
            {
                persisted.answered.push(id);
            }
        }
        for item in self.db.scan_prefix([ACTIVE]) {
            let (_, value) = item.map_err(self.err("reading raised alerts"))?;
            match serde_json::from_slice::<ActiveAlert>(&value) {
                Ok(active) => persisted.active.push(active),
                Err(err) => tracing::warn!(error = %err, "skipping an unreadable raised alert"),
            }
        }
        let unwritten = self.unwritten();
        for id in &unwritten.answered {
            if !persisted.answered.contains(id) {
                persisted.answered.push(id.clone());
            }
        }
        for held in &unwritten.events {
            let event = &held.event;
            let target = subject_of(event);
            let at = persisted
                .active
                .iter()
                .position(|a| a.target == target && a.kind == event.kind);
            let current = at.map(|i| persisted.active[i].clone());
            match (at, next_record(current, event, &target)) {
                (Some(i), Some(Some(record))) => persisted.active[i] = record,
                (None, Some(Some(record))) => persisted.active.push(record),
                (Some(i), Some(None)) => {
                    persisted.active.remove(i);
                }
                _ => {}
            }
        }
        Ok(persisted)
    }

    fn unwritten(&self) -> std::sync::MutexGuard<'_, Unwritten> {
        // Every change is a push, a pop or a clear: a panic leaves it usable.
        sys::lock(&self.unwritten)
    }

    /// The raised alert of `kind` on `target`, if any (events held in memory
    /// included, so an alert raised while the disk failed still clears).
    pub fn active(
        &self,
        target: &Subject,
        kind: AlertKind,
    ) -> Result<Option<ActiveAlert>, AlertsError> {
        let unwritten = self.unwritten();
        self.active_over(&unwritten, target, kind)
    }

    /// The raised alert on disk, with the events held in `unwritten` applied.
    fn active_over(
        &self,
        unwritten: &Unwritten,
        target: &Subject,
        kind: AlertKind,
    ) -> Result<Option<ActiveAlert>, AlertsError> {
        let mut record = self.stored_active(target, kind)?;
        for held in &unwritten.events {
            let event = &held.event;
            if event.kind == kind && subject_of(event) == *target {
                if let Some(next) = next_record(record.clone(), event, target) {
                    record = next;
                }
            }
        }
        Ok(record)
    }

    /// The raised alert of `kind` on `target` as stored on disk.
    fn stored_active(
        &self,
        target: &Subject,
        kind: AlertKind,
    ) -> Result<Option<ActiveAlert>, AlertsError> {
        let value = self
            .db
            .get(active_key(target, kind))
            .map_err(self.err("reading a raised alert"))?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Every raised alert.
    pub fn active_all(&self) -> Result<Vec<ActiveAlert>, AlertsError> {
        Ok(self.persisted()?.active)
    }

    /// How many events wait in memory for the disk, at most (default
    /// [`MEMORY_EVENTS`]); beyond it the oldest is dropped.
    pub fn set_memory_limit(&self, events: usize) {
        self.memory_limit.store(events, Ordering::Relaxed);
    }

    /// Events held in memory now, and those the memory bound dropped.
    pub fn memory_counts(&self) -> MemoryCounts {
        let unwritten = self.unwritten();
        MemoryCounts {
            held: unwritten.events.len() as u64,
            dropped: unwritten.dropped,
        }
    }

    /// Makes every later write fail (as a read-only disk does), or not.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::Relaxed);
    }

    /// Stores `events` (each with the webhooks that want it), updates the raised
    /// alerts, and notes `answered`, in one atomic batch, after the events an
    /// earlier commit could not write. Call [`Outbox::flush`] after it. An
    /// update of an alert that is not raised (any more) is neither stored nor
    /// queued, so it can never follow the alert's clear; returns the seqs of
    /// such updates.
    ///
    /// When sled cannot write the batch, the events are kept in memory (see
    /// the module's header) and this still succeeds: the caller queues their
    /// deliveries as usual, and the next commit writes them first.
    pub fn commit(
        &self,
        events: &[(AlertEvent, Vec<String>)],
        answered: Option<&TargetId>,
    ) -> Result<Vec<u64>, AlertsError> {
        let mut unwritten = self.unwritten();
        let result = {
            // Held events are older than these: they go first, in order.
            let mut entries: Vec<(&AlertEvent, &[String])> = unwritten
                .events
                .iter()
                .map(|h| (&h.event, h.owed.as_slice()))
                .collect();
            entries.extend(events.iter().map(|(e, w)| (e, w.as_slice())));
            let mut targets: Vec<&TargetId> = unwritten.answered.iter().collect();
            targets.extend(answered);
            self.write(&entries, &targets)
        };
        match result {
            Ok(stale) => {
                if !unwritten.events.is_empty() {
                    tracing::info!(
                        events = unwritten.events.len(),
                        "alert events kept in memory are now stored in the outbox"
                    );
                }
                unwritten.events.clear();
                unwritten.answered.clear();
                Ok(stale
                    .into_iter()
                    .filter(|seq| events.iter().any(|(e, _)| e.seq == *seq))
                    .collect())
            }
            Err(err @ AlertsError::Sled { .. }) => {
                self.hold(&mut unwritten, events, answered, &err)
            }
            Err(err) => Err(err),
        }
    }

    /// Keeps `events` in memory after a failed write; returns the seqs of
    /// updates of alerts no longer raised, which are not kept.
    fn hold(
        &self,
        unwritten: &mut Unwritten,
        events: &[(AlertEvent, Vec<String>)],
        answered: Option<&TargetId>,
        error: &AlertsError,
    ) -> Result<Vec<u64>, AlertsError> {
        let mut stale = Vec::new();
        for (event, webhooks) in events {
            let target = subject_of(event);
            let current = self.active_over(unwritten, &target, event.kind)?;
            if next_record(current, event, &target).is_none() {
                stale.push(event.seq);
                continue;
            }
            let body = serde_json::to_vec(event).map_err(|source| AlertsError::Encode {
                seq: event.seq,
                source,
            })?;
            unwritten.events.push_back(Held {
                event: event.clone(),
                body,
                owed: webhooks.clone(),
            });
        }
        if let Some(id) = answered {
            if !unwritten.answered.contains(id) {
                unwritten.answered.push(id.clone());
            }
        }
        let limit = self.memory_limit.load(Ordering::Relaxed);
        while unwritten.events.len() > limit {
            let Some(lost) = unwritten.events.pop_front() else {
                break;
            };
            unwritten.dropped += 1;
            tracing::error!(
                id = %lost.event.id,
                target = %lost.event.target.name,
                limit,
                "alert event dropped: the outbox cannot be written and the memory bound is reached"
            );
        }
        tracing::warn!(
            %error,
            held = unwritten.events.len(),
            "alert outbox write failed; the events are kept in memory, delivered from there, \
             and written with the next alert"
        );
        Ok(stale)
    }

    /// One atomic batch of `events` (in order) and `answered`.
    fn write(
        &self,
        events: &[(&AlertEvent, &[String])],
        answered: &[&TargetId],
    ) -> Result<Vec<u64>, AlertsError> {
        let mut batch = sled::Batch::default();
        let mut top = None;
        let mut stale = Vec::new();
        // Incidents and raised alerts touched by this batch: two events of
        // one alert in one batch must see each other's changes.
        let mut touched: Vec<(Vec<u8>, Incident)> = Vec::new();
        let mut records: Vec<((Subject, AlertKind), Option<ActiveAlert>)> = Vec::new();
        // The age [`Outbox::prune`] bounds is the wait for delivery, not the
        // event's own time (a replayed or simulated clock must not expire it).
        let queued_at = super::event::now_ms().to_be_bytes();
        for &(event, webhooks) in events {
            let target = subject_of(event);
            top = top.max(Some(event.seq));
            let slot = (target.clone(), event.kind);
            let current = match records.iter().position(|(k, _)| *k == slot) {
                Some(i) => records.swap_remove(i).1,
                None if event.state == AlertState::Updated => {
                    self.stored_active(&target, event.kind)?
                }
                None => None,
            };
            let Some(record) = next_record(current.clone(), event, &target) else {
                stale.push(event.seq);
                records.push((slot, current));
                continue;
            };
            records.push((slot, record.clone()));
            let key = incidents::key(event.raised_at_ms, &event.alert_id);
            let mut incident = match touched.iter().position(|(k, _)| *k == key) {
                Some(i) => touched.swap_remove(i).1,
                None => self
                    .incident(&key)?
                    .unwrap_or_else(|| Incident::open(event)),
            };
            incident.apply(event);
            touched.push((key, incident));
            if !webhooks.is_empty() {
                let body = serde_json::to_vec(event).map_err(|source| AlertsError::Encode {
                    seq: event.seq,
                    source,
                })?;
                batch.insert(&event_key(event.seq), body);
                for webhook in webhooks {
                    batch.insert(queue_key(webhook, &target, event.seq), &queued_at);
                }
            }
            match record {
                Some(active) => {
                    let value =
                        serde_json::to_vec(&active).map_err(|source| AlertsError::Encode {
                            seq: event.seq,
                            source,
                        })?;
                    batch.insert(active_key(&target, event.kind), value);
                }
                None => batch.remove(active_key(&target, event.kind)),
            }
        }
        if let Some(seq) = top {
            let next = (seq + 1).max(*sys::lock(&self.next_seq));
            batch.insert(META_NEXT_SEQ, &next.to_be_bytes());
        }
        for target in answered {
            batch.insert(answered_key(target), &[]);
        }
        for (key, incident) in &touched {
            let value = serde_json::to_vec(incident).map_err(|source| AlertsError::Encode {
                seq: top.unwrap_or(0),
                source,
            })?;
            batch.insert(key.as_slice(), value);
        }
        #[cfg(test)]
        if self.fail_writes.load(Ordering::Relaxed) {
            return Err(self.err("storing alert events")(sled::Error::Io(
                std::io::Error::other("injected: read-only file system"),
            )));
        }
        self.db
            .apply_batch(batch)
            .map_err(self.err("storing alert events"))?;
        Ok(stale)
    }

    fn incident(&self, key: &[u8]) -> Result<Option<Incident>, AlertsError> {
        let value = self.db.get(key).map_err(self.err("reading an incident"))?;
        Ok(value.and_then(|v| match serde_json::from_slice(&v) {
            Ok(incident) => Some(incident),
            Err(err) => {
                tracing::warn!(error = %err, "an unreadable incident record is replaced");
                None
            }
        }))
    }

    /// Incidents raised at some moment in `[from_ms, to_ms]`, of `subject`
    /// when given, newest first. Unreadable records are skipped with a warning.
    pub fn incidents(
        &self,
        from_ms: u64,
        to_ms: u64,
        subject: Option<&str>,
    ) -> Result<Vec<Incident>, AlertsError> {
        let mut found = Vec::new();
        for entry in self.db.scan_prefix([incidents::INCIDENT]).rev() {
            let (_, value) = entry.map_err(self.err("reading incidents"))?;
            let incident: Incident = match serde_json::from_slice(&value) {
                Ok(incident) => incident,
                Err(err) => {
                    tracing::warn!(error = %err, "skipping an unreadable incident record");
                    continue;
                }
            };
            if incident.overlaps(from_ms, to_ms) && subject.is_none_or(|s| s == incident.target) {
                found.push(incident);
            }
        }
        Ok(found)
    }

    /// Drops closed incidents that ended before `now_ms` minus the retention,
    /// and the oldest beyond [`incidents::MAX_INCIDENTS`].
    fn prune_incidents(&self, now_ms: u64) -> Result<(), AlertsError> {
        let horizon = now_ms.saturating_sub(incidents::RETENTION.as_millis() as u64);
        let keys: Vec<(sled::IVec, bool)> = self
            .db
            .scan_prefix([incidents::INCIDENT])
            .map(|entry| {
                let (key, value) = entry.map_err(self.err("reading incidents"))?;
                let expired = serde_json::from_slice::<Incident>(&value)
                    .map_or(true, |i| i.cleared_at_ms.is_some_and(|c| c < horizon));
                Ok((key, expired))
            })
            .collect::<Result<_, AlertsError>>()?;
        let excess = keys.len().saturating_sub(incidents::MAX_INCIDENTS);
        let mut batch = sled::Batch::default();
        for (i, (key, expired)) in keys.iter().enumerate() {
            if *expired || i < excess {
                batch.remove(key);
            }
        }
        self.db
            .apply_batch(batch)
            .map_err(self.err("pruning incidents"))
    }

    /// Forgets that `target` ever answered: it was removed from the config, and
    /// if it comes back it starts over like a new target.
    pub fn forget_answered(&self, target: &TargetId) -> Result<(), AlertsError> {
        self.db
            .remove(answered_key(target))
            .map(|_| ())
            .map_err(self.err("forgetting a removed target"))
    }

    /// Waits until everything committed is on disk.
    pub async fn flush(&self) -> Result<(), AlertsError> {
        self.db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(self.err("flushing"))
    }

    /// Everything still owed, ordered by webhook, target, then seq.
    pub fn queued(&self) -> Result<Vec<Queued>, AlertsError> {
        let mut queued = Vec::new();
        for item in self.db.scan_prefix([QUEUE]) {
            let (key, _) = item.map_err(self.err("scanning the queues"))?;
            queued.extend(parse_queue_key(&key));
        }
        Ok(queued)
    }

    /// The JSON of event `seq`: held in memory, else stored.
    pub fn event(&self, seq: u64) -> Result<Option<Vec<u8>>, AlertsError> {
        if let Some(held) = self.unwritten().events.iter().find(|h| h.event.seq == seq) {
            return Ok(Some(held.body.clone()));
        }
        Ok(self
            .db
            .get(event_key(seq))
            .map_err(self.err("reading an event"))?
            .map(|v| v.to_vec()))
    }

    /// `webhook` has event `seq` of `target`: forget that delivery, and the
    /// event once no webhook in `webhooks` owes it.
    pub fn delivered(
        &self,
        webhook: &str,
        target: &Subject,
        seq: u64,
        webhooks: &[String],
    ) -> Result<(), AlertsError> {
        {
            let mut unwritten = self.unwritten();
            if let Some(held) = unwritten.events.iter_mut().find(|h| h.event.seq == seq) {
                // Not on disk yet: it is written without this webhook's queue.
                held.owed.retain(|w| w != webhook);
                return Ok(());
            }
        }
        self.db
            .remove(queue_key(webhook, target, seq))
            .map_err(self.err("removing a delivered event"))?;
        let owed = webhooks.iter().any(|w| {
            self.db
                .contains_key(queue_key(w, target, seq))
                .unwrap_or(true)
        });
        if !owed {
            self.db
                .remove(event_key(seq))
                .map_err(self.err("removing a delivered event"))?;
        }
        Ok(())
    }

    /// Drops the deliveries queued longer than `max_age` before `now_ms`
    /// and then, oldest first, those beyond `max_bytes` of stored event
    /// JSON, so a receiver gone for good cannot fill the disk. The raised
    /// alerts and incidents stay: only what is owed to webhooks goes.
    /// Deliveries queued before queue times were recorded never age (the
    /// byte budget still applies). Returns what was dropped, for the
    /// worker's lanes and counters.
    pub fn prune(
        &self,
        now_ms: u64,
        max_age: Duration,
        max_bytes: u64,
    ) -> Result<Vec<Dropped>, AlertsError> {
        let mut owed: BTreeMap<u64, Vec<(sled::IVec, Queued)>> = BTreeMap::new();
        // The earliest time each event was queued.
        let mut since: BTreeMap<u64, u64> = BTreeMap::new();
        for item in self.db.scan_prefix([QUEUE]) {
            let (key, value) = item.map_err(self.err("scanning the queues"))?;
            if let Some(q) = parse_queue_key(&key) {
                let at = <[u8; 8]>::try_from(value.as_ref()).map_or(u64::MAX, u64::from_be_bytes);
                let first = since.entry(q.seq).or_insert(at);
                *first = (*first).min(at);
                owed.entry(q.seq).or_default().push((key, q));
            }
        }
        // (seq, size, queued at) of every owed event, oldest first.
        let mut stored = Vec::with_capacity(owed.len());
        for (&seq, &queued_at) in &since {
            let Some(body) = self
                .db
                .get(event_key(seq))
                .map_err(self.err("reading an event"))?
            else {
                continue;
            };
            stored.push((seq, body.len() as u64, queued_at));
        }
        let horizon = now_ms.saturating_sub(max_age.as_millis() as u64);
        let mut total: u64 = stored.iter().map(|(_, size, _)| size).sum();
        let mut batch = sled::Batch::default();
        let mut dropped = Vec::new();
        for (seq, size, queued_at) in stored {
            let reason = if queued_at < horizon {
                DropReason::Age
            } else if total > max_bytes {
                DropReason::Bytes
            } else {
                continue;
            };
            total -= size;
            batch.remove(&event_key(seq));
            for (key, q) in owed.remove(&seq).unwrap_or_default() {
                batch.remove(key);
                dropped.push(Dropped {
                    webhook: q.webhook,
                    target: q.target,
                    seq,
                    reason,
                });
            }
        }
        if !dropped.is_empty() {
            self.db
                .apply_batch(batch)
                .map_err(self.err("dropping expired deliveries"))?;
        }
        Ok(dropped)
    }

    /// Flushes synchronously (shutdown).
    pub fn flush_now(&self) -> Result<(), AlertsError> {
        self.db.flush().map(|_| ()).map_err(self.err("flushing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::event::{rfc3339, AlertTarget, ClearReason, SCHEMA};

    fn event(outbox: &Outbox, target: &str, kind: AlertKind, state: AlertState) -> AlertEvent {
        let seq = outbox.reserve_seq();
        AlertEvent {
            schema: SCHEMA.into(),
            id: format!("{}-{seq}-{state}", outbox.instance()),
            alert_id: format!("{}-{seq}", outbox.instance()),
            seq,
            kind,
            state,
            target: AlertTarget {
                name: target.into(),
                subject: Subject::parse(target).unwrap().kind(),
                label: None,
                host: "198.18.0.2".into(),
                address: None,
                tags: vec![],
            },
            at_ms: seq,
            at: rfc3339(seq),
            raised_at_ms: seq,
            summary: format!("{kind} {state}"),
            reason: None,
            value: None,
            threshold: None,
            unit: None,
            localisation: None,
            path_change: None,
            snapshot: serde_json::Value::Null,
        }
    }

    fn hooks(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn id(name: &str) -> TargetId {
        TargetId::new(name).unwrap()
    }

    fn subject(key: &str) -> Subject {
        Subject::parse(key).unwrap()
    }

    #[test]
    fn queues_come_back_in_order_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let both = hooks(&["a", "b"]);
        let (instance, seqs) = {
            let outbox = Outbox::open(&path, &both).unwrap();
            let mut seqs = Vec::new();
            // Interleave two targets; "a" wants everything, "b" only target y.
            for (target, kind) in [
                ("x", AlertKind::Loss),
                ("y", AlertKind::Loss),
                ("x", AlertKind::Latency),
                ("y", AlertKind::Unreachable),
            ] {
                let e = event(&outbox, target, kind, AlertState::Raised);
                seqs.push(e.seq);
                let wanted = if target == "y" {
                    both.clone()
                } else {
                    hooks(&["a"])
                };
                outbox.commit(&[(e, wanted)], Some(&id(target))).unwrap();
            }
            outbox.flush_now().unwrap();
            (outbox.instance().to_owned(), seqs)
        };
        let outbox = Outbox::open(&path, &both).unwrap();
        assert_eq!(outbox.instance(), instance, "the instance id persists");
        let q: Vec<(String, String, u64)> = outbox
            .queued()
            .unwrap()
            .into_iter()
            .map(|q| (q.webhook, q.target.to_string(), q.seq))
            .collect();
        assert_eq!(
            q,
            vec![
                ("a".into(), "x".into(), seqs[0]),
                ("a".into(), "x".into(), seqs[2]),
                ("a".into(), "y".into(), seqs[1]),
                ("a".into(), "y".into(), seqs[3]),
                ("b".into(), "y".into(), seqs[1]),
                ("b".into(), "y".into(), seqs[3]),
            ]
        );
        assert!(
            outbox.reserve_seq() > seqs[3],
            "sequence numbers are never reused"
        );
        let persisted = outbox.persisted().unwrap();
        assert_eq!(persisted.answered, vec![id("x"), id("y")]);
        assert_eq!(persisted.active.len(), 4);
        let stored: AlertEvent =
            serde_json::from_slice(&outbox.event(seqs[1]).unwrap().unwrap()).unwrap();
        assert_eq!(stored.target.name, "y");

        // The event stays until every webhook that wants it has it.
        outbox
            .delivered("a", &subject("y"), seqs[1], &both)
            .unwrap();
        assert!(outbox.event(seqs[1]).unwrap().is_some(), "b still owes it");
        outbox
            .delivered("b", &subject("y"), seqs[1], &both)
            .unwrap();
        assert!(outbox.event(seqs[1]).unwrap().is_none());
    }

    #[test]
    fn incidents_follow_alerts_survive_a_reopen_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let now = crate::alerts::event::now_ms();
        let day = 24 * 3600 * 1000;
        let at = |mut e: AlertEvent, raised: u64, at: u64| {
            e.raised_at_ms = raised;
            e.at_ms = at;
            e.value = Some((at % 97) as f64);
            e
        };
        {
            let outbox = Outbox::open(&path, &hooks(&["a"])).unwrap();
            // An old incident, over for 99 days: past the 90-day retention.
            let old = at(
                event(&outbox, "y", AlertKind::Latency, AlertState::Raised),
                now - 100 * day,
                now - 100 * day,
            );
            let mut old_clear = at(
                event(&outbox, "y", AlertKind::Latency, AlertState::Cleared),
                now - 100 * day,
                now - 99 * day,
            );
            old_clear.alert_id = old.alert_id.clone();
            outbox
                .commit(&[(old, vec![]), (old_clear, vec![])], None)
                .unwrap();
            // A raise, an update and a clear of x's loss alert.
            let raised = at(
                event(&outbox, "x", AlertKind::Loss, AlertState::Raised),
                now - 5_000,
                now - 5_000,
            );
            let alert_id = raised.alert_id.clone();
            outbox.commit(&[(raised, vec!["a".into()])], None).unwrap();
            let mut updated = at(
                event(&outbox, "x", AlertKind::Loss, AlertState::Updated),
                now - 5_000,
                now - 3_000,
            );
            updated.alert_id = alert_id.clone();
            updated.value = Some(96.0);
            updated.localisation = Some(serde_json::json!({"ttl": 2}));
            outbox.commit(&[(updated, vec![])], None).unwrap();
            let open = outbox.incidents(0, u64::MAX, Some("x")).unwrap();
            assert_eq!(open.len(), 1);
            assert_eq!(open[0].cleared_at_ms, None, "still raised");
            let mut cleared = at(
                event(&outbox, "x", AlertKind::Loss, AlertState::Cleared),
                now - 5_000,
                now - 1_000,
            );
            cleared.alert_id = alert_id;
            cleared.reason = Some(ClearReason::Recovered);
            outbox.commit(&[(cleared, vec![])], None).unwrap();
            assert_eq!(outbox.incidents(0, u64::MAX, None).unwrap().len(), 2);
        }
        let outbox = Outbox::open(&path, &hooks(&["a"])).unwrap();
        let all = outbox.incidents(0, u64::MAX, None).unwrap();
        assert_eq!(all.len(), 1, "the expired one is gone: {all:?}");
        let x = &all[0];
        assert_eq!((x.target.as_str(), x.kind), ("x", AlertKind::Loss));
        assert_eq!(x.raised_at_ms, now - 5_000);
        assert_eq!(x.cleared_at_ms, Some(now - 1_000));
        assert_eq!(x.clear_reason, Some(ClearReason::Recovered));
        assert_eq!(x.updates, 1);
        assert_eq!(x.peak_value, Some(96.0));
        assert_eq!(x.localisation.as_ref().unwrap()["ttl"], 2);
        assert!(
            outbox.incidents(now, u64::MAX, None).unwrap().is_empty(),
            "over before now"
        );
        assert!(outbox.incidents(0, u64::MAX, Some("z")).unwrap().is_empty());
    }

    #[test]
    fn clears_remove_the_raised_alert() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox"), &hooks(&["a"])).unwrap();
        let raised = event(&outbox, "x", AlertKind::Loss, AlertState::Raised);
        outbox.commit(&[(raised.clone(), vec![])], None).unwrap();
        let active = outbox
            .active(&subject("x"), AlertKind::Loss)
            .unwrap()
            .unwrap();
        assert_eq!(active.alert_id, raised.alert_id);
        assert!(
            outbox.event(raised.seq).unwrap().is_none(),
            "no webhook wants it: not stored"
        );
        let cleared = event(&outbox, "x", AlertKind::Loss, AlertState::Cleared);
        outbox.commit(&[(cleared, vec![])], None).unwrap();
        assert_eq!(outbox.active(&subject("x"), AlertKind::Loss).unwrap(), None);
    }

    #[test]
    fn an_update_records_its_localisation_and_never_outlives_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let a = hooks(&["a"]);
        let (raised, update_seq) = {
            let outbox = Outbox::open(&path, &a).unwrap();
            let mut raised = event(&outbox, "x", AlertKind::Loss, AlertState::Raised);
            raised.localisation = Some(serde_json::json!({"ttl": 3, "summary": "hop 3"}));
            outbox.commit(&[(raised.clone(), a.clone())], None).unwrap();
            let mut update = event(&outbox, "x", AlertKind::Loss, AlertState::Updated);
            update.alert_id = raised.alert_id.clone();
            update.localisation =
                Some(serde_json::json!({"ttl": 2, "confidence": 0.9, "summary": "hop 2"}));
            let stale = outbox.commit(&[(update.clone(), a.clone())], None).unwrap();
            assert!(stale.is_empty());
            outbox.flush_now().unwrap();
            (raised, update.seq)
        };
        // Reopened: the record holds what the update sent, the raise as it was.
        let outbox = Outbox::open(&path, &a).unwrap();
        let active = outbox
            .active(&subject("x"), AlertKind::Loss)
            .unwrap()
            .unwrap();
        assert_eq!(active.alert_id, raised.alert_id);
        assert_eq!(active.raised_at_ms, raised.raised_at_ms);
        assert_eq!(active.sent_hop(), Some(StartHop(2)));
        assert_eq!(active.localisation().unwrap()["confidence"], 0.9);
        assert_eq!(
            active.raise.as_ref().unwrap().localisation,
            raised.localisation
        );
        let firing = active.firing().unwrap();
        assert_eq!(firing.state, AlertState::Raised);
        assert_eq!(firing.localisation.unwrap()["ttl"], 2, "re-sent as updated");
        let queued: Vec<u64> = outbox.queued().unwrap().iter().map(|q| q.seq).collect();
        assert_eq!(queued, vec![raised.seq, update_seq], "in order, one lane");

        // Cleared: a late update of it is neither stored, queued nor recorded.
        let mut cleared = event(&outbox, "x", AlertKind::Loss, AlertState::Cleared);
        cleared.alert_id = raised.alert_id.clone();
        outbox.commit(&[(cleared, a.clone())], None).unwrap();
        let mut late = event(&outbox, "x", AlertKind::Loss, AlertState::Updated);
        late.alert_id = raised.alert_id.clone();
        late.localisation = Some(serde_json::json!({"ttl": 1}));
        let stale = outbox.commit(&[(late.clone(), a.clone())], None).unwrap();
        assert_eq!(stale, vec![late.seq]);
        assert!(outbox.event(late.seq).unwrap().is_none());
        assert!(!outbox.queued().unwrap().iter().any(|q| q.seq == late.seq));
        assert_eq!(outbox.active(&subject("x"), AlertKind::Loss).unwrap(), None);
        assert!(outbox.reserve_seq() > late.seq, "its seq is not reused");
    }

    #[test]
    fn queues_of_removed_webhooks_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let seq = {
            let outbox = Outbox::open(&path, &hooks(&["old", "kept"])).unwrap();
            let e = event(&outbox, "x", AlertKind::Loss, AlertState::Raised);
            let seq = e.seq;
            let only_old = event(&outbox, "x", AlertKind::Jitter, AlertState::Raised);
            let old_seq = only_old.seq;
            outbox
                .commit(
                    &[(e, hooks(&["old", "kept"])), (only_old, hooks(&["old"]))],
                    None,
                )
                .unwrap();
            outbox.flush_now().unwrap();
            assert!(outbox.event(old_seq).unwrap().is_some());
            seq
        };
        let outbox = Outbox::open(&path, &hooks(&["kept"])).unwrap();
        let q = outbox.queued().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].webhook.as_str(), q[0].seq), ("kept", seq));
        assert!(
            outbox.event(seq + 1).unwrap().is_none(),
            "orphaned event removed"
        );
    }

    #[test]
    fn peers_and_targets_of_one_name_are_separate_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox"), &hooks(&["a"])).unwrap();
        let target = event(&outbox, "dc1", AlertKind::Loss, AlertState::Raised);
        let peer = event(&outbox, "peer:dc1", AlertKind::Loss, AlertState::Raised);
        assert_eq!(peer.target.subject, crate::alerts::SubjectKind::Peer);
        outbox
            .commit(
                &[(target, hooks(&["a"])), (peer.clone(), hooks(&["a"]))],
                None,
            )
            .unwrap();
        let q: Vec<String> = outbox
            .queued()
            .unwrap()
            .into_iter()
            .map(|q| q.target.key())
            .collect();
        assert_eq!(q, vec!["dc1", "peer:dc1"], "one lane each");
        let active = outbox
            .active(&subject("peer:dc1"), AlertKind::Loss)
            .unwrap()
            .unwrap();
        assert_eq!(active.alert_id, peer.alert_id);
        assert_eq!(active.target, Subject::Peer(id("dc1")));
        let cleared = event(&outbox, "peer:dc1", AlertKind::Loss, AlertState::Cleared);
        outbox.commit(&[(cleared, vec![])], None).unwrap();
        let left: Vec<Subject> = outbox
            .active_all()
            .unwrap()
            .into_iter()
            .map(|a| a.target)
            .collect();
        assert_eq!(
            left,
            vec![subject("dc1")],
            "the target's alert is untouched"
        );
    }

    #[test]
    fn raised_alerts_stored_by_an_older_release_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        {
            let outbox = Outbox::open(&path, &hooks(&["a"])).unwrap();
            // An `a` record as written before subjects existed: the raise
            // event's target has no `subject`.
            let record = serde_json::json!({
                "target": "gw", "kind": "loss", "alert_id": "i-3",
                "raised_at_ms": 7, "summary": "old",
                "raise": {
                    "schema": "hopwatch.alert.v1", "id": "i-3-raised", "alert_id": "i-3",
                    "seq": 3, "kind": "loss", "state": "raised",
                    "target": {"name": "gw", "label": null, "host": "198.18.0.2",
                               "address": null, "tags": ["wan"]},
                    "at_ms": 7, "at": "1970-01-01T00:00:00.007Z", "raised_at_ms": 7,
                    "summary": "old", "value": null, "threshold": null, "unit": null,
                    "localisation": {"kind": "loss", "ttl": 4, "summary": "loss starts at hop 4"},
                    "path_change": null, "snapshot": null
                }
            });
            outbox
                .db
                .insert(
                    active_key(&subject("gw"), AlertKind::Loss),
                    serde_json::to_vec(&record).unwrap(),
                )
                .unwrap();
            outbox.flush_now().unwrap();
        }
        let outbox = Outbox::open(&path, &hooks(&["a"])).unwrap();
        let active = outbox.persisted().unwrap().active;
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].target, subject("gw"));
        let raise = active[0].raise.as_ref().expect("the raise is kept");
        assert_eq!(raise.target.subject, crate::alerts::SubjectKind::Target);
        assert_eq!(active[0].updated_localisation, None, "never updated");
        assert_eq!(
            active[0].sent_hop(),
            Some(StartHop(4)),
            "what its raise sent is the last localisation sent"
        );
        assert_eq!(raise.target.tags, vec!["wan".to_owned()]);
    }

    #[test]
    fn the_memory_bound_drops_the_oldest_held_event_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox"), &hooks(&["a"])).unwrap();
        outbox.set_memory_limit(2);
        outbox.fail_writes(true);
        let seqs: Vec<u64> = [AlertKind::Loss, AlertKind::Latency, AlertKind::Jitter]
            .into_iter()
            .map(|kind| {
                let e = event(&outbox, "x", kind, AlertState::Raised);
                let seq = e.seq;
                let stale = outbox.commit(&[(e, hooks(&["a"]))], Some(&id("x")));
                assert_eq!(stale.unwrap(), Vec::<u64>::new(), "held, not failed");
                seq
            })
            .collect();
        assert_eq!(
            outbox.memory_counts(),
            MemoryCounts {
                held: 2,
                dropped: 1
            }
        );
        assert!(outbox.event(seqs[0]).unwrap().is_none(), "the oldest went");
        assert!(outbox.event(seqs[1]).unwrap().is_some());
        assert!(outbox.event(seqs[2]).unwrap().is_some());
        assert_eq!(outbox.active(&subject("x"), AlertKind::Loss).unwrap(), None);
        assert!(outbox
            .active(&subject("x"), AlertKind::Jitter)
            .unwrap()
            .is_some());

        // An update of the held raise is held after it; one of an alert
        // never raised is stale, held or not.
        let raised = outbox
            .active(&subject("x"), AlertKind::Latency)
            .unwrap()
            .unwrap();
        let mut update = event(&outbox, "x", AlertKind::Latency, AlertState::Updated);
        update.alert_id = raised.alert_id.clone();
        update.localisation = Some(serde_json::json!({"ttl": 4}));
        let orphan = event(&outbox, "x", AlertKind::Mos, AlertState::Updated);
        outbox.set_memory_limit(3);
        let stale = outbox
            .commit(
                &[
                    (update.clone(), hooks(&["a"])),
                    (orphan.clone(), hooks(&["a"])),
                ],
                None,
            )
            .unwrap();
        assert_eq!(stale, vec![orphan.seq]);
        assert_eq!(
            outbox.memory_counts(),
            MemoryCounts {
                held: 3,
                dropped: 1
            }
        );

        // Writable again: the held events are written in order, before these.
        outbox.fail_writes(false);
        let clear = {
            let mut e = event(&outbox, "x", AlertKind::Jitter, AlertState::Cleared);
            e.alert_id = outbox
                .active(&subject("x"), AlertKind::Jitter)
                .unwrap()
                .unwrap()
                .alert_id;
            e
        };
        assert!(outbox
            .commit(&[(clear.clone(), hooks(&["a"]))], None)
            .unwrap()
            .is_empty());
        assert_eq!(outbox.memory_counts().held, 0);
        let queued: Vec<u64> = outbox.queued().unwrap().iter().map(|q| q.seq).collect();
        assert_eq!(queued, vec![seqs[1], seqs[2], update.seq, clear.seq]);
        let stored = outbox
            .active(&subject("x"), AlertKind::Latency)
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.sent_hop(),
            Some(StartHop(4)),
            "the held update applied"
        );
        assert_eq!(
            outbox.active(&subject("x"), AlertKind::Jitter).unwrap(),
            None
        );
        assert_eq!(outbox.persisted().unwrap().answered, vec![id("x")]);
    }

    #[test]
    fn prune_drops_old_then_over_budget_deliveries_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox"), &hooks(&["a", "b"])).unwrap();
        let mut seqs = Vec::new();
        let mut queued_at = Vec::new();
        for kind in [
            AlertKind::Loss,
            AlertKind::Latency,
            AlertKind::Jitter,
            AlertKind::Mos,
        ] {
            let e = event(&outbox, "x", kind, AlertState::Raised);
            seqs.push(e.seq);
            outbox.commit(&[(e, hooks(&["a", "b"]))], None).unwrap();
            // At or after the time the commit recorded.
            queued_at.push(crate::alerts::event::now_ms());
            std::thread::sleep(Duration::from_millis(20));
        }
        // Just over a week after the first was queued: only it is past the
        // week (the second was queued at least 20 ms later).
        let week = Duration::from_secs(7 * 24 * 3600);
        let now = queued_at[0] + week.as_millis() as u64 + 1;
        let size = outbox.event(seqs[1]).unwrap().unwrap().len() as u64;
        let dropped = outbox.prune(now, week, size * 5 / 2).unwrap();
        let what: Vec<(&str, u64, DropReason)> = dropped
            .iter()
            .map(|d| (d.webhook.as_str(), d.seq, d.reason))
            .collect();
        assert_eq!(
            what,
            vec![
                ("a", seqs[0], DropReason::Age),
                ("b", seqs[0], DropReason::Age),
                ("a", seqs[1], DropReason::Bytes),
                ("b", seqs[1], DropReason::Bytes),
            ]
        );
        let queued: Vec<u64> = outbox.queued().unwrap().iter().map(|q| q.seq).collect();
        assert_eq!(queued, vec![seqs[2], seqs[3], seqs[2], seqs[3]]);
        assert!(outbox.event(seqs[0]).unwrap().is_none());
        assert!(outbox.event(seqs[1]).unwrap().is_none());
        assert!(
            outbox
                .active(&subject("x"), AlertKind::Loss)
                .unwrap()
                .is_some(),
            "only deliveries go: the alert stays raised"
        );
        assert!(outbox.prune(now, week, size * 5 / 2).unwrap().is_empty());
    }
}

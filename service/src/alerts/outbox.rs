//! The persistent outbox: alert events waiting for delivery, per webhook and
//! target, in their own sled database under `<state_dir>/outbox` (the history
//! store is a separate database with its own write budget).
//!
//! Layout of the one tree (keys are prefix-tagged; names cannot contain NUL):
//! - `m` + name: metadata (the next sequence number, this instance's id);
//! - `e` + seq (u64 big-endian): an event's JSON, exactly the bytes sent;
//! - `q` + webhook + NUL + subject + NUL + seq: the event is owed to that
//!   webhook. Keys sort by seq within (webhook, subject): delivery order;
//! - `a` + subject + NUL + kind: a raised alert (its id, when, and its raise
//!   event without the snapshot), so a restart can still clear it, a target
//!   or peer removed from the config gets a clear that names it, and
//!   Alertmanager gets the same alert re-sent while it fires;
//! - `s` + target: the target has answered at least once.
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

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::AlertsError;
use super::event::AlertEvent;
use super::kind::{AlertKind, AlertState};
use super::subject::Subject;
use crate::model::TargetId;

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

/// The sled-backed outbox.
pub struct Outbox {
    db: sled::Db,
    path: PathBuf,
    instance: String,
    next_seq: Mutex<u64>,
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

impl Outbox {
    /// Opens (or creates) the outbox at `path`. Queues of webhooks no longer in
    /// `webhooks` are dropped (with a warning), and so are events no webhook
    /// still owes.
    pub fn open(path: &Path, webhooks: &[String]) -> Result<Outbox, AlertsError> {
        let open_err = |source| AlertsError::Open {
            path: path.to_owned(),
            source,
        };
        let config = sled::Config::new()
            .path(path)
            // Commits flush explicitly; this background flush only persists
            // removals of delivered events, which may be lost harmlessly.
            .flush_every_ms(Some(1000))
            .cache_capacity(4 << 20)
            .mode(sled::Mode::LowSpace);
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
        };
        outbox.drop_orphans(webhooks)?;
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
        let mut next = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
        let seq = *next;
        *next += 1;
        seq
    }

    /// What a previous run left.
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
        Ok(persisted)
    }

    /// The raised alert of `kind` on `target`, if any.
    pub fn active(
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

    /// Stores `events` (each with the webhooks that want it), updates the raised
    /// alerts, and notes `answered`, in one atomic batch. Call [`Outbox::flush`]
    /// after it.
    pub fn commit(
        &self,
        events: &[(AlertEvent, Vec<String>)],
        answered: Option<&TargetId>,
    ) -> Result<(), AlertsError> {
        let mut batch = sled::Batch::default();
        let mut top = None;
        for (event, webhooks) in events {
            let target = Subject::parse(&event.target.name)
                .expect("events are built from valid subject keys");
            if !webhooks.is_empty() {
                let body = serde_json::to_vec(event).map_err(|source| AlertsError::Encode {
                    seq: event.seq,
                    source,
                })?;
                batch.insert(&event_key(event.seq), body);
                for webhook in webhooks {
                    batch.insert(queue_key(webhook, &target, event.seq), &[]);
                }
            }
            match event.state {
                AlertState::Raised => {
                    let active = ActiveAlert {
                        target: target.clone(),
                        kind: event.kind,
                        alert_id: event.alert_id.clone(),
                        raised_at_ms: event.raised_at_ms,
                        summary: event.summary.clone(),
                        raise: Some(AlertEvent {
                            snapshot: serde_json::Value::Null,
                            ..event.clone()
                        }),
                    };
                    let value =
                        serde_json::to_vec(&active).map_err(|source| AlertsError::Encode {
                            seq: event.seq,
                            source,
                        })?;
                    batch.insert(active_key(&target, event.kind), value);
                }
                AlertState::Cleared => batch.remove(active_key(&target, event.kind)),
            }
            top = top.max(Some(event.seq));
        }
        if let Some(seq) = top {
            let next = (seq + 1).max(*self.next_seq.lock().unwrap_or_else(|e| e.into_inner()));
            batch.insert(META_NEXT_SEQ, &next.to_be_bytes());
        }
        if let Some(target) = answered {
            batch.insert(answered_key(target), &[]);
        }
        self.db
            .apply_batch(batch)
            .map_err(self.err("storing alert events"))
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

    /// The stored JSON of event `seq`.
    pub fn event(&self, seq: u64) -> Result<Option<Vec<u8>>, AlertsError> {
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

    /// Flushes synchronously (shutdown).
    pub fn flush_now(&self) -> Result<(), AlertsError> {
        self.db.flush().map(|_| ()).map_err(self.err("flushing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::event::{rfc3339, AlertTarget, SCHEMA};

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
                    "localisation": null, "path_change": null, "snapshot": null
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
        assert_eq!(raise.target.tags, vec!["wan".to_owned()]);
    }
}

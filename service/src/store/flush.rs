//! One flush: each target's buffered rounds appended as a chunk to the
//! rounds' hourly files ([`super::segment`]) and synced, everything else
//! applied as one `sled::Batch` per tree, rollups derived for minutes and
//! hours that closed, expired keys and files swept, one fsync. Also the
//! per-target "done" marks that say which rollups are on disk, the rounds
//! of minutes not rolled up yet, and how both are rebuilt on open.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use histogram::Histogram32;
use sled::Batch;

use crate::model::{RoundRecord, TargetId};
use crate::store::buffer::{unpack, WriteBuffer};
use crate::store::codec::{decode, PeerBatchV1, RawRoundV1};
use crate::store::error::StoreError;
use crate::store::keys::{
    parse_raw_key, parse_rollup_key, raw_key, rollup_key, series_end, target_end, time_bound,
    SeriesNum, TargetNum,
};
use crate::store::open_minutes::OpenMinutes;
use crate::store::peers::{batch_stats, peer_key, PeerSeries};
use crate::store::rollup::{scratch_histogram, Stats};
use crate::store::rollup_block;
use crate::store::rollup_files::{FileDamage, Reuse, RollupFiles, SECTION_MS};
use crate::store::schema::{TargetMap, Trees, EVENTS, HOURS, MINUTES, RAW};
use crate::store::segment::{sort_rounds, Damage, RecordBatch, Segments};
use crate::store::{FlushReport, Store, HOUR_MS, MINUTE_MS};
use crate::sys;

/// What the flusher knows between flushes. The marks only move forward after
/// the flush that wrote the rollups succeeded, so they never claim more than
/// the disk has.
#[derive(Debug, Default)]
pub struct FlushState {
    /// Per target: the rollups of every minute before this are on disk.
    minute_done: HashMap<TargetNum, u64>,
    /// Per target: the rollups of every hour before this are on disk.
    hour_done: HashMap<TargetNum, u64>,
    last_sweep_ms: Option<u64>,
    /// Per target: the samples of minutes at or after its minute mark, which
    /// the next rollups are computed from (so a flush never reads back the
    /// files it just wrote). About a flush interval of rounds.
    open_minutes: HashMap<TargetNum, OpenMinutes>,
    /// A write failed: sled must be reopened before the next write.
    pub reopen_needed: bool,
    /// The clock of the last flush.
    pub last_now_ms: Option<u64>,
}

fn floor(at_ms: u64, unit: u64) -> u64 {
    at_ms - at_ms % unit
}

/// Wraps a sled error with the store's path and the operation, without
/// allocating unless there is an error.
pub(super) fn sled_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(sled::Error) -> StoreError + 'a {
    move |source| StoreError::Sled {
        path: path.to_path_buf(),
        op,
        source,
    }
}

impl FlushState {
    /// Rebuilds the marks from disk: a minute is done if it is before what
    /// the newest minute section claims (less the ten minutes before the
    /// newest round, see below) or, in a store an older hopwatch wrote,
    /// before the last destination-series minute rollup in sled; an hour is
    /// done if it is before what the newest hour section claims (or the
    /// last hour rollup in sled) and before the minute mark. A target
    /// without rollups starts at its first raw round.
    pub fn load(
        path: &Path,
        trees: &Trees,
        targets: &TargetMap,
        segments: &Segments,
        minutes: &RollupFiles,
        hours: &RollupFiles,
    ) -> Result<FlushState, StoreError> {
        let mut state = FlushState::default();
        let dest = SeriesNum::DESTINATION;
        // Every minute before the newest section's end was rolled up and is
        // in the minute files, for every target the store knew then; but a
        // minute recomputed for late rounds may have been lost with its
        // hour by a crash between the rounds' append and the rollups'
        // writes. Late rounds are rounds of the last minutes, so the last
        // section's worth of minutes before the newest round is rolled up
        // again (and with it their hour): ~600 rounds per target to read.
        let written_until = match (minutes.claimed_until(), segments.newest_start()?) {
            (Some(claimed), Some(newest)) => {
                Some(claimed.min(floor(newest.saturating_sub(SECTION_MS), MINUTE_MS)))
            }
            (claimed, _) => claimed,
        };
        let oldest_minute_file = minutes.files()?.first().map(|(hour, _)| *hour);
        for num in targets.nums() {
            let series = rollup_key(num, dest, 0);
            let end = series_end(num, dest);
            let last_start = |tree: &sled::Tree, op| -> Result<Option<u64>, StoreError> {
                let last = tree.range(series.as_slice()..end.as_slice()).next_back();
                Ok(match last.transpose().map_err(sled_err(path, op))? {
                    Some((key, _)) => parse_rollup_key(&key).map(|(_, _, start)| start),
                    None => None,
                })
            };
            let first_raw = match trees
                .raw
                .range(time_bound(num, 0).as_slice()..target_end(num).as_slice())
                .next()
                .transpose()
                .map_err(sled_err(path, "read first round"))?
            {
                Some((key, _)) => parse_raw_key(&key).map(|(_, at)| floor(at, MINUTE_MS)),
                None => None,
            };
            let first_minute = match trees
                .minutes
                .range(series.as_slice()..end.as_slice())
                .next()
                .transpose()
                .map_err(sled_err(path, "read first minute rollup"))?
            {
                Some((key, _)) => parse_rollup_key(&key).map(|(_, _, start)| start),
                None => first_raw,
            };
            // The last minute rolled up is rolled up again: rounds of it
            // written after its rollup (late ones) may have reached the disk
            // while their recomputation was lost to a crash, and with the
            // minute marked done nothing would ever recount them. One minute
            // of raw rounds per target is cheap to read at open.
            let minute_done = match last_start(&trees.minutes, "read last minute rollup")? {
                Some(start) => Some(start),
                None => first_raw,
            };
            let minute_done = minute_done.max(written_until);
            let in_sled = last_start(&trees.hours, "read last hour rollup")?.map(|h| h + HOUR_MS);
            // Every hour before the newest hour section's end was rolled up
            // for every target; the minute mark below bounds it, so an hour
            // whose minutes are rolled again is rolled again too.
            let hour_done = match in_sled.max(hours.claimed_until()) {
                Some(done) => Some(done),
                None => first_minute
                    .or(oldest_minute_file)
                    .map(|m| floor(m, HOUR_MS)),
            };
            if targets.name(num).is_none() && !targets.is_peer(num) {
                continue;
            }
            if let (Some(m), Some(h)) = (minute_done, hour_done) {
                state.minute_done.insert(num, m);
                // Keep "hours done ≤ the hour of minutes done": the last
                // minute rollup on disk can be older than the last hour
                // rollup (minutes closed with no data leave no key), and an
                // hour must not count as done while minutes in it may still
                // be rolled up.
                state.hour_done.insert(num, h.min(floor(m, HOUR_MS)));
            }
        }
        state.load_open_rounds(path, trees, targets, segments, minutes)?;
        Ok(state)
    }

    /// The rounds not rolled up yet, from the files and from rounds an
    /// older hopwatch kept in sled: those at or after each target's minute
    /// mark, and every round of a target that has no mark yet (its first
    /// minute had not closed). Only the files of the marks' hours and the
    /// newest two hours are read, so targets no longer probed cost nothing.
    /// The minutes of them that are complete (a later minute has rounds) are
    /// rolled up into memory at once, so what stays is a minute per target.
    fn load_open_rounds(
        &mut self,
        path: &Path,
        trees: &Trees,
        targets: &TargetMap,
        segments: &Segments,
        minutes: &RollupFiles,
    ) -> Result<(), StoreError> {
        let files = segments.files()?;
        let mut hours: BTreeSet<u64> = files.iter().rev().map(|(h, _)| *h).take(2).collect();
        for &done in self.minute_done.values() {
            let hour = floor(done, HOUR_MS);
            hours.extend([hour, hour + HOUR_MS]);
        }
        // Only rounds at or after the oldest mark are wanted: with the
        // minute files every target has one, about a section ago.
        let oldest_mark = if targets.names().count() == self.minute_done.len() {
            self.minute_done.values().min().copied().unwrap_or(0)
        } else {
            0
        };
        let mut found: HashMap<TargetNum, Vec<RoundRecord>> = HashMap::new();
        for hour in hours {
            if hour + HOUR_MS <= oldest_mark {
                continue;
            }
            let read = segments.read_many(hour.max(oldest_mark), hour + HOUR_MS, |num| {
                targets.name(num).cloned()
            })?;
            for damage in &read.damage {
                tracing::warn!(?damage, "damage in the rounds' files");
            }
            for (num, rounds) in read.rounds {
                found.entry(num).or_default().extend(rounds);
            }
        }
        for num in targets.nums() {
            let Some(name) = targets.name(num) else {
                continue;
            };
            let from = self.minute_done.get(&num).copied().unwrap_or(0);
            let mut rounds = found.remove(&num).unwrap_or_default();
            rounds.retain(|r| r.started_at_ms >= from);
            for item in trees
                .raw
                .range(raw_key(num, from).to_vec()..target_end(num).to_vec())
            {
                let (key, value) = item.map_err(sled_err(path, "read rounds"))?;
                let Some((_, at)) = parse_raw_key(&key) else {
                    continue;
                };
                if let Ok(round) =
                    decode::<RawRoundV1>(&value).and_then(|raw| raw.into_round(name.clone(), at))
                {
                    rounds.push(round);
                }
            }
            sort_rounds(&mut rounds);
            let Some(first) = rounds.first() else {
                continue;
            };
            let minute = floor(first.started_at_ms, MINUTE_MS);
            if let std::collections::hash_map::Entry::Vacant(mark) = self.minute_done.entry(num) {
                mark.insert(minute);
                self.hour_done.insert(num, floor(minute, HOUR_MS));
            }
            // Minutes before the newest one with rounds are complete: roll
            // them up now rather than hold their rounds until the first flush.
            let newest = rounds
                .last()
                .map_or(0, |r| floor(r.started_at_ms, MINUTE_MS));
            let complete = rounds.partition_point(|r| r.started_at_ms < newest);
            if complete > 0 {
                let mut scratch = scratch_histogram();
                roll_round_minutes(minutes, &mut scratch, num, &rounds[..complete]);
                rounds.drain(..complete);
                self.minute_done.insert(num, newest);
            }
            let open = self.open_minutes.entry(num).or_default();
            for round in &rounds {
                open.add(round);
            }
        }
        Ok(())
    }
}

/// Counts the bytes handed to sled while building batches.
struct Writer<'a> {
    path: &'a Path,
    bytes: u64,
    rollups: usize,
    /// Operations in the batch being built; an empty batch is not applied.
    ops: usize,
}

impl Writer<'_> {
    fn insert(&mut self, batch: &mut Batch, key: &[u8], value: &[u8]) {
        self.bytes += (key.len() + value.len()) as u64;
        self.ops += 1;
        batch.insert(key, value);
    }

    fn remove(&mut self, batch: &mut Batch, key: &[u8]) {
        self.bytes += key.len() as u64;
        self.ops += 1;
        batch.remove(key);
    }

    fn apply(
        &mut self,
        tree: &sled::Tree,
        batch: Batch,
        op: &'static str,
    ) -> Result<(), StoreError> {
        if std::mem::take(&mut self.ops) == 0 {
            return Ok(());
        }
        tree.apply_batch(batch).map_err(sled_err(self.path, op))
    }
}

/// The changes to the marks a flush makes, committed only if it succeeds.
#[derive(Default)]
struct Plan {
    minute_done: HashMap<TargetNum, u64>,
    hour_done: HashMap<TargetNum, u64>,
    swept_at: Option<u64>,
}

impl Store {
    /// Reopens sled after a write error (sled 0.34 refuses all writes after
    /// an I/O error until reopened), then hands out the trees.
    fn writable_trees(&self, state: &mut FlushState) -> Result<Arc<Trees>, StoreError> {
        if state.reopen_needed {
            let old = sys::write(&self.db).take();
            // Drops our handle; sled's file lock goes with the last one.
            drop(old);
            let trees = Trees::open(
                &self.path,
                self.config.cache_capacity_bytes,
                self.config.reclaim_interval,
            )?;
            *sys::write(&self.db) = Some(Arc::new(trees));
            state.reopen_needed = false;
        }
        self.trees()
    }

    pub(super) fn note_corrupt(
        &self,
        tree: &'static str,
        key: &[u8],
        error: &dyn std::fmt::Display,
    ) {
        self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %self.path.display(), tree, key = ?key, %error, "skipping undecodable store value");
    }

    /// Damage met while reading the rounds' files. A torn tail is what a
    /// power cut during an append leaves, nothing synced was lost; anything
    /// else is counted with the undecodable values.
    pub(super) fn note_damage(&self, damage: &Damage) {
        match damage {
            Damage::TornTail { path, bytes } => {
                tracing::debug!(path = %path.display(), bytes, "torn tail in a rounds file (an interrupted append)");
            }
            other => {
                self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(damage = ?other, "skipping damaged records in a rounds file");
            }
        }
    }

    pub(super) fn write_out(
        &self,
        state: &mut FlushState,
        buf: &WriteBuffer,
        now_ms: u64,
    ) -> Result<FlushReport, StoreError> {
        state.last_now_ms = Some(now_ms);
        // The open minutes count this flush's rounds before they are
        // written: after a failure the rounds come back with the retry (and
        // are counted once), and no minute is rolled up before a flush has
        // written every round it counted.
        let mut open = std::mem::take(&mut state.open_minutes);
        let result = self.write_out_with(state, buf, &mut open, now_ms);
        state.open_minutes = open;
        result
    }

    fn write_out_with(
        &self,
        state: &mut FlushState,
        buf: &WriteBuffer,
        open: &mut HashMap<TargetNum, OpenMinutes>,
        now_ms: u64,
    ) -> Result<FlushReport, StoreError> {
        let trees = self.writable_trees(state)?;
        let mut w = Writer {
            path: &self.path,
            bytes: 0,
            rollups: 0,
            ops: 0,
        };

        // Targets first, synced before any round is appended: a round's
        // record names its target by number, and the number must not come
        // back after a crash as another target's.
        if !buf.new_targets.is_empty() || !buf.new_peers.is_empty() {
            let mut batch = Batch::default();
            for (num, id) in &buf.new_targets {
                w.insert(&mut batch, id.as_str().as_bytes(), &num.to_bytes());
            }
            for (num, id) in &buf.new_peers {
                w.insert(&mut batch, &peer_key(id), &num.to_bytes());
            }
            w.apply(&trees.targets, batch, "write targets")?;
            trees
                .db
                .flush()
                .map_err(sled_err(&self.path, "flush targets to disk"))?;
        }

        // Peers' batches go to sled as before; targets' rounds to the files,
        // one target at a time: its packs are decoded, encoded into the
        // batch and counted in its open minutes, then dropped, so a flush
        // never holds every target's rounds at once.
        let mut first_minute: HashMap<TargetNum, u64> = HashMap::new();
        let mut dirty_minutes: BTreeSet<(TargetNum, u64)> = BTreeSet::new();
        let mut records = RecordBatch::default();
        let targets = sys::read(&self.targets);
        if !buf.raw.is_empty() {
            let mut batch = Batch::default();
            for entry in &buf.raw {
                let (num, at) = (entry.target, entry.at_ms);
                if targets.is_peer(num) {
                    w.insert(&mut batch, &entry.key(), &entry.value);
                    note_minute(state, num, at, &mut first_minute, &mut dirty_minutes);
                }
            }
            w.apply(&trees.raw, batch, "write peer batches")?;
        }
        for (num, packs) in buf.packs_by_series() {
            let Some(name) = targets.name(num) else {
                continue;
            };
            let mut rounds = unpack(packs, name);
            for round in &rounds {
                note_minute(
                    state,
                    num,
                    round.started_at_ms,
                    &mut first_minute,
                    &mut dirty_minutes,
                );
            }
            sort_rounds(&mut rounds);
            records.add(num, &rounds);
            let done = state
                .minute_done
                .get(&num)
                .or(first_minute.get(&num))
                .copied()
                .unwrap_or(0);
            let into = open.entry(num).or_default();
            for round in rounds.iter().filter(|r| r.started_at_ms >= done) {
                into.add(round);
            }
        }
        drop(targets);
        if !records.is_empty() {
            let mut segments = sys::lock(&self.segments);
            let segments = segments.as_mut().ok_or_else(|| StoreError::Unavailable {
                path: self.path.clone(),
            })?;
            w.bytes += segments.write(records)?;
        }

        if !buf.events.is_empty() {
            let mut batch = Batch::default();
            for entry in &buf.events {
                w.insert(&mut batch, &entry.key, &entry.value);
            }
            w.apply(&trees.events, batch, "write events")?;
        }

        let mut plan = self.roll_up(
            &trees,
            state,
            &mut w,
            open,
            &first_minute,
            &dirty_minutes,
            now_ms,
        )?;

        let mut swept = 0;
        let sweep_every = self.config.sweep_interval.as_millis() as u64;
        if state
            .last_sweep_ms
            .is_none_or(|last| now_ms >= last.saturating_add(sweep_every))
        {
            swept = self.sweep(&trees, &mut w, now_ms)?;
            plan.swept_at = Some(now_ms);
        }

        trees
            .db
            .flush()
            .map_err(sled_err(&self.path, "flush to disk"))?;

        // Minutes now rolled up leave the open set.
        for (num, minutes) in open.iter_mut() {
            if let Some(&done) = plan.minute_done.get(num) {
                minutes.forget_before(done);
            }
        }
        open.retain(|_, minutes| !minutes.is_empty());
        state.minute_done.extend(plan.minute_done);
        state.hour_done.extend(plan.hour_done);
        if plan.swept_at.is_some() {
            state.last_sweep_ms = plan.swept_at;
        }
        Ok(FlushReport {
            seq: 0,
            rounds: buf.raw.len() + buf.rounds(),
            events: buf.events.len(),
            rollups: w.rollups,
            swept,
            bytes: w.bytes,
        })
    }

    /// Writes the rollups of minutes that closed (and late rounds' minutes),
    /// then of hours whose minutes are all done.
    #[allow(clippy::too_many_arguments)]
    fn roll_up(
        &self,
        trees: &Trees,
        state: &FlushState,
        w: &mut Writer<'_>,
        open: &HashMap<TargetNum, OpenMinutes>,
        first_minute: &HashMap<TargetNum, u64>,
        dirty_minutes: &BTreeSet<(TargetNum, u64)>,
        now_ms: u64,
    ) -> Result<Plan, StoreError> {
        let close_delay = self.config.close_delay.as_millis() as u64;
        let close_minute = floor(now_ms.saturating_sub(close_delay), MINUTE_MS);
        // `None` marks a peer: its raw values are batches, not rounds.
        let names: HashMap<TargetNum, Option<TargetId>> = {
            let targets = sys::read(&self.targets);
            targets
                .nums()
                .filter_map(|n| match targets.name(n) {
                    Some(name) => Some((n, Some(name.clone()))),
                    None => targets.is_peer(n).then_some((n, None)),
                })
                .collect()
        };
        let mut plan = Plan::default();
        let mut scratch = scratch_histogram();
        let mut dirty_hours: BTreeSet<(TargetNum, u64)> = BTreeSet::new();

        let known = state.minute_done.iter().map(|(n, d)| (*n, *d, false));
        let new = first_minute.iter().map(|(n, d)| (*n, *d, true));
        for (num, done, is_new) in known.chain(new) {
            let Some(name) = names.get(&num) else {
                continue;
            };
            if done < close_minute {
                match name {
                    Some(_) => {
                        if let Some(minutes) = open.get(&num) {
                            let rolled = minutes.roll(done, close_minute, &mut scratch);
                            w.rollups += insert_minutes(&self.minutes, num, rolled);
                        }
                    }
                    None => self.roll_peer_minutes(trees, w, num, done, close_minute)?,
                }
                plan.minute_done.insert(num, close_minute);
            } else if is_new {
                plan.minute_done.insert(num, done);
            }
            if is_new {
                plan.hour_done.insert(num, floor(done, HOUR_MS));
            }
        }
        // Late rounds' minutes lie before the done mark, so they are not in
        // any range rolled above.
        for &(num, minute) in dirty_minutes {
            let Some(name) = names.get(&num) else {
                continue;
            };
            let to = minute + MINUTE_MS;
            match name {
                Some(name) => {
                    let rounds = self.stored_rounds(trees, num, name, minute, to)?;
                    w.rollups += roll_round_minutes(&self.minutes, &mut scratch, num, &rounds);
                }
                None => self.roll_peer_minutes(trees, w, num, minute, to)?,
            }
            let hour = floor(minute, HOUR_MS);
            if state.hour_done.get(&num).is_some_and(|&done| hour < done) {
                dirty_hours.insert((num, hour));
            }
        }
        // Sections hold whole ten minutes: those before the last full ten
        // minutes rolled go to the files (with any late minute recomputed).
        w.bytes += self.minutes.write_before(floor(close_minute, SECTION_MS))?;

        // Hours read the minute rollups just made (in memory or files).
        let mut hours_until: Option<u64> = None;
        let nums: BTreeSet<TargetNum> = state
            .minute_done
            .keys()
            .chain(plan.minute_done.keys())
            .copied()
            .collect();
        for num in nums {
            let minute_done = plan
                .minute_done
                .get(&num)
                .or(state.minute_done.get(&num))
                .copied();
            let hour_done = plan
                .hour_done
                .get(&num)
                .or(state.hour_done.get(&num))
                .copied();
            let (Some(minute_done), Some(hour_done)) = (minute_done, hour_done) else {
                continue;
            };
            let close_hour = floor(minute_done, HOUR_MS);
            if hour_done < close_hour {
                self.roll_hours(trees, w, num, hour_done, close_hour)?;
                plan.hour_done.insert(num, close_hour);
            }
            let done = close_hour.max(hour_done);
            hours_until = Some(hours_until.map_or(done, |until| until.min(done)));
        }
        for &(num, hour) in &dirty_hours {
            self.roll_hours(trees, w, num, hour, hour + HOUR_MS)?;
        }
        // One section for the hours rolled, claiming only what every
        // target has rolled: a crash loses no hour that the open would not
        // roll again.
        if let Some(until) = hours_until {
            w.bytes += self.hours.write_before(until)?;
            // A finished day's hour sections become one (once a day). Its
            // files read the same either way, so a failure only costs disk.
            match self.hours.compact_before(until) {
                Ok(bytes) => w.bytes += bytes,
                Err(err) => tracing::warn!(
                    error = %err,
                    "could not compact a finished day of hour rollups; its sections stay as written"
                ),
            }
        }
        Ok(plan)
    }

    /// Merges a peer's batches of `num` in `[from, to)` into minute buckets,
    /// one per series that had probes.
    fn roll_peer_minutes(
        &self,
        trees: &Trees,
        w: &mut Writer<'_>,
        num: TargetNum,
        from: u64,
        to: u64,
    ) -> Result<(), StoreError> {
        let mut current: Option<u64> = None;
        let mut merged: [Stats; 3] = Default::default();
        let emit = |w: &mut Writer<'_>, minute: u64, merged: [Stats; 3]| {
            let probed: Vec<(SeriesNum, Stats)> = PeerSeries::ALL
                .into_iter()
                .zip(merged)
                .filter(|(_, stats)| stats.sent > 0)
                .map(|(series, stats)| (series.num(), stats))
                .collect();
            w.rollups += probed.len();
            self.minutes.insert_bucket(num, minute, probed);
        };
        for item in trees.raw.range(raw_key(num, from)..raw_key(num, to)) {
            let (key, value) = item.map_err(sled_err(&self.path, "read peer batches"))?;
            let Some((_, at)) = parse_raw_key(&key) else {
                self.note_corrupt(RAW, &key, &"malformed key");
                continue;
            };
            let stats = decode::<PeerBatchV1>(&value)
                .map_err(|e| e.to_string())
                .and_then(|v| batch_stats(v).map_err(|e| format!("bad histogram: {e}")));
            let stats = match stats {
                Ok(stats) => stats,
                Err(error) => {
                    self.note_corrupt(RAW, &key, &error);
                    continue;
                }
            };
            let minute = floor(at, MINUTE_MS);
            if current != Some(minute) {
                if let Some(previous) = current {
                    emit(w, previous, std::mem::take(&mut merged));
                }
                current = Some(minute);
            }
            for (into, s) in merged.iter_mut().zip(&stats) {
                into.merge(s);
            }
        }
        if let Some(minute) = current {
            emit(w, minute, merged);
        }
        Ok(())
    }

    /// Merges the minute rollups of `num` in `[from, to)` into hour buckets,
    /// kept with the hour rollups until this flush writes their section.
    fn roll_hours(
        &self,
        trees: &Trees,
        w: &mut Writer<'_>,
        num: TargetNum,
        from: u64,
        to: u64,
    ) -> Result<(), StoreError> {
        let mut hours: BTreeMap<u64, BTreeMap<SeriesNum, Stats>> = BTreeMap::new();
        let legacy = (&trees.minutes, MINUTES);
        let minutes =
            self.rollup_stats(legacy, &self.minutes, num, None, (from, to), Reuse::Once)?;
        for ((series, minute), stats) in minutes {
            hours
                .entry(floor(minute, HOUR_MS))
                .or_default()
                .entry(series)
                .or_default()
                .merge(&stats);
        }
        for (hour, series) in hours {
            w.rollups += series.len();
            self.hours.insert_bucket(num, hour, series);
        }
        Ok(())
    }

    /// Decodes a rollup value, counting and skipping a corrupt one.
    pub(super) fn decode_stats(
        &self,
        tree: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Option<Stats> {
        match rollup_block::decode_one(value) {
            Ok(stats) => Some(stats),
            Err(error) => {
                self.note_corrupt(tree, key, &error);
                None
            }
        }
    }

    /// `num`'s minute rollups in `[from, to)`, of one series or all, decoded:
    /// those of the minute files and memory, over what an older hopwatch
    /// left in sled's `m1` tree (read until it expires). Damaged values and
    /// blocks are counted and skipped.
    pub(super) fn minute_stats(
        &self,
        trees: &Trees,
        num: TargetNum,
        only: Option<SeriesNum>,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<(SeriesNum, u64), Stats>, StoreError> {
        let legacy = (&trees.minutes, MINUTES);
        self.rollup_stats(legacy, &self.minutes, num, only, (from, to), Reuse::Cached)
    }

    /// `num`'s hour rollups in `[from, to)`, as [`Self::minute_stats`]: the
    /// hour files and memory over sled's `h1` tree.
    pub(super) fn hour_stats(
        &self,
        trees: &Trees,
        num: TargetNum,
        only: Option<SeriesNum>,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<(SeriesNum, u64), Stats>, StoreError> {
        let legacy = (&trees.hours, HOURS);
        self.rollup_stats(legacy, &self.hours, num, only, (from, to), Reuse::Cached)
    }

    fn rollup_stats(
        &self,
        (tree, name): (&sled::Tree, &'static str),
        files: &RollupFiles,
        num: TargetNum,
        only: Option<SeriesNum>,
        (from, to): (u64, u64),
        reuse: Reuse,
    ) -> Result<BTreeMap<(SeriesNum, u64), Stats>, StoreError> {
        let mut found = BTreeMap::new();
        let series = match only {
            Some(s) => vec![s],
            None => self.series_of(tree, num)?,
        };
        for s in series {
            for item in tree.range(rollup_key(num, s, from)..rollup_key(num, s, to)) {
                let (key, value) = item.map_err(sled_err(&self.path, "read rollups"))?;
                let Some((_, _, start)) = parse_rollup_key(&key) else {
                    self.note_corrupt(name, &key, &"malformed key");
                    continue;
                };
                if let Some(stats) = self.decode_stats(name, &key, &value) {
                    found.insert((s, start), stats);
                }
            }
        }
        let mut damage = Vec::new();
        let in_files = files.read_with(num, only, (from, to), reuse, &mut damage)?;
        for d in &damage {
            self.note_rollup_damage(d);
        }
        found.extend(in_files);
        Ok(found)
    }

    /// Damage met in the rollups' files: a torn tail is an interrupted
    /// append (its buckets are rolled up again), the rest is counted with
    /// the undecodable values.
    pub(super) fn note_rollup_damage(&self, damage: &FileDamage) {
        match damage {
            FileDamage::TornTail { path, offset } => {
                tracing::debug!(path = %path.display(), offset, "torn tail in a rollups file (an interrupted append)");
            }
            other => {
                self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(damage = ?other, "skipping damaged rollups");
            }
        }
    }

    /// The series a rollup tree holds for `num`, found by skipping from one
    /// series to the next rather than reading every key.
    pub(super) fn series_of(
        &self,
        tree: &sled::Tree,
        num: TargetNum,
    ) -> Result<Vec<SeriesNum>, StoreError> {
        let mut found = Vec::new();
        let end = target_end(num);
        let mut cursor = rollup_key(num, SeriesNum(0), 0).to_vec();
        loop {
            let next = tree.range(cursor.as_slice()..end.as_slice()).keys().next();
            let Some(key) = next
                .transpose()
                .map_err(sled_err(&self.path, "list series"))?
            else {
                break;
            };
            let Some((_, series, _)) = parse_rollup_key(&key) else {
                break;
            };
            found.push(series);
            cursor = series_end(num, series);
        }
        Ok(found)
    }

    /// Removes every key older than its tree's retention, one batch per tree.
    fn sweep(&self, trees: &Trees, w: &mut Writer<'_>, now_ms: u64) -> Result<u64, StoreError> {
        let nums: Vec<TargetNum> = sys::read(&self.targets).nums().collect();
        let cutoff =
            |retention: std::time::Duration| now_ms.saturating_sub(retention.as_millis() as u64);
        let mut removed = 0u64;
        // Rounds' files go by whole hours: an hour's rounds are kept until
        // the last of them expires.
        if let Some(segments) = sys::lock(&self.segments).as_mut() {
            removed += segments.remove_before(cutoff(self.config.raw_retention))? as u64;
        }
        removed += self
            .minutes
            .remove_before(cutoff(self.config.minute_retention))? as u64;
        removed += self
            .hours
            .remove_before(cutoff(self.config.hour_retention))? as u64;
        for (tree, name, before) in [
            (&trees.raw, RAW, cutoff(self.config.raw_retention)),
            (&trees.events, EVENTS, cutoff(self.config.event_retention)),
        ] {
            let mut batch = Batch::default();
            for &num in &nums {
                let range = time_bound(num, 0)..time_bound(num, before);
                for key in tree.range(range).keys() {
                    let key = key.map_err(sled_err(&self.path, "sweep"))?;
                    w.remove(&mut batch, &key);
                    removed += 1;
                }
            }
            w.apply(
                tree,
                batch,
                if name == RAW {
                    "sweep rounds"
                } else {
                    "sweep events"
                },
            )?;
        }
        for (tree, name, before) in [
            (
                &trees.minutes,
                MINUTES,
                cutoff(self.config.minute_retention),
            ),
            (&trees.hours, HOURS, cutoff(self.config.hour_retention)),
        ] {
            let mut batch = Batch::default();
            for &num in &nums {
                for series in self.series_of(tree, num)? {
                    let range = rollup_key(num, series, 0)..rollup_key(num, series, before);
                    for key in tree.range(range).keys() {
                        let key = key.map_err(sled_err(&self.path, "sweep"))?;
                        w.remove(&mut batch, &key);
                        removed += 1;
                    }
                }
            }
            w.apply(
                tree,
                batch,
                if name == MINUTES {
                    "sweep minute rollups"
                } else {
                    "sweep hour rollups"
                },
            )?;
        }
        Ok(removed)
    }
}

/// Notes the minute of a round (or peer batch) of `num` that started at
/// `at`: a target's first minute, or a late round's minute rolled up already.
fn note_minute(
    state: &FlushState,
    num: TargetNum,
    at: u64,
    first_minute: &mut HashMap<TargetNum, u64>,
    dirty_minutes: &mut BTreeSet<(TargetNum, u64)>,
) {
    let minute = floor(at, MINUTE_MS);
    match state.minute_done.get(&num) {
        // A late round: its minute is rolled up already.
        Some(&done) if minute < done => {
            dirty_minutes.insert((num, minute));
        }
        Some(_) => {}
        None => {
            let first = first_minute.entry(num).or_insert(minute);
            *first = (*first).min(minute);
        }
    }
}

/// Rolls up `rounds` of target `num` into minute buckets, one rollup per
/// series and minute that has samples, kept in `minutes` until their
/// section is written. Returns how many.
fn roll_round_minutes(
    minutes: &RollupFiles,
    scratch: &mut Histogram32,
    num: TargetNum,
    rounds: &[RoundRecord],
) -> usize {
    let mut open = OpenMinutes::default();
    for round in rounds {
        open.add(round);
    }
    insert_minutes(minutes, num, open.roll(0, u64::MAX, scratch))
}

/// Keeps `rolled` (as `OpenMinutes::roll` gives them: by minute, then
/// series) in `minutes`, one bucket at a time. Returns how many.
fn insert_minutes(
    minutes: &RollupFiles,
    num: TargetNum,
    rolled: Vec<(u64, SeriesNum, Stats)>,
) -> usize {
    let made = rolled.len();
    let mut rolled = rolled.into_iter().peekable();
    while let Some((minute, series, stats)) = rolled.next() {
        let mut bucket = vec![(series, stats)];
        while let Some((_, series, stats)) = rolled.next_if(|(m, _, _)| *m == minute) {
            bucket.push((series, stats));
        }
        minutes.insert_bucket(num, minute, bucket);
    }
    made
}

//! Rollups outside sled (issue 15): minute rollups (step 2) and hour
//! rollups, each held in memory until a section of their file is written,
//! then in append-only files of sections holding every target's rollups,
//! each target's packed in columns and compressed. One type serves both
//! grains ([`Grain`]): minutes in hourly files, a section every ten
//! minutes; hours in daily files, a section each time hours are rolled up.
//!
//! # Why
//! One sled value per target, series and minute was most of what the store
//! still wrote after the raw rounds moved to files: 5.5–7.8 MiB per 10-hop
//! target and day, because every flush touched a page per target
//! (docs/benchmarks.md, "The store with raw rounds in files"). A section
//! is appended once and read by seeking to the target's block, so a week of
//! minutes for one target is ~170 small reads. Hour rollups followed: in
//! sled a year of them took several times its data on disk
//! (docs/benchmarks.md, "Rollups in columns").
//!
//! # What a crash costs
//! Nothing that is not rebuilt: the rollups in memory are recomputed at
//! open from the raw rounds' files (kept for days, far longer than a
//! section) and the minute rollups, so sections are synced only so that a
//! power cut cannot leave a section claiming more than the disk holds.
//!
//! # Files
//! `m1-<hour start, Unix ms>-<n>.seg` (minutes) and `h1-<day start, Unix
//! ms>-<n>.seg` (hours): the rollups of buckets in that span. As with the
//! raw files, a process never appends to a file an earlier one wrote (`n`
//! counts up), and a failed append moves on to a new file, so torn bytes
//! only ever end a file. A later section (or file) of the same span
//! replaces an earlier one's value for the same target, series and bucket:
//! that is how a bucket recomputed for late rounds is stored.
//!
//! # Sections
//! `MAGIC (4) | crc32 (4) | section length (4) | targets (4) | until ms (8)`,
//! then per target `target (4) | block offset from the section's start (4)
//! | block length (4) | block crc32 (4)`, sorted by target, then the blocks.
//! The header CRC covers the header after itself and the index. A block is
//! zstd of the target's rollups in columns (`store::rollup_block`, the slot
//! being the bucket's place in the span: minute of the hour, hour of the
//! day), histograms at the stored grouping power. Integers big-endian.
//! `until` says every bucket before it was rolled up when the section was
//! written.
//!
//! Minute sections of the first release of these files (`hwM1`) hold rows
//! instead: `series (1) | minute of the hour (1) | length (2) | value`, the
//! value a `codec::RollupV1` at grouping power 7. They are still read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;

use super::codec::{self, RollupV1};
use super::hourfiles::HourFiles;
use super::keys::{SeriesNum, TargetNum};
use super::open_buckets::{EncodedBucket, OpenBuckets};
use super::rollup::{Stats, STORED_GROUPING_POWER};
use super::rollup_block::{self, Entry};
use crate::sys;

/// How many minutes of rollups wait in memory before they are written: a
/// longer section costs memory (about 60 bytes per series and minute), a
/// shorter one more reads per hour queried and more, smaller writes.
pub const SECTION_MS: u64 = 10 * MINUTE_MS;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// What one kind of rollup file holds: buckets of `bucket_ms`, a file per
/// `span_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Grain {
    /// What the files are called in reports ("minute rollup files").
    pub label: &'static str,
    /// Where a bucket lost with a torn section comes back from.
    pub rebuilt_from: &'static str,
    pub bucket_ms: u64,
    pub span_ms: u64,
    names: HourFiles,
}

impl Grain {
    /// Minute rollups, a file per hour.
    pub const MINUTES: Grain = Grain {
        label: "minute rollup files",
        rebuilt_from: "the rounds",
        bucket_ms: MINUTE_MS,
        span_ms: HOUR_MS,
        names: HourFiles("m1"),
    };
    /// Hour rollups, a file per day.
    pub const HOURS: Grain = Grain {
        label: "hour rollup files",
        rebuilt_from: "the minute rollups",
        bucket_ms: HOUR_MS,
        span_ms: DAY_MS,
        names: HourFiles("h1"),
    };

    fn slots(self) -> u64 {
        self.span_ms / self.bucket_ms
    }
}
const MAGIC: [u8; 4] = *b"hwM2";
/// Sections of rows (`RollupV1`), written by the first release of these files.
const MAGIC_ROWS: [u8; 4] = *b"hwM1";
const HEADER_LEN: usize = 4 + 4 + 4 + 4 + 8;
const INDEX_ENTRY_LEN: usize = 16;
/// zstd's level for blocks: a section is written once and read rarely.
const ZSTD_LEVEL: i32 = 9;
/// Far above a section of any real store (10 minutes of 1,000 30-hop
/// targets is about 5 MiB), so a damaged length cannot claim gigabytes.
const MAX_SECTION_BYTES: u32 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RollupFileError {
    #[error("cannot create the rollups' directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list the rollups' directory {path}: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write rollups file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read rollups file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot delete expired rollups file {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What is wrong in a file: the sections before it were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileDamage {
    /// A section cut short at the file's end: a crash during an append.
    TornTail { path: PathBuf, offset: u64 },
    /// A section whose header or index does not match its CRC; the rest of
    /// the file is not read (its length cannot be trusted).
    BadSection { path: PathBuf, offset: u64 },
    /// One target's block whose CRC or contents are wrong.
    BadBlock {
        path: PathBuf,
        offset: u64,
        target: TargetNum,
    },
}

/// One grain of a store's rollups: those in memory and the files.
pub struct RollupFiles {
    dir: PathBuf,
    grain: Grain,
    /// Rollups not in a file yet, by target and bucket start: all the
    /// series of one target's bucket encoded together (`rollup_block`, a
    /// quarter of the decoded `Stats`). Shared and of exact length: ten
    /// minutes of them wait here (10,000 at 1,000 targets), and a section
    /// or a query takes them without a copy. One value per bucket rather
    /// than per series: a value per series cost 11 allocations and map
    /// entries per 10-hop target and minute, about half of what waited
    /// (docs/benchmarks.md, "The daemon's memory at 10 hops").
    open: Mutex<OpenBuckets>,
    /// Where the buckets in `open` are encoded to, one after another.
    slab: Mutex<BytesMut>,
    /// The file this process appends to, per span.
    files: Mutex<BTreeMap<u64, (File, PathBuf)>>,
    /// The newest `until` in the files: buckets before it count as rolled
    /// up when the store opens, so a bucket recomputed before it (late
    /// rounds, or a clock that went back) must reach a file at once.
    claimed_until: Mutex<Option<u64>>,
    /// Finished spans already in one section (or left uncompacted for
    /// damage), so `compact_before` reads each finished span once.
    compact_spans: Mutex<BTreeSet<u64>>,
    cache: BlockCache,
}

/// The size of the blocks the buckets in memory are laid out in, one after
/// another, each freed when the last bucket in it is written or replaced.
/// Buckets in blocks of their own, each a few hundred bytes living ten
/// minutes among a flush's short-lived allocations, left the heap they came
/// from riddled with holes: at 1,000 10-hop targets ~10 MiB resident but
/// free after each section (docs/benchmarks.md, "Minute rollups in slabs").
/// Buckets are written in the order they were made, so slabs are freed
/// whole; a slab this size is a few minutes of a hundred targets.
const SLAB_BYTES: usize = 64 << 10;
/// A span's encoded buckets waiting for its section, by target.
type SpanRollups<'a> = BTreeMap<TargetNum, Vec<(u64, &'a [u8])>>;

/// Where one target's block of a span is, for compacting it.
struct BlockRef {
    /// Which of the span's files.
    file: usize,
    section_at: u64,
    layout: BlockLayout,
    offset: u32,
    len: u32,
    crc: u32,
}

/// What compacting one span did.
enum Compaction {
    /// Written as one section of this many bytes, the older files deleted.
    Done(u64),
    /// Already one section.
    AlreadyOne,
    /// Left as it is.
    Damaged(Vec<FileDamage>),
}

/// Files kept open for appending: the span written last and the one before.
const OPEN_FILES: usize = 2;

fn floor(at_ms: u64, unit: u64) -> u64 {
    at_ms - at_ms % unit
}

/// How a section's blocks are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockLayout {
    /// `rollup_block` columns (`hwM2`).
    Columns,
    /// `RollupV1` rows (`hwM1`).
    Rows,
}

/// A section's parsed header and index.
struct Section {
    layout: BlockLayout,
    len: u32,
    until_ms: u64,
    /// `(target, block offset, block length, block crc)`, by target.
    index: Vec<(TargetNum, u32, u32, u32)>,
}

impl RollupFiles {
    /// Opens (creating) the directory; nothing is read until asked.
    pub fn open(dir: &Path, grain: Grain) -> Result<RollupFiles, RollupFileError> {
        fs::create_dir_all(dir).map_err(|source| RollupFileError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let rollups = RollupFiles::reader(dir, grain);
        *sys::lock(&rollups.claimed_until) = rollups.written_until()?;
        Ok(rollups)
    }

    /// The directory without creating it: for a disabled store and tools.
    pub fn reader(dir: &Path, grain: Grain) -> RollupFiles {
        RollupFiles {
            dir: dir.to_path_buf(),
            grain,
            open: Mutex::new(OpenBuckets::default()),
            slab: Mutex::new(BytesMut::new()),
            files: Mutex::new(BTreeMap::new()),
            claimed_until: Mutex::new(None),
            compact_spans: Mutex::new(BTreeSet::new()),
            cache: block_cache(),
        }
    }

    /// The end of the newest section in the files when the store opened,
    /// or since: every bucket before it had been rolled up when written.
    pub fn claimed_until(&self) -> Option<u64> {
        *sys::lock(&self.claimed_until)
    }

    /// Keeps one series' rollup of a bucket in memory until the next section
    /// is written (see [`RollupFiles::insert_bucket`]).
    #[cfg(test)]
    pub fn insert(&self, target: TargetNum, series: SeriesNum, bucket_ms: u64, stats: Stats) {
        self.insert_bucket(target, bucket_ms, [(series, stats)]);
    }

    /// Keeps the rollups of `target`'s bucket in memory until the next
    /// section is written, replacing those of the same series (the series
    /// not given keep theirs), histograms already at the stored grouping
    /// power (so a bucket reads the same before and after its section is
    /// written).
    pub fn insert_bucket(
        &self,
        target: TargetNum,
        bucket_ms: u64,
        rollups: impl IntoIterator<Item = (SeriesNum, Stats)>,
    ) {
        let mut entries: BTreeMap<SeriesNum, Stats> = rollups.into_iter().collect();
        if entries.is_empty() {
            return;
        }
        let mut open = sys::lock(&self.open);
        if let Some(known) = open.get((target, bucket_ms)) {
            // A bucket recomputed (late rounds) or given a series at a time.
            for entry in decode_bucket(known, &|_| true) {
                entries.entry(entry.series).or_insert(entry.stats);
            }
        }
        let entries: Vec<Entry> = entries
            .into_iter()
            .map(|(series, stats)| Entry {
                series,
                slot: 0,
                stats,
            })
            .collect();
        let encoded = rollup_block::encode(&entries);
        let mut slab = sys::lock(&self.slab);
        if slab.capacity() < encoded.len() {
            *slab = BytesMut::with_capacity(SLAB_BYTES.max(encoded.len()));
        }
        slab.extend_from_slice(&encoded);
        open.insert((target, bucket_ms), slab.split().freeze());
    }

    /// How many rollups (series and buckets) wait in memory.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        sys::lock(&self.open)
            .values()
            .map(|v| decode_bucket(v, &|_| true).len())
            .sum()
    }

    /// Every file, oldest span first (then in the order they were written).
    pub fn files(&self) -> Result<Vec<(u64, PathBuf)>, RollupFileError> {
        self.grain
            .names
            .list(&self.dir)
            .map_err(|source| RollupFileError::List {
                path: self.dir.clone(),
                source,
            })
    }

    /// Bytes the files take.
    pub fn size(&self) -> Result<u64, RollupFileError> {
        self.grain
            .names
            .size(&self.dir)
            .map_err(|(path, source)| RollupFileError::Read { path, source })
    }

    /// Writes the rollups in memory of buckets before `before_ms` (and of
    /// any bucket before what the files already claim) as one section per
    /// span, synced, then forgets them. Returns the bytes written. On an
    /// error nothing is forgotten: the next call writes them again, to a new
    /// file.
    pub fn write_before(&self, before_ms: u64) -> Result<u64, RollupFileError> {
        let mut claimed = sys::lock(&self.claimed_until);
        let before_ms = before_ms.max(claimed.unwrap_or(0));
        let taken = sys::lock(&self.open).before(before_ms);
        if taken.is_empty() {
            return Ok(0);
        }
        let Grain {
            bucket_ms, span_ms, ..
        } = self.grain;
        // Grouped by span and target, still encoded: a target's rollups are
        // decoded only while its block is built, so the section costs its
        // compressed blocks plus one target's decoded rollups, not every
        // target's (at 1,000 targets the heap peaked ~34 MiB above its steady
        // size while all of them were decoded at once: docs/benchmarks.md).
        let mut by_span: BTreeMap<u64, SpanRollups<'_>> = BTreeMap::new();
        for ((target, bucket), value) in &taken {
            by_span
                .entry(floor(*bucket, span_ms))
                .or_default()
                .entry(*target)
                .or_default()
                .push((*bucket, &**value));
        }
        let mut written = 0;
        for (span, targets) in by_span {
            let blocks: Vec<(TargetNum, Vec<u8>)> = targets
                .into_iter()
                .map(|(target, values)| {
                    let mut entries: Vec<Entry> = values
                        .into_iter()
                        .flat_map(|(bucket, value)| {
                            let slot = ((bucket - span) / bucket_ms) as u8;
                            decode_bucket(value, &|_| true)
                                .into_iter()
                                .map(move |entry| Entry { slot, ..entry })
                        })
                        .collect();
                    // Series then slot: neighbours predict each other.
                    entries.sort_by_key(|e| (e.series, e.slot));
                    (target, compress_block(&rollup_block::encode(&entries)))
                })
                .collect();
            // A section speaks only for its span: should a crash stop the
            // writes before a later span's section, that span is rolled up
            // again at open rather than taken as done.
            let until = before_ms.min(span + span_ms);
            let section = encode_section(&blocks, until);
            self.append(span, &section)?;
            *claimed = (*claimed).max(Some(until));
            written += section.len() as u64;
        }
        // Forget what was written, unless a newer value replaced it meanwhile.
        sys::lock(&self.open).forget_written(&taken);
        Ok(written)
    }

    fn append(&self, span: u64, section: &[u8]) -> Result<(), RollupFileError> {
        let mut files = sys::lock(&self.files);
        if let std::collections::btree_map::Entry::Vacant(slot) = files.entry(span) {
            slot.insert(self.create(span)?);
        }
        // Close the oldest other span's file: never the one written now.
        while files.len() > OPEN_FILES {
            let Some(&oldest) = files.keys().find(|&&h| h != span) else {
                break;
            };
            files.remove(&oldest);
        }
        let Some((file, path)) = files.get_mut(&span) else {
            unreachable!("the span's file was opened above");
        };
        if let Err(source) = file.write_all(section).and_then(|()| file.sync_data()) {
            let path = path.clone();
            files.remove(&span);
            return Err(RollupFileError::Write { path, source });
        }
        Ok(())
    }

    fn create(&self, span: u64) -> Result<(File, PathBuf), RollupFileError> {
        self.grain
            .names
            .create(&self.dir, span)
            .map_err(|(path, source)| RollupFileError::Write { path, source })
    }

    /// `target`'s rollups of buckets in `[from_ms, to_ms)`, of every series
    /// or of `only`: the files' values replaced by newer ones and by those
    /// in memory, by series then bucket. Damage is reported, not fatal.
    /// The blocks read are kept in the cache for the reads after this one.
    pub fn read(
        &self,
        target: TargetNum,
        only: Option<SeriesNum>,
        from_ms: u64,
        to_ms: u64,
        damage: &mut Vec<FileDamage>,
    ) -> Result<BTreeMap<(SeriesNum, u64), Stats>, RollupFileError> {
        self.read_with(target, only, (from_ms, to_ms), Reuse::Cached, damage)
    }

    /// [`Self::read`] for `reuse`.
    pub fn read_with(
        &self,
        target: TargetNum,
        only: Option<SeriesNum>,
        (from_ms, to_ms): (u64, u64),
        reuse: Reuse,
        damage: &mut Vec<FileDamage>,
    ) -> Result<BTreeMap<(SeriesNum, u64), Stats>, RollupFileError> {
        let wanted = |series: SeriesNum, bucket: u64| {
            only.is_none_or(|s| s == series) && (from_ms..to_ms).contains(&bucket)
        };
        // Memory first: a section written meanwhile is then in the files.
        let in_memory: Vec<(u64, EncodedBucket)> = {
            let open = sys::lock(&self.open);
            open.range(target, from_ms..to_ms)
                .map(|(bucket, v)| (bucket, v.clone()))
                .collect()
        };
        let in_memory = in_memory.into_iter().flat_map(|(bucket, value)| {
            decode_bucket(&value, &|series| wanted(series, bucket))
                .into_iter()
                .map(move |entry| ((entry.series, bucket), entry.stats))
        });
        let mut found = BTreeMap::new();
        for (span, path) in self.files()? {
            if span + self.grain.span_ms <= from_ms || span >= to_ms {
                continue;
            }
            read_target(
                &path,
                self.grain,
                span,
                target,
                (&self.cache, reuse),
                damage,
                &wanted,
                |series, at, stats| {
                    found.insert((series, at), stats);
                },
            )?;
        }
        found.extend(in_memory);
        Ok(found)
    }

    /// The end of the newest section in the files: every bucket before it
    /// had been rolled up when it was written. Only the newest two spans'
    /// files are read.
    fn written_until(&self) -> Result<Option<u64>, RollupFileError> {
        let files = self.files()?;
        let hours: BTreeSet<u64> = files.iter().rev().map(|(h, _)| *h).take(2).collect();
        let mut until = None;
        for (hour, path) in files {
            if !hours.contains(&hour) {
                continue;
            }
            let file = match open_for_read(&path)? {
                Some(file) => file,
                None => continue,
            };
            walk_sections(&file, &path, &mut Vec::new(), |_, section| {
                until = until.max(Some(section.until_ms));
                true
            })?;
        }
        Ok(until)
    }

    /// Deletes the files whose span ended at or before `cutoff_ms`.
    pub fn remove_before(&self, cutoff_ms: u64) -> Result<usize, RollupFileError> {
        let mut removed = 0;
        for (hour, path) in self.files()? {
            if hour + self.grain.span_ms > cutoff_ms {
                continue;
            }
            sys::lock(&self.files).remove(&hour);
            // A file of the same name may be made again (a late bucket).
            self.cache.invalidate_all();
            fs::remove_file(&path).map_err(|source| RollupFileError::Remove {
                path: path.clone(),
                source,
            })?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Rewrites every span that ended at or before `before_ms` and is still
    /// in more than one section (hour rollups: a section per flush that
    /// rolled hours, ~24 a day) as one section in a new file of that span,
    /// synced, then deletes the span's older files. Returns the bytes
    /// written.
    ///
    /// Why: a section holds each target's few rollups of that flush, and
    /// per block zstd's frame and the index entry cost more than the
    /// rollups; a day in one block is ~40 % smaller (docs/benchmarks.md,
    /// "Rollups in columns"). A crash between the new file and the deletes
    /// leaves both, which read the same: a later file replaces an earlier
    /// one's values. A span with damage is left as it is (its readable
    /// sections keep being read), and so is any span after a failed write.
    pub fn compact_before(&self, before_ms: u64) -> Result<u64, RollupFileError> {
        let mut by_span: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        for (span, path) in self.files()? {
            if span + self.grain.span_ms <= before_ms {
                by_span.entry(span).or_default().push(path);
            }
        }
        let mut written = 0;
        let mut compact = sys::lock(&self.compact_spans);
        compact.retain(|span| by_span.contains_key(span));
        for (span, paths) in by_span {
            if compact.contains(&span) {
                continue;
            }
            match self.compact_span(span, &paths)? {
                Compaction::Done(bytes) => written += bytes,
                Compaction::AlreadyOne => {}
                Compaction::Damaged(damage) => {
                    tracing::warn!(
                        files = paths.len(),
                        first = %paths[0].display(),
                        damage = ?damage.first(),
                        "{}: a finished span has damage; left as it is, uncompacted",
                        self.grain.label
                    );
                }
            }
            compact.insert(span);
        }
        Ok(written)
    }

    fn compact_span(&self, span: u64, paths: &[PathBuf]) -> Result<Compaction, RollupFileError> {
        // Every block of the span, by target, in the order written.
        let mut damage = Vec::new();
        let mut sections = 0;
        let mut until_ms = span;
        let mut blocks: BTreeMap<TargetNum, Vec<BlockRef>> = BTreeMap::new();
        let mut files = Vec::with_capacity(paths.len());
        for (i, path) in paths.iter().enumerate() {
            let Some(file) = open_for_read(path)? else {
                // Deleted meanwhile (retention): nothing of it to keep.
                files.push(None);
                continue;
            };
            walk_sections(&file, path, &mut damage, |at, section| {
                sections += 1;
                until_ms = until_ms.max(section.until_ms);
                for &(target, offset, len, crc) in &section.index {
                    blocks.entry(target).or_default().push(BlockRef {
                        file: i,
                        section_at: at,
                        layout: section.layout,
                        offset,
                        len,
                        crc,
                    });
                }
                true
            })?;
            files.push(Some(file));
        }
        if !damage.is_empty() {
            return Ok(Compaction::Damaged(damage));
        }
        if sections <= 1 {
            return Ok(Compaction::AlreadyOne);
        }
        // One target at a time: its rollups decoded, merged (later sections
        // replace earlier values) and compressed; only the compressed blocks
        // of all targets are held.
        let mut compressed = Vec::with_capacity(blocks.len());
        for (target, refs) in blocks {
            let mut merged: BTreeMap<(SeriesNum, u64), Stats> = BTreeMap::new();
            for block in refs {
                let (path, file) = (
                    &paths[block.file],
                    files[block.file].as_ref().expect("opened above"),
                );
                let at = block.section_at;
                let bad = || FileDamage::BadBlock {
                    path: path.clone(),
                    offset: at + block.offset as u64,
                    target,
                };
                let Some(bytes) = read_block(file, path, at, block.offset, block.len, block.crc)?
                else {
                    return Ok(Compaction::Damaged(vec![bad()]));
                };
                let parsed = parse_block(
                    &bytes,
                    self.grain,
                    span,
                    block.layout,
                    &|_, _| true,
                    |series, bucket, stats| {
                        merged.insert((series, bucket), stats);
                    },
                );
                if parsed.is_err() {
                    return Ok(Compaction::Damaged(vec![bad()]));
                }
            }
            let entries: Vec<Entry> = merged
                .into_iter()
                .map(|((series, bucket), stats)| Entry {
                    series,
                    slot: ((bucket - span) / self.grain.bucket_ms) as u8,
                    stats,
                })
                .collect();
            compressed.push((target, compress_block(&rollup_block::encode(&entries))));
        }
        let section = encode_section(&compressed, until_ms);
        // No file of this span stays open for appending: a bucket recomputed
        // later goes to a file after the compacted one.
        let mut open_files = sys::lock(&self.files);
        open_files.remove(&span);
        let (mut file, path) = self.create(span)?;
        file.write_all(&section)
            .and_then(|()| file.sync_data())
            .map_err(|source| RollupFileError::Write {
                path: path.clone(),
                source,
            })?;
        drop(open_files);
        self.cache.invalidate_all();
        for old in paths {
            match fs::remove_file(old) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RollupFileError::Remove {
                        path: old.clone(),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        Ok(Compaction::Done(section.len() as u64))
    }

    /// Reads a whole file of `grain` the way queries do, for `hopwatch
    /// check`: how many sections, and the damage.
    pub fn check_file(
        grain: Grain,
        path: &Path,
    ) -> Result<(u64, Vec<FileDamage>), RollupFileError> {
        let mut damage = Vec::new();
        let Some(file) = open_for_read(path)? else {
            return Ok((0, damage));
        };
        let span = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|name| grain.names.parse(name))
            .map_or(0, |(h, _)| h);
        let mut sections = 0;
        let mut blocks = Vec::new();
        walk_sections(&file, path, &mut damage, |at, section| {
            sections += 1;
            blocks.extend(section.index.iter().map(|&e| (at, section.layout, e)));
            true
        })?;
        for (at, layout, (target, offset, len, crc)) in blocks {
            let good = match read_block(&file, path, at, offset, len, crc)? {
                Some(block) => {
                    parse_block(&block, grain, span, layout, &|_, _| true, |_, _, _| {}).is_ok()
                }
                None => false,
            };
            if !good {
                damage.push(FileDamage::BadBlock {
                    path: path.to_path_buf(),
                    offset: at + offset as u64,
                    target,
                });
            }
        }
        Ok((sections, damage))
    }
}

/// A target's block as a section holds it.
fn compress_block(raw: &[u8]) -> Vec<u8> {
    super::compress::compress(raw, ZSTD_LEVEL)
}

/// A section of compressed blocks, sorted by target.
fn encode_section(compressed: &[(TargetNum, Vec<u8>)], until_ms: u64) -> Vec<u8> {
    let index_len = compressed.len() * INDEX_ENTRY_LEN;
    let total = HEADER_LEN + index_len + compressed.iter().map(|(_, z)| z.len()).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend(MAGIC);
    out.extend([0; 4]);
    out.extend((total as u32).to_be_bytes());
    out.extend((compressed.len() as u32).to_be_bytes());
    out.extend(until_ms.to_be_bytes());
    let mut offset = HEADER_LEN + index_len;
    for (target, z) in compressed {
        out.extend(target.0.to_be_bytes());
        out.extend((offset as u32).to_be_bytes());
        out.extend((z.len() as u32).to_be_bytes());
        out.extend(crc32fast::hash(z).to_be_bytes());
        offset += z.len();
    }
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    for (_, z) in compressed {
        out.extend(z);
    }
    out
}

fn open_for_read(path: &Path) -> Result<Option<File>, RollupFileError> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        // Deleted by retention between the listing and the read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RollupFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads exactly `len` bytes at `at`; `None` if the file ends first.
fn read_at(
    file: &File,
    path: &Path,
    at: u64,
    len: usize,
) -> Result<Option<Vec<u8>>, RollupFileError> {
    let mut buf = vec![0; len];
    match file.read_exact_at(&mut buf, at) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(source) => Err(RollupFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Calls `each(section start, section)` for every whole section, in order,
/// until it returns false; stops at the first damaged one.
fn walk_sections(
    file: &File,
    path: &Path,
    damage: &mut Vec<FileDamage>,
    mut each: impl FnMut(u64, &Section) -> bool,
) -> Result<(), RollupFileError> {
    let file_len = file
        .metadata()
        .map_err(|source| RollupFileError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let mut at = 0u64;
    while at < file_len {
        let torn = || FileDamage::TornTail {
            path: path.to_path_buf(),
            offset: at,
        };
        let Some(header) = read_at(file, path, at, HEADER_LEN)? else {
            damage.push(torn());
            return Ok(());
        };
        let word = |i: usize| u32::from_be_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let (crc, len, count) = (word(4), word(8), word(12));
        let until_ms = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
        let index_len = count as usize * INDEX_ENTRY_LEN;
        let layout = match header[..4].try_into().expect("4 bytes") {
            MAGIC => Some(BlockLayout::Columns),
            MAGIC_ROWS => Some(BlockLayout::Rows),
            _ => None,
        };
        let Some(layout) = layout else {
            damage.push(FileDamage::BadSection {
                path: path.to_path_buf(),
                offset: at,
            });
            return Ok(());
        };
        if len > MAX_SECTION_BYTES || (len as usize) < HEADER_LEN + index_len {
            damage.push(FileDamage::BadSection {
                path: path.to_path_buf(),
                offset: at,
            });
            return Ok(());
        }
        if at + len as u64 > file_len {
            damage.push(torn());
            return Ok(());
        }
        let Some(index) = read_at(file, path, at + HEADER_LEN as u64, index_len)? else {
            damage.push(torn());
            return Ok(());
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..]);
        hasher.update(&index);
        if hasher.finalize() != crc {
            damage.push(FileDamage::BadSection {
                path: path.to_path_buf(),
                offset: at,
            });
            return Ok(());
        }
        let section = Section {
            layout,
            len,
            until_ms,
            index: index
                .chunks_exact(INDEX_ENTRY_LEN)
                .map(|e| {
                    let w = |i: usize| u32::from_be_bytes(e[i..i + 4].try_into().expect("4 bytes"));
                    (TargetNum(w(0)), w(4), w(8), w(12))
                })
                .collect(),
        };
        if !each(at, &section) {
            return Ok(());
        }
        at += section.len as u64;
    }
    Ok(())
}

/// A block's decompressed bytes, `None` if its CRC does not match.
fn read_block(
    file: &File,
    path: &Path,
    section_at: u64,
    offset: u32,
    len: u32,
    crc: u32,
) -> Result<Option<Vec<u8>>, RollupFileError> {
    let Some(z) = read_at(file, path, section_at + offset as u64, len as usize)? else {
        return Ok(None);
    };
    if crc32fast::hash(&z) != crc {
        return Ok(None);
    }
    Ok(zstd::stream::decode_all(z.as_slice()).ok())
}

/// The rollups of the series `wanted` of a bucket `insert_bucket` encoded.
/// The values in memory were encoded by this process, so one that does not
/// decode is a bug: logged, and its rollups are rebuilt at the next open.
fn decode_bucket(value: &[u8], wanted: &dyn Fn(SeriesNum) -> bool) -> Vec<Entry> {
    rollup_block::decode_matching(value, |series, _| wanted(series)).unwrap_or_else(|error| {
        tracing::error!(%error, "rollups in memory do not decode; dropping them");
        Vec::new()
    })
}

/// Which entries of a block a read wants: `(series, bucket start)`.
type Wanted<'a> = &'a dyn Fn(SeriesNum, u64) -> bool;

/// Calls `each(series, bucket start, stats)` for every entry of a block
/// that is `wanted`; an error means the block is damaged (nothing of it
/// should be trusted).
fn parse_block(
    block: &[u8],
    grain: Grain,
    span: u64,
    layout: BlockLayout,
    wanted: Wanted<'_>,
    mut each: impl FnMut(SeriesNum, u64, Stats),
) -> Result<(), ()> {
    let bucket_start = |slot: u8| {
        (u64::from(slot) < grain.slots()).then(|| span + u64::from(slot) * grain.bucket_ms)
    };
    let mut entries = Vec::new();
    match layout {
        BlockLayout::Columns => {
            // A slot out of range is decoded, to be refused below.
            let decode_it = |series, slot| bucket_start(slot).is_none_or(|at| wanted(series, at));
            for entry in rollup_block::decode_matching(block, decode_it).map_err(|_| ())? {
                let at = bucket_start(entry.slot).ok_or(())?;
                entries.push((entry.series, at, entry.stats));
            }
        }
        BlockLayout::Rows => {
            let mut rest = block;
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err(());
                }
                let series = SeriesNum(rest[0]);
                let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
                let at = bucket_start(rest[1]).ok_or(())?;
                let value = rest.get(4..4 + len).ok_or(())?;
                rest = &rest[4 + len..];
                if !wanted(series, at) {
                    continue;
                }
                let row: RollupV1 = codec::decode(value).map_err(|_| ())?;
                let stats = Stats::from_value(row).map_err(|_| ())?;
                entries.push((series, at, stats.coarsened(STORED_GROUPING_POWER)));
            }
        }
    }
    for (series, at, stats) in entries {
        each(series, at, stats);
    }
    Ok(())
}

/// Calls `each` for every entry of `target` in one file, sections in order.
#[allow(clippy::too_many_arguments)]
fn read_target(
    path: &Path,
    grain: Grain,
    span: u64,
    target: TargetNum,
    (cache, reuse): (&BlockCache, Reuse),
    damage: &mut Vec<FileDamage>,
    wanted: Wanted<'_>,
    mut each: impl FnMut(SeriesNum, u64, Stats),
) -> Result<(), RollupFileError> {
    let Some(file) = open_for_read(path)? else {
        return Ok(());
    };
    let file_len = file
        .metadata()
        .map_err(|source| RollupFileError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let bad = |offset: u64| FileDamage::BadBlock {
        path: path.to_path_buf(),
        offset,
        target,
    };
    let key = (path.to_path_buf(), file_len, target);
    let blocks = match cache.get(&key) {
        Some(blocks) => blocks,
        None => {
            let mut found = Vec::new();
            let damage_before = damage.len();
            walk_sections(&file, path, damage, |at, section| {
                if let Ok(i) = section.index.binary_search_by_key(&target, |e| e.0) {
                    let (_, offset, len, crc) = section.index[i];
                    found.push((at, section.layout, offset, len, crc));
                }
                true
            })?;
            let mut blocks = Vec::with_capacity(found.len());
            for (at, layout, offset, len, crc) in found {
                match read_block(&file, path, at, offset, len, crc)? {
                    Some(block) => blocks.push(CachedBlock {
                        offset: at + offset as u64,
                        layout,
                        bytes: block,
                    }),
                    None => damage.push(bad(at + offset as u64)),
                }
            }
            let blocks = Arc::new(blocks);
            // Damage is reported by every read, so only a clean read is kept.
            if reuse == Reuse::Cached && damage.len() == damage_before {
                cache.insert(key, Arc::clone(&blocks));
            }
            blocks
        }
    };
    for block in blocks.iter() {
        if parse_block(&block.bytes, grain, span, block.layout, wanted, &mut each).is_err() {
            damage.push(bad(block.offset));
        }
    }
    Ok(())
}

/// One target's decompressed block, as read from a file.
struct CachedBlock {
    offset: u64,
    layout: BlockLayout,
    bytes: Vec<u8>,
}

/// Whether a read's decompressed blocks are kept for the reads after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// A query's: the web UI reads a target's series one after another,
    /// each from the same blocks.
    Cached,
    /// Read once: the hour rollup reads every target's minutes each hour.
    /// Kept, its blocks would push the queries' out of the cache, and
    /// their buffers would live on among a flush's short-lived ones.
    Once,
}

/// Recently read targets' blocks, by file, the file's length (a file
/// appended to since is another key) and target: the web UI reads a
/// target's series one after another, each from the same blocks, and a
/// block decompressed once serves them all. Bounded in bytes.
type BlockCache = moka::sync::Cache<(PathBuf, u64, TargetNum), Arc<Vec<CachedBlock>>>;

/// The block cache's bound: a day of one target's minutes (~0.7 MiB) and a
/// month of its hours (~0.4 MiB) fit.
const BLOCK_CACHE_BYTES: u64 = 2 << 20;

fn block_cache() -> BlockCache {
    moka::sync::Cache::builder()
        .max_capacity(BLOCK_CACHE_BYTES)
        .weigher(|_, blocks: &Arc<Vec<CachedBlock>>| {
            let bytes: usize = blocks.iter().map(|b| b.bytes.len() + 32).sum();
            u32::try_from(bytes).unwrap_or(u32::MAX)
        })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS;

    /// A rollup told apart by `n` (all lost, so no histogram).
    fn value(n: u64) -> Stats {
        Stats {
            sent: n,
            lost: n,
            ..Stats::default()
        }
        .coarsened(STORED_GROUPING_POWER)
    }

    fn fill(m: &RollupFiles, targets: u32, minutes: u64) {
        for t in 0..targets {
            for minute in 0..minutes {
                for s in 0..3u8 {
                    let at = T0 + minute * MINUTE_MS;
                    m.insert(
                        TargetNum(t),
                        SeriesNum(s),
                        at,
                        value(at + t as u64 * 7 + s as u64),
                    );
                }
            }
        }
    }

    #[test]
    fn a_read_once_reads_the_same_and_leaves_the_block_cache_to_queries() {
        let dir = tempfile::tempdir().unwrap();
        let m = RollupFiles::open(dir.path(), Grain::MINUTES).unwrap();
        fill(&m, 5, 25);
        assert!(m.write_before(T0 + 20 * MINUTE_MS).unwrap() > 0);
        let mut damage = Vec::new();
        let span = (T0, T0 + HOUR_MS);
        let once = m
            .read_with(TargetNum(3), None, span, Reuse::Once, &mut damage)
            .unwrap();
        m.cache.run_pending_tasks();
        assert_eq!(m.cache.entry_count(), 0, "a read once is not cached");
        let cached = m
            .read(TargetNum(3), None, span.0, span.1, &mut damage)
            .unwrap();
        m.cache.run_pending_tasks();
        assert_eq!(m.cache.entry_count(), 1, "a query's blocks are cached");
        assert_eq!(once, cached);
        assert_eq!(once.len(), 75);
        assert!(damage.is_empty(), "{damage:?}");
    }

    #[test]
    fn rollups_read_back_from_memory_and_from_sections_alike() {
        let dir = tempfile::tempdir().unwrap();
        let m = RollupFiles::open(dir.path(), Grain::MINUTES).unwrap();
        fill(&m, 5, 25);
        let mut damage = Vec::new();
        let before = m
            .read(TargetNum(3), None, T0, T0 + HOUR_MS, &mut damage)
            .unwrap();
        assert_eq!(before.len(), 75);
        assert!(m.write_before(T0 + 20 * MINUTE_MS).unwrap() > 0);
        assert_eq!(
            m.pending(),
            5 * 3 * 5,
            "the last five minutes stay in memory"
        );
        let after = m
            .read(TargetNum(3), None, T0, T0 + HOUR_MS, &mut damage)
            .unwrap();
        assert_eq!(before, after);
        let one = m
            .read(
                TargetNum(3),
                Some(SeriesNum(1)),
                T0 + 5 * MINUTE_MS,
                T0 + 7 * MINUTE_MS,
                &mut damage,
            )
            .unwrap();
        let keys: Vec<_> = one.keys().copied().collect();
        assert_eq!(
            keys,
            vec![
                (SeriesNum(1), T0 + 5 * MINUTE_MS),
                (SeriesNum(1), T0 + 6 * MINUTE_MS)
            ]
        );
        assert!(damage.is_empty(), "{damage:?}");
        assert_eq!(m.written_until().unwrap(), Some(T0 + 20 * MINUTE_MS));
        // Another process (a reader of the same directory) sees the files.
        let other = RollupFiles::reader(dir.path(), Grain::MINUTES);
        let from_files = other
            .read(TargetNum(3), None, T0, T0 + 20 * MINUTE_MS, &mut damage)
            .unwrap();
        assert_eq!(from_files.len(), 60);
    }

    #[test]
    fn a_later_section_replaces_a_recomputed_minute() {
        let dir = tempfile::tempdir().unwrap();
        let m = RollupFiles::open(dir.path(), Grain::MINUTES).unwrap();
        fill(&m, 2, 10);
        m.write_before(T0 + 10 * MINUTE_MS).unwrap();
        m.insert(TargetNum(1), SeriesNum(2), T0 + 4 * MINUTE_MS, value(1));
        m.write_before(T0 + 10 * MINUTE_MS).unwrap();
        let reopened = RollupFiles::open(dir.path(), Grain::MINUTES).unwrap();
        let mut damage = Vec::new();
        let found = reopened
            .read(
                TargetNum(1),
                Some(SeriesNum(2)),
                T0,
                T0 + HOUR_MS,
                &mut damage,
            )
            .unwrap();
        assert_eq!(found[&(SeriesNum(2), T0 + 4 * MINUTE_MS)], value(1));
        assert_eq!(
            found[&(SeriesNum(2), T0 + 3 * MINUTE_MS)],
            value(T0 + 3 * MINUTE_MS + 7 + 2)
        );
        assert!(damage.is_empty());
    }

    #[test]
    fn a_torn_section_costs_only_itself_and_a_damaged_block_only_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let m = RollupFiles::open(dir.path(), Grain::MINUTES).unwrap();
        fill(&m, 3, 20);
        m.write_before(T0 + 10 * MINUTE_MS).unwrap();
        m.write_before(T0 + 20 * MINUTE_MS).unwrap();
        let (_, path) = m.files().unwrap().pop().unwrap();
        let bytes = fs::read(&path).unwrap();
        // Cut the second section in half: a power cut during its append.
        let first_len = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let cut = first_len + (bytes.len() - first_len) / 2;
        fs::write(&path, &bytes[..cut]).unwrap();
        let mut damage = Vec::new();
        let found = RollupFiles::reader(dir.path(), Grain::MINUTES)
            .read(TargetNum(0), None, T0, T0 + HOUR_MS, &mut damage)
            .unwrap();
        assert_eq!(found.len(), 30, "the first section's ten minutes");
        assert!(
            matches!(damage.as_slice(), [FileDamage::TornTail { .. }]),
            "{damage:?}"
        );
        // Flip a byte in target 1's block of the first section.
        let mut bytes = bytes[..first_len].to_vec();
        let entry = HEADER_LEN + INDEX_ENTRY_LEN;
        let offset = u32::from_be_bytes(bytes[entry + 4..entry + 8].try_into().unwrap()) as usize;
        bytes[offset + 3] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let reader = RollupFiles::reader(dir.path(), Grain::MINUTES);
        let mut damage = Vec::new();
        assert!(reader
            .read(TargetNum(1), None, T0, T0 + HOUR_MS, &mut damage)
            .unwrap()
            .is_empty());
        assert!(matches!(
            damage.as_slice(),
            [FileDamage::BadBlock {
                target: TargetNum(1),
                ..
            }]
        ));
        let mut damage = Vec::new();
        assert_eq!(
            reader
                .read(TargetNum(2), None, T0, T0 + HOUR_MS, &mut damage)
                .unwrap()
                .len(),
            30
        );
        assert!(damage.is_empty());
        let (sections, damage) = RollupFiles::check_file(Grain::MINUTES, &path).unwrap();
        assert_eq!(sections, 1);
        assert_eq!(damage.len(), 1);
    }

    #[test]
    fn a_section_across_an_hour_goes_to_each_hours_file_and_retention_deletes_hours() {
        let dir = tempfile::tempdir().unwrap();
        let m = RollupFiles::open(dir.path(), Grain::MINUTES).unwrap();
        for minute in 55..65u64 {
            m.insert(
                TargetNum(0),
                SeriesNum(0),
                T0 + minute * MINUTE_MS,
                value(minute),
            );
        }
        m.write_before(T0 + 65 * MINUTE_MS).unwrap();
        let hours: Vec<u64> = m.files().unwrap().iter().map(|(h, _)| *h).collect();
        assert_eq!(hours, vec![T0, T0 + HOUR_MS]);
        let mut damage = Vec::new();
        assert_eq!(
            m.read(TargetNum(0), None, T0, T0 + 2 * HOUR_MS, &mut damage)
                .unwrap()
                .len(),
            10
        );
        assert_eq!(m.remove_before(T0 + HOUR_MS).unwrap(), 1);
        assert_eq!(
            m.read(TargetNum(0), None, T0, T0 + 2 * HOUR_MS, &mut damage)
                .unwrap()
                .len(),
            5
        );
    }

    #[test]
    fn a_finished_days_hour_sections_become_one_that_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let day = floor(T0, DAY_MS);
        let h = RollupFiles::open(dir.path(), Grain::HOURS).unwrap();
        let read_all = |h: &RollupFiles| -> Vec<BTreeMap<(SeriesNum, u64), Stats>> {
            (0..3)
                .map(|t| {
                    let mut damage = Vec::new();
                    let found = h
                        .read(TargetNum(t), None, day, day + 2 * DAY_MS, &mut damage)
                        .unwrap();
                    assert!(damage.is_empty(), "{damage:?}");
                    found
                })
                .collect()
        };
        // A section per hour, as flushes write them, over a day and two
        // hours of the next; then a late value for hour 5 in a section of
        // its own, which replaces the first.
        for hour in 0..26u64 {
            let at = day + hour * HOUR_MS;
            for t in 0..3u32 {
                for s in 0..2u8 {
                    h.insert(
                        TargetNum(t),
                        SeriesNum(s),
                        at,
                        value(hour + u64::from(t) * 7 + u64::from(s)),
                    );
                }
            }
            h.write_before(at + HOUR_MS).unwrap();
        }
        h.insert(TargetNum(1), SeriesNum(0), day + 5 * HOUR_MS, value(999));
        h.write_before(day + 26 * HOUR_MS).unwrap();
        let before = read_all(&h);
        assert_eq!(before[1][&(SeriesNum(0), day + 5 * HOUR_MS)], value(999));
        let day_file = h.files().unwrap()[0].1.clone();
        let (sections, _) = RollupFiles::check_file(Grain::HOURS, &day_file).unwrap();
        assert_eq!(sections, 25);
        let size_before = fs::metadata(&day_file).unwrap().len();

        let written = h.compact_before(day + 26 * HOUR_MS).unwrap();
        let files = h.files().unwrap();
        let day_files: Vec<&PathBuf> = files
            .iter()
            .filter(|(s, _)| *s == day)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(day_files.len(), 1, "{files:?}");
        assert_ne!(day_files[0], &day_file, "a new file, the old one deleted");
        assert!(!day_file.exists());
        let (sections, damage) = RollupFiles::check_file(Grain::HOURS, day_files[0]).unwrap();
        assert_eq!((sections, damage.len()), (1, 0));
        assert_eq!(written, fs::metadata(day_files[0]).unwrap().len());
        assert!(written < size_before, "{written} B, {size_before} B before");
        assert_eq!(
            files.iter().filter(|(s, _)| *s == day + DAY_MS).count(),
            1,
            "the unfinished day is left alone"
        );
        assert_eq!(
            read_all(&h),
            before,
            "compacted, every value reads the same"
        );

        // A late value after the compaction goes to a newer file and wins;
        // the span is not read again in this process, but is after a restart.
        h.insert(TargetNum(2), SeriesNum(1), day + 3 * HOUR_MS, value(555));
        h.write_before(day + 26 * HOUR_MS).unwrap();
        assert_eq!(h.compact_before(day + 26 * HOUR_MS).unwrap(), 0);
        let reopened = RollupFiles::open(dir.path(), Grain::HOURS).unwrap();
        assert!(reopened.compact_before(day + 26 * HOUR_MS).unwrap() > 0);
        let after = read_all(&reopened);
        assert_eq!(after[2][&(SeriesNum(1), day + 3 * HOUR_MS)], value(555));
        assert_eq!(after[1], before[1]);

        // A crash between the compacted file and the deletes leaves both:
        // they read the same.
        let kept = reopened.files().unwrap()[0].1.clone();
        let copy = dir.path().join("h1-kept");
        fs::copy(&kept, &copy).unwrap();
        fs::write(
            dir.path().join(Grain::HOURS.names.name(day, 0)),
            fs::read(&copy).unwrap(),
        )
        .unwrap();
        fs::remove_file(&copy).unwrap();
        let crashed = RollupFiles::open(dir.path(), Grain::HOURS).unwrap();
        assert_eq!(read_all(&crashed), after);
    }

    #[test]
    fn sections_of_rows_from_the_first_release_are_read_at_the_stored_power() {
        use crate::store::rollup::{scratch_histogram, SeriesAcc};
        let dir = tempfile::tempdir().unwrap();
        let mut acc = SeriesAcc::default();
        for i in 0..60u64 {
            acc.push(Some(20_000_000 + i * 31_337));
        }
        let stats = acc.finish(&mut scratch_histogram());
        // A block of rows as the first release wrote it: minutes 2 and 3.
        let mut rows = Vec::new();
        for minute in [2u8, 3] {
            let v = codec::encode(&stats.to_value());
            rows.extend([7, minute]);
            rows.extend((v.len() as u16).to_be_bytes());
            rows.extend(v);
        }
        let mut section = encode_section(
            &[(TargetNum(4), compress_block(&rows))],
            T0 + 10 * MINUTE_MS,
        );
        section[..4].copy_from_slice(&MAGIC_ROWS);
        fs::write(dir.path().join(Grain::MINUTES.names.name(T0, 0)), &section).unwrap();
        // This release appends its own sections beside it.
        let m = RollupFiles::open(dir.path(), Grain::MINUTES).unwrap();
        assert_eq!(m.claimed_until(), Some(T0 + 10 * MINUTE_MS));
        m.insert(
            TargetNum(4),
            SeriesNum(7),
            T0 + 12 * MINUTE_MS,
            stats.clone(),
        );
        m.write_before(T0 + 20 * MINUTE_MS).unwrap();
        let mut damage = Vec::new();
        let found = RollupFiles::reader(dir.path(), Grain::MINUTES)
            .read(TargetNum(4), None, T0, T0 + HOUR_MS, &mut damage)
            .unwrap();
        assert!(damage.is_empty(), "{damage:?}");
        let coarse = stats.coarsened(STORED_GROUPING_POWER);
        let minutes: Vec<u64> = found.keys().map(|(_, at)| (at - T0) / MINUTE_MS).collect();
        assert_eq!(minutes, vec![2, 3, 12]);
        assert!(found.values().all(|s| *s == coarse), "{found:?}");
        let (_, path) = m.files().unwrap().remove(0);
        let (sections, damage) = RollupFiles::check_file(Grain::MINUTES, &path).unwrap();
        assert_eq!((sections, damage.len()), (1, 0));
    }
}

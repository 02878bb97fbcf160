//! The raw history's files: compressed chunks ([`super::chunk`]) appended to
//! one file per hour of the rounds' start, outside sled (issue 15).
//!
//! # Why files, and why a chunk a minute
//! Measured in docs/benchmarks.md ("Where the history goes"): the same
//! chunks cost 3.4× their size when inserted into sled, and a journal that
//! bounds the loss of a longer chunk writes every round twice. A chunk per
//! target and flush (a minute by default), appended to the hour's file and
//! synced, writes each round once: 0.73 MiB per 10-hop target and day on the
//! lab's RTTs, 1.75 on a WAN-like series, against 53–60 for one sled value
//! per round. What a crash or power cut loses is the open minute, in memory.
//!
//! # Files
//! `raw-<hour start, Unix ms>-<n>.seg` holds rounds that started in that
//! hour, so a time range names its files and retention deletes whole hours.
//! A flush whose rounds span an hour boundary appends to both files. A
//! process never appends to a file an earlier one wrote (`n` counts up), so
//! a torn record left by a crash is only ever at the end of a file nobody
//! writes to again, and no file is rewritten or truncated.
//!
//! # Records
//! `MAGIC (4) | crc32 (4) | length (4) | target (4) | first start ms (8) |
//! last start ms (8) | rounds (4) | chunk (length)`, integers big-endian; the
//! CRC covers everything after itself. A record whose CRC does not match is
//! skipped and counted, and reading resumes at the next magic: one damaged
//! record costs its minute, not the file.
//!
//! # Indexes
//! Every file holds every target's records, so a query of one target would
//! read them all: at 1,000 targets an hour's file is ~70 MiB. Beside each
//! `.seg` file, `raw-<hour>-<n>.idx` lists its records as
//! `target (4) | offset (8) | length (4) | first start ms (8) | last start
//! ms (8) | crc32 (4)` entries (the CRC covers the entry), appended after
//! the records' own append and sync and never synced itself: an index is a
//! hint. A read trusts entries while their CRCs match and they follow one
//! another without a gap from offset 0, reads the records they name for
//! its target (each record's own CRC still checked), and scans the rest of
//! the file as if there were no index. A missing, torn or stale index costs
//! time, never a round.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{Read as _, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::chunk::{self, ChunkError};
use super::hourfiles::HourFiles;
use super::keys::TargetNum;
use crate::model::{RoundRecord, TargetId};

/// Starts every record: finds the next record after a damaged one.
const MAGIC: [u8; 4] = *b"hwR1";
const HEADER_LEN: usize = 4 + 4 + 4 + 4 + 8 + 8 + 4;
/// The most a record's chunk may take: far above a minute of any target (a
/// minute of 30-hop rounds at 10 a second is about 40 KiB), so a damaged
/// length cannot claim gigabytes.
const MAX_CHUNK_BYTES: u32 = 16 << 20;
const HOUR_MS: u64 = 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("cannot create the raw history directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list the raw history directory {path}: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write raw history file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read raw history file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot delete expired raw history file {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Damage found while reading, by file; the records around it were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Bytes that are not a whole record at a file's end: a crash during an
    /// append. Expected after a power cut; nothing that was synced is lost.
    TornTail { path: PathBuf, bytes: u64 },
    /// A record whose CRC or length is wrong, skipped up to the next magic.
    BadRecord {
        path: PathBuf,
        offset: u64,
        skipped: u64,
    },
    /// A record whose CRC matched but whose chunk does not decode (a bug or
    /// a newer format): its rounds are missing from the answer.
    Undecodable {
        path: PathBuf,
        offset: u64,
        error: String,
    },
}

/// One target's rounds to append, oldest first.
pub struct Pending<'a> {
    pub target: TargetNum,
    pub rounds: &'a [RoundRecord],
}

/// Records encoded ahead of a write, grouped by the hour of their rounds'
/// start: a flush encodes each target's rounds as it decodes them, so only
/// the encoded bytes of all targets are held at once, never their rounds.
#[derive(Debug, Default)]
pub struct RecordBatch {
    by_hour: BTreeMap<u64, (Vec<u8>, Vec<IndexEntry>)>,
}

impl RecordBatch {
    /// `rounds` of `target`, oldest first, as one record per hour of start.
    pub fn add(&mut self, target: TargetNum, rounds: &[RoundRecord]) {
        let mut rest = rounds;
        while let Some(first) = rest.first() {
            let hour = hour_of(first.started_at_ms);
            let len = rest
                .iter()
                .position(|r| hour_of(r.started_at_ms) != hour)
                .unwrap_or(rest.len());
            let (these, later) = rest.split_at(len);
            let (bytes, entries) = self.by_hour.entry(hour).or_default();
            let record = encode_record(target, these);
            entries.push(IndexEntry {
                target,
                // Relative to this write until the file's end is known.
                offset: bytes.len() as u64,
                len: record.len() as u32,
                first_ms: these.iter().map(|r| r.started_at_ms).min().unwrap_or(0),
                last_ms: these.iter().map(|r| r.started_at_ms).max().unwrap_or(0),
            });
            bytes.extend(record);
            rest = later;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_hour.is_empty()
    }
}

/// What a read found: the rounds in order of their start, and any damage.
#[derive(Debug, Default)]
pub struct Found {
    pub rounds: Vec<RoundRecord>,
    pub damage: Vec<Damage>,
}

/// The directory of hourly raw history files.
pub struct Segments {
    dir: PathBuf,
    /// The files this process appends to, by hour (at most [`OPEN_FILES`]).
    open: BTreeMap<u64, OpenFile>,
}

/// A file being appended to, with its index.
struct OpenFile {
    data: File,
    path: PathBuf,
    /// `None` once an index write failed: the rest of the file is scanned.
    index: Option<File>,
    /// The data file's length: where the next record starts.
    end: u64,
}

const INDEX_ENTRY_LEN: usize = 4 + 8 + 4 + 8 + 8 + 4;

/// One record as the index names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexEntry {
    target: TargetNum,
    offset: u64,
    /// The whole record's length, header included.
    len: u32,
    first_ms: u64,
    last_ms: u64,
}

impl IndexEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend(self.target.0.to_be_bytes());
        out.extend(self.offset.to_be_bytes());
        out.extend(self.len.to_be_bytes());
        out.extend(self.first_ms.to_be_bytes());
        out.extend(self.last_ms.to_be_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.extend(crc.to_be_bytes());
    }

    /// The entries an index file holds that can be trusted: CRCs matching,
    /// each record starting where the one before ended.
    fn parse_all(bytes: &[u8]) -> Vec<IndexEntry> {
        let mut entries = Vec::new();
        let mut expected = 0u64;
        for e in bytes.chunks_exact(INDEX_ENTRY_LEN) {
            let body = &e[..INDEX_ENTRY_LEN - 4];
            let crc = u32::from_be_bytes(e[INDEX_ENTRY_LEN - 4..].try_into().expect("4 bytes"));
            let u32_at = |at: usize| u32::from_be_bytes(e[at..at + 4].try_into().expect("4"));
            let u64_at = |at: usize| u64::from_be_bytes(e[at..at + 8].try_into().expect("8"));
            let entry = IndexEntry {
                target: TargetNum(u32_at(0)),
                offset: u64_at(4),
                len: u32_at(12),
                first_ms: u64_at(16),
                last_ms: u64_at(24),
            };
            if crc32fast::hash(body) != crc || entry.offset != expected {
                break;
            }
            expected = entry.offset + u64::from(entry.len);
            entries.push(entry);
        }
        entries
    }
}

/// The index beside a data file.
fn index_path(data: &Path) -> PathBuf {
    data.with_extension("idx")
}

/// Files kept open for appending: the current hour, the one before it (late
/// rounds around the boundary), and one more for simulations.
const OPEN_FILES: usize = 3;

/// The files' names: `raw-<hour>-<n>.seg`.
const FILES: HourFiles = HourFiles("raw");

/// A record's header fields after the CRC.
struct Header {
    len: u32,
    target: TargetNum,
    first_ms: u64,
    last_ms: u64,
}

impl Header {
    fn parse(bytes: &[u8; HEADER_LEN]) -> (u32, Header) {
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        (
            u32_at(4),
            Header {
                len: u32_at(8),
                target: TargetNum(u32_at(12)),
                first_ms: u64_at(16),
                last_ms: u64_at(24),
            },
        )
    }
}

fn encode_record(target: TargetNum, rounds: &[RoundRecord]) -> Vec<u8> {
    let chunk = chunk::encode(rounds);
    let first_ms = rounds.iter().map(|r| r.started_at_ms).min().unwrap_or(0);
    let last_ms = rounds.iter().map(|r| r.started_at_ms).max().unwrap_or(0);
    let mut out = Vec::with_capacity(HEADER_LEN + chunk.len());
    out.extend(MAGIC);
    out.extend([0; 4]);
    out.extend((chunk.len() as u32).to_be_bytes());
    out.extend(target.0.to_be_bytes());
    out.extend(first_ms.to_be_bytes());
    out.extend(last_ms.to_be_bytes());
    out.extend((rounds.len() as u32).to_be_bytes());
    out.extend(chunk);
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    out
}

impl Segments {
    /// Opens (creating) the directory. Nothing is read until asked.
    pub fn open(dir: &Path) -> Result<Segments, SegmentError> {
        fs::create_dir_all(dir).map_err(|source| SegmentError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Segments {
            dir: dir.to_path_buf(),
            open: BTreeMap::new(),
        })
    }

    /// The directory for reading only: nothing is created, no file opened.
    pub fn reader(dir: &Path) -> Segments {
        Segments {
            dir: dir.to_path_buf(),
            open: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every file, oldest hour first: `(hour, path)`. A store written before
    /// the files existed (or a reader of one) has none.
    pub fn files(&self) -> Result<Vec<(u64, PathBuf)>, SegmentError> {
        FILES.list(&self.dir).map_err(|source| SegmentError::List {
            path: self.dir.clone(),
            source,
        })
    }

    /// Bytes the files and their indexes take.
    pub fn size(&self) -> Result<u64, SegmentError> {
        let data = FILES
            .size(&self.dir)
            .map_err(|(path, source)| SegmentError::Read { path, source })?;
        let mut indexes = 0;
        for (_, path) in self.files()? {
            indexes += fs::metadata(index_path(&path)).map_or(0, |m| m.len());
        }
        Ok(data + indexes)
    }

    /// Appends one record per target and hour of the rounds' start, one
    /// write per file, then syncs each file written: when this returns, a
    /// power cut loses none of them.
    pub fn append(&mut self, pending: &[Pending<'_>]) -> Result<u64, SegmentError> {
        let mut batch = RecordBatch::default();
        for p in pending {
            batch.add(p.target, p.rounds);
        }
        self.write(batch)
    }

    /// Appends the records of `batch`, one write per file, then syncs each
    /// file written: when this returns, a power cut loses none of them.
    pub fn write(&mut self, batch: RecordBatch) -> Result<u64, SegmentError> {
        let by_hour = batch.by_hour;
        let mut written = 0;
        for (hour, (bytes, entries)) in by_hour {
            if !self.open.contains_key(&hour) {
                let (data, path) = self.create(hour)?;
                let index = File::create(index_path(&path))
                    .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "cannot create the raw history file's index; reads will scan it"))
                    .ok();
                self.open.insert(
                    hour,
                    OpenFile {
                        data,
                        path,
                        index,
                        end: 0,
                    },
                );
            }
            // Close the oldest other hour's file: never the one written now
            // (a late round's old hour would otherwise be skipped).
            while self.open.len() > OPEN_FILES {
                let Some(&oldest) = self.open.keys().find(|&&h| h != hour) else {
                    break;
                };
                self.open.remove(&oldest);
            }
            let Some(open) = self.open.get_mut(&hour) else {
                unreachable!("the hour's file was opened above");
            };
            if let Err(source) = open
                .data
                .write_all(&bytes)
                .and_then(|()| open.data.sync_data())
            {
                // A full disk may have taken part of the write: the retry goes
                // to a new file, so the torn bytes end a file nobody appends to.
                let path = open.path.clone();
                self.open.remove(&hour);
                return Err(SegmentError::Write { path, source });
            }
            // The records are on disk: now the hint that finds them.
            let mut index = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
            for mut entry in entries {
                entry.offset += open.end;
                entry.encode(&mut index);
            }
            open.end += bytes.len() as u64;
            if let Some(file) = &mut open.index {
                if let Err(e) = file.write_all(&index) {
                    tracing::warn!(path = %open.path.display(), error = %e, "cannot extend the raw history file's index; reads will scan the rest of it");
                    open.index = None;
                }
            }
            written += (bytes.len() + index.len()) as u64;
        }
        Ok(written)
    }

    /// A new file for `hour`, numbered after any earlier one of that hour.
    fn create(&self, hour: u64) -> Result<(File, PathBuf), SegmentError> {
        FILES
            .create(&self.dir, hour)
            .map_err(|(path, source)| SegmentError::Write { path, source })
    }

    /// `target`'s rounds that started in `[from_ms, to_ms)`, in order of
    /// their start: through each file's index, then the part of the file
    /// the index does not cover.
    pub fn read(
        &self,
        target: TargetNum,
        id: &TargetId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Found, SegmentError> {
        let mut read = Found::default();
        for (hour, path) in self.files()? {
            if hour + HOUR_MS <= from_ms || hour >= to_ms {
                continue;
            }
            read_indexed(&path, target, id, from_ms, to_ms, &mut read)?;
        }
        sort_rounds(&mut read.rounds);
        Ok(read)
    }

    /// The rounds that started in `[from_ms, to_ms)` of every target `name`
    /// knows, in one pass over the files, each target's in order of start.
    pub fn read_many(
        &self,
        from_ms: u64,
        to_ms: u64,
        name: impl Fn(TargetNum) -> Option<TargetId>,
    ) -> Result<FoundMany, SegmentError> {
        let mut read = FoundMany::default();
        let mut names: HashMap<TargetNum, Option<TargetId>> = HashMap::new();
        for (hour, path) in self.files()? {
            if hour + HOUR_MS <= from_ms || hour >= to_ms {
                continue;
            }
            self.scan_file(&path, &mut read.damage, |offset, header, chunk_bytes| {
                if header.last_ms < from_ms || header.first_ms >= to_ms {
                    return None;
                }
                let id = names
                    .entry(header.target)
                    .or_insert_with(|| name(header.target));
                let id = id.as_ref()?;
                match chunk::decode(chunk_bytes, id) {
                    Ok(rounds) => {
                        read.rounds.entry(header.target).or_default().extend(
                            rounds
                                .into_iter()
                                .filter(|r| (from_ms..to_ms).contains(&r.started_at_ms)),
                        );
                        None
                    }
                    Err(error) => Some(undecodable(&path, offset, &error)),
                }
            })?;
        }
        for rounds in read.rounds.values_mut() {
            sort_rounds(rounds);
        }
        Ok(read)
    }

    /// The start of the newest round in the files (of any target), from the
    /// record headers, reading hours newest first until one holds a whole
    /// record (a crash can leave the newest hour's file empty or torn).
    pub fn newest_start(&self) -> Result<Option<u64>, SegmentError> {
        let files = self.files()?;
        let hours: BTreeSet<u64> = files.iter().map(|(h, _)| *h).collect();
        let mut damage = Vec::new();
        for hour in hours.into_iter().rev() {
            let mut newest = None;
            for (_, path) in files.iter().filter(|(h, _)| *h == hour) {
                self.scan_file(path, &mut damage, |_, header, _| {
                    newest = newest.max(Some(header.last_ms));
                    None
                })?;
            }
            if newest.is_some() {
                return Ok(newest);
            }
        }
        Ok(None)
    }

    /// The newest round of `target`, reading files newest first until one
    /// holds a round of it.
    pub fn last_round(
        &self,
        target: TargetNum,
        id: &TargetId,
    ) -> Result<Option<RoundRecord>, SegmentError> {
        let files = self.files()?;
        let hours: BTreeSet<u64> = files.iter().map(|(h, _)| *h).collect();
        for hour in hours.into_iter().rev() {
            let found = self.read(target, id, hour, hour + HOUR_MS)?;
            if let Some(last) = found.rounds.into_iter().last() {
                return Ok(Some(last));
            }
        }
        Ok(None)
    }

    fn scan_file(
        &self,
        path: &Path,
        damage: &mut Vec<Damage>,
        each: impl FnMut(u64, &Header, &[u8]) -> Option<Damage>,
    ) -> Result<(), SegmentError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            // Deleted by retention between the listing and the read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(SegmentError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        scan(&bytes, 0, path, damage, each);
        Ok(())
    }

    /// Deletes the files whose hour ended at or before `cutoff_ms`. Returns
    /// how many went.
    pub fn remove_before(&mut self, cutoff_ms: u64) -> Result<usize, SegmentError> {
        let mut removed = 0;
        for (hour, path) in self.files()? {
            if hour + HOUR_MS > cutoff_ms {
                continue;
            }
            self.open.remove(&hour);
            fs::remove_file(&path).map_err(|source| SegmentError::Remove {
                path: path.clone(),
                source,
            })?;
            let index = index_path(&path);
            match fs::remove_file(&index) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SegmentError::Remove {
                        path: index,
                        source,
                    })
                }
            }
            removed += 1;
        }
        Ok(removed)
    }
}

/// What [`Segments::read_many`] found: rounds by target, and any damage.
#[derive(Debug, Default)]
pub struct FoundMany {
    pub rounds: HashMap<TargetNum, Vec<RoundRecord>>,
    pub damage: Vec<Damage>,
}

fn hour_of(at_ms: u64) -> u64 {
    at_ms - at_ms % HOUR_MS
}

/// Oldest first; a round written twice (a flush retried after a failure
/// that came after its append) counts once.
pub fn sort_rounds(rounds: &mut Vec<RoundRecord>) {
    rounds.sort_by_key(|r| (r.started_at_ms, r.seq));
    rounds.dedup_by_key(|r| (r.started_at_ms, r.seq));
}

fn undecodable(path: &Path, offset: u64, error: &ChunkError) -> Damage {
    Damage::Undecodable {
        path: path.to_path_buf(),
        offset,
        error: error.to_string(),
    }
}

/// `target`'s rounds in `[from_ms, to_ms)` of one file, into `read`: the
/// records its index names, then whatever the index does not cover.
fn read_indexed(
    path: &Path,
    target: TargetNum,
    id: &TargetId,
    from_ms: u64,
    to_ms: u64,
    read: &mut Found,
) -> Result<(), SegmentError> {
    let read_err = |source| SegmentError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        // Deleted by retention between the listing and the read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(read_err(e)),
    };
    let file_len = file.metadata().map_err(read_err)?.len();
    let mut entries = match fs::read(index_path(path)) {
        Ok(bytes) => IndexEntry::parse_all(&bytes),
        Err(_) => Vec::new(),
    };
    entries.retain(|e| e.offset + u64::from(e.len) <= file_len);
    let covered_end = entries.last().map_or(0, |e| e.offset + u64::from(e.len));
    let rounds = &mut read.rounds;
    let mut keep = |offset: u64, header: &Header, chunk_bytes: &[u8]| {
        if header.target != target || header.last_ms < from_ms || header.first_ms >= to_ms {
            return None;
        }
        match chunk::decode(chunk_bytes, id) {
            Ok(found) => {
                rounds.extend(
                    found
                        .into_iter()
                        .filter(|r| (from_ms..to_ms).contains(&r.started_at_ms)),
                );
                None
            }
            Err(error) => Some(undecodable(path, offset, &error)),
        }
    };
    let at = |offset: u64, len: u64| -> Result<Vec<u8>, SegmentError> {
        let mut buf = vec![0; len as usize];
        file.read_exact_at(&mut buf, offset).map_err(read_err)?;
        Ok(buf)
    };
    for e in &entries {
        if e.target == target && e.last_ms >= from_ms && e.first_ms < to_ms {
            let record = at(e.offset, u64::from(e.len))?;
            let found = match whole_record(&record) {
                Some((header, chunk_bytes)) => keep(e.offset, &header, chunk_bytes),
                None => Some(Damage::BadRecord {
                    path: path.to_path_buf(),
                    offset: e.offset,
                    skipped: u64::from(e.len),
                }),
            };
            read.damage.extend(found);
        }
    }
    if covered_end < file_len {
        let tail = at(covered_end, file_len - covered_end)?;
        scan(&tail, covered_end, path, &mut read.damage, &mut keep);
    }
    Ok(())
}

/// The header and chunk of `bytes` if they are exactly one whole record
/// whose CRC matches.
fn whole_record(bytes: &[u8]) -> Option<(Header, &[u8])> {
    let header: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    let (crc, header) = Header::parse(header);
    let whole = bytes.starts_with(&MAGIC)
        && bytes.len() == HEADER_LEN + header.len as usize
        && crc32fast::hash(&bytes[8..]) == crc;
    whole.then(|| (header, &bytes[HEADER_LEN..]))
}

/// Walks the records of `bytes`, the part of a file from `base` on,
/// calling `each` with every record whose CRC matches; damage (including
/// what `each` reports) goes to `damage`. Offsets are the file's.
fn scan(
    bytes: &[u8],
    base: u64,
    path: &Path,
    damage: &mut Vec<Damage>,
    mut each: impl FnMut(u64, &Header, &[u8]) -> Option<Damage>,
) {
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let whole = rest.len() >= HEADER_LEN && rest.starts_with(&MAGIC);
        let record = whole.then(|| {
            let header: &[u8; HEADER_LEN] = rest[..HEADER_LEN].try_into().expect("checked length");
            Header::parse(header)
        });
        match record {
            Some((crc, header))
                if header.len <= MAX_CHUNK_BYTES
                    && rest.len() >= HEADER_LEN + header.len as usize =>
            {
                let end = HEADER_LEN + header.len as usize;
                if crc32fast::hash(&rest[8..end]) == crc {
                    if let Some(found) = each(base + at as u64, &header, &rest[HEADER_LEN..end]) {
                        damage.push(found);
                    }
                    at += end;
                    continue;
                }
            }
            _ => {}
        }
        // Not a whole, valid record here: find the next one.
        match find_magic(&rest[1..]) {
            Some(skip) => {
                damage.push(Damage::BadRecord {
                    path: path.to_path_buf(),
                    offset: base + at as u64,
                    skipped: skip as u64 + 1,
                });
                at += skip + 1;
            }
            None => {
                damage.push(Damage::TornTail {
                    path: path.to_path_buf(),
                    bytes: rest.len() as u64,
                });
                return;
            }
        }
    }
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(MAGIC.len()).position(|w| w == MAGIC)
}

impl Found {
    /// Reads a whole file the way [`Segments::read`] does, for `hopwatch
    /// check`: how many records, and the damage.
    pub fn check_file(path: &Path) -> Result<(u64, Vec<Damage>), SegmentError> {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|source| SegmentError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let (mut records, mut damage) = (0, Vec::new());
        scan(&bytes, 0, path, &mut damage, |_, _, _| {
            records += 1;
            None
        });
        Ok((records, damage))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::model::{HopAnswer, HopSample};
    use crate::probe::{Rtt, TimestampSource, Ttl};

    const T0: u64 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS;

    fn id(name: &str) -> TargetId {
        TargetId::new(name).unwrap()
    }

    fn rounds(target: &TargetId, from_seq: u64, n: u64) -> Vec<RoundRecord> {
        (from_seq..from_seq + n)
            .map(|seq| {
                let hops: Vec<HopSample> = (1..=3u8)
                    .map(|ttl| {
                        HopSample::answered(
                            Ttl::new(ttl).unwrap(),
                            HopAnswer {
                                responder: IpAddr::from([198, 18, ttl, 1]),
                                rtt: Rtt::from_nanos(u64::from(ttl) * 1_000_000 + seq % 7 * 1_000),
                                is_destination: ttl == 3,
                                reply_ttl: None,
                                quote: None,
                            },
                        )
                    })
                    .collect();
                RoundRecord {
                    target: target.clone(),
                    seq,
                    started_at_ms: T0 + seq * 1_000,
                    hops,
                    destination_ttl: Ttl::new(3),
                    source: TimestampSource::Ebpf,
                }
            })
            .collect()
    }

    fn seqs(read: &Found) -> Vec<u64> {
        read.rounds.iter().map(|r| r.seq).collect()
    }

    /// Appends `a`'s and `b`'s rounds a minute at a time for `minutes`.
    fn fill(segments: &mut Segments, minutes: u64) -> (Vec<RoundRecord>, Vec<RoundRecord>) {
        let (a, b) = (
            rounds(&id("a"), 0, minutes * 60),
            rounds(&id("b"), 0, minutes * 60),
        );
        for m in 0..minutes as usize {
            let minute = m * 60..(m + 1) * 60;
            let pending = [
                Pending {
                    target: TargetNum(1),
                    rounds: &a[minute.clone()],
                },
                Pending {
                    target: TargetNum(2),
                    rounds: &b[minute],
                },
            ];
            segments.append(&pending).unwrap();
        }
        (a, b)
    }

    #[test]
    fn rounds_come_back_by_target_and_time_across_hours() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        let (a, _) = fill(&mut segments, 90);
        assert_eq!(segments.files().unwrap().len(), 2, "an hour per file");
        let all = segments.read(TargetNum(1), &id("a"), 0, u64::MAX).unwrap();
        assert!(all.damage.is_empty(), "{:?}", all.damage);
        assert_eq!(all.rounds.len(), a.len());
        // Exactly what went in, but RTTs to the microsecond (the chunk's
        // resolution; these are whole microseconds) and no reply TTL.
        assert_eq!(all.rounds, a);
        let part = segments
            .read(TargetNum(2), &id("b"), T0 + 3_590_000, T0 + 3_610_000)
            .unwrap();
        assert_eq!(seqs(&part), (3_590..3_610).collect::<Vec<_>>());
        assert!(part.rounds.iter().all(|r| r.target == id("b")));
    }

    #[test]
    fn a_new_process_starts_a_new_file_and_both_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let a = rounds(&id("a"), 0, 120);
        let mut first = Segments::open(dir.path()).unwrap();
        first
            .append(&[Pending {
                target: TargetNum(1),
                rounds: &a[..60],
            }])
            .unwrap();
        drop(first);
        let mut second = Segments::open(dir.path()).unwrap();
        second
            .append(&[Pending {
                target: TargetNum(1),
                rounds: &a[60..],
            }])
            .unwrap();
        let names: Vec<String> = second
            .files()
            .unwrap()
            .iter()
            .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [FILES.name(T0, 0), FILES.name(T0, 1)]);
        let read = second.read(TargetNum(1), &id("a"), 0, u64::MAX).unwrap();
        assert_eq!(seqs(&read), (0..120).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_tail_loses_only_the_record_it_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        fill(&mut segments, 3);
        let (_, path) = segments.files().unwrap().remove(0);
        let len = fs::metadata(&path).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let read = segments.read(TargetNum(2), &id("b"), 0, u64::MAX).unwrap();
        // b's last minute was the file's last record.
        assert_eq!(seqs(&read), (0..120).collect::<Vec<_>>());
        assert!(
            matches!(read.damage.as_slice(), [Damage::TornTail { bytes, .. }] if *bytes > 0),
            "{:?}",
            read.damage
        );
        let a = segments.read(TargetNum(1), &id("a"), 0, u64::MAX).unwrap();
        assert_eq!(a.rounds.len(), 180, "a's records were whole");
    }

    #[test]
    fn a_read_goes_through_the_index_and_a_torn_or_missing_one_costs_only_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        let (a, _) = fill(&mut segments, 3);
        let (_, path) = segments.files().unwrap().remove(0);
        let index = fs::read(index_path(&path)).unwrap();
        assert_eq!(index.len(), 6 * INDEX_ENTRY_LEN, "one entry per record");
        // Damage b's second record: a read of a through the index never
        // reads it, a read without the index scans past it.
        let mut bytes = fs::read(&path).unwrap();
        let b_second = IndexEntry::parse_all(&index)[3];
        assert_eq!(b_second.target, TargetNum(2));
        bytes[b_second.offset as usize + HEADER_LEN + 3] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let read_a =
            |segments: &Segments| segments.read(TargetNum(1), &id("a"), 0, u64::MAX).unwrap();
        let through_index = read_a(&segments);
        assert_eq!(through_index.rounds, a);
        assert!(
            through_index.damage.is_empty(),
            "{:?}",
            through_index.damage
        );
        // A torn index: its whole entries are used, the rest scanned.
        fs::write(index_path(&path), &index[..2 * INDEX_ENTRY_LEN + 7]).unwrap();
        let torn = read_a(&segments);
        assert_eq!(torn.rounds, a);
        assert!(
            matches!(torn.damage.as_slice(), [Damage::BadRecord { offset, .. }] if *offset == b_second.offset),
            "{:?}",
            torn.damage
        );
        // A damaged entry ends what is trusted, like a torn one.
        let mut flipped = index.clone();
        flipped[INDEX_ENTRY_LEN + 2] ^= 1;
        fs::write(index_path(&path), &flipped).unwrap();
        assert_eq!(read_a(&segments).rounds, a);
        // No index: the whole file is scanned.
        fs::remove_file(index_path(&path)).unwrap();
        let scanned = read_a(&segments);
        assert_eq!(scanned.rounds, a);
        assert_eq!(scanned.damage.len(), 1);
        // Retention deletes an index with its file.
        fs::write(index_path(&path), &index).unwrap();
        segments.remove_before(u64::MAX).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_damaged_record_is_skipped_and_the_rest_of_the_file_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        fill(&mut segments, 3);
        let (_, path) = segments.files().unwrap().remove(0);
        let mut bytes = fs::read(&path).unwrap();
        // A flipped bit in the payload of the first record (a's minute 0).
        bytes[HEADER_LEN + 5] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let a = segments.read(TargetNum(1), &id("a"), 0, u64::MAX).unwrap();
        assert_eq!(seqs(&a), (60..180).collect::<Vec<_>>());
        assert!(
            matches!(a.damage.as_slice(), [Damage::BadRecord { offset: 0, .. }]),
            "{:?}",
            a.damage
        );
        let b = segments.read(TargetNum(2), &id("b"), 0, u64::MAX).unwrap();
        assert_eq!(b.rounds.len(), 180);
        let (records, damage) = Found::check_file(&path).unwrap();
        assert_eq!((records, damage.len()), (5, 1));
    }

    #[test]
    fn random_bytes_are_damage_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = fastrand::Rng::with_seed(17);
        for n in 0..50 {
            let mut bytes: Vec<u8> = (0..rng.usize(0..2_000)).map(|_| rng.u8(..)).collect();
            if n % 2 == 0 {
                // Magic where it does not belong, with lengths that lie.
                bytes.splice(0..0, MAGIC.iter().copied().chain([0xff; 40]));
            }
            let path = dir.path().join(FILES.name(T0, n));
            fs::write(&path, &bytes).unwrap();
            let (records, damage) = Found::check_file(&path).unwrap();
            assert_eq!(records, 0);
            assert!(bytes.is_empty() || !damage.is_empty());
        }
        let segments = Segments::open(dir.path()).unwrap();
        let read = segments.read(TargetNum(1), &id("a"), 0, u64::MAX).unwrap();
        assert!(read.rounds.is_empty());
    }

    #[test]
    fn retention_deletes_whole_hours_once_no_round_in_them_is_young() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        fill(&mut segments, 150);
        assert_eq!(segments.files().unwrap().len(), 3);
        // A file goes once its whole hour is older than the cutoff.
        assert_eq!(segments.remove_before(T0 + HOUR_MS - 1).unwrap(), 0);
        assert_eq!(segments.remove_before(T0 + HOUR_MS).unwrap(), 1);
        let left = segments.read(TargetNum(1), &id("a"), 0, u64::MAX).unwrap();
        assert_eq!(
            left.rounds.first().map(|r| r.seq),
            Some(3_600),
            "from the second hour on"
        );
        // Appending after a deletion opens the current hour's file again.
        let more = rounds(&id("a"), 9_000, 60);
        segments
            .append(&[Pending {
                target: TargetNum(1),
                rounds: &more,
            }])
            .unwrap();
    }

    #[test]
    fn a_late_round_of_an_old_hour_is_written_while_newer_hours_are_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        for hour in 0..4u64 {
            let these = rounds(&id("a"), hour * 3_600, 10);
            segments
                .append(&[Pending {
                    target: TargetNum(1),
                    rounds: &these,
                }])
                .unwrap();
        }
        // Hour 0's file was closed for the newer three; a late round of it
        // goes to a new file of hour 0, not nowhere.
        let late = rounds(&id("a"), 100, 1);
        let written = segments
            .append(&[Pending {
                target: TargetNum(1),
                rounds: &late,
            }])
            .unwrap();
        assert!(written > 0);
        let first = segments
            .read(TargetNum(1), &id("a"), T0, T0 + HOUR_MS)
            .unwrap();
        assert_eq!(seqs(&first), (0..10).chain([100]).collect::<Vec<_>>());
    }

    #[test]
    fn a_flush_across_an_hour_boundary_files_each_round_under_its_hour() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        let a = rounds(&id("a"), 3_570, 60);
        segments
            .append(&[Pending {
                target: TargetNum(1),
                rounds: &a,
            }])
            .unwrap();
        let hours: Vec<u64> = segments.files().unwrap().iter().map(|(h, _)| *h).collect();
        assert_eq!(hours, [T0, T0 + HOUR_MS]);
        let second = segments
            .read(TargetNum(1), &id("a"), T0 + HOUR_MS, u64::MAX)
            .unwrap();
        assert_eq!(seqs(&second), (3_600..3_630).collect::<Vec<_>>());
        let last = segments.last_round(TargetNum(1), &id("a")).unwrap();
        assert_eq!(last.map(|r| r.seq), Some(3_629));
        assert_eq!(segments.last_round(TargetNum(2), &id("b")).unwrap(), None);
    }
}

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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{Read as _, Write};
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
    open: BTreeMap<u64, (File, PathBuf)>,
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

    /// Bytes the files take.
    pub fn size(&self) -> Result<u64, SegmentError> {
        FILES
            .size(&self.dir)
            .map_err(|(path, source)| SegmentError::Read { path, source })
    }

    /// Appends one record per target and hour of the rounds' start, one
    /// write per file, then syncs each file written: when this returns, a
    /// power cut loses none of them.
    pub fn append(&mut self, pending: &[Pending<'_>]) -> Result<u64, SegmentError> {
        let mut by_hour: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for p in pending {
            let mut rest = p.rounds;
            while let Some(first) = rest.first() {
                let hour = hour_of(first.started_at_ms);
                let len = rest
                    .iter()
                    .position(|r| hour_of(r.started_at_ms) != hour)
                    .unwrap_or(rest.len());
                let (these, later) = rest.split_at(len);
                by_hour
                    .entry(hour)
                    .or_default()
                    .extend(encode_record(p.target, these));
                rest = later;
            }
        }
        let mut written = 0;
        for (hour, bytes) in by_hour {
            if !self.open.contains_key(&hour) {
                let file = self.create(hour)?;
                self.open.insert(hour, file);
            }
            // Close the oldest other hour's file: never the one written now
            // (a late round's old hour would otherwise be skipped).
            while self.open.len() > OPEN_FILES {
                let Some(&oldest) = self.open.keys().find(|&&h| h != hour) else {
                    break;
                };
                self.open.remove(&oldest);
            }
            let Some((file, path)) = self.open.get_mut(&hour) else {
                unreachable!("the hour's file was opened above");
            };
            if let Err(source) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
                // A full disk may have taken part of the write: the retry goes
                // to a new file, so the torn bytes end a file nobody appends to.
                let path = path.clone();
                self.open.remove(&hour);
                return Err(SegmentError::Write { path, source });
            }
            written += bytes.len() as u64;
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
    /// their start.
    pub fn read(
        &self,
        target: TargetNum,
        id: &TargetId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Found, SegmentError> {
        let mut found =
            self.read_many(from_ms, to_ms, |num| (num == target).then(|| id.clone()))?;
        let mut read = Found {
            rounds: found.rounds.remove(&target).unwrap_or_default(),
            damage: found.damage,
        };
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
        scan(&bytes, path, damage, each);
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

/// Walks the records of one file, calling `each` with every record whose CRC
/// matches; damage (including what `each` reports) goes to `damage`.
fn scan(
    bytes: &[u8],
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
                    if let Some(found) = each(at as u64, &header, &rest[HEADER_LEN..end]) {
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
                    offset: at as u64,
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
        scan(&bytes, path, &mut damage, |_, _, _| {
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

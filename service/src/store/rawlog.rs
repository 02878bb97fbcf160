//! The per-probe raw log: one JSON line per probe (JSONL), appended to a file
//! that is rolled over when it would pass `max_bytes`, keeping `keep` old
//! files (`log.1` newest … `log.N` oldest). Disk use is bounded by
//! `(keep + 1) × max_bytes`.
//!
//! Lines go through a buffer: call [`RawLog::flush`] on the store's flush
//! cadence (dropping the writer flushes too), so the log adds no small writes
//! of its own to the flash.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::model::{RoundRecord, TargetId};
use crate::probe::{Rtt, TimestampSource};

#[derive(Debug, thiserror::Error)]
pub enum RawLogError {
    #[error("raw log {path}: max_bytes must be at least 1")]
    ZeroLimit { path: PathBuf },
    #[error("cannot open raw log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write raw log {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot roll raw log {from} over to {to}: {source}")]
    Rotate {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
}

/// One line of the log: one probe of one round.
#[derive(Debug, Serialize)]
struct ProbeLine<'a> {
    target: &'a TargetId,
    seq: u64,
    /// Round start, Unix milliseconds.
    t_ms: u64,
    ttl: u8,
    responder: Option<IpAddr>,
    rtt_ns: Option<u64>,
    reached: bool,
    source: TimestampSource,
}

/// A size-capped JSONL log with rollover.
pub struct RawLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: BufWriter<File>,
    /// Bytes in the current file, buffered ones included.
    size: u64,
    line: Vec<u8>,
}

impl RawLog {
    /// Opens (appending to) the log at `path`.
    pub fn open(
        path: impl AsRef<Path>,
        max_bytes: u64,
        keep: usize,
    ) -> Result<RawLog, RawLogError> {
        let path = path.as_ref().to_path_buf();
        if max_bytes == 0 {
            return Err(RawLogError::ZeroLimit { path });
        }
        let (file, size) = open_append(&path)?;
        Ok(RawLog {
            path,
            max_bytes,
            keep,
            file: BufWriter::new(file),
            size,
            line: Vec::with_capacity(256),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the `n`th rolled-over file (1 is the newest).
    pub fn rotated_path(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Appends one line per probe of `round`.
    pub fn write_round(&mut self, round: &RoundRecord) -> Result<(), RawLogError> {
        for hop in &round.hops {
            self.line.clear();
            let line = ProbeLine {
                target: &round.target,
                seq: round.seq,
                t_ms: round.started_at_ms,
                ttl: hop.ttl.get(),
                responder: hop.responder(),
                rtt_ns: hop.rtt().map(Rtt::as_nanos),
                reached: hop.reached(),
                source: round.source,
            };
            serde_json::to_writer(&mut self.line, &line).map_err(|e| self.write_err(e.into()))?;
            self.line.push(b'\n');
            let len = self.line.len() as u64;
            if self.size > 0 && self.size + len > self.max_bytes {
                self.rotate()?;
            }
            self.file
                .write_all(&self.line)
                .map_err(|e| self.write_err(e))?;
            self.size += len;
        }
        Ok(())
    }

    /// Writes buffered lines to the file.
    pub fn flush(&mut self) -> Result<(), RawLogError> {
        self.file.flush().map_err(|e| self.write_err(e))
    }

    fn write_err(&self, source: std::io::Error) -> RawLogError {
        RawLogError::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// Shifts `log.i` to `log.i+1` (dropping the oldest) and starts a new `log`.
    fn rotate(&mut self) -> Result<(), RawLogError> {
        self.flush()?;
        if self.keep == 0 {
            let file = File::create(&self.path).map_err(|source| RawLogError::Open {
                path: self.path.clone(),
                source,
            })?;
            self.file = BufWriter::new(file);
            self.size = 0;
            return Ok(());
        }
        let oldest = self.rotated_path(self.keep);
        match fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RawLogError::Rotate {
                    from: oldest.clone(),
                    to: oldest,
                    source,
                })
            }
        }
        for n in (1..self.keep).rev() {
            let from = self.rotated_path(n);
            if from.exists() {
                let to = self.rotated_path(n + 1);
                fs::rename(&from, &to).map_err(|source| RawLogError::Rotate {
                    from,
                    to,
                    source,
                })?;
            }
        }
        let to = self.rotated_path(1);
        fs::rename(&self.path, &to).map_err(|source| RawLogError::Rotate {
            from: self.path.clone(),
            to,
            source,
        })?;
        let (file, size) = open_append(&self.path)?;
        self.file = BufWriter::new(file);
        self.size = size;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<(File, u64), RawLogError> {
    let open_err = |source| RawLogError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    Ok((file, size))
}

impl Drop for RawLog {
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "raw log not flushed on close");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HopSample;
    use crate::probe::Ttl;

    fn round(seq: u64) -> RoundRecord {
        RoundRecord {
            target: TargetId::new("edge").unwrap(),
            seq,
            started_at_ms: 1_000 + seq,
            hops: (1..=3)
                .map(|ttl| {
                    let rtt_ns = (ttl != 2).then_some(1_000 * ttl as u64);
                    HopSample::answered_or_lost(
                        ttl,
                        IpAddr::from([10, 0, 0, ttl]),
                        rtt_ns,
                        ttl == 3,
                    )
                })
                .collect(),
            destination_ttl: Ttl::new(3),
            source: TimestampSource::Ebpf,
        }
    }

    #[test]
    fn one_json_line_per_probe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probes.jsonl");
        let mut log = RawLog::open(&path, 1 << 20, 2).unwrap();
        log.write_round(&round(7)).unwrap();
        log.flush().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["target"], "edge");
        assert_eq!(lines[0]["seq"], 7);
        assert_eq!(lines[0]["responder"], "10.0.0.1");
        assert_eq!(lines[1]["rtt_ns"], serde_json::Value::Null);
        assert_eq!(lines[2]["reached"], true);
        assert_eq!(lines[2]["source"], "ebpf");
    }

    #[test]
    fn the_line_format_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probes.jsonl");
        let mut log = RawLog::open(&path, 1 << 20, 2).unwrap();
        log.write_round(&round(7)).unwrap();
        log.flush().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"target":"edge","seq":7,"t_ms":1007,"ttl":1,"responder":"10.0.0.1","rtt_ns":1000,"reached":false,"source":"ebpf"}"#,
                "\n",
                r#"{"target":"edge","seq":7,"t_ms":1007,"ttl":2,"responder":null,"rtt_ns":null,"reached":false,"source":"ebpf"}"#,
                "\n",
                r#"{"target":"edge","seq":7,"t_ms":1007,"ttl":3,"responder":"10.0.0.3","rtt_ns":3000,"reached":true,"source":"ebpf"}"#,
                "\n",
            )
        );
    }

    #[test]
    fn rolls_over_at_the_cap_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probes.jsonl");
        let max = 1_000;
        let mut log = RawLog::open(&path, max, 2).unwrap();
        for seq in 0..100 {
            log.write_round(&round(seq)).unwrap();
        }
        log.flush().unwrap();
        let files: Vec<PathBuf> = [path.clone(), log.rotated_path(1), log.rotated_path(2)].into();
        for f in &files {
            let len = fs::metadata(f).unwrap().len();
            assert!(len > 0 && len <= max, "{} is {len} bytes", f.display());
        }
        assert!(!log.rotated_path(3).exists(), "only 2 old files are kept");
        // Newest lines are in the current file, older ones in .1, then .2,
        // and every line is whole.
        let last_seq = |p: &Path| -> u64 {
            let text = fs::read_to_string(p).unwrap();
            let last: serde_json::Value =
                serde_json::from_str(text.lines().last().unwrap()).unwrap();
            last["seq"].as_u64().unwrap()
        };
        assert_eq!(last_seq(&path), 99);
        assert!(last_seq(&files[1]) < 99 && last_seq(&files[2]) < last_seq(&files[1]));

        // Reopening appends to the current file and respects its size.
        drop(log);
        let before = fs::metadata(&path).unwrap().len();
        let mut log = RawLog::open(&path, max, 2).unwrap();
        log.write_round(&round(100)).unwrap();
        log.flush().unwrap();
        let after = fs::metadata(&path).unwrap().len();
        assert!(after <= max);
        assert_ne!(after, before, "the line went into the current file");
        assert_eq!(last_seq(&path), 100);
    }

    #[test]
    fn a_zero_cap_is_refused_with_the_path() {
        let err = RawLog::open("/tmp/x.jsonl", 0, 1).err().unwrap();
        assert!(err.to_string().contains("/tmp/x.jsonl"));
    }
}

//! Opening sled: the tree names, the schema version check in the `meta` tree,
//! and the `targets` tree that maps target (and peer) names to compact numbers.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::model::TargetId;
use crate::store::error::StoreError;
use crate::store::keys::TargetNum;
use crate::store::peers::PEER_KEY_PREFIX;

/// The layout this release reads and writes (key layouts in `keys`, value
/// formats in `codec`, histogram configuration in `rollup`). Any change to
/// those bumps it.
pub const SCHEMA_VERSION: u32 = 1;

const VERSION_KEY: &[u8] = b"schema_version";

pub const META: &str = "meta";
pub const TARGETS: &str = "targets";
pub const RAW: &str = "raw";
pub const MINUTES: &str = "m1";
pub const HOURS: &str = "h1";
pub const EVENTS: &str = "events";

/// The open database and its typed trees. Only the store module holds these.
pub struct Trees {
    pub db: sled::Db,
    pub targets: sled::Tree,
    pub raw: sled::Tree,
    pub minutes: sled::Tree,
    pub hours: sled::Tree,
    pub events: sled::Tree,
}

impl Trees {
    /// Opens (or initialises) the store at `path` and checks its schema version.
    pub fn open(
        path: &Path,
        cache_capacity_bytes: u64,
        reclaim_interval: Duration,
    ) -> Result<Trees, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let config = sled_config(path, cache_capacity_bytes).flush_every_ms(Some(
            reclaim_interval.as_millis().clamp(1, u64::MAX as u128) as u64,
        ));
        let db = open_waiting_for_lock(&config).map_err(open_err)?;
        let meta = db.open_tree(META).map_err(open_err)?;
        check_schema(path, &db, &meta)?;
        Ok(Trees {
            targets: db.open_tree(TARGETS).map_err(open_err)?,
            raw: db.open_tree(RAW).map_err(open_err)?,
            minutes: db.open_tree(MINUTES).map_err(open_err)?,
            hours: db.open_tree(HOURS).map_err(open_err)?,
            events: db.open_tree(EVENTS).map_err(open_err)?,
            db,
        })
    }
}

/// How long opening waits for sled's file lock. sled 0.34 releases a dropped
/// database's lock only when its I/O threads let go of it, a moment after the
/// drop, so reopening in the same process (after a write error, or a restart
/// of the store) must wait a little. Another process holding the store still
/// fails, after this long.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Opens sled, waiting up to [`LOCK_WAIT`] for a dropped handle's lock.
pub fn open_waiting_for_lock(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if is_lock_error(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// sled reports its lock only as an `Other` I/O error with this text.
fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Other && e.to_string().contains("could not acquire lock")
}

/// sled's settings for a store, without its background thread (tools and
/// tests that only read or write a little). Compression is part of the
/// on-disk format (sled refuses to reopen with a different setting).
///
/// The store itself runs sled's background thread (`Trees::open`) because
/// sled 0.34 reclaims disk space only there: the thread relocates the live
/// pages of mostly-empty segments so the segments can be reused. Without it
/// a swept store never shrinks and grows by everything ever written
/// (measured: 14.5 MiB a day for one 10-hop target, forever). Its period is
/// the store's `reclaim_interval`, not sled's default 500 ms: the store
/// writes to sled only at its own flushes, so all the thread writes between
/// them are the relocated pages, and flash sees no extra small flushes.
pub fn sled_config(path: &Path, cache_capacity_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity_bytes)
        .flush_every_ms(None)
        // zstd on sled's pages halves the bytes written to flash (measured:
        // 4.9 → 2.6 MiB per 10-hop target and hour) for little CPU.
        .use_compression(true)
        .mode(sled::Mode::LowSpace)
}

fn check_schema(path: &Path, db: &sled::Db, meta: &sled::Tree) -> Result<(), StoreError> {
    let sled_err = |op, source| StoreError::Sled {
        path: path.to_path_buf(),
        op,
        source,
    };
    match meta
        .get(VERSION_KEY)
        .map_err(|e| sled_err("read schema version", e))?
    {
        Some(bytes) => {
            let found = <[u8; 4]>::try_from(bytes.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::SchemaMalformed {
                    path: path.to_path_buf(),
                    bytes: bytes.to_vec(),
                })?;
            match found {
                SCHEMA_VERSION => Ok(()),
                newer if newer > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
                    path: path.to_path_buf(),
                    found: newer,
                    supported: SCHEMA_VERSION,
                }),
                older => Err(StoreError::SchemaUnsupported {
                    path: path.to_path_buf(),
                    found: older,
                    supported: SCHEMA_VERSION,
                }),
            }
        }
        None => {
            // A fresh directory: initialise it. Data without a version is not
            // ours (or is damaged): refuse rather than guess.
            for name in db.tree_names() {
                let tree = db
                    .open_tree(&name)
                    .map_err(|e| sled_err("inspect trees", e))?;
                if !tree.is_empty() {
                    return Err(StoreError::SchemaMissing {
                        path: path.to_path_buf(),
                    });
                }
            }
            meta.insert(VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())
                .map_err(|e| sled_err("write schema version", e))?;
            db.flush()
                .map_err(|e| sled_err("flush schema version", e))?;
            Ok(())
        }
    }
}

/// Overwrites the stored schema version; only for tests of the refusal path.
#[cfg(test)]
pub fn force_schema_version(path: &Path, version: u32) {
    let db = open_waiting_for_lock(&sled_config(path, 1 << 20)).unwrap();
    db.open_tree(META)
        .unwrap()
        .insert(VERSION_KEY, &version.to_be_bytes())
        .unwrap();
    db.flush().unwrap();
}

/// Target names ⇄ numbers, loaded from the `targets` tree at open. Numbers
/// are allocated in order and never reused, so keys stay valid forever.
/// Peers draw from the same numbers (named `peer:NAME`, see `store::peers`).
#[derive(Debug, Default)]
pub struct TargetMap {
    by_name: HashMap<TargetId, TargetNum>,
    by_num: HashMap<TargetNum, TargetId>,
    peers: HashMap<TargetId, TargetNum>,
    peer_nums: HashSet<TargetNum>,
    next: u32,
}

impl TargetMap {
    pub fn load(path: &Path, tree: &sled::Tree) -> Result<TargetMap, StoreError> {
        let mut map = TargetMap::default();
        for item in tree.iter() {
            let (key, value) = item.map_err(|source| StoreError::Sled {
                path: path.to_path_buf(),
                op: "read targets",
                source,
            })?;
            let malformed = || StoreError::MalformedKey {
                path: PathBuf::from(path),
                tree: TARGETS,
                key: key.to_vec(),
            };
            let name = std::str::from_utf8(&key).map_err(|_| malformed())?;
            let (peer, name) = match name.strip_prefix(PEER_KEY_PREFIX) {
                Some(peer) => (true, peer),
                None => (false, name),
            };
            let id = if peer {
                TargetId::new(name)
            } else {
                // A target's own name, or one of its ECMP branches' series.
                TargetId::from_stored(name)
            }
            .map_err(|_| malformed())?;
            let num = match <[u8; 4]>::try_from(value.as_ref()) {
                Ok(bytes) => TargetNum(u32::from_be_bytes(bytes)),
                Err(_) => return Err(malformed()),
            };
            if peer {
                map.insert_peer(id, num);
            } else {
                map.insert(id, num);
            }
        }
        Ok(map)
    }

    fn insert(&mut self, id: TargetId, num: TargetNum) {
        self.next = self.next.max(num.0.saturating_add(1));
        self.by_num.insert(num, id.clone());
        self.by_name.insert(id, num);
    }

    fn insert_peer(&mut self, id: TargetId, num: TargetNum) {
        self.next = self.next.max(num.0.saturating_add(1));
        self.peer_nums.insert(num);
        self.peers.insert(id, num);
    }

    pub fn get_peer(&self, id: &TargetId) -> Option<TargetNum> {
        self.peers.get(id).copied()
    }

    pub fn is_peer(&self, num: TargetNum) -> bool {
        self.peer_nums.contains(&num)
    }

    /// Allocates the next number for a new peer; `None` once all are used.
    pub fn allocate_peer(&mut self, id: &TargetId) -> Option<TargetNum> {
        if self.next == u32::MAX {
            return None;
        }
        let num = TargetNum(self.next);
        self.insert_peer(id.clone(), num);
        Some(num)
    }

    pub fn get(&self, id: &TargetId) -> Option<TargetNum> {
        self.by_name.get(id).copied()
    }

    pub fn name(&self, num: TargetNum) -> Option<&TargetId> {
        self.by_num.get(&num)
    }

    /// Allocates the next number for a new target; `None` once all are used.
    pub fn allocate(&mut self, id: &TargetId) -> Option<TargetNum> {
        if self.next == u32::MAX {
            return None;
        }
        let num = TargetNum(self.next);
        self.insert(id.clone(), num);
        Some(num)
    }

    /// Every number in use, targets' and peers'.
    pub fn nums(&self) -> impl Iterator<Item = TargetNum> + '_ {
        self.by_num.keys().chain(self.peer_nums.iter()).copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &TargetId> + '_ {
        self.by_name.keys()
    }
}

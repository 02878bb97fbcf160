//! The store's error type: every variant names the store's path and what was
//! being done, so a log line alone says where to look.

use std::path::PathBuf;

use crate::store::codec::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error(
        "the store at {path} has schema version {found}, but this hopwatch reads version \
         {supported}; it was written by a newer hopwatch (upgrade, or point the store at \
         another directory)"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "the store at {path} has schema version {found}, which this hopwatch (version \
         {supported}) cannot read"
    )]
    SchemaUnsupported {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("the store at {path} has data but no schema version; refusing to guess its layout")]
    SchemaMissing { path: PathBuf },
    #[error("the store at {path} has a malformed schema version value {bytes:02x?}")]
    SchemaMalformed { path: PathBuf, bytes: Vec<u8> },
    #[error("the store at {path} has a malformed entry in tree {tree}, key {key:02x?}")]
    MalformedKey {
        path: PathBuf,
        tree: &'static str,
        key: Vec<u8>,
    },
    #[error("the store at {path}: cannot decode tree {tree}, key {key:02x?}: {source}")]
    Decode {
        path: PathBuf,
        tree: &'static str,
        key: Vec<u8>,
        source: DecodeError,
    },
    #[error(
        "the store at {path}: rollup in tree {tree}, key {key:02x?} has a bad histogram: {source}"
    )]
    Histogram {
        path: PathBuf,
        tree: &'static str,
        key: Vec<u8>,
        source: histogram::Error,
    },
    #[error("the store at {path}: {op} failed: {source}")]
    Sled {
        path: PathBuf,
        op: &'static str,
        source: sled::Error,
    },
    #[error("the store at {path} is closed after a write error and has not reopened yet")]
    Unavailable { path: PathBuf },
    #[error("the store at {path} has no room for more targets (2^32 allocated)")]
    TargetsExhausted { path: PathBuf },
    #[error("invalid time range: from {from_ms} ms is after to {to_ms} ms")]
    InvalidRange { from_ms: u64, to_ms: u64 },
    #[error("invalid hop: TTL 0 does not exist (use the destination)")]
    InvalidTtl,
    #[error(transparent)]
    Segment(#[from] crate::store::segment::SegmentError),
    #[error(transparent)]
    RollupFile(#[from] crate::store::rollup_files::RollupFileError),
    #[error("cannot start the store flusher thread for {path}: {source}")]
    SpawnFlusher {
        path: PathBuf,
        source: std::io::Error,
    },
}

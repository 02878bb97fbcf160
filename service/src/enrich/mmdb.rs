//! What the ASN and city databases share: a MaxMind-format file read into
//! memory once at startup (a lookup is then a tree walk, no I/O and no
//! packets), special-purpose addresses never looked up ([`super::special`]),
//! and one outcome type.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{MaxMindDbError, Reader};

use super::error::EnrichError;
use super::special;

/// The outcome of one lookup in a database of `T` records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbLookup<T> {
    /// The address is in a network the database has a record for.
    Found(T),
    /// A public address the database has no record for.
    NotInDatabase,
    /// Not looked up: the address is special-purpose (private, loopback,
    /// documentation, ...); the reason names the block.
    Skipped(&'static str),
    /// The database entry could not be decoded (a corrupt data section).
    Error(String),
}

/// An opened database file.
pub struct Mmdb {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
}

impl std::fmt::Debug for Mmdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mmdb")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

impl Mmdb {
    /// Reads and checks the database at `path`. A missing file and a corrupt
    /// one are different errors (`read_err`, `invalid_err`), both naming the
    /// path; `what` names the database in the log.
    pub fn open(
        path: &Path,
        what: &str,
        read_err: impl FnOnce(PathBuf, std::io::Error) -> EnrichError,
        invalid_err: impl FnOnce(PathBuf, MaxMindDbError) -> EnrichError,
    ) -> Result<Mmdb, EnrichError> {
        // Read the file ourselves so a missing file is an io::Error with its
        // kind, not folded into the reader's own error type.
        let bytes = std::fs::read(path).map_err(|source| read_err(path.to_owned(), source))?;
        let reader =
            Reader::from_source(bytes).map_err(|source| invalid_err(path.to_owned(), source))?;
        let meta = reader.metadata();
        tracing::info!(
            path = %path.display(),
            database_type = %meta.database_type,
            build_epoch = meta.build_epoch,
            ip_version = meta.ip_version,
            "opened {what} database"
        );
        Ok(Mmdb {
            reader,
            path: path.to_owned(),
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database's own type name (`GeoLite2-ASN`, `GeoLite2-City`, ...).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Looks `ip` up through `decode` (which turns the entry into a record,
    /// `None` when it says nothing useful); special-purpose addresses are
    /// skipped without a lookup.
    pub fn lookup<T>(
        &self,
        ip: IpAddr,
        decode: impl FnOnce(&Reader<Vec<u8>>, IpAddr) -> Result<Option<T>, MaxMindDbError>,
    ) -> DbLookup<T> {
        if let Some(why) = special::special_purpose(ip) {
            return DbLookup::Skipped(why);
        }
        match decode(&self.reader, ip) {
            Ok(Some(record)) => DbLookup::Found(record),
            Ok(None) => DbLookup::NotInDatabase,
            Err(e) => DbLookup::Error(e.to_string()),
        }
    }
}

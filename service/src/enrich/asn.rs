//! ASN and organisation of public responders, from a local MaxMind-format
//! database (GeoLite2-ASN.mmdb, or any database with the same
//! `autonomous_system_number` / `autonomous_system_organization` fields).
//!
//! The file is read into memory once at startup; a lookup is a tree walk, no
//! I/O and no packets. Only public addresses are looked up ([`super::special`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{geoip2, MaxMindDbError, Reader};

use super::error::EnrichError;
use super::special;

/// What the database says about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsnRecord {
    /// The autonomous system number.
    pub asn: Option<u32>,
    /// The organisation the AS is registered to.
    pub org: Option<String>,
}

/// The outcome of one lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AsnLookup {
    /// The address is in a network the database knows.
    Found(AsnRecord),
    /// A public address the database has no network for.
    NotInDatabase,
    /// Not looked up: the address is special-purpose (private, loopback,
    /// documentation, ...); the reason names the block.
    Skipped(&'static str),
    /// The database entry could not be decoded (a corrupt data section).
    Error(String),
}

/// An opened ASN database.
pub struct AsnDatabase {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
}

impl std::fmt::Debug for AsnDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsnDatabase")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

impl AsnDatabase {
    /// Reads and checks the database at `path`. A missing file and a corrupt
    /// one are different errors, both naming the path.
    pub fn open(path: &Path) -> Result<AsnDatabase, EnrichError> {
        // Read the file ourselves so a missing file is an io::Error with its kind,
        // not folded into the reader's own error type.
        let bytes = std::fs::read(path).map_err(|source| EnrichError::AsnDatabaseRead {
            path: path.to_owned(),
            source,
        })?;
        let reader =
            Reader::from_source(bytes).map_err(|source| EnrichError::AsnDatabaseInvalid {
                path: path.to_owned(),
                source,
            })?;
        let meta = reader.metadata();
        tracing::info!(
            path = %path.display(),
            database_type = %meta.database_type,
            build_epoch = meta.build_epoch,
            ip_version = meta.ip_version,
            "opened ASN database"
        );
        Ok(AsnDatabase {
            reader,
            path: path.to_owned(),
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database's own type name (`GeoLite2-ASN` for MaxMind's).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Looks `ip` up; special-purpose addresses are skipped without a lookup.
    pub fn lookup(&self, ip: IpAddr) -> AsnLookup {
        if let Some(why) = special::special_purpose(ip) {
            return AsnLookup::Skipped(why);
        }
        match self.decode(ip) {
            Ok(Some(record)) => AsnLookup::Found(record),
            Ok(None) => AsnLookup::NotInDatabase,
            Err(e) => AsnLookup::Error(e.to_string()),
        }
    }

    fn decode(&self, ip: IpAddr) -> Result<Option<AsnRecord>, MaxMindDbError> {
        let Some(asn) = self.reader.lookup(ip)?.decode::<geoip2::Asn<'_>>()? else {
            return Ok(None);
        };
        let record = AsnRecord {
            asn: asn.autonomous_system_number,
            org: asn.autonomous_system_organization.map(str::to_owned),
        };
        // A record with neither field (another database type's entry) tells nothing.
        Ok((record.asn.is_some() || record.org.is_some()).then_some(record))
    }
}

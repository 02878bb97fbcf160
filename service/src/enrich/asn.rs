//! ASN and organisation of public responders, from a local MaxMind-format
//! database (GeoLite2-ASN.mmdb, or any database with the same
//! `autonomous_system_number` / `autonomous_system_organization` fields).
//!
//! The file is read into memory once at startup; a lookup is a tree walk, no
//! I/O and no packets. Only public addresses are looked up ([`super::special`]).

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{geoip2, MaxMindDbError, Reader};

use super::error::EnrichError;
use super::mmdb::{DbLookup, Mmdb};

/// What the database says about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsnRecord {
    /// The autonomous system number.
    pub asn: Option<u32>,
    /// The organisation the AS is registered to.
    pub org: Option<String>,
}

/// The outcome of one lookup.
pub type AsnLookup = DbLookup<AsnRecord>;

/// An opened ASN database.
#[derive(Debug)]
pub struct AsnDatabase {
    db: Mmdb,
}

impl AsnDatabase {
    /// Reads and checks the database at `path`. A missing file and a corrupt
    /// one are different errors, both naming the path.
    pub fn open(path: &Path) -> Result<AsnDatabase, EnrichError> {
        let db = Mmdb::open(
            path,
            "ASN",
            |path, source| EnrichError::AsnDatabaseRead { path, source },
            |path, source| EnrichError::AsnDatabaseInvalid { path, source },
        )?;
        Ok(AsnDatabase { db })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// The database's own type name (`GeoLite2-ASN` for MaxMind's).
    pub fn database_type(&self) -> &str {
        self.db.database_type()
    }

    /// Looks `ip` up; special-purpose addresses are skipped without a lookup.
    pub fn lookup(&self, ip: IpAddr) -> AsnLookup {
        self.db.lookup(ip, Self::decode)
    }

    fn decode(reader: &Reader<Vec<u8>>, ip: IpAddr) -> Result<Option<AsnRecord>, MaxMindDbError> {
        let Some(asn) = reader.lookup(ip)?.decode::<geoip2::Asn<'_>>()? else {
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

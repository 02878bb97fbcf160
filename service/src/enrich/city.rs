//! Where public responders are, from a local MaxMind-format city database
//! (GeoLite2-City.mmdb, or any database with the same `location`, `city` and
//! `country` fields), for the target page's map.
//!
//! Like the ASN database, the file is read into memory once at startup; a
//! lookup is a tree walk, no I/O and no packets. Only public addresses are
//! looked up ([`super::special`]): a private hop has no place on a map, and
//! guessing one would mislead.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{geoip2, MaxMindDbError, Reader};

use super::error::EnrichError;
use super::special;

/// Where the database puts one address.
#[derive(Clone, Debug, PartialEq)]
pub struct GeoRecord {
    /// Degrees north, WGS 84.
    pub latitude: f64,
    /// Degrees east, WGS 84.
    pub longitude: f64,
    /// The city's English name, when the database knows the city.
    pub city: Option<String>,
    /// The country's English name (its ISO 3166-1 code when the database has no name).
    pub country: Option<String>,
}

/// The outcome of one lookup.
#[derive(Clone, Debug, PartialEq)]
pub enum GeoLookup {
    /// The address is in a network the database places.
    Found(GeoRecord),
    /// A public address the database has no position for (no network, or a
    /// network without coordinates).
    NotInDatabase,
    /// Not looked up: the address is special-purpose (private, loopback,
    /// documentation, ...); the reason names the block.
    Skipped(&'static str),
    /// The database entry could not be decoded (a corrupt data section).
    Error(String),
}

/// An opened city database.
pub struct CityDatabase {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
}

impl std::fmt::Debug for CityDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CityDatabase")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

impl CityDatabase {
    /// Reads and checks the database at `path`. A missing file and a corrupt
    /// one are different errors, both naming the path and the config key.
    pub fn open(path: &Path) -> Result<CityDatabase, EnrichError> {
        let bytes = std::fs::read(path).map_err(|source| EnrichError::CityDatabaseRead {
            path: path.to_owned(),
            source,
        })?;
        let reader =
            Reader::from_source(bytes).map_err(|source| EnrichError::CityDatabaseInvalid {
                path: path.to_owned(),
                source,
            })?;
        let meta = reader.metadata();
        tracing::info!(
            path = %path.display(),
            database_type = %meta.database_type,
            build_epoch = meta.build_epoch,
            ip_version = meta.ip_version,
            "opened city database"
        );
        Ok(CityDatabase {
            reader,
            path: path.to_owned(),
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database's own type name (`GeoLite2-City` for MaxMind's).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Looks `ip` up; special-purpose addresses are skipped without a lookup.
    pub fn lookup(&self, ip: IpAddr) -> GeoLookup {
        if let Some(why) = special::special_purpose(ip) {
            return GeoLookup::Skipped(why);
        }
        match self.decode(ip) {
            Ok(Some(record)) => GeoLookup::Found(record),
            Ok(None) => GeoLookup::NotInDatabase,
            Err(e) => GeoLookup::Error(e.to_string()),
        }
    }

    fn decode(&self, ip: IpAddr) -> Result<Option<GeoRecord>, MaxMindDbError> {
        let Some(entry) = self.reader.lookup(ip)?.decode::<geoip2::City<'_>>()? else {
            return Ok(None);
        };
        // A country alone has no point on a map worth drawing a path through.
        let (Some(latitude), Some(longitude)) = (entry.location.latitude, entry.location.longitude)
        else {
            return Ok(None);
        };
        let valid = (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude);
        if !valid {
            return Err(MaxMindDbError::invalid_database(format!(
                "coordinates out of range: latitude {latitude}, longitude {longitude}"
            )));
        }
        Ok(Some(GeoRecord {
            latitude,
            longitude,
            city: entry.city.names.english.map(str::to_owned),
            country: entry
                .country
                .names
                .english
                .or(entry.country.iso_code)
                .map(str::to_owned),
        }))
    }
}

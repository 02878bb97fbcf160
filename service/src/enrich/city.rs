//! Where public responders are, from a local MaxMind-format city database
//! (GeoLite2-City.mmdb, or any database with the same `location`, `city` and
//! `country` fields), for the target page's map.
//!
//! Like the ASN database, the file is read into memory once at startup; a
//! lookup is a tree walk, no I/O and no packets. Only public addresses are
//! looked up ([`super::special`]): a private hop has no place on a map, and
//! guessing one would mislead.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{geoip2, MaxMindDbError, Reader};

use super::error::EnrichError;
use super::mmdb::{DbLookup, Mmdb};

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

/// The outcome of one lookup (`NotInDatabase` also for a network without
/// coordinates).
pub type GeoLookup = DbLookup<GeoRecord>;

/// An opened city database.
#[derive(Debug)]
pub struct CityDatabase {
    db: Mmdb,
}

impl CityDatabase {
    /// Reads and checks the database at `path`. A missing file and a corrupt
    /// one are different errors, both naming the path and the config key.
    pub fn open(path: &Path) -> Result<CityDatabase, EnrichError> {
        let db = Mmdb::open(
            path,
            "city",
            |path, source| EnrichError::CityDatabaseRead { path, source },
            |path, source| EnrichError::CityDatabaseInvalid { path, source },
        )?;
        Ok(CityDatabase { db })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// The database's own type name (`GeoLite2-City` for MaxMind's).
    pub fn database_type(&self) -> &str {
        self.db.database_type()
    }

    /// Looks `ip` up; special-purpose addresses are skipped without a lookup.
    pub fn lookup(&self, ip: IpAddr) -> GeoLookup {
        self.db.lookup(ip, Self::decode)
    }

    fn decode(reader: &Reader<Vec<u8>>, ip: IpAddr) -> Result<Option<GeoRecord>, MaxMindDbError> {
        let Some(entry) = reader.lookup(ip)?.decode::<geoip2::City<'_>>()? else {
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

//! Positions for the map from a MaxMind-format city database that the test
//! writes itself (mmdb-writer, the GeoLite2-City field names): placed
//! addresses, public addresses the database does not place, special-purpose
//! addresses skipped even when the database covers them (never looked up),
//! and clear errors for a missing or corrupt file that name the path and the
//! config key. File lookups only: no packets.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hopwatch::enrich::{
    AsnStats, EnrichConfig, EnrichError, Enricher, GeoLookup, GeoRecord, ResponderInfo,
};
use ipnet::IpNet;
use mmdb_writer::Writer;
use serde::Serialize;

/// A GeoLite2-City record, as MaxMind names its fields.
#[derive(Serialize, Default)]
struct CityEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<Named>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<Country>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<Location>,
}

#[derive(Serialize)]
struct Named {
    names: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
struct Country {
    iso_code: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    names: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

fn names(en: &'static str) -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([("en", en), ("de", "(deutsch)")])
}

fn entry(
    city: Option<&'static str>,
    country: Option<(&'static str, Option<&'static str>)>,
    at: Option<(f64, f64)>,
) -> CityEntry {
    CityEntry {
        city: city.map(|c| Named { names: names(c) }),
        country: country.map(|(iso_code, name)| Country {
            iso_code,
            names: name.map(names).unwrap_or_default(),
        }),
        location: at.map(|(latitude, longitude)| Location {
            latitude,
            longitude,
            accuracy_radius: 20,
        }),
    }
}

fn write_database(dir: &Path) -> Result<PathBuf> {
    // An IPv6 tree with IPv4 reachable inside it, like GeoLite2-City itself.
    let mut writer = Writer::new("GeoLite2-City");
    let networks: Vec<(&str, CityEntry)> = vec![
        (
            "1.0.0.0/24",
            entry(
                Some("Sydney"),
                Some(("AU", Some("Australia"))),
                Some((-33.8688, 151.2093)),
            ),
        ),
        (
            "2606:4700::/32",
            entry(
                Some("San Francisco"),
                Some(("US", Some("United States"))),
                Some((37.7749, -122.4194)),
            ),
        ),
        // A country-level entry: a position (the country's), no city.
        (
            "8.8.8.0/24",
            entry(None, Some(("US", None)), Some((37.751, -97.822))),
        ),
        // A country without coordinates: nothing to draw.
        (
            "9.9.9.0/24",
            entry(None, Some(("CH", Some("Switzerland"))), None),
        ),
        // A corrupt record: coordinates off the globe.
        (
            "7.7.7.0/24",
            entry(Some("Nowhere"), None, Some((123.0, 10.0))),
        ),
        // Special-purpose networks, there to show they are skipped by address.
        (
            "10.0.0.0/8",
            entry(Some("Private, never looked up"), None, Some((1.0, 1.0))),
        ),
        (
            "192.168.0.0/16",
            entry(Some("Private, never looked up"), None, Some((2.0, 2.0))),
        ),
        (
            "198.18.0.0/15",
            entry(
                Some("Benchmarking, never looked up"),
                None,
                Some((3.0, 3.0)),
            ),
        ),
        (
            "2001:db8::/32",
            entry(
                Some("Documentation, never looked up"),
                None,
                Some((4.0, 4.0)),
            ),
        ),
    ];
    for (net, record) in &networks {
        let net: IpNet = net.parse().with_context(|| format!("network {net}"))?;
        writer
            .insert(net, record)
            .with_context(|| format!("insert {net}"))?;
    }
    let path = dir.join("GeoLite2-City.mmdb");
    std::fs::write(&path, writer.to_bytes()?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

fn city_only(path: &Path) -> EnrichConfig {
    EnrichConfig {
        reverse_dns: false,
        city_database: Some(path.to_owned()),
        ..EnrichConfig::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn found(lat: f64, lon: f64, city: Option<&str>, country: &str) -> Option<GeoLookup> {
    Some(GeoLookup::Found(GeoRecord {
        latitude: lat,
        longitude: lon,
        city: city.map(str::to_owned),
        country: Some(country.to_owned()),
    }))
}

#[test]
fn public_addresses_are_placed_and_special_ones_never_looked_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_database(dir.path())?;
    // No runtime here: with reverse DNS off the enricher needs none.
    let enricher = Enricher::new(city_only(&path))?;
    assert!(enricher.has_city_database());

    let sydney = found(-33.8688, 151.2093, Some("Sydney"), "Australia");
    assert_eq!(enricher.lookup_position(ip("1.0.0.1")), sydney);
    assert_eq!(enricher.lookup_position(ip("1.0.0.255")), sydney);
    // IPv4-mapped IPv6 is the IPv4 address.
    assert_eq!(enricher.lookup_position(ip("::ffff:1.0.0.1")), sydney);
    assert_eq!(
        enricher.lookup_position(ip("2606:4700::1111")),
        found(37.7749, -122.4194, Some("San Francisco"), "United States")
    );
    // No city, and a country known only by its code.
    assert_eq!(
        enricher.lookup_position(ip("8.8.8.8")),
        found(37.751, -97.822, None, "US")
    );
    // A country without coordinates does not place the address.
    assert_eq!(
        enricher.lookup_position(ip("9.9.9.9")),
        Some(GeoLookup::NotInDatabase)
    );
    // Public, but not in the database.
    assert_eq!(
        enricher.lookup_position(ip("1.0.1.1")),
        Some(GeoLookup::NotInDatabase)
    );
    // Coordinates off the globe are an unreadable entry, not a point.
    match enricher.lookup_position(ip("7.7.7.7")) {
        Some(GeoLookup::Error(reason)) => assert!(reason.contains("out of range"), "{reason}"),
        other => panic!("7.7.7.7: {other:?}"),
    }

    // Special-purpose addresses are not looked up, though the database has them.
    for (addr, why) in [
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("198.18.0.2", "benchmarking"),
        ("2001:db8::2", "documentation"),
        ("127.0.0.1", "loopback"),
    ] {
        match enricher.lookup_position(ip(addr)) {
            Some(GeoLookup::Skipped(reason)) => assert!(
                reason.contains(why),
                "{addr}: skipped as {reason:?}, expected {why:?}"
            ),
            other => panic!("{addr} should be skipped as {why}, got {other:?}"),
        }
        assert_eq!(
            enricher.responder_info(ip(addr)),
            ResponderInfo::default(),
            "{addr}"
        );
    }

    // What the hop objects of the API carry.
    let info = enricher.responder_info(ip("1.0.0.1"));
    assert_eq!(
        (
            info.latitude,
            info.longitude,
            info.city.as_deref(),
            info.country.as_deref()
        ),
        (
            Some(-33.8688),
            Some(151.2093),
            Some("Sydney"),
            Some("Australia")
        )
    );
    assert_eq!(
        (info.asn, info.hostname),
        (None, None),
        "no ASN database, no DNS"
    );

    let stats = enricher.stats();
    assert_eq!((stats.dns, stats.asn), (None, None));
    // Found: 5 lookups + 1 responder_info; missed: 2; skipped: 5 twice; errors: 1.
    let want = AsnStats {
        hits: 6,
        misses: 2,
        skipped: 10,
        errors: 1,
    };
    assert_eq!(stats.city, Some(want));
    Ok(())
}

#[test]
fn hop_objects_carry_the_position_and_name_the_block_of_special_addresses() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let enricher = Enricher::new(city_only(&write_database(dir.path())?))?;
    let responder = |addr: &str, enricher: Option<&Enricher>| {
        serde_json::to_value(hopwatch::webapi::convert::responder(
            ip(addr),
            enricher,
            None,
            None,
            None,
        ))
        .expect("json")
    };
    let placed = responder("2606:4700::1", Some(&enricher));
    assert_eq!(placed["latitude"], 37.7749, "{placed}");
    assert_eq!(placed["longitude"], -122.4194, "{placed}");
    assert_eq!(placed["city"], "San Francisco", "{placed}");
    assert_eq!(placed["country"], "United States", "{placed}");
    assert!(placed["special_purpose"].is_null(), "{placed}");
    let private = responder("192.168.1.1", Some(&enricher));
    assert!(
        private["latitude"].is_null() && private["city"].is_null(),
        "{private}"
    );
    assert_eq!(
        private["special_purpose"], "private (RFC 1918)",
        "{private}"
    );
    let unknown = responder("1.0.1.1", Some(&enricher));
    assert!(unknown["latitude"].is_null(), "{unknown}");
    assert!(unknown["special_purpose"].is_null(), "{unknown}");
    // Without a city database nothing is placed.
    let off = responder("1.0.0.1", None);
    assert!(
        off["latitude"].is_null() && off["longitude"].is_null(),
        "{off}"
    );
    Ok(())
}

#[test]
fn a_missing_city_database_is_an_error_naming_the_path_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such-GeoLite2-City.mmdb");
    let err = Enricher::new(city_only(&path)).expect_err("missing file");
    match &err {
        EnrichError::CityDatabaseRead { path: p, source } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected CityDatabaseRead, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&*path.to_string_lossy()) && msg.contains("[enrichment] city_database"),
        "{msg}"
    );
}

#[test]
fn a_corrupt_city_database_is_an_error_naming_the_path_and_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = std::fs::read(write_database(dir.path())?)?;
    let cases: [(&str, Vec<u8>); 3] = [
        ("text.mmdb", b"this is not a MaxMind database\n".to_vec()),
        ("empty.mmdb", Vec::new()),
        // The metadata sits at the end, so the first half of a real file has none.
        ("truncated.mmdb", good[..good.len() / 2].to_vec()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes)?;
        let err = Enricher::new(city_only(&path)).expect_err(name);
        assert!(
            matches!(&err, EnrichError::CityDatabaseInvalid { path: p, .. } if *p == path),
            "{name}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&*path.to_string_lossy())
                && msg.contains("[enrichment] city_database")
                && msg.contains("not a valid MaxMind DB"),
            "{msg}"
        );
    }
    Ok(())
}

#[test]
fn without_a_city_database_nothing_is_placed() -> Result<()> {
    let enricher = Enricher::new(EnrichConfig {
        reverse_dns: false,
        ..EnrichConfig::default()
    })?;
    assert!(!enricher.has_city_database());
    assert_eq!(enricher.lookup_position(ip("1.0.0.1")), None);
    assert_eq!(enricher.stats().city, None);
    Ok(())
}

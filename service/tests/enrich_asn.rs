//! ASN enrichment from a MaxMind-format database that the test writes itself
//! (mmdb-writer, the GeoLite2-ASN field names): lookups, misses,
//! special-purpose addresses skipped even when the database covers them, and
//! clear errors for a missing or corrupt file. File lookups only: no packets.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hopwatch::enrich::{
    AsnLookup, AsnRecord, AsnStats, EnrichConfig, EnrichError, Enricher, ResponderInfo,
};
use ipnet::IpNet;
use mmdb_writer::Writer;
use serde::Serialize;

/// A GeoLite2-ASN record, as MaxMind names its fields.
#[derive(Serialize)]
struct AsnEntry {
    autonomous_system_number: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    autonomous_system_organization: Option<&'static str>,
}

/// Networks in the test database. The special-purpose ones are there to show
/// that the enricher skips them by address, not because the database lacks them.
const NETWORKS: &[(&str, u32, Option<&str>)] = &[
    ("1.0.0.0/24", 13335, Some("Example Org")),
    ("2606:4700::/32", 13335, Some("Example Org")),
    ("8.8.8.0/24", 15169, Some("Another Example")),
    ("9.9.9.0/24", 19281, None),
    (
        "192.0.2.0/24",
        64500,
        Some("Documentation, never looked up"),
    ),
    ("10.0.0.0/8", 64501, Some("Private, never looked up")),
    (
        "198.18.0.0/15",
        64502,
        Some("Benchmarking, never looked up"),
    ),
    (
        "2001:db8::/32",
        64503,
        Some("Documentation, never looked up"),
    ),
];

fn write_database(dir: &Path) -> Result<PathBuf> {
    // An IPv6 tree with IPv4 reachable inside it, like GeoLite2-ASN itself.
    let mut writer = Writer::new("GeoLite2-ASN");
    for &(net, asn, org) in NETWORKS {
        let net: IpNet = net.parse().with_context(|| format!("network {net}"))?;
        let entry = AsnEntry {
            autonomous_system_number: asn,
            autonomous_system_organization: org,
        };
        writer
            .insert(net, &entry)
            .with_context(|| format!("insert {net}"))?;
    }
    let path = dir.join("GeoLite2-ASN.mmdb");
    std::fs::write(&path, writer.to_bytes()?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

fn asn_only(path: &Path) -> EnrichConfig {
    EnrichConfig {
        reverse_dns: false,
        asn_database: Some(path.to_owned()),
        ..EnrichConfig::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn public_addresses_get_their_as_and_others_are_skipped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_database(dir.path())?;
    // No runtime here: with reverse DNS off the enricher needs none.
    let enricher = Enricher::new(asn_only(&path))?;

    let example = |asn: u32, org: &str| ResponderInfo {
        hostname: None,
        asn: Some(asn),
        as_org: Some(org.to_owned()),
        ..ResponderInfo::default()
    };
    assert_eq!(
        enricher.responder_info(ip("1.0.0.1")),
        example(13335, "Example Org")
    );
    assert_eq!(
        enricher.responder_info(ip("1.0.0.255")),
        example(13335, "Example Org")
    );
    assert_eq!(
        enricher.responder_info(ip("2606:4700::1111")),
        example(13335, "Example Org")
    );
    assert_eq!(
        enricher.responder_info(ip("8.8.8.8")),
        example(15169, "Another Example")
    );
    // IPv4-mapped IPv6 is the IPv4 address.
    assert_eq!(
        enricher.responder_info(ip("::ffff:1.0.0.1")),
        example(13335, "Example Org")
    );
    // A record without an organisation.
    assert_eq!(
        enricher.lookup_asn(ip("9.9.9.9")),
        Some(AsnLookup::Found(AsnRecord {
            asn: Some(19281),
            org: None
        }))
    );
    // Public, but not in the database.
    assert_eq!(
        enricher.lookup_asn(ip("1.0.1.1")),
        Some(AsnLookup::NotInDatabase)
    );
    assert_eq!(
        enricher.responder_info(ip("2a00::1")),
        ResponderInfo::default()
    );

    // Special-purpose addresses are not looked up, though the database has them.
    for (addr, why) in [
        ("192.0.2.1", "documentation"),
        ("10.1.2.3", "private"),
        ("198.18.0.2", "benchmarking"),
        ("2001:db8::2", "documentation"),
        ("127.0.0.1", "loopback"),
    ] {
        match enricher.lookup_asn(ip(addr)) {
            Some(AsnLookup::Skipped(reason)) => {
                assert!(
                    reason.contains(why),
                    "{addr}: skipped as {reason:?}, expected {why:?}"
                )
            }
            other => panic!("{addr} should be skipped as {why}, got {other:?}"),
        }
        assert_eq!(
            enricher.responder_info(ip(addr)),
            ResponderInfo::default(),
            "{addr}"
        );
    }

    let stats = enricher.stats();
    assert_eq!(stats.dns, None, "reverse DNS is off");
    // Found: 5 responder_info + 1 lookup_asn; missed: 2; skipped: 5 twice.
    let want = AsnStats {
        hits: 6,
        misses: 2,
        skipped: 10,
        errors: 0,
    };
    assert_eq!(stats.asn, Some(want));
    Ok(())
}

#[test]
fn responder_info_serializes_for_the_web_api() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let enricher = Enricher::new(asn_only(&write_database(dir.path())?))?;
    let json = serde_json::to_value(enricher.responder_info(ip("1.0.0.1")))?;
    assert_eq!(
        json,
        serde_json::json!({
            "hostname": null, "asn": 13335, "as_org": "Example Org",
            // No city database here: no position.
            "latitude": null, "longitude": null, "city": null, "country": null,
        })
    );
    Ok(())
}

#[test]
fn a_missing_database_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such-GeoLite2-ASN.mmdb");
    let err = Enricher::new(asn_only(&path)).expect_err("missing file");
    match &err {
        EnrichError::AsnDatabaseRead { path: p, source } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected AsnDatabaseRead, got {other:?}"),
    }
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
}

#[test]
fn a_corrupt_database_is_an_error_naming_the_path() -> Result<()> {
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
        let err = Enricher::new(asn_only(&path)).expect_err(name);
        assert!(
            matches!(&err, EnrichError::AsnDatabaseInvalid { path: p, .. } if *p == path),
            "{name}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&*path.to_string_lossy()) && msg.contains("not a valid MaxMind DB"),
            "{msg}"
        );
    }
    Ok(())
}

#[test]
fn without_a_database_or_reverse_dns_nothing_is_looked_up() -> Result<()> {
    let enricher = Enricher::new(EnrichConfig {
        reverse_dns: false,
        asn_database: None,
        ..EnrichConfig::default()
    })?;
    assert_eq!(
        enricher.responder_info(ip("1.0.0.1")),
        ResponderInfo::default()
    );
    assert_eq!(enricher.lookup_asn(ip("1.0.0.1")), None);
    assert_eq!(enricher.lookup_cached(ip("1.0.0.1")), None);
    let stats = enricher.stats();
    assert_eq!((stats.dns, stats.asn), (None, None));
    Ok(())
}

#[test]
fn route_history_names_the_as_of_each_address_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let enricher = Enricher::new(asn_only(&write_database(dir.path())?))?;
    // A route change as the store keeps it: the dominant responder per TTL,
    // `null` where none answered.
    let detail = serde_json::json!({
        "before": ["198.18.0.1", "1.0.0.1", null, "8.8.8.8"],
        "after": ["198.18.0.1", "9.9.9.9", "1.0.0.1", "8.8.8.8"],
        "first_changed_ttl": 2,
    });
    let info = hopwatch::webapi::convert::as_info(&detail, Some(&enricher));
    let found: Vec<(IpAddr, Option<u32>, Option<&str>)> = info
        .iter()
        .map(|i| (i.address, i.asn, i.as_org.as_deref()))
        .collect();
    assert_eq!(
        found,
        vec![
            (ip("1.0.0.1"), Some(13335), Some("Example Org")),
            (ip("8.8.8.8"), Some(15169), Some("Another Example")),
            (ip("9.9.9.9"), Some(19281), None),
        ],
        "known addresses once each, in the order they appear; the lab \
         address (special-purpose) and the unanswered TTL left out"
    );
    assert!(hopwatch::webapi::convert::as_info(&detail, None).is_empty());
    // A hop-count change has numbers, not addresses.
    let counts = serde_json::json!({"before": 4, "after": 5});
    assert!(hopwatch::webapi::convert::as_info(&counts, Some(&enricher)).is_empty());
    Ok(())
}

//! Which responder addresses are public: the special-purpose address table that
//! keeps private, loopback, documentation, benchmarking and other non-global
//! addresses out of the ASN database.
//!
//! The table follows the IANA IPv4 and IPv6 Special-Purpose Address Registries
//! (RFC 6890 and its updates), plus multicast and the reserved 240.0.0.0/4.
//! Registry blocks are taken whole even where a few addresses inside them are
//! marked globally reachable (192.0.0.9, the AS112 parts of 2001::/23): an ASN
//! answer for those is of no use on a hop, and a simple table is easy to check.
//! IPv6 outside 2000::/3 (the only block IANA allocates for global unicast) is
//! never public. IPv4-mapped IPv6 addresses are judged by the IPv4 address inside.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// A named special-purpose IPv4 block.
struct V4Block(Ipv4Net, &'static str);
/// A named special-purpose IPv6 block.
struct V6Block(Ipv6Net, &'static str);

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, name: &'static str) -> V4Block {
    V4Block(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len), name)
}

#[allow(clippy::too_many_arguments)] // the eight groups of an address, as written
const fn v6(
    a: u16,
    b: u16,
    c: u16,
    d: u16,
    e: u16,
    f: u16,
    len: u8,
    name: &'static str,
) -> V6Block {
    V6Block(
        Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, 0, 0), len),
        name,
    )
}

const SPECIAL_V4: &[V4Block] = &[
    v4(0, 0, 0, 0, 8, "this network (RFC 791)"),
    v4(10, 0, 0, 0, 8, "private (RFC 1918)"),
    v4(100, 64, 0, 0, 10, "shared address space (RFC 6598)"),
    v4(127, 0, 0, 0, 8, "loopback (RFC 1122)"),
    v4(169, 254, 0, 0, 16, "link-local (RFC 3927)"),
    v4(172, 16, 0, 0, 12, "private (RFC 1918)"),
    v4(192, 0, 0, 0, 24, "IETF protocol assignments (RFC 6890)"),
    v4(192, 0, 2, 0, 24, "documentation TEST-NET-1 (RFC 5737)"),
    v4(
        192,
        88,
        99,
        0,
        24,
        "deprecated 6to4 relay anycast (RFC 7526)",
    ),
    v4(192, 168, 0, 0, 16, "private (RFC 1918)"),
    v4(198, 18, 0, 0, 15, "benchmarking (RFC 2544)"),
    v4(198, 51, 100, 0, 24, "documentation TEST-NET-2 (RFC 5737)"),
    v4(203, 0, 113, 0, 24, "documentation TEST-NET-3 (RFC 5737)"),
    v4(224, 0, 0, 0, 4, "multicast (RFC 5771)"),
    v4(
        240,
        0,
        0,
        0,
        4,
        "reserved and limited broadcast (RFC 1112, RFC 919)",
    ),
];

const SPECIAL_V6: &[V6Block] = &[
    v6(
        0x0064,
        0xff9b,
        0,
        0,
        0,
        0,
        96,
        "IPv4/IPv6 translation (RFC 6052)",
    ),
    v6(
        0x0064,
        0xff9b,
        1,
        0,
        0,
        0,
        48,
        "local-use IPv4/IPv6 translation (RFC 8215)",
    ),
    v6(0x0100, 0, 0, 0, 0, 0, 64, "discard-only (RFC 6666)"),
    v6(
        0x2001,
        0,
        0,
        0,
        0,
        0,
        23,
        "IETF protocol assignments (RFC 2928)",
    ),
    v6(0x2001, 0x0db8, 0, 0, 0, 0, 32, "documentation (RFC 3849)"),
    v6(0x2002, 0, 0, 0, 0, 0, 16, "6to4 (RFC 3056)"),
    v6(0x3fff, 0, 0, 0, 0, 0, 20, "documentation (RFC 9637)"),
    v6(0x5f00, 0, 0, 0, 0, 0, 16, "segment routing SIDs (RFC 9602)"),
    v6(0xfc00, 0, 0, 0, 0, 0, 7, "unique local (RFC 4193)"),
    v6(0xfe80, 0, 0, 0, 0, 0, 10, "link-local (RFC 4291)"),
    v6(0xff00, 0, 0, 0, 0, 0, 8, "multicast (RFC 4291)"),
];

/// 2000::/3: IANA's global unicast allocation; everything else in IPv6 is special.
const GLOBAL_UNICAST_V6: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// Why `ip` is not a public address (the special-purpose block it falls in), or
/// `None` when it is public and may be looked up in the ASN database.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => special_v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(mapped) => special_v4(mapped),
            None => special_v6(a),
        },
    }
}

/// True when `ip` is a public (globally reachable unicast) address.
pub fn is_public(ip: IpAddr) -> bool {
    special_purpose(ip).is_none()
}

fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    SPECIAL_V4
        .iter()
        .find(|block| block.0.contains(&a))
        .map(|block| block.1)
}

fn special_v6(a: Ipv6Addr) -> Option<&'static str> {
    if let Some(block) = SPECIAL_V6.iter().find(|block| block.0.contains(&a)) {
        return Some(block.1);
    }
    if a.is_unspecified() {
        return Some("unspecified (RFC 4291)");
    }
    if a.is_loopback() {
        return Some("loopback (RFC 4291)");
    }
    (!GLOBAL_UNICAST_V6.contains(&a)).then_some("outside global unicast 2000::/3 (RFC 4291)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn public_addresses_are_public() {
        for s in [
            "1.0.0.1",
            "8.8.4.4",
            "100.63.255.255",
            "100.128.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:1.0.0.1",
        ] {
            assert!(
                is_public(ip(s)),
                "{s} should be public, got {:?}",
                special_purpose(ip(s))
            );
        }
    }

    #[test]
    fn special_purpose_addresses_are_named() {
        let cases = [
            ("10.1.2.3", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("192.0.2.7", "documentation"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.9", "documentation"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.254", "benchmarking"),
            ("100.64.0.1", "shared"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("fd00::1", "unique local"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("0.1.2.3", "this network"),
            ("64:ff9b::1.0.0.1", "translation"),
            ("2002:c000:0204::1", "6to4"),
            ("2001::1", "IETF"),
            ("::ffff:10.0.0.1", "private"),
            ("4000::1", "outside global unicast"),
        ];
        for (s, want) in cases {
            let got = special_purpose(ip(s));
            assert!(
                got.is_some_and(|why| why.contains(want)),
                "{s}: expected a reason containing {want:?}, got {got:?}"
            );
        }
    }
}

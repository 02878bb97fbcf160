//! Fuzz target: hopwatch's reply parser must never panic, whatever the bytes.
//!
//! Feeds the input to `parse_ip_packet` (kernel snapshots, IPv4 raw sockets) and, with
//! the first byte choosing the socket protocol and source family, to `parse_transport`
//! (IPv6 raw sockets).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;

// The service's own source files, compiled here as they are (see Cargo.toml). They sit
// side by side at the crate root, as in `hopwatch::probe`, so `super::wire` resolves.
#[allow(dead_code)]
#[path = "../../src/probe/wire.rs"]
mod wire;

#[allow(dead_code)]
#[path = "../../src/probe/parse.rs"]
mod parse;

use parse::{parse_ip_packet, parse_transport, Reply, MPLS_CAPACITY};

/// What any successful parse must satisfy.
fn check(reply: &Reply) {
    assert!(
        reply.probe_destination().is_some(),
        "key with a bad family: {reply:?}"
    );
    assert!(reply.mpls.len() <= MPLS_CAPACITY);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = parse_ip_packet(data) {
        check(&reply);
    }
    if let Some((&selector, rest)) = data.split_first() {
        let proto = [1, 6, 17, 58][usize::from(selector & 3)];
        let src = if selector & 4 == 0 {
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))
        } else {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
        };
        if let Ok(reply) = parse_transport(src, proto, rest) {
            check(&reply);
        }
    }
});

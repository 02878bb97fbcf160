//! Fuzz target: STAMP test packet decoding (RFC 8762, both sides) must never
//! panic, and whatever decodes must encode back to the same field octets (zeros in
//! the MBZ octets and padding) and decode to the same value again.
//!
//! The input is a received packet as the UDP socket hands it over, padding
//! included. The stable test `random_and_mutated_packets_round_trip` in
//! service/src/peer/wire.rs checks the same in the normal suite.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The service's own source files, compiled here as they are (see Cargo.toml), side
// by side at the crate root as in `hopwatch::peer`, so `super::timestamp` resolves.
#[allow(dead_code)]
#[path = "../../src/peer/timestamp.rs"]
mod timestamp;

#[allow(dead_code)]
#[path = "../../src/peer/wire.rs"]
mod wire;

use wire::{ReflectorPacket, SenderPacket, BASE_LEN};

fuzz_target!(|input: &[u8]| {
    let mut buf = vec![0xa5u8; input.len()];
    let sender = SenderPacket::decode(input);
    let reflector = ReflectorPacket::decode(input);
    assert_eq!(sender.is_ok(), input.len() >= BASE_LEN);
    assert_eq!(reflector.is_ok(), input.len() >= BASE_LEN);
    if let Ok(p) = sender {
        let out = p.encode(&mut buf, input.len()).expect("re-encodes");
        assert_eq!(out[..16], input[..16], "sender fields differ");
        assert!(out[16..].iter().all(|&b| b == 0), "MBZ or padding not zero");
        assert_eq!(SenderPacket::decode(out), Ok(p));
        let _ = (p.timestamp.to_unix_nanos(), p.error.error_ns());
    }
    if let Ok(p) = reflector {
        let out = p.encode(&mut buf, input.len()).expect("re-encodes");
        assert_eq!(out[..38], input[..38], "reflector fields differ");
        assert_eq!(out[40], input[40], "TTL differs");
        assert!(
            out[38..40].iter().chain(&out[41..]).all(|&b| b == 0),
            "MBZ or padding not zero"
        );
        assert_eq!(ReflectorPacket::decode(out), Ok(p));
        for t in [p.timestamp, p.receive_timestamp, p.sender_timestamp] {
            let _ = t.to_unix_nanos();
        }
        let _ = (p.error.error_ns(), p.sender_error.error_ns());
    }
});

//! The STAMP test packets of RFC 8762 in unauthenticated mode, built and parsed
//! from the RFC's field layout (§4.2.1 for the Session-Sender, §4.3.1 for the
//! Session-Reflector), with the SSID of RFC 8972 §3 in the first formerly-MBZ
//! octets. Both base packets are 44 octets; anything after that is
//! padding, and a reflected packet is exactly as long as the one it answers.
//!
//! ```text
//! Session-Sender (44 octets + padding)      Session-Reflector (44 octets + padding)
//!  0 Sequence Number (4)                      0 Sequence Number (4)
//!  4 Timestamp (8)                            4 Timestamp (8)
//! 12 Error Estimate (2)                      12 Error Estimate (2)
//! 14 SSID (2, RFC 8972; MBZ in RFC 8762)     14 SSID (2, RFC 8972; MBZ in RFC 8762)
//! 16 MBZ (28)                                16 Receive Timestamp (8)
//!                                            24 Session-Sender Sequence Number (4)
//!                                            28 Session-Sender Timestamp (8)
//!                                            36 Session-Sender Error Estimate (2)
//!                                            38 MBZ (2)
//!                                            40 Ses-Sender TTL (1)
//!                                            41 MBZ (3)
//! ```
//!
//! TWAMP-Light (RFC 5357) packets share these offsets, which is why STAMP and
//! TWAMP-Light implementations interoperate.

use serde::Serialize;

use super::timestamp::{ErrorEstimate, WireTimestamp};

/// Length of both unauthenticated base packets; the smallest packet we send or answer.
pub const BASE_LEN: usize = 44;

/// The well-known STAMP port (RFC 8762 §4.1).
pub const STAMP_PORT: u16 = 862;

mod offset {
    pub const SEQ: usize = 0;
    pub const TIMESTAMP: usize = 4;
    pub const ERROR: usize = 12;
    pub const SSID: usize = 14;
    pub const RECEIVE_TIMESTAMP: usize = 16;
    pub const SENDER_SEQ: usize = 24;
    pub const SENDER_TIMESTAMP: usize = 28;
    pub const SENDER_ERROR: usize = 36;
    pub const SENDER_TTL: usize = 40;
}

/// A packet that is not a STAMP test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a STAMP test packet is at least {BASE_LEN} octets; this one has {len}")]
    TooShort { len: usize },
    #[error("a STAMP packet of {len} octets does not fit a {capacity}-octet buffer")]
    BufferTooSmall { len: usize, capacity: usize },
}

/// A Session-Sender test packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SenderPacket {
    pub seq: u32,
    /// When the packet was sent (T1).
    pub timestamp: WireTimestamp,
    pub error: ErrorEstimate,
    /// RFC 8972 session identifier; 0 when unused.
    pub ssid: u16,
}

/// A Session-Reflector test packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ReflectorPacket {
    /// The reflector's own sequence number (stateful) or the sender's (stateless).
    pub seq: u32,
    /// When the reflected packet was sent (T3).
    pub timestamp: WireTimestamp,
    pub error: ErrorEstimate,
    pub ssid: u16,
    /// When the sender's packet was received (T2).
    pub receive_timestamp: WireTimestamp,
    pub sender_seq: u32,
    /// The sender's T1, copied.
    pub sender_timestamp: WireTimestamp,
    pub sender_error: ErrorEstimate,
    /// TTL / hop limit of the sender's packet as it arrived.
    pub sender_ttl: u8,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(eight)
}

/// Checks `len` (the packet, padding included) against the rules and the buffer.
fn frame(buf: &mut [u8], len: usize) -> Result<&mut [u8], WireError> {
    if len < BASE_LEN {
        return Err(WireError::TooShort { len });
    }
    let capacity = buf.len();
    let out = buf
        .get_mut(..len)
        .ok_or(WireError::BufferTooSmall { len, capacity })?;
    // MBZ octets and padding are zero: padding carries nothing, and zeros cannot
    // leak what a buffer held before.
    out.fill(0);
    Ok(out)
}

impl SenderPacket {
    /// Writes the packet, zero-padded to `len` octets, into the front of `buf` and
    /// returns the written part.
    pub fn encode<'b>(&self, buf: &'b mut [u8], len: usize) -> Result<&'b [u8], WireError> {
        let out = frame(buf, len)?;
        out[offset::SEQ..offset::SEQ + 4].copy_from_slice(&self.seq.to_be_bytes());
        out[offset::TIMESTAMP..offset::TIMESTAMP + 8]
            .copy_from_slice(&self.timestamp.raw().to_be_bytes());
        out[offset::ERROR..offset::ERROR + 2].copy_from_slice(&self.error.to_bits().to_be_bytes());
        out[offset::SSID..offset::SSID + 2].copy_from_slice(&self.ssid.to_be_bytes());
        Ok(out)
    }

    /// Parses a received Session-Sender packet. MBZ octets are not checked: the
    /// RFC has receivers ignore them, and RFC 8972 uses some of them.
    pub fn decode(packet: &[u8]) -> Result<Self, WireError> {
        if packet.len() < BASE_LEN {
            return Err(WireError::TooShort { len: packet.len() });
        }
        let error = ErrorEstimate::from_bits(u16_at(packet, offset::ERROR));
        Ok(SenderPacket {
            seq: u32_at(packet, offset::SEQ),
            timestamp: WireTimestamp::from_raw(u64_at(packet, offset::TIMESTAMP), error.format),
            error,
            ssid: u16_at(packet, offset::SSID),
        })
    }
}

impl ReflectorPacket {
    /// Writes the packet, zero-padded to `len` octets, into the front of `buf`.
    pub fn encode<'b>(&self, buf: &'b mut [u8], len: usize) -> Result<&'b [u8], WireError> {
        let out = frame(buf, len)?;
        out[offset::SEQ..offset::SEQ + 4].copy_from_slice(&self.seq.to_be_bytes());
        out[offset::TIMESTAMP..offset::TIMESTAMP + 8]
            .copy_from_slice(&self.timestamp.raw().to_be_bytes());
        out[offset::ERROR..offset::ERROR + 2].copy_from_slice(&self.error.to_bits().to_be_bytes());
        out[offset::SSID..offset::SSID + 2].copy_from_slice(&self.ssid.to_be_bytes());
        out[offset::RECEIVE_TIMESTAMP..offset::RECEIVE_TIMESTAMP + 8]
            .copy_from_slice(&self.receive_timestamp.raw().to_be_bytes());
        out[offset::SENDER_SEQ..offset::SENDER_SEQ + 4]
            .copy_from_slice(&self.sender_seq.to_be_bytes());
        out[offset::SENDER_TIMESTAMP..offset::SENDER_TIMESTAMP + 8]
            .copy_from_slice(&self.sender_timestamp.raw().to_be_bytes());
        out[offset::SENDER_ERROR..offset::SENDER_ERROR + 2]
            .copy_from_slice(&self.sender_error.to_bits().to_be_bytes());
        out[offset::SENDER_TTL] = self.sender_ttl;
        Ok(out)
    }

    /// Parses a received Session-Reflector packet.
    pub fn decode(packet: &[u8]) -> Result<Self, WireError> {
        if packet.len() < BASE_LEN {
            return Err(WireError::TooShort { len: packet.len() });
        }
        let error = ErrorEstimate::from_bits(u16_at(packet, offset::ERROR));
        let sender_error = ErrorEstimate::from_bits(u16_at(packet, offset::SENDER_ERROR));
        Ok(ReflectorPacket {
            seq: u32_at(packet, offset::SEQ),
            timestamp: WireTimestamp::from_raw(u64_at(packet, offset::TIMESTAMP), error.format),
            error,
            ssid: u16_at(packet, offset::SSID),
            receive_timestamp: WireTimestamp::from_raw(
                u64_at(packet, offset::RECEIVE_TIMESTAMP),
                error.format,
            ),
            sender_seq: u32_at(packet, offset::SENDER_SEQ),
            sender_timestamp: WireTimestamp::from_raw(
                u64_at(packet, offset::SENDER_TIMESTAMP),
                sender_error.format,
            ),
            sender_error,
            sender_ttl: packet[offset::SENDER_TTL],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::timestamp::TimestampFormat;

    // Byte vectors written out field by field from RFC 8762's figures (octet
    // offsets in the comments), not produced by the encoder under test.

    /// Session-Sender: seq 0x01020304, T1 = NTP 0xE5F3A1B2.80000000 (seconds
    /// 3858997682 + 0.5 s), error estimate S=1 Z=0 scale 1 multiplier 0x0f, SSID 0x1234.
    const SENDER_VECTOR: [u8; 44] = [
        0x01, 0x02, 0x03, 0x04, //                          0: Sequence Number
        0xe5, 0xf3, 0xa1, 0xb2, 0x80, 0x00, 0x00, 0x00, //  4: Timestamp
        0x81, 0x0f, //                                     12: Error Estimate S|Z|Scale|Mult
        0x12, 0x34, //                                     14: SSID (RFC 8972)
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //        16: MBZ (28 octets)
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// Session-Reflector answering the packet above: its own seq 7, T3, its error
    /// estimate S=0 Z=0 scale 0 multiplier 1, SSID copied, T2, the sender's seq,
    /// T1 and error estimate copied, TTL 62.
    const REFLECTOR_VECTOR: [u8; 44] = [
        0x00, 0x00, 0x00, 0x07, //                          0: Sequence Number
        0xe5, 0xf3, 0xa1, 0xb2, 0x80, 0x10, 0x00, 0x00, //  4: Timestamp (T3)
        0x00, 0x01, //                                     12: Error Estimate
        0x12, 0x34, //                                     14: SSID
        0xe5, 0xf3, 0xa1, 0xb2, 0x80, 0x08, 0x00, 0x00, // 16: Receive Timestamp (T2)
        0x01, 0x02, 0x03, 0x04, //                         24: Session-Sender Sequence Number
        0xe5, 0xf3, 0xa1, 0xb2, 0x80, 0x00, 0x00, 0x00, // 28: Session-Sender Timestamp
        0x81, 0x0f, //                                     36: Session-Sender Error Estimate
        0x00, 0x00, //                                     38: MBZ
        0x3e, //                                           40: Ses-Sender TTL
        0x00, 0x00, 0x00, //                               41: MBZ
    ];

    fn sender_value() -> SenderPacket {
        SenderPacket {
            seq: 0x0102_0304,
            timestamp: WireTimestamp::Ntp(0xe5f3_a1b2_8000_0000),
            error: ErrorEstimate {
                synchronized: true,
                format: TimestampFormat::Ntp,
                scale: 1,
                multiplier: 0x0f,
            },
            ssid: 0x1234,
        }
    }

    fn reflector_value() -> ReflectorPacket {
        ReflectorPacket {
            seq: 7,
            timestamp: WireTimestamp::Ntp(0xe5f3_a1b2_8010_0000),
            error: ErrorEstimate::from_bits(0x0001),
            ssid: 0x1234,
            receive_timestamp: WireTimestamp::Ntp(0xe5f3_a1b2_8008_0000),
            sender_seq: 0x0102_0304,
            sender_timestamp: WireTimestamp::Ntp(0xe5f3_a1b2_8000_0000),
            sender_error: ErrorEstimate::from_bits(0x810f),
            sender_ttl: 62,
        }
    }

    #[test]
    fn sender_packet_matches_the_rfc_layout() {
        let mut buf = [0xffu8; 64];
        let bytes = sender_value().encode(&mut buf, BASE_LEN).unwrap();
        assert_eq!(bytes, &SENDER_VECTOR[..]);
        assert_eq!(
            SenderPacket::decode(&SENDER_VECTOR).unwrap(),
            sender_value()
        );
    }

    #[test]
    fn reflector_packet_matches_the_rfc_layout() {
        let mut buf = [0xffu8; 64];
        let bytes = reflector_value().encode(&mut buf, BASE_LEN).unwrap();
        assert_eq!(bytes, &REFLECTOR_VECTOR[..]);
        assert_eq!(
            ReflectorPacket::decode(&REFLECTOR_VECTOR).unwrap(),
            reflector_value()
        );
    }

    #[test]
    fn reflector_timestamps_decode_to_the_right_instants() {
        let r = ReflectorPacket::decode(&REFLECTOR_VECTOR).unwrap();
        let t1 = r.sender_timestamp.to_unix_nanos().unwrap();
        let t2 = r.receive_timestamp.to_unix_nanos().unwrap();
        let t3 = r.timestamp.to_unix_nanos().unwrap();
        // 0x00080000 / 2^32 s = 122.07 µs; 0x00100000 / 2^32 s = 244.14 µs.
        assert_eq!(t2 - t1, 122_070);
        assert_eq!(t3 - t1, 244_141);
    }

    #[test]
    fn padding_is_zeroed_and_sets_the_length() {
        let mut buf = [0xaau8; 1500];
        let bytes = sender_value().encode(&mut buf, 1000).unwrap();
        assert_eq!(bytes.len(), 1000);
        assert_eq!(&bytes[..BASE_LEN], &SENDER_VECTOR[..]);
        assert!(bytes[BASE_LEN..].iter().all(|&b| b == 0));
        // Padding does not change what is parsed.
        assert_eq!(SenderPacket::decode(bytes).unwrap(), sender_value());
    }

    #[test]
    fn ptp_z_bit_selects_the_timestamp_format() {
        let mut vector = SENDER_VECTOR;
        vector[12] |= 0x40;
        let p = SenderPacket::decode(&vector).unwrap();
        assert_eq!(p.timestamp, WireTimestamp::Ptp(0xe5f3_a1b2_8000_0000));
    }

    #[test]
    fn short_packets_and_buffers_are_rejected() {
        assert_eq!(
            SenderPacket::decode(&SENDER_VECTOR[..43]),
            Err(WireError::TooShort { len: 43 })
        );
        assert_eq!(
            ReflectorPacket::decode(&[0u8; 14]),
            Err(WireError::TooShort { len: 14 })
        );
        let mut small = [0u8; 50];
        assert_eq!(
            sender_value().encode(&mut small, 60),
            Err(WireError::BufferTooSmall {
                len: 60,
                capacity: 50
            })
        );
        assert_eq!(
            sender_value().encode(&mut small, 40),
            Err(WireError::TooShort { len: 40 })
        );
    }

    /// Octets of each packet that carry fields (the rest is MBZ or padding, which a
    /// decoder ignores and an encoder zeroes).
    const SENDER_FIELDS: std::ops::Range<usize> = 0..16;
    const REFLECTOR_FIELDS: [std::ops::Range<usize>; 2] = [0..38, 40..41];

    /// Decodes `input` both ways; whatever decodes must encode back to the same
    /// field octets, zeros elsewhere, and decode to the same value again. Shared with
    /// the fuzz target `stamp_packet` (service/fuzz), which has the same checks.
    fn check_decode(input: &[u8]) -> usize {
        let mut buf = vec![0xa5u8; input.len()];
        let mut decoded = 0;
        if let Ok(p) = SenderPacket::decode(input) {
            let out = p.encode(&mut buf, input.len()).unwrap();
            assert_eq!(out[SENDER_FIELDS], input[SENDER_FIELDS]);
            assert!(out[16..].iter().all(|&b| b == 0));
            assert_eq!(SenderPacket::decode(out), Ok(p));
            let _ = (p.timestamp.to_unix_nanos(), p.error.error_ns());
            decoded += 1;
        }
        if let Ok(p) = ReflectorPacket::decode(input) {
            let out = p.encode(&mut buf, input.len()).unwrap();
            for field in REFLECTOR_FIELDS {
                assert_eq!(out[field.clone()], input[field]);
            }
            assert!(out[38..40].iter().chain(&out[41..]).all(|&b| b == 0));
            assert_eq!(ReflectorPacket::decode(out), Ok(p));
            for t in [p.timestamp, p.receive_timestamp, p.sender_timestamp] {
                let _ = t.to_unix_nanos();
            }
            let _ = (p.error.error_ns(), p.sender_error.error_ns());
            decoded += 1;
        }
        assert_eq!(decoded > 0, input.len() >= BASE_LEN);
        decoded
    }

    /// The fuzz target's property in the normal suite: decode(encode(x)) == x for
    /// random packets of random lengths, and random or mutated octets either are
    /// refused as too short or decode to what encodes back to them (see
    /// [`check_decode`]).
    #[test]
    fn random_and_mutated_packets_round_trip() {
        let mut rng = fastrand::Rng::with_seed(0x7374_616d_7077_6972);
        let timestamp = |rng: &mut fastrand::Rng, error: ErrorEstimate| {
            let raw = match rng.u8(0..4) {
                0 => 0,
                1 => u64::MAX,
                _ => rng.u64(..),
            };
            WireTimestamp::from_raw(raw, error.format)
        };
        let mut buf = vec![0u8; 2048];
        let mut decoded = 0;
        for round in 0..20_000 {
            let len = match rng.u8(0..3) {
                0 => BASE_LEN,
                1 => rng.usize(BASE_LEN..=buf.len()),
                _ => rng.usize(BASE_LEN..BASE_LEN + 64),
            };
            let error = ErrorEstimate::from_bits(rng.u16(..));
            let sender = SenderPacket {
                seq: rng.u32(..),
                timestamp: timestamp(&mut rng, error),
                error,
                ssid: rng.u16(..),
            };
            let sender_error = ErrorEstimate::from_bits(rng.u16(..));
            let reflector = ReflectorPacket {
                seq: rng.u32(..),
                timestamp: timestamp(&mut rng, error),
                error,
                ssid: rng.u16(..),
                receive_timestamp: timestamp(&mut rng, error),
                sender_seq: rng.u32(..),
                sender_timestamp: timestamp(&mut rng, sender_error),
                sender_error,
                sender_ttl: rng.u8(..),
            };
            let mut input = if round % 2 == 0 {
                let bytes = sender.encode(&mut buf, len).unwrap();
                assert_eq!(SenderPacket::decode(bytes), Ok(sender));
                bytes.to_vec()
            } else {
                let bytes = reflector.encode(&mut buf, len).unwrap();
                assert_eq!(ReflectorPacket::decode(bytes), Ok(reflector));
                bytes.to_vec()
            };
            // Then the octets themselves: noise, or the packet mutated.
            if round % 5 == 0 {
                input = (0..rng.usize(0..100)).map(|_| rng.u8(..)).collect();
            }
            for _ in 0..rng.usize(0..5) {
                if input.is_empty() {
                    break;
                }
                let at = rng.usize(0..input.len());
                match rng.u8(0..4) {
                    0 => input[at] ^= 1 << rng.u8(0..8),
                    1 => input[at] = [0, 0x40, 0x80, 0xc0, 0xff][rng.usize(0..5)],
                    2 => input.truncate(at),
                    _ => input[at] = rng.u8(..),
                }
            }
            decoded += check_decode(&input);
        }
        assert!(decoded > 20_000, "only {decoded} decodes");
    }
}

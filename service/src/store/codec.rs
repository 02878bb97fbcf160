//! The on-disk value formats and their encoding.
//!
//! Values are postcard (serde, varint integers, no field names): postcard 1.x
//! has a documented wire format that is stable across its 1.x releases, which
//! is what a file that outlives the binary needs, and its varints keep a
//! round of ten hops near 130 bytes. Each value starts with one format byte so
//! a later release can read old values next to new ones; the store-wide
//! schema version (meta tree) says which formats may exist at all.
//!
//! The structs here mirror the model types on purpose instead of serialising
//! them directly: a field added to `model::HopSample` must not silently change
//! what is on disk.

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{HopSample, InvalidHopSample, RoundRecord, TargetId};
use crate::probe::TimestampSource;
use crate::probe::{Rtt, Ttl};

/// The format byte every value starts with, but rollups in columns.
pub const VALUE_FORMAT_V1: u8 = 1;
/// The format byte of rollups in columns (`RollupColumnsV1`): the minute
/// files' blocks and, since they replaced `RollupV1` there, sled's hour
/// rollups. A value of format 1 in a rollup tree is a `RollupV1`.
pub const VALUE_FORMAT_COLUMNS: u8 = 2;

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("value is empty")]
    Empty,
    #[error("value format {found} is unknown here (format {expected} expected)")]
    UnknownFormat { found: u8, expected: u8 },
    #[error("value does not decode: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("unknown timestamp source code {0}")]
    UnknownSource(u8),
    #[error("the destination's TTL is 0")]
    ZeroDestinationTtl,
    #[error("hop does not decode: {0}")]
    InvalidHop(#[from] InvalidHopSample),
}

/// Encodes `value` behind the current format byte.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_as(VALUE_FORMAT_V1, value)
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_as(VALUE_FORMAT_V1, bytes)
}

/// Encodes `value` behind the format byte `format`.
pub fn encode_as<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    // Serialising into a Vec cannot fail for these plain structs; a failure
    // would be a bug in a derive, not bad input.
    postcard::to_extend(value, vec![format]).expect("postcard encodes store values into a Vec")
}

/// Decodes a value written by [`encode_as`] with `format`.
pub fn decode_as<T: DeserializeOwned>(format: u8, bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&found, body)) if found == format => Ok(postcard::from_bytes(body)?),
        Some((&found, _)) => Err(DecodeError::UnknownFormat {
            found,
            expected: format,
        }),
    }
}

/// One round as stored in the `raw` tree; the target and start time are in the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRoundV1 {
    pub seq: u64,
    pub destination_ttl: Option<u8>,
    pub source: u8,
    pub hops: Vec<RawHopV1>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawHopV1 {
    pub ttl: u8,
    pub responder: Option<IpAddr>,
    pub rtt_ns: Option<u64>,
    pub reached: bool,
}

/// The timestamp source's code in every stored form (round values and chunks).
pub(crate) fn source_code(source: TimestampSource) -> u8 {
    match source {
        TimestampSource::Ebpf => 0,
        TimestampSource::Kernel => 1,
        TimestampSource::Userspace => 2,
    }
}

/// The timestamp source of a stored code; `None` for a code no release wrote.
pub(crate) fn source_of_code(code: u8) -> Option<TimestampSource> {
    match code {
        0 => Some(TimestampSource::Ebpf),
        1 => Some(TimestampSource::Kernel),
        2 => Some(TimestampSource::Userspace),
        _ => None,
    }
}

fn source_from_code(code: u8) -> Result<TimestampSource, DecodeError> {
    source_of_code(code).ok_or(DecodeError::UnknownSource(code))
}

impl RawRoundV1 {
    pub fn from_round(round: &RoundRecord) -> RawRoundV1 {
        RawRoundV1 {
            seq: round.seq,
            destination_ttl: round.destination_ttl.map(Ttl::get),
            source: source_code(round.source),
            hops: round
                .hops
                .iter()
                .map(|h| RawHopV1 {
                    ttl: h.ttl.get(),
                    responder: h.responder(),
                    rtt_ns: h.rtt().map(Rtt::as_nanos),
                    reached: h.reached(),
                })
                .collect(),
        }
    }

    pub fn into_round(
        self,
        target: TargetId,
        started_at_ms: u64,
    ) -> Result<RoundRecord, DecodeError> {
        Ok(RoundRecord {
            target,
            seq: self.seq,
            started_at_ms,
            hops: self
                .hops
                .into_iter()
                .map(|h| {
                    HopSample::from_parts(
                        h.ttl,
                        h.responder,
                        h.rtt_ns.map(Rtt::from_nanos),
                        h.reached,
                    )
                })
                .collect::<Result<_, _>>()?,
            destination_ttl: self
                .destination_ttl
                .map(|ttl| Ttl::try_from(ttl).map_err(|_| DecodeError::ZeroDestinationTtl))
                .transpose()?,
            source: source_from_code(self.source)?,
        })
    }
}

/// One rollup bucket of one series, in the `m1` and `h1` trees.
///
/// Sums rather than mean and variance, so buckets merge by addition and the
/// standard deviation of any merge is exact (`sum_sq_ns2` is a u128: an hour
/// of 68-second RTTs still fits). The histogram is the non-zero buckets of a
/// `histogram::Histogram32` with the store's fixed configuration (see
/// `rollup::HIST_CONFIG`), indices delta-encoded so most take one byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollupV1 {
    pub sent: u64,
    pub lost: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub sum_ns: u128,
    pub sum_sq_ns2: u128,
    pub hist_index_deltas: Vec<u32>,
    pub hist_counts: Vec<u32>,
}

/// Many rollups at once, field by field (the minute files' blocks since
/// format `hwM2`, `store::rollup_block`): a column compresses far better
/// than rows of mixed fields, and min, max and the sums are kept relative to
/// what the entry before or the entry's own minimum predicts. Every column
/// has one element per entry except `index_gaps` and `counts`, which hold
/// `buckets[i]` elements for entry `i`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RollupColumnsV1 {
    /// The histograms' grouping power (the maximum value power is the store's).
    pub grouping_power: u8,
    pub series: Vec<u8>,
    /// The bucket's place in its file's span (minute of the hour).
    pub slots: Vec<u8>,
    pub sent: Vec<u64>,
    pub lost: Vec<u64>,
    /// `min - previous entry's min`, wrapping.
    pub min_steps: Vec<i64>,
    /// `max - previous entry's max`, wrapping.
    pub max_steps: Vec<i64>,
    /// `sum - received * min`, wrapping.
    pub sums_above_min: Vec<u128>,
    /// `sum of (x - min)^2` as `sum_sq - 2 min sum + received min^2`, wrapping.
    pub squares_above_min: Vec<u128>,
    /// Non-empty histogram buckets per entry.
    pub buckets: Vec<u32>,
    /// First bucket's index minus the previous entry's first, wrapping.
    pub first_index_steps: Vec<i32>,
    /// Gaps between consecutive non-empty buckets' indexes.
    pub index_gaps: Vec<u32>,
    pub counts: Vec<u32>,
}

/// One batch of a peer's probes in the `raw` tree (see `store::peers`): RTT,
/// forward and backward one-way delay as rollup statistics, so minute
/// rollups merge batches exactly. Peer and target keys never share a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerBatchV1 {
    pub rtt: RollupV1,
    pub forward: RollupV1,
    pub backward: RollupV1,
}

/// One event in the `events` tree; target and time are in the key. The
/// payload is kept as JSON text because postcard cannot carry a
/// self-describing `serde_json::Value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventV1 {
    pub kind: String,
    pub payload_json: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HopAnswer;

    fn ttl(value: u8) -> Ttl {
        Ttl::new(value).unwrap()
    }

    fn round() -> RoundRecord {
        RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq: 77,
            started_at_ms: 1_700_000_000_000,
            hops: vec![
                HopSample::answered(
                    ttl(1),
                    HopAnswer {
                        responder: "10.0.0.1".parse().unwrap(),
                        rtt: Rtt::from_nanos(1_234_567),
                        is_destination: false,
                        reply_ttl: None,
                        quote: None,
                    },
                ),
                HopSample::lost(ttl(2)),
                HopSample::answered(
                    ttl(3),
                    HopAnswer {
                        responder: "2001:db8::1".parse().unwrap(),
                        rtt: Rtt::from_nanos(9_000_000),
                        is_destination: true,
                        reply_ttl: None,
                        quote: None,
                    },
                ),
            ],
            destination_ttl: Some(ttl(3)),
            source: TimestampSource::Kernel,
        }
    }

    #[test]
    fn rounds_round_trip_and_stay_compact() {
        let original = round();
        let bytes = encode(&RawRoundV1::from_round(&original));
        assert_eq!(bytes[0], VALUE_FORMAT_V1);
        // 1 format + 1 seq + 2 dest + 1 source + 1 len + hops (11 + 4 + 23).
        assert!(bytes.len() < 50, "encoded round is {} bytes", bytes.len());
        let back: RawRoundV1 = decode(&bytes).unwrap();
        let back = back
            .into_round(original.target.clone(), original.started_at_ms)
            .unwrap();
        assert_eq!(back, original);
    }

    /// The bytes of [`round`] as format 1 wrote them when this test was
    /// added: values already on disk must keep decoding to the same round,
    /// and new values must be written the same way.
    const ROUND_V1_HEX: &str = "014d010301030101000a0000010187ad4b000200000003010120010db800000000000000000000000101c0a8a50401";

    #[test]
    fn the_format_1_bytes_are_pinned() {
        let original = round();
        let written = encode(&RawRoundV1::from_round(&original));
        assert_eq!(hex::encode(&written), ROUND_V1_HEX);
        let stored = hex::decode(ROUND_V1_HEX).unwrap();
        let back = decode::<RawRoundV1>(&stored)
            .unwrap()
            .into_round(original.target.clone(), original.started_at_ms)
            .unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn stored_hops_that_no_probe_produces_are_errors() {
        let with_hop = |hop: RawHopV1| RawRoundV1 {
            hops: vec![hop],
            ..RawRoundV1::from_round(&round())
        };
        let rtt_without_responder = with_hop(RawHopV1 {
            ttl: 1,
            responder: None,
            rtt_ns: Some(5),
            reached: false,
        });
        assert!(matches!(
            rtt_without_responder.into_round(TargetId::new("t").unwrap(), 0),
            Err(DecodeError::InvalidHop(
                InvalidHopSample::RttWithoutResponder
            ))
        ));
        let zero_ttl = with_hop(RawHopV1 {
            ttl: 0,
            responder: None,
            rtt_ns: None,
            reached: false,
        });
        assert!(matches!(
            zero_ttl.into_round(TargetId::new("t").unwrap(), 0),
            Err(DecodeError::InvalidHop(InvalidHopSample::ZeroTtl))
        ));
        let zero_destination = RawRoundV1 {
            destination_ttl: Some(0),
            ..RawRoundV1::from_round(&round())
        };
        assert!(matches!(
            zero_destination.into_round(TargetId::new("t").unwrap(), 0),
            Err(DecodeError::ZeroDestinationTtl)
        ));
    }

    #[test]
    fn unknown_formats_and_garbage_are_errors() {
        let mut bytes = encode(&RawRoundV1::from_round(&round()));
        bytes[0] = 9;
        assert!(matches!(
            decode::<RawRoundV1>(&bytes),
            Err(DecodeError::UnknownFormat {
                found: 9,
                expected: VALUE_FORMAT_V1
            })
        ));
        assert!(matches!(decode::<RawRoundV1>(&[]), Err(DecodeError::Empty)));
        assert!(matches!(
            decode::<RawRoundV1>(&[VALUE_FORMAT_V1, 0xff]),
            Err(DecodeError::Postcard(_))
        ));
        let bad_source = RawRoundV1 {
            source: 42,
            ..RawRoundV1::from_round(&round())
        };
        assert!(matches!(
            bad_source.into_round(TargetId::new("t").unwrap(), 0),
            Err(DecodeError::UnknownSource(42))
        ));
    }
}

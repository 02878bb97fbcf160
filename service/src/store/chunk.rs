//! Compressed chunks of one target's rounds: the raw history's on-disk form
//! from store format 2 on (issue 15), in place of one postcard value per round.
//!
//! # Why columns
//! A round value repeats what barely changes (every hop's TTL and responder
//! address, the start time, the timestamp source) and stores each RTT as a
//! nanosecond varint: about 13–15 bytes per hop sample. A chunk turns the
//! rounds on their side: one column per hop, so each column is one path
//! position over time, where consecutive values are alike:
//! - round start times as the change of the interval (zeros while on schedule),
//!   sequence numbers as the step beyond one (zeros without gaps);
//! - per hop: which rounds have a sample (run lengths), the responder as an
//!   index into the chunk's address dictionary (an address is written once per
//!   chunk, not once per sample), whether it was the destination (run lengths),
//!   and the RTT in whole microseconds above the column's minimum, 0 for lost;
//! - all of it postcard-encoded (varints, zig-zag for signed), then zstd, whose
//!   entropy stage packs the near-constant columns into almost nothing.
//!
//! # Resolution
//! RTTs are kept to the nearest microsecond, the resolution of the product's
//! claim; nanoseconds below that are the clock's noise and would cost about a
//! byte and a quarter per sample. Everything else in a round survives exactly,
//! except `reply_ttl` and `quote`, which no stored form keeps.
//!
//! Measured with `cargo run --release -p hopwatch-service --example store_chunk`
//! (see docs/benchmarks.md, "History chunks").

use std::io::Read;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::codec::{source_code, source_of_code};
use crate::model::{HopOutcome, HopSample, RoundRecord, TargetId};
use crate::probe::{Rtt, TimestampSource, Ttl};

/// The format byte every chunk value starts with (round values use 1).
pub const CHUNK_FORMAT: u8 = 2;

/// zstd's level for chunks. Measured on a day of 10-hop rounds in chunks of
/// 600: level 3 is within 1-6 % of level 19's size at 1/200 of its time
/// (0.26 ms against 56 ms a chunk; level 19 also allocates a large context).
const ZSTD_LEVEL: i32 = 3;

/// The most a chunk's columns may take once decompressed: far above any
/// chunk the store writes (a day of 30-hop rounds is about 2 MiB).
const MAX_BODY_BYTES: u64 = 64 << 20;

/// Why a chunk could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk is empty")]
    Empty,
    #[error("chunk format {found} is unknown (this release reads format {CHUNK_FORMAT})")]
    UnknownFormat { found: u8 },
    #[error("chunk does not decompress: {0}")]
    Zstd(std::io::Error),
    #[error("chunk does not decode: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("chunk is inconsistent: {0}")]
    Inconsistent(&'static str),
    #[error("unknown timestamp source code {0}")]
    UnknownSource(u8),
    #[error("hop does not decode: {0}")]
    InvalidHop(#[from] crate::model::InvalidHopSample),
}

/// The columns of one chunk, as postcard sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Columns {
    first_at_ms: u64,
    first_seq: u64,
    /// Per later round: its interval minus the previous interval, in ms.
    interval_changes: Vec<i64>,
    /// Per later round: its sequence step minus one (0 without a gap).
    seq_gaps: Vec<u64>,
    /// Per round: the destination's TTL, 0 when it did not answer.
    destination_ttl: Vec<u8>,
    /// Per round: the timestamp source's code.
    source: Vec<u8>,
    /// Every responder of the chunk, once.
    responders: Vec<IpAddr>,
    hops: Vec<HopColumn>,
}

/// One TTL's samples over the chunk's rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HopColumn {
    ttl: u8,
    /// Alternating run lengths over rounds, starting with rounds that have a
    /// sample at this TTL (the first run may be 0).
    present: Vec<u32>,
    /// Per sample: 0 for no responder, else 1 + its index in `responders`.
    responder: Vec<u32>,
    /// Alternating run lengths over samples, starting with those that are not
    /// the destination.
    reached: Vec<u32>,
    /// The smallest RTT of the column, µs.
    min_rtt_us: u64,
    /// Per sample: 0 when lost, else 1 + its RTT in µs above `min_rtt_us`.
    rtt: Vec<u64>,
}

fn source_from_code(code: u8) -> Result<TimestampSource, ChunkError> {
    source_of_code(code).ok_or(ChunkError::UnknownSource(code))
}

/// `rtt` to the nearest microsecond: the resolution every stored form keeps.
pub(crate) fn to_us(rtt: Rtt) -> u64 {
    rtt.as_nanos().saturating_add(500) / 1_000
}

/// `round` as a chunk gives it back: RTTs to the nearest microsecond and no
/// reply TTL or quote reading. The store rolls up rounds in this form, so a minute rolled up
/// from rounds in memory equals one recomputed from the files.
pub fn as_stored(round: &mut RoundRecord) {
    for hop in &mut round.hops {
        if let HopOutcome::Answered(answer) = &mut hop.outcome {
            answer.rtt = Rtt::from_nanos(to_us(answer.rtt).saturating_mul(1_000));
            answer.reply_ttl = None;
            answer.quote = None;
        }
    }
}

/// Run lengths of `flags`, alternating, starting with a run of `true`.
fn runs(flags: impl Iterator<Item = bool>) -> Vec<u32> {
    let mut out = vec![0u32];
    let mut current = true;
    for flag in flags {
        if flag != current {
            out.push(0);
            current = flag;
        }
        *out.last_mut().expect("never empty") += 1;
    }
    out
}

/// The flags of alternating run lengths (see [`runs`]).
fn unrun(runs: &[u32]) -> impl Iterator<Item = bool> + '_ {
    runs.iter()
        .enumerate()
        .flat_map(|(i, n)| std::iter::repeat_n(i % 2 == 0, *n as usize))
}

/// Encodes the rounds of one target, oldest first, as one chunk value.
/// The rounds' target is not stored: it is in the chunk's key.
pub fn encode(rounds: &[RoundRecord]) -> Vec<u8> {
    let body = encode_columns(rounds);
    let mut out = vec![CHUNK_FORMAT];
    super::compress::compress_onto(&body, ZSTD_LEVEL, &mut out);
    out
}

/// The columns of [`encode`] before compression: for a writer that
/// compresses many of them in one stream (a journal), where each alone is
/// too short for zstd to find its repetitions.
pub fn encode_columns(rounds: &[RoundRecord]) -> Vec<u8> {
    postcard::to_allocvec(&columns(rounds)).expect("postcard encodes chunk columns into a Vec")
}

fn columns(rounds: &[RoundRecord]) -> Columns {
    let first = rounds.first();
    let mut interval_changes = Vec::with_capacity(rounds.len().saturating_sub(1));
    let mut seq_gaps = Vec::with_capacity(rounds.len().saturating_sub(1));
    let mut previous_interval = 0i64;
    for pair in rounds.windows(2) {
        let interval = pair[1].started_at_ms as i64 - pair[0].started_at_ms as i64;
        interval_changes.push(interval - previous_interval);
        previous_interval = interval;
        seq_gaps.push(pair[1].seq.saturating_sub(pair[0].seq).saturating_sub(1));
    }
    let mut ttls: Vec<Ttl> = rounds
        .iter()
        .flat_map(|r| r.hops.iter().map(|h| h.ttl))
        .collect();
    ttls.sort_unstable();
    ttls.dedup();
    let mut responders: Vec<IpAddr> = Vec::new();
    let hops = ttls
        .into_iter()
        .map(|ttl| {
            let samples: Vec<Option<&HopSample>> = rounds
                .iter()
                .map(|r| r.hops.iter().find(|h| h.ttl == ttl))
                .collect();
            let present: Vec<&HopSample> = samples.iter().flatten().copied().collect();
            let responder = present
                .iter()
                .map(|h| match h.responder() {
                    None => 0,
                    Some(addr) => {
                        let index =
                            responders
                                .iter()
                                .position(|a| *a == addr)
                                .unwrap_or_else(|| {
                                    responders.push(addr);
                                    responders.len() - 1
                                });
                        index as u32 + 1
                    }
                })
                .collect();
            let min_rtt_us = present
                .iter()
                .filter_map(|h| h.rtt().map(to_us))
                .min()
                .unwrap_or(0);
            HopColumn {
                ttl: ttl.get(),
                present: runs(samples.iter().map(Option::is_some)),
                responder,
                reached: runs(present.iter().map(|h| !h.reached())),
                min_rtt_us,
                rtt: present
                    .iter()
                    .map(|h| h.rtt().map_or(0, |rtt| to_us(rtt) - min_rtt_us + 1))
                    .collect(),
            }
        })
        .collect();
    Columns {
        first_at_ms: first.map_or(0, |r| r.started_at_ms),
        first_seq: first.map_or(0, |r| r.seq),
        interval_changes,
        seq_gaps,
        destination_ttl: rounds
            .iter()
            .map(|r| r.destination_ttl.map_or(0, Ttl::get))
            .collect(),
        source: rounds.iter().map(|r| source_code(r.source)).collect(),
        responders,
        hops,
    }
}

/// Decodes a chunk written by [`encode`] back into `target`'s rounds.
pub fn decode(bytes: &[u8], target: &TargetId) -> Result<Vec<RoundRecord>, ChunkError> {
    let body = match bytes.split_first() {
        None => return Err(ChunkError::Empty),
        Some((&CHUNK_FORMAT, body)) => body,
        Some((&found, _)) => return Err(ChunkError::UnknownFormat { found }),
    };
    // Bounded, so a damaged length in a corrupt file cannot claim gigabytes.
    let mut columns_bytes = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .and_then(|decoder| decoder.take(MAX_BODY_BYTES).read_to_end(&mut columns_bytes))
        .map_err(ChunkError::Zstd)?;
    let columns: Columns = postcard::from_bytes(&columns_bytes)?;
    rounds(columns, target)
}

fn rounds(c: Columns, target: &TargetId) -> Result<Vec<RoundRecord>, ChunkError> {
    let n = c.destination_ttl.len();
    if c.source.len() != n
        || c.interval_changes.len() != n.saturating_sub(1)
        || c.seq_gaps.len() != c.interval_changes.len()
    {
        return Err(ChunkError::Inconsistent("round columns differ in length"));
    }
    let mut out = Vec::with_capacity(n);
    let (mut at_ms, mut seq, mut interval) = (c.first_at_ms, c.first_seq, 0i64);
    for i in 0..n {
        if i > 0 {
            interval += c.interval_changes[i - 1];
            at_ms = at_ms
                .checked_add_signed(interval)
                .ok_or(ChunkError::Inconsistent("round time out of range"))?;
            seq = seq
                .checked_add(c.seq_gaps[i - 1] + 1)
                .ok_or(ChunkError::Inconsistent("sequence number out of range"))?;
        }
        out.push(RoundRecord {
            target: target.clone(),
            seq,
            started_at_ms: at_ms,
            hops: Vec::new(),
            destination_ttl: Ttl::new(c.destination_ttl[i]),
            source: source_from_code(c.source[i])?,
        });
    }
    for hop in &c.hops {
        let present: Vec<bool> = unrun(&hop.present).collect();
        let reached: Vec<bool> = unrun(&hop.reached)
            .map(|not_reached| !not_reached)
            .collect();
        let samples = hop.responder.len();
        if present.len() != n
            || present.iter().filter(|p| **p).count() != samples
            || hop.rtt.len() != samples
            || reached.len() != samples
        {
            return Err(ChunkError::Inconsistent(
                "hop column lengths do not match its rounds",
            ));
        }
        let rounds_with_sample = out.iter_mut().zip(&present).filter(|(_, p)| **p);
        for (sample, (round, _)) in rounds_with_sample.enumerate() {
            let responder =
                match hop.responder[sample] {
                    0 => None,
                    k => Some(*c.responders.get(k as usize - 1).ok_or(
                        ChunkError::Inconsistent("responder index beyond the dictionary"),
                    )?),
                };
            let rtt = match hop.rtt[sample] {
                0 => None,
                v => Some(Rtt::from_nanos(
                    (hop.min_rtt_us + v - 1).saturating_mul(1_000),
                )),
            };
            round.hops.push(HopSample::from_parts(
                hop.ttl,
                responder,
                rtt,
                reached[sample],
            )?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HopAnswer;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn round(seq: u64, at_ms: u64, hops: Vec<HopSample>) -> RoundRecord {
        let destination_ttl = hops.iter().find(|h| h.reached()).map(|h| h.ttl);
        RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq,
            started_at_ms: at_ms,
            hops,
            destination_ttl,
            source: TimestampSource::Ebpf,
        }
    }

    /// An answer from `responder` after `rtt_us`, or a loss when both are `None`.
    fn sample(ttl: u8, responder: Option<IpAddr>, rtt_us: Option<u64>, reached: bool) -> HopSample {
        let ttl = Ttl::new(ttl).unwrap();
        match (responder, rtt_us) {
            (Some(responder), Some(us)) => HopSample::answered(
                ttl,
                HopAnswer {
                    responder,
                    rtt: Rtt::from_nanos(us * 1_000),
                    is_destination: reached,
                    reply_ttl: None,
                    quote: None,
                },
            ),
            (None, None) => HopSample::lost(ttl),
            _ => panic!("a sample has both a responder and an RTT, or neither"),
        }
    }

    fn with_rtt_ns(sample: HopSample, ns: u64) -> HopSample {
        let answer = sample.answer().expect("an answered sample");
        HopSample::answered(
            sample.ttl,
            HopAnswer {
                rtt: Rtt::from_nanos(ns),
                ..*answer
            },
        )
    }

    fn v4(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)))
    }

    #[test]
    fn rounds_survive_a_chunk_exactly_at_microsecond_resolution() {
        let v6 = Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)));
        let rounds = vec![
            round(
                10,
                1_000,
                vec![
                    sample(1, v4(1), Some(120), false),
                    sample(2, v6, Some(900), true),
                ],
            ),
            // A gap in the sequence, a late start, a lost hop.
            round(
                12,
                3_050,
                vec![
                    sample(1, None, None, false),
                    sample(2, v6, Some(1_250), true),
                ],
            ),
            // The path grows: hop 2 is an intermediate now, hop 3 the destination.
            round(
                13,
                4_050,
                vec![
                    sample(1, v4(1), Some(118), false),
                    sample(2, v4(9), Some(700), false),
                    sample(3, v6, Some(1_400), true),
                ],
            ),
            // Nothing answers but hop 3, and hop 1 was never sent.
            round(
                14,
                5_049,
                vec![
                    sample(2, None, None, false),
                    sample(3, v6, Some(1_390), true),
                ],
            ),
        ];
        let mut sourced = rounds.clone();
        sourced[1].source = TimestampSource::Userspace;
        let back = decode(&encode(&sourced), &TargetId::new("t").unwrap()).unwrap();
        assert_eq!(back, sourced);
    }

    /// Rounds covering every column: answered, lost and absent samples, a
    /// responder that changes, the destination moving, a sequence gap, two
    /// timestamp sources.
    fn pinned_rounds() -> Vec<RoundRecord> {
        let v6 = Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)));
        let mut rounds = vec![
            round(
                10,
                1_000,
                vec![
                    sample(1, v4(1), Some(120), false),
                    sample(2, v6, Some(900), true),
                ],
            ),
            round(
                12,
                3_050,
                vec![
                    sample(1, None, None, false),
                    sample(2, v6, Some(1_250), true),
                ],
            ),
            round(
                13,
                4_050,
                vec![
                    sample(1, v4(1), Some(118), false),
                    sample(2, v4(9), Some(700), false),
                    sample(3, v6, Some(1_400), true),
                ],
            ),
        ];
        rounds[1].source = TimestampSource::Userspace;
        rounds
    }

    /// The columns of [`pinned_rounds`] as format 2 laid them out when this
    /// test was added, before compression (zstd's output may differ between
    /// its versions; what it decompresses to may not).
    const PINNED_COLUMNS_HEX: &str = concat!(
        "e8070a028420b31002010003020203030002000300c61200010120010db800000000",
        "000000000000000700c61200090301010303010001010376030300010201030302",
        "020303000201bc0503c901a7040103030002010102020001f80a0101",
    );

    /// A whole chunk of [`pinned_rounds`] as written when this test was added.
    const PINNED_CHUNK_HEX: &str = concat!(
        "0228b52ffd00583d0200e2040f18c067387bdf97b229afff1afaff7ffdb30e6cb2d8",
        "889449068f9a473ed70e1c2f0d943b5f5bf477fb1596d6ce9261f54b6b1dd792dd24",
        "1065101d2602006495c71bc803",
    );

    #[test]
    fn the_format_2_layout_is_pinned() {
        let rounds = pinned_rounds();
        let body = postcard::to_allocvec(&columns(&rounds)).unwrap();
        assert_eq!(hex::encode(&body), PINNED_COLUMNS_HEX);
        let stored = hex::decode(PINNED_CHUNK_HEX).unwrap();
        assert_eq!(
            decode(&stored, &TargetId::new("t").unwrap()).unwrap(),
            rounds
        );
    }

    #[test]
    fn nanoseconds_round_to_the_nearest_microsecond() {
        let mut r = round(1, 0, vec![sample(1, v4(1), Some(5), true)]);
        r.hops[0] = with_rtt_ns(r.hops[0], 5_499);
        let back = decode(&encode(&[r.clone()]), &r.target).unwrap();
        assert_eq!(back[0].hops[0].rtt(), Some(Rtt::from_nanos(5_000)));
        r.hops[0] = with_rtt_ns(r.hops[0], 5_500);
        let back = decode(&encode(&[r.clone()]), &r.target).unwrap();
        assert_eq!(back[0].hops[0].rtt(), Some(Rtt::from_nanos(6_000)));
    }

    #[test]
    fn an_empty_chunk_is_no_rounds() {
        let target = TargetId::new("t").unwrap();
        assert_eq!(decode(&encode(&[]), &target).unwrap(), vec![]);
    }

    #[test]
    fn damaged_chunks_are_errors_that_say_why() {
        let target = TargetId::new("t").unwrap();
        let rounds = [round(1, 0, vec![sample(1, v4(1), Some(5), true)])];
        let good = encode(&rounds);
        assert!(matches!(decode(&[], &target), Err(ChunkError::Empty)));
        assert!(matches!(
            decode(&[1, 2, 3], &target),
            Err(ChunkError::UnknownFormat { found: 1 })
        ));
        assert!(matches!(
            decode(&good[..good.len() / 2], &target),
            Err(ChunkError::Zstd(_))
        ));
        // Well-formed zstd around columns that do not fit together.
        let mut columns = columns(&rounds);
        columns.hops[0].rtt.push(7);
        let body = postcard::to_allocvec(&columns).unwrap();
        let mut bad = vec![CHUNK_FORMAT];
        bad.extend(zstd::stream::encode_all(body.as_slice(), 1).unwrap());
        let err = decode(&bad, &target).unwrap_err();
        assert!(err.to_string().contains("hop column lengths"), "{err}");
        // An RTT for a sample without a responder: no probe ends like that.
        let mut unanswered = super::columns(&rounds);
        unanswered.hops[0].responder[0] = 0;
        let body = postcard::to_allocvec(&unanswered).unwrap();
        let mut bad = vec![CHUNK_FORMAT];
        bad.extend(zstd::stream::encode_all(body.as_slice(), 1).unwrap());
        assert!(matches!(
            decode(&bad, &target),
            Err(ChunkError::InvalidHop(_))
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let target = TargetId::new("t").unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2_000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let mut framed = vec![CHUNK_FORMAT];
            framed.extend(&bytes);
            let _ = decode(&framed, &target);
        }
    }
}

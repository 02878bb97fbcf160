//! A series' rounds waiting in the write buffer, packed as they arrive.
//!
//! A minute of rounds waits in memory for the flush: at 1,000 10-hop
//! targets that was 60,000 postcard round values of ~120 bytes, each in its
//! own allocation (~9 KiB a target, the largest per-target cost left in the
//! daemon's memory; docs/benchmarks.md, "The daemon's memory at 10 hops").
//! A pack keeps the same rounds in about a fifth of that (three to four
//! bytes a hop sample, in one allocation) by writing each one against what
//! the pack already knows:
//! - the start time and sequence number as the step from the round before
//!   (zig-zag varints, so rounds that arrive out of order still pack);
//! - per hop, one head byte: answered, reached the destination, TTL one
//!   more than the hop before (else the TTL follows), and the responder as
//!   an index into the pack's address list (an address is kept once per
//!   pack, not once per sample);
//! - the RTT in whole microseconds, the resolution every stored form keeps
//!   ([`super::chunk::as_stored`]), as the difference from the first RTT the
//!   pack saw at that TTL: jitter around a path's latency takes a byte or two.
//!
//! The first RTT per TTL and the address list live beside the bytes and
//! never change once set, so the oldest round can be cut off the front (the
//! buffer's cap drops the oldest rounds first) without rewriting the rest.
//! Rounds come back exactly as [`super::chunk::as_stored`] gives them.

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::chunk::to_us;
use super::codec::{source_code, source_of_code};
use crate::model::{HopSample, RoundRecord, TargetId};
use crate::probe::{Rtt, TimestampSource, Ttl};

/// Head bit: the hop answered (an RTT difference follows).
const ANSWERED: u8 = 1;
/// Head bit: the answer came from the destination.
const REACHED: u8 = 1 << 1;
/// Head bit: the TTL is one more than the previous hop's (else a byte follows).
const NEXT_TTL: u8 = 1 << 2;
/// Responder indexes below this fit in the head's top five bits; at it, the
/// index follows as a varint.
const INLINE_RESPONDERS: u8 = 31;
/// The first RTT at a TTL that has not answered yet.
const NO_REFERENCE: u32 = u32::MAX;

/// One series' rounds, packed (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedRounds {
    /// Start time and sequence number the first kept round steps from.
    base_at_ms: u64,
    base_seq: u64,
    /// The newest round's, which the next round steps from.
    last_at_ms: u64,
    last_seq: u64,
    rounds: usize,
    /// Where the first kept round starts in `bytes` (cut rounds are only
    /// skipped until they make up half the buffer).
    start: usize,
    bytes: Vec<u8>,
    /// Every responder the pack has seen, in order of first sight.
    responders: Vec<IpAddr>,
    /// Per TTL (index TTL − 1): the first RTT seen there, µs.
    reference_rtt_us: Vec<u32>,
}

/// Why a pack could not be read: a bug in this module, never bad input (a
/// pack lives in memory only and reads what it wrote).
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("a packed round does not decode: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("a packed round is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// A decoded round's hops, destination TTL and timestamp source.
type Decoded = (Vec<HopSample>, Option<Ttl>, TimestampSource);

fn put<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    // Scalars onto a Vec: postcard fails only when a serializer does.
    *out = postcard::to_extend(value, std::mem::take(out)).expect("postcard encodes a scalar");
}

fn take<T: DeserializeOwned>(bytes: &mut &[u8]) -> Result<T, PackError> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    *bytes = rest;
    Ok(value)
}

fn step(from: u64, to: u64) -> i64 {
    to.wrapping_sub(from) as i64
}

fn apply(base: u64, step: i64) -> u64 {
    base.wrapping_add(step as u64)
}

impl PackedRounds {
    /// Rounds kept.
    pub fn len(&self) -> usize {
        self.rounds
    }

    pub fn is_empty(&self) -> bool {
        self.rounds == 0
    }

    /// The memory it holds for its rounds, in bytes: what the write
    /// buffer's cap counts.
    pub fn bytes(&self) -> usize {
        self.bytes.len() - self.start
            + self.responders.len() * std::mem::size_of::<IpAddr>()
            + self.reference_rtt_us.len() * 4
    }

    /// Adds `round` (its target is not kept: the pack belongs to one series).
    pub fn push(&mut self, round: &RoundRecord) {
        if self.rounds == 0 {
            self.base_at_ms = round.started_at_ms;
            self.base_seq = round.seq;
            self.last_at_ms = round.started_at_ms;
            self.last_seq = round.seq;
        }
        let mut out = std::mem::take(&mut self.bytes);
        put(&mut out, &step(self.last_at_ms, round.started_at_ms));
        put(&mut out, &step(self.last_seq, round.seq));
        out.push(source_code(round.source));
        out.push(round.destination_ttl.map_or(0, Ttl::get));
        put(&mut out, &round.hops.len());
        let mut previous_ttl = 0u8;
        for hop in &round.hops {
            let ttl = hop.ttl.get();
            let mut head = 0u8;
            if ttl == previous_ttl.wrapping_add(1) {
                head |= NEXT_TTL;
            }
            previous_ttl = ttl;
            let answer = hop.responder().zip(hop.rtt());
            let responder = answer.map(|(address, _)| self.responder_index(address));
            if let Some(index) = responder {
                head |= ANSWERED;
                if hop.reached() {
                    head |= REACHED;
                }
                head |= (index.min(usize::from(INLINE_RESPONDERS)) as u8) << 3;
            }
            out.push(head);
            if head & NEXT_TTL == 0 {
                out.push(ttl);
            }
            if let (Some(index), Some((_, rtt))) = (responder, answer) {
                if index >= usize::from(INLINE_RESPONDERS) {
                    put(&mut out, &index);
                }
                let rtt_us = to_us(rtt);
                let reference = self.reference(ttl, rtt_us);
                put(&mut out, &(rtt_us as i64 - i64::from(reference)));
            }
        }
        self.bytes = out;
        self.last_at_ms = round.started_at_ms;
        self.last_seq = round.seq;
        self.rounds += 1;
    }

    fn responder_index(&mut self, address: IpAddr) -> usize {
        if let Some(index) = self.responders.iter().position(|a| *a == address) {
            return index;
        }
        self.responders.reserve_exact(1);
        self.responders.push(address);
        self.responders.len() - 1
    }

    /// The first RTT at `ttl`, set to `rtt_us` if this is it.
    fn reference(&mut self, ttl: u8, rtt_us: u64) -> u32 {
        let index = usize::from(ttl) - 1;
        if self.reference_rtt_us.len() <= index {
            self.reference_rtt_us
                .reserve_exact(index + 1 - self.reference_rtt_us.len());
            self.reference_rtt_us.resize(index + 1, NO_REFERENCE);
        }
        let slot = &mut self.reference_rtt_us[index];
        if *slot == NO_REFERENCE {
            *slot = rtt_us.min(u64::from(NO_REFERENCE - 1)) as u32;
        }
        *slot
    }

    /// Cuts the oldest round off; `false` if there was none.
    pub fn drop_first(&mut self) -> bool {
        if self.rounds == 0 {
            return false;
        }
        let mut rest = &self.bytes[self.start..];
        let before = rest.len();
        let mut at_ms = self.base_at_ms;
        let mut seq = self.base_seq;
        self.decode_one(&mut rest, &mut at_ms, &mut seq)
            .expect("a pack decodes what it encoded");
        self.start += before - rest.len();
        self.base_at_ms = at_ms;
        self.base_seq = seq;
        self.rounds -= 1;
        if self.rounds == 0 {
            *self = PackedRounds::default();
        } else if self.start * 2 >= self.bytes.len() {
            self.bytes.drain(..self.start);
            self.bytes.shrink_to_fit();
            self.start = 0;
        }
        true
    }

    /// The kept rounds as `target`'s, in the order they were pushed.
    pub fn rounds(&self, target: &TargetId) -> Result<Vec<RoundRecord>, PackError> {
        let mut out = Vec::with_capacity(self.rounds);
        let mut rest = &self.bytes[self.start..];
        let (mut at_ms, mut seq) = (self.base_at_ms, self.base_seq);
        for _ in 0..self.rounds {
            let (hops, destination_ttl, source) =
                self.decode_one(&mut rest, &mut at_ms, &mut seq)?;
            out.push(RoundRecord {
                target: target.clone(),
                seq,
                started_at_ms: at_ms,
                hops,
                destination_ttl,
                source,
            });
        }
        if !rest.is_empty() {
            return Err(PackError::Inconsistent("bytes after the last round"));
        }
        Ok(out)
    }

    /// Decodes the round at the front of `bytes`, stepping `at_ms` and `seq`
    /// from the round before to its own: its hops, destination TTL and
    /// timestamp source.
    fn decode_one(
        &self,
        bytes: &mut &[u8],
        at_ms: &mut u64,
        seq: &mut u64,
    ) -> Result<Decoded, PackError> {
        *at_ms = apply(*at_ms, take(bytes)?);
        *seq = apply(*seq, take(bytes)?);
        let [source, destination_ttl] = take::<[u8; 2]>(bytes)?;
        let count: usize = take(bytes)?;
        let mut hops = Vec::with_capacity(count);
        let mut previous_ttl = 0u8;
        for _ in 0..count {
            let head: u8 = take(bytes)?;
            let ttl = if head & NEXT_TTL != 0 {
                previous_ttl.wrapping_add(1)
            } else {
                take(bytes)?
            };
            previous_ttl = ttl;
            let sample = if head & ANSWERED != 0 {
                let inline = head >> 3;
                let index = if inline == INLINE_RESPONDERS {
                    take(bytes)?
                } else {
                    usize::from(inline)
                };
                let responder = *self
                    .responders
                    .get(index)
                    .ok_or(PackError::Inconsistent("responder index out of range"))?;
                let difference: i64 = take(bytes)?;
                let reference = self
                    .reference_rtt_us
                    .get(usize::from(ttl).wrapping_sub(1))
                    .copied()
                    .filter(|r| *r != NO_REFERENCE)
                    .ok_or(PackError::Inconsistent(
                        "an RTT at a TTL without a first RTT",
                    ))?;
                let rtt_us = (i64::from(reference) + difference).max(0) as u64;
                HopSample::from_parts(
                    ttl,
                    Some(responder),
                    Some(Rtt::from_nanos(rtt_us.saturating_mul(1_000))),
                    head & REACHED != 0,
                )
            } else {
                HopSample::from_parts(ttl, None, None, false)
            };
            hops.push(sample.map_err(|_| PackError::Inconsistent("a hop with TTL 0"))?);
        }
        let source =
            source_of_code(source).ok_or(PackError::Inconsistent("unknown timestamp source"))?;
        Ok((hops, Ttl::new(destination_ttl), source))
    }

    /// The start of the oldest round kept.
    pub fn first_at_ms(&self) -> Option<u64> {
        if self.rounds == 0 {
            return None;
        }
        let mut rest = &self.bytes[self.start..];
        take::<i64>(&mut rest)
            .ok()
            .map(|step| apply(self.base_at_ms, step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chunk::as_stored;
    use crate::store::codec::{encode, RawRoundV1};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn target() -> TargetId {
        TargetId::new("t").unwrap()
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    /// An answer from `responder` after `rtt_ns`, or a loss.
    fn hop(ttl: u8, answer: Option<(IpAddr, u64)>, reached: bool) -> HopSample {
        HopSample::from_parts(
            ttl,
            answer.map(|(a, _)| a),
            answer.map(|(_, ns)| Rtt::from_nanos(ns)),
            reached,
        )
        .unwrap()
    }

    fn round(seq: u64, at_ms: u64, hops: Vec<HopSample>) -> RoundRecord {
        let destination_ttl = hops.iter().find(|h| h.reached()).map(|h| h.ttl);
        RoundRecord {
            target: target(),
            seq,
            started_at_ms: at_ms,
            hops,
            destination_ttl,
            source: TimestampSource::Ebpf,
        }
    }

    /// Rounds that exercise every field: nanosecond RTTs above and below
    /// the first one at their TTL, IPv6, losses, TTLs that skip, a sequence
    /// gap, a round that started before the one pushed ahead of it, another
    /// timestamp source, more responders than the head byte holds, an RTT
    /// of zero and one of an hour.
    fn varied() -> Vec<RoundRecord> {
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
        let mut rounds = vec![
            round(
                7,
                1_000,
                vec![
                    hop(1, Some((v4(1), 120_400)), false),
                    hop(2, Some((v6, 20_000_600)), true),
                ],
            ),
            round(
                9,
                3_050,
                vec![hop(1, None, false), hop(2, Some((v6, 19_700_499)), true)],
            ),
            round(
                10,
                2_990,
                vec![
                    hop(1, Some((v4(1), 0)), false),
                    hop(3, Some((v4(9), 3_600_000_000_000)), false),
                    hop(30, Some((v6, 25_000_000)), true),
                ],
            ),
            round(11, 4_000, vec![hop(5, None, false)]),
        ];
        rounds[1].source = TimestampSource::Userspace;
        // 40 responders at hop 1, one a round: indexes past the inline ones.
        for i in 0..40u8 {
            rounds.push(round(
                12 + u64::from(i),
                5_000 + 1_000 * u64::from(i),
                vec![hop(1, Some((v4(100 + i), 500_000 + u64::from(i))), true)],
            ));
        }
        rounds
    }

    fn stored(rounds: &[RoundRecord]) -> Vec<RoundRecord> {
        rounds
            .iter()
            .cloned()
            .map(|mut r| {
                as_stored(&mut r);
                r
            })
            .collect()
    }

    fn pack(rounds: &[RoundRecord]) -> PackedRounds {
        let mut pack = PackedRounds::default();
        for r in rounds {
            pack.push(r);
        }
        pack
    }

    #[test]
    fn rounds_come_back_as_the_store_keeps_them() {
        let rounds = varied();
        let pack = pack(&rounds);
        assert_eq!(pack.len(), rounds.len());
        assert_eq!(pack.first_at_ms(), Some(1_000));
        assert_eq!(pack.rounds(&target()).unwrap(), stored(&rounds));
    }

    #[test]
    fn the_oldest_rounds_are_cut_off_without_changing_the_rest() {
        let rounds = varied();
        let mut pack = pack(&rounds);
        for cut in 1..rounds.len() {
            let before = pack.bytes();
            assert!(pack.drop_first());
            assert!(pack.bytes() < before, "cutting round {cut} frees memory");
            assert_eq!(pack.first_at_ms(), Some(rounds[cut].started_at_ms));
            assert_eq!(pack.rounds(&target()).unwrap(), stored(&rounds[cut..]));
        }
        assert!(pack.drop_first());
        assert!(pack.is_empty());
        assert!(!pack.drop_first());
        assert_eq!(pack, PackedRounds::default());
        // An emptied pack starts over.
        pack.push(&rounds[2]);
        assert_eq!(pack.rounds(&target()).unwrap(), stored(&rounds[2..3]));
    }

    /// A minute of a 10-hop path (2 ms a hop, up to 600 µs of jitter, a
    /// loss now and then) in a pack against the postcard values it replaces
    /// (2,263 bytes against 8,069 when written; each value also took a box
    /// and a deque slot).
    #[test]
    fn a_minute_of_ten_hop_rounds_packs_in_under_a_third_of_its_round_values() {
        let mut rounds = Vec::new();
        for i in 0..60u64 {
            let hops = (1..=10u8)
                .map(|ttl| {
                    let jitter = (i * 7_919 + u64::from(ttl) * 104_729) % 600_000;
                    let rtt = 2_000_000 * u64::from(ttl) + jitter;
                    let lost = (i + u64::from(ttl)) % 37 == 0;
                    hop(ttl, (!lost).then_some((v4(ttl), rtt)), ttl == 10 && !lost)
                })
                .collect();
            rounds.push(round(i, 1_000 * i, hops));
        }
        let pack = pack(&rounds);
        let values: usize = rounds
            .iter()
            .map(|r| encode(&RawRoundV1::from_round(r)).len())
            .sum();
        assert!(
            pack.bytes() * 3 <= values,
            "packed {} bytes against {values} in round values",
            pack.bytes()
        );
        assert_eq!(pack.rounds(&target()).unwrap(), stored(&rounds));
    }
}

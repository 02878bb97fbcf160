//! The in-memory write buffer: encoded writes waiting for the next flush,
//! and kept across failed flushes (a full disk) under a byte cap.
//!
//! A target's rounds wait packed ([`PackedRounds`], a few bytes a hop), one
//! pack per series and flush interval; a peer's batches wait as their
//! stored values. Past the cap the oldest rounds are dropped first (those of
//! earlier failed flushes, then peers' batches, then the oldest of this
//! interval's), then the oldest events; new target and peer names are never
//! dropped (they are tiny and later data needs them). Rollups are not
//! buffered: they are derived from stored raw rounds at flush time, so a
//! dropped round is simply absent from both.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::model::{RoundRecord, TargetId};
use crate::store::keys::{raw_key, TargetNum};
use crate::store::packed::PackedRounds;

/// One encoded peer batch, waiting for the flush: its key's parts rather
/// than the key, and the value in a box of its exact length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub target: TargetNum,
    pub at_ms: u64,
    pub value: Box<[u8]>,
}

impl RawEntry {
    pub fn new(target: TargetNum, at_ms: u64, value: Vec<u8>) -> RawEntry {
        RawEntry {
            target,
            at_ms,
            value: value.into_boxed_slice(),
        }
    }

    /// The key it is stored under.
    pub fn key(&self) -> [u8; 12] {
        raw_key(self.target, self.at_ms)
    }

    fn bytes(&self) -> usize {
        self.key().len() + self.value.len()
    }
}

/// One encoded key/value pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.key.len() + self.value.len()
    }
}

/// What enforcing the cap dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub rounds: u64,
    pub events: u64,
}

/// Writes waiting for a flush, oldest first.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    pub new_targets: Vec<(TargetNum, TargetId)>,
    /// New peers (see `store::peers`), written next to the targets.
    pub new_peers: Vec<(TargetNum, TargetId)>,
    /// Targets' rounds since the last flush, one pack per series.
    open_packs: HashMap<TargetNum, PackedRounds>,
    /// Targets' rounds of earlier flushes that failed, oldest first.
    kept_packs: VecDeque<(TargetNum, PackedRounds)>,
    /// Peers' batches, oldest first.
    pub raw: VecDeque<RawEntry>,
    pub events: VecDeque<Entry>,
    bytes: usize,
}

impl WriteBuffer {
    pub fn is_empty(&self) -> bool {
        self.new_targets.is_empty()
            && self.new_peers.is_empty()
            && self.open_packs.is_empty()
            && self.kept_packs.is_empty()
            && self.raw.is_empty()
            && self.events.is_empty()
    }

    /// Targets' rounds buffered.
    pub fn rounds(&self) -> usize {
        self.packs().map(|(_, pack)| pack.len()).sum()
    }

    /// Every target's packs, those of failed flushes first.
    pub fn packs(&self) -> impl Iterator<Item = (TargetNum, &PackedRounds)> {
        self.kept_packs
            .iter()
            .map(|(num, pack)| (*num, pack))
            .chain(self.open_packs.iter().map(|(num, pack)| (*num, pack)))
    }

    /// `target`'s packs, oldest first.
    fn packs_of(&self, target: TargetNum) -> impl Iterator<Item = &PackedRounds> {
        self.kept_packs
            .iter()
            .filter(move |(num, _)| *num == target)
            .map(|(_, pack)| pack)
            .chain(self.open_packs.get(&target))
    }

    /// Every series' packs, oldest first, in series number order (one
    /// pass: a long full disk leaves many packs).
    pub fn packs_by_series(&self) -> BTreeMap<TargetNum, Vec<&PackedRounds>> {
        let mut by_series: BTreeMap<TargetNum, Vec<&PackedRounds>> = BTreeMap::new();
        for (num, pack) in self.packs() {
            by_series.entry(num).or_default().push(pack);
        }
        by_series
    }

    /// Series `num`'s buffered rounds as `name`'s, in the order they came.
    pub fn rounds_of(&self, num: TargetNum, name: &TargetId) -> Vec<RoundRecord> {
        unpack(self.packs_of(num), name)
    }

    /// Bytes of keys and values buffered (target names included).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push_target(&mut self, num: TargetNum, id: TargetId) {
        self.bytes += id.as_str().len() + 4;
        self.new_targets.push((num, id));
    }

    pub fn push_peer(&mut self, num: TargetNum, id: TargetId) {
        self.bytes += crate::store::peers::PEER_KEY_PREFIX.len() + id.as_str().len() + 4;
        self.new_peers.push((num, id));
    }

    /// Buffers `round` as series `num`'s.
    pub fn push_round(&mut self, num: TargetNum, round: &RoundRecord) {
        let pack = self.open_packs.entry(num).or_default();
        let before = pack.bytes();
        pack.push(round);
        self.bytes += pack.bytes() - before;
    }

    pub fn push_raw(&mut self, entry: RawEntry) {
        self.bytes += entry.bytes();
        self.raw.push_back(entry);
    }

    pub fn push_event(&mut self, entry: Entry) {
        self.bytes += entry.bytes();
        self.events.push_back(entry);
    }

    /// Puts `newer` after everything in `self` (used to put a failed flush's
    /// writes back in front of what arrived meanwhile).
    pub fn append(&mut self, mut newer: WriteBuffer) {
        self.new_targets.append(&mut newer.new_targets);
        self.new_peers.append(&mut newer.new_peers);
        let mut closed: Vec<(TargetNum, PackedRounds)> = self.open_packs.drain().collect();
        closed.sort_by_key(|(num, pack)| (pack.first_at_ms(), *num));
        self.kept_packs.extend(closed);
        self.kept_packs.append(&mut newer.kept_packs);
        self.open_packs = newer.open_packs;
        self.raw.append(&mut newer.raw);
        self.events.append(&mut newer.events);
        self.bytes += newer.bytes;
    }

    /// Drops the oldest raw rounds, then the oldest events, until at most
    /// `cap` bytes are buffered.
    pub fn enforce_cap(&mut self, cap: usize) -> Dropped {
        let mut dropped = Dropped::default();
        while self.bytes > cap {
            if self.drop_oldest_round() {
                dropped.rounds += 1;
            } else if let Some(e) = self.events.pop_front() {
                self.bytes -= e.bytes();
                dropped.events += 1;
            } else {
                break;
            }
        }
        dropped
    }

    /// Drops the oldest round: of a failed flush's packs, else a peer's
    /// batch, else the round that started first among this interval's
    /// packs. `false` if no round is buffered.
    fn drop_oldest_round(&mut self) -> bool {
        if let Some((_, pack)) = self.kept_packs.front_mut() {
            self.bytes -= cut_first(pack);
            if pack.is_empty() {
                self.kept_packs.pop_front();
            }
            return true;
        }
        if let Some(e) = self.raw.pop_front() {
            self.bytes -= e.bytes();
            return true;
        }
        let Some(oldest) = self
            .open_packs
            .iter()
            .min_by_key(|(num, pack)| (pack.first_at_ms(), **num))
            .map(|(num, _)| *num)
        else {
            return false;
        };
        let pack = self.open_packs.get_mut(&oldest).expect("just found");
        self.bytes -= cut_first(pack);
        if pack.is_empty() {
            self.open_packs.remove(&oldest);
        }
        true
    }
}

/// The rounds of one series' `packs` as `name`'s, in the order they came
/// (a pack that does not read back is logged and skipped: a bug, since
/// packs live in memory only).
pub fn unpack<'a>(
    packs: impl IntoIterator<Item = &'a PackedRounds>,
    name: &TargetId,
) -> Vec<RoundRecord> {
    let mut rounds = Vec::new();
    for pack in packs {
        match pack.rounds(name) {
            Ok(found) => rounds.extend(found),
            Err(error) => tracing::error!(target = %name, %error, "buffered rounds unreadable"),
        }
    }
    rounds
}

/// Cuts `pack`'s oldest round off; the bytes that freed.
fn cut_first(pack: &mut PackedRounds) -> usize {
    let before = pack.bytes();
    pack.drop_first();
    before - pack.bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tag: u8, len: usize) -> Entry {
        Entry {
            key: vec![tag; 4],
            value: vec![0; len - 4],
        }
    }

    /// A peer's batch under number `tag` whose key and value take `len` bytes.
    fn round(tag: u8, len: usize) -> RawEntry {
        RawEntry::new(TargetNum(u32::from(tag)), 0, vec![0; len - 12])
    }

    #[test]
    fn the_cap_drops_the_oldest_rounds_before_any_event() {
        let mut buf = WriteBuffer::default();
        buf.push_target(TargetNum(1), TargetId::new("ab").unwrap());
        for tag in 0..5 {
            buf.push_raw(round(tag, 100));
        }
        buf.push_event(entry(50, 100));
        buf.push_event(entry(51, 100));
        assert_eq!(buf.bytes(), 6 + 700);

        let dropped = buf.enforce_cap(500);
        assert_eq!(
            dropped,
            Dropped {
                rounds: 3,
                events: 0
            }
        );
        let left: Vec<u32> = buf.raw.iter().map(|e| e.target.0).collect();
        assert_eq!(left, vec![3, 4], "the newest rounds are kept");
        assert_eq!(buf.events.len(), 2);

        let dropped = buf.enforce_cap(110);
        assert_eq!(
            dropped,
            Dropped {
                rounds: 2,
                events: 1
            }
        );
        assert_eq!(buf.events[0].key[0], 51);
        assert_eq!(buf.new_targets.len(), 1, "target names are never dropped");
        assert_eq!(buf.bytes(), 106);
    }

    #[test]
    fn a_failed_flush_goes_back_in_front_of_newer_writes() {
        let mut failed = WriteBuffer::default();
        failed.push_raw(round(1, 20));
        let mut newer = WriteBuffer::default();
        newer.push_raw(round(2, 20));
        failed.append(newer);
        let order: Vec<u32> = failed.raw.iter().map(|e| e.target.0).collect();
        assert_eq!(order, vec![1, 2]);
        assert_eq!(failed.bytes(), 40);
        assert_eq!(failed.enforce_cap(20).rounds, 1);
        assert_eq!(failed.raw[0].target, TargetNum(2));
    }

    /// A one-hop round of a target's that started at `at_ms`.
    fn target_round(at_ms: u64) -> RoundRecord {
        let hop = crate::model::HopSample::from_parts(
            1,
            Some("198.18.0.1".parse().unwrap()),
            Some(crate::probe::Rtt::from_nanos(20_000_000 + at_ms)),
            true,
        )
        .unwrap();
        RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq: at_ms / 1_000,
            started_at_ms: at_ms,
            hops: vec![hop],
            destination_ttl: crate::probe::Ttl::new(1),
            source: crate::probe::TimestampSource::Ebpf,
        }
    }

    /// Start times of `num`'s buffered rounds, oldest first.
    fn starts(buf: &WriteBuffer, num: u32) -> Vec<u64> {
        buf.rounds_of(TargetNum(num), &TargetId::new("t").unwrap())
            .iter()
            .map(|r| r.started_at_ms)
            .collect()
    }

    #[test]
    fn targets_rounds_wait_packed_and_the_cap_drops_the_oldest_first() {
        // A failed flush's rounds of target 1, then newer rounds of targets
        // 1 and 2 (target 2's started earlier) and a peer's batch.
        let mut failed = WriteBuffer::default();
        for at in [1_000, 2_000] {
            failed.push_round(TargetNum(1), &target_round(at));
        }
        let mut newer = WriteBuffer::default();
        for at in [60_000, 61_000] {
            newer.push_round(TargetNum(1), &target_round(at));
        }
        for at in [59_000, 62_000] {
            newer.push_round(TargetNum(2), &target_round(at));
        }
        newer.push_raw(round(9, 40));
        failed.append(newer);
        assert_eq!(failed.rounds(), 6);
        assert_eq!(starts(&failed, 1), vec![1_000, 2_000, 60_000, 61_000]);
        let total = failed.bytes();
        let packs: usize = failed.packs().map(|(_, p)| p.bytes()).sum();
        assert_eq!(total, packs + 40, "the cap counts packed bytes");

        // The failed flush's rounds go first, then the peer's batch, then
        // this interval's oldest (target 2's first round).
        let mut dropped = Vec::new();
        while failed.rounds() + failed.raw.len() > 0 {
            let before = (starts(&failed, 1), starts(&failed, 2), failed.raw.len());
            assert_eq!(failed.enforce_cap(failed.bytes() - 1).rounds, 1);
            let after = (starts(&failed, 1), starts(&failed, 2), failed.raw.len());
            dropped.push(if before.0 != after.0 {
                before.0[0]
            } else if before.1 != after.1 {
                before.1[0]
            } else {
                0
            });
        }
        assert_eq!(
            dropped,
            vec![1_000, 2_000, 0, 59_000, 60_000, 61_000, 62_000]
        );
        assert_eq!(failed.bytes(), 0);
        assert!(failed.is_empty());
    }
}

//! The in-memory write buffer: encoded writes waiting for the next flush,
//! and kept across failed flushes (a full disk) under a byte cap.
//!
//! Past the cap the oldest raw rounds are dropped first, then the oldest
//! events; new target and peer names are never dropped (they are tiny and later data
//! needs them). Rollups are not buffered: they are derived from stored raw
//! rounds at flush time, so a dropped round is simply absent from both.

use std::collections::VecDeque;

use crate::model::TargetId;
use crate::store::keys::{raw_key, TargetNum};

/// One encoded round (a target's or a peer's), waiting for the flush: its
/// key's parts rather than the key, and the value in a box of its exact
/// length. A minute of rounds waits here: 60,000 at 1,000 targets, where a
/// key and a value in two `Vec`s cost ~50 bytes more each (docs/benchmarks.md,
/// "The daemon's memory, piece by piece").
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
    pub raw: VecDeque<RawEntry>,
    pub events: VecDeque<Entry>,
    bytes: usize,
}

impl WriteBuffer {
    pub fn is_empty(&self) -> bool {
        self.new_targets.is_empty()
            && self.new_peers.is_empty()
            && self.raw.is_empty()
            && self.events.is_empty()
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
        self.raw.append(&mut newer.raw);
        self.events.append(&mut newer.events);
        self.bytes += newer.bytes;
    }

    /// Drops the oldest raw rounds, then the oldest events, until at most
    /// `cap` bytes are buffered.
    pub fn enforce_cap(&mut self, cap: usize) -> Dropped {
        let mut dropped = Dropped::default();
        while self.bytes > cap {
            if let Some(e) = self.raw.pop_front() {
                self.bytes -= e.bytes();
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

    /// A round of target `tag` whose key and value take `len` bytes.
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
}

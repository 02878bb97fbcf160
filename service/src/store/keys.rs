//! The byte layout of every key the store writes. All integers are big-endian
//! and fixed-width, so sled's lexicographic key order is numeric order: a
//! target's history is one contiguous key range and a time range inside it is
//! a sub-range, which makes range scans and retention sweeps cheap. An ECMP
//! branch's rounds are a target of their own (`name#branchN`, see
//! `TargetId::branch_series`), with their own number. Rollups put
//! the series before the time because queries read one hop's series: a 30-day
//! query of one hop is one contiguous run of 720 hour keys.
//!
//! | tree     | key                                              | bytes |
//! |----------|--------------------------------------------------|-------|
//! | `meta`   | ASCII name (`schema_version`)                    | var   |
//! | `targets`| target name, `name#branchN`, or `peer:` + name   | ≤ 74  |
//! | `raw`    | target u32 · round (or peer batch) start ms u64  | 12    |
//! | `m1`,`h1`| target u32 · series u8 · bucket start ms u64     | 13    |
//! | `events` | target u32 · event time ms u64 · sequence u32    | 16    |

use crate::store::query::Hop;

/// A target's compact number, allocated once in the `targets` tree and stable
/// across restarts: keys carry these 4 bytes instead of the up-to-64-byte name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetNum(pub u32);

impl TargetNum {
    pub fn to_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<TargetNum> {
        Some(TargetNum(u32::from_be_bytes(
            bytes.get(..4)?.try_into().ok()?,
        )))
    }
}

/// Which per-hop series a rollup belongs to: the destination (whatever TTL it
/// answered at) is series 0, a hop is its TTL (1 to 255), so a target's
/// rollups for one bucket sort destination first, then by TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesNum(pub u8);

impl SeriesNum {
    pub const DESTINATION: SeriesNum = SeriesNum(0);

    pub fn of(hop: Hop) -> SeriesNum {
        match hop {
            Hop::Destination => SeriesNum::DESTINATION,
            Hop::Ttl(ttl) => SeriesNum(ttl),
        }
    }
}

/// Key of one raw round: `[target][started_at_ms]`.
pub fn raw_key(target: TargetNum, at_ms: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&target.to_bytes());
    key[4..].copy_from_slice(&at_ms.to_be_bytes());
    key
}

/// Decodes a raw key into its target and time; `None` for a malformed key.
pub fn parse_raw_key(key: &[u8]) -> Option<(TargetNum, u64)> {
    if key.len() != 12 {
        return None;
    }
    Some((
        TargetNum::from_bytes(key)?,
        u64::from_be_bytes(key[4..12].try_into().ok()?),
    ))
}

/// Key of one rollup bucket of one series: `[target][series][bucket_start_ms]`.
pub fn rollup_key(target: TargetNum, series: SeriesNum, start_ms: u64) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[..4].copy_from_slice(&target.to_bytes());
    key[4] = series.0;
    key[5..].copy_from_slice(&start_ms.to_be_bytes());
    key
}

/// Decodes a rollup key; `None` for a malformed key.
pub fn parse_rollup_key(key: &[u8]) -> Option<(TargetNum, SeriesNum, u64)> {
    if key.len() != 13 {
        return None;
    }
    Some((
        TargetNum::from_bytes(key)?,
        SeriesNum(key[4]),
        u64::from_be_bytes(key[5..13].try_into().ok()?),
    ))
}

/// The first key after every key of `series` of `target` in a rollup tree.
pub fn series_end(target: TargetNum, series: SeriesNum) -> Vec<u8> {
    match series.0.checked_add(1) {
        Some(next) => rollup_key(target, SeriesNum(next), 0).to_vec(),
        None => target_end(target),
    }
}

/// Key of one event: `[target][at_ms][sequence]`; the sequence keeps two events
/// of one target in the same millisecond apart.
pub fn event_key(target: TargetNum, at_ms: u64, seq: u32) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&target.to_bytes());
    key[4..12].copy_from_slice(&at_ms.to_be_bytes());
    key[12..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Decodes an event key; `None` for a malformed key.
pub fn parse_event_key(key: &[u8]) -> Option<(TargetNum, u64)> {
    if key.len() != 16 {
        return None;
    }
    Some((
        TargetNum::from_bytes(key)?,
        u64::from_be_bytes(key[4..12].try_into().ok()?),
    ))
}

/// The start of `target`'s key range at time `at_ms` in the `raw` and `events`
/// trees: every key of that target at or after `at_ms` sorts at or after it,
/// and every key before `at_ms` sorts before it.
pub fn time_bound(target: TargetNum, at_ms: u64) -> [u8; 12] {
    raw_key(target, at_ms)
}

/// The first key after all of `target`'s keys.
pub fn target_end(target: TargetNum) -> Vec<u8> {
    match target.0.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        // The last possible target: its range ends past every 4-byte prefix.
        None => vec![0xff; 17],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_keys_sort_by_target_then_time() {
        let mut keys = [
            raw_key(TargetNum(2), 5),
            raw_key(TargetNum(1), u64::MAX),
            raw_key(TargetNum(1), 256),
            raw_key(TargetNum(1), 255),
            raw_key(TargetNum(256), 0),
            raw_key(TargetNum(1), 1 << 40),
        ];
        keys.sort();
        let decoded: Vec<_> = keys.iter().map(|k| parse_raw_key(k).unwrap()).collect();
        assert_eq!(
            decoded,
            vec![
                (TargetNum(1), 255),
                (TargetNum(1), 256),
                (TargetNum(1), 1 << 40),
                (TargetNum(1), u64::MAX),
                (TargetNum(2), 5),
                (TargetNum(256), 0),
            ]
        );
    }

    #[test]
    fn rollup_keys_sort_by_target_series_then_time() {
        let t = TargetNum(7);
        let mut keys = [
            rollup_key(t, SeriesNum(1), 120_000),
            rollup_key(TargetNum(6), SeriesNum(255), u64::MAX),
            rollup_key(t, SeriesNum(30), 60_000),
            rollup_key(t, SeriesNum::DESTINATION, 120_000),
            rollup_key(t, SeriesNum(1), 60_000),
        ];
        keys.sort();
        let decoded: Vec<_> = keys.iter().map(|k| parse_rollup_key(k).unwrap()).collect();
        assert_eq!(
            decoded,
            vec![
                (TargetNum(6), SeriesNum(255), u64::MAX),
                (t, SeriesNum::DESTINATION, 120_000),
                (t, SeriesNum(1), 60_000),
                (t, SeriesNum(1), 120_000),
                (t, SeriesNum(30), 60_000),
            ]
        );
    }

    #[test]
    fn bounds_split_every_tree_at_the_right_place() {
        let t = TargetNum(3);
        let bound = time_bound(t, 1_000);
        // Keys at the bound's time sort at or after it, earlier ones before it.
        assert!(raw_key(t, 1_000).as_slice() >= bound.as_slice());
        assert!(raw_key(t, 999).as_slice() < bound.as_slice());
        assert!(event_key(t, 1_000, 0).as_slice() >= bound.as_slice());
        assert!(event_key(t, 999, u32::MAX).as_slice() < bound.as_slice());
        // A series ends after its last key and before the next series.
        let s = SeriesNum(4);
        let end = series_end(t, s);
        assert!(rollup_key(t, s, u64::MAX).as_slice() < end.as_slice());
        assert!(rollup_key(t, SeriesNum(5), 0).as_slice() >= end.as_slice());
        let last = series_end(t, SeriesNum(255));
        assert!(rollup_key(t, SeriesNum(255), u64::MAX).as_slice() < last.as_slice());
        assert!(rollup_key(TargetNum(4), SeriesNum(0), 0).as_slice() >= last.as_slice());
        // The target's end is after all of its keys and before the next target's.
        let end = target_end(t);
        assert!(event_key(t, u64::MAX, u32::MAX).as_slice() < end.as_slice());
        assert!(raw_key(TargetNum(4), 0).as_slice() >= end.as_slice());
        let last = target_end(TargetNum(u32::MAX));
        assert!(event_key(TargetNum(u32::MAX), u64::MAX, u32::MAX).as_slice() < last.as_slice());
    }

    #[test]
    fn malformed_keys_are_rejected() {
        assert_eq!(parse_raw_key(&[0; 11]), None);
        assert_eq!(parse_rollup_key(&[0; 12]), None);
        assert_eq!(parse_event_key(&[0; 17]), None);
        let k = event_key(TargetNum(9), 42, 1);
        assert_eq!(parse_event_key(&k), Some((TargetNum(9), 42)));
    }
}

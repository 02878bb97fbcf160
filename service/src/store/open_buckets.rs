//! The rollup buckets waiting in memory for their section, by target.
//!
//! Each target keeps a short list of its buckets (ten minutes of minute
//! rollups, an hour or two of hour rollups), oldest first, and the list keeps
//! its room when a section takes its buckets, so after the first section a
//! flush adds its rollups without allocating for them. A B-tree keyed by
//! target and bucket made about a hundred nodes of ~540 bytes at each flush,
//! in the middle of the flush's short-lived allocations, and the section
//! freed them ten minutes later: pieces that keep pages of the flush thread's
//! heap from being handed back (docs/benchmarks.md, "Where the rise comes
//! from").

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;

use super::keys::TargetNum;

/// The rollups of one target's bucket, every series in it, encoded together
/// by `rollup_block::encode`: a slice of a shared slab.
pub type EncodedBucket = Bytes;

/// A bucket in memory: whose, which bucket (its start).
pub type BucketKey = (TargetNum, u64);

#[derive(Debug, Default)]
pub struct OpenBuckets {
    by_target: HashMap<TargetNum, TargetBuckets>,
}

#[derive(Debug, Default)]
struct TargetBuckets {
    /// By bucket start.
    buckets: Vec<(u64, EncodedBucket)>,
    /// Whether the list was empty when the last section was written: a
    /// target with nothing for a whole section (removed, paused) gives its
    /// list back then.
    idle: bool,
}

impl OpenBuckets {
    pub fn get(&self, (target, bucket): BucketKey) -> Option<&EncodedBucket> {
        let list = &self.by_target.get(&target)?.buckets;
        let at = list.binary_search_by_key(&bucket, |(b, _)| *b).ok()?;
        Some(&list[at].1)
    }

    /// Keeps `value` as the bucket's, replacing what it held.
    pub fn insert(&mut self, (target, bucket): BucketKey, value: EncodedBucket) {
        let list = self.by_target.entry(target).or_default();
        list.idle = false;
        match list.buckets.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(at) => list.buckets[at].1 = value,
            Err(at) => list.buckets.insert(at, (bucket, value)),
        }
    }

    /// `target`'s buckets starting in `starts`, oldest first.
    pub fn range(
        &self,
        target: TargetNum,
        starts: Range<u64>,
    ) -> impl Iterator<Item = (u64, &EncodedBucket)> {
        self.by_target
            .get(&target)
            .into_iter()
            .flat_map(|list| &list.buckets)
            .filter(move |(bucket, _)| starts.contains(bucket))
            .map(|(bucket, value)| (*bucket, value))
    }

    /// Every bucket starting before `before_ms` (the values shared, not
    /// copied), by target then bucket.
    pub fn before(&self, before_ms: u64) -> Vec<(BucketKey, EncodedBucket)> {
        let mut found: Vec<(BucketKey, EncodedBucket)> = self
            .by_target
            .iter()
            .flat_map(|(&target, list)| {
                list.buckets
                    .iter()
                    .take_while(move |(bucket, _)| *bucket < before_ms)
                    .map(move |(bucket, value)| ((target, *bucket), value.clone()))
            })
            .collect();
        found.sort_unstable_by_key(|(key, _)| *key);
        found
    }

    /// Forgets the buckets `written`, each only if it still holds the value
    /// written (a newer one replaced it meanwhile otherwise). Lists stay with
    /// their room; one that was already empty at the last section is
    /// dropped.
    pub fn forget_written(&mut self, written: &[(BucketKey, EncodedBucket)]) {
        for ((target, bucket), value) in written {
            let Some(list) = self.by_target.get_mut(target) else {
                continue;
            };
            if let Ok(at) = list.buckets.binary_search_by_key(bucket, |(b, _)| *b) {
                if list.buckets[at].1 == *value {
                    list.buckets.remove(at);
                }
            }
        }
        self.by_target.retain(|_, list| {
            let keep = !(list.idle && list.buckets.is_empty());
            list.idle = list.buckets.is_empty();
            keep
        });
    }

    /// Every bucket's value, in no order.
    #[cfg(test)]
    pub fn values(&self) -> impl Iterator<Item = &EncodedBucket> {
        self.by_target
            .values()
            .flat_map(|list| list.buckets.iter().map(|(_, value)| value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: u8) -> EncodedBucket {
        Bytes::from(vec![n; 3])
    }

    #[test]
    fn buckets_are_kept_replaced_and_listed_in_order() {
        let mut open = OpenBuckets::default();
        for (target, bucket, n) in [(2, 120, 1), (1, 60, 2), (2, 0, 3), (2, 60, 4), (1, 0, 5)] {
            open.insert((TargetNum(target), bucket), value(n));
        }
        open.insert((TargetNum(2), 60), value(9));
        assert_eq!(open.get((TargetNum(2), 60)), Some(&value(9)));
        assert_eq!(open.get((TargetNum(2), 180)), None);
        assert_eq!(open.get((TargetNum(7), 0)), None);
        let two: Vec<(u64, u8)> = open
            .range(TargetNum(2), 0..120)
            .map(|(b, v)| (b, v[0]))
            .collect();
        assert_eq!(two, vec![(0, 3), (60, 9)]);
        let before: Vec<(BucketKey, u8)> = open
            .before(120)
            .into_iter()
            .map(|(k, v)| (k, v[0]))
            .collect();
        assert_eq!(
            before,
            vec![
                ((TargetNum(1), 0), 5),
                ((TargetNum(1), 60), 2),
                ((TargetNum(2), 0), 3),
                ((TargetNum(2), 60), 9),
            ]
        );
    }

    #[test]
    fn forgetting_keeps_a_replaced_bucket_and_the_lists_room() {
        let mut open = OpenBuckets::default();
        for bucket in 0..10 {
            open.insert((TargetNum(1), bucket * 60), value(bucket as u8));
        }
        let written = open.before(600);
        // Bucket 540 recomputed after the section took it.
        open.insert((TargetNum(1), 540), value(99));
        open.forget_written(&written);
        let left: Vec<u8> = open.values().map(|v| v[0]).collect();
        assert_eq!(left, vec![99]);
        let list = &open.by_target[&TargetNum(1)];
        assert!(list.buckets.capacity() >= 10, "the list keeps its room");
    }

    #[test]
    fn a_target_idle_for_a_whole_section_gives_its_list_back() {
        let mut open = OpenBuckets::default();
        open.insert((TargetNum(1), 0), value(1));
        open.insert((TargetNum(2), 0), value(2));
        open.forget_written(&open.before(60));
        // Both empty now, but written at this section: kept for their next
        // buckets. Target 1 goes on, target 2 has nothing more.
        assert_eq!(open.by_target.len(), 2);
        open.insert((TargetNum(1), 60), value(3));
        open.forget_written(&open.before(120));
        assert_eq!(
            open.by_target.keys().copied().collect::<Vec<_>>(),
            vec![TargetNum(1)],
            "target 2 had nothing for a whole section"
        );
    }
}

//! A set of TTLs as a 256-bit bitmap: path tracking marks the hops where a round
//! differs from the known path without allocating on every round.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TtlSet([u64; 4]);

impl TtlSet {
    pub(crate) fn insert(&mut self, ttl: u8) {
        self.0[usize::from(ttl / 64)] |= 1 << (ttl % 64);
    }

    pub(crate) fn contains(&self, ttl: u8) -> bool {
        self.0[usize::from(ttl / 64)] & (1 << (ttl % 64)) != 0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub(crate) fn union(&mut self, other: &TtlSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }

    /// The lowest TTL in the set.
    pub(crate) fn min(&self) -> Option<u8> {
        self.0
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| (i as u32 * 64 + w.trailing_zeros()) as u8)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=u8::MAX).filter(|t| self.contains(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_min_union() {
        let mut a = TtlSet::default();
        assert!(a.is_empty());
        assert_eq!(a.min(), None);
        a.insert(200);
        a.insert(65);
        assert!(a.contains(65) && a.contains(200) && !a.contains(64));
        assert_eq!(a.min(), Some(65));
        let mut b = TtlSet::default();
        b.insert(3);
        a.union(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![3, 65, 200]);
        b.insert(255);
        assert!(b.contains(255));
    }
}

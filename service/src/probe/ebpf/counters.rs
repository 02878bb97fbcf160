//! The kernel counters: the per-CPU `COUNTERS` map, summed over CPUs into
//! [`KernelCounters`].

use hopwatch_probe_common::{counter, maps};

use super::{EbpfError, EbpfTimestamper};

/// The kernel counters, summed over CPUs. See probe_common::counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounters {
    /// Outgoing probes stamped at TC egress.
    pub egress_stamped: u64,
    /// Outgoing probes whose stamp could not be stored.
    pub egress_map_full: u64,
    /// Replies matched to a stamp and sent to userspace.
    pub ingress_matched: u64,
    /// Replies to our flow range with no stamp (late, duplicate, evicted).
    pub ingress_unmatched: u64,
    /// Candidate replies that failed bounds-checked parsing.
    pub parse_error: u64,
    /// Matched replies lost because the ring buffer was full.
    pub ringbuf_drop: u64,
    /// Matched replies timed at TC ingress: the skb had no usable receive stamp.
    pub ingress_tc_clock: u64,
    /// STAMP packets whose transmit timestamp was written at TC egress.
    pub stamp_tx_written: u64,
    /// STAMP packets that kept their userspace timestamp (rewrite failed).
    pub stamp_tx_failed: u64,
}

impl KernelCounters {
    fn from_array(v: [u64; counter::COUNT as usize]) -> Self {
        KernelCounters {
            egress_stamped: v[counter::EGRESS_STAMPED as usize],
            egress_map_full: v[counter::EGRESS_MAP_FULL as usize],
            ingress_matched: v[counter::INGRESS_MATCHED as usize],
            ingress_unmatched: v[counter::INGRESS_UNMATCHED as usize],
            parse_error: v[counter::PARSE_ERROR as usize],
            ringbuf_drop: v[counter::RINGBUF_DROP as usize],
            ingress_tc_clock: v[counter::INGRESS_TC_CLOCK as usize],
            stamp_tx_written: v[counter::STAMP_TX_WRITTEN as usize],
            stamp_tx_failed: v[counter::STAMP_TX_FAILED as usize],
        }
    }

    /// The counters indexed like probe_common::counter (and named by `counter::NAMES`).
    pub fn as_array(&self) -> [u64; counter::COUNT as usize] {
        let mut v = [0; counter::COUNT as usize];
        v[counter::EGRESS_STAMPED as usize] = self.egress_stamped;
        v[counter::EGRESS_MAP_FULL as usize] = self.egress_map_full;
        v[counter::INGRESS_MATCHED as usize] = self.ingress_matched;
        v[counter::INGRESS_UNMATCHED as usize] = self.ingress_unmatched;
        v[counter::PARSE_ERROR as usize] = self.parse_error;
        v[counter::RINGBUF_DROP as usize] = self.ringbuf_drop;
        v[counter::INGRESS_TC_CLOCK as usize] = self.ingress_tc_clock;
        v[counter::STAMP_TX_WRITTEN as usize] = self.stamp_tx_written;
        v[counter::STAMP_TX_FAILED as usize] = self.stamp_tx_failed;
        v
    }
}

impl EbpfTimestamper {
    /// The kernel counters, summed over all CPUs.
    pub fn counters(&self) -> Result<KernelCounters, EbpfError> {
        let mut sums = [0u64; counter::COUNT as usize];
        for (index, sum) in (0..counter::COUNT).zip(sums.iter_mut()) {
            let per_cpu = self
                .counters
                .get(&index, 0)
                .map_err(|source| EbpfError::Map {
                    map: maps::COUNTERS,
                    source: Box::new(source),
                })?;
            *sum = per_cpu.iter().copied().fold(0, u64::wrapping_add);
        }
        Ok(KernelCounters::from_array(sums))
    }
}

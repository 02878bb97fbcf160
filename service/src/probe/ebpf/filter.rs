//! The `PROBE_FILTER` map: the flow range the programs stamp and match, and
//! the TAI offset the ingress program needs to use the skb's receive stamp,
//! rewritten when it moves (an NTP daemon setting it, a leap second).

use aya::maps::{Array, MapData};
use hopwatch_probe_common::{maps, ProbeFilter};

use super::EbpfError;
use crate::probe::clock;

/// The `PROBE_FILTER` map and what was last written to it. The timestamper
/// changes the flow range; the watcher keeps the TAI offset current.
pub(super) struct FilterMap {
    map: Array<MapData, ProbeFilter>,
    current: ProbeFilter,
}

impl FilterMap {
    /// Takes the map and writes `filter` to it.
    pub(super) fn new(
        map: Array<MapData, ProbeFilter>,
        filter: ProbeFilter,
    ) -> Result<FilterMap, EbpfError> {
        let mut filter_map = FilterMap {
            map,
            current: filter,
        };
        filter_map.write(filter)?;
        Ok(filter_map)
    }

    /// Writes `filter` with the current TAI offset.
    pub(super) fn write(&mut self, filter: ProbeFilter) -> Result<(), EbpfError> {
        let filter = ProbeFilter {
            tai_offset_ns: clock::tai_offset_ns(),
            ..filter
        };
        self.map
            .set(0, filter, 0)
            .map_err(|source| EbpfError::Map {
                map: maps::PROBE_FILTER,
                source: Box::new(source),
            })?;
        self.current = filter;
        Ok(())
    }

    /// Rewrites the filter when the TAI offset moved since the last write. Until
    /// then the ingress program sees receive stamps a second or more off and
    /// falls back to its own clock (`ingress_tc_clock`), so no RTT is wrong.
    pub(super) fn refresh_tai_offset(&mut self) -> Result<(), EbpfError> {
        let offset = clock::tai_offset_ns();
        if offset == self.current.tai_offset_ns {
            return Ok(());
        }
        tracing::info!(
            tai_offset_s = offset / 1_000_000_000,
            "eBPF: the TAI offset changed; receive stamps follow it"
        );
        self.write(self.current)
    }
}

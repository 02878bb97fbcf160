//! STAMP port registration: the local UDP ports whose packets the egress
//! program gives a kernel transmit timestamp (a sender's T1, a reflector's T3),
//! and how many it wrote per port.

use aya::maps::PerCpuValues;
use hopwatch_probe_common::maps;

use super::{EbpfError, EbpfTimestamper};

impl EbpfTimestamper {
    /// Makes the egress program write the transmit timestamp into STAMP packets
    /// sent from this local UDP port (a sender's T1, a reflector's T3); see
    /// probe-ebpf's stamp.rs. At most `STAMP_PORTS_CAPACITY` ports.
    pub fn add_stamp_port(&mut self, port: u16) -> Result<(), EbpfError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(path, source)| EbpfError::PossibleCpus { path, source })?;
        let zeros =
            PerCpuValues::try_from(vec![0u64; cpus]).map_err(|source| EbpfError::PossibleCpus {
                path: "/sys/devices/system/cpu/possible",
                source,
            })?;
        self.stamp_ports
            .insert(port, zeros, 0)
            .map_err(|source| EbpfError::Map {
                map: maps::STAMP_PORTS,
                source: Box::new(source),
            })
    }

    /// Stops rewriting packets from `port`.
    pub fn remove_stamp_port(&mut self, port: u16) -> Result<(), EbpfError> {
        self.stamp_ports
            .remove(&port)
            .map_err(|source| EbpfError::Map {
                map: maps::STAMP_PORTS,
                source: Box::new(source),
            })
    }

    /// Packets from `port` whose transmit timestamp was written, since it was added.
    pub fn stamp_port_written(&self, port: u16) -> Result<u64, EbpfError> {
        let per_cpu = self
            .stamp_ports
            .get(&port, 0)
            .map_err(|source| EbpfError::Map {
                map: maps::STAMP_PORTS,
                source: Box::new(source),
            })?;
        Ok(per_cpu.iter().copied().fold(0, u64::wrapping_add))
    }
}

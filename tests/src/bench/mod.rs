//! Building blocks of the probe engine benchmarks (`bench-accuracy`,
//! `bench-throughput`, run by `deploy/bench.sh`; results in docs/benchmarks.md):
//! packet captures and their independent parsing, the peer tools (mtr, trippy)
//! and their output formats, background load, CPU accounting and statistics.
//!
//! Nothing here is part of `cargo test`: benchmarks measure, tests assert.

pub mod capture;
pub mod compare;
pub mod cpu;
pub mod error;
pub mod load;
pub mod machine;
pub mod pcap;
pub mod procfs;
pub mod stats;
pub mod storesim;
pub mod tools;

pub use error::{BenchError, Result};

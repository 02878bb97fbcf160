//! hopwatch: a network path monitor whose per-hop latency is timestamped in the kernel.
//!
//! The crate is both the `hopwatch` binary and a library; the library's entry point
//! for probing is [`probe::Engine`].
pub mod alerts;
pub mod analysis;
pub mod cli;
pub mod config;
pub mod enrich;
pub mod health;
pub mod model;
pub mod monitor;
pub mod peer;
pub mod probe;
pub mod remote;
pub mod report;
pub mod stats;
pub mod store;
pub mod sys;
pub mod webapi;

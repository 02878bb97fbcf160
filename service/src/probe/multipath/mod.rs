//! Multipath (ECMP) discovery: MDA over many flows of one target, finding
//! every load-balanced path, where paths split and join, and one flow that
//! keeps to each path for the daemon to keep probing.
//!
//! [`mda`] is the algorithm as a pure state machine (tested against simulated
//! load balancers); [`discover`] drives it over the probe engine.

pub mod discover;
pub mod mda;
pub mod stopping;

pub use discover::{BranchFlow, MultipathError, MultipathSpec, MultipathTrace};
pub use mda::{
    Branch, Diamond, Discovery, FlowIndex, Hop, Link, Mda, MdaConfig, MdaConfigError, ProbeRequest,
    Responder, Step, StopReason, Vertex,
};
pub use stopping::{Confidence, InvalidConfidence};

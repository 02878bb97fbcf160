//! Running MDA over the engine: each abstract flow becomes an engine [`Flow`]
//! (its own ICMP id or source port), each batch of the state machine is sent
//! at once, and the flows that follow the branches are handed back open.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::mda::{Branch, Discovery, FlowIndex, Mda, MdaConfig, MdaConfigError, Step, Vertex};
use crate::probe::engine::{Engine, EngineError, Flow, FlowSpec, ProbeError};
use crate::probe::types::{Outcome, ProbeResult};
use crate::probe::wire::Protocol;

/// What to discover and how hard to try.
#[derive(Debug, Clone)]
pub struct MultipathSpec {
    /// The target and protocol; every flow shares it but its flow identifier.
    pub flow: FlowSpec,
    pub mda: MdaConfig,
}

/// Why a discovery failed (a partial discovery within budget is not a failure).
#[derive(Debug, thiserror::Error)]
pub enum MultipathError {
    #[error("multipath discovery of {dst}: {source}")]
    Config {
        dst: IpAddr,
        #[source]
        source: MdaConfigError,
    },
    #[error("multipath discovery of {dst} could not open flow number {index}: {source}")]
    OpenFlow {
        dst: IpAddr,
        index: u32,
        #[source]
        source: EngineError,
    },
    #[error("multipath discovery of {dst}: a probe failed: {source}")]
    Probe {
        dst: IpAddr,
        #[source]
        source: ProbeError,
    },
}

/// A branch and the open flow that follows it. Keep the flow to keep probing
/// the branch: dropping it returns its identifier to the engine.
pub struct BranchFlow {
    pub branch: Branch,
    pub flow: Flow,
}

/// The result of a discovery over the network.
pub struct MultipathTrace {
    pub target: IpAddr,
    pub protocol: Protocol,
    pub source: IpAddr,
    pub discovery: Discovery,
    /// The wire flow identifier (ICMP id or source port) of each flow index.
    pub flow_ids: Vec<u16>,
    /// One open flow per branch, in the order of `discovery.branches`.
    pub branches: Vec<BranchFlow>,
    pub elapsed: Duration,
}

/// The JSON shape of a [`MultipathTrace`]: flow indexes resolved to wire ids.
#[derive(Serialize)]
pub struct MultipathReport<'a> {
    pub target: IpAddr,
    pub protocol: Protocol,
    pub source: IpAddr,
    #[serde(flatten)]
    pub discovery: &'a Discovery,
    pub flow_ids: &'a [u16],
    pub branch_flow_ids: Vec<u16>,
    pub mda_bound: u32,
    pub elapsed_ms: u64,
}

impl MultipathTrace {
    /// The wire identifier of a flow index.
    pub fn flow_id(&self, flow: FlowIndex) -> Option<u16> {
        self.flow_ids.get(flow.0 as usize).copied()
    }

    /// The JSON view (`hopwatch trace --multipath --json`).
    pub fn report(&self) -> MultipathReport<'_> {
        MultipathReport {
            target: self.target,
            protocol: self.protocol,
            source: self.source,
            discovery: &self.discovery,
            flow_ids: &self.flow_ids,
            branch_flow_ids: self.branches.iter().map(|b| b.flow.flow_id()).collect(),
            mda_bound: self.discovery.mda_bound(),
            elapsed_ms: self.elapsed.as_millis() as u64,
        }
    }
}

/// What a probe result says about the path.
fn vertex(result: &ProbeResult) -> Vertex {
    match &result.outcome {
        Outcome::TimedOut => Vertex::Silent,
        Outcome::Answered(a) if a.kind.reached_destination() => Vertex::Destination(a.responder),
        Outcome::Answered(a) if a.kind.is_final() => Vertex::Unreachable(a.responder),
        Outcome::Answered(a) => Vertex::Router(a.responder),
    }
}

impl Engine {
    /// Finds the load-balanced paths to `spec.flow.dst` with MDA, sending each
    /// batch of probes at once (the engine's rate limit, if any, applies).
    /// Returns what was found and one open flow per branch.
    pub async fn discover_multipath(
        &self,
        spec: MultipathSpec,
    ) -> Result<MultipathTrace, MultipathError> {
        let dst = spec.flow.dst;
        let started = Instant::now();
        let mut mda =
            Mda::new(spec.mda).map_err(|source| MultipathError::Config { dst, source })?;
        let mut flows: Vec<Flow> = Vec::new();
        loop {
            let batch = match mda.next_step() {
                Step::Done => break,
                Step::Probe(batch) => batch,
                Step::Wait => unreachable!("every probe of a batch is recorded before the next"),
            };
            for request in &batch {
                while flows.len() <= request.flow.0 as usize {
                    let flow = self.open_flow(spec.flow.clone()).map_err(|source| {
                        MultipathError::OpenFlow {
                            dst,
                            index: flows.len() as u32,
                            source,
                        }
                    })?;
                    flows.push(flow);
                }
            }
            let results = futures::future::join_all(
                batch.iter().map(|r| flows[r.flow.0 as usize].probe(r.ttl)),
            )
            .await;
            for (request, result) in batch.iter().zip(results) {
                let result = result.map_err(|source| MultipathError::Probe { dst, source })?;
                mda.record(request.flow, request.ttl, vertex(&result));
            }
        }
        let discovery = mda.finish();
        let flow_ids: Vec<u16> = flows.iter().map(Flow::flow_id).collect();
        let source = flows.first().map(Flow::source).unwrap_or(if dst.is_ipv4() {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        });
        // Keep the branches' flows open; the rest go back to the engine.
        let mut kept: BTreeMap<u32, Flow> = BTreeMap::new();
        let wanted: Vec<u32> = discovery.branches.iter().map(|b| b.flow.0).collect();
        for (i, flow) in flows.into_iter().enumerate() {
            if wanted.contains(&(i as u32)) {
                kept.insert(i as u32, flow);
            }
        }
        let branches = discovery
            .branches
            .iter()
            .filter_map(|b| {
                kept.remove(&b.flow.0).map(|flow| BranchFlow {
                    branch: b.clone(),
                    flow,
                })
            })
            .collect();
        Ok(MultipathTrace {
            target: dst,
            protocol: spec.flow.protocol,
            source,
            discovery,
            flow_ids,
            branches,
            elapsed: started.elapsed(),
        })
    }
}

//! Multipath discovery over the engine with a simulated network (no
//! privileges): a router at hop 2 that load-balances by UDP source port, the
//! flows MDA opens, and the contract the daemon relies on: each branch's kept
//! flow still follows that branch when probed again.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::sim;

use hopwatch::probe::correlate::Correlator;
use hopwatch::probe::multipath::{MdaConfig, MultipathSpec, StopReason, Vertex};
use hopwatch::probe::parse::ReplyKind;
use hopwatch::probe::transport::{OutgoingProbe, SendStamp, TransportError, TxStampId};
use hopwatch::probe::{FlowSpec, Outcome, ProbeTransport, Protocol, Ttl};

const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 9);

/// src - r1 - {b0, b1, b2} - r3 - target; hop 2 is `b(port % 3)`.
struct EcmpNetwork {
    correlator: Arc<Correlator>,
    sent: AtomicU64,
}

fn branch_router(port: u16) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, (port % 3) as u8))
}

impl ProbeTransport for EcmpNetwork {
    fn send(&self, probe: &OutgoingProbe<'_>) -> Result<SendStamp, TransportError> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        assert_eq!(probe.protocol, Protocol::Udp);
        let key = sim::key_of(probe);
        let port = key.flow;
        let ttl = probe.ttl.get();
        let (responder, kind, icmp_type, icmp_code) = match ttl {
            1 => (
                IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)),
                ReplyKind::TimeExceeded,
                11,
                0,
            ),
            2 => (branch_router(port), ReplyKind::TimeExceeded, 11, 0),
            3 => (
                IpAddr::V4(Ipv4Addr::new(10, 0, 3, 1)),
                ReplyKind::TimeExceeded,
                11,
                0,
            ),
            _ => (
                IpAddr::V4(TARGET),
                ReplyKind::DestinationUnreachable {
                    code: 3,
                    reached: true,
                },
                3,
                3,
            ),
        };
        sim::answer(
            &self.correlator,
            sim::reply(responder, kind, key, icmp_type, icmp_code),
            1_000,
            Duration::from_millis(1),
        );
        Ok(sim::sent())
    }

    fn take_tx_stamp(&self, _id: TxStampId) -> Option<u64> {
        None
    }
}

#[tokio::test]
async fn each_branch_keeps_an_open_flow_that_follows_it() {
    let correlator = Arc::new(Correlator::new());
    let network = Arc::new(EcmpNetwork {
        correlator: Arc::clone(&correlator),
        sent: AtomicU64::new(0),
    });
    let engine = sim::engine(network.clone(), correlator, Ipv4Addr::new(198, 18, 0, 1));
    let trace = engine
        .discover_multipath(MultipathSpec {
            flow: FlowSpec {
                dst: IpAddr::V4(TARGET),
                protocol: Protocol::Udp,
                dst_port: 33434,
                packet_size: 64,
                timeout: Duration::from_millis(200),
            },
            mda: MdaConfig::default(),
        })
        .await
        .expect("discovery");
    let d = &trace.discovery;
    assert_eq!(d.stop, StopReason::Complete);
    assert_eq!(
        u64::from(d.probes_sent),
        network.sent.load(Ordering::Relaxed)
    );
    assert!(d.probes_sent <= d.mda_bound());
    // Three ports classes, three branches, each with its own kept flow.
    assert_eq!(trace.branches.len(), 3);
    let mut seen = Vec::new();
    for kept in &trace.branches {
        let id = kept.flow.flow_id();
        assert_eq!(trace.flow_id(kept.branch.flow), Some(id));
        assert_eq!(kept.branch.path[1], Vertex::Router(branch_router(id)));
        assert_eq!(kept.branch.path.len(), 4);
        // Probing the kept flow again lands on its branch.
        let again = kept.flow.probe(Ttl::new(2).unwrap()).await.unwrap();
        match again.outcome {
            Outcome::Answered(a) => assert_eq!(a.responder, branch_router(id)),
            Outcome::TimedOut => panic!("the kept flow got no answer"),
        }
        seen.push(branch_router(id));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3);
    // Every hop lists the flows that reached each responder, by index.
    let hop2 = &d.hops[1];
    assert_eq!(hop2.ttl.get(), 2);
    assert_eq!(hop2.responders.len(), 3);
    for r in &hop2.responders {
        for f in &r.flows {
            let id = trace.flow_id(*f).unwrap();
            assert_eq!(r.vertex, Vertex::Router(branch_router(id)));
        }
    }
}

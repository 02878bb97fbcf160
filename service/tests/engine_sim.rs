//! The engine over a simulated network (no privileges): hop discovery, gaps,
//! timeouts, the stop at the destination, and many concurrent traces whose
//! replies must not mix.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::sim;

use futures::StreamExt;
use hopwatch::probe::correlate::Correlator;
use hopwatch::probe::parse::ReplyKind;
use hopwatch::probe::transport::{OutgoingProbe, SendStamp, TransportError, TxStampId};
use hopwatch::probe::{
    Engine, EngineParts, FlowSpec, Outcome, ProbeResult, ProbeTransport, Protocol, SourceSelection,
    TimestampSource, TraceSpec, Ttl,
};

/// A network where every target sits behind `hops - 1` routers whose addresses
/// derive from the target, so a reply that reaches the wrong trace is visible.
struct SimNetwork {
    correlator: Arc<Correlator>,
    hops: u8,
    /// TTLs whose router never answers.
    silent: Vec<u8>,
    sent: AtomicU64,
    sent_ttls: Mutex<HashMap<IpAddr, Vec<u8>>>,
}

fn router(target: IpAddr, hop: u8) -> IpAddr {
    match target {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::V4(Ipv4Addr::new(10, o[3], o[2], hop))
        }
        IpAddr::V6(_) => unreachable!("the simulation is IPv4"),
    }
}

impl ProbeTransport for SimNetwork {
    fn send(&self, probe: &OutgoingProbe<'_>) -> Result<SendStamp, TransportError> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let ttl = probe.ttl.get();
        self.sent_ttls
            .lock()
            .unwrap()
            .entry(probe.dst)
            .or_default()
            .push(ttl);
        let key = sim::key_of(probe);
        let reached = ttl >= self.hops;
        let answers = reached || !self.silent.contains(&ttl);
        if answers {
            let (responder, kind, icmp_type) = if reached {
                (probe.dst, ReplyKind::EchoReply, 0)
            } else {
                (router(probe.dst, ttl), ReplyKind::TimeExceeded, 11)
            };
            let hop = ttl.min(self.hops);
            // 100 µs per hop, exactly, as the kernel would have measured it.
            sim::answer(
                &self.correlator,
                sim::reply(responder, kind, key, icmp_type, 0),
                u64::from(hop) * 100_000,
                Duration::from_millis(u64::from(hop)),
            );
        }
        Ok(sim::sent())
    }

    fn take_tx_stamp(&self, _id: TxStampId) -> Option<u64> {
        None
    }
}

fn sim_engine(hops: u8, silent: Vec<u8>) -> (Engine, Arc<SimNetwork>) {
    let correlator = Arc::new(Correlator::new());
    let network = Arc::new(SimNetwork {
        correlator: Arc::clone(&correlator),
        hops,
        silent,
        sent: AtomicU64::new(0),
        sent_ttls: Mutex::new(HashMap::new()),
    });
    let engine = sim::engine(network.clone(), correlator, Ipv4Addr::new(198, 18, 0, 1));
    (engine, network)
}

fn spec(dst: IpAddr, rounds: u32) -> TraceSpec {
    TraceSpec {
        flow: FlowSpec {
            dst,
            protocol: Protocol::Icmp,
            dst_port: 0,
            packet_size: 64,
            timeout: Duration::from_millis(300),
        },
        first_ttl: Ttl::new(1).unwrap(),
        max_ttl: Ttl::new(16).unwrap(),
        rounds: Some(rounds),
        interval: Duration::from_millis(50),
    }
}

async fn collect(engine: &Engine, spec: TraceSpec) -> Vec<ProbeResult> {
    engine
        .trace(spec)
        .expect("trace starts")
        .map(|r| r.expect("probe sent"))
        .collect()
        .await
}

#[tokio::test]
async fn discovers_every_hop_in_order_and_stops_at_the_destination() {
    let (engine, network) = sim_engine(5, vec![]);
    let dst: IpAddr = "198.18.1.7".parse().unwrap();
    let results = collect(&engine, spec(dst, 3)).await;

    let mut by_ttl: BTreeMap<u8, Vec<&ProbeResult>> = BTreeMap::new();
    for r in &results {
        by_ttl.entry(r.ttl.get()).or_default().push(r);
    }
    for hop in 1..5u8 {
        let rs = &by_ttl[&hop];
        assert_eq!(rs.len(), 3, "three rounds probe hop {hop}");
        for r in rs {
            let answer = r.answer().expect("every router answers");
            assert_eq!(answer.responder, router(dst, hop));
            assert_eq!(answer.rtt.as_nanos(), u64::from(hop) * 100_000);
            assert_eq!(r.source, TimestampSource::Ebpf);
        }
    }
    assert!(by_ttl[&5].iter().all(|r| r.reached_destination()));
    // Round one probes every TTL; later rounds stop at the destination's hop.
    let ttls = network.sent_ttls.lock().unwrap()[&dst].clone();
    let beyond = ttls.iter().filter(|t| **t > 5).count();
    assert_eq!(beyond, 11, "only the first round goes past hop 5: {ttls:?}");
    assert_eq!(ttls.len(), 16 + 5 + 5);
    let stats = engine.stats();
    assert_eq!(stats.probes_sent, 26);
    assert_eq!(stats.probes_answered, 26);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn a_silent_router_is_a_gap_not_the_end_of_the_path() {
    let (engine, _network) = sim_engine(6, vec![2, 3]);
    let dst: IpAddr = "198.18.2.9".parse().unwrap();
    let results = collect(&engine, spec(dst, 2)).await;
    for r in &results {
        match r.ttl.get() {
            2 | 3 => assert_eq!(r.outcome, Outcome::TimedOut, "hop {} is silent", r.ttl),
            1 | 4 | 5 => assert_eq!(r.answer().unwrap().responder, router(dst, r.ttl.get())),
            _ => assert!(r.reached_destination()),
        }
    }
    assert_eq!(engine.stats().probes_timed_out, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_traces_never_mix_up_their_replies() {
    let (engine, _network) = sim_engine(4, vec![]);
    let targets: Vec<IpAddr> = (0..400u32)
        .map(|i| {
            IpAddr::V4(Ipv4Addr::new(
                198,
                18,
                (i / 250) as u8 + 10,
                (i % 250) as u8 + 1,
            ))
        })
        .collect();
    let traces = targets.iter().map(|dst| {
        let engine = engine.clone();
        let dst = *dst;
        // Every simulated reply comes back: a long timeout keeps a busy
        // machine (400 traces on a debug build beside other work) from
        // turning a late reply into a loss. Mixing up replies is the question.
        let mut spec = spec(dst, 2);
        spec.flow.timeout = Duration::from_secs(5);
        async move { (dst, collect(&engine, spec).await) }
    });
    let all = futures::future::join_all(traces).await;
    for (dst, results) in all {
        // Round two stops at hop 4 once round one's reply is in; under this
        // load it may not be yet, so only the lower bound is certain.
        assert!(results.len() >= 16 + 4, "{dst}: {} results", results.len());
        for r in results {
            assert_eq!(r.target, dst);
            let answer = r
                .answer()
                .unwrap_or_else(|| panic!("{dst} ttl {} timed out", r.ttl));
            let expected = if r.ttl.get() >= 4 {
                dst
            } else {
                router(dst, r.ttl.get())
            };
            assert_eq!(answer.responder, expected, "{dst} ttl {}", r.ttl);
        }
    }
    assert_eq!(engine.stats().replies_unmatched, 0);
}

#[tokio::test]
async fn flows_of_one_engine_get_distinct_identifiers_and_are_reused_after_drop() {
    let (engine, _network) = sim_engine(3, vec![]);
    let dst: IpAddr = "198.18.3.3".parse().unwrap();
    let a = engine.open_flow(spec(dst, 1).flow).unwrap();
    let b = engine.open_flow(spec(dst, 1).flow).unwrap();
    assert_ne!(a.flow_id(), b.flow_id());
    assert!((20000..30000).contains(&a.flow_id()));
    let r = a.probe(Ttl::new(3).unwrap()).await.unwrap();
    assert!(r.reached_destination());
    assert_eq!(r.key.flow, a.flow_id());
}

#[tokio::test]
async fn a_target_runner_emits_numbered_rounds_that_stop_at_the_destination() {
    use hopwatch::model::TargetId;
    use hopwatch::monitor::{TargetRunner, TargetSchedule};

    let (engine, network) = sim_engine(4, vec![2]);
    let dst: IpAddr = "198.18.4.4".parse().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let schedule = TargetSchedule {
        id: TargetId::new("sim").unwrap(),
        flow: spec(dst, 1).flow,
        first_ttl: Ttl::new(1).unwrap(),
        max_ttl: Ttl::new(8).unwrap(),
        interval: Duration::from_millis(400),
        final_hop_only: false,
    };
    let next_seq = std::sync::Arc::new(AtomicU64::new(41));
    let runner = TargetRunner::start(&engine, schedule, next_seq.clone(), tx).unwrap();
    let first = rx.recv().await.unwrap();
    let second = rx.recv().await.unwrap();
    drop(runner);

    assert_eq!(
        (first.seq, second.seq),
        (41, 42),
        "rounds continue from the given number"
    );
    assert_eq!(
        first.hops.len(),
        8,
        "the first round probes up to the maximum TTL"
    );
    assert_eq!(second.hops.len(), 4, "later rounds stop at the destination");
    for round in [&first, &second] {
        assert_eq!(round.destination_ttl, Ttl::new(4));
        assert_eq!(round.source, TimestampSource::Ebpf);
        let hop2 = &round.hops[1];
        assert!(
            hop2.is_lost() && hop2.responder().is_none(),
            "the silent router is a lost sample"
        );
        assert_eq!(round.hops[0].responder(), Some(router(dst, 1)));
        assert_eq!(round.destination().unwrap().responder(), Some(dst));
        assert!(round.hops.windows(2).all(|w| w[0].ttl < w[1].ttl));
    }
    assert_eq!(network.sent.load(Ordering::Relaxed), 12);
}

#[tokio::test]
async fn a_final_hop_only_runner_sends_one_probe_per_round_at_max_ttl() {
    use hopwatch::model::TargetId;
    use hopwatch::monitor::{TargetRunner, TargetSchedule};

    // The destination is 4 hops away behind a silent router at TTL 2.
    let (engine, network) = sim_engine(4, vec![2]);
    let dst: IpAddr = "198.18.4.5".parse().unwrap();
    let schedule = |name: &str, dst: IpAddr, max_ttl: u8| TargetSchedule {
        id: TargetId::new(name).unwrap(),
        flow: spec(dst, 1).flow,
        first_ttl: Ttl::new(1).unwrap(),
        max_ttl: Ttl::new(max_ttl).unwrap(),
        interval: Duration::from_millis(500),
        final_hop_only: true,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let runner = TargetRunner::start(
        &engine,
        schedule("fh", dst, 8),
        Arc::new(AtomicU64::new(0)),
        tx,
    )
    .unwrap();
    let rounds = [rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    drop(runner);
    assert_eq!(
        network.sent_ttls.lock().unwrap().get(&dst).cloned(),
        Some(vec![8, 8]),
        "one probe per round, with TTL max_hops"
    );
    for (seq, round) in rounds.iter().enumerate() {
        assert_eq!(round.seq, seq as u64);
        assert_eq!(round.hops.len(), 1, "a single-row path");
        assert_eq!(round.hops[0].ttl, Ttl::MIN);
        assert_eq!(round.destination_ttl, Some(Ttl::MIN));
        assert_eq!(round.destination().unwrap().responder(), Some(dst));
        assert!(round.destination().unwrap().rtt().is_some());
    }

    // A max_hops short of the destination: a router's time-exceeded is not
    // the destination answering, so the round is lost.
    let far: IpAddr = "198.18.4.6".parse().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let runner = TargetRunner::start(
        &engine,
        schedule("short", far, 3),
        Arc::new(AtomicU64::new(0)),
        tx,
    )
    .unwrap();
    let round = rx.recv().await.unwrap();
    drop(runner);
    assert_eq!(round.hops.len(), 1);
    assert!(round.hops[0].is_lost(), "{round:?}");
    assert_eq!(round.destination_ttl, None);
}

#[tokio::test]
async fn the_global_rate_limit_spaces_probes_across_all_flows() {
    let correlator = Arc::new(Correlator::new());
    let network = Arc::new(SimNetwork {
        correlator: Arc::clone(&correlator),
        hops: 2,
        silent: vec![],
        sent: AtomicU64::new(0),
        sent_ttls: Mutex::new(HashMap::new()),
    });
    let engine = Engine::from_parts(EngineParts {
        transport: network.clone(),
        correlator,
        source: TimestampSource::Ebpf,
        flow_range: 20000..30000,
        max_probes_per_second: Some(std::num::NonZeroU32::new(20).unwrap()),
        source_selection: SourceSelection {
            v4: Some(Ipv4Addr::new(198, 18, 0, 1)),
            ..SourceSelection::default()
        },
    });
    let flows: Vec<_> = (1..=4u8)
        .map(|i| {
            let dst = IpAddr::V4(Ipv4Addr::new(198, 18, 9, i));
            engine.open_flow(spec(dst, 1).flow).unwrap()
        })
        .collect();
    let started = std::time::Instant::now();
    let probes = flows
        .iter()
        .flat_map(|flow| (0..10).map(move |_| flow.probe(Ttl::new(2).unwrap())));
    let results = futures::future::join_all(probes).await;
    let elapsed = started.elapsed();
    assert_eq!(results.len(), 40);
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap().reached_destination()));
    // A burst of 20, then 20 more at 20 per second: at least ~1 s in all.
    assert!(
        elapsed >= Duration::from_millis(900),
        "40 probes at 20/s took only {elapsed:?}"
    );
}

//! The probe engine in the lab, end to end: real namespaces, routers, packets
//! and eBPF programs. Privileged; these fail (never skip) without root.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use hopwatch::probe::{
    Engine, EngineConfig, FlowSpec, Outcome, ProbeResult, Protocol, TimestampPreference,
    TimestampSource, TraceSpec, Ttl,
};
use hopwatch_lab::{At, DelaySpec, Lab, LabSpec};

fn spec(dst: IpAddr, protocol: Protocol, rounds: u32) -> TraceSpec {
    TraceSpec {
        flow: FlowSpec {
            dst,
            protocol,
            dst_port: match protocol {
                Protocol::Icmp => 0,
                Protocol::Udp => 33434,
                Protocol::Tcp => 80,
            },
            packet_size: 64,
            timeout: Duration::from_millis(800),
        },
        first_ttl: Ttl::new(1).unwrap(),
        max_ttl: Ttl::new(10).unwrap(),
        rounds: Some(rounds),
        interval: Duration::from_millis(100),
    }
}

/// Runs `traces` concurrently through one engine started inside the lab's
/// source namespace, and returns each trace's results in order.
fn trace_in_lab(
    lab: &Lab,
    preference: TimestampPreference,
    traces: Vec<TraceSpec>,
) -> (TimestampSource, Vec<Vec<ProbeResult>>) {
    lab.run_in("src", move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async move {
            let engine = Engine::start(EngineConfig {
                timestamps: preference,
                ..EngineConfig::default()
            })
            .await
            .expect("the probe engine starts (needs root: CAP_NET_RAW, CAP_BPF, CAP_NET_ADMIN)");
            let source = engine.timestamp_source();
            let runs = traces.into_iter().map(|spec| {
                let engine = engine.clone();
                async move {
                    engine
                        .trace(spec)
                        .expect("trace starts")
                        .map(|r| r.expect("probe sent"))
                        .collect::<Vec<_>>()
                        .await
                }
            });
            let results = futures::future::join_all(runs).await;
            let stats = engine.stats();
            assert_eq!(stats.in_flight, 0, "every probe ended: {stats:?}");
            (source, results)
        })
    })
    .expect("running inside the source namespace")
}

/// Responders per TTL, up to the first TTL that reached the destination.
fn responders_by_ttl(results: &[ProbeResult]) -> BTreeMap<u8, Vec<Option<IpAddr>>> {
    let mut by_ttl: BTreeMap<u8, Vec<Option<IpAddr>>> = BTreeMap::new();
    for r in results {
        by_ttl
            .entry(r.ttl.get())
            .or_default()
            .push(r.answer().map(|a| a.responder));
    }
    by_ttl
}

/// Asserts the trace saw exactly the lab's path: each TTL's responder, then the target.
fn assert_path(lab: &Lab, target: IpAddr, results: &[ProbeResult], what: &str) {
    let expected = lab.expected_trace(target);
    let by_ttl = responders_by_ttl(results);
    for (i, want) in expected.iter().enumerate() {
        let ttl = i as u8 + 1;
        let got = by_ttl
            .get(&ttl)
            .unwrap_or_else(|| panic!("{what}: no probe at TTL {ttl}"));
        for responder in got {
            assert_eq!(
                responder, want,
                "{what}: TTL {ttl} answered by {responder:?}, expected {want:?}"
            );
        }
    }
    let dest_ttl = expected.len() as u8;
    assert!(
        results
            .iter()
            .any(|r| r.ttl.get() == dest_ttl && r.reached_destination()),
        "{what}: the destination {target} answered at TTL {dest_ttl}"
    );
}

#[test]
fn hop_discovery_is_exact_for_icmp_udp_and_tcp_over_ipv4_and_ipv6() {
    let lab = LabSpec::chain(3).build().expect("lab");
    let v4 = IpAddr::V4(lab.targets_v4()[0]);
    let v6 = IpAddr::V6(lab.targets_v6()[0]);
    let mut cases = Vec::new();
    for protocol in [Protocol::Icmp, Protocol::Udp, Protocol::Tcp] {
        for target in [v4, v6] {
            cases.push((protocol, target));
        }
    }
    let specs = cases.iter().map(|(p, t)| spec(*t, *p, 3)).collect();
    let (source, results) = trace_in_lab(&lab, TimestampPreference::Ebpf, specs);
    assert_eq!(source, TimestampSource::Ebpf);
    for ((protocol, target), results) in cases.iter().zip(&results) {
        let what = format!("{protocol} to {target}");
        assert_path(&lab, *target, results, &what);
        for r in results {
            assert_eq!(r.source, TimestampSource::Ebpf, "{what}");
            if let Some(answer) = r.answer() {
                let rtt = answer.rtt.as_nanos();
                assert!(
                    rtt > 0 && rtt < 100_000_000,
                    "{what}: implausible RTT {rtt} ns"
                );
            }
        }
    }
}

#[test]
fn injected_delay_and_loss_show_up_at_the_hops_behind_the_impaired_link() {
    let lab = LabSpec::chain(3).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    // Hop 3 (r3) and the destination sit behind the r2 -> r3 link.
    let _delay = lab
        .delay(
            At::link("r2", "r3"),
            DelaySpec::fixed(Duration::from_millis(20)),
        )
        .expect("delay element");
    let _loss = lab.loss(At::link("r2", "r3"), 50.0).expect("loss rule");
    let (_, results) = trace_in_lab(
        &lab,
        TimestampPreference::Ebpf,
        vec![spec(target, Protocol::Icmp, 12)],
    );
    let results = &results[0];

    let mut rtts: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    let mut lost: BTreeMap<u8, usize> = BTreeMap::new();
    for r in results.iter().filter(|r| r.ttl.get() <= 4) {
        match &r.outcome {
            Outcome::Answered(a) => rtts.entry(r.ttl.get()).or_default().push(a.rtt.as_nanos()),
            Outcome::TimedOut => *lost.entry(r.ttl.get()).or_default() += 1,
        }
    }
    let avg = |ttl: u8| {
        let v = &rtts[&ttl];
        v.iter().sum::<u64>() / v.len() as u64
    };
    for ttl in [1, 2] {
        assert!(
            avg(ttl) < 10_000_000,
            "hop {ttl} is in front of the delay: avg {} ns",
            avg(ttl)
        );
        assert_eq!(
            lost.get(&ttl).copied().unwrap_or(0),
            0,
            "hop {ttl} is in front of the loss"
        );
    }
    for ttl in [3, 4] {
        assert!(
            avg(ttl) >= 20_000_000,
            "hop {ttl} is behind the 20 ms delay: avg {} ns",
            avg(ttl)
        );
        assert!(avg(ttl) < 60_000_000, "hop {ttl}: avg {} ns", avg(ttl));
    }
    let lost_behind = lost.get(&3).copied().unwrap_or(0) + lost.get(&4).copied().unwrap_or(0);
    // 24 probes through a 50% loss link: all getting through has odds of 6e-8.
    assert!(
        lost_behind > 0,
        "no loss seen behind the lossy link: {lost:?}"
    );
}

#[test]
fn a_router_that_does_not_answer_is_a_gap_not_the_end_of_the_path() {
    let lab = LabSpec::chain(3).build().expect("lab");
    let _silent = lab.silence("r2").expect("silence r2");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let (_, results) = trace_in_lab(
        &lab,
        TimestampPreference::Ebpf,
        vec![spec(target, Protocol::Icmp, 3)],
    );
    let by_ttl = responders_by_ttl(&results[0]);
    assert!(
        by_ttl[&2].iter().all(Option::is_none),
        "r2 is silent: {:?}",
        by_ttl[&2]
    );
    assert!(
        by_ttl[&3].iter().all(Option::is_some),
        "r3 answers behind the gap"
    );
    assert!(
        by_ttl[&4].iter().all(|r| *r == Some(target)),
        "the destination answers"
    );
    // The lab's own expectation agrees that TTL 2 is silent.
    assert_eq!(lab.expected_trace(target)[1], None);
}

#[test]
fn concurrent_traces_to_many_targets_do_not_mix_up_their_replies() {
    let lab = LabSpec::chain(2).targets(150).build().expect("lab");
    let mut targets: Vec<IpAddr> = lab.targets_v4().iter().map(|a| IpAddr::V4(*a)).collect();
    targets.extend(lab.targets_v6().iter().take(50).map(|a| IpAddr::V6(*a)));
    let specs = targets
        .iter()
        .map(|t| spec(*t, Protocol::Icmp, 2))
        .collect();
    let (_, results) = trace_in_lab(&lab, TimestampPreference::Ebpf, specs);
    for (target, results) in targets.iter().zip(&results) {
        for r in results {
            assert_eq!(r.target, *target);
        }
        assert_path(&lab, *target, results, &format!("trace to {target}"));
    }
}

#[test]
fn fallback_timestamp_sources_work_when_ebpf_is_turned_off() {
    let lab = LabSpec::chain(2).build().expect("lab");
    let v4 = IpAddr::V4(lab.targets_v4()[0]);
    let v6 = IpAddr::V6(lab.targets_v6()[0]);
    for (preference, expected) in [
        (TimestampPreference::Kernel, TimestampSource::Kernel),
        (TimestampPreference::Userspace, TimestampSource::Userspace),
    ] {
        let specs = vec![
            spec(v4, Protocol::Icmp, 2),
            spec(v6, Protocol::Udp, 2),
            spec(v4, Protocol::Tcp, 2),
        ];
        let (source, results) = trace_in_lab(&lab, preference, specs);
        assert_eq!(source, expected);
        for (target, results) in [v4, v6, v4].iter().zip(&results) {
            assert_path(&lab, *target, results, &format!("{expected} to {target}"));
            for r in results.iter().filter(|r| r.answer().is_some()) {
                assert_eq!(
                    r.source, expected,
                    "every answered probe carries the source used"
                );
            }
        }
    }
}

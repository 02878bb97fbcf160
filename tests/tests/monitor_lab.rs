//! The monitoring daemon's core in the lab: route changes, where loss and
//! latency begin, ICMP rate limiting that is not path loss, statistics that
//! match the raw rounds, history across restarts, live reloads, and a full
//! disk that leaves probing, the live view and /metrics running.
//! Privileged; these fail (never skip) without root.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopwatch::alerts::AlertKind;
use hopwatch::analysis::PathEvent;
use hopwatch::config::Config;
use hopwatch::model::{HopSample, TargetId};
use hopwatch::monitor::{Monitor, TargetStatus, TargetView};
use hopwatch::probe::{Rtt, TimestampSource};
use hopwatch::webapi::{NoAlerts, Web};
use hopwatch_lab::{At, DelaySpec, Lab, LabSpec, PathSelect};

/// Runs `body` against a monitor started inside the lab's source namespace.
fn with_monitor<T, F, Fut>(lab: &Lab, config: String, body: F) -> T
where
    T: Send,
    F: FnOnce(Arc<Monitor>) -> Fut + Send,
    Fut: Future<Output = T>,
{
    lab.run_in("src", move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async move {
            let config = Config::parse(&config, "monitor-test.toml").expect("valid test config");
            let monitor = Arc::new(
                Monitor::start(config)
                    .await
                    .expect("monitor starts (needs root)"),
            );
            let result = body(Arc::clone(&monitor)).await;
            match Arc::try_unwrap(monitor) {
                Ok(monitor) => monitor.shutdown().await,
                Err(_) => panic!("the test kept a reference to the monitor"),
            }
            result
        })
    })
    .expect("running inside the source namespace")
}

fn config(state_dir: &Path, window: u32, targets: &[(&str, IpAddr)]) -> String {
    let mut text = format!(
        "[service]\nstate_dir = {:?}\ntimestamps = \"ebpf\"\n\n[storage]\nflush_interval = \"1s\"\n\n\
         [statistics]\nwindow = {window}\n\n[defaults]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nmax_hops = 12\n",
        state_dir.display().to_string()
    );
    for (name, ip) in targets {
        text.push_str(&format!(
            "\n[[target]]\nname = \"{name}\"\nhost = \"{ip}\"\n"
        ));
    }
    text
}

fn view(monitor: &Monitor, name: &str) -> TargetView {
    monitor
        .live()
        .target(&TargetId::new(name).unwrap())
        .unwrap_or_else(|| panic!("target {name} is live"))
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `limit`.
async fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(name)
        .tempdir()
        .expect("temp dir")
}

#[test]
fn a_route_change_is_detected_within_a_few_rounds_with_the_right_before_and_after() {
    // r1 branches: branch 0 is one router, branch 1 two; r2 merges.
    let lab = LabSpec::chain(2).parallel(1, &[1, 2]).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let before = lab.expected_trace(target);
    let state = temp_dir("route-change");
    let cfg = config(state.path(), 20, &[("t", target)]);
    let lab_ref = &lab;
    let (events, after, changed_after) = with_monitor(&lab, cfg, move |monitor| async move {
        let mut events = monitor.subscribe();
        eventually(Duration::from_secs(10), "the first path", || {
            view(&monitor, "t").analysis.path.hop_count
        })
        .await;
        let switched = Instant::now();
        let _guard = lab_ref
            .set_path(PathSelect::Branch(1))
            .expect("route change");
        let after = lab_ref.expected_trace(target);
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("a path event within 10 s of the route change")
                .expect("event stream open");
            seen.push(event.event);
        }
        (seen, after, switched.elapsed())
    });
    assert!(
        changed_after < Duration::from_secs(3),
        "detected after {changed_after:?} (100 ms rounds)"
    );
    let route = events
        .iter()
        .find_map(|e| match e {
            PathEvent::RouteChanged { before, after, .. } => Some((before.clone(), after.clone())),
            _ => None,
        })
        .expect("a route change event");
    assert_eq!(route.0, before, "path before the change");
    assert_eq!(route.1, after, "path after the change");
    let hops = events
        .iter()
        .find_map(|e| match e {
            PathEvent::HopCountChanged { before, after, .. } => Some((*before, *after)),
            _ => None,
        })
        .expect("the longer branch changes the hop count");
    assert_eq!(hops, (before.len() as u8, after.len() as u8));
}

/// Asymmetric routing moves: the merging router r2 sends replies back through
/// the three-router branch while probes keep the one-router branch. The
/// forward path (and so mtr) sees nothing; the replies' TTLs show it.
#[test]
fn a_return_path_only_reroute_is_its_own_event_and_not_a_route_change() {
    let lab = LabSpec::chain(3).parallel(1, &[1, 3]).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let state = temp_dir("return-path");
    let cfg = config(state.path(), 20, &[("t", target)]);
    let lab_ref = &lab;
    let events = with_monitor(&lab, cfg, move |monitor| async move {
        let mut events = monitor.subscribe();
        eventually(Duration::from_secs(10), "a settled path", || {
            (view(&monitor, "t").analysis.rounds >= 20).then_some(())
        })
        .await;
        lab_ref
            .set_return_path(PathSelect::Branch(1))
            .expect("return route change");
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline.into(), events.recv()).await {
            seen.push(event.event);
        }
        seen
    });
    assert!(
        !events.iter().any(|e| matches!(
            e,
            PathEvent::RouteChanged { .. } | PathEvent::HopCountChanged { .. }
        )),
        "the forward path did not change: {events:?}"
    );
    let changes: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            PathEvent::ReturnPathChanged {
                before,
                after,
                first_changed_ttl,
                ..
            } => Some((*first_changed_ttl, before.clone(), after.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 1, "one return-path change: {events:?}");
    let (first, before, after) = &changes[0];
    // Hop 1 r1, hop 2 a1, hop 3 r2 (merges), hop 4 r3, hop 5 dst.
    assert_eq!(*first, 3, "{changes:?}");
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        let ttl = i + 1;
        if ttl < 3 {
            assert_eq!(b, a, "hop {ttl} replies keep their way back");
        } else {
            // Branch 1 has two more routers than branch 0.
            assert_eq!(
                a.zip(*b).map(|(a, b)| a - b),
                Some(2),
                "hop {ttl}: {b:?} -> {a:?}"
            );
        }
    }
}

#[test]
fn loss_and_latency_at_a_link_are_localised_to_the_hop_behind_it() {
    let lab = &LabSpec::chain(4).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let r3 = lab.expected_trace(target)[2].expect("r3 answers");
    let state = temp_dir("localise");
    let cfg = config(state.path(), 40, &[("t", target)]);
    with_monitor(lab, cfg, move |monitor| async move {
        // A clean baseline first: latency findings compare against it.
        eventually(Duration::from_secs(10), "a baseline window", || {
            (view(&monitor, "t").analysis.rounds >= 40).then_some(())
        })
        .await;
        assert!(
            view(&monitor, "t").analysis.localisations.is_empty(),
            "a clean path has no finding"
        );

        let loss = lab.loss(At::link("r2", "r3"), 40.0).expect("loss");
        // Judge once most of the window is behind the impairment: the first
        // few lossy probes are too few to say where the loss starts.
        let finding = eventually(Duration::from_secs(20), "a loss finding", || {
            let v = view(&monitor, "t");
            let settled = v
                .analysis
                .destination
                .window
                .loss_pct
                .is_some_and(|l| l >= 25.0);
            v.analysis
                .localisations
                .into_iter()
                .find(|l| settled && serde_json::to_value(l).unwrap()["kind"] == "loss")
        })
        .await;
        assert_eq!(
            finding.ttl, 3,
            "loss behind r2 -> r3 starts at hop 3: {}",
            finding.summary
        );
        assert_eq!(finding.responder, Some(r3));
        drop(loss);
        // Let the lossy rounds leave the window first: while they are in it,
        // each hop's median is over a different set of answered rounds, and
        // a step would cross them rounds apart.
        eventually(Duration::from_secs(20), "a window clean of loss", || {
            let v = view(&monitor, "t");
            v.analysis
                .hops
                .iter()
                .all(|h| h.window.loss_pct == Some(0.0))
                .then_some(())
        })
        .await;

        let delay = lab
            .delay(
                At::link("r2", "r3"),
                DelaySpec::fixed(Duration::from_millis(30)),
            )
            .expect("delay");
        let finding = eventually(Duration::from_secs(20), "a latency finding", || {
            view(&monitor, "t")
                .analysis
                .localisations
                .into_iter()
                .find(|l| serde_json::to_value(l).unwrap()["kind"] == "latency")
        })
        .await;
        assert_eq!(
            finding.ttl, 3,
            "latency step behind r2 -> r3 starts at hop 3: {}",
            finding.summary
        );
        drop(delay);
    });
}

#[test]
fn destination_loss_is_the_loss_of_its_own_probes() {
    // The destination is behind the lossy link, like hop 3: the two must lose
    // about as much. A round after a lost destination reply must not probe
    // past the destination and count a reply at a higher TTL as its answer.
    let lab = &LabSpec::chain(4).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let _loss = lab.loss(At::link("r2", "r3"), 50.0).expect("loss");
    let state = temp_dir("destloss");
    // Rounds that do not overlap (the timeout well inside the interval), so
    // each round starts knowing how the one before it ended.
    let cfg = config(state.path(), 500, &[("t", target)])
        .replace("timeout = \"500ms\"", "timeout = \"50ms\"");
    let snapshot = with_monitor(lab, cfg, move |monitor| async move {
        eventually(Duration::from_secs(90), "a full window", || {
            let v = view(&monitor, "t");
            (v.analysis.rounds >= 510).then_some(v)
        })
        .await
    });
    let hop3 = snapshot
        .analysis
        .hops
        .iter()
        .find(|h| h.ttl == 3)
        .and_then(|h| h.window.loss_pct)
        .expect("hop 3 was probed");
    let dest = snapshot
        .analysis
        .destination
        .window
        .loss_pct
        .expect("the destination was probed");
    assert!(hop3 > 35.0, "50 % loss on r2 -> r3 shows at hop 3: {hop3}%");
    // 500 probes each: about 2 points of noise per estimate. Probing past
    // the destination after each loss reads p / (1 + p): 33 % for 50 %;
    // counting the destination as answered when the rediscovery round after
    // three lost ones reaches it past its TTL read ~47 %, and failed this
    // check about once in 8 runs.
    assert!(
        (dest - hop3).abs() < 10.0,
        "destination loss {dest}% against hop 3's {hop3}%"
    );
}

/// The port the final-hop-only TCP target probes, served in `dst`.
const FINAL_HOP_PORT: u16 = 8443;

/// Packets the `src` namespace has sent through the OUTPUT rule with
/// `comment`: the counter of a rule that only counts (no jump).
fn output_packets(lab: &Lab, comment: &str) -> u64 {
    let out = lab
        .command("src", "iptables")
        .expect("command in src")
        .args(["-t", "filter", "-nvxL", "OUTPUT"])
        .output()
        .expect("iptables runs");
    assert!(out.status.success(), "iptables -L: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|line| line.contains(&format!("/* {comment} */")))
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counting rule {comment} in:\n{text}"))
}

/// Adds a rule to `src`'s OUTPUT chain that only counts the packets that
/// match `matches`, read back by [`output_packets`] under `comment`.
fn count_output(lab: &Lab, comment: &str, matches: &[&str]) {
    let mut rule = vec!["-A", "OUTPUT"];
    rule.extend_from_slice(matches);
    rule.extend_from_slice(&["-m", "comment", "--comment", comment]);
    iptables(lab, "src", &rule);
}

/// Adds an iptables rule in `node`'s namespace (removed with the lab).
fn iptables(lab: &Lab, node: &str, rule: &[&str]) {
    let status = lab
        .command(node, "iptables")
        .expect("command in the namespace")
        .args(rule)
        .status()
        .expect("iptables runs");
    assert!(status.success(), "iptables {rule:?} in {node}");
}

/// Besides the rate-limiting router, the same daemon runs two
/// `final_hop_only` targets (a TCP handshake to a port served in `dst`, and an
/// ICMP echo), whose probes never meet r2's ICMP errors: one probe per round,
/// counted on the wire; each round stored as one row with eBPF timestamps;
/// latency that agrees with the traced target's destination; and a loss alert
/// once the port closes (RSTs) and the host stops answering echoes.
#[test]
fn icmp_rate_limiting_at_an_intermediate_router_is_not_path_loss() {
    let lab = &LabSpec::chain(3).targets(2).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let service = IpAddr::V4(lab.targets_v4()[1]);
    let _limit = lab.icmp_rate_limit("r2", 2, 1).expect("rate limit r2");
    let listener = lab
        .run_in("dst", move || {
            std::net::TcpListener::bind((service, FINAL_HOP_PORT)).expect("listen in dst")
        })
        .expect("running in dst");
    // Count what leaves src towards the final-hop targets: SYNs (not the
    // RSTs the kernel answers SYN-ACKs with) and echo requests.
    let (addr, port) = (service.to_string(), FINAL_HOP_PORT.to_string());
    count_output(
        lab,
        "hw-fh-tcp",
        &["-d", &addr, "-p", "tcp", "--syn", "--dport", &port],
    );
    count_output(
        lab,
        "hw-fh-icmp",
        &["-d", &addr, "-p", "icmp", "--icmp-type", "echo-request"],
    );
    let state = temp_dir("ratelimit");
    let mut cfg = config(state.path(), 40, &[("t", target)]);
    cfg.push_str(&format!(
        "\n[[target]]\nname = \"fh-tcp\"\nhost = \"{service}\"\nprotocol = \"tcp\"\n\
         port = {FINAL_HOP_PORT}\nfinal_hop_only = true\nalerts = {{ latency_ms = 20 }}\n\n\
         [[target]]\nname = \"fh-icmp\"\nhost = \"{service}\"\nfinal_hop_only = true\n\
         alerts = {{ latency_ms = 20 }}\n"
    ));
    let web_cfg = cfg.clone();
    let (snapshot, checked) = with_monitor(lab, cfg, move |monitor| async move {
        let snapshot = eventually(Duration::from_secs(15), "a full window", || {
            let v = view(&monitor, "t");
            (v.analysis.rounds >= 50).then_some(v)
        })
        .await;
        let mut checked = Vec::new();
        for (name, comment) in [("fh-tcp", "hw-fh-tcp"), ("fh-icmp", "hw-fh-icmp")] {
            let before = eventually(Duration::from_secs(15), "50 final-hop rounds", || {
                let v = view(&monitor, name);
                (v.analysis.rounds >= 50).then_some(v)
            })
            .await;
            let sent = output_packets(lab, comment);
            let after = view(&monitor, name);
            // Rounds are counted once answered (100 ms apart, answered in
            // well under one): a probe per TTL up to the destination (3)
            // would send three times as many.
            assert!(
                before.analysis.rounds <= sent && sent <= after.analysis.rounds + 2,
                "{name}: {sent} probes on the wire for {}..{} rounds",
                before.analysis.rounds,
                after.analysis.rounds
            );
            checked.push((name, after));
        }

        // The API: the same document as any target's, with one row.
        let web = start_web(&monitor, &web_cfg).await;
        let doc: serde_json::Value =
            serde_json::from_str(&http_get(web.local_addr(), "/api/v1/targets/fh-tcp").await)
                .expect("JSON");
        assert_eq!(doc["final_hop_only"], true, "{doc}");
        assert_eq!(doc["hop_count"], serde_json::Value::Null, "not measured");
        assert_eq!(
            doc["hops"].as_array().map(Vec::len),
            Some(1),
            "{}",
            doc["hops"]
        );
        assert_eq!(
            doc["hops"][0]["responders"][0]["address"],
            service.to_string()
        );
        assert_eq!(doc["protocol"], "tcp");
        let traced: serde_json::Value =
            serde_json::from_str(&http_get(web.local_addr(), "/api/v1/targets/t").await)
                .expect("JSON");
        assert_eq!(traced["final_hop_only"], false);
        web.shutdown(Duration::from_secs(1)).await;

        // Rounds are stored, one row each, timed by eBPF.
        let store = monitor.store();
        store.flush().expect("flush");
        for name in ["fh-tcp", "fh-icmp"] {
            let rounds = store
                .rounds(&TargetId::new(name).unwrap(), 0, u64::MAX)
                .expect("stored rounds");
            assert!(rounds.len() >= 50, "{name}: {} rounds stored", rounds.len());
            for round in &rounds {
                assert_eq!(round.hops.len(), 1, "{name}: {round:?}");
                assert_eq!(round.source, TimestampSource::Ebpf, "{name}: {round:?}");
                let dest = round.destination().expect("answered while up");
                assert_eq!(dest.responder(), Some(service));
            }
        }

        // 30 ms more on the last link: the handshake and the echo take that
        // much longer, and raise latency alerts (20 ms) as any target's would.
        let slow = lab
            .delay(
                At::link("r3", "dst"),
                DelaySpec::fixed(Duration::from_millis(30)),
            )
            .expect("delay");
        for name in ["fh-tcp", "fh-icmp"] {
            let id = TargetId::new(name).unwrap();
            eventually(Duration::from_secs(15), "a latency alert", || {
                monitor
                    .alerts()
                    .active()
                    .into_iter()
                    .find(|a| a.kind == AlertKind::Latency && a.target.name() == &id)
            })
            .await;
            let avg = view(&monitor, name).analysis.destination.window.avg_ns;
            assert!(
                avg.is_some_and(|ns| ns > 20e6 && ns < 60e6),
                "{name}: {avg:?} ns with 30 ms added"
            );
        }
        drop(slow);

        // The service goes down: the port closes (the destination answers
        // SYNs with RSTs) and the host drops echo requests.
        drop(listener);
        iptables(
            lab,
            "dst",
            &[
                "-A",
                "INPUT",
                "-d",
                &addr,
                "-p",
                "icmp",
                "--icmp-type",
                "echo-request",
                "-j",
                "DROP",
            ],
        );
        for name in ["fh-tcp", "fh-icmp"] {
            let id = TargetId::new(name).unwrap();
            let alert = eventually(Duration::from_secs(10), "a loss alert", || {
                monitor
                    .alerts()
                    .active()
                    .into_iter()
                    .find(|a| a.kind == AlertKind::Loss && a.target.name() == &id)
            })
            .await;
            assert!(alert.summary.contains("loss"), "{}", alert.summary);
            let v = view(&monitor, name);
            assert!(
                v.analysis.destination.window.loss_pct.unwrap_or(0.0) > 0.0,
                "{name}: {:?}",
                v.analysis.destination.window
            );
        }
        let t_alerts: Vec<_> = monitor
            .alerts()
            .active()
            .into_iter()
            .filter(|a| a.target.name().as_str() == "t")
            .collect();
        assert!(
            t_alerts.is_empty(),
            "the traced target is fine: {t_alerts:?}"
        );
        store.flush().expect("flush");
        let lost = store
            .rounds(&TargetId::new("fh-tcp").unwrap(), 0, u64::MAX)
            .expect("stored rounds")
            .iter()
            .filter(|r| r.destination().is_none() && r.hops.len() == 1 && r.hops[0].is_lost())
            .count();
        assert!(lost >= 1, "the lost rounds are stored too");
        (snapshot, checked)
    });
    let hop2 = snapshot
        .analysis
        .hops
        .iter()
        .find(|h| h.ttl == 2)
        .expect("hop 2");
    let hop2_loss = hop2.window.loss_pct.expect("hop 2 was probed");
    assert!(hop2_loss > 30.0, "r2 drops most replies: {hop2_loss}%");
    assert!(hop2.rate_limited, "hop 2 is flagged as ICMP rate limiting");
    assert_eq!(snapshot.analysis.destination.window.loss_pct, Some(0.0));
    assert!(
        snapshot.analysis.localisations.is_empty(),
        "no path-loss finding: {:?}",
        snapshot.analysis.localisations
    );

    // Latency: the traced target's destination sits in the same namespace,
    // on the same path; an echo to it takes as long, and a handshake is of
    // the same order (well under the 500 ms timeout either way).
    let traced = snapshot
        .analysis
        .destination
        .window
        .avg_ns
        .expect("answers");
    for (name, v) in &checked {
        assert_eq!(v.analysis.hops.len(), 1, "{name}: a single-row path");
        let d = &v.analysis.destination.window;
        assert_eq!(
            d.loss_pct,
            Some(0.0),
            "{name} answered every probe while up"
        );
        let avg = d.avg_ns.expect("answers");
        eprintln!("{name}: avg {avg:.0} ns over the window; traced destination {traced:.0} ns");
        assert!(avg > 0.0 && avg < 5e6, "{name}: {avg} ns");
        if *name == "fh-icmp" {
            assert!(
                (avg - traced).abs() < 0.5e6,
                "echo to the destination {avg} ns against the traced {traced} ns"
            );
        }
    }
}

#[test]
fn statistics_match_the_raw_rounds_and_history_survives_a_restart() {
    let lab = &LabSpec::chain(2).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let _loss = lab.loss(At::link("r1", "r2"), 20.0).expect("loss");
    let state = temp_dir("restart");
    let cfg = config(state.path(), 1000, &[("t", target)]);
    let id = TargetId::new("t").unwrap();

    let (id2, cfg2) = (id.clone(), cfg.clone());
    let first_run = with_monitor(lab, cfg, move |monitor| async move {
        eventually(Duration::from_secs(15), "60 rounds", || {
            (view(&monitor, "t").analysis.rounds >= 60).then_some(())
        })
        .await;
        // Let the pipeline and a flush catch up with what the live view shows.
        let live = view(&monitor, "t");
        let store = monitor.store();
        store.flush().expect("flush");
        let rounds = store.rounds(&id2, 0, u64::MAX).expect("raw rounds");
        (live, rounds)
    });
    let (live, rounds) = first_run;
    assert!(
        rounds.len() as u64 >= live.analysis.rounds,
        "every live round is stored"
    );
    // Recompute hop 2 (the destination) over the rounds the live view counted.
    let counted: Vec<_> = rounds
        .iter()
        .filter(|r| r.seq <= live.analysis.last_seq.unwrap())
        .collect();
    assert_eq!(counted.len() as u64, live.analysis.rounds);
    for ttl in 1..=3u8 {
        let samples: Vec<Option<u64>> = counted
            .iter()
            .filter_map(|r| {
                r.path_samples()
                    .iter()
                    .find(|h| h.ttl.get() == ttl)
                    .map(|h| h.rtt().map(Rtt::as_nanos))
            })
            .collect();
        let received: Vec<u64> = samples.iter().flatten().copied().collect();
        let hop = live
            .analysis
            .hops
            .iter()
            .find(|h| h.ttl == ttl)
            .expect("hop row");
        assert_eq!(hop.since_start.sent, samples.len() as u64, "ttl {ttl} sent");
        assert_eq!(
            hop.since_start.received,
            received.len() as u64,
            "ttl {ttl} received"
        );
        // Stored RTTs are kept to the nearest microsecond; the live view's
        // are the kernel's nanoseconds.
        if !received.is_empty() {
            let avg = received.iter().sum::<u64>() as f64 / received.len() as f64;
            let got = hop.since_start.avg_ns.unwrap();
            assert!(
                (got - avg).abs() <= 500.0,
                "ttl {ttl} avg {got} vs raw {avg}"
            );
            let near = |live: Option<u64>, stored: Option<u64>, what: &str| {
                let (live, stored) = (live.unwrap(), stored.unwrap());
                assert!(
                    live.abs_diff(stored) <= 500,
                    "ttl {ttl} {what} {live} vs raw {stored}"
                );
            };
            near(
                hop.since_start.best_ns,
                received.iter().min().copied(),
                "best",
            );
            near(
                hop.since_start.worst_ns,
                received.iter().max().copied(),
                "worst",
            );
        }
    }
    assert!(
        counted
            .iter()
            .any(|r| r.hops.iter().any(HopSample::is_lost)),
        "the 20% loss shows in raw rounds"
    );

    // A second run on the same state directory finds the first run's history.
    let before = rounds.len();
    let (seq_after_restart, stored) = with_monitor(lab, cfg2, move |monitor| async move {
        let v = eventually(Duration::from_secs(10), "a round after restart", || {
            let v = view(&monitor, "t");
            (v.analysis.rounds >= 1).then_some(v)
        })
        .await;
        let stored = monitor
            .store()
            .rounds(&id, 0, u64::MAX)
            .expect("rounds")
            .len();
        (v.analysis.last_seq, stored)
    });
    assert!(
        stored >= before,
        "history kept across the restart: {stored} < {before}"
    );
    assert!(seq_after_restart.is_some());
}

#[test]
fn reload_adds_and_removes_targets_without_touching_the_others() {
    let lab = &LabSpec::chain(1).targets(3).build().expect("lab");
    let t = lab.targets_v4();
    let (a, b, c) = (IpAddr::V4(t[0]), IpAddr::V4(t[1]), IpAddr::V4(t[2]));
    let state = temp_dir("reload");
    let first = config(state.path(), 20, &[("a", a), ("b", b)]);
    let second = config(state.path(), 20, &[("b", b), ("c", c)]);
    let mut paused = config(state.path(), 20, &[("b", b), ("c", c)]);
    paused.push_str("paused = true\n"); // applies to the last target, c
                                        // Counts what src sends towards a: once a is removed, nothing.
    count_output(lab, "hw-removed", &["-d", &a.to_string()]);
    with_monitor(lab, first, move |monitor| async move {
        eventually(Duration::from_secs(10), "b probing", || {
            (view(&monitor, "b").analysis.rounds >= 5).then_some(())
        })
        .await;
        let b_before = view(&monitor, "b");

        let diff = monitor.reload(Config::parse(&second, "monitor-test.toml").unwrap());
        assert_eq!(diff.added, vec![TargetId::new("c").unwrap()]);
        assert_eq!(diff.removed, vec![TargetId::new("a").unwrap()]);
        assert!(
            diff.changed.is_empty(),
            "b is unchanged: {:?}",
            diff.changed
        );
        assert!(
            monitor
                .live()
                .target(&TargetId::new("a").unwrap())
                .is_none(),
            "a is gone"
        );
        // A round under way finishes (timeout 500 ms); then a's probing has
        // stopped for good.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let sent_to_a = output_packets(lab, "hw-removed");
        assert!(sent_to_a > 0, "a was probed before its removal");
        eventually(Duration::from_secs(10), "c probing", || {
            (view(&monitor, "c").analysis.rounds >= 3).then_some(())
        })
        .await;
        let b_after = view(&monitor, "b");
        assert!(
            b_after.analysis.rounds > b_before.analysis.rounds,
            "b kept probing"
        );
        assert_eq!(
            b_after.analysis.rounds,
            b_after.analysis.last_seq.unwrap() + 1,
            "b's rounds continued without a restart or gap"
        );

        monitor.reload(Config::parse(&paused, "monitor-test.toml").unwrap());
        assert_eq!(view(&monitor, "c").status, TargetStatus::Paused);
        let frozen = view(&monitor, "c").analysis.rounds;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let later = view(&monitor, "c").analysis.rounds;
        assert!(
            later <= frozen + 5,
            "a paused target stops probing ({frozen} -> {later})"
        );
        assert!(later > 0, "and keeps its history");
        assert_eq!(
            output_packets(lab, "hw-removed"),
            sent_to_a,
            "nothing was sent to the removed target a"
        );
    });
}

/// A tiny tmpfs, unmounted on drop (even after a panic).
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount(size: &str) -> TinyFs {
        let dir = temp_dir("tinyfs");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN)"
        );
        TinyFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// The daemon's web server over `monitor`, on a free loopback port of the
/// namespace, with no alerts module.
async fn start_web(monitor: &Arc<Monitor>, config: &str) -> Web {
    let mut config = Config::parse(config, "monitor-test.toml").expect("valid test config");
    config.web.listen = "127.0.0.1:0".parse().unwrap();
    Web::start(monitor, &config, None, Arc::new(NoAlerts), None)
        .await
        .expect("web server starts")
}

/// `GET http://<addr><path>`'s body, which must come with a 200. A blocking
/// client on the runtime's blocking pool, whose threads share this thread's
/// network namespace.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut response = agent.get(&url).call().expect("the web server answers");
        let body = response.body_mut().read_to_string().expect("a text body");
        assert_eq!(response.status().as_u16(), 200, "GET {url}: {body}");
        body
    })
    .await
    .expect("the request task")
}

/// The value of one series (name and labels exactly as exposed) in a scrape.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in the scrape:\n{scrape}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// The destination's sparkline: when its last round started, and its length.
async fn sparkline(addr: SocketAddr, target: &str) -> (u64, usize) {
    let doc: serde_json::Value =
        serde_json::from_str(&http_get(addr, "/api/v1/sparklines").await).expect("JSON");
    let line = doc["sparklines"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|l| l["target"] == target)
        .unwrap_or_else(|| panic!("no sparkline for {target}: {doc}"));
    (
        line["last_at_ms"].as_u64().unwrap_or(0),
        line["rtt_us"].as_array().map_or(0, Vec::len),
    )
}

#[test]
fn a_full_disk_does_not_stop_probing_or_the_live_view_and_writes_resume() {
    let lab = LabSpec::chain(1).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let fs = TinyFs::mount("8m");
    let state = fs.path().join("state");
    let filler = fs.path().join("filler");
    let cfg = config(&state, 20, &[("t", target)]);
    let web_cfg = cfg.clone();
    let id = TargetId::new("t").unwrap();
    with_monitor(&lab, cfg, move |monitor| async move {
        let web = start_web(&monitor, &web_cfg).await;
        let addr = web.local_addr();
        eventually(Duration::from_secs(10), "first rounds stored", || {
            (monitor.store().health().last_flush_ok_at_ms.is_some()).then_some(())
        })
        .await;
        // Fill the filesystem to the last byte.
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
        drop(file);

        let failing = eventually(
            Duration::from_secs(20),
            "the store to report the full disk",
            || {
                let h = monitor.store().health();
                (!h.ok).then_some(h)
            },
        )
        .await;
        assert!(
            failing.last_error.is_some(),
            "the error is kept for health: {failing:?}"
        );
        let rounds_at_failure = view(&monitor, "t").analysis.rounds;
        let scrape_before = http_get(addr, "/metrics").await;
        let line_before = sparkline(addr, "t").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rounds_later = view(&monitor, "t").analysis.rounds;
        assert!(
            rounds_later >= rounds_at_failure + 10,
            "probing and the live view go on: {rounds_at_failure} -> {rounds_later}"
        );
        // /metrics and the sparklines are fed by the pipeline, not by what
        // the store wrote: they go on while every flush fails.
        let scrape_after = http_get(addr, "/metrics").await;
        let line_after = sparkline(addr, "t").await;
        assert!(
            !monitor.store().health().ok,
            "the disk was still full for both scrapes"
        );
        for scrape in [&scrape_before, &scrape_after] {
            assert_eq!(sample(scrape, "hopwatch_store_healthy"), 0.0);
        }
        assert!(
            sample(&scrape_after, "hopwatch_store_flush_errors_total")
                > sample(&scrape_before, "hopwatch_store_flush_errors_total"),
            "flushes kept failing between the scrapes"
        );
        for series in [
            r#"hopwatch_target_probes_sent_total{target="t"}"#,
            r#"hopwatch_target_probes_received_total{target="t"}"#,
            r#"hopwatch_target_rtt_seconds_count{target="t"}"#,
            r#"hopwatch_hop_probes_sent_total{target="t",ttl="1"}"#,
            r#"hopwatch_hop_probes_received_total{target="t",ttl="1"}"#,
        ] {
            let (before, after) = (
                sample(&scrape_before, series),
                sample(&scrape_after, series),
            );
            assert!(
                after >= before + 10.0,
                "{series} goes on while the disk refuses writes: {before} -> {after}"
            );
        }
        assert!(
            line_after.0 >= line_before.0 + 1_000 && line_after.1 >= line_before.1.min(100),
            "the sparkline goes on: {line_before:?} -> {line_after:?}"
        );
        assert_eq!(
            sample(&scrape_after, "hopwatch_live_rounds_skipped_total"),
            0.0,
            "the round tap kept up"
        );

        std::fs::remove_file(&filler).expect("free the space");
        let recovered = eventually(Duration::from_secs(20), "writes to resume", || {
            let h = monitor.store().health();
            h.ok.then_some(h)
        })
        .await;
        // New rounds keep arriving, so a few bytes may be pending again; what
        // matters is that flushes succeed and the backlog reached the disk.
        assert_eq!(recovered.consecutive_failures, 0, "{recovered:?}");
        // Rounds from while the disk was full reached the store once space returned.
        monitor.store().flush().expect("flush");
        let stored = monitor.store().rounds(&id, 0, u64::MAX).expect("rounds");
        let seqs: Vec<u64> = stored.iter().map(|r| r.seq).collect();
        let missing = (seqs[0]..=*seqs.last().unwrap())
            .filter(|s| !seqs.contains(s))
            .count();
        assert_eq!(missing, 0, "no round accepted during the outage was lost");
        web.shutdown(Duration::from_secs(1)).await;
    });
}

//! `[[peer]]`s in the real daemon: `hopwatch run` in `src` runs a STAMP
//! session to the `[reflector]` of another `hopwatch run` in `dst` (allowing
//! only `src`'s address) across the lab's router, with a one-way
//! delay on the forward direction and one-way loss on the backward one; the
//! API and /metrics must put each in its own direction, and the peer's
//! history must reach the store (a short flush interval) and the history
//! API. A reload then swaps the peer for another without a restart. Privileged (namespaces, eBPF,
//! iptables, NFQUEUE); fails, never skips, without root.
//! The forward delay is judged against the hold times the delay element reports
//! it actually applied, not the nominal 20 ms: the element is a userspace
//! thread that releases packets late on a busy machine (the lab's error).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hopwatch_lab::daemon::Daemon;
use hopwatch_lab::webclient::{eventually, get, get_json};
use hopwatch_lab::{hopwatch_bin, At, Delay, DelaySpec, Lab, LabSpec};
use serde_json::Value;

/// The daemon's web server, on `src`'s own loopback.
const WEB: &str = "127.0.0.1:9471";
const FORWARD_DELAY_MS: f64 = 20.0;
const BACKWARD_LOSS_PCT: f64 = 20.0;
/// What the path and the daemon's kernel timestamps add on top of the delay
/// element's holds; below 1 ms so that a product error of 1 ms fails.
const PATH_SLACK_MS: f64 = 0.5;

/// Bounds for a mean over `n` of the packets `delay` held since its
/// `reset_timing`, in ms: the mean of the `n` shortest holds and of the `n`
/// longest. The window holds only the answered probes of those the element
/// held, and a stall of the element may fall on them or not.
fn held_ms(delay: &Delay<'_>, n: usize) -> (f64, f64) {
    let mut holds = delay.holds();
    eprintln!("{}: {:?}", delay.label(), delay.stats());
    assert!(
        holds.len() >= n && n > 0,
        "{} held {} packets, the window has {n}",
        delay.label(),
        holds.len()
    );
    holds.sort_unstable();
    let mean = |part: &[Duration]| part.iter().sum::<Duration>().as_secs_f64() * 1e3 / n as f64;
    (mean(&holds[..n]), mean(&holds[holds.len() - n..]))
}

/// A window mean of delays across the element: at least the mean of its
/// shortest holds, at most the mean of its longest ones plus the path.
fn assert_held(what: &str, measured_ms: f64, (low, high): (f64, f64), doc: &Value) {
    eprintln!("{what}: {measured_ms:.3} ms, held {low:.3}..{high:.3} ms on average");
    assert!(
        measured_ms >= low - 0.01 && measured_ms <= high + PATH_SLACK_MS,
        "{what}: {measured_ms:.3} ms; the delay element held {low:.3}..{high:.3} ms \
         on average over as many packets: {doc:#}"
    );
}

fn write_config(path: &Path, state: &Path, peers: &[(&str, SocketAddr)]) {
    let mut text = format!(
        "[service]\nstate_dir = {:?}\n\n[web]\nlisten = \"{WEB}\"\n\n\
         [storage]\nflush_interval = \"500ms\"\n\n\
         [statistics]\nwindow = 300\n\n[defaults]\ntimeout = \"1s\"\n",
        state.display().to_string()
    );
    for (name, addr) in peers {
        text.push_str(&format!(
            "\n[[peer]]\nname = \"{name}\"\naddress = \"{}\"\nport = {}\n\
             interval = \"10ms\"\nclock = \"shared\"\ntags = [\"wan\"]\n",
            addr.ip(),
            addr.port()
        ));
    }
    std::fs::write(path, text).expect("write the config");
}

fn peer_doc(lab: &Lab, name: &str) -> Result<Value, String> {
    get_json(
        lab,
        "src",
        &format!("http://{WEB}/api/v1/peers/{name}"),
        &[],
        None,
    )
    .map_err(|e| e.to_string())
}

fn f(doc: &Value, pointer: &str) -> f64 {
    doc.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {doc:#}"))
}

/// The value of the one /metrics sample whose name and labels are `series`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample `{series}` in\n{text}"))
}

#[test]
fn a_peer_link_is_measured_per_direction_and_reloaded_live() {
    let lab: Lab = LabSpec::chain(1)
        .targets(1)
        .build()
        .expect("the lab builds (needs root: CAP_SYS_ADMIN, CAP_NET_ADMIN)");
    let dst: IpAddr = lab.interface("dst", "r1").expect("dst faces r1").v4.into();
    let reflector_addr = SocketAddr::new(dst, 862);
    let src: IpAddr = lab.interface("src", "r1").expect("src faces r1").v4.into();
    let dir = tempfile::Builder::new()
        .prefix("hopwatch-peer-daemon")
        .tempdir()
        .expect("temp dir");
    let reflector =
        Daemon::start_reflector(&lab, "dst", &hopwatch_bin(), dir.path(), dst, src, WEB)
            .expect("the reflecting daemon starts with its [reflector]");
    let delay = lab
        .delay(
            At::link("r1", "dst"),
            DelaySpec::fixed(Duration::from_millis(FORWARD_DELAY_MS as u64)),
        )
        .expect("forward delay");
    let _loss = lab
        .loss(At::link("r1", "src"), BACKWARD_LOSS_PCT)
        .expect("backward loss");

    let config = dir.path().join("hopwatch.toml");
    write_config(&config, &dir.path().join("state"), &[("b", reflector_addr)]);
    let mut daemon = Daemon::start(&lab, "src", &hopwatch_bin(), &config).expect("daemon starts");

    // 300 probes at 10 ms fill the window in 3 s (plus the 1 s timeout for losses).
    let doc = eventually(Duration::from_secs(30), "a full peer window", || {
        let doc = peer_doc(&lab, "b")?;
        if doc["state"] == "running" && f(&doc, "/window/probes") >= 300.0 {
            Ok(doc)
        } else {
            Err(doc.to_string())
        }
    })
    .expect("the peer's window fills");
    // Judge a window of probes that all went through the element after its
    // hold record restarted: the window is the latest 300 resolved probes, and
    // of 500 sent from now on at least 300 are answered (20 % are lost, and
    // resolve only at their 1 s timeout).
    delay.reset_timing();
    let sent_at_reset = f(&doc, "/totals/sent");
    let doc = eventually(Duration::from_secs(30), "500 more probes", || {
        let doc = peer_doc(&lab, "b")?;
        if f(&doc, "/totals/sent") >= sent_at_reset + 500.0 {
            Ok(doc)
        } else {
            Err(doc.to_string())
        }
    })
    .expect("the peer keeps probing");
    let answered = f(&doc, "/window/received") as usize;
    let held = held_ms(&delay, answered);
    assert!(held.0 >= FORWARD_DELAY_MS, "the delay applies: {held:?}");

    assert_eq!(doc["address"], dst.to_string());
    assert_eq!(doc["mode"], "udp");
    assert_eq!(doc["tags"][0], "wan");
    assert_eq!(doc["window"]["owd_verdict"], "shared_clock", "{doc:#}");
    assert_eq!(doc["window"]["owd_reliable"], true);
    // The daemon runs as root: T1 and T3 are written at TC egress by eBPF.
    assert_eq!(doc["window"]["timestamp_source"], "ebpf", "{doc:#}");
    let ms = |pointer: &str| f(&doc, pointer) / 1e6;
    let rtt = ms("/window/rtt/mean_ns");
    let forward = ms("/window/forward/owd/mean_ns");
    let backward = ms("/window/backward/owd/mean_ns");
    assert_held("RTT", rtt, held, &doc);
    assert_held("forward OWD", forward, held, &doc);
    assert!(
        (0.0..2.0).contains(&backward),
        "backward OWD {backward:.3} ms should be the bare path: {doc:#}"
    );
    // 300 probes at 20 % loss: 60 ± 7 expected; allow generous binomial slack.
    let backward_loss = f(&doc, "/window/backward/loss_pct");
    let forward_loss = f(&doc, "/window/forward/loss_pct");
    assert!(
        (8.0..35.0).contains(&backward_loss),
        "backward loss {backward_loss:.1} % with {BACKWARD_LOSS_PCT} % injected: {doc:#}"
    );
    assert_eq!(forward_loss, 0.0, "nothing is dropped forward: {doc:#}");
    assert!(f(&doc, "/totals/sent") >= 300.0, "{doc:#}");

    let text = get(&lab, "src", &format!("http://{WEB}/metrics"), &[], None)
        .expect("GET /metrics")
        .body;
    let owd_forward = metric(
        &text,
        "hopwatch_peer_owd_seconds{peer=\"b\",direction=\"forward\"}",
    );
    let rtt_seconds = metric(&text, "hopwatch_peer_rtt_seconds{peer=\"b\"}");
    // The window has moved on a little since the API answered.
    let held = held_ms(&delay, answered);
    let text_doc = Value::String(text.clone());
    assert_held("/metrics forward OWD", owd_forward * 1e3, held, &text_doc);
    assert_held("/metrics RTT", rtt_seconds * 1e3, held, &text_doc);
    let loss_backward = metric(
        &text,
        "hopwatch_peer_loss_ratio{peer=\"b\",direction=\"backward\"}",
    );
    assert!(
        (0.08..0.35).contains(&loss_backward),
        "backward loss ratio {loss_backward}"
    );
    assert_eq!(
        metric(
            &text,
            "hopwatch_peer_loss_ratio{peer=\"b\",direction=\"forward\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(&text, "hopwatch_peer_state{peer=\"b\",state=\"running\"}"),
        1.0
    );

    // History: one-second batches, flushed every 500 ms, served per series.
    let history = eventually(Duration::from_secs(10), "stored peer history", || {
        let doc = get_json(
            &lab,
            "src",
            &format!("http://{WEB}/api/v1/peers/b/history?range=1h"),
            &[],
            None,
        )
        .map_err(|e| e.to_string())?;
        let points = doc["series"][0]["points"].as_array().map_or(0, Vec::len);
        if points >= 2 {
            Ok(doc)
        } else {
            Err(doc.to_string())
        }
    })
    .expect("the peer's history is stored and served");
    assert_eq!(history["peer"], "b");
    assert_eq!(history["resolution"], "raw", "{history:#}");
    let series: Vec<&str> = history["series"]
        .as_array()
        .expect("a series array")
        .iter()
        .filter_map(|s| s["series"].as_str())
        .collect();
    assert_eq!(series, ["rtt", "forward", "backward"]);
    let stored_rtt = f(&history, "/series/0/total/avg_ns") / 1e6;
    assert!(
        (FORWARD_DELAY_MS..FORWARD_DELAY_MS + 2.0).contains(&stored_rtt),
        "stored RTT {stored_rtt:.3} ms: {history:#}"
    );
    let stored_forward = f(&history, "/series/1/total/avg_ns") / 1e6;
    assert!(
        (FORWARD_DELAY_MS..FORWARD_DELAY_MS + 2.0).contains(&stored_forward),
        "stored forward OWD {stored_forward:.3} ms: {history:#}"
    );
    assert_eq!(f(&history, "/series/1/total/lost"), 0.0, "{history:#}");
    let rtt_lost = f(&history, "/series/0/total/lost");
    assert!(
        rtt_lost > 0.0,
        "backward loss shows in the stored RTT series: {history:#}"
    );
    let unknown = get(
        &lab,
        "src",
        &format!("http://{WEB}/api/v1/peers/nobody/history"),
        &[],
        None,
    )
    .expect("GET an unknown peer's history");
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    // Reload: "b" goes, "c" comes, without a restart.
    write_config(&config, &dir.path().join("state"), &[("c", reflector_addr)]);
    daemon
        .wait_for_log("peers reloaded", Duration::from_secs(15))
        .expect("the daemon reloads the peers");
    let c = eventually(Duration::from_secs(20), "peer c measuring", || {
        let doc = peer_doc(&lab, "c")?;
        if doc["state"] == "running" && f(&doc, "/window/received") > 10.0 {
            Ok(doc)
        } else {
            Err(doc.to_string())
        }
    })
    .expect("the added peer runs");
    assert_eq!(c["name"], "c");
    let list = get_json(
        &lab,
        "src",
        &format!("http://{WEB}/api/v1/peers"),
        &[],
        None,
    )
    .expect("GET /api/v1/peers");
    let names: Vec<&str> = list["peers"]
        .as_array()
        .expect("a peers array")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["c"]);
    let gone = get(
        &lab,
        "src",
        &format!("http://{WEB}/api/v1/peers/b"),
        &[],
        None,
    )
    .expect("GET the removed peer");
    assert_eq!(gone.status, 404, "{}", gone.body);

    let status = daemon.stop().expect("the daemon stops");
    assert!(status.success(), "exit status {status}");
    let status = reflector.stop().expect("the reflecting daemon stops");
    assert!(status.success(), "exit status {status}");
}

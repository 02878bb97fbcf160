//! Remote write in the lab, with Debian's real Prometheus as the receiver
//! (`--web.enable-remote-write-receiver`, out-of-order ingestion on, the
//! fleet rules of deploy/prometheus loaded): three `hopwatch run` daemons,
//! in the lab's `src`, `r1` and `r2` namespaces (three vantage points),
//! watch the same two targets in `dst`, where Prometheus listens.
//!
//! - every series arrives with its daemon's `vantage` label;
//! - `src`'s uplink is cut (every packet it sends to `r1` dropped) for
//!   [`CUT`]: it loses both targets and cannot push; after the link is back,
//!   Prometheus holds its samples of the outage, rebuilt from its history
//!   (loss 100% while cut, counters still counting), with no gap longer
//!   than two push intervals, and the fleet rules' isolation expression,
//!   evaluated over the outage, names `src` and only `src`;
//! - a fault of one target (`t2` drops everything) seen from all three
//!   fires `HopwatchTargetDown` for `t2` in the live Prometheus, and
//!   `HopwatchVantageIsolated` for nobody;
//! - `promtool test rules` passes the fleet rules' unit tests.
//!
//! The issue asked for a 5-minute cut; the mechanism does not depend on the
//! length (the backfill rebuilds whatever the gap holds, in requests of at
//! most 2,000 samples), so the suite cuts for 60 s to keep its time budget.
//! `HOPWATCH_REMOTE_CUT_SECS=300` runs the 5-minute version.
//!
//! Privileged, and needs Debian's prometheus package; fails without them.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hopwatch::sys::now_ms;
use hopwatch_lab::daemon::Daemon;
use hopwatch_lab::impair::At;
use hopwatch_lab::prometheus::{promtool, Prometheus};
use hopwatch_lab::webclient::{self, eventually};
use hopwatch_lab::{hopwatch_bin, Lab, LabSpec};
use serde_json::Value;

const VANTAGES: [&str; 3] = ["src", "r1", "r2"];
const PROMETHEUS_PORT: u16 = 9090;
/// The push interval of the daemons.
const PUSH_INTERVAL: Duration = Duration::from_secs(1);

fn cut() -> Duration {
    let secs = std::env::var("HOPWATCH_REMOTE_CUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

#[track_caller]
fn must<T>(result: Result<T, impl Display>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// A daemon config for vantage point `vantage`: probes every 500 ms, a
/// window of 10 probes (so a lost target shows within 5 s), pushes every
/// second to `write_url`.
fn config_text(state: &Path, vantage: &str, targets: &[(&str, IpAddr)], write_url: &str) -> String {
    let mut text = format!(
        "# remote_write_lab config\n[service]\nstate_dir = {:?}\ntimestamps = \"ebpf\"\nvantage = \"{vantage}\"\n\n\
         [storage]\nflush_interval = \"1s\"\n\n[statistics]\nwindow = 10\n\n\
         [enrichment]\nreverse_dns = false\n\n[web]\nlisten = \"127.0.0.1:9470\"\n\n\
         [defaults]\ninterval = \"500ms\"\ntimeout = \"1s\"\nmax_hops = 8\n\n\
         [[remote_write]]\nname = \"central\"\nurl = \"{write_url}\"\ninterval = \"1s\"\ntimeout = \"2s\"\n\
         labels = {{ lab = \"remote\" }}\nbackfill_samples_per_second = 5000\n",
        state.display().to_string()
    );
    for (name, ip) in targets {
        text.push_str(&format!(
            "\n[[target]]\nname = \"{name}\"\nhost = \"{ip}\"\n"
        ));
    }
    text
}

/// `/healthz`'s `remote_write[0]` of the daemon in `node`.
fn receiver_state(lab: &Lab, node: &str) -> Result<Value, String> {
    let doc = webclient::get_json(lab, node, "http://127.0.0.1:9470/healthz", &[], None)
        .map_err(|e| e.to_string())?;
    Ok(doc["remote_write"][0].clone())
}

/// A value of the daemon's own /metrics in `node`.
fn metric(lab: &Lab, node: &str, line_start: &str) -> Option<f64> {
    let r = webclient::get(lab, node, "http://127.0.0.1:9470/metrics", &[], None).ok()?;
    r.body
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn three_vantage_points_push_and_one_backfills_its_outage() {
    let lab = LabSpec::chain(2).targets(2).build().expect("lab");
    let [t1, t2] = [lab.targets_v4()[0], lab.targets_v4()[1]];
    let (t1, t2) = (IpAddr::V4(t1), IpAddr::V4(t2));
    let dir = tempfile::Builder::new()
        .prefix("remote-lab")
        .tempdir()
        .unwrap();

    // Prometheus in dst, on t1's address, with the shipped fleet rules.
    let listen = SocketAddr::new(t1, PROMETHEUS_PORT);
    let prom_yml = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_yml,
        format!(
            "global:\n  evaluation_interval: 1s\nstorage:\n  tsdb:\n    out_of_order_time_window: 1h\n\
             rule_files:\n  - {}\n",
            deploy().join("hopwatch-fleet-rules.yml").display()
        ),
    )
    .unwrap();
    let prometheus = must(Prometheus::start_with(
        &lab,
        "dst",
        &prom_yml,
        &dir.path().join("tsdb"),
        listen,
        &["--web.enable-remote-write-receiver"],
    ));

    let write_url = format!("http://{listen}/api/v1/write");
    let targets = [("t1", t1), ("t2", t2)];
    let _daemons: Vec<Daemon<'_>> = VANTAGES
        .iter()
        .map(|node| {
            let config = dir.path().join(format!("{node}.toml"));
            std::fs::write(
                &config,
                config_text(
                    &dir.path().join(format!("state-{node}")),
                    node,
                    &targets,
                    &write_url,
                ),
            )
            .unwrap();
            must(Daemon::start(&lab, node, &hopwatch_bin(), &config))
        })
        .collect();

    // Every vantage point's series arrive, labelled with it and the extra label.
    must(eventually(
        Duration::from_secs(60),
        "series from all three vantage points",
        || {
            let found = must(
                prometheus.query("count by (vantage) (hopwatch_target_loss_ratio{lab=\"remote\"})"),
            );
            let mut vantages: Vec<String> = found
                .iter()
                .filter(|s| s.value == 2.0)
                .filter_map(|s| s.labels.get("vantage").cloned())
                .collect();
            vantages.sort();
            (vantages == ["r1", "r2", "src"])
                .then_some(())
                .ok_or(format!("{found:?}"))
        },
    ));
    let per_target = must(
        prometheus.query("count by (vantage, target) ({__name__=~\"hopwatch_.+\", target!=\"\"})"),
    );
    for s in &per_target {
        assert!(s.value <= 30.0, "default series budget exceeded: {s:?}");
    }
    std::thread::sleep(Duration::from_secs(5));

    // ---- cut src off for a while
    let cut_len = cut();
    let cut_from = now_ms();
    let blackout = must(lab.blackout(At::link("src", "r1")));
    std::thread::sleep(cut_len / 2);
    let during = must(receiver_state(&lab, "src"));
    assert_eq!(during["ok"], false, "{during}");
    assert!(
        during["backlog_seconds"].as_f64().unwrap_or(0.0) > 5.0,
        "{during}"
    );
    std::thread::sleep(cut_len - cut_len / 2);
    let cut_to = now_ms();
    must(blackout.remove());
    let restored = Instant::now();

    // The daemon catches up: backfilled samples, no backlog left.
    let after = must(eventually(
        Duration::from_secs(90),
        "src to backfill its outage",
        || {
            let state = receiver_state(&lab, "src")?;
            let done = state["ok"] == true
                && state["backlog_seconds"].as_f64() == Some(0.0)
                && state["samples_backfilled"].as_u64().unwrap_or(0) > 0;
            done.then_some(state.clone()).ok_or(format!("{state}"))
        },
    ));
    eprintln!(
        "backfill of a {} s outage took {:.1} s: {after}",
        cut_len.as_secs(),
        restored.elapsed().as_secs_f64()
    );
    assert_eq!(after["samples_dropped"], 0, "{after}");
    let backfilled = after["samples_backfilled"].as_u64().unwrap();
    // Every tick of the outage, for the rebuilt families of both targets.
    let ticks = cut_len.as_secs() - 5;
    assert!(
        backfilled >= ticks * 2 * 5,
        "only {backfilled} samples backfilled"
    );

    // Prometheus holds src's samples of the outage, no gap over two intervals.
    let window_s = (now_ms() - cut_from) / 1000 + 20;
    let at = now_ms() as f64 / 1000.0;
    let max_gap_ms = 2 * PUSH_INTERVAL.as_millis() as u64;
    for (family, target) in [
        ("hopwatch_target_loss_ratio", "t1"),
        ("hopwatch_target_loss_ratio", "t2"),
        ("hopwatch_target_probes_sent_total", "t1"),
        ("hopwatch_hop_loss_ratio", "t1"),
    ] {
        let selector = format!("{family}{{vantage=\"src\",target=\"{target}\"}}[{window_s}s]");
        let series = must(prometheus.raw_samples(&selector, at));
        assert!(!series.is_empty(), "nothing for {selector}");
        for (labels, samples) in &series {
            let covering: Vec<&(u64, f64)> = samples
                .iter()
                .filter(|(t, _)| *t + 5_000 >= cut_from && *t <= cut_to + 5_000)
                .collect();
            assert!(
                covering.first().is_some_and(|(t, _)| *t <= cut_from)
                    && covering.last().is_some_and(|(t, _)| *t >= cut_to),
                "{labels:?}: the samples do not span the outage {cut_from}..{cut_to}: {covering:?}"
            );
            let worst = covering
                .windows(2)
                .map(|w| w[1].0 - w[0].0)
                .max()
                .unwrap_or(u64::MAX);
            assert!(
                worst <= max_gap_ms,
                "{labels:?}: a gap of {worst} ms in the outage (max {max_gap_ms}): {covering:?}"
            );
            if family == "hopwatch_target_loss_ratio" {
                // Rebuilt from history: the probes sent while cut were all lost.
                let mid = cut_from + (cut_to - cut_from) / 2;
                let at_mid = covering.iter().find(|(t, _)| *t >= mid).unwrap();
                assert_eq!(at_mid.1, 1.0, "{labels:?} at mid-outage: {covering:?}");
            }
            if family == "hopwatch_target_probes_sent_total" {
                assert!(
                    covering.windows(2).all(|w| w[1].1 >= w[0].1)
                        && covering.last().unwrap().1 > covering.first().unwrap().1,
                    "{labels:?}: the counter must keep counting: {covering:?}"
                );
            }
        }
    }

    // The fleet rules over the outage (their recording rules ran live, before
    // the backfill came, so the expressions are evaluated on the raw series):
    // src is isolated, no target is down.
    let lost = "(hopwatch_target_loss_ratio >= bool 0.9)";
    let isolated = format!(
        "avg by (vantage) ({lost}) == 1 and on () (count(avg by (vantage) ({lost}) < 1) > 0)"
    );
    let down = format!("sum by (target) ({lost}) >= 2");
    let mid = (cut_from + (cut_to - cut_from) / 2) as f64 / 1000.0;
    let found = must(prometheus.query_at(&isolated, mid));
    let names: Vec<&str> = found
        .iter()
        .filter_map(|s| s.labels.get("vantage").map(String::as_str))
        .collect();
    assert_eq!(names, ["src"], "isolated at mid-outage: {found:?}");
    let found = must(prometheus.query_at(&down, mid));
    assert!(found.is_empty(), "a target down at mid-outage: {found:?}");

    // ---- a fault of t2, seen from every vantage point: the live alert
    let fault = must(lab.blackout(At::router("dst").to_address(t2)));
    let firing = must(eventually(
        Duration::from_secs(90),
        "HopwatchTargetDown for t2",
        || {
            let alerts = must(prometheus.alerts());
            let isolated: Vec<&Value> = alerts
                .iter()
                .filter(|a| a["labels"]["alertname"] == "HopwatchVantageIsolated")
                .collect();
            if !isolated.is_empty() {
                panic!("a target fault isolates no vantage point: {isolated:?}");
            }
            alerts
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == "HopwatchTargetDown"
                        && a["labels"]["target"] == "t2"
                        && a["state"] == "firing"
                })
                .cloned()
                .ok_or(format!("{alerts:?}"))
        },
    ));
    assert!(
        firing["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("t2 is down from 3 vantage points")),
        "{firing}"
    );
    let down_now = must(prometheus.query("target:hopwatch_vantages_losing:count"));
    assert!(
        down_now
            .iter()
            .any(|s| s.labels["target"] == "t2" && s.value == 3.0)
            && down_now
                .iter()
                .any(|s| s.labels["target"] == "t1" && s.value == 0.0),
        "{down_now:?}"
    );
    must(fault.remove());

    // What one push costs, from r1's own counters (2 targets of 2 hops).
    let bytes = metric(&lab, "r1", "hopwatch_remote_write_sent_bytes_total").unwrap();
    let sent = metric(&lab, "r1", "hopwatch_remote_write_samples_sent_total").unwrap();
    let series = metric(&lab, "r1", "hopwatch_remote_write_series").unwrap();
    eprintln!(
        "r1: {series} series per push, {sent} samples and {bytes} bytes sent (live and backfill) so far"
    );
    assert!(bytes > 0.0 && sent > 0.0);
}

/// docs/benchmarks.md, "Remote write": series per 10-hop target with the
/// default set (bar: at most 30) and the full one, and bytes per push, from
/// one daemon pushing both sets (two receivers told apart by a label) to a
/// real Prometheus.
#[test]
fn the_default_series_set_keeps_a_ten_hop_target_within_budget() {
    let lab = LabSpec::chain(9).targets(1).build().expect("lab");
    let t = IpAddr::V4(lab.targets_v4()[0]);
    assert_eq!(lab.expected_trace(t).len(), 10, "a 10-hop path");
    let dir = tempfile::Builder::new()
        .prefix("remote-budget")
        .tempdir()
        .unwrap();
    let listen = SocketAddr::new(t, PROMETHEUS_PORT);
    let prom_yml = dir.path().join("prometheus.yml");
    std::fs::write(&prom_yml, "global:\n  evaluation_interval: 1s\n").unwrap();
    let prometheus = must(Prometheus::start_with(
        &lab,
        "dst",
        &prom_yml,
        &dir.path().join("tsdb"),
        listen,
        &["--web.enable-remote-write-receiver"],
    ));
    let url = format!("http://{listen}/api/v1/write");
    let mut text = config_text(&dir.path().join("state"), "bench", &[("t", t)], &url)
        .replace("max_hops = 8", "max_hops = 12")
        .replace("name = \"central\"", "name = \"default\"")
        .replace("lab = \"remote\"", "set = \"default\"");
    text.push_str(&format!(
        "\n[[remote_write]]\nname = \"full\"\nurl = \"{url}\"\ninterval = \"1s\"\nseries = \"full\"\nlabels = {{ set = \"full\" }}\n"
    ));
    let config = dir.path().join("hopwatch.toml");
    std::fs::write(&config, text).unwrap();
    let _daemon = must(Daemon::start(&lab, "src", &hopwatch_bin(), &config));

    let count = |set: &str| -> Result<f64, String> {
        let q = format!("count({{vantage=\"bench\",set=\"{set}\",target=\"t\"}})");
        let found = prometheus.query(&q).map_err(|e| e.to_string())?;
        found
            .first()
            .map(|s| s.value)
            .ok_or(format!("{q}: nothing"))
    };
    // Every hop answered and every gauge known: the counts settle.
    let default = must(eventually(
        Duration::from_secs(60),
        "25 default series",
        || count("default").and_then(|n| (n == 25.0).then_some(n).ok_or(format!("{n}"))),
    ));
    let full = must(eventually(
        Duration::from_secs(60),
        "282 full series",
        || count("full").and_then(|n| (n == 282.0).then_some(n).ok_or(format!("{n}"))),
    ));
    assert!(default <= 30.0 && full > default);
    std::thread::sleep(Duration::from_secs(10));
    for set in ["default", "full"] {
        let line = |name: &str| format!("{name}{{remote=\"{set}\"}}");
        let bytes = metric(&lab, "src", &line("hopwatch_remote_write_sent_bytes_total")).unwrap();
        let samples = metric(
            &lab,
            "src",
            &line("hopwatch_remote_write_samples_sent_total"),
        )
        .unwrap();
        let series = metric(&lab, "src", &line("hopwatch_remote_write_series")).unwrap();
        let pushes = samples / series;
        let per_push = bytes / pushes;
        eprintln!(
            "series set {set}: {series} series per push (daemon-wide), {per_push:.0} bytes per push \
             (snappy), {:.0} bytes per target per hour at the default 15 s interval",
            per_push * 240.0
        );
        assert!(pushes >= 10.0, "{set}: {pushes} pushes");
    }
}

#[test]
fn promtool_passes_the_fleet_rules_tests() {
    let dir = deploy();
    let check = must(promtool(
        &dir,
        &["check", "config", "remote-write-receiver.yml"],
    ));
    assert!(check.success, "{}", check.output);
    let test = must(promtool(
        &dir,
        &["test", "rules", "hopwatch-fleet-rules.test.yml"],
    ));
    assert!(test.success, "{}", test.output);
    assert!(test.output.contains("SUCCESS"), "{}", test.output);
}

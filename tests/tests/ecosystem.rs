//! The Prometheus and Grafana files hopwatch ships (deploy/prometheus,
//! deploy/grafana), checked against the tools that read them and against a
//! real daemon:
//!
//! - `promtool` accepts the scrape config and the rules, and the rules' unit
//!   tests (deploy/prometheus/hopwatch-rules.test.yml) pass;
//! - the dashboard JSON is a Grafana dashboard with a Prometheus data source
//!   variable and a target variable, and every query in it is valid PromQL;
//! - in the network lab, a real Prometheus scrapes a real `hopwatch run` with
//!   the shipped rules loaded: every metric the rules and the dashboard read is
//!   in hopwatch's /metrics, every rule evaluates without error, every panel
//!   query answers with data, and the loss alert fires, naming the hop where
//!   the loss begins, when the lab drops packets in the middle of the path.
//!   The daemon also measures two `[[peer]]` STAMP links, so the
//!   `hopwatch_peer_*` series the peer rules and panels read are exported:
//!   one to the `[reflector]` of a second `hopwatch run` at the far end of
//!   the path, whose loss alert must fire naming the forward direction, and
//!   one to a router with no reflector, whose down alert must fire.
//!
//! Privileged (the lab) and needs Debian's prometheus package (promtool comes
//! with it; deploy/setup-test.sh installs it); fails, never skips, without them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hopwatch_lab::daemon::Daemon;
use hopwatch_lab::prometheus::{promtool, Prometheus};
use hopwatch_lab::promql::{declared_names, expand_grafana, exposition_names, metric_names};
use hopwatch_lab::webclient::{self, eventually};
use hopwatch_lab::{hopwatch_bin, At, LabSpec};
use serde_json::Value;

const WEB: &str = "127.0.0.1:9470";
const PROMETHEUS_PORT: u16 = 9090;
const READ_TOKEN: &str = "ecosystem-read-token-0123456789";
/// The `[[peer]]` that answers (a second daemon's `[reflector]` on `dst`)
/// and the one that does not (a router: no reflector, port unreachable).
const PEER: &str = "far";
const DEAD_PEER: &str = "dead";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Series Prometheus makes itself, which a rule may read.
const PROMETHEUS_SERIES: [&str; 2] = ["ALERTS", "up"];

// ------------------------------------------------------------------ files

#[test]
fn promtool_accepts_the_scrape_config_and_the_rules_and_their_unit_tests_pass() {
    let dir = deploy("prometheus");
    let config = promtool(&dir, &["check", "config", "prometheus.yml"]).expect("promtool");
    assert!(config.success, "promtool check config:\n{}", config.output);
    // The config loads the rules file next to it.
    assert!(
        config.output.contains("hopwatch-rules.yml"),
        "{}",
        config.output
    );

    let rules = promtool(&dir, &["check", "rules", "hopwatch-rules.yml"]).expect("promtool");
    assert!(rules.success, "promtool check rules:\n{}", rules.output);
    let alerts = read(&dir.join("hopwatch-rules.yml"))
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("- alert:") || l.trim_start().starts_with("- record:")
        })
        .count();
    assert!(
        rules
            .output
            .contains(&format!("SUCCESS: {alerts} rules found")),
        "promtool found another number of rules than the file's {alerts}:\n{}",
        rules.output
    );

    let tests = promtool(&dir, &["test", "rules", "hopwatch-rules.test.yml"]).expect("promtool");
    assert!(tests.success, "promtool test rules:\n{}", tests.output);
    assert!(tests.output.contains("SUCCESS"), "{}", tests.output);
}

/// Every panel of a dashboard, rows' nested panels included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// (where, expression) for every PromQL query of the dashboard: panel
/// targets and annotation queries. Template variable queries are
/// `label_values(...)`, checked separately.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard) {
        for target in panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            out.push((
                format!("panel {:?} query {}", panel["title"], target["refId"]),
                target["expr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if let Some(expr) = a["expr"].as_str() {
            out.push((format!("annotation {:?}", a["name"]), expr.to_owned()));
        }
    }
    out
}

/// The metric named in a `label_values(metric{...}, label)` variable query.
fn label_values_metric(query: &str) -> String {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_values() query: {query}"));
    let (selector, _label) = inner.rsplit_once(',').expect("label_values(metric, label)");
    let names = metric_names(&expand_grafana(selector, "1m", ".*")).expect("a selector");
    assert_eq!(names.len(), 1, "{query}");
    names.into_iter().next().unwrap()
}

fn load_dashboard() -> Value {
    let path = deploy("grafana/hopwatch-dashboard.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_with_valid_queries() {
    let d = load_dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(d["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(d["title"].as_str().is_some_and(|t| t.contains("hopwatch")));

    let vars = d["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let target = var("target");
    assert_eq!(target["type"], "query");
    let target_query = target["query"]["query"].as_str().expect("target query");
    assert!(target_query.starts_with("label_values("), "{target_query}");
    assert!(
        target_query.trim_end().ends_with(", target)"),
        "{target_query}"
    );

    // Panels: unique ids, on the 24-column grid, each query on the
    // data source variable and valid PromQL once Grafana's variables are set.
    let panels = all_panels(&d);
    let ids: BTreeSet<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let mut queries = 0;
    for panel in &panels {
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24 && grid["h"].as_u64().unwrap() > 0, "{panel}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        let refs: BTreeSet<&str> = targets.iter().filter_map(|t| t["refId"].as_str()).collect();
        assert_eq!(refs.len(), targets.len(), "{}: refIds", panel["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            queries += 1;
        }
    }
    for (at, expr) in dashboard_queries(&d) {
        let names = metric_names(&expand_grafana(&expr, "1m", ".*"))
            .unwrap_or_else(|e| panic!("{at}: {e}"));
        assert!(!names.is_empty(), "{at} reads no metric: {expr}");
        assert!(
            names.iter().all(|n| n.starts_with("hopwatch_")),
            "{at} reads something other than hopwatch's metrics: {names:?}"
        );
    }
    assert!(queries >= 20, "{queries} panel queries");
}

// ------------------------------------------------------------------ lab

fn config_text(state: &Path) -> String {
    // 10 rounds a second so the default 100-probe window fills in 10 s, and
    // rounds that end before the next begins (lab RTTs are microseconds); a
    // webhook to a closed loopback port so delivery failures are counted,
    // for the targets' alerts only: the peer without a reflector raises one at
    // once, and its failing deliveries would make HopwatchWebhookFailing
    // pending on the clean lab.
    format!(
        "[service]\nstate_dir = {state:?}\ntimestamps = \"ebpf\"\n\n\
         [storage]\nflush_interval = \"1s\"\n\n[enrichment]\nreverse_dns = false\n\n\
         [web]\nlisten = \"{WEB}\"\nread_token = \"{READ_TOKEN}\"\n\n\
         [defaults]\ninterval = \"100ms\"\ntimeout = \"50ms\"\nmax_hops = 8\n\n\
         [[webhook]]\nname = \"closed\"\nurl = \"http://127.0.0.1:9/hook\"\ntimeout = \"1s\"\n\
         targets = [\"t\", \"first\"]\n",
        state = state.display().to_string()
    )
}

fn target_table(name: &str, host: IpAddr) -> String {
    format!("\n[[target]]\nname = \"{name}\"\nhost = \"{host}\"\n")
}

/// A STAMP peer probed every 10 ms: its 100-probe window fills in a second.
/// Both ends of the lab read one clock, so one-way delays are trusted.
fn peer_table(name: &str, address: IpAddr) -> String {
    format!(
        "\n[[peer]]\nname = \"{name}\"\naddress = \"{address}\"\n\
         interval = \"10ms\"\nclock = \"shared\"\n"
    )
}

/// A second daemon on `dst` that only reflects: STAMP on `listen`, for `allow`.
fn reflector_text(state: &Path, listen: IpAddr, allow: IpAddr) -> String {
    format!(
        "[service]\nstate_dir = {state:?}\n\n[web]\nlisten = \"{WEB}\"\n\n\
         [reflector]\nlisten = [\"{listen}\"]\nallow = [\"{allow}/32\"]\n",
        state = state.display().to_string()
    )
}

/// The shipped rules file, and a scrape of the lab daemon every second.
fn prometheus_yml(rules: &Path) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules:?}\n\
         scrape_configs:\n  - job_name: hopwatch\n    authorization:\n      credentials: {READ_TOKEN}\n\
         \x20   static_configs:\n      - targets: ['{WEB}']\n",
        rules = rules.display().to_string()
    )
}

#[test]
fn a_real_prometheus_runs_the_shipped_rules_and_dashboard_queries_against_the_daemon() {
    // src - r1 - r2 - r3 - dst. Target t is the destination; `first` is r1,
    // before the link that will lose packets.
    let lab = LabSpec::chain(3).targets(1).build().expect("lab");
    let t = IpAddr::V4(lab.targets_v4()[0]);
    let trace = lab.expected_trace(t);
    let r1 = trace[0].expect("r1 answers");
    let r2 = trace[1].expect("r2 answers");
    let dir = tempfile::Builder::new()
        .prefix("ecosystem")
        .tempdir()
        .expect("temp dir");
    // The far end of the path reflects STAMP for src (across the lossy link
    // to come); r2 has no reflector.
    let src_addr: IpAddr = lab.interface("src", "r1").expect("src").v4.into();
    let dst_addr: IpAddr = lab.interface("dst", "r3").expect("dst").v4.into();
    let r2_addr: IpAddr = lab.interface("r2", "r1").expect("r2").v4.into();
    let reflector_config = dir.path().join("reflector.toml");
    std::fs::write(
        &reflector_config,
        reflector_text(&dir.path().join("reflector-state"), dst_addr, src_addr),
    )
    .unwrap();
    let mut reflector =
        Daemon::start(&lab, "dst", &hopwatch_bin(), &reflector_config).expect("the reflector");
    reflector
        .wait_for_log("STAMP reflector started", Duration::from_secs(5))
        .expect("the [reflector] runs");
    let config = dir.path().join("hopwatch.toml");
    std::fs::write(
        &config,
        config_text(&dir.path().join("state"))
            + &target_table("t", t)
            + &target_table("first", r1)
            + &peer_table(PEER, dst_addr)
            + &peer_table(DEAD_PEER, r2_addr),
    )
    .unwrap();
    let daemon = Daemon::start(&lab, "src", &hopwatch_bin(), &config).expect("hopwatch run");

    let rules_file = deploy("prometheus/hopwatch-rules.yml")
        .canonicalize()
        .expect("rules file");
    let prom_yml = dir.path().join("prometheus.yml");
    std::fs::write(&prom_yml, prometheus_yml(&rules_file)).unwrap();
    let prometheus = Prometheus::start(
        &lab,
        "src",
        &prom_yml,
        &dir.path().join("tsdb"),
        PROMETHEUS_PORT,
    )
    .expect("prometheus");

    // The scrape works with the read token.
    eventually(Duration::from_secs(30), "a successful scrape", || {
        let up = prometheus
            .query("up{job=\"hopwatch\"}")
            .map_err(|e| e.to_string())?;
        (up.first().map(|s| s.value) == Some(1.0))
            .then_some(())
            .ok_or(format!("{up:?}"))
    })
    .expect("scrape");

    // Every rule evaluates without error. Prometheus reports "unknown" until
    // a rule's first evaluation, "err" with lastError after a failed one.
    let rules = eventually(Duration::from_secs(40), "every rule evaluated ok", || {
        let rules = prometheus.rules().map_err(|e| e.to_string())?;
        if rules.is_empty() {
            return Err("no rules loaded".into());
        }
        if let Some(bad) = rules.iter().find(|r| r["health"] == "err") {
            panic!("rule {} fails: {}", bad["name"], bad["lastError"]);
        }
        match rules.iter().find(|r| r["health"] != "ok") {
            Some(r) => Err(format!("{} is {}", r["name"], r["health"])),
            None => Ok(rules),
        }
    })
    .expect("rules");
    let shipped_rules = read(&rules_file)
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("- alert:") || l.trim_start().starts_with("- record:")
        })
        .count();
    assert_eq!(rules.len(), shipped_rules, "Prometheus loaded every rule");
    // Nothing fires while the lab is clean (the daemon's own health and the
    // answering peer, whose window is full by now, included); only the peer
    // with no reflector may (its window reads 100% loss).
    std::thread::sleep(Duration::from_secs(3));
    let quiet = prometheus.alerts().expect("alerts");
    assert!(
        quiet.iter().all(|a| a["labels"]["peer"] == DEAD_PEER),
        "alerts on a healthy lab: {quiet:#?}"
    );

    // Loss on the link r1 -> r2: hops 2, 3 and the destination lose, hop 1 does not.
    let loss = lab.loss(At::link("r1", "r2"), 30.0).expect("loss");
    // The alert fires as soon as the destination's window reaches 5%; its
    // annotation is rendered again at every evaluation and names hop 2 once
    // hopwatch's windows hold enough of the loss to tell path loss from rate
    // limiting.
    let starts_at = format!("Loss starts at hop 2 ({r2})");
    let alert = eventually(
        Duration::from_secs(60),
        "the loss alert to fire and name hop 2",
        || {
            let alerts = prometheus.alerts().map_err(|e| e.to_string())?;
            let alert = alerts
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == "HopwatchDestinationLoss"
                        && a["state"] == "firing"
                })
                .ok_or(format!("{alerts:#?}"))?;
            let description = alert["annotations"]["description"].as_str().unwrap_or_default();
            if description.contains(&starts_at) {
                return Ok(alert.clone());
            }
            let hops = prometheus
                .query("hopwatch_hop_loss_ratio{target=\"t\"} or hopwatch_hop_rate_limited{target=\"t\"} == 1")
                .map_err(|e| e.to_string())?;
            Err(format!("{description}\nhop loss and rate-limit flags: {hops:?}"))
        },
    )
    .expect("loss alert");
    assert_eq!(alert["labels"]["target"], "t", "{alert:#}");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(
        alert["annotations"]["ui"],
        format!("http://{WEB}/targets/t"),
        "{alert:#}"
    );
    let value: f64 = alert["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("alert value");
    assert!((0.05..0.7).contains(&value), "loss ratio {value}");
    // r1 itself is before the lossy link: it must not alert.
    let alerts = prometheus.alerts().expect("alerts");
    assert!(
        !alerts.iter().any(|a| a["labels"]["target"] == "first"
            && a["labels"]["alertname"] == "HopwatchDestinationLoss"),
        "{alerts:#?}"
    );
    // The peer's probes cross the same link: its loss alert fires too, and
    // says the loss is on the way out (the reflector's counter shows it).
    let peer_alert = eventually(
        Duration::from_secs(30),
        "the peer loss alert to fire, naming the forward path",
        || {
            let alerts = prometheus.alerts().map_err(|e| e.to_string())?;
            let alert = alerts
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == "HopwatchPeerLoss"
                        && a["labels"]["peer"] == PEER
                        && a["state"] == "firing"
                })
                .ok_or(format!("{alerts:#?}"))?;
            let description = alert["annotations"]["description"]
                .as_str()
                .unwrap_or_default();
            if description.contains("The loss is on the forward path (here → peer): forward ") {
                Ok(alert.clone())
            } else {
                let loss = prometheus
                    .query(&format!("hopwatch_peer_loss_ratio{{peer=\"{PEER}\"}}"))
                    .map_err(|e| e.to_string())?;
                Err(format!("{description}\npeer loss ratios: {loss:?}"))
            }
        },
    )
    .expect("peer loss alert");
    assert_eq!(
        peer_alert["labels"]["severity"], "warning",
        "{peer_alert:#}"
    );
    assert_eq!(
        peer_alert["annotations"]["ui"],
        format!("http://{WEB}/peers/{PEER}"),
        "{peer_alert:#}"
    );
    let peer_loss: f64 = peer_alert["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("alert value");
    assert!(
        (0.05..0.7).contains(&peer_loss),
        "peer loss ratio {peer_loss}"
    );
    // Lossy is not down: its replies still come.
    let alerts = prometheus.alerts().expect("alerts");
    assert!(
        !alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == "HopwatchPeerDown" && a["labels"]["peer"] == PEER),
        "{alerts:#?}"
    );

    // hopwatch's own loss alert fires too, so hopwatch_alert_firing has samples.
    eventually(Duration::from_secs(30), "hopwatch's own loss alert", || {
        let firing = prometheus
            .query("hopwatch_alert_firing{target=\"t\", alert=\"loss\"}")
            .map_err(|e| e.to_string())?;
        (!firing.is_empty())
            .then_some(())
            .ok_or("not firing".into())
    })
    .expect("built-in alert");
    eventually(
        Duration::from_secs(30),
        "hopwatch's own peer loss alert",
        || {
            let firing = prometheus
                .query(&format!(
                "hopwatch_alert_firing{{target=\"peer:{PEER}\", subject=\"peer\", alert=\"loss\"}}"
            ))
                .map_err(|e| e.to_string())?;
            (!firing.is_empty())
                .then_some(())
                .ok_or("not firing".into())
        },
    )
    .expect("built-in peer alert");

    // What the daemon exports now, with alerts firing and webhooks failing.
    let metrics = webclient::get(
        &lab,
        "src",
        &format!("http://{WEB}/metrics"),
        &[],
        Some(READ_TOKEN),
    )
    .expect("GET /metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    let exported = exposition_names(&metrics.body);
    // The peer rules and panels are checked below against real series: the
    // daemon exports the peer families (they are absent without a peer).
    let peer_families: BTreeSet<&String> = exported
        .iter()
        .filter(|n| n.starts_with("hopwatch_peer_"))
        .collect();
    assert!(
        peer_families.len() >= 8,
        "the peer families are exported: {peer_families:?}"
    );
    let recorded: BTreeSet<String> = rules
        .iter()
        .filter(|r| r["type"] == "recording")
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    // This lab has no multipath target, so the branch families the
    // hopwatch-branches rules read have no series here: they must at least be
    // families hopwatch declares (multipath_daemon_lab checks their series).
    let declared = declared_names(&metrics.body);
    let branch_family =
        |name: &str| name.starts_with("hopwatch_branch_") && declared.contains(name);

    // Every metric the rules read is exported (or recorded by the rules, or
    // made by Prometheus itself). The queries are Prometheus's own reading of
    // the shipped file.
    for rule in &rules {
        let query = rule["query"].as_str().expect("rule query");
        for name in metric_names(query).unwrap_or_else(|e| panic!("{}: {e}", rule["name"])) {
            assert!(
                exported.contains(&name)
                    || recorded.contains(&name)
                    || branch_family(&name)
                    || PROMETHEUS_SERIES.contains(&name.as_str()),
                "rule {} reads {name}, which hopwatch does not export; exported: {exported:?}",
                rule["name"]
            );
        }
    }
    let peer_rules = rules
        .iter()
        .filter(|r| {
            metric_names(r["query"].as_str().unwrap_or_default())
                .is_ok_and(|names| names.iter().any(|n| n.starts_with("hopwatch_peer_")))
        })
        .count();
    assert!(
        peer_rules >= 5,
        "{peer_rules} rules read hopwatch_peer_* series"
    );
    // Annotation templates query metrics too: the printf `...` strings (with
    // %q for the instance and target) they pass to `query`.
    let mut template_queries = 0;
    for rule in &rules {
        for text in rule["annotations"]
            .as_object()
            .map(|a| a.values().filter_map(Value::as_str).collect::<Vec<_>>())
            .unwrap_or_default()
        {
            for query in text
                .split("printf `")
                .skip(1)
                .filter_map(|rest| rest.split('`').next())
            {
                let query = query.replace("%q", "\"x\"");
                for name in metric_names(&query).unwrap_or_else(|e| panic!("{}: {e}", rule["name"]))
                {
                    assert!(
                        exported.contains(&name)
                            || recorded.contains(&name)
                            || branch_family(&name),
                        "an annotation of {} reads {name}, which is not exported",
                        rule["name"]
                    );
                }
                template_queries += 1;
            }
        }
    }
    assert!(
        template_queries >= 5,
        "{template_queries} annotation queries"
    );

    // Every dashboard query reads exported metrics and answers with data.
    let dashboard = load_dashboard();
    let mut checked = 0;
    for (at, expr) in dashboard_queries(&dashboard) {
        let plain = expand_grafana(&expr, "10s", ".*");
        for name in metric_names(&plain).unwrap_or_else(|e| panic!("{at}: {e}")) {
            assert!(
                exported.contains(&name),
                "{at} reads {name}, which is not exported"
            );
        }
        // The route-change annotation has nothing to show on a stable path.
        if at.starts_with("annotation") {
            prometheus
                .query(&plain)
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            continue;
        }
        let samples = prometheus
            .query(&plain)
            .unwrap_or_else(|e| panic!("{at}: {e}"));
        assert!(
            samples.iter().any(|s| !s.value.is_nan()),
            "{at} has no data: {plain}\n{samples:?}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "{checked} panel queries checked");
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let name = label_values_metric(q);
            assert!(
                exported.contains(&name),
                "variable {} reads {name}",
                v["name"]
            );
        }
    }
    assert!(
        exported.contains("hopwatch_webhook_delivery_failures_total")
            && exported.contains("hopwatch_kernel_ringbuf_drops_total"),
        "the health panels' metrics are there: {exported:?}"
    );

    // With alerts firing (their annotation queries run), still no rule errors.
    for rule in prometheus.rules().expect("rules") {
        assert_eq!(
            rule["health"], "ok",
            "{} fails: {}",
            rule["name"], rule["lastError"]
        );
    }

    // The loss ends: the alerts resolve (hysteresis and keep_firing_for are
    // seconds at this rate; the 100-probe window takes 10 s to clear, the
    // peer's 1 s).
    loss.remove().expect("loss removed");
    eventually(
        Duration::from_secs(60),
        "the loss alerts to resolve",
        || {
            let alerts = prometheus.alerts().map_err(|e| e.to_string())?;
            (!alerts.iter().any(|a| {
                a["labels"]["alertname"] == "HopwatchDestinationLoss"
                    || a["labels"]["alertname"] == "HopwatchPeerLoss" && a["labels"]["peer"] == PEER
            }))
            .then_some(())
            .ok_or(format!("{alerts:#?}"))
        },
    )
    .expect("resolved");

    // The peer with no reflector has sent for more than 30 s by now without
    // a reply: it is down (and, its window being all loss, says so).
    let down = eventually(
        Duration::from_secs(40),
        "the dead peer's down alert",
        || {
            let alerts = prometheus.alerts().map_err(|e| e.to_string())?;
            alerts
                .iter()
                .find(|a| a["labels"]["alertname"] == "HopwatchPeerDown" && a["state"] == "firing")
                .cloned()
                .ok_or(format!("{alerts:#?}"))
        },
    )
    .expect("down alert");
    assert_eq!(down["labels"]["peer"], DEAD_PEER, "{down:#}");
    assert_eq!(down["labels"]["severity"], "critical", "{down:#}");
    let text = down["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.starts_with(&format!("Peer {DEAD_PEER} answered none of the ")),
        "{down:#}"
    );
    let alerts = prometheus.alerts().expect("alerts");
    let dead_loss = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "HopwatchPeerLoss")
        .unwrap_or_else(|| panic!("the dead peer's window is all loss: {alerts:#?}"));
    assert_eq!(dead_loss["labels"]["peer"], DEAD_PEER, "{alerts:#?}");
    assert!(
        dead_loss["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.ends_with("The peer answered none of them.")),
        "{dead_loss:#}"
    );

    drop(prometheus);
    let status = daemon.stop().expect("stop");
    assert!(status.success(), "clean exit: {status:?}");
    let status = reflector.stop().expect("stop the reflector");
    assert!(status.success(), "the reflector's clean exit: {status:?}");
}

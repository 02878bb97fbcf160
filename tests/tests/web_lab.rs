//! The web server of a real `hopwatch run` in the lab, as its users meet it:
//! a real Prometheus scrapes /metrics and answers queries about the series; a
//! real headless Chromium (through chromedriver) loads the overview and a
//! target page, checks that tables and graphs show real data, pauses a target
//! and finds no console errors, saving screenshots to tests/screenshots/; it
//! also reads a year of history (written through the store library against a
//! synthetic clock) on the 1 y and 90 d pages, with month and date axes, and
//! imports targets from a file (a bad list refused whole, a good one added); and
//! 200 concurrent API connections (wrk) do not degrade probe accuracy, judged
//! against a packet capture. Privileged, and needs Debian's prometheus,
//! chromium, chromium-driver, wrk and tcpdump (deploy/setup.sh installs them);
//! these fail, never skip, without them.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, Locator};
use hopwatch::sys::now_ms;
use hopwatch_lab::bench::capture::Capture;
use hopwatch_lab::bench::pcap::CaptureIndex;
use hopwatch_lab::browser::{
    click, console, save_screenshot, type_into, wait_js, Chromium, DRIVER_PORT,
};
use hopwatch_lab::daemon::Daemon;
use hopwatch_lab::prometheus::{Prometheus, Sample};
use hopwatch_lab::webclient::{self, eventually};
use hopwatch_lab::{hopwatch_bin, programs, Lab, LabSpec};
use serde_json::Value;

const WEB: &str = "127.0.0.1:9470";
const READ_TOKEN: &str = "web-lab-read-token-0123456789";
const WRITE_TOKEN: &str = "web-lab-write-token-0123456789";

/// The value of `result`, or a failure with its error's message (which says
/// what failed, e.g. how to install a missing program, with the daemon's log).
#[track_caller]
fn must<T>(result: Result<T, impl Display>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// A config for the lab: eBPF timestamps, a fast flush, no reverse DNS (no
/// query may leave the lab), the web server on the source's loopback.
fn config_text(state: &Path, web: &str, targets: &[(&str, IpAddr)], interval: &str) -> String {
    let mut text = format!(
        "# web_lab test config\n[service]\nstate_dir = {:?}\ntimestamps = \"ebpf\"\n\n\
         [storage]\nflush_interval = \"1s\"\n\n[enrichment]\nreverse_dns = false\n\n\
         [web]\nlisten = \"{WEB}\"\n{web}\n\
         [defaults]\ninterval = \"{interval}\"\ntimeout = \"1s\"\nmax_hops = 8\n",
        state.display().to_string()
    );
    for (name, ip) in targets {
        text.push_str(&format!(
            "\n# target {name}\n[[target]]\nname = \"{name}\"\nhost = \"{ip}\"\nlabel = \"Lab {name}\"\n"
        ));
    }
    text
}

/// `hopwatch run` on `config` in the lab's source namespace, its web server up.
fn start_daemon<'lab>(lab: &'lab Lab, config: &Path) -> Daemon<'lab> {
    must(Daemon::start(lab, "src", &hopwatch_bin(), config))
}

/// A GET from the lab's source namespace that must answer 200 with JSON.
fn get_json(lab: &Lab, url: &str, query: &[(&str, &str)]) -> Value {
    must(webclient::get_json(lab, "src", url, query, None))
}

fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(name)
        .tempdir()
        .expect("temp dir")
}

// ---------------------------------------------------------------- Prometheus

const PROMETHEUS_PORT: u16 = 9090;

/// One instant query, which must succeed; the samples of the result vector.
fn query(prometheus: &Prometheus<'_>, query: &str) -> Vec<Sample> {
    must(prometheus.query(query))
}

/// The first sample's value, where `keep` accepts it; what was seen otherwise.
fn first_value(samples: &[Sample], keep: impl Fn(f64) -> bool) -> Result<f64, String> {
    samples
        .first()
        .map(|s| s.value)
        .filter(|v| keep(*v))
        .ok_or_else(|| format!("{samples:?}"))
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_answers_queries() {
    let lab = LabSpec::chain(2).targets(1).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let trace = lab.expected_trace(target);
    let dir = temp_dir("web-prom");
    let config = dir.path().join("hopwatch.toml");
    std::fs::write(
        &config,
        config_text(
            &dir.path().join("state"),
            &format!("read_token = \"{READ_TOKEN}\"\n"),
            &[("t", target)],
            "200ms",
        ),
    )
    .unwrap();
    let daemon = start_daemon(&lab, &config);

    // /metrics needs the read token; Prometheus sends it.
    let metrics = must(webclient::get(
        &lab,
        "src",
        &format!("http://{WEB}/metrics"),
        &[],
        None,
    ));
    assert_eq!(metrics.status, 401, "/metrics without the read token");
    let prom_yml = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_yml,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: hopwatch\n    authorization:\n      credentials: {READ_TOKEN}\n\
             \x20   static_configs:\n      - targets: ['{WEB}']\n"
        ),
    )
    .unwrap();
    let prometheus = must(Prometheus::start(
        &lab,
        "src",
        &prom_yml,
        &dir.path().join("tsdb"),
        PROMETHEUS_PORT,
    ));

    // The scrape works and the series arrive.
    let up = must(eventually(
        Duration::from_secs(60),
        "a successful scrape",
        || first_value(&query(&prometheus, "up{job=\"hopwatch\"}"), |v| v == 1.0),
    ));
    assert_eq!(up, 1.0);
    let sent = || {
        query(
            &prometheus,
            "hopwatch_hop_probes_sent_total{target=\"t\",ttl=\"1\"}",
        )
    };
    let first = must(eventually(
        Duration::from_secs(30),
        "hop 1's probe counter",
        || first_value(&sent(), |v| v > 0.0),
    ));
    let later = must(eventually(
        Duration::from_secs(30),
        "the counter to grow",
        || first_value(&sent(), |v| v > first),
    ));
    assert!(later > first);

    // The responder of each hop is the lab's router, as an info series.
    let responders = query(&prometheus, "hopwatch_hop_responder_info{target=\"t\"}");
    for (ttl, expected) in trace.iter().enumerate() {
        let expected = expected.expect("every lab hop answers").to_string();
        let ttl = (ttl + 1).to_string();
        let found = responders
            .iter()
            .find(|s| s.labels.get("ttl") == Some(&ttl))
            .unwrap_or_else(|| panic!("no responder series for ttl {ttl}: {responders:?}"));
        assert_eq!(found.labels["responder"], expected, "ttl {ttl}");
    }
    // The destination's latency histogram gives a median a lab path can have.
    let median = must(eventually(
        Duration::from_secs(30),
        "a median from the histogram",
        || {
            first_value(
                &query(
                    &prometheus,
                    "histogram_quantile(0.5, sum by (le) \
                     (rate(hopwatch_target_rtt_seconds_bucket{target=\"t\"}[10s])))",
                ),
                f64::is_finite,
            )
        },
    ));
    assert!(
        median > 0.0 && median < 0.01,
        "lab RTTs are microseconds: {median} s"
    );
    let source = query(&prometheus, "hopwatch_timestamp_source_info");
    assert_eq!(source.len(), 1, "{source:?}");
    assert_eq!(source[0].labels["source"], "ebpf");
    let hop_count = query(&prometheus, "hopwatch_target_hop_count{target=\"t\"}");
    assert_eq!(hop_count[0].value, trace.len() as f64);
    // irate: the last two scrapes (rate over a window longer than the
    // history would extrapolate it down).
    let probes_rate = query(&prometheus, "irate(hopwatch_probes_sent_total[5s])");
    // One target, 5 rounds a second, 3 hops: about 15 probes a second.
    assert!(
        (8.0..30.0).contains(&probes_rate[0].value),
        "probes per second from the counter: {probes_rate:?}"
    );
    let status = must(daemon.stop());
    assert!(status.success(), "clean exit: {status:?}");
}

// ---------------------------------------------------------------- Chromium

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots directory");
    dir
}

const ROWS_JS: &str = "return [...document.querySelectorAll('#targets tbody tr')]\
    .map(tr => [...tr.cells].map(td => td.textContent.trim()));";

/// Painted pixels of a canvas (alpha > 0).
const PAINTED_JS: &str = "const c = document.querySelector(arguments[0]); if (!c) return 0;\
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;\
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;";

/// What the browser saw, checked after the session is closed.
#[derive(Debug, Default)]
struct Seen {
    overview_rows: Vec<Vec<String>>,
    hop_rows: Vec<Vec<String>>,
    graph_points: u64,
    heat_cells: u64,
    sparkline_pixels: u64,
    console: Vec<Value>,
}

async fn browse(
    client: &Client,
    hops: usize,
    first_hop: &str,
    new_host: &str,
) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let base = format!("http://{WEB}");
    client.set_window_size(1400, 1000).await?;
    client.goto(&format!("{base}/")).await?;
    wait_js(
        client,
        "two overview rows with latencies",
        "const r = [...document.querySelectorAll('#targets tbody tr')];\
         return r.length === 2 && r.every(tr => /^[0-9.]+$/.test(tr.cells[4].textContent.trim()));",
    )
    .await?;
    seen.sparkline_pixels = wait_js(
        client,
        "a sparkline",
        &PAINTED_JS.replace("arguments[0]", "'#targets tbody tr canvas'"),
    )
    .await?
    .as_u64()
    .unwrap_or(0);
    seen.overview_rows = serde_json::from_value(client.execute(ROWS_JS, vec![]).await?)?;
    save_screenshot(client, &screenshots().join("overview-desktop.png")).await?;

    // The target page, through the link in the table.
    click(client, "#targets a[href='/targets/a']").await?;
    wait_js(
        client,
        "the hop table",
        &format!("return document.querySelectorAll('#hops tbody tr[data-hop]').length === {hops};"),
    )
    .await?;
    // The last quarter of an hour, so the few minutes of history fill the graphs.
    click(client, "button[data-range='15m']").await?;
    seen.graph_points = wait_js(
        client,
        "the latency graph",
        "return Number(document.querySelector('#latency').dataset.points || 0);",
    )
    .await?
    .as_u64()
    .unwrap_or(0);
    seen.heat_cells = wait_js(
        client,
        "the heatmap",
        "return Number(document.querySelector('#heatmap').dataset.cells || 0);",
    )
    .await?
    .as_u64()
    .unwrap_or(0);
    seen.hop_rows = serde_json::from_value(
        client
            .execute(
                "return [...document.querySelectorAll('#hops tbody tr')]\
                 .map(tr => [...tr.cells].map(td => td.textContent.trim()));",
                vec![],
            )
            .await?,
    )?;
    anyhow::ensure!(
        seen.hop_rows[0][1].contains(first_hop),
        "hop 1 is {:?}, expected {first_hop}",
        seen.hop_rows[0]
    );
    // The whole page in one picture.
    client.set_window_size(1400, 2000).await?;
    wait_js(
        client,
        "the graphs redrawn at the new size",
        "return Number(document.querySelector('#latency').dataset.points || 0);",
    )
    .await?;
    save_screenshot(client, &screenshots().join("target-desktop.png")).await?;

    // Pause: the UI asks for the write token, then pauses.
    click(client, "#btn-pause").await?;
    wait_js(
        client,
        "the token dialog",
        "return document.querySelector('#dlg-token').open;",
    )
    .await?;
    type_into(client, "#dlg-token input[name=write]", WRITE_TOKEN).await?;
    click(client, "#dlg-token button[value=save]").await?;
    wait_js(
        client,
        "the Resume button",
        "return document.querySelector('#btn-pause').textContent === 'Resume';",
    )
    .await?;
    // What the server says now, after a reload of the page.
    client.refresh().await?;
    wait_js(
        client,
        "the paused state from the server",
        "return document.querySelector('.state-badge').textContent === 'paused' \
         && document.querySelector('#btn-pause').textContent === 'Resume';",
    )
    .await?;
    save_screenshot(client, &screenshots().join("target-paused-desktop.png")).await?;

    // A phone.
    client.set_window_size(390, 844).await?;
    client.refresh().await?;
    wait_js(
        client,
        "the hop table on a phone",
        &format!("return document.querySelectorAll('#hops tbody tr[data-hop]').length === {hops};"),
    )
    .await?;
    wait_js(
        client,
        "the latency graph on a phone",
        "return Number(document.querySelector('#latency').dataset.points || 0);",
    )
    .await?;
    save_screenshot(client, &screenshots().join("target-phone.png")).await?;
    client.goto(&format!("{base}/")).await?;
    wait_js(
        client,
        "tiles on a phone, one of them paused",
        "return document.querySelectorAll('#tiles .tile').length === 2 \
         && document.querySelectorAll('#tiles .tile.s-paused').length === 1;",
    )
    .await?;
    save_screenshot(client, &screenshots().join("overview-phone.png")).await?;

    // A wall display in the dark theme.
    client.set_window_size(1920, 1080).await?;
    client.goto(&format!("{base}/?wall=1")).await?;
    client.find(Locator::Id("btn-theme")).await?;
    client
        .execute(
            "localStorage.setItem('hopwatch.theme', JSON.stringify('dark')); location.reload();",
            vec![],
        )
        .await?;
    wait_js(
        client,
        "the dark wall display",
        "return document.documentElement.dataset.theme === 'dark' && document.querySelectorAll('#tiles .tile').length === 2;",
    )
    .await?;
    save_screenshot(client, &screenshots().join("overview-wall-dark.png")).await?;

    // Add a target through the form (the write token is remembered for the tab).
    client.set_window_size(1400, 1000).await?;
    client.goto(&format!("{base}/")).await?;
    click(client, "#btn-add").await?;
    type_into(client, "#form-add input[name=name]", "c").await?;
    type_into(client, "#form-add input[name=host]", new_host).await?;
    type_into(client, "#form-add input[name=label]", "Lab c").await?;
    click(client, "#form-add button[value=add]").await?;
    wait_js(
        client,
        "the new target in the overview",
        "return [...document.querySelectorAll('#targets tbody tr')].some(tr => tr.dataset.id === 'c');",
    )
    .await?;

    seen.console = console(client).await?;
    Ok(seen)
}

#[test]
fn headless_chromium_shows_real_data_and_pauses_a_target() {
    let chromium = must(Chromium::find());
    let lab = LabSpec::chain(3).targets(3).build().expect("lab");
    let targets = lab.targets_v4();
    let (a, b, c) = (
        IpAddr::V4(targets[0]),
        IpAddr::V4(targets[1]),
        IpAddr::V4(targets[2]),
    );
    let trace = lab.expected_trace(a);
    let dir = temp_dir("web-chromium");
    let config = dir.path().join("hopwatch.toml");
    std::fs::write(
        &config,
        config_text(
            &dir.path().join("state"),
            &format!("write_token = \"{WRITE_TOKEN}\"\n"),
            &[("a", a), ("b", b)],
            "200ms",
        ),
    )
    .unwrap();
    let daemon = start_daemon(&lab, &config);
    // A few seconds of history: rounds, flushes, the round tap's sparklines.
    must(eventually(
        Duration::from_secs(20),
        "rounds of both targets",
        || {
            let doc = get_json(&lab, &format!("http://{WEB}/api/v1/targets"), &[]);
            doc["targets"]
                .as_array()
                .is_some_and(|t| t.iter().all(|t| t["rounds"].as_u64().unwrap_or(0) >= 20))
                .then_some(())
                .ok_or_else(|| doc.to_string())
        },
    ));
    std::thread::sleep(Duration::from_secs(3));

    let driver = must(chromium.start_driver(&lab, "src", DRIVER_PORT));
    let profile = dir.path().join("chromium-profile");
    let first_hop = trace[0].expect("hop 1 answers").to_string();
    let new_host = c.to_string();
    let hops = trace.len();
    let seen = driver
        .session(&profile, async |client| {
            browse(client, hops, &first_hop, &new_host).await
        })
        .unwrap_or_else(|e: anyhow::Error| panic!("browser check failed: {e:#}"));

    // The overview showed both targets with real figures.
    assert_eq!(seen.overview_rows.len(), 2, "{:?}", seen.overview_rows);
    for row in &seen.overview_rows {
        assert!(row[0].starts_with("Lab "), "label shown: {row:?}");
        assert_eq!(row[1], "running", "{row:?}");
        assert_eq!(row[2], hops.to_string(), "hop count: {row:?}");
        assert!(row[3].ends_with('%'), "loss: {row:?}");
        let avg: f64 = row[4].parse().expect("average latency in ms");
        assert!(avg > 0.0 && avg < 10.0, "lab latency: {row:?}");
        assert_eq!(row[9], "ebpf", "timestamp source: {row:?}");
    }
    assert!(seen.sparkline_pixels > 20, "a sparkline was drawn");
    // The target page: every hop, the right responders, graphs with data.
    assert_eq!(seen.hop_rows.len(), hops);
    for (row, expected) in seen.hop_rows.iter().zip(&trace) {
        let expected = expected.unwrap().to_string();
        assert!(row[1].contains(&expected), "{row:?} lacks {expected}");
        let sent: u64 = row[3].parse().expect("sent");
        assert!(sent >= 20, "{row:?}");
    }
    assert!(seen.hop_rows.last().unwrap()[1].contains("destination"));
    assert!(
        seen.graph_points >= 5,
        "latency graph columns: {}",
        seen.graph_points
    );
    // Every TTL and the destination have data on the shared time axis.
    assert!(
        seen.heat_cells >= 2 * (hops as u64 + 1),
        "heatmap cells: {}",
        seen.heat_cells
    );
    // No console errors on any page.
    let errors: Vec<&Value> = seen
        .console
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // The pause took effect, was saved in the config file, and stopped probing.
    let doc = get_json(&lab, &format!("http://{WEB}/api/v1/targets/a"), &[]);
    assert_eq!(doc["paused"], true);
    assert_eq!(doc["state"], "paused");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("label = \"Lab a\"\npaused = true"),
        "saved in a's table:\n{text}"
    );
    assert!(text.contains("# target b"), "comments kept:\n{text}");
    let rounds = doc["rounds"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let later = get_json(&lab, &format!("http://{WEB}/api/v1/targets/a"), &[]);
    assert_eq!(later["rounds"].as_u64().unwrap(), rounds, "a is not probed");
    let other = get_json(&lab, &format!("http://{WEB}/api/v1/targets/b"), &[]);
    assert_eq!(other["state"], "running", "b is untouched");
    // The target added in the form is probed and saved as a [[target]] table.
    must(eventually(
        Duration::from_secs(10),
        "rounds of the added target",
        || {
            let doc = get_json(&lab, &format!("http://{WEB}/api/v1/targets/c"), &[]);
            (doc["rounds"].as_u64().unwrap_or(0) > 0)
                .then_some(())
                .ok_or_else(|| doc.to_string())
        },
    ));
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!(
            "[[target]]\nname = \"c\"\nhost = \"{c}\"\nlabel = \"Lab c\""
        )),
        "c saved:\n{text}"
    );
    for name in [
        "overview-desktop.png",
        "target-desktop.png",
        "target-paused-desktop.png",
        "target-phone.png",
        "overview-phone.png",
        "overview-wall-dark.png",
    ] {
        let png = std::fs::read(screenshots().join(name)).expect("screenshot saved");
        assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    }
    let status = must(daemon.stop());
    assert!(status.success(), "clean exit: {status:?}");

    // The changes survive a restart: a is still paused, c is still there.
    let daemon = start_daemon(&lab, &config);
    let doc = get_json(&lab, &format!("http://{WEB}/api/v1/targets"), &[]);
    let states: Vec<(String, String)> = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(
        states.contains(&("a".into(), "paused".into())),
        "{states:?}"
    );
    assert!(states.iter().any(|(id, _)| id == "c"), "{states:?}");
    let status = must(daemon.stop());
    assert!(status.success(), "clean exit: {status:?}");
}

// ------------------------------------------------------ a year of history

/// Writes a year of rounds of `target` (three an hour, ending an hour ago)
/// into the store at `state`, through the store library against a synthetic
/// clock, so the hour rollups a year back exist as they would after a year of
/// running. The path is `trace`; RTTs follow a daily cycle, with one lossy
/// week three months ago.
fn fill_a_year(state: &Path, target: &str, trace: &[Option<IpAddr>]) -> u64 {
    use hopwatch::model::{HopAnswer, HopSample, RoundRecord, TargetId};
    use hopwatch::probe::{Rtt, TimestampSource, Ttl};
    use hopwatch::store::{Store, StoreConfig, HOUR_MS};

    const DAY_MS: u64 = 24 * HOUR_MS;
    let now = now_ms();
    let start = now - 365 * DAY_MS + HOUR_MS;
    let end = now - HOUR_MS;
    let store = Store::open_at(state, StoreConfig::default(), start).expect("open the store");
    let id = TargetId::new(target).expect("target name");
    let dest_ttl = Ttl::new(trace.len() as u8).expect("a path");
    let (mut at, mut seq, mut next_flush) = (start, 0u64, start + DAY_MS);
    while at < end {
        let hour_of_day = (at / HOUR_MS) % 24;
        let lossy_week = (now - at) / DAY_MS / 7 == 13;
        let hops = trace
            .iter()
            .enumerate()
            .map(|(i, responder)| {
                let ttl = Ttl::new(i as u8 + 1).expect("TTLs start at 1");
                let lost = responder.is_none() || (lossy_week && seq % 5 == 0);
                match responder {
                    Some(ip) if !lost => HopSample::answered(
                        ttl,
                        HopAnswer {
                            responder: *ip,
                            rtt: Rtt::from_nanos(
                                (i as u64 + 1) * 1_000_000 + hour_of_day * 150_000,
                            ),
                            is_destination: ttl == dest_ttl,
                            reply_ttl: None,
                        },
                    ),
                    _ => HopSample::lost(ttl),
                }
            })
            .collect();
        store
            .record_round(&RoundRecord {
                target: id.clone(),
                seq,
                started_at_ms: at,
                hops,
                destination_ttl: Some(dest_ttl),
                source: TimestampSource::Ebpf,
            })
            .expect("record a round");
        seq += 1;
        at += 20 * 60_000;
        if at >= next_flush {
            store.flush_at(at).expect("flush");
            next_flush += DAY_MS;
        }
    }
    store.flush_at(now).expect("the last flush");
    seq
}

/// What the browser saw of the 1 y and 90 d pages.
#[derive(Debug, Default)]
struct LongRanges {
    year_points: u64,
    year_ticks: String,
    year_heat_ticks: String,
    year_cells: u64,
    year_note: String,
    quarter_ticks: String,
    import_errors: Vec<String>,
    console: Vec<Value>,
}

async fn browse_long_ranges(client: &Client, import: &ImportFiles) -> anyhow::Result<LongRanges> {
    let mut seen = LongRanges::default();
    client.set_window_size(1400, 1400).await?;
    client.goto(&format!("http://{WEB}/targets/y")).await?;
    wait_js(
        client,
        "the target page",
        "return document.querySelectorAll('#hops tbody tr[data-hop]').length > 0;",
    )
    .await?;
    click(client, "button[data-range='1y']").await?;
    // A year of hour rollups fitted to the width: hundreds of columns.
    seen.year_points = wait_js(
        client,
        "the latency graph over a year",
        "const c = document.querySelector('#latency'); const n = Number(c.dataset.points || 0);\
         return n > 200 && (c.dataset.ticks || '').includes(' ') ? n : 0;",
    )
    .await?
    .as_u64()
    .unwrap_or(0);
    seen.year_cells = wait_js(
        client,
        "the heatmap over a year",
        "return Number(document.querySelector('#heatmap').dataset.cells || 0);",
    )
    .await?
    .as_u64()
    .unwrap_or(0);
    let text = |js: &'static str| async move {
        anyhow::Ok(
            client
                .execute(js, vec![])
                .await?
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    seen.year_ticks = text("return document.querySelector('#latency').dataset.ticks;").await?;
    seen.year_heat_ticks = text("return document.querySelector('#heatmap').dataset.ticks;").await?;
    seen.year_note = text("return document.querySelector('#latency').closest('section').querySelector('.chart-note').textContent;").await?;
    save_screenshot(client, &screenshots().join("target-1y-desktop.png")).await?;

    click(client, "button[data-range='90d']").await?;
    wait_js(
        client,
        "the time axis over 90 days",
        "return /^\\d{4}-\\d{2}-\\d{2}/.test(document.querySelector('#latency').dataset.ticks || '');",
    )
    .await?;
    seen.quarter_ticks = text("return document.querySelector('#latency').dataset.ticks;").await?;

    // Import targets from a file: a list with a bad entry adds nothing and
    // names it; then a good list adds both.
    client.goto(&format!("http://{WEB}/")).await?;
    wait_js(
        client,
        "the overview",
        "return document.querySelectorAll('#targets tbody tr').length === 1;",
    )
    .await?;
    let choose = |path: String| async move {
        client
            .find(Locator::Id("import-file"))
            .await?
            .send_keys(&path)
            .await?;
        anyhow::Ok(())
    };
    choose(import.bad.display().to_string()).await?;
    wait_js(
        client,
        "the token dialog",
        "return document.querySelector('#dlg-token').open;",
    )
    .await?;
    type_into(client, "#dlg-token input[name=write]", WRITE_TOKEN).await?;
    click(client, "#dlg-token button[value=save]").await?;
    wait_js(
        client,
        "the import errors",
        "return document.querySelector('#dlg-import').open \
         && document.querySelectorAll('#dlg-import li').length > 0;",
    )
    .await?;
    seen.import_errors = serde_json::from_value(
        client
            .execute(
                "return [...document.querySelectorAll('#dlg-import li')].map(li => li.textContent);",
                vec![],
            )
            .await?,
    )?;
    save_screenshot(client, &screenshots().join("import-errors-desktop.png")).await?;
    click(client, "#dlg-import button[value=close]").await?;
    choose(import.good.display().to_string()).await?;
    wait_js(
        client,
        "the imported targets in the overview",
        "return document.querySelectorAll('#targets tbody tr').length === 3;",
    )
    .await?;
    seen.console = console(client).await?;
    Ok(seen)
}

/// The files the import check chooses.
struct ImportFiles {
    bad: PathBuf,
    good: PathBuf,
}

#[test]
fn headless_chromium_shows_a_year_from_hour_rollups() {
    let chromium = must(Chromium::find());
    let lab = LabSpec::chain(2).targets(1).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let trace = lab.expected_trace(target);
    let dir = temp_dir("web-year");
    let state = dir.path().join("state");
    let rounds = fill_a_year(&state, "y", &trace);
    assert!(rounds > 26_000, "{rounds} rounds written");
    let config = dir.path().join("hopwatch.toml");
    let web = format!("write_token = \"{WRITE_TOKEN}\"\n");
    std::fs::write(&config, config_text(&state, &web, &[("y", target)], "1s")).unwrap();
    let import = ImportFiles {
        bad: dir.path().join("bad-targets.json"),
        good: dir.path().join("targets.json"),
    };
    let entry = |name: &str, extra: &str| {
        format!(r#"{{"name": "{name}", "host": "{target}", "paused": true{extra}}}"#)
    };
    std::fs::write(
        &import.bad,
        format!(
            "[{}, {}]",
            entry("z1", ""),
            entry("z2", r#", "interval": "5ms""#)
        ),
    )
    .unwrap();
    std::fs::write(
        &import.good,
        format!("[{}, {}]", entry("z1", ""), entry("z2", "")),
    )
    .unwrap();
    let daemon = start_daemon(&lab, &config);
    must(eventually(Duration::from_secs(20), "rounds of y", || {
        let doc = get_json(&lab, &format!("http://{WEB}/api/v1/targets/y"), &[]);
        (doc["rounds"].as_u64().unwrap_or(0) >= 3)
            .then_some(())
            .ok_or_else(|| doc.to_string())
    }));
    // The API serves the year from the hour rollups.
    let series = get_json(
        &lab,
        &format!("http://{WEB}/api/v1/targets/y/series"),
        &[("range", "1y"), ("max_points", "400")],
    );
    let s = &series["series"][0];
    assert_eq!(s["resolution"], "1h", "{s}");
    let points = s["points"].as_array().unwrap();
    assert!(points.len() > 300, "{} points over a year", points.len());
    let first = points[0]["at_ms"].as_u64().unwrap();
    assert!(
        now_ms() - first > 360 * 86_400_000,
        "the year starts a year back: {first}"
    );

    let driver = must(chromium.start_driver(&lab, "src", DRIVER_PORT));
    let profile = dir.path().join("chromium-profile");
    let seen = driver
        .session(&profile, async |client| {
            browse_long_ranges(client, &import).await
        })
        .unwrap_or_else(|e: anyhow::Error| panic!("browser check failed: {e:#}"));

    assert!(seen.year_points > 200, "{seen:?}");
    // Months on the axis ("Mar 2026"), not clock times, on both charts.
    for ticks in [&seen.year_ticks, &seen.year_heat_ticks] {
        let labels: Vec<&str> = ticks.split('|').collect();
        assert!(labels.len() >= 4, "{seen:?}");
        for label in &labels {
            let (month, year) = label.split_once(' ').unwrap_or_default();
            assert!(
                month.len() == 3 && year.len() == 4 && year.parse::<u16>().is_ok(),
                "a month label: {label:?} in {seen:?}"
            );
        }
    }
    // Every hop row of the heatmap has data in nearly every column.
    assert!(seen.year_cells > 3 * 150, "{seen:?}");
    assert!(seen.year_note.contains("1h rollups"), "{seen:?}");
    // Ninety days: dates, no hours.
    for label in seen.quarter_ticks.split('|') {
        assert!(
            label.len() == 10 && label.as_bytes()[4] == b'-' && !label.contains(':'),
            "a date label: {label:?} in {seen:?}"
        );
    }
    // The refused import's 400 is logged by the browser as a failed load;
    // it is expected, anything else is not.
    let errors: Vec<&Value> = seen
        .console
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .filter(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            !(e["source"] == "network" && m.contains("/api/v1/targets ") && m.contains("400"))
        })
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let png = std::fs::read(screenshots().join("target-1y-desktop.png")).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"));
    // The bad list was refused whole, naming the entry and its field; the
    // good one was saved in the config file and applied.
    assert_eq!(seen.import_errors.len(), 1, "{seen:?}");
    assert!(
        seen.import_errors[0].starts_with("Entry 1 (\"z2\"), interval:"),
        "{seen:?}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("name = \"z1\"") && text.contains("name = \"z2\""),
        "{text}"
    );
    assert!(
        text.contains("# web_lab test config"),
        "comments kept:\n{text}"
    );
    let doc = get_json(&lab, &format!("http://{WEB}/api/v1/targets"), &[]);
    assert_eq!(doc["targets"].as_array().unwrap().len(), 3, "{doc}");
    let status = must(daemon.stop());
    assert!(status.success(), "clean exit: {status:?}");
}

// ------------------------------------------------------------- API under load

/// Per-TTL nearest-rank median and mean of RTTs, ns.
fn per_ttl(samples: &[(u8, u64)]) -> BTreeMap<u8, (u64, f64, usize)> {
    let mut by: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    for &(ttl, rtt) in samples {
        by.entry(ttl).or_default().push(rtt);
    }
    by.into_iter()
        .map(|(ttl, mut v)| {
            v.sort_unstable();
            let p50 = v[(v.len().div_ceil(2)).max(1) - 1];
            let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
            (ttl, (p50, mean, v.len()))
        })
        .collect()
}

/// One phase's accuracy: the daemon's per-hop RTTs against the capture's, for
/// the same probes (those sent in `[from_ms, to_ms)`).
#[derive(Debug)]
struct Accuracy {
    probes: usize,
    /// Largest |daemon − capture| over the hops, µs.
    p50_err_us: f64,
    mean_err_us: f64,
    /// The destination's median RTT by the capture, µs.
    dest_p50_us: f64,
}

fn accuracy(lab: &Lab, capture: &Path, target: IpAddr, from_ms: u64, to_ms: u64) -> Accuracy {
    let doc = get_json(
        lab,
        &format!("http://{WEB}/api/v1/targets/t/series"),
        &[
            ("hop", "all"),
            ("from", &from_ms.to_string()),
            ("to", &to_ms.to_string()),
            ("max_points", "5000"),
        ],
    );
    let mut daemon = Vec::new();
    for series in doc["series"].as_array().expect("series") {
        let Some(ttl) = series["hop"].as_u64() else {
            continue;
        };
        assert_eq!(series["resolution"], "raw");
        assert_eq!(series["bucket_ms"], 0, "one point per probe");
        for p in series["points"].as_array().unwrap() {
            if let Some(rtt) = p["min_ns"].as_u64() {
                daemon.push((ttl as u8, rtt));
            }
        }
    }
    let index = CaptureIndex::read(capture, &[IpAddr::V4(lab.src_v4())]).expect("capture");
    let captured: Vec<(u8, u64)> = index
        .probes()
        .filter(|p| p.key.dst == target)
        .filter(|p| (from_ms * 1_000_000..to_ms * 1_000_000).contains(&p.sent_ns))
        .filter_map(|p| Some((p.ttl, p.rtt_ns()?)))
        .collect();
    let (d, c) = (per_ttl(&daemon), per_ttl(&captured));
    assert!(
        !d.is_empty() && d.len() == c.len(),
        "daemon {d:?} capture {c:?}"
    );
    let mut acc = Accuracy {
        probes: daemon.len(),
        p50_err_us: 0.0,
        mean_err_us: 0.0,
        dest_p50_us: 0.0,
    };
    for (ttl, (p50, mean, n)) in &d {
        let (cp50, cmean, cn) = c[ttl];
        // The same probes on both sides, give or take the window's edges.
        assert!(
            n.abs_diff(cn) <= 4,
            "ttl {ttl}: daemon {n} probes, capture {cn}"
        );
        acc.p50_err_us = acc.p50_err_us.max(p50.abs_diff(cp50) as f64 / 1e3);
        acc.mean_err_us = acc.mean_err_us.max((mean - cmean).abs() / 1e3);
        acc.dest_p50_us = cp50 as f64 / 1e3;
    }
    acc
}

/// wrk's summary: requests per second, latency p50 and p99 (as printed), errors.
fn wrk_summary(output: &str) -> (f64, String, String, String) {
    let rps = output
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let pct = |p: &str| {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(p).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let errors = output
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    (rps, pct("50%"), pct("99%"), errors)
}

#[test]
fn api_load_does_not_degrade_probe_accuracy() {
    let wrk = must(programs::find("wrk"));
    must(programs::find("tcpdump"));
    let lab = LabSpec::chain(3).targets(1).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let dir = temp_dir("web-load");
    let config = dir.path().join("hopwatch.toml");
    std::fs::write(
        &config,
        config_text(&dir.path().join("state"), "", &[("t", target)], "100ms"),
    )
    .unwrap();
    let daemon = start_daemon(&lab, &config);
    must(eventually(
        Duration::from_secs(20),
        "the first rounds",
        || {
            let doc = get_json(&lab, &format!("http://{WEB}/api/v1/targets/t"), &[]);
            (doc["rounds"].as_u64().unwrap_or(0) >= 10)
                .then_some(())
                .ok_or_else(|| doc.to_string())
        },
    ));

    const PHASE: Duration = Duration::from_secs(20);
    let measure = |name: &str| {
        let path = dir.path().join(format!("{name}.pcap"));
        let capture = Capture::start(&lab, "src", "to-r1", &path).expect("tcpdump starts");
        std::thread::sleep(Duration::from_millis(500));
        let from = now_ms();
        std::thread::sleep(PHASE);
        let to = now_ms();
        // The last rounds' replies, then the store's next flush.
        std::thread::sleep(Duration::from_millis(1500));
        let stats = capture.stop().expect("tcpdump stops");
        assert_eq!(stats.dropped, Some(0), "tcpdump dropped packets: {stats:?}");
        std::thread::sleep(Duration::from_millis(1500));
        (path, from, to)
    };

    let idle = measure("idle");
    // 200 connections on the overview, the heaviest read, for the whole phase.
    let mut cmd = lab.command("src", wrk.to_str().unwrap()).expect("command");
    cmd.args(["-t2", "-c200", "-d26s", "--latency", "--timeout", "5s"])
        .arg(format!("http://{WEB}/api/v1/targets"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut load = lab.spawn("src", cmd).expect("wrk starts");
    std::thread::sleep(Duration::from_secs(2));
    let loaded = measure("load");
    let status = load.child_mut().wait().expect("wrk ends");
    assert!(status.success(), "wrk: {status:?}");
    let mut output = String::new();
    std::io::Read::read_to_string(
        load.child_mut().stdout.as_mut().expect("wrk output"),
        &mut output,
    )
    .unwrap();
    let (rps, p50, p99, errors) = wrk_summary(&output);

    let idle_acc = accuracy(&lab, &idle.0, target, idle.1, idle.2);
    let load_acc = accuracy(&lab, &loaded.0, target, loaded.1, loaded.2);
    println!(
        "| condition | probes | worst hop \\|p50 error\\| µs | worst hop \\|mean error\\| µs | destination p50 µs |\n\
         |---|---|---|---|---|\n\
         | idle | {} | {:.1} | {:.1} | {:.1} |\n\
         | 200 API connections | {} | {:.1} | {:.1} | {:.1} |\n\n\
         wrk: {rps:.0} requests/s on /api/v1/targets, latency p50 {p50}, p99 {p99}{}",
        idle_acc.probes,
        idle_acc.p50_err_us,
        idle_acc.mean_err_us,
        idle_acc.dest_p50_us,
        load_acc.probes,
        load_acc.p50_err_us,
        load_acc.mean_err_us,
        load_acc.dest_p50_us,
        if errors.is_empty() {
            String::new()
        } else {
            format!(", {errors}")
        }
    );
    assert!(rps > 50.0, "the API served the load: {output}");
    // No probe was lost to the load: about ten rounds a second in both phases.
    assert!(
        load_acc.probes as f64 > 0.8 * idle_acc.probes as f64,
        "probes under load {} vs idle {}",
        load_acc.probes,
        idle_acc.probes
    );
    // Kernel timestamps do not care how busy the daemon's userspace is: the
    // errors against the capture stay at their idle size (a few µs).
    for (what, idle_err, load_err) in [
        ("p50", idle_acc.p50_err_us, load_acc.p50_err_us),
        ("mean", idle_acc.mean_err_us, load_acc.mean_err_us),
    ] {
        assert!(
            load_err <= idle_err + 25.0 && load_err < 50.0,
            "{what} error grew under API load: idle {idle_err:.1} µs, loaded {load_err:.1} µs"
        );
    }
    let status = must(daemon.stop());
    assert!(status.success(), "clean exit: {status:?}");
}

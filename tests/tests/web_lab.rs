//! The web server of a real `hopwatch run` in the lab, as its users meet it:
//! a real Prometheus scrapes /metrics and answers queries about the series; a
//! real headless Chromium (through chromedriver) loads the overview and a
//! target page, checks that tables and graphs show real data (and that the
//! map places none of the lab's special-purpose hops but lists each), pauses a target
//! and finds no console errors, saving screenshots to tests/screenshots/; it
//! also reads a year of history (written through the store library against a
//! synthetic clock) on the 1 y and 90 d pages, with month and date axes, and
//! imports targets from a file (a bad list refused whole, a good one added); and
//! 200 concurrent API connections (wrk) do not degrade probe accuracy, judged
//! against a packet capture; and 200 connections on history, exports and the
//! overview plus more live streams than the cap get only 2xx or the documented
//! 429/503, without socket errors, while probing keeps its schedule and the
//! daemon's memory stays bounded. Privileged, and needs Debian's prometheus,
//! chromium, chromium-driver, wrk and tcpdump (deploy/setup-test.sh installs them);
//! these fail, never skip, without them.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::{Client, Locator};
use hopwatch::sys::now_ms;
use hopwatch_lab::bench::capture::Capture;
use hopwatch_lab::bench::pcap::CaptureIndex;
use hopwatch_lab::browser::{
    click, console, save_screenshot, type_into, wait_js, BrowserError, Chromium, DRIVER_PORT,
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

/// The tests that judge timing under load (probe accuracy, rounds on
/// schedule) take their turn alone: on two cores, a headless Chromium or a
/// Prometheus beside them takes the CPU their daemon is judged on. The other
/// tests may run side by side. Across binaries, under nextest
/// (deploy/test.sh), `.config/nextest.toml` runs them alone by name: a test
/// that takes its turn alone here is named there.
static TIMING: RwLock<()> = RwLock::new(());

fn alone() -> RwLockWriteGuard<'static, ()> {
    TIMING.write().unwrap_or_else(PoisonError::into_inner)
}

fn side_by_side() -> RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(PoisonError::into_inner)
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
    let _turn = side_by_side();
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

/// A drag across the middle half of the latency graph, read from the page:
/// each step's `[from, to]` of the latency graph and the heatmap (their
/// `data-from`/`data-to`), the page's query string and the export buttons'.
#[derive(Debug, Default)]
struct Zoom {
    before: [f64; 2],
    latency: [f64; 2],
    heatmap: [f64; 2],
    url_query: String,
    export_query: String,
    /// The latency graph's range after a reload of the zoomed page's URL.
    reloaded: [f64; 2],
    /// `data-range` and the query string after a double-click.
    reset_range: String,
    reset_query: String,
}

/// `[data-from, data-to]` of the canvas `selector`.
async fn drawn_span(client: &Client, selector: &str) -> anyhow::Result<[f64; 2]> {
    let v = client
        .execute(
            "const c = document.querySelector(arguments[0]); return [Number(c.dataset.from), Number(c.dataset.to)];",
            vec![Value::from(selector)],
        )
        .await?;
    Ok(serde_json::from_value(v)?)
}

/// Drags across the middle half of the latency graph with real pointer
/// input, checks what follows the zoom, reloads, and double-clicks back.
async fn drag_to_zoom(client: &Client) -> anyhow::Result<Zoom> {
    let mut zoom = Zoom {
        before: drawn_span(client, "#latency").await?,
        ..Zoom::default()
    };
    let canvas = client.find(Locator::Css("#latency")).await?;
    let width: f64 = serde_json::from_value(
        client
            .execute(
                "return document.querySelector('#latency').getBoundingClientRect().width;",
                vec![],
            )
            .await?,
    )?;
    let at = |x: f64, duration: Option<Duration>| PointerAction::MoveToElement {
        element: canvas.clone(),
        duration,
        x,
        y: 0.0,
    };
    let drag = MouseActions::new("mouse".into())
        .then(at(-width / 4.0, None))
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(at(0.0, Some(Duration::from_millis(100))))
        .then(at(width / 4.0, Some(Duration::from_millis(100))))
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    client.perform_actions(drag).await?;
    wait_js(
        client,
        "both graphs redrawn for the zoomed range",
        "return document.querySelector('#latency').dataset.range === 'custom' \
         && document.querySelector('#heatmap').dataset.range === 'custom';",
    )
    .await?;
    zoom.latency = drawn_span(client, "#latency").await?;
    zoom.heatmap = drawn_span(client, "#heatmap").await?;
    zoom.url_query =
        serde_json::from_value(client.execute("return location.search;", vec![]).await?)?;
    zoom.export_query = serde_json::from_value(
        client
            .execute(
                "return document.querySelector('#export-csv').dataset.query;",
                vec![],
            )
            .await?,
    )?;
    // The URL alone brings the zoomed range back.
    client.refresh().await?;
    wait_js(
        client,
        "the zoomed range after a reload",
        // The page builds its canvases once /api/v1/service answers, which
        // may be after the reload returns.
        "const c = document.querySelector('#latency'); return !!c && c.dataset.range === 'custom';",
    )
    .await?;
    zoom.reloaded = drawn_span(client, "#latency").await?;
    // A double-click goes back to the preset.
    let canvas = client.find(Locator::Css("#latency")).await?;
    let dbl = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: canvas,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    client.perform_actions(dbl).await?;
    wait_js(
        client,
        "the preset range after a double-click",
        "return document.querySelector('#latency').dataset.range !== 'custom' \
         && document.querySelector('#latency').dataset.range !== '';",
    )
    .await?;
    zoom.reset_range = serde_json::from_value(
        client
            .execute(
                "return document.querySelector('#latency').dataset.range;",
                vec![],
            )
            .await?,
    )?;
    zoom.reset_query =
        serde_json::from_value(client.execute("return location.search;", vec![]).await?)?;
    Ok(zoom)
}

/// What the browser saw, checked after the session is closed.
#[derive(Debug, Default)]
struct Seen {
    overview_rows: Vec<Vec<String>>,
    hop_rows: Vec<Vec<String>>,
    graph_points: u64,
    heat_cells: u64,
    sparkline_pixels: u64,
    /// Drag-to-zoom on the latency graph: see [`Zoom`].
    zoom: Zoom,
    /// The map's list of hops it cannot place: `[ttl, reason, text]` (it
    /// placed none: the wait for the list checks that).
    map_unplaced: Vec<Vec<String>>,
    /// The hop table of the target added as final-hop-only.
    final_hop_rows: Vec<Vec<String>>,
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
    // Counts only from a drawing of the 15 min data: until it arrives the
    // canvases still show the default range's.
    seen.graph_points =
        drawn_count(client, "the latency graph", "#latency", "points", "15m").await?;
    seen.heat_cells = drawn_count(client, "the heatmap", "#heatmap", "cells", "15m").await?;
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
    // The map: the lab's addresses are special-purpose (benchmarking), so
    // every hop is listed beside it, none placed.
    wait_js(
        client,
        "the map's list of hops",
        &format!(
            "return document.querySelectorAll('#map-unplaced li[data-ttl]').length === {hops} \
                  && document.querySelector('#hop-map').dataset.points === '0';"
        ),
    )
    .await?;
    seen.map_unplaced = serde_json::from_value(
        client
            .execute(
                "return [...document.querySelectorAll('#map-unplaced li')]\
                 .map(li => [li.dataset.ttl, li.dataset.reason, li.textContent]);",
                vec![],
            )
            .await?,
    )?;
    seen.zoom = drag_to_zoom(client).await?;
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
    click(client, "#form-add input[name=final_hop_only]").await?;
    click(client, "#form-add button[value=add]").await?;
    wait_js(
        client,
        "the new target in the overview",
        "return [...document.querySelectorAll('#targets tbody tr')].some(tr => tr.dataset.id === 'c');",
    )
    .await?;
    // Its page: a single-row path, the destination, once it has answered.
    client.goto(&format!("{base}/targets/c")).await?;
    wait_js(
        client,
        "the final-hop target's answered row",
        "const r = [...document.querySelectorAll('#hops tbody tr[data-hop]')];\
         return r.length > 0 && Number(r[0].cells[3].textContent) > 0 && r[0].textContent.includes('destination');",
    )
    .await?;
    seen.final_hop_rows = serde_json::from_value(
        client
            .execute(
                "return [...document.querySelectorAll('#hops tbody tr')]\
                 .map(tr => [...tr.cells].map(td => td.textContent.trim()));",
                vec![],
            )
            .await?,
    )?;
    save_screenshot(client, &screenshots().join("target-final-hop-desktop.png")).await?;

    seen.console = console(client).await?;
    Ok(seen)
}

/// A count a canvas reports (`data-points`, `data-cells`) once it is drawn
/// from `range`'s data: a click on a preset redraws only when that data
/// arrives, and until then the canvas still reports the previous range's.
async fn drawn_count(
    client: &Client,
    what: &str,
    canvas: &str,
    field: &str,
    range: &str,
) -> Result<u64, BrowserError> {
    let script = format!(
        "const c = document.querySelector('{canvas}');\
         return c.dataset.range === '{range}' && Number(c.dataset.{field} || 0);"
    );
    Ok(wait_js(client, what, &script).await?.as_u64().unwrap_or(0))
}

#[test]
fn headless_chromium_shows_real_data_and_pauses_a_target() {
    let _turn = side_by_side();
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
    let new_host_text = new_host.clone();
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
    // Drag-to-zoom: the middle half of the canvas is about half of the
    // plot's 15 minutes (the plot is the canvas less 70 px of axis), centred.
    let z = &seen.zoom;
    let [from, to] = z.before;
    let span = to - from;
    assert!(
        (850e3..=950e3).contains(&span),
        "15 min drawn before: {z:?}"
    );
    let [zf, zt] = z.latency;
    assert!(
        from < zf && zt < to,
        "the zoom lies inside the old range: {z:?}"
    );
    let share = (zt - zf) / span;
    assert!(
        (0.45..0.65).contains(&share),
        "zoomed to {share} of the range: {z:?}"
    );
    let middle = ((zf + zt) / 2.0 - from) / span;
    assert!((0.4..0.6).contains(&middle), "centred at {middle}: {z:?}");
    let query = format!("from={zf}&to={zt}");
    assert_eq!(z.url_query, format!("?{query}"), "the URL: {z:?}");
    assert_eq!(z.export_query, query, "the export buttons: {z:?}");
    let [hf, ht] = z.heatmap;
    assert!(
        hf >= from - 60e3 && ht <= to + 60e3 && ht - hf < 0.7 * span,
        "the heatmap follows: {z:?}"
    );
    assert_eq!(z.reloaded, z.latency, "the URL restores the zoom: {z:?}");
    assert_eq!(z.reset_range, "15m", "double-click goes back: {z:?}");
    assert_eq!(z.reset_query, "", "and the URL forgets the zoom: {z:?}");
    // No lab hop is placed on the map (none is looked up); each is listed
    // with its block, in path order.
    assert_eq!(seen.map_unplaced.len(), hops, "{:?}", seen.map_unplaced);
    for (i, (row, expected)) in seen.map_unplaced.iter().zip(&trace).enumerate() {
        let expected = expected.unwrap().to_string();
        assert_eq!(row[0], (i + 1).to_string(), "{row:?}");
        assert_eq!(row[1], "special", "{row:?}");
        assert!(
            row[2].contains(&expected) && row[2].contains("benchmarking (RFC 2544)"),
            "{row:?}"
        );
    }
    // The target added as final-hop-only: one row, the destination.
    assert_eq!(seen.final_hop_rows.len(), 1, "{:?}", seen.final_hop_rows);
    let row = &seen.final_hop_rows[0];
    assert_eq!(row[0], "dst", "{row:?}");
    assert!(
        row[1].contains(&new_host_text) && row[1].contains("destination"),
        "{row:?}"
    );
    assert!(row[2].ends_with('%'), "loss: {row:?}");

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
            "[[target]]\nname = \"c\"\nhost = \"{c}\"\nlabel = \"Lab c\"\nfinal_hop_only = true"
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
        "target-final-hop-desktop.png",
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
                            quote: None,
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
         return c.dataset.range === '1y' && n > 200 && (c.dataset.ticks || '').includes(' ') ? n : 0;",
    )
    .await?
    .as_u64()
    .unwrap_or(0);
    seen.year_cells =
        drawn_count(client, "the heatmap over a year", "#heatmap", "cells", "1y").await?;
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

/// A daemon in `dir` probing the lab's one target as `t` every 100 ms, every
/// `[web]` limit at its default, returned once it has done 10 rounds: what
/// the load tests load.
fn fast_target_daemon<'lab>(lab: &'lab Lab, dir: &tempfile::TempDir) -> Daemon<'lab> {
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let config = dir.path().join("hopwatch.toml");
    std::fs::write(
        &config,
        config_text(&dir.path().join("state"), "", &[("t", target)], "100ms"),
    )
    .unwrap();
    let daemon = start_daemon(lab, &config);
    must(eventually(
        Duration::from_secs(20),
        "the first rounds",
        || {
            let doc = get_json(lab, &format!("http://{WEB}/api/v1/targets/t"), &[]);
            (doc["rounds"].as_u64().unwrap_or(0) >= 10)
                .then_some(())
                .ok_or_else(|| doc.to_string())
        },
    ));
    daemon
}

#[test]
fn api_load_does_not_degrade_probe_accuracy() {
    let _turn = alone();
    let wrk = must(programs::find("wrk"));
    must(programs::find("tcpdump"));
    let lab = LabSpec::chain(3).targets(1).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let dir = temp_dir("web-load");
    let daemon = fast_target_daemon(&lab, &dir);

    const PHASE: Duration = Duration::from_secs(10);
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
    cmd.args(["-t2", "-c200", "-d16s", "--latency", "--timeout", "5s"])
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

// ------------------------------------ history, export and live streams under load

/// A wrk script that sends GETs to `PATHS` in turn and, in `done`, prints
/// what the summary leaves out: the count of every status, the Retry-After
/// values of the refusals, and the refusals that lack one or a JSON error
/// body. Lines start with `hw-` for [`WrkRun::parse`].
const WRK_SCRIPT: &str = r#"-- written by tests/tests/web_lab.rs
local paths = { PATHS }
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  n = 0
  statuses = {}
  retry = {}
  bad_refusals = 0
end

function request()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 429 or status == 503 then
    local after = nil
    for name, value in pairs(headers) do
      if string.lower(name) == "retry-after" then after = value end
    end
    if after == nil or string.sub(body, 1, 9) ~= '{"error":' then
      bad_refusals = bad_refusals + 1
    else
      local key = status .. "=" .. after
      retry[key] = (retry[key] or 0) + 1
    end
  end
end

function done(summary, latency, requests)
  local total, retries, bad = {}, {}, 0
  for _, t in ipairs(threads) do
    for code, count in pairs(t:get("statuses")) do
      total[code] = (total[code] or 0) + count
    end
    for key, count in pairs(t:get("retry")) do
      retries[key] = (retries[key] or 0) + count
    end
    bad = bad + t:get("bad_refusals")
  end
  for code, count in pairs(total) do
    io.write(string.format("hw-status %d %d\n", code, count))
  end
  for key, count in pairs(retries) do
    io.write(string.format("hw-retry %s %d\n", key, count))
  end
  local e = summary.errors
  io.write(string.format("hw-bad-refusals %d\n", bad))
  io.write(string.format("hw-errors %d %d %d %d\n", e.connect, e.read, e.write, e.timeout))
  io.write(string.format("hw-latency-us %d %d %d\n",
    latency:percentile(50), latency:percentile(99), latency.max))
  io.write(string.format("hw-requests %d %d\n", summary.requests, summary.duration))
end
"#;

/// History reads: series (one hop, all hops) and heatmaps over the range presets.
const HISTORY_PATHS: &[&str] = &[
    "/api/v1/targets/t/series?range=15m",
    "/api/v1/targets/t/series?hop=all&range=1h",
    "/api/v1/targets/t/series?hop=all&range=24h&max_points=2000",
    "/api/v1/targets/t/series?hop=1&range=7d",
    "/api/v1/targets/t/heatmap?range=15m",
    "/api/v1/targets/t/heatmap?range=6h",
    "/api/v1/targets/t/heatmap?range=7d&columns=1000",
    "/api/v1/targets/t/heatmap?range=30d",
];

/// Exports, CSV and JSON, over several ranges.
const EXPORT_PATHS: &[&str] = &[
    "/api/v1/targets/t/export?range=15m",
    "/api/v1/targets/t/export?format=json&range=1h",
    "/api/v1/targets/t/export?format=csv&range=24h",
    "/api/v1/targets/t/export?format=json&range=30d",
];

/// The in-memory reads: the overview and the target's page.
const OVERVIEW_PATHS: &[&str] = &["/api/v1/targets", "/api/v1/targets/t"];

/// What one wrk run reported, from the `hw-` lines of [`WRK_SCRIPT`] and
/// wrk's own summary.
#[derive(Debug, Default)]
struct WrkRun {
    requests: u64,
    seconds: f64,
    statuses: BTreeMap<u16, u64>,
    /// `"503=1"` (status = Retry-After) → count.
    retry_after: BTreeMap<String, u64>,
    /// Refusals (429/503) without Retry-After or without a JSON error.
    bad_refusals: u64,
    /// connect, read, write, timeout.
    socket_errors: [u64; 4],
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl WrkRun {
    fn parse(output: &str) -> WrkRun {
        let mut run = WrkRun::default();
        let mut seen_latency = false;
        for line in output.lines() {
            let mut words = line.split_whitespace();
            let tag = words.next().unwrap_or_default();
            let nums: Vec<String> = words.map(str::to_owned).collect();
            let num = |i: usize| -> u64 { nums[i].parse().expect("a count from the wrk script") };
            match tag {
                "hw-status" => {
                    run.statuses.insert(num(0) as u16, num(1));
                }
                "hw-retry" => {
                    run.retry_after.insert(nums[0].clone(), num(1));
                }
                "hw-bad-refusals" => run.bad_refusals = num(0),
                "hw-errors" => run.socket_errors = [num(0), num(1), num(2), num(3)],
                "hw-latency-us" => {
                    seen_latency = true;
                    run.p50_ms = num(0) as f64 / 1e3;
                    run.p99_ms = num(1) as f64 / 1e3;
                    run.max_ms = num(2) as f64 / 1e3;
                }
                "hw-requests" => {
                    run.requests = num(0);
                    run.seconds = num(1) as f64 / 1e6;
                }
                _ => {}
            }
        }
        assert!(
            seen_latency,
            "the wrk script's summary is missing:\n{output}"
        );
        run
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-3)
    }

    fn answered_2xx(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(code, _)| (200..300).contains(*code))
            .map(|(_, n)| n)
            .sum()
    }

    fn statuses_text(&self) -> String {
        self.statuses
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// wrk in the lab's source namespace: `connections` on one thread for
/// `seconds`, sending `paths` in turn through [`WRK_SCRIPT`] (written to `dir`).
fn spawn_wrk<'lab>(
    lab: &'lab Lab,
    dir: &Path,
    name: &str,
    paths: &[&str],
    connections: u32,
    seconds: u32,
) -> hopwatch_lab::netns::exec::NsChild<'lab> {
    let wrk = must(programs::find("wrk"));
    let list = paths
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let script = dir.join(format!("{name}.lua"));
    std::fs::write(&script, WRK_SCRIPT.replace("PATHS", &list)).unwrap();
    let mut cmd = lab.command("src", wrk.to_str().unwrap()).expect("command");
    // The timeout is beyond the server's own (`request_timeout`, 10 s), so a
    // slow answer shows up as the server's 503, and a wrk timeout means the
    // server let a request hang.
    cmd.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["--timeout", "15s", "-s"])
        .arg(&script)
        .arg(format!("http://{WEB}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    lab.spawn("src", cmd).expect("wrk starts")
}

/// Waits for a wrk started by [`spawn_wrk`] and reads its figures.
fn finish_wrk(mut child: hopwatch_lab::netns::exec::NsChild<'_>) -> WrkRun {
    let mut output = String::new();
    std::io::Read::read_to_string(
        child.child_mut().stdout.as_mut().expect("wrk output"),
        &mut output,
    )
    .unwrap();
    let mut errors = String::new();
    std::io::Read::read_to_string(
        child.child_mut().stderr.as_mut().expect("wrk errors"),
        &mut errors,
    )
    .unwrap();
    let status = child.wait().expect("wrk ends");
    assert!(status.success(), "wrk: {status:?}\n{output}\n{errors}");
    WrkRun::parse(&output)
}

/// The daemon's resident set, MiB, from /proc/<pid>/status.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// Sleeps `span`, sampling the daemon's RSS every 200 ms; the largest, MiB.
fn watch_rss(pid: u32, span: Duration) -> f64 {
    let end = std::time::Instant::now() + span;
    let mut max = rss_mib(pid);
    while std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        max = max.max(rss_mib(pid));
    }
    max
}

/// When the rounds the daemon started in `[from_ms, to_ms)` began: the raw
/// destination points of the store (one per round, stamped with its start).
fn rounds_started(lab: &Lab, from_ms: u64, to_ms: u64) -> Vec<u64> {
    let doc = get_json(
        lab,
        &format!("http://{WEB}/api/v1/targets/t/series"),
        &[
            ("from", &from_ms.to_string()),
            ("to", &to_ms.to_string()),
            ("max_points", "5000"),
        ],
    );
    let series = &doc["series"][0];
    assert_eq!(series["bucket_ms"], 0, "one point per round: {doc}");
    let at: Vec<u64> = series["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter_map(|p| p["at_ms"].as_u64())
        .filter(|at| (from_ms..to_ms).contains(at))
        .collect();
    at
}

/// The longest gaps between consecutive round starts, longest first: what a
/// failure shows of how the schedule slipped.
fn longest_gaps(starts: &[u64]) -> Vec<u64> {
    let mut gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable_by(|a, b| b.cmp(a));
    gaps.truncate(10);
    gaps
}

/// What one live-stream client saw.
#[derive(Debug)]
struct LiveClient {
    path: String,
    status: u16,
    retry_after: Option<String>,
    /// A refusal's body was the JSON error.
    json_error: bool,
    /// `event:` lines received while the stream was held.
    events: usize,
}

/// Opens `path` as a live stream (plain HTTP/1.1 on a socket, as a browser's
/// `fetch` would) and, when it is accepted, reads events until `until`; a
/// refusal is read to the end of its body.
async fn live_client(path: String, until: tokio::time::Instant) -> Result<LiveClient, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fail = |what: &str, e: &dyn Display| format!("{path}: {what}: {e}");
    let mut tcp = tokio::net::TcpStream::connect(WEB)
        .await
        .map_err(|e| fail("connect", &e))?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {WEB}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .map_err(|e| fail("send", &e))?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .map_err(|e| fail("no answer", &e))?
            .map_err(|e| fail("read", &e))?;
        if n == 0 {
            return Err(fail("closed before the head", &"EOF"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| fail("no status", &head))?;
    let mut client = LiveClient {
        path: path.clone(),
        status,
        retry_after: header("retry-after"),
        json_error: false,
        events: 0,
    };
    let mut body = buf[head_end..].to_vec();
    if status != 200 {
        let length: usize = header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        while body.len() < length {
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
                .await
                .map_err(|e| fail("refusal body", &e))?
                .map_err(|e| fail("read", &e))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        client.json_error = body.starts_with(b"{\"error\":");
        return Ok(client);
    }
    loop {
        match tokio::time::timeout_at(until, tcp.read(&mut chunk)).await {
            // Held for as long as asked: the client goes away.
            Err(_) => break,
            Ok(Ok(0)) => return Err(fail("the stream ended early", &"EOF")),
            Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(fail("read", &e)),
        }
    }
    client.events = String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("event:"))
        .count();
    Ok(client)
}

/// `paths` opened as live streams all at once from the source namespace, on
/// a thread of its own; each accepted one is held for `hold`.
fn live_clients(
    lab: &Lab,
    paths: Vec<String>,
    hold: Duration,
) -> hopwatch_lab::netns::enter::NsThread<Vec<Result<LiveClient, String>>> {
    must(lab.spawn_in("src", "live-clients", move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let until = tokio::time::Instant::now() + hold;
            futures::future::join_all(paths.into_iter().map(|p| live_client(p, until))).await
        })
    }))
}

/// `n` live streams, overview and target ones alternating.
fn live_paths(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                "/api/v1/live".to_owned()
            } else {
                "/api/v1/targets/t/live".to_owned()
            }
        })
        .collect()
}

/// The documented `[web]` defaults the test holds the server to
/// (docs/configuration.md): open live streams, and the Retry-After of each refusal.
const MAX_LIVE_STREAMS: usize = 32;
const RETRY_BUSY: &str = "503=1";
const RETRY_TIMEOUT: &str = "503=5";
const RETRY_STREAMS: &str = "10";
/// The daemon's resident set may not pass this while serving the load (debug
/// build, one target; it idles around 67 MiB).
const RSS_BOUND_MIB: f64 = 256.0;

#[test]
fn history_export_and_live_streams_under_load_keep_probing_on_schedule() {
    let _turn = alone();
    must(programs::find("wrk"));
    let lab = LabSpec::chain(3).targets(1).build().expect("lab");
    let dir = temp_dir("web-load-history");
    let daemon = fast_target_daemon(&lab, &dir);
    let pid = daemon.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "hopwatch", "the daemon's own PID");

    const WINDOW: Duration = Duration::from_secs(15);
    const RAMP: Duration = Duration::from_secs(2);
    // Idle: nothing but probing.
    let rss_before = rss_mib(pid);
    let idle_from = now_ms();
    let rss_idle = watch_rss(pid, WINDOW);
    let idle_to = now_ms();

    // Load: 200 connections on history, exports and the overview, and more
    // live streams than the cap, for the ramp, the window and a second after.
    let load_secs = (RAMP + WINDOW).as_secs() as u32 + 1;
    let loads = [
        (
            "history",
            spawn_wrk(&lab, dir.path(), "history", HISTORY_PATHS, 64, load_secs),
        ),
        (
            "export",
            spawn_wrk(&lab, dir.path(), "export", EXPORT_PATHS, 36, load_secs),
        ),
        (
            "overview",
            spawn_wrk(&lab, dir.path(), "overview", OVERVIEW_PATHS, 100, load_secs),
        ),
    ];
    let over_cap = 8;
    let live = live_clients(
        &lab,
        live_paths(MAX_LIVE_STREAMS + over_cap),
        Duration::from_secs(u64::from(load_secs)),
    );
    let rss_ramp = watch_rss(pid, RAMP);
    let load_from = now_ms();
    let rss_load = watch_rss(pid, WINDOW).max(rss_ramp);
    let load_to = now_ms();
    let runs: Vec<(&str, WrkRun)> = loads
        .into_iter()
        .map(|(name, child)| (name, finish_wrk(child)))
        .collect();
    let streams: Vec<LiveClient> = live
        .join()
        .into_iter()
        .map(|client| client.unwrap_or_else(|e| panic!("live stream: {e}")))
        .collect();
    // The last rounds of the window, then the store's next flush.
    std::thread::sleep(Duration::from_millis(2500));
    let rss_after = rss_mib(pid);

    // Every stream the load held has given its place back.
    let reopened = must(eventually(
        Duration::from_secs(10),
        "the live-stream slots to come back",
        || {
            let clients = lab
                .run_in("src", || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    runtime.block_on(async {
                        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
                        futures::future::join_all(
                            live_paths(MAX_LIVE_STREAMS)
                                .into_iter()
                                .map(|p| live_client(p, until)),
                        )
                        .await
                    })
                })
                .map_err(|e| e.to_string())?;
            let ok = clients
                .iter()
                .filter(|c| matches!(c, Ok(c) if c.status == 200 && c.events > 0))
                .count();
            (ok == MAX_LIVE_STREAMS)
                .then_some(ok)
                .ok_or_else(|| format!("{ok} of {MAX_LIVE_STREAMS} accepted: {clients:?}"))
        },
    ));

    // The same reads one connection at a time, for the latency without load.
    let unloaded: Vec<(&str, WrkRun)> = [
        ("history", HISTORY_PATHS),
        ("export", EXPORT_PATHS),
        ("overview", OVERVIEW_PATHS),
    ]
    .into_iter()
    .map(|(name, paths)| {
        let child = spawn_wrk(&lab, dir.path(), &format!("{name}-single"), paths, 1, 3);
        (name, finish_wrk(child))
    })
    .collect();
    let rss_end = rss_mib(pid);

    let idle_starts = rounds_started(&lab, idle_from, idle_to);
    let load_starts = rounds_started(&lab, load_from, load_to);
    let (idle_rounds, load_rounds) = (idle_starts.len(), load_starts.len());
    let idle_rate = idle_rounds as f64 * 1e3 / (idle_to - idle_from) as f64;
    let load_rate = load_rounds as f64 * 1e3 / (load_to - load_from) as f64;

    // The figures, as docs/benchmarks.md shows them.
    println!(
        "| reads | connections | requests/s | statuses | p50 ms | p99 ms | max ms | \
         p50 / p99 one connection ms | p99 ratio |\n|---|---:|---:|---|---:|---:|---:|---:|---:|"
    );
    for ((name, run), (_, single)) in runs.iter().zip(&unloaded) {
        let connections = match *name {
            "history" => 64,
            "export" => 36,
            _ => 100,
        };
        println!(
            "| {name} | {connections} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.2} / {:.2} | {:.0}× |",
            run.rps(),
            run.statuses_text(),
            run.p50_ms,
            run.p99_ms,
            run.max_ms,
            single.p50_ms,
            single.p99_ms,
            run.p99_ms / single.p99_ms.max(1e-3)
        );
    }
    let accepted: Vec<&LiveClient> = streams.iter().filter(|c| c.status == 200).collect();
    let refused: Vec<&LiveClient> = streams.iter().filter(|c| c.status != 200).collect();
    let events: Vec<usize> = accepted.iter().map(|c| c.events).collect();
    println!(
        "\nlive streams: {} opened at once, {} accepted (events each: min {}, max {}), \
         {} refused ({:?})\nretry-after: {:?}\n\
         rounds started: idle {idle_rounds} in {} ms ({idle_rate:.2}/s), under load \
         {load_rounds} in {} ms ({load_rate:.2}/s): {:.1}% of idle\n\
         RSS MiB: before {rss_before:.1}, idle max {rss_idle:.1}, load max {rss_load:.1}, \
         after {rss_after:.1}, at the end {rss_end:.1} (bound {RSS_BOUND_MIB})\n\
         slots back after the load: {reopened} of {MAX_LIVE_STREAMS}",
        streams.len(),
        accepted.len(),
        events.iter().min().unwrap_or(&0),
        events.iter().max().unwrap_or(&0),
        refused.len(),
        refused
            .iter()
            .map(|c| (c.status, c.retry_after.clone()))
            .collect::<BTreeMap<_, _>>(),
        runs.iter()
            .map(|(name, run)| (*name, &run.retry_after))
            .collect::<Vec<_>>(),
        idle_to - idle_from,
        load_to - load_from,
        100.0 * load_rate / idle_rate,
    );

    // No socket errors, and only the documented answers.
    for (name, run) in runs.iter().chain(&unloaded) {
        assert_eq!(
            run.socket_errors, [0; 4],
            "{name}: socket errors (connect, read, write, timeout)"
        );
        for (code, n) in &run.statuses {
            assert!(
                (200..300).contains(code) || *code == 503,
                "{name}: {n} answers {code}; only 2xx or the documented 503 may come: {}",
                run.statuses_text()
            );
        }
        assert_eq!(
            run.bad_refusals, 0,
            "{name}: refusals without Retry-After or JSON"
        );
        for key in run.retry_after.keys() {
            assert!(
                key == RETRY_BUSY || key == RETRY_TIMEOUT,
                "{name}: undocumented refusal {key}"
            );
        }
        // The limits shed load; they do not refuse everything.
        assert!(
            run.answered_2xx() * 2 > run.requests,
            "{name}: most requests are answered: {}",
            run.statuses_text()
        );
    }
    for (name, run) in &unloaded {
        assert_eq!(
            run.answered_2xx(),
            run.requests,
            "{name}: one connection is never refused: {}",
            run.statuses_text()
        );
    }
    // Exactly the cap's worth of streams, each one fed; the rest refused as documented.
    assert_eq!(accepted.len(), MAX_LIVE_STREAMS, "{streams:?}");
    for client in &accepted {
        assert!(
            client.events >= 5,
            "{}: a live stream starved under load: {client:?}",
            client.path
        );
    }
    for client in &refused {
        assert!(
            client.status == 429
                && client.retry_after.as_deref() == Some(RETRY_STREAMS)
                && client.json_error,
            "{}: a stream over the cap: {client:?}",
            client.path
        );
    }
    // Probing keeps its schedule.
    assert!(
        idle_rate > 9.0,
        "idle: {idle_rounds} rounds in {} ms at 100 ms",
        idle_to - idle_from
    );
    assert!(
        load_rate >= 0.95 * idle_rate,
        "rounds under load {load_rate:.2}/s against {idle_rate:.2}/s idle; longest gaps \
         between round starts under load (ms): {:?}",
        longest_gaps(&load_starts)
    );
    assert!(
        rss_load < RSS_BOUND_MIB && rss_after < RSS_BOUND_MIB,
        "RSS: load {rss_load:.1} MiB, after {rss_after:.1} MiB, bound {RSS_BOUND_MIB} MiB"
    );
    let status = must(daemon.stop());
    assert!(status.success(), "clean exit: {status:?}");
}

//! Peer alerts end to end: `hopwatch run` in `src` measures a `[[peer]]` to
//! the `[reflector]` of another `hopwatch run` in `dst`, across the lab's
//! router, and posts its alerts to a real webhook receiver on `src`'s own
//! loopback (a JSON webhook filtered to the peer, and an Alertmanager one).
//! Loss injected on the backward direction only (r1 → src) must raise one
//! peer loss alert that names that direction, clear once the loss is gone,
//! and a raised alert must clear with `peer_removed` when a reload takes the
//! peer out of the config. While it fires, the daemon shows it where it shows
//! a target's: the peer's API document, the alerts list, /metrics
//! (`hopwatch_alert_firing` with the Alertmanager labels), and the web UI
//! (the peer page and the overview, in headless Chromium); after the clear,
//! none of them does. Privileged (namespaces, iptables) and needs Debian's
//! chromium and chromium-driver; fails, never skips, without them.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use hopwatch::alerts::{sign, Secret, SIGNATURE_HEADER};
use hopwatch_lab::browser::{click, console, wait_js, Chromium, DRIVER_PORT};
use hopwatch_lab::daemon::Daemon;
use hopwatch_lab::webclient::{self, eventually, get_json};
use hopwatch_lab::{hopwatch_bin, At, Lab, LabSpec};
use serde_json::Value;
use tokio::sync::oneshot;

/// The sending daemon's web server, on `src`'s own loopback.
const WEB: &str = "127.0.0.1:9472";
const SECRET: &str = "peer-lab-secret";
const BACKWARD_LOSS_PCT: f64 = 30.0;

/// One POST the receiver took.
#[derive(Debug, Clone)]
struct Post {
    /// `/json` or `/am`.
    path: String,
    body: Value,
    signature_ok: bool,
}

type Log = Arc<Mutex<Vec<Post>>>;

async fn take(
    State(log): State<Log>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let signature_ok = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| sign::verify(&Secret::new(SECRET), &body, v));
    log.lock().unwrap().push(Post {
        path: uri.path().to_owned(),
        body: serde_json::from_slice(&body).expect("a JSON body"),
        signature_ok,
    });
    StatusCode::OK
}

/// A webhook receiver on 127.0.0.1 of `src`, on its own thread and runtime;
/// stopped when dropped.
struct Receiver {
    log: Log,
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<hopwatch_lab::netns::enter::NsThread<()>>,
}

impl Receiver {
    fn start(lab: &Lab) -> Receiver {
        let log: Log = Arc::default();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = Arc::clone(&log);
        let thread = lab
            .spawn_in("src", "webhook-receiver", move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("the receiver binds on src's loopback");
                    port_tx
                        .send(listener.local_addr().expect("bound").port())
                        .expect("the test waits for the port");
                    let app = Router::new()
                        .route("/json", post(take))
                        .route("/am", post(take))
                        .with_state(shared);
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                        .expect("the receiver serves");
                });
            })
            .expect("a receiver thread inside src");
        let port = port_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the receiver reports its port");
        Receiver {
            log,
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn posts(&self, path: &str) -> Vec<Post> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|p| p.path == path).cloned().collect()
    }

    /// The JSON webhook's events, in arrival order.
    fn events(&self) -> Vec<Value> {
        self.posts("/json").into_iter().map(|p| p.body).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join();
        }
    }
}

fn write_config(path: &Path, state: &Path, receiver: &Receiver, peer: Option<SocketAddr>) {
    let mut text = format!(
        "[service]\nstate_dir = {:?}\n\n[web]\nlisten = \"{WEB}\"\n\n\
         [statistics]\nwindow = 100\n\n[defaults]\ntimeout = \"500ms\"\n\n\
         [alerts]\nloss_pct = 10\nraise_rounds = 2\nclear_rounds = 3\nclear_ratio = 0.5\n\n\
         [[webhook]]\nname = \"links\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n{}\
         kinds = [\"loss\"]\nretry_initial = \"50ms\"\nretry_max = \"500ms\"\n\n\
         [[webhook]]\nname = \"am\"\nurl = \"{}\"\nformat = \"alertmanager\"\nsecret = \"{SECRET}\"\n\
         retry_initial = \"50ms\"\nretry_max = \"500ms\"\n",
        state.display().to_string(),
        receiver.url("/json"),
        // A filter may name only peers the file has; without the peer the
        // webhook changes, which takes a restart: the running one keeps it.
        if peer.is_some() {
            "targets = [\"peer:b\"]\n"
        } else {
            ""
        },
        receiver.url("/am"),
    );
    if let Some(addr) = peer {
        text.push_str(&format!(
            "\n[[peer]]\nname = \"b\"\naddress = \"{}\"\nport = {}\n\
             interval = \"10ms\"\nclock = \"shared\"\ntags = [\"wan\"]\n",
            addr.ip(),
            addr.port()
        ));
    }
    std::fs::write(path, text).expect("write the config");
}

/// Waits for the JSON webhook's event number `index` (from 0).
fn nth_event(receiver: &Receiver, index: usize, what: &str, limit: Duration) -> Value {
    eventually(limit, what, || {
        let events = receiver.events();
        events
            .get(index)
            .cloned()
            .ok_or_else(|| format!("{} events so far: {events:#?}", events.len()))
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn f(doc: &Value, pointer: &str) -> f64 {
    doc.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {doc:#}"))
}

/// A GET of the sending daemon's API from `src`, which must answer JSON.
fn api(lab: &Lab, path: &str) -> Value {
    get_json(lab, "src", &format!("http://{WEB}{path}"), &[], None)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The sending daemon's /metrics.
fn metrics(lab: &Lab) -> String {
    let response = webclient::get(lab, "src", &format!("http://{WEB}/metrics"), &[], None)
        .expect("GET /metrics");
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// The exposition's `hopwatch_alert_firing` samples and the peer's alert count.
fn alert_series(text: &str) -> (Vec<&str>, Option<&str>) {
    let firing = text
        .lines()
        .filter(|l| l.starts_with("hopwatch_alert_firing{"))
        .collect();
    let count = text
        .lines()
        .find(|l| l.starts_with("hopwatch_peer_alerts_firing{peer=\"b\"}"));
    (firing, count)
}

/// What the browser saw of the firing alert.
#[derive(Debug)]
struct Seen {
    /// The peer page's alert list, as text.
    peer_page: String,
    /// The peer page's state badge's class.
    badge: String,
    /// The overview's chip: its link and text, and the summary strip's count.
    chip: Value,
    strip: String,
    /// The page the chip led to.
    followed_to: String,
    console: Vec<Value>,
}

/// The peer page and the overview with the peer's loss alert firing.
async fn browse(client: &fantoccini::Client) -> anyhow::Result<Seen> {
    let base = format!("http://{WEB}");
    client.set_window_size(1400, 1000).await?;
    client.goto(&format!("{base}/peers/b")).await?;
    let peer_page = wait_js(
        client,
        "the loss alert on the peer page",
        "const li = document.querySelector('#peer-alerts li[data-alert=loss]');\
         return li ? li.textContent : '';",
    )
    .await?
    .as_str()
    .unwrap_or_default()
    .to_owned();
    let badge = client
        .execute(
            "return document.querySelector('.state-badge').className;",
            vec![],
        )
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned();
    client.goto(&format!("{base}/")).await?;
    let chip = wait_js(
        client,
        "the peer's alert chip in the overview",
        "const a = document.querySelector('#peers tr[data-peer=b] a.alert-chip');\
         return a ? {href: a.getAttribute('href'), text: a.textContent, title: a.title} : null;",
    )
    .await?;
    let strip = wait_js(
        client,
        "the peer alerts in the summary strip",
        "const s = document.querySelector('#peer-alerts-stat'); return s ? s.textContent : '';",
    )
    .await?
    .as_str()
    .unwrap_or_default()
    .to_owned();
    click(client, "#peers tr[data-peer=b] a.alert-chip").await?;
    let followed_to = wait_js(
        client,
        "the peer page, from the chip",
        "return document.querySelector('#peer-alerts li') ? location.pathname : '';",
    )
    .await?
    .as_str()
    .unwrap_or_default()
    .to_owned();
    Ok(Seen {
        peer_page,
        badge,
        chip,
        strip,
        followed_to,
        console: console(client).await?,
    })
}

#[test]
fn one_way_peer_loss_raises_an_alert_naming_the_direction_and_clears() {
    let chromium = Chromium::find().unwrap_or_else(|e| panic!("{e}"));
    let lab: Lab = LabSpec::chain(1)
        .targets(1)
        .build()
        .expect("the lab builds (needs root: CAP_SYS_ADMIN, CAP_NET_ADMIN)");
    let dst: IpAddr = lab.interface("dst", "r1").expect("dst faces r1").v4.into();
    let src: IpAddr = lab.interface("src", "r1").expect("src faces r1").v4.into();
    let reflector_addr = SocketAddr::new(dst, 862);
    let dir = tempfile::Builder::new()
        .prefix("hopwatch-peer-alerts")
        .tempdir()
        .expect("temp dir");
    let reflector =
        Daemon::start_reflector(&lab, "dst", &hopwatch_bin(), dir.path(), dst, src, WEB)
            .expect("the reflecting daemon starts with its [reflector]");

    let receiver = Receiver::start(&lab);
    let config = dir.path().join("hopwatch.toml");
    let state = dir.path().join("state");
    write_config(&config, &state, &receiver, Some(reflector_addr));
    let mut daemon = Daemon::start(&lab, "src", &hopwatch_bin(), &config).expect("daemon starts");

    // A clean link first: the window fills (100 probes at 10 ms) and nothing fires.
    eventually(Duration::from_secs(20), "a full, clean peer window", || {
        let doc = get_json(
            &lab,
            "src",
            &format!("http://{WEB}/api/v1/peers/b"),
            &[],
            None,
        )
        .map_err(|e| e.to_string())?;
        if doc["state"] == "running" && f(&doc, "/window/probes") >= 100.0 {
            Ok(doc)
        } else {
            Err(doc.to_string())
        }
    })
    .expect("the peer's window fills");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        receiver.log.lock().unwrap().is_empty(),
        "a clean link raises nothing: {:#?}",
        receiver.log.lock().unwrap()
    );

    // Backward loss (r1 → src: the reflector's replies) raises loss on the peer.
    let loss = lab
        .loss(At::link("r1", "src"), BACKWARD_LOSS_PCT)
        .expect("backward loss");
    let raised = nth_event(
        &receiver,
        0,
        "the peer's loss raise",
        Duration::from_secs(20),
    );
    assert_eq!(raised["kind"], "loss", "{raised:#}");
    assert_eq!(raised["state"], "raised", "{raised:#}");
    assert_eq!(raised["target"]["name"], "peer:b", "{raised:#}");
    assert_eq!(raised["target"]["subject"], "peer", "{raised:#}");
    assert_eq!(raised["target"]["address"], dst.to_string(), "{raised:#}");
    assert_eq!(raised["target"]["tags"][0], "wan", "{raised:#}");
    let value = f(&raised, "/value");
    assert!(
        (10.0..60.0).contains(&value),
        "round-trip loss {value}% with {BACKWARD_LOSS_PCT}% injected backward: {raised:#}"
    );
    let summary = raised["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("on the backward path (peer → here)") && summary.contains("forward 0.0%"),
        "the summary names the lossy direction: {summary}"
    );
    assert_eq!(
        raised["localisation"]["direction"], "backward",
        "{raised:#}"
    );
    assert_eq!(f(&raised, "/localisation/forward_loss_pct"), 0.0);
    assert!(
        f(&raised, "/snapshot/window/lost_backward") > 0.0,
        "{raised:#}"
    );
    assert_eq!(
        f(&raised, "/snapshot/window/lost_forward"),
        0.0,
        "{raised:#}"
    );
    let alert_id = raised["alert_id"].as_str().expect("an alert id").to_owned();

    // Alertmanager hears of it with the peer's labels.
    let am = eventually(Duration::from_secs(10), "the Alertmanager raise", || {
        receiver
            .posts("/am")
            .into_iter()
            .next()
            .ok_or_else(|| "nothing yet".to_owned())
    })
    .expect("the Alertmanager webhook gets the raise");
    let labels = &am.body[0]["labels"];
    assert_eq!(labels["subject"], "peer", "{:#}", am.body);
    assert_eq!(labels["target"], "peer:b", "{:#}", am.body);
    assert_eq!(labels["alertname"], "hopwatch_loss", "{:#}", am.body);

    // The daemon shows it: stored before its webhooks got it, it is listed
    // now, with what the raise said.
    let peer = api(&lab, "/api/v1/peers/b");
    let alerts = peer["alerts"].as_array().expect("the peer's alerts");
    assert_eq!(alerts.len(), 1, "{peer:#}");
    let shown = &alerts[0];
    assert_eq!(shown["name"], "loss", "{shown:#}");
    assert_eq!(shown["id"], alert_id.as_str(), "{shown:#}");
    assert_eq!(shown["subject"], "peer", "{shown:#}");
    assert_eq!(shown["target"], "peer:b", "{shown:#}");
    assert_eq!(shown["since_ms"], raised["raised_at_ms"], "{shown:#}");
    assert_eq!(shown["summary"], raised["summary"], "{shown:#}");
    assert_eq!(f(shown, "/value"), value, "{shown:#}");
    assert_eq!(f(shown, "/threshold"), 10.0, "{shown:#}");
    assert_eq!(shown["unit"], "pct", "{shown:#}");
    assert_eq!(shown["localisation"]["direction"], "backward", "{shown:#}");
    let list = api(&lab, "/api/v1/peers");
    assert_eq!(list["peers"][0]["alerts"], peer["alerts"], "{list:#}");
    let all = api(&lab, "/api/v1/alerts");
    assert_eq!(all["alerts"], peer["alerts"], "{all:#}");
    let text = metrics(&lab);
    let (firing, count) = alert_series(&text);
    assert_eq!(
        firing,
        [r#"hopwatch_alert_firing{target="peer:b",subject="peer",alert="loss"} 1"#],
        "{text}"
    );
    assert_eq!(
        count,
        Some(r#"hopwatch_peer_alerts_firing{peer="b"} 1"#),
        "{text}"
    );

    // And so does the UI, on the peer page and in the overview.
    let driver = chromium
        .start_driver(&lab, "src", DRIVER_PORT)
        .unwrap_or_else(|e| panic!("{e}"));
    let seen = driver
        .session(&dir.path().join("chromium-profile"), async |client| {
            browse(client).await
        })
        .unwrap_or_else(|e: anyhow::Error| panic!("browser check failed: {e:#}"));
    drop(driver);
    assert!(
        seen.peer_page.contains("loss") && seen.peer_page.contains("on the backward path"),
        "{seen:#?}"
    );
    assert!(seen.badge.contains("s-bad"), "{seen:#?}");
    assert_eq!(seen.chip["href"], "/peers/b", "{seen:#?}");
    assert_eq!(seen.chip["text"], "loss", "{seen:#?}");
    assert!(seen.strip.contains("1peer alert"), "{seen:#?}");
    assert_eq!(seen.followed_to, "/peers/b", "{seen:#?}");
    let errors: Vec<&Value> = seen
        .console
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // The loss is gone: the same alert clears, once, as recovered.
    drop(loss);
    let cleared = nth_event(
        &receiver,
        1,
        "the peer's loss clear",
        Duration::from_secs(20),
    );
    assert_eq!(cleared["state"], "cleared", "{cleared:#}");
    assert_eq!(cleared["alert_id"], alert_id.as_str(), "{cleared:#}");
    assert_eq!(cleared["reason"], "recovered", "{cleared:#}");
    assert_eq!(cleared["target"]["subject"], "peer", "{cleared:#}");
    // Cleared in the outbox before its webhooks heard of it: shown nowhere now.
    let peer = api(&lab, "/api/v1/peers/b");
    assert_eq!(peer["alerts"], serde_json::json!([]), "{peer:#}");
    let all = api(&lab, "/api/v1/alerts");
    assert_eq!(all["alerts"], serde_json::json!([]), "{all:#}");
    let text = metrics(&lab);
    let (firing, count) = alert_series(&text);
    assert!(firing.is_empty(), "{text}");
    assert_eq!(
        count,
        Some(r#"hopwatch_peer_alerts_firing{peer="b"} 0"#),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        receiver.events().len(),
        2,
        "one raise and one clear: {:#?}",
        receiver.events()
    );

    // Loss again, then a reload takes the peer away while its alert fires.
    let loss = lab
        .loss(At::link("r1", "src"), BACKWARD_LOSS_PCT)
        .expect("backward loss again");
    let again = nth_event(&receiver, 2, "the second raise", Duration::from_secs(20));
    assert_eq!(again["state"], "raised", "{again:#}");
    assert_ne!(again["alert_id"], alert_id.as_str(), "a new alert");
    write_config(&config, &state, &receiver, None);
    daemon
        .wait_for_log("peers reloaded", Duration::from_secs(15))
        .expect("the daemon reloads the peers");
    let removed = nth_event(
        &receiver,
        3,
        "the clear of the removed peer",
        Duration::from_secs(10),
    );
    assert_eq!(removed["state"], "cleared", "{removed:#}");
    assert_eq!(removed["alert_id"], again["alert_id"], "{removed:#}");
    assert_eq!(removed["reason"], "peer_removed", "{removed:#}");
    drop(loss);

    let posts = receiver.log.lock().unwrap().clone();
    assert!(
        posts.iter().all(|p| p.signature_ok),
        "every delivery is signed with the secret: {posts:#?}"
    );
    let status = daemon.stop().expect("the daemon stops");
    assert!(status.success(), "exit status {status}");
    let status = reflector.stop().expect("the reflecting daemon stops");
    assert!(status.success(), "exit status {status}");
}

//! Peer alerts end to end: `hopwatch run` in `src` measures a `[[peer]]` to
//! the `[reflector]` of another `hopwatch run` in `dst`, across the lab's
//! router, and posts its alerts to a real webhook receiver on `src`'s own
//! loopback (a JSON webhook filtered to the peer, and an Alertmanager one).
//! Loss injected on the backward direction only (r1 → src) must raise one
//! peer loss alert that names that direction, clear once the loss is gone,
//! and a raised alert must clear with `peer_removed` when a reload takes the
//! peer out of the config. Privileged (namespaces, iptables); fails, never
//! skips, without root.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use hopwatch::alerts::{sign, Secret, SIGNATURE_HEADER};
use hopwatch_lab::daemon::Daemon;
use hopwatch_lab::webclient::{eventually, get_json};
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

#[test]
fn one_way_peer_loss_raises_an_alert_naming_the_direction_and_clears() {
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
    let reflector_config = dir.path().join("reflector.toml");
    std::fs::write(
        &reflector_config,
        format!(
            "[service]\nstate_dir = {:?}\n\n[web]\nlisten = \"{WEB}\"\n\n\
             [reflector]\nlisten = [\"{dst}\"]\nallow = [\"{src}/32\"]\n",
            dir.path().join("reflector-state").display().to_string()
        ),
    )
    .expect("write the reflector's config");
    let mut reflector = Daemon::start(&lab, "dst", &hopwatch_bin(), &reflector_config)
        .expect("the reflecting daemon starts");
    reflector
        .wait_for_log("STAMP reflector started", Duration::from_secs(5))
        .expect("the [reflector] runs");

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

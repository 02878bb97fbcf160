//! Alerts end to end: the monitor runs in the lab's source namespace, real
//! impairments (loss, delay, route changes, ICMP rate limiting, a target that
//! drops echo requests) drive the alert rules, and webhooks go to a real HTTP
//! receiver this test runs on 127.0.0.1 of that same namespace. Privileged;
//! these fail (never skip) without root.
//!
//! The test list, and where each one is:
//! - raise and clear on injected loss and latency:
//!   `loss_and_latency_raise_and_clear_once_with_where_they_begin`;
//! - a route change: `a_route_change_raises_with_before_and_after`;
//! - no alert from intermediate-hop ICMP rate limiting, none for an
//!   ICMP-blocking target: `rate_limiting_routers_and_targets_that_block_icmp_raise_nothing`;
//! - a receiver that returns 500 and then recovers (delivery health in the
//!   HTTP API, order per target): `a_receiver_that_fails_then_recovers_...`;
//! - a receiver down across a service restart:
//!   `a_receiver_down_across_a_restart_gets_everything_afterwards`;
//! - the signature verifies: `assert_signed`, on every accepted event above;
//! - duplicates carry the same id: `a_receiver_too_slow_to_answer_gets_a_duplicate_with_the_same_id`
//!   (and every refused attempt in the 500 test);
//! - alerts of targets removed from the config end:
//!   `alerts_of_removed_targets_clear_with_a_reason_on_reload_and_restart`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use hopwatch::alerts::AlertKind;
use hopwatch::config::Config;
use hopwatch::model::TargetId;
use hopwatch::monitor::Monitor;
use hopwatch::webapi::{AlertSource, Web};
use hopwatch_lab::{At, DelaySpec, Lab, LabSpec, PathSelect};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "lab-secret";

/// One request the receiver got.
#[derive(Clone)]
struct Request {
    body: Vec<u8>,
    event: Value,
    idempotency_key: String,
    signature: Option<String>,
    /// What the receiver answered.
    status: u16,
}

/// What a failed assertion shows of a request: not its (long) body.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {} (HTTP {})",
            self.target(),
            self.kind(),
            self.state(),
            self.id(),
            self.status
        )
    }
}

impl Request {
    fn kind(&self) -> &str {
        self.event["kind"].as_str().unwrap_or("")
    }
    fn state(&self) -> &str {
        self.event["state"].as_str().unwrap_or("")
    }
    fn target(&self) -> &str {
        self.event["target"]["name"].as_str().unwrap_or("")
    }
    fn id(&self) -> &str {
        self.event["id"].as_str().unwrap_or("")
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<Request>,
    /// Answer 500 while set.
    failing: bool,
    /// Hold the answer to this many of the next requests for `slow_by`
    /// (longer than hopwatch's timeout: it gives up, though the receiver
    /// got the event).
    slow_next: usize,
    slow_by: Duration,
}

/// A webhook receiver: axum on 127.0.0.1 of the namespace it is started in.
struct Receiver {
    log: Arc<Mutex<Log>>,
    port: u16,
    server: Option<tokio::task::JoinHandle<()>>,
}

async fn receive(
    State(log): State<Arc<Mutex<Log>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let (status, slow) = {
        let mut log = log.lock().unwrap();
        let status = if log.failing {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        let slow = (log.slow_next > 0).then(|| {
            log.slow_next -= 1;
            log.slow_by
        });
        log.requests.push(Request {
            event: serde_json::from_slice(&body).expect("the body is JSON"),
            body: body.to_vec(),
            idempotency_key: headers
                .get("idempotency-key")
                .expect("an Idempotency-Key header")
                .to_str()
                .unwrap()
                .to_owned(),
            signature: headers
                .get("x-hopwatch-signature")
                .map(|v| v.to_str().unwrap().to_owned()),
            status: status.as_u16(),
        });
        (status, slow)
    };
    if let Some(slow) = slow {
        tokio::time::sleep(slow).await;
    }
    status
}

impl Receiver {
    /// A port that nothing listens on yet (the receiver starts "down").
    fn unstarted() -> Receiver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        Receiver {
            log: Arc::default(),
            port,
            server: None,
        }
    }

    /// A receiver listening at once. It binds port 0 itself: a port picked
    /// free and bound again later can be taken in between (the daemon's own
    /// outgoing connections draw from the same ephemeral range).
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("receiver binds on loopback");
        let mut receiver = Receiver {
            log: Arc::default(),
            port: listener.local_addr().expect("a bound address").port(),
            server: None,
        };
        receiver.serve(listener);
        receiver
    }

    async fn listen(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("receiver binds on loopback");
        self.serve(listener);
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&self.log));
        self.server = Some(tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver runs");
        }));
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn set_failing(&self, failing: bool) {
        self.log.lock().unwrap().failing = failing;
    }

    /// Holds the answer to the next `count` requests for `by`.
    fn set_slow(&self, count: usize, by: Duration) {
        let mut log = self.log.lock().unwrap();
        log.slow_next = count;
        log.slow_by = by;
    }

    fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().requests.clone()
    }

    /// Accepted (2xx) events, in arrival order.
    fn accepted(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Runs `body` on a current-thread runtime inside the lab's source namespace,
/// where monitors and receivers share loopback.
fn in_src<T, F, Fut>(lab: &Lab, body: F) -> T
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
{
    lab.run_in("src", move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(body())
    })
    .expect("running inside the source namespace")
}

async fn start_monitor(config: &str) -> Monitor {
    let config = Config::parse(config, "alerts-test.toml").expect("valid test config");
    Monitor::start(config)
        .await
        .expect("monitor starts (needs root)")
}

/// The daemon's web server (UI, API, /metrics) over `monitor`, on a free
/// loopback port of the namespace.
async fn start_web(monitor: &Arc<Monitor>, config: &str) -> Web {
    let mut config = Config::parse(config, "alerts-test.toml").expect("valid test config");
    config.web.listen = "127.0.0.1:0".parse().unwrap();
    let alerts = Arc::clone(monitor.alerts()) as Arc<dyn AlertSource>;
    Web::start(monitor, &config, None, alerts, None)
        .await
        .expect("web server starts")
}

/// `GET http://<addr><path>`: the status and the body text. A blocking
/// client on the runtime's blocking pool, whose threads share this thread's
/// network namespace.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut response = agent.get(&url).call().expect("the API answers");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("a text body");
        (status, body)
    })
    .await
    .expect("the request task")
}

/// `GET /api/v1/webhooks`: the raw body and the one webhook, `lab`.
async fn webhook_health(addr: SocketAddr) -> (String, Value) {
    let (status, body) = http_get(addr, "/api/v1/webhooks").await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("JSON");
    let hooks = doc["webhooks"].as_array().expect("a webhooks list");
    assert_eq!(hooks.len(), 1, "{doc}");
    assert_eq!(hooks[0]["name"], "lab");
    (body, hooks[0].clone())
}

/// Takes the monitor back from the web layer (which holds it weakly; a
/// request in progress may hold it a moment longer) and shuts it down.
async fn shutdown(web: Web, monitor: Arc<Monitor>) {
    web.shutdown(Duration::from_secs(2)).await;
    let mut monitor = monitor;
    let start = Instant::now();
    loop {
        match Arc::try_unwrap(monitor) {
            Ok(owned) => return owned.shutdown().await,
            Err(shared) => {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "the monitor is still shared"
                );
                monitor = shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// 100 ms rounds, a window of `window` probes, alerts that raise after 3 rounds
/// and clear after 5, and one signed webhook with short retries.
fn config(
    state_dir: &Path,
    url: &str,
    window: u32,
    targets: &[(&str, IpAddr)],
    alerts: &str,
) -> String {
    config_for(state_dir, url, window, targets, alerts, "")
}

/// [`config`] with alert overrides on every target: `overrides` is the body of
/// an inline table, e.g. `unreachable_rounds = 0`.
fn config_for(
    state_dir: &Path,
    url: &str,
    window: u32,
    targets: &[(&str, IpAddr)],
    alerts: &str,
    overrides: &str,
) -> String {
    let mut text = format!(
        "[service]\nstate_dir = {state:?}\ntimestamps = \"ebpf\"\n\n\
         [statistics]\nwindow = {window}\n\n\
         [alerts]\nloss_pct = 20\nlatency_ms = 25\nunreachable_rounds = 10\n\
         raise_rounds = 3\nclear_rounds = 5\nclear_ratio = 0.5\n{alerts}\n\
         [defaults]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nmax_hops = 12\n",
        state = state_dir.display().to_string()
    );
    for (name, ip) in targets {
        text.push_str(&format!(
            "\n[[target]]\nname = \"{name}\"\nhost = \"{ip}\"\n"
        ));
        if !overrides.is_empty() {
            text.push_str(&format!("alerts = {{ {overrides} }}\n"));
        }
    }
    text.push_str(&format!(
        "\n[[webhook]]\nname = \"lab\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
         timeout = \"1s\"\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\n"
    ));
    text
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`.
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rounds_at_least(monitor: &Monitor, target: &str, n: u64) {
    let id = TargetId::new(target).unwrap();
    eventually(Duration::from_secs(15), "rounds", || {
        let rounds = monitor.live().target(&id)?.analysis.rounds;
        (rounds >= n).then_some(())
    })
    .await;
}

/// The accepted event of `kind` in `state`, once it arrives.
async fn accepted_event(receiver: &Receiver, kind: &str, state: &str, limit: Duration) -> Request {
    eventually(limit, &format!("a {kind} {state} webhook"), || {
        receiver
            .accepted()
            .into_iter()
            .find(|r| r.kind() == kind && r.state() == state)
    })
    .await
}

/// Our own HMAC-SHA256 of the body, as a receiver would check it.
fn assert_signed(request: &Request) {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&request.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        request.signature.as_deref(),
        Some(expected.as_str()),
        "signature of event {}",
        request.id()
    );
    assert_eq!(
        request.idempotency_key,
        request.id(),
        "header and body id agree"
    );
}

fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(name)
        .tempdir()
        .expect("temp dir")
}

#[test]
fn loss_and_latency_raise_and_clear_once_with_where_they_begin() {
    let lab = &LabSpec::chain(3).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let r2 = lab.expected_trace(target)[1].expect("r2 answers");
    let r3 = lab.expected_trace(target)[2].expect("r3 answers");
    let state = temp_dir("alerts-loss");
    in_src(lab, || async move {
        let receiver = Receiver::start().await;
        let monitor = start_monitor(&config(
            state.path(),
            &receiver.url(),
            40,
            &[("t", target)],
            "",
        ))
        .await;
        // A window of 40 so that where the loss starts is clear-cut.
        rounds_at_least(&monitor, "t", 45).await;
        assert!(
            receiver.requests().is_empty(),
            "a clean path raises nothing"
        );

        let loss = lab.loss(At::link("r1", "r2"), 40.0).expect("loss");
        let raised = accepted_event(&receiver, "loss", "raised", Duration::from_secs(15)).await;
        assert_signed(&raised);
        assert_eq!(raised.target(), "t");
        assert_eq!(raised.event["schema"], "hopwatch.alert.v1");
        let localisation = &raised.event["localisation"];
        assert_eq!(
            localisation["ttl"], 2,
            "loss on r1 -> r2 starts at hop 2: {localisation}"
        );
        assert_eq!(localisation["responder"], r2.to_string());
        assert!(raised.event["value"].as_f64().unwrap() >= 20.0);
        assert!(
            raised.event["snapshot"]["hops"]
                .as_array()
                .is_some_and(|h| h.len() >= 3),
            "the per-hop snapshot rides along"
        );
        drop(loss);
        let cleared = accepted_event(&receiver, "loss", "cleared", Duration::from_secs(15)).await;
        assert_signed(&cleared);
        assert_eq!(cleared.event["alert_id"], raised.event["alert_id"]);
        assert_ne!(cleared.id(), raised.id());
        assert_eq!(cleared.event["reason"], "recovered");
        assert_eq!(raised.event["reason"], Value::Null);

        let delay = lab
            .delay(
                At::link("r2", "r3"),
                DelaySpec::fixed(Duration::from_millis(40)),
            )
            .expect("delay");
        let slow = accepted_event(&receiver, "latency", "raised", Duration::from_secs(15)).await;
        assert_signed(&slow);
        assert!(
            slow.event["value"].as_f64().unwrap() >= 25.0,
            "{}",
            slow.event["summary"]
        );
        drop(delay);
        let fast = accepted_event(&receiver, "latency", "cleared", Duration::from_secs(15)).await;
        assert_eq!(fast.event["alert_id"], slow.event["alert_id"]);
        // The latency localisation needs a clean baseline first; when present it
        // points behind the delayed link.
        if let Some(ttl) = slow.event["localisation"]["ttl"].as_u64() {
            assert_eq!(ttl, 3, "{}", slow.event["localisation"]);
            assert_eq!(slow.event["localisation"]["responder"], r3.to_string());
        }
        // Settle, then: one raise and one clear per alert, nothing else.
        tokio::time::sleep(Duration::from_millis(800)).await;
        // An update may only ever move the answer to the right hop (a latency
        // raise made before the baseline settled gains its localisation).
        for update in receiver
            .accepted()
            .iter()
            .filter(|r| r.state() == "updated")
        {
            let want = if update.kind() == "loss" { 2 } else { 3 };
            assert_eq!(
                update.event["localisation"]["ttl"], want,
                "{}",
                update.event["summary"]
            );
        }
        let seen: Vec<(String, String)> = receiver
            .accepted()
            .iter()
            .filter(|r| r.state() != "updated")
            .map(|r| (r.kind().to_owned(), r.state().to_owned()))
            .collect();
        let pair = |k: &str, s: &str| (k.to_owned(), s.to_owned());
        assert_eq!(
            seen,
            vec![
                pair("loss", "raised"),
                pair("loss", "cleared"),
                pair("latency", "raised"),
                pair("latency", "cleared")
            ],
            "no flapping and no other alert"
        );
        assert!(monitor.alerts().active().is_empty());
        // Both are in the incident history, newest first, closed, with where
        // they started and how bad they got.
        let history = monitor.alerts().incidents(0, u64::MAX, Some("t"));
        let kinds: Vec<&str> = history.iter().map(|i| i.kind.as_str()).collect();
        assert_eq!(kinds, ["latency", "loss"], "{history:?}");
        let loss_incident = &history[1];
        assert_eq!(loss_incident.alert_id, raised.event["alert_id"]);
        assert!(loss_incident.cleared_at_ms.is_some());
        assert!(loss_incident.peak_value.unwrap() >= 20.0);
        assert_eq!(loss_incident.localisation.as_ref().unwrap()["ttl"], 2);
        monitor.shutdown().await;
    });
}

#[test]
fn a_route_change_raises_with_before_and_after() {
    let lab = &LabSpec::chain(2).parallel(1, &[1, 2]).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let before = lab.expected_trace(target);
    let state = temp_dir("alerts-route");
    in_src(lab, || async move {
        let receiver = Receiver::start().await;
        let monitor = start_monitor(&config(
            state.path(),
            &receiver.url(),
            10,
            &[("t", target)],
            "",
        ))
        .await;
        rounds_at_least(&monitor, "t", 5).await;
        let _path = lab.set_path(PathSelect::Branch(1)).expect("route change");
        let after = lab.expected_trace(target);
        let route =
            accepted_event(&receiver, "route_change", "raised", Duration::from_secs(10)).await;
        assert_signed(&route);
        let change = &route.event["path_change"];
        let addrs = |v: &Value| -> Vec<Option<IpAddr>> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().map(|s| s.parse().unwrap()))
                .collect()
        };
        assert_eq!(addrs(&change["before"]), before, "{change}");
        assert_eq!(addrs(&change["after"]), after, "{change}");
        let hops = accepted_event(
            &receiver,
            "hop_count_change",
            "raised",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(hops.event["path_change"]["before"], before.len());
        assert_eq!(hops.event["path_change"]["after"], after.len());
        // The new path holds: both clear, once.
        accepted_event(
            &receiver,
            "route_change",
            "cleared",
            Duration::from_secs(10),
        )
        .await;
        accepted_event(
            &receiver,
            "hop_count_change",
            "cleared",
            Duration::from_secs(10),
        )
        .await;
        let raises = receiver
            .accepted()
            .iter()
            .filter(|r| r.kind() == "route_change" && r.state() == "raised")
            .count();
        assert_eq!(raises, 1);
        monitor.shutdown().await;
    });
}

#[test]
fn rate_limiting_routers_and_targets_that_block_icmp_raise_nothing() {
    let lab = &LabSpec::chain(3).targets(2).build().expect("lab");
    let (open, blocked) = (
        IpAddr::V4(lab.targets_v4()[0]),
        IpAddr::V4(lab.targets_v4()[1]),
    );
    let _limit = lab.icmp_rate_limit("r2", 2, 1).expect("rate limit r2");
    // The second target drops every echo request: it never answers at all.
    let status = lab
        .command("dst", "iptables")
        .expect("command in dst")
        .args(["-A", "INPUT", "-d", &blocked.to_string(), "-p", "icmp"])
        .args(["--icmp-type", "echo-request", "-j", "DROP"])
        .status()
        .expect("iptables runs");
    assert!(status.success(), "blocking echo requests at the target");
    let state = temp_dir("alerts-quiet");
    in_src(lab, || async move {
        let receiver = Receiver::start().await;
        let cfg = config(
            state.path(),
            &receiver.url(),
            10,
            &[("open", open), ("blocked", blocked)],
            "mos_below = 3.5\njitter_ms = 30\n",
        );
        let monitor = start_monitor(&cfg).await;
        rounds_at_least(&monitor, "open", 60).await;
        rounds_at_least(&monitor, "blocked", 60).await;
        let view = |name: &str| {
            monitor
                .live()
                .target(&TargetId::new(name).unwrap())
                .unwrap()
        };
        let open_view = view("open");
        let hop2 = open_view
            .analysis
            .hops
            .iter()
            .find(|h| h.ttl == 2)
            .expect("hop 2");
        assert!(
            hop2.rate_limited,
            "r2's ICMP errors are rate limited (the impairment works)"
        );
        let blocked_view = view("blocked");
        assert_eq!(
            blocked_view.analysis.destination.since_start.received, 0,
            "never answered"
        );
        assert!(blocked_view.analysis.destination.since_start.sent >= 60);
        assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());
        assert!(monitor.alerts().active().is_empty());
        assert_eq!(monitor.alerts().counters().pending, 0);
        monitor.shutdown().await;
    });
}

#[test]
fn a_receiver_that_fails_then_recovers_gets_every_event_in_order_with_stable_ids() {
    let lab = &LabSpec::chain(2).targets(2).build().expect("lab");
    let (t1, t2) = (
        IpAddr::V4(lab.targets_v4()[0]),
        IpAddr::V4(lab.targets_v4()[1]),
    );
    let state = temp_dir("alerts-500");
    in_src(lab, || async move {
        let receiver = Receiver::start().await;
        receiver.set_failing(true);
        // Random loss must hold the alerts raised until the test lifts it:
        // 50% over 20 probes never looks like the 10% that clears, and only
        // the loss rule runs (a run of ten lost probes is not "unreachable" here).
        let cfg = config_for(
            state.path(),
            &receiver.url(),
            20,
            &[("t1", t1), ("t2", t2)],
            "",
            "unreachable_rounds = 0",
        );
        let monitor = Arc::new(start_monitor(&cfg).await);
        let web = start_web(&monitor, &cfg).await;
        let api = web.local_addr();
        rounds_at_least(&monitor, "t1", 25).await;
        rounds_at_least(&monitor, "t2", 25).await;
        let (_, health) = webhook_health(api).await;
        assert_eq!(health["failing"], false, "nothing sent yet: {health}");
        assert_eq!(health["failed_attempts"], 0);

        // Loss behind r1 raises on both targets; the receiver refuses them.
        let loss = lab.loss(At::link("r1", "r2"), 50.0).expect("loss");
        eventually(
            Duration::from_secs(15),
            "loss raised on both targets",
            || {
                let active = monitor.alerts().active();
                (active.iter().filter(|a| a.kind == AlertKind::Loss).count() == 2).then_some(())
            },
        )
        .await;
        eventually(Duration::from_secs(15), "refused attempts", || {
            (receiver.requests().len() >= 4).then_some(())
        })
        .await;
        // Both raises are queued (committed, flushed, handed to their lanes).
        eventually(Duration::from_secs(10), "both raises queued", || {
            (monitor.alerts().counters().pending >= 2).then_some(())
        })
        .await;
        // The failures are visible in the API, without the URL's path or the secret.
        let (body, health) = webhook_health(api).await;
        assert_eq!(health["failing"], true, "{health}");
        // Four requests were refused; the last may still be on its way back.
        let failed = health["failed_attempts"].as_u64().unwrap();
        assert!(failed >= 3, "{health}");
        assert_eq!(health["consecutive_failures"], failed, "no success yet");
        assert_eq!(health["last_error"], "the receiver answered HTTP 500");
        assert!(health["last_error_at_ms"].as_u64().is_some(), "{health}");
        assert_eq!(health["last_success_at_ms"], Value::Null);
        assert!(health["pending"].as_u64().unwrap() >= 2, "{health}");
        assert_eq!(health["delivered"], 0);
        assert!(health["next_retry_at_ms"].as_u64().is_some(), "{health}");
        assert!(
            !health["retrying_targets"].as_array().unwrap().is_empty(),
            "{health}"
        );
        assert_eq!(health["signed"], true);
        assert_eq!(health["format"], "json");
        assert_eq!(
            health["url"],
            format!("http://127.0.0.1:{}/…", receiver.port)
        );
        assert!(!body.contains(SECRET) && !body.contains("/hook"), "{body}");
        // ... and counted in /metrics.
        let (status, metrics) = http_get(api, "/metrics").await;
        assert_eq!(status, 200);
        let failures = metrics
            .lines()
            .find(|l| l.starts_with("hopwatch_webhook_delivery_failures"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("a webhook failure counter in {metrics}"));
        assert!(failures >= failed as f64, "{failures} < {failed}");

        drop(loss);
        // ...and the clears happen meanwhile; everything waits, in order.
        eventually(Duration::from_secs(15), "the clears to be queued", || {
            let pending = monitor.alerts().counters().pending;
            (pending >= 4).then_some(())
        })
        .await;
        receiver.set_failing(false);
        eventually(Duration::from_secs(10), "both clears", || {
            let accepted = receiver.accepted();
            let cleared = accepted.iter().filter(|r| r.state() == "cleared").count();
            (cleared >= 2).then_some(())
        })
        .await;
        let accepted = receiver.accepted();
        let mut ids: Vec<&str> = accepted.iter().map(Request::id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), accepted.len(), "each event once");
        for target in ["t1", "t2"] {
            let mine: Vec<&Request> = accepted.iter().filter(|r| r.target() == target).collect();
            // A raise placed before the loss settled may be updated (only
            // ever to hop 2, r2, where the loss starts) before it clears.
            for update in mine.iter().filter(|r| r.state() == "updated") {
                assert_eq!(
                    update.event["localisation"]["ttl"], 2,
                    "{}",
                    update.event["summary"]
                );
            }
            let states: Vec<(&str, &str)> = mine
                .iter()
                .filter(|r| r.state() != "updated")
                .map(|r| (r.kind(), r.state()))
                .collect();
            assert_eq!(
                states,
                vec![("loss", "raised"), ("loss", "cleared")],
                "in order for {target}"
            );
            let seqs: Vec<u64> = mine
                .iter()
                .filter_map(|r| r.event["seq"].as_u64())
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
            let (first, last) = (mine[0], mine[mine.len() - 1]);
            assert_eq!(last.event["reason"], "recovered");
            assert!(mine
                .iter()
                .all(|r| r.event["alert_id"] == first.event["alert_id"]));
        }
        // Every refused attempt was a raise sent again under the same id,
        // with the same bytes and a valid signature.
        let requests = receiver.requests();
        let refused: Vec<&Request> = requests.iter().filter(|r| r.status == 500).collect();
        assert!(refused.len() >= 4);
        for r in &refused {
            let same = accepted
                .iter()
                .find(|a| a.id() == r.id())
                .unwrap_or_else(|| panic!("refused {} was never accepted", r.id()));
            assert_ne!(r.state(), "cleared", "a clear never overtakes its raise");
            assert_eq!(r.body, same.body, "a retry sends the same bytes");
            assert_signed(r);
        }
        let counters = monitor.alerts().counters();
        assert_eq!(counters.pending, 0);
        assert_eq!(counters.delivered, accepted.len() as u64);
        // Recovery shows in the API too.
        let (_, health) = webhook_health(api).await;
        assert_eq!(health["failing"], false, "{health}");
        assert_eq!(health["consecutive_failures"], 0);
        assert_eq!(health["pending"], 0);
        assert_eq!(health["delivered"], accepted.len() as u64);
        assert_eq!(health["next_retry_at_ms"], Value::Null);
        assert_eq!(health["retrying_targets"], serde_json::json!([]));
        assert!(
            health["last_success_at_ms"].as_u64() >= health["last_error_at_ms"].as_u64(),
            "{health}"
        );
        shutdown(web, monitor).await;
    });
}

#[test]
fn a_receiver_too_slow_to_answer_gets_a_duplicate_with_the_same_id() {
    let lab = &LabSpec::chain(2).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let state = temp_dir("alerts-dup");
    in_src(lab, || async move {
        let receiver = Receiver::start().await;
        // The receiver takes the first event but answers after hopwatch's
        // 1 s timeout: hopwatch cannot know it arrived, so it sends it again.
        receiver.set_slow(1, Duration::from_millis(1_500));
        let monitor = start_monitor(&config_for(
            state.path(),
            &receiver.url(),
            20,
            &[("t", target)],
            "",
            "unreachable_rounds = 0",
        ))
        .await;
        rounds_at_least(&monitor, "t", 25).await;
        let _loss = lab.loss(At::link("r1", "r2"), 50.0).expect("loss");
        let raises = || -> Vec<Request> {
            receiver
                .requests()
                .into_iter()
                .filter(|r| r.state() == "raised")
                .collect()
        };
        eventually(Duration::from_secs(15), "the raise twice", || {
            (raises().len() >= 2).then_some(())
        })
        .await;
        let requests = raises();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert_eq!(requests[0].kind(), "loss");
        assert_eq!(
            requests[0].id(),
            requests[1].id(),
            "a duplicate carries the same id"
        );
        assert_eq!(requests[0].idempotency_key, requests[1].idempotency_key);
        assert_eq!(requests[0].body, requests[1].body, "byte for byte");
        for r in &requests {
            assert_signed(r);
        }
        let status = &monitor.alerts().delivery_status()[0];
        assert_eq!(
            status.last_error.as_deref(),
            Some("timed out"),
            "{status:?}"
        );
        assert_eq!(status.failed_attempts, 1);
        // The duplicate counts as the raise's delivery. Later events (an
        // update when the localisation moves on a loaded machine) may follow:
        // what matters is that the raise itself came exactly twice.
        eventually(
            Duration::from_secs(10),
            "the delivery to be recorded",
            || {
                let counters = monitor.alerts().counters();
                (counters.delivered >= 1 && counters.pending == 0).then_some(())
            },
        )
        .await;
        let states: Vec<String> = receiver
            .requests()
            .iter()
            .map(|r| r.state().to_string())
            .collect();
        assert_eq!(
            raises().len(),
            2,
            "the raise and its duplicate, no third copy: {states:?}"
        );
        monitor.shutdown().await;
    });
}

#[test]
fn alerts_of_removed_targets_clear_with_a_reason_on_reload_and_restart() {
    let lab = &LabSpec::chain(2).targets(3).build().expect("lab");
    let ip = |i: usize| IpAddr::V4(lab.targets_v4()[i]);
    let (t, u, v) = (ip(0), ip(1), ip(2));
    let state = temp_dir("alerts-removed");
    in_src(lab, || async move {
        let receiver = Receiver::start().await;
        // As in the 500 test: loss that holds, and only the loss rule.
        let cfg = |targets: &[(&str, IpAddr)]| {
            config_for(
                state.path(),
                &receiver.url(),
                20,
                targets,
                "",
                "unreachable_rounds = 0",
            )
        };
        let first = start_monitor(&cfg(&[("t", t), ("u", u), ("v", v)])).await;
        for name in ["t", "u", "v"] {
            rounds_at_least(&first, name, 25).await;
        }
        let loss = lab.loss(At::link("r1", "r2"), 50.0).expect("loss");
        let raised = |receiver: &Receiver, name: &str| {
            receiver
                .accepted()
                .into_iter()
                .any(|r| r.target() == name && r.kind() == "loss" && r.state() == "raised")
        };
        eventually(Duration::from_secs(15), "loss raised on all three", || {
            ["t", "u", "v"]
                .iter()
                .all(|n| raised(&receiver, n))
                .then_some(())
        })
        .await;
        let cleared = |name: &str| {
            receiver
                .accepted()
                .into_iter()
                .find(|r| r.target() == name && r.state() == "cleared")
        };

        // A reload drops u: its alert ends now, saying why, though the loss goes on.
        first.reload(
            Config::parse(&cfg(&[("t", t), ("v", v)]), "alerts-test.toml").expect("config"),
        );
        let u_clear = eventually(Duration::from_secs(5), "u's clear", || cleared("u")).await;
        assert_eq!(u_clear.event["reason"], "target_removed");
        assert_eq!(u_clear.kind(), "loss");
        assert_signed(&u_clear);
        let u_raise = receiver
            .accepted()
            .into_iter()
            .find(|r| r.target() == "u" && r.state() == "raised")
            .unwrap();
        assert_eq!(u_clear.event["alert_id"], u_raise.event["alert_id"]);
        assert_eq!(u_clear.event["target"]["host"], u.to_string());
        let mut active: Vec<String> = first
            .alerts()
            .active()
            .iter()
            .map(|a| a.target.to_string())
            .collect();
        active.sort();
        assert_eq!(active, vec!["t", "v"], "the others still fire");
        first.shutdown().await;

        // v is removed while the service is stopped: cleared at the next start.
        let second = start_monitor(&cfg(&[("t", t)])).await;
        let v_clear = eventually(Duration::from_secs(5), "v's clear", || cleared("v")).await;
        assert_eq!(v_clear.event["reason"], "target_removed");
        let active: Vec<String> = second
            .alerts()
            .active()
            .iter()
            .map(|a| a.target.to_string())
            .collect();
        assert_eq!(active, vec!["t"], "t's alert was restored");
        assert!(cleared("t").is_none(), "t still has loss");

        // t recovers the usual way.
        drop(loss);
        let t_clear = eventually(Duration::from_secs(15), "t's clear", || cleared("t")).await;
        assert_eq!(t_clear.event["reason"], "recovered");
        // One raise and one clear per target, each in order.
        for name in ["t", "u", "v"] {
            let states: Vec<String> = receiver
                .accepted()
                .iter()
                .filter(|r| r.target() == name)
                .map(|r| r.state().to_owned())
                .collect();
            assert_eq!(states, vec!["raised", "cleared"], "{name}");
        }
        assert!(second.alerts().active().is_empty());
        second.shutdown().await;
    });
}

#[test]
fn a_receiver_down_across_a_restart_gets_everything_afterwards() {
    let lab = &LabSpec::chain(2).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let state = temp_dir("alerts-restart");
    in_src(lab, || async move {
        let mut receiver = Receiver::unstarted();
        let cfg = config(state.path(), &receiver.url(), 10, &[("t", target)], "");
        let first = start_monitor(&cfg).await;
        rounds_at_least(&first, "t", 15).await;
        let loss = lab.loss(At::link("r1", "r2"), 40.0).expect("loss");
        eventually(Duration::from_secs(15), "a raised loss alert", || {
            let active = first.alerts().active();
            active
                .iter()
                .any(|a| a.kind == AlertKind::Loss)
                .then_some(())
        })
        .await;
        eventually(Duration::from_secs(5), "failed deliveries", || {
            let status = &first.alerts().delivery_status()[0];
            (status.failed_attempts >= 2 && status.pending >= 1).then_some(())
        })
        .await;
        let error = first.alerts().delivery_status()[0]
            .last_error
            .clone()
            .unwrap();
        assert!(error.starts_with("request failed"), "{error}");
        first.shutdown().await;
        drop(loss);

        // The receiver comes up; the service restarts on the same state.
        receiver.listen().await;
        let second = start_monitor(&cfg).await;
        let raised = accepted_event(&receiver, "loss", "raised", Duration::from_secs(10)).await;
        assert_signed(&raised);
        // The alert was restored as raised, and the clean path clears it.
        let cleared = accepted_event(&receiver, "loss", "cleared", Duration::from_secs(15)).await;
        assert_eq!(cleared.event["alert_id"], raised.event["alert_id"]);
        let accepted = receiver.accepted();
        let order: Vec<&str> = accepted.iter().map(|r| r.state()).collect();
        assert_eq!(order, vec!["raised", "cleared"]);
        assert!(second.alerts().active().is_empty());
        second.shutdown().await;
    });
}

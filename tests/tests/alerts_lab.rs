//! Alerts end to end: the monitor runs in the lab's source namespace, real
//! impairments (loss, delay, route changes, ICMP rate limiting, a target that
//! drops echo requests) drive the alert rules, and webhooks go to a real HTTP
//! receiver this test runs on 127.0.0.1 of that same namespace. Privileged;
//! these fail (never skip) without root.

use std::future::Future;
use std::net::IpAddr;
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
use hopwatch_lab::{At, DelaySpec, Lab, LabSpec, PathSelect};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "lab-secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Request {
    body: Vec<u8>,
    event: Value,
    idempotency_key: String,
    signature: Option<String>,
    /// What the receiver answered.
    status: u16,
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
    let mut log = log.lock().unwrap();
    let status = if log.failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
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

    async fn start() -> Receiver {
        let mut receiver = Receiver::unstarted();
        receiver.listen().await;
        receiver
    }

    async fn listen(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("receiver binds on loopback");
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

/// 100 ms rounds, a window of `window` probes, alerts that raise after 3 rounds
/// and clear after 5, and one signed webhook with short retries.
fn config(
    state_dir: &Path,
    url: &str,
    window: u32,
    targets: &[(&str, IpAddr)],
    alerts: &str,
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
        let seen: Vec<(String, String)> = receiver
            .accepted()
            .iter()
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
    let lab = &LabSpec::chain(2).build().expect("lab");
    let target = IpAddr::V4(lab.targets_v4()[0]);
    let state = temp_dir("alerts-500");
    in_src(lab, || async move {
        let receiver = Receiver::start().await;
        receiver.set_failing(true);
        let monitor = start_monitor(&config(
            state.path(),
            &receiver.url(),
            10,
            &[("t", target)],
            "",
        ))
        .await;
        rounds_at_least(&monitor, "t", 15).await;
        let loss = lab.loss(At::link("r1", "r2"), 40.0).expect("loss");
        // The raise is refused a few times (retried with backoff)...
        eventually(Duration::from_secs(15), "refused attempts", || {
            (receiver.requests().len() >= 3).then_some(())
        })
        .await;
        let status = &monitor.alerts().delivery_status()[0];
        assert_eq!(status.name, "lab");
        assert!(status.failed_attempts >= 3, "{status:?}");
        assert_eq!(
            status.last_error.as_deref(),
            Some("the receiver answered HTTP 500")
        );
        assert!(status.pending >= 1);
        drop(loss);
        // ...and the clear happens meanwhile; both wait in order.
        eventually(Duration::from_secs(15), "the clear to be queued", || {
            let pending = monitor.alerts().counters().pending;
            (pending >= 2).then_some(())
        })
        .await;
        receiver.set_failing(false);
        eventually(Duration::from_secs(10), "both events", || {
            (receiver.accepted().len() >= 2).then_some(())
        })
        .await;
        let accepted = receiver.accepted();
        let states: Vec<(&str, &str)> = accepted.iter().map(|r| (r.kind(), r.state())).collect();
        assert_eq!(
            states,
            vec![("loss", "raised"), ("loss", "cleared")],
            "in order"
        );
        // Every refused attempt was the raise, under the same id.
        let requests = receiver.requests();
        let refused: Vec<&Request> = requests.iter().filter(|r| r.status == 500).collect();
        assert!(
            refused.iter().all(|r| r.id() == accepted[0].id()),
            "duplicates share the id"
        );
        for r in &refused {
            assert_eq!(r.body, accepted[0].body, "a retry sends the same bytes");
            assert_signed(r);
        }
        let counters = monitor.alerts().counters();
        assert_eq!(counters.pending, 0);
        assert_eq!(counters.delivered, 2);
        monitor.shutdown().await;
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

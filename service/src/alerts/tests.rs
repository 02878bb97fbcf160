//! Delivery against a real HTTP receiver on loopback: retries, order per
//! target, head-of-line blocking per target only, signatures, and an outbox
//! that outlives the worker, an outbox that cannot be written (events
//! delivered from memory) and one past its bounds (deliveries dropped).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use super::delivery::Delivery;
use super::event::{self, rfc3339, AlertTarget, SCHEMA};
use super::*;

#[derive(Debug, Clone)]
struct Received {
    event: AlertEvent,
    idempotency_key: String,
    signature: Option<String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct Log {
    received: Vec<Received>,
    /// Requests answered 500 before succeeding (all targets)...
    fail_first: usize,
    /// ...and targets always answered 500.
    fail_target: Option<String>,
    requests: usize,
}

async fn receive(
    State(log): State<Arc<Mutex<Log>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let event: AlertEvent = serde_json::from_slice(&body).expect("a hopwatch event");
    let mut log = log.lock().unwrap();
    log.requests += 1;
    if log.requests <= log.fail_first || log.fail_target.as_deref() == Some(&event.target.name) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    log.received.push(Received {
        idempotency_key: headers[IDEMPOTENCY_HEADER].to_str().unwrap().to_owned(),
        signature: headers
            .get(SIGNATURE_HEADER)
            .map(|v| v.to_str().unwrap().to_owned()),
        body: body.to_vec(),
        event,
    });
    StatusCode::NO_CONTENT
}

/// A receiver on 127.0.0.1 (optionally on a given port); returns its URL.
async fn receiver(log: Arc<Mutex<Log>>, port: u16) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let url = format!(
        "http://{}/hook/secret-token",
        listener.local_addr().unwrap()
    );
    let app = Router::new()
        .route("/hook/secret-token", post(receive))
        .with_state(log);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

fn hook(url: &str, secret: Option<&str>) -> WebhookConfig {
    WebhookConfig {
        name: "test".into(),
        url: WebhookUrl::parse(url).unwrap(),
        format: WebhookFormat::Json,
        secret: secret.map(Secret::new),
        filter: WebhookFilter::default(),
        timeout: Duration::from_secs(2),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
    }
}

fn commit(outbox: &Outbox, target: &str, kind: AlertKind) -> u64 {
    let seq = outbox.reserve_seq();
    let event = AlertEvent {
        schema: SCHEMA.into(),
        id: format!("{}-{seq}-raised", outbox.instance()),
        alert_id: format!("{}-{seq}", outbox.instance()),
        seq,
        kind,
        state: AlertState::Raised,
        target: AlertTarget {
            name: target.into(),
            subject: Subject::parse(target).unwrap().kind(),
            label: None,
            host: "198.18.0.2".into(),
            address: None,
            tags: vec![],
        },
        at_ms: 1_700_000_000_000 + seq,
        at: rfc3339(1_700_000_000_000 + seq),
        raised_at_ms: 1_700_000_000_000 + seq,
        summary: "test".into(),
        reason: None,
        value: Some(1.0),
        threshold: Some(1.0),
        unit: Some("pct".into()),
        localisation: None,
        path_change: None,
        snapshot: serde_json::Value::Null,
    };
    outbox
        .commit(&[(event, vec!["test".into()])], None)
        .unwrap();
    seq
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn seqs(log: &Mutex<Log>, target: &str) -> Vec<u64> {
    let log = log.lock().unwrap();
    log.received
        .iter()
        .filter(|r| r.event.target.name == target)
        .map(|r| r.event.seq)
        .collect()
}

#[tokio::test]
async fn a_failing_receiver_gets_everything_in_order_once_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Log {
        fail_first: 3,
        ..Log::default()
    }));
    let (url, server) = receiver(Arc::clone(&log), 0).await;
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), &["test".into()]).unwrap());
    let sent: Vec<u64> = (0..4)
        .map(|_| commit(&outbox, "x", AlertKind::Loss))
        .collect();
    let delivery = Delivery::start(Arc::clone(&outbox), vec![hook(&url, Some("k3y"))]).unwrap();
    // The worker counts a delivery (and drops it from the outbox) once the
    // response is back, a moment after the receiver logged it: wait for
    // both, or a loaded machine races.
    until("four deliveries, counted", || {
        let counters = delivery.counters();
        log.lock().unwrap().received.len() == 4 && counters.delivered == 4 && counters.pending == 0
    })
    .await;
    assert_eq!(seqs(&log, "x"), sent, "in order, nothing lost");
    let counters = delivery.counters();
    assert_eq!(counters.delivered, 4);
    assert_eq!(counters.failed_attempts, 3);
    assert_eq!(counters.pending, 0);
    let status = &delivery.status()[0];
    assert_eq!(
        status.last_error.as_deref(),
        Some("the receiver answered HTTP 500")
    );
    assert!(status.last_success_ms.is_some());
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    assert_eq!(status.url, format!("http://127.0.0.1:{port}/…"));
    assert!(!format!("{status:?}").contains("secret-token"));
    for r in log.lock().unwrap().received.iter() {
        assert_eq!(r.idempotency_key, r.event.id);
        let sig = r.signature.as_deref().expect("signed");
        assert!(
            sign::verify(&Secret::new("k3y"), &r.body, sig),
            "signature verifies"
        );
    }
    assert!(outbox.queued().unwrap().is_empty());
    delivery.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn a_stuck_target_does_not_hold_up_another() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Log {
        fail_target: Some("stuck".into()),
        ..Log::default()
    }));
    let (url, server) = receiver(Arc::clone(&log), 0).await;
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), &["test".into()]).unwrap());
    let stuck: Vec<u64> = (0..2)
        .map(|_| commit(&outbox, "stuck", AlertKind::Loss))
        .collect();
    let fine: Vec<u64> = (0..3)
        .map(|_| commit(&outbox, "fine", AlertKind::Loss))
        .collect();
    let delivery = Delivery::start(Arc::clone(&outbox), vec![hook(&url, None)]).unwrap();
    until("the healthy target's events", || {
        seqs(&log, "fine").len() == 3
    })
    .await;
    assert_eq!(seqs(&log, "fine"), fine);
    until(
        "a few retries of the stuck one, the healthy ones counted",
        || delivery.counters().failed_attempts >= 3 && delivery.status()[0].pending == 2,
    )
    .await;
    assert!(seqs(&log, "stuck").is_empty());
    let status = &delivery.status()[0];
    assert_eq!(status.pending, 2);
    assert_eq!(status.retrying_targets, vec!["stuck".to_owned()]);
    // The receiver is fixed: the stuck lane drains, in order.
    log.lock().unwrap().fail_target = None;
    until("the stuck target's events", || {
        seqs(&log, "stuck").len() == 2
    })
    .await;
    assert_eq!(seqs(&log, "stuck"), stuck);
    delivery.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn undelivered_events_survive_a_restart_of_the_worker_and_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    // Reserve a port, then close it: the receiver is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook/secret-token");
    let sent = {
        let outbox = Arc::new(Outbox::open(&path, &["test".into()]).unwrap());
        let sent: Vec<u64> = (0..3)
            .map(|_| commit(&outbox, "x", AlertKind::Loss))
            .collect();
        outbox.flush().await.unwrap();
        let delivery = Delivery::start(Arc::clone(&outbox), vec![hook(&url, None)]).unwrap();
        until("failed attempts", || {
            delivery.counters().failed_attempts >= 2
        })
        .await;
        let status = &delivery.status()[0];
        assert!(
            status
                .last_error
                .as_deref()
                .unwrap()
                .starts_with("request failed"),
            "{status:?}"
        );
        assert!(!status
            .last_error
            .as_deref()
            .unwrap()
            .contains("secret-token"));
        delivery.shutdown().await;
        sent
    };
    let log = Arc::new(Mutex::new(Log::default()));
    let (_, server) = receiver(Arc::clone(&log), port).await;
    let outbox = Arc::new(Outbox::open(&path, &["test".into()]).unwrap());
    let delivery = Delivery::start(Arc::clone(&outbox), vec![hook(&url, None)]).unwrap();
    until("the backlog", || seqs(&log, "x").len() == 3).await;
    assert_eq!(seqs(&log, "x"), sent);
    delivery.shutdown().await;
    server.abort();
}

/// Every body a [`raw_receiver`] got, as JSON, with when it came.
type RawLog = Arc<Mutex<Vec<(u64, serde_json::Value)>>>;

/// A receiver that keeps every body as JSON (any format), with when it came.
async fn raw_receiver(log: RawLog) -> (String, tokio::task::JoinHandle<()>) {
    async fn take(State(log): State<RawLog>, body: axum::body::Bytes) -> StatusCode {
        let value = serde_json::from_slice(&body).expect("a JSON body");
        log.lock().unwrap().push((event::now_ms(), value));
        StatusCode::OK
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}/in", listener.local_addr().unwrap());
    let app = Router::new().route("/in", post(take)).with_state(log);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

/// Commits one event of `alert_id` for `hooks`; returns its seq.
fn commit_state(
    outbox: &Outbox,
    target: &str,
    alert_id: &str,
    state: AlertState,
    hooks: &[&str],
) -> u64 {
    let seq = outbox.reserve_seq();
    let at_ms = event::now_ms();
    let event = AlertEvent {
        schema: SCHEMA.into(),
        id: format!("{alert_id}-{state}"),
        alert_id: alert_id.into(),
        seq,
        kind: AlertKind::Loss,
        state,
        target: AlertTarget {
            name: target.into(),
            subject: Subject::parse(target).unwrap().kind(),
            label: None,
            host: "198.18.0.2".into(),
            address: None,
            tags: vec!["wan".into()],
        },
        at_ms,
        at: rfc3339(at_ms),
        raised_at_ms: 1_700_000_000_000,
        summary: format!("loss {state}"),
        reason: (state == AlertState::Cleared).then_some(ClearReason::Recovered),
        value: Some(30.0),
        threshold: Some(20.0),
        unit: Some("pct".into()),
        localisation: Some(serde_json::json!({"ttl": 2, "summary": "loss starts at hop 2"})),
        path_change: None,
        snapshot: serde_json::json!({"hops": [1, 2, 3]}),
    };
    let hooks = hooks.iter().map(|h| (*h).to_owned()).collect();
    outbox.commit(&[(event, hooks)], None).unwrap();
    seq
}

fn named(name: &str, url: &str, format: WebhookFormat) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        format,
        ..hook(url, None)
    }
}

fn ms_of(rfc3339: &serde_json::Value) -> u64 {
    let at = humantime::parse_rfc3339(rfc3339.as_str().expect("an RFC 3339 time")).unwrap();
    at.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn alertmanager_gets_firing_alerts_again_until_they_clear_and_json_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let am_log = Arc::new(Mutex::new(Vec::new()));
    let json_log = Arc::new(Mutex::new(Vec::new()));
    let (am_url, am_server) = raw_receiver(Arc::clone(&am_log)).await;
    let (json_url, json_server) = raw_receiver(Arc::clone(&json_log)).await;
    let both = ["am", "json"];
    let outbox =
        Arc::new(Outbox::open(&dir.path().join("outbox"), &["am".into(), "json".into()]).unwrap());
    let raise = commit_state(&outbox, "x", "a-1", AlertState::Raised, &both);
    let options = DeliveryOptions {
        resend_every: Duration::from_millis(150),
        ..DeliveryOptions::default()
    };
    let delivery = Delivery::start_with(
        Arc::clone(&outbox),
        vec![
            named("am", &am_url, WebhookFormat::Alertmanager),
            named("json", &json_url, WebhookFormat::Json),
        ],
        options,
    )
    .unwrap();
    // The status counts a re-send once its response is back, a moment after
    // the receiver logged it: wait for both, or a loaded machine races.
    until("the raise and two re-sends at Alertmanager", || {
        let status = delivery.status();
        am_log.lock().unwrap().len() >= 3 && status[0].resent >= 2 && status[1].delivered == 1
    })
    .await;
    {
        let am = am_log.lock().unwrap().clone();
        let mut last_end = 0;
        for (i, (received_ms, body)) in am.iter().enumerate() {
            let alerts = body.as_array().expect("a list of alerts");
            assert_eq!(alerts.len(), 1, "{body}");
            let alert = &alerts[0];
            assert_eq!(alert["labels"]["alertname"], "hopwatch_loss", "{body}");
            assert_eq!(alert["labels"]["target"], "x");
            assert_eq!(alert["startsAt"], rfc3339(1_700_000_000_000));
            assert_eq!(
                alert["annotations"]["localisation"], "loss starts at hop 2",
                "annotations survive re-sends (Alertmanager keeps the latest)"
            );
            // Valid for four re-send intervals from the send.
            let ends = ms_of(&alert["endsAt"]);
            assert!(
                ends > *received_ms && ends <= received_ms + 600 + 50,
                "send {i}: endsAt {ends} vs received at {received_ms}"
            );
            assert!(ends >= last_end, "each re-send extends the alert");
            last_end = ends;
        }
    }
    assert_eq!(
        json_log.lock().unwrap().len(),
        1,
        "a JSON webhook gets the raise once, never a re-send"
    );
    let status = delivery.status();
    assert!(status[0].resent >= 2, "{status:?}");
    assert_eq!((status[0].delivered, status[1].delivered), (1, 1));
    assert_eq!(status[1].resent, 0);

    // The alert clears: Alertmanager gets endsAt = when it cleared, and no
    // re-send after that (the alert is no longer raised).
    let clear = commit_state(&outbox, "x", "a-1", AlertState::Cleared, &both);
    assert!(clear > raise);
    let x = Subject::parse("x").unwrap();
    delivery.enqueue(both.iter().map(|h| ((*h).to_owned(), x.clone(), clear)));
    until("the clear at both", || {
        json_log.lock().unwrap().len() == 2
            && am_log
                .lock()
                .unwrap()
                .iter()
                .any(|(_, b)| b[0]["annotations"]["event_id"] == "a-1-cleared")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(4 * 150)).await;
    let am = am_log.lock().unwrap().clone();
    let (_, last) = am.last().unwrap();
    assert_eq!(
        last[0]["annotations"]["event_id"], "a-1-cleared",
        "nothing after the clear: {am:?}"
    );
    let cleared_at = json_log.lock().unwrap()[1].1["at"].clone();
    assert_eq!(last[0]["endsAt"], cleared_at);
    assert_eq!(json_log.lock().unwrap().len(), 2);
    delivery.shutdown().await;
    am_server.abort();
    json_server.abort();
}

/// What the alerts are started with in these tests: their settings, the
/// state directory of the outbox and who is monitored (what a config file
/// would give them through the monitor).
struct Setup {
    settings: AlertsConfig,
    state_dir: std::path::PathBuf,
    monitored: Monitored,
}

impl Setup {
    fn start(&self) -> Alerts {
        Alerts::start(&self.settings, &self.state_dir, &self.monitored).unwrap()
    }

    fn start_with(&self, options: DeliveryOptions) -> Alerts {
        Alerts::start_with(&self.settings, &self.state_dir, &self.monitored, options).unwrap()
    }

    fn reload(&self, alerts: &Alerts) {
        alerts.reload(&self.settings, &self.monitored);
    }
}

fn ids(names: &[&str]) -> Vec<crate::model::TargetId> {
    names
        .iter()
        .map(|n| crate::model::TargetId::new(*n).unwrap())
        .collect()
}

/// Targets named `targets`, the default thresholds and one JSON webhook to `url`.
fn config(state_dir: &std::path::Path, url: &str, targets: &[&str]) -> Setup {
    Setup {
        settings: AlertsConfig {
            webhooks: vec![hook(url, None)],
            ..AlertsConfig::default()
        },
        state_dir: state_dir.to_path_buf(),
        monitored: Monitored {
            targets: ids(targets),
            peers: Vec::new(),
        },
    }
}

#[tokio::test]
async fn alerts_of_removed_targets_clear_with_a_reason_at_start_and_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let (url, server) = receiver(Arc::clone(&log), 0).await;
    {
        // A previous run raised loss on a, b and c; b and c answered.
        let outbox = Outbox::open(&outbox_path(dir.path()), &["test".into()]).unwrap();
        for target in ["a", "b", "c"] {
            commit_state(
                &outbox,
                target,
                &format!("{target}-1"),
                AlertState::Raised,
                &["test"],
            );
        }
        for target in ["b", "c"] {
            outbox
                .commit(&[], Some(&crate::model::TargetId::new(target).unwrap()))
                .unwrap();
        }
        outbox.flush_now().unwrap();
    }
    // c was removed from the config while the service was stopped.
    let alerts = config(dir.path(), &url, &["a", "b"]).start();
    let names = |log: &Mutex<Log>| -> Vec<(String, AlertState, Option<ClearReason>)> {
        log.lock()
            .unwrap()
            .received
            .iter()
            .map(|r| (r.event.target.name.clone(), r.event.state, r.event.reason))
            .collect()
    };
    until("c's raise and clear", || {
        names(&log).iter().filter(|(t, _, _)| t == "c").count() == 2
    })
    .await;
    let c: Vec<Received> = log
        .lock()
        .unwrap()
        .received
        .iter()
        .filter(|r| r.event.target.name == "c")
        .cloned()
        .collect();
    assert_eq!(c[0].event.state, AlertState::Raised, "in order");
    let cleared = &c[1].event;
    assert_eq!(cleared.state, AlertState::Cleared);
    assert_eq!(cleared.reason, Some(ClearReason::TargetRemoved));
    assert_eq!(cleared.alert_id, "c-1", "the clear names the alert it ends");
    assert_eq!(cleared.id, "c-1-cleared");
    assert_eq!(cleared.raised_at_ms, 1_700_000_000_000);
    assert_eq!(
        cleared.target.host, "198.18.0.2",
        "what the raise knew of the target"
    );
    assert_eq!(cleared.target.tags, vec!["wan".to_owned()]);
    assert!(
        cleared.summary.contains("removed from the config"),
        "{}",
        cleared.summary
    );
    let mut active: Vec<String> = alerts
        .active()
        .iter()
        .map(|a| a.target.to_string())
        .collect();
    active.sort();
    assert_eq!(active, vec!["a", "b"]);
    let persisted = alerts.outbox.persisted().unwrap();
    assert_eq!(
        persisted.answered,
        vec![crate::model::TargetId::new("b").unwrap()],
        "a removed target is forgotten: back, it starts over"
    );

    // A reload removes b; a stays raised.
    config(dir.path(), &url, &["a"]).reload(&alerts);
    until("b's clear", || {
        names(&log).contains(&(
            "b".into(),
            AlertState::Cleared,
            Some(ClearReason::TargetRemoved),
        ))
    })
    .await;
    let active: Vec<String> = alerts
        .active()
        .iter()
        .map(|a| a.target.to_string())
        .collect();
    assert_eq!(active, vec!["a"]);
    assert!(
        !names(&log)
            .iter()
            .any(|(t, s, _)| t == "a" && *s == AlertState::Cleared),
        "a target still configured keeps its alert"
    );
    // Reloading the same config again clears nothing more.
    config(dir.path(), &url, &["a"]).reload(&alerts);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        names(&log)
            .iter()
            .filter(|(_, s, _)| *s == AlertState::Cleared)
            .count(),
        2
    );
    alerts.shutdown().await;
    server.abort();
}

/// Peers named `peers`, one JSON webhook to `url`, alerts raising at 10%
/// loss after 2 updates and clearing after 2.
fn peer_config(state_dir: &std::path::Path, url: &str, peers: &[&str]) -> Setup {
    Setup {
        settings: AlertsConfig {
            rules: AlertRules {
                loss_pct: 10.0,
                raise_rounds: 2,
                clear_rounds: 2,
                ..AlertRules::default()
            },
            webhooks: vec![hook(url, None)],
            ..AlertsConfig::default()
        },
        state_dir: state_dir.to_path_buf(),
        monitored: Monitored {
            targets: Vec::new(),
            peers: ids(peers),
        },
    }
}

/// Hands the alerts an update of peer "dc1" (198.18.1.2, tagged "link"),
/// running, whose full window of 20 probes lost `backward` replies on the
/// way back; `resolved` tells updates apart.
async fn peer_update(alerts: &Alerts, backward: u64, resolved: u64) {
    use crate::analysis::{DelayWindow, WindowStats};
    let name = crate::model::TargetId::new("dc1").unwrap();
    let tags = vec!["link".to_owned()];
    let peer = PeerInfo {
        name: &name,
        label: None,
        address: "198.18.1.2".parse().unwrap(),
        tags: &tags,
    };
    let window = WindowStats {
        probes: 20,
        received: 20 - backward,
        lost: backward,
        lost_backward: backward,
        rtt: Some(DelayWindow {
            min_ns: 1_000_000,
            mean_ns: 1_000_000.0,
            max_ns: 1_000_000,
            samples: 20 - backward,
        }),
        ..WindowStats::default()
    };
    let link = PeerLink {
        state: SessionState::Running,
        window: &window,
        window_probes: 20,
        resolved,
    };
    alerts.on_peer(&peer, &link).await;
}

#[tokio::test]
async fn a_peer_alert_reaches_the_webhook_and_clears_when_the_peer_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let (url, server) = receiver(Arc::clone(&log), 0).await;
    {
        // A previous run raised loss on peer "gone", which left the config
        // while the service was stopped, and on target "gone" (no such target
        // either: both clear, each with its own reason).
        let outbox = Outbox::open(&outbox_path(dir.path()), &["test".into()]).unwrap();
        commit_state(&outbox, "peer:gone", "g-1", AlertState::Raised, &["test"]);
        commit_state(&outbox, "gone", "t-1", AlertState::Raised, &["test"]);
        outbox.flush_now().unwrap();
    }
    let alerts = peer_config(dir.path(), &url, &["dc1"]).start();
    let received = |log: &Mutex<Log>| -> Vec<AlertEvent> {
        log.lock()
            .unwrap()
            .received
            .iter()
            .map(|r| r.event.clone())
            .collect()
    };
    until("the clears of what was removed", || {
        received(&log)
            .iter()
            .filter(|e| e.state == AlertState::Cleared)
            .count()
            == 2
    })
    .await;
    let events = received(&log);
    let gone_peer = events
        .iter()
        .find(|e| e.target.name == "peer:gone" && e.state == AlertState::Cleared)
        .unwrap();
    assert_eq!(gone_peer.reason, Some(ClearReason::PeerRemoved));
    assert_eq!(gone_peer.target.subject, SubjectKind::Peer);
    assert!(
        gone_peer.summary.contains("peer was removed"),
        "{}",
        gone_peer.summary
    );
    let gone_target = events
        .iter()
        .find(|e| e.target.name == "gone" && e.state == AlertState::Cleared)
        .unwrap();
    assert_eq!(gone_target.reason, Some(ClearReason::TargetRemoved));
    log.lock().unwrap().received.clear();

    // 20% backward loss on two updates raises; the same update again is no round.
    peer_update(&alerts, 4, 100).await;
    peer_update(&alerts, 4, 100).await;
    assert!(alerts.active().is_empty(), "one round so far");
    peer_update(&alerts, 4, 120).await;
    until("the peer's raise", || !received(&log).is_empty()).await;
    let raised = received(&log)[0].clone();
    assert_eq!(raised.kind, AlertKind::Loss);
    assert_eq!(raised.state, AlertState::Raised);
    assert_eq!(raised.target.name, "peer:dc1");
    assert_eq!(raised.target.subject, SubjectKind::Peer);
    assert_eq!(raised.target.address, Some("198.18.1.2".parse().unwrap()));
    assert_eq!(raised.target.tags, vec!["link".to_owned()]);
    assert_eq!(raised.value, Some(20.0));
    assert!(
        raised.summary.contains("backward path"),
        "{}",
        raised.summary
    );
    let place = raised.localisation.as_ref().unwrap();
    assert_eq!(place["direction"], "backward");
    assert_eq!(raised.snapshot["window"]["lost_backward"], 4);
    let active = alerts.active();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].target, Subject::parse("peer:dc1").unwrap());

    // A reload that removes the peer clears its alert with the reason.
    peer_config(dir.path(), &url, &[]).reload(&alerts);
    until("the peer's clear", || received(&log).len() == 2).await;
    let cleared = received(&log)[1].clone();
    assert_eq!(cleared.alert_id, raised.alert_id);
    assert_eq!(cleared.reason, Some(ClearReason::PeerRemoved));
    assert!(alerts.active().is_empty());
    // A window read just before the reload cannot raise it again.
    for resolved in 200..210 {
        peer_update(&alerts, 4, resolved).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(received(&log).len(), 2, "{:?}", received(&log));
    assert!(alerts.active().is_empty());
    alerts.shutdown().await;
    server.abort();
}

// ---- updates: a raised alert's localisation moves ----

/// A target "t" (3 routers, then the destination at TTL 4) after 40 rounds
/// through the real analysis, the last 30 with 50% loss from hop 2 on: its
/// destination window breaches 20% loss and its loss localisation is hop 2.
fn lossy_snapshot() -> crate::analysis::TargetSnapshot {
    use crate::analysis::{AnalysisConfig, TargetAnalysis};
    use crate::model::{HopSample, RoundRecord, TargetId};
    use std::net::{IpAddr, Ipv4Addr};
    let id = TargetId::new("t").unwrap();
    let mut analysis = TargetAnalysis::new(id.clone(), &AnalysisConfig::new(10, 3).unwrap());
    for seq in 1..=40u64 {
        let hops = (1..=4u8)
            .map(|ttl| {
                let answered = seq <= 10 || ttl < 2 || seq.is_multiple_of(2);
                let addr = IpAddr::V4(Ipv4Addr::new(198, 18, ttl - 1, 2));
                let rtt_ns = answered.then_some(u64::from(ttl) * 1_000_000);
                HopSample::answered_or_lost(ttl, addr, rtt_ns, ttl == 4)
            })
            .collect::<Vec<_>>();
        let reached = hops[3].reached();
        analysis
            .record(&RoundRecord {
                target: id.clone(),
                seq,
                started_at_ms: 1_700_000_000_000 + seq * 1_000,
                hops,
                destination_ttl: reached.then(|| crate::probe::Ttl::new(4).unwrap()),
                source: crate::probe::TimestampSource::Ebpf,
            })
            .unwrap();
    }
    let snapshot = analysis.snapshot();
    let loss = rules::localisation(&snapshot, AlertKind::Loss).expect("loss is placed");
    assert_eq!(loss.ttl, 2);
    snapshot
}

/// Hands the alerts a round of `snapshot`'s target ("t", 198.18.3.2, labelled
/// "Target", tagged "wan") with its loss localisation at `ttl`: the same
/// window (the alert stays raised) with another diagnosis.
async fn round_placed_at(alerts: &Alerts, snapshot: &crate::analysis::TargetSnapshot, ttl: u8) {
    let mut analysis = snapshot.clone();
    for place in &mut analysis.localisations {
        place.ttl = ttl;
    }
    let tags = vec!["wan".to_owned()];
    let target = TargetInfo {
        id: &snapshot.target,
        label: Some("Target"),
        host: "198.18.3.2",
        address: Some("198.18.3.2".parse().unwrap()),
        tags: &tags,
    };
    alerts.on_round(&target, &analysis, &[]).await;
}

/// Target "t" raising at 20% loss after 3 rounds, with a JSON, a Slack and an
/// Alertmanager webhook.
fn update_config(state_dir: &std::path::Path, json: &str, slack: &str, am: &str) -> Setup {
    Setup {
        settings: AlertsConfig {
            rules: AlertRules {
                loss_pct: 20.0,
                raise_rounds: 3,
                clear_rounds: 4,
                ..AlertRules::default()
            },
            webhooks: vec![
                named("json", json, WebhookFormat::Json),
                named("slack", slack, WebhookFormat::Slack),
                named("am", am, WebhookFormat::Alertmanager),
            ],
            ..AlertsConfig::default()
        },
        state_dir: state_dir.to_path_buf(),
        monitored: Monitored {
            targets: ids(&["t"]),
            peers: Vec::new(),
        },
    }
}

#[tokio::test]
async fn a_moved_localisation_is_an_update_in_every_format_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (json_log, slack_log, am_log): (RawLog, RawLog, RawLog) = Default::default();
    let (json_url, json_server) = raw_receiver(Arc::clone(&json_log)).await;
    let (slack_url, slack_server) = raw_receiver(Arc::clone(&slack_log)).await;
    let (am_url, am_server) = raw_receiver(Arc::clone(&am_log)).await;
    let config = update_config(dir.path(), &json_url, &slack_url, &am_url);
    let options = DeliveryOptions {
        resend_every: Duration::from_millis(100),
        ..DeliveryOptions::default()
    };
    let snapshot = lossy_snapshot();
    let events = |log: &RawLog| -> Vec<serde_json::Value> {
        log.lock().unwrap().iter().map(|(_, b)| b.clone()).collect()
    };

    let alerts = config.start_with(options);
    for _ in 0..3 {
        round_placed_at(&alerts, &snapshot, 2).await;
    }
    assert_eq!(alerts.active().len(), 1, "raised on the third round");
    // Loss now starts at hop 3: two rounds are not enough, the third is.
    for _ in 0..2 {
        round_placed_at(&alerts, &snapshot, 3).await;
    }
    assert_eq!(alerts.active()[0].sent_hop(), Some(StartHop(2)));
    for _ in 0..5 {
        round_placed_at(&alerts, &snapshot, 3).await;
    }
    until("the raise and one update at every webhook", || {
        events(&json_log).len() == 2
            && slack_log.lock().unwrap().len() == 2
            && events(&am_log).iter().any(|b| {
                b[0]["annotations"]["event_id"]
                    .as_str()
                    .unwrap()
                    .contains("-updated-")
            })
    })
    .await;
    let json = events(&json_log);
    let (raise, update) = (&json[0], &json[1]);
    assert_eq!(raise["state"], "raised");
    assert_eq!(update["state"], "updated");
    assert_eq!(update["alert_id"], raise["alert_id"]);
    assert_eq!(
        update["id"],
        format!(
            "{}-updated-{}",
            raise["alert_id"].as_str().unwrap(),
            update["seq"]
        ),
    );
    assert_eq!(update["raised_at_ms"], raise["raised_at_ms"]);
    assert_eq!(update["kind"], "loss");
    assert_eq!(
        update["summary"],
        "loss on t: where it starts is now hop 3 (was hop 2)"
    );
    assert_eq!(raise["localisation"]["ttl"], 2);
    assert_eq!(update["localisation"]["ttl"], 3);
    assert_eq!(update["value"], raise["value"], "the current value");
    assert_eq!(update["reason"], serde_json::Value::Null);
    let slack = events(&slack_log);
    let text = slack[1]["text"].as_str().unwrap();
    assert!(text.contains("*loss updated* on `t (Target)`"), "{text}");
    assert!(text.contains("is now hop 3 (was hop 2)"), "{text}");
    let am = events(&am_log);
    let at = am
        .iter()
        .position(|b| b[0]["annotations"]["event_id"] == update["id"])
        .unwrap();
    let am_update = &am[at][0];
    assert_eq!(am_update["labels"], am[0][0]["labels"], "the same alert");
    assert_eq!(am_update["startsAt"], am[0][0]["startsAt"]);
    assert!(
        ms_of(&am_update["endsAt"]) > event::now_ms(),
        "still firing"
    );
    let hop_3 = update["localisation"]["summary"].clone();
    assert_eq!(am_update["annotations"]["localisation"], hop_3);
    // Re-sends after the update carry its localisation, not the raise's.
    until("a re-send after the update", || {
        events(&am_log).len() > at + 1
    })
    .await;
    for resend in &events(&am_log)[at + 1..] {
        assert_eq!(resend[0]["annotations"]["localisation"], hop_3, "{resend}");
    }
    let active = alerts.active();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].sent_hop(), Some(StartHop(3)));
    assert_eq!(
        active[0].raised_at_ms,
        raise["raised_at_ms"].as_u64().unwrap()
    );
    alerts.shutdown().await;
    drop(alerts);

    // After a restart the alert knows hop 3 was sent: no update again...
    let alerts = config.start_with(options);
    for _ in 0..5 {
        round_placed_at(&alerts, &snapshot, 3).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(events(&json_log).len(), 2, "{:?}", events(&json_log));
    // ...but a move back to hop 2 is one, with its own id.
    for _ in 0..3 {
        round_placed_at(&alerts, &snapshot, 2).await;
    }
    until("the second update", || events(&json_log).len() == 3).await;
    let again = &events(&json_log)[2];
    assert_eq!(again["state"], "updated");
    assert_eq!(again["alert_id"], raise["alert_id"]);
    assert_ne!(again["id"], update["id"]);
    assert_eq!(
        again["summary"],
        "loss on t: where it starts is now hop 2 (was hop 3)"
    );
    alerts.shutdown().await;
    json_server.abort();
    slack_server.abort();
    am_server.abort();
}

#[tokio::test]
async fn an_alert_the_outbox_cannot_store_is_delivered_from_memory_and_stored_later() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let (url, server) = receiver(Arc::clone(&log), 0).await;
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), &["test".into()]).unwrap());
    let delivery = Delivery::start(Arc::clone(&outbox), vec![hook(&url, Some("k3y"))]).unwrap();
    let x = Subject::parse("x").unwrap();
    let stored = commit(&outbox, "x", AlertKind::Loss);
    // The disk turns read-only: the next commits cannot be written.
    outbox.fail_writes(true);
    let held: Vec<u64> = [
        AlertKind::Latency,
        AlertKind::Jitter,
        AlertKind::Unreachable,
    ]
    .into_iter()
    .map(|kind| commit(&outbox, "x", kind))
    .collect();
    assert_eq!(
        outbox.memory_counts(),
        MemoryCounts {
            held: 3,
            dropped: 0
        }
    );
    assert!(
        !outbox
            .queued()
            .unwrap()
            .iter()
            .any(|q| held.contains(&q.seq)),
        "not on disk"
    );
    assert!(
        outbox.active(&x, AlertKind::Jitter).unwrap().is_some(),
        "raised, from memory"
    );
    let bodies: Vec<Vec<u8>> = held
        .iter()
        .map(|seq| outbox.event(*seq).unwrap().expect("kept in memory"))
        .collect();
    delivery.enqueue(
        std::iter::once(stored)
            .chain(held.iter().copied())
            .map(|seq| ("test".to_owned(), x.clone(), seq)),
    );
    until("four deliveries", || {
        log.lock().unwrap().received.len() == 4
    })
    .await;
    let mut all = vec![stored];
    all.extend(&held);
    assert_eq!(seqs(&log, "x"), all, "in order, from disk then memory");
    for (r, body) in log.lock().unwrap().received[1..].iter().zip(&bodies) {
        assert_eq!(&r.body, body, "the same bytes as kept");
        assert_eq!(r.idempotency_key, r.event.id);
    }
    assert_eq!(outbox.memory_counts().held, 3, "still not written");

    // The disk recovers: the next commit writes what memory held first.
    outbox.fail_writes(false);
    let next = commit(&outbox, "y", AlertKind::Loss);
    assert_eq!(outbox.memory_counts().held, 0);
    let queued: Vec<u64> = outbox.queued().unwrap().iter().map(|q| q.seq).collect();
    assert_eq!(
        queued,
        vec![next],
        "what was delivered from memory is not owed again"
    );
    delivery.shutdown().await;
    drop(delivery);
    server.abort();
    let path = outbox.path().to_owned();
    drop(outbox);
    let reopened = Outbox::open(&path, &["test".into()]).unwrap();
    let mut kinds: Vec<AlertKind> = reopened
        .persisted()
        .unwrap()
        .active
        .into_iter()
        .filter(|a| a.target == x)
        .map(|a| a.kind)
        .collect();
    kinds.sort_by_key(|k| k.as_str());
    assert_eq!(
        kinds,
        vec![
            AlertKind::Jitter,
            AlertKind::Latency,
            AlertKind::Loss,
            AlertKind::Unreachable
        ],
        "the alerts raised while the disk failed are stored now"
    );
}

#[tokio::test]
async fn deliveries_past_the_outbox_bounds_are_dropped_oldest_first_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // x's receiver never accepts: its deliveries pile up.
    let log = Arc::new(Mutex::new(Log {
        fail_target: Some("x".into()),
        ..Log::default()
    }));
    let (url, server) = receiver(Arc::clone(&log), 0).await;
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), &["test".into()]).unwrap());
    let x = Subject::parse("x").unwrap();
    let first: Vec<u64> = [AlertKind::Loss, AlertKind::Latency, AlertKind::Jitter]
        .into_iter()
        .map(|kind| commit(&outbox, "x", kind))
        .collect();
    let size = outbox.event(first[0]).unwrap().unwrap().len() as u64;
    let options = DeliveryOptions {
        // Room for two and a half events.
        max_bytes: size * 5 / 2,
        ..DeliveryOptions::default()
    };
    let delivery =
        Delivery::start_with(Arc::clone(&outbox), vec![hook(&url, None)], options).unwrap();
    until("the oldest dropped for bytes", || {
        delivery.status()[0].dropped_bytes == 1
    })
    .await;
    let queued = || -> Vec<u64> { outbox.queued().unwrap().iter().map(|q| q.seq).collect() };
    assert_eq!(queued(), first[1..].to_vec());
    assert!(outbox.event(first[0]).unwrap().is_none());

    // Three events again: the enqueue drops the oldest of the two left.
    let third = commit(&outbox, "x", AlertKind::Unreachable);
    delivery.enqueue([("test".to_owned(), x.clone(), third)]);
    let status = &delivery.status()[0];
    assert_eq!(status.dropped_bytes, 2, "{status:?}");
    assert_eq!(queued(), vec![first[2], third]);
    assert_eq!(status.pending, 2, "the lanes forgot what was dropped");
    delivery.shutdown().await;

    // Restarted with a maximum age shorter than they waited: both go.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let options = DeliveryOptions {
        max_age: Duration::from_millis(10),
        ..options
    };
    let delivery =
        Delivery::start_with(Arc::clone(&outbox), vec![hook(&url, None)], options).unwrap();
    until("the rest dropped for age", || {
        delivery.status()[0].dropped_age == 2
    })
    .await;
    assert!(queued().is_empty());
    let status = delivery.status().remove(0);
    assert_eq!(status.pending, 0);
    // (webapi's tests check that the API shows these counts as they are.)
    assert_eq!((status.dropped_age, status.dropped_bytes), (2, 0));
    assert!(
        log.lock().unwrap().received.is_empty(),
        "x never accepted any"
    );
    delivery.shutdown().await;
    server.abort();
}

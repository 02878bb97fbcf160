//! Delivery against a real HTTP receiver on loopback: retries, order per
//! target, head-of-line blocking per target only, signatures, and an outbox
//! that outlives the worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use super::delivery::Delivery;
use super::event::{rfc3339, AlertTarget, SCHEMA};
use super::*;
use crate::config::{WebhookConfig, WebhookFilter, WebhookFormat};

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
            label: None,
            host: "198.18.0.2".into(),
            address: None,
            tags: vec![],
        },
        at_ms: 1_700_000_000_000 + seq,
        at: rfc3339(1_700_000_000_000 + seq),
        raised_at_ms: 1_700_000_000_000 + seq,
        summary: "test".into(),
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
    until("four deliveries", || {
        log.lock().unwrap().received.len() == 4
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
    until("a few retries of the stuck one", || {
        delivery.counters().failed_attempts >= 3
    })
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

//! The pusher against a remote-write receiver on loopback: the requests'
//! headers, authentication and labels; an outage (503) backfilled from a
//! real store once the receiver is back, every missed tick present; a
//! refusal (400) counted as dropped.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hopwatch_web::metrics::{MetricsSnapshot, TargetMetrics};

use super::proto::{self, WriteRequest};
use super::*;
use crate::model::{HopSample, RoundRecord, TargetId};
use crate::probe::{TimestampSource, Ttl};
use crate::store::StoreConfig;

#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<(HeaderMap, WriteRequest)>>>,
    /// The status it answers with.
    status: Arc<AtomicU16>,
}

async fn write(
    State(rx): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let status = StatusCode::from_u16(rx.status.load(Ordering::SeqCst)).unwrap();
    if status.is_success() {
        let request = proto::decode(&body).expect("a snappy WriteRequest");
        sys::lock(&rx.requests).push((headers, request));
    }
    status
}

fn round(seq: u64, at_ms: u64) -> RoundRecord {
    let hops = (1..=2u8)
        .map(|ttl| {
            HopSample::answered_or_lost(
                ttl,
                IpAddr::from([198, 18, 0, ttl]),
                Some(u64::from(ttl) * 1_000_000),
                ttl == 2,
            )
        })
        .collect();
    RoundRecord {
        target: TargetId::new("dst").unwrap(),
        seq,
        started_at_ms: at_ms,
        hops,
        destination_ttl: Some(Ttl::new(2).unwrap()),
        source: TimestampSource::Ebpf,
    }
}

fn samples_of<'a>(
    requests: &'a [(HeaderMap, WriteRequest)],
    name: &'a str,
) -> impl Iterator<Item = &'a proto::Sample> + 'a {
    requests
        .iter()
        .flat_map(|(_, r)| &r.timeseries)
        .filter(move |t| {
            t.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == name)
        })
        .flat_map(|t| &t.samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_backfills_an_outage_and_counts_refusals() {
    let rx = Receiver::default();
    rx.status.store(200, Ordering::SeqCst);
    let app = Router::new()
        .route("/api/v1/write", post(write))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = Config::parse(
        &format!(
            "[service]\nvantage = \"lab-1\"\n\n[statistics]\nwindow = 5\n\n\
             [defaults]\ntimeout = \"200ms\"\n\n\
             [[target]]\nname = \"dst\"\nhost = \"198.18.0.2\"\ninterval = \"200ms\"\n\n\
             [[remote_write]]\nname = \"loop\"\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\n\
             interval = \"1s\"\nbearer_token = \"s3cret-token\"\nlabels = {{ site = \"here\" }}\n"
        ),
        "hopwatch.toml",
    )
    .unwrap();

    // A store written like the daemon's: a round every 200 ms, flushed often.
    let dir = tempfile::tempdir().unwrap();
    let store_config = StoreConfig {
        flush_interval: Duration::from_millis(300),
        ..StoreConfig::default()
    };
    let store = Arc::new(Store::open(dir.path().join("store"), store_config).unwrap());
    let rounds = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, rounds, stop) = (Arc::clone(&store), Arc::clone(&rounds), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let seq = rounds.fetch_add(1, Ordering::SeqCst);
                store.record_round(&round(seq, now_ms())).unwrap();
                store.flush().unwrap();
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let snapshot: SnapshotSource = {
        let rounds = Arc::clone(&rounds);
        Arc::new(move || {
            let n = rounds.load(Ordering::SeqCst);
            MetricsSnapshot {
                version: "test".into(),
                targets: vec![TargetMetrics {
                    target: "dst".into(),
                    state: "running".into(),
                    loss_ratio: Some(0.0),
                    rounds: n,
                    probes_sent: n,
                    probes_received: n,
                    ..TargetMetrics::default()
                }],
                ..MetricsSnapshot::default()
            }
        })
    };
    let remote = RemoteWrite::start(&config, Arc::clone(&store), snapshot).unwrap();

    let wait = |what: &'static str, check: Box<dyn Fn(&ReceiverStatus) -> bool + Send>| {
        let remote = &remote;
        async move {
            for _ in 0..300 {
                if check(&remote.status()[0]) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{what}: {:?}", remote.status());
        }
    };
    wait("two pushes", Box::new(|s| s.requests_sent >= 2)).await;
    {
        let requests = sys::lock(&rx.requests);
        let (headers, request) = &requests[0];
        assert_eq!(headers["content-encoding"], "snappy");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["x-prometheus-remote-write-version"], "0.1.0");
        assert_eq!(headers["authorization"], "Bearer s3cret-token");
        for series in &request.timeseries {
            let label = |n: &str| {
                series
                    .labels
                    .iter()
                    .find(|l| l.name == n)
                    .map(|l| l.value.as_str())
            };
            assert_eq!(label("vantage"), Some("lab-1"), "{series:?}");
            assert_eq!(label("site"), Some("here"), "{series:?}");
            assert!(series.labels.windows(2).all(|w| w[0].name < w[1].name));
        }
    }

    // An outage: the receiver answers 503 for about 4 s.
    rx.status.store(503, Ordering::SeqCst);
    let cut_from = now_ms();
    wait("a failed push", Box::new(|s| s.failing_since_ms.is_some())).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = remote.status()[0].clone();
    assert!(during.backlog_ticks >= 3, "{during:?}");
    // The error is shown, the URL's path (where receivers keep keys) is not.
    let error = during.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("503") && !error.contains("/api/v1/write"),
        "{error}"
    );
    assert!(during.backlog_seconds(now_ms()) >= 3.0, "{during:?}");
    rx.status.store(200, Ordering::SeqCst);
    let cut_to = now_ms();
    wait(
        "the backfill",
        Box::new(|s| {
            s.samples_backfilled > 0 && s.backlog_ticks == 0 && s.backfill_next_ms.is_none()
        }),
    )
    .await;
    let status = remote.status()[0].clone();
    assert_eq!(status.samples_dropped, 0, "{status:?}");
    {
        let requests = sys::lock(&rx.requests);
        let mut times: Vec<i64> = samples_of(&requests, "hopwatch_target_probes_sent_total")
            .map(|s| s.timestamp)
            .collect();
        times.sort_unstable();
        let span: Vec<i64> = times
            .iter()
            .copied()
            .filter(|t| *t as u64 + 3_000 >= cut_from && *t as u64 <= cut_to + 3_000)
            .collect();
        let gaps: Vec<i64> = span.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|g| *g <= 2_000) && span.len() >= 6,
            "samples around the outage {cut_from}..{cut_to}: {span:?}"
        );
        // The backfilled counters keep counting and never step back.
        let mut by_time: Vec<(i64, f64)> =
            samples_of(&requests, "hopwatch_target_probes_sent_total")
                .map(|s| (s.timestamp, s.value))
                .collect();
        by_time.sort_by_key(|(t, _)| *t);
        assert!(by_time.windows(2).all(|w| w[1].1 >= w[0].1), "{by_time:?}");
        // MOS-like families that rounds do not give are not backfilled, and
        // the window loss is rebuilt: all answered.
        assert!(samples_of(&requests, "hopwatch_target_loss_ratio").all(|s| s.value == 0.0));
    }

    // A refusal is not retried: its samples are dropped.
    rx.status.store(400, Ordering::SeqCst);
    wait("a dropped push", Box::new(|s| s.samples_dropped > 0)).await;
    assert!(remote.status()[0].failing_since_ms.is_none());
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
}

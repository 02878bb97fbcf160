//! No single broken file stops monitoring: a history store and an alert
//! outbox, written normally, then damaged three ways (sled files truncated,
//! overwritten with random bytes, a schema version this release cannot read).
//! The monitor still starts (over a simulated probe engine: no privileges,
//! no packets), each broken database is moved aside byte for byte, fresh ones
//! take new data, and `/healthz`, `/readyz` and `/metrics` (served on
//! loopback) say what happened. Also: a store that cannot even be created
//! runs disabled, and a `[reflector]` whose port is taken is retried until
//! it binds.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopwatch::alerts::{outbox_path, AlertKind, Outbox};
use hopwatch::config::Config;
use hopwatch::model::{HopAnswer, HopSample, RoundRecord, TargetId};
use hopwatch::monitor::components::{self, open_store};
use hopwatch::monitor::{start_reflector, ComponentMode, Monitor};
use hopwatch::probe::correlate::Correlator;
use hopwatch::probe::transport::{OutgoingProbe, SendStamp, TransportError, TxStampId};
use hopwatch::probe::{
    Engine, EngineParts, ProbeTransport, Rtt, SourceSelection, TimestampSource, Ttl,
};
use hopwatch::store::keys::TargetNum;
use hopwatch::store::segment::Segments;
use hopwatch::store::{schema, Store, StoreConfig, ROUNDS_DIR};
use hopwatch::webapi::{NoAlerts, Web};

const T0: u64 = 1_700_002_800_000;

/// A network that never answers: the monitor has no targets anyway.
struct Silent;

impl ProbeTransport for Silent {
    fn send(&self, _probe: &OutgoingProbe<'_>) -> Result<SendStamp, TransportError> {
        Ok(SendStamp {
            user_mono_ns: 0,
            sent_at: std::time::SystemTime::now(),
            kernel_tx: None,
        })
    }

    fn take_tx_stamp(&self, _id: TxStampId) -> Option<u64> {
        None
    }
}

fn sim_engine() -> Engine {
    Engine::from_parts(EngineParts {
        transport: Arc::new(Silent),
        correlator: Arc::new(Correlator::new()),
        source: TimestampSource::Userspace,
        flow_range: 20000..30000,
        max_probes_per_second: None,
        source_selection: SourceSelection::default(),
    })
}

fn round(seq: u64) -> RoundRecord {
    RoundRecord {
        target: TargetId::new("gw").unwrap(),
        seq,
        started_at_ms: T0 + seq * 1000,
        hops: (1..=3u8)
            .map(|ttl| {
                HopSample::answered(
                    Ttl::new(ttl).unwrap(),
                    HopAnswer {
                        responder: IpAddr::from([198, 51, 100, ttl]),
                        rtt: Rtt::from_nanos(u64::from(ttl) * 1_000_000),
                        is_destination: ttl == 3,
                        reply_ttl: None,
                        quote: None,
                    },
                )
            })
            .collect(),
        destination_ttl: Ttl::new(3),
        source: TimestampSource::Kernel,
    }
}

fn config(state_dir: &Path, extra: &str) -> Config {
    let text = format!(
        "[service]\nstate_dir = \"{}\"\n\n[web]\nlisten = \"127.0.0.1:0\"\n\n{extra}",
        state_dir.display()
    );
    Config::parse(&text, state_dir.join("hopwatch.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// Writes a store with rounds and an outbox with its metadata, both closed.
fn write_state(state_dir: &Path) {
    let store = Store::open(state_dir, StoreConfig::default()).unwrap();
    for seq in 0..5 {
        store.record_round(&round(seq)).unwrap();
    }
    store.flush_at(T0 + 10_000).unwrap();
    assert_eq!(
        store
            .rounds(&TargetId::new("gw").unwrap(), T0, T0 + 60_000)
            .unwrap()
            .len(),
        5
    );
    drop(store);
    drop(Outbox::open(&outbox_path(state_dir), &[]).unwrap());
}

/// Every file under `dir`, relative path → bytes.
fn snapshot(dir: &Path, only_sled: bool) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if only_sled && !components::is_store_file(&name) {
            continue;
        }
        if path.is_dir() {
            walk(dir, &path, &mut out);
        } else {
            out.insert(PathBuf::from(&name), std::fs::read(&path).unwrap());
        }
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Truncate,
    Random,
    Schema,
}

/// Damages the store in `state_dir` and the outbox beside it.
fn damage(state_dir: &Path, how: Damage) {
    let outbox = outbox_path(state_dir);
    match how {
        Damage::Truncate => {
            for dir in [state_dir, outbox.as_path()] {
                for name in ["conf", "db"] {
                    let path = dir.join(name);
                    let len = std::fs::metadata(&path).unwrap().len();
                    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    file.set_len(len / 3).unwrap();
                }
            }
        }
        Damage::Random => {
            let mut rng = fastrand::Rng::with_seed(17);
            for dir in [state_dir, outbox.as_path()] {
                for name in ["conf", "db"] {
                    let path = dir.join(name);
                    let len = std::fs::metadata(&path).unwrap().len() as usize;
                    let noise: Vec<u8> = (0..len.max(64)).map(|_| rng.u8(..)).collect();
                    std::fs::write(&path, noise).unwrap();
                }
            }
        }
        Damage::Schema => {
            // What a newer release would have written; the outbox has no
            // schema version, so it stays intact here.
            let db = schema::sled_config(state_dir, 1 << 20).open().unwrap();
            db.open_tree(schema::META)
                .unwrap()
                .insert(b"schema_version", &99u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
    }
}

/// A GET on loopback, HTTP/1.1 with `Connection: close`; the body.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    let body = response.split_once("\r\n\r\n").unwrap().1;
    // Chunked JSON bodies: keep from the first brace to the last.
    if let (Some(a), Some(b)) = (body.find('{'), body.rfind('}')) {
        if !path.starts_with("/metrics") {
            return body[a..=b].to_owned();
        }
    }
    body.to_owned()
}

fn quarantined(state_dir: &Path, name: &str) -> Vec<PathBuf> {
    components::list_quarantined(state_dir)
        .unwrap()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}.quarantined-"))
        })
        .collect()
}

async fn damaged_state_is_quarantined_and_monitoring_goes_on(how: Damage) {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    write_state(&state_dir);
    damage(&state_dir, how);
    let store_before = snapshot(&state_dir, true);
    let outbox_before = snapshot(&outbox_path(&state_dir), false);
    let outbox_damaged = !matches!(how, Damage::Schema);

    let config = config(&state_dir, "");
    let monitor = Arc::new(
        Monitor::start_with_engine(config.clone(), sim_engine())
            .unwrap_or_else(|e| panic!("{how:?}: the monitor must start: {e}")),
    );

    // The broken store is kept, byte for byte, beside a fresh one.
    let [store_copy] = quarantined(&state_dir, "store")
        .try_into()
        .unwrap_or_else(|q| panic!("{how:?}: one store quarantine expected, found {q:?}"));
    // sled rewrites its snapshot (`snap.*`, an index rebuilt from the log)
    // when it opens a database, which the schema check does before refusing;
    // the log and the config, the data itself, are kept byte for byte.
    let data = |files: BTreeMap<PathBuf, Vec<u8>>| -> BTreeMap<PathBuf, Vec<u8>> {
        files
            .into_iter()
            .filter(|(name, _)| !name.to_string_lossy().starts_with("snap."))
            .collect()
    };
    let (store_after, store_before) = (data(snapshot(&store_copy, false)), data(store_before));
    assert!(store_before.contains_key(Path::new("db")), "{how:?}");
    assert!(
        store_after == store_before,
        "{how:?}: the quarantined store differs: {:?} vs {:?}",
        store_after.keys().collect::<Vec<_>>(),
        store_before.keys().collect::<Vec<_>>()
    );
    if matches!(how, Damage::Schema) {
        // Readable by a release that knows the version: the target's number
        // is in sled and its rounds in the quarantined rounds' files.
        let db = schema::sled_config(&store_copy, 1 << 20).open().unwrap();
        let num = db.open_tree(schema::TARGETS).unwrap().get("gw").unwrap();
        let num = TargetNum::from_bytes(&num.expect("gw's number")).unwrap();
        let gw = TargetId::new("gw").unwrap();
        let found = Segments::reader(&store_copy.join(ROUNDS_DIR))
            .read(num, &gw, 0, u64::MAX)
            .unwrap();
        assert_eq!(found.rounds.len(), 5, "{how:?}");
    }
    let outbox_copies = quarantined(&state_dir, "outbox");
    if outbox_damaged {
        assert_eq!(outbox_copies.len(), 1, "{how:?}: {outbox_copies:?}");
        assert!(
            snapshot(&outbox_copies[0], false) == outbox_before,
            "{how:?}: the quarantined outbox differs"
        );
    } else {
        assert!(outbox_copies.is_empty(), "{how:?}: {outbox_copies:?}");
    }

    // The fresh store records new history: none of the old, the new round.
    let store = monitor.store();
    assert!(!store.is_disabled());
    let gw = TargetId::new("gw").unwrap();
    assert!(
        store.rounds(&gw, T0, T0 + 60_000).unwrap().is_empty(),
        "{how:?}"
    );
    store.record_round(&round(30)).unwrap();
    store.flush_at(T0 + 40_000).unwrap();
    let rounds = store.rounds(&gw, T0, T0 + 60_000).unwrap();
    assert_eq!(
        rounds.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [30],
        "{how:?}"
    );

    let states: BTreeMap<&str, ComponentMode> = monitor
        .components()
        .iter()
        .map(|c| (c.component, c.mode))
        .collect();
    let outbox_mode = if outbox_damaged {
        ComponentMode::Fresh
    } else {
        ComponentMode::Ok
    };
    assert_eq!(
        states,
        BTreeMap::from([
            ("store", ComponentMode::Fresh),
            ("outbox", outbox_mode),
            ("probe_engine", ComponentMode::Ok)
        ]),
        "{how:?}"
    );

    // The service raises alerts of its own: `store`, and `outbox` when that
    // was moved aside too, each saying what happened and where the copy is.
    let mut expected = vec![("service:store".to_owned(), AlertKind::Store)];
    if outbox_damaged {
        expected.insert(0, ("service:outbox".to_owned(), AlertKind::Outbox));
    }
    let mut active = Vec::new();
    for _ in 0..100 {
        active = monitor.alerts().active();
        if active.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut raised: Vec<(String, AlertKind)> =
        active.iter().map(|a| (a.target.key(), a.kind)).collect();
    raised.sort();
    assert_eq!(raised, expected, "{how:?}");
    let store_alert = active.iter().find(|a| a.kind == AlertKind::Store).unwrap();
    assert!(
        store_alert
            .summary
            .starts_with("the history store could not be opened")
            && store_alert
                .summary
                .contains(&store_copy.display().to_string()),
        "{how:?}: {}",
        store_alert.summary
    );

    // Health and metrics, over HTTP.
    let web = Web::start(&monitor, &config, None, Arc::new(NoAlerts), None)
        .await
        .unwrap();
    let addr = web.local_addr();
    let health: serde_json::Value = serde_json::from_str(
        &tokio::task::spawn_blocking(move || get(addr, "/healthz"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    let degraded = health["degraded"].as_array().unwrap();
    assert_eq!(degraded[0]["component"], "store", "{health}");
    assert_eq!(degraded[0]["state"], "fresh", "{health}");
    assert_eq!(
        degraded[0]["quarantined"][0],
        store_copy.file_name().unwrap().to_string_lossy().as_ref(),
        "{health}"
    );
    assert_eq!(
        degraded.len(),
        if outbox_damaged { 2 } else { 1 },
        "{health}"
    );
    let ready: serde_json::Value = serde_json::from_str(
        &tokio::task::spawn_blocking(move || get(addr, "/readyz"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        ready["ready"], true,
        "a degraded store does not make the daemon unready"
    );
    assert_eq!(ready["components"][0]["degraded"], true, "{ready}");
    assert_eq!(
        ready["components"][1]["degraded"], outbox_damaged,
        "{ready}"
    );
    // The probe engine's kernel programs lose nothing at this load.
    assert_eq!(
        (
            &ready["components"][2]["component"],
            &ready["components"][2]["state"]
        ),
        (&serde_json::json!("probe_engine"), &serde_json::json!("ok")),
        "{ready}"
    );
    let metrics = tokio::task::spawn_blocking(move || get(addr, "/metrics"))
        .await
        .unwrap();
    let outbox_flag = u8::from(outbox_damaged);
    for line in [
        r#"hopwatch_component_degraded{component="store"} 1"#.to_owned(),
        format!(r#"hopwatch_component_degraded{{component="outbox"}} {outbox_flag}"#),
        r#"hopwatch_component_degraded{component="probe_engine"} 0"#.to_owned(),
        r#"hopwatch_quarantined_files_total{component="store"} 1"#.to_owned(),
        format!(r#"hopwatch_quarantined_files_total{{component="outbox"}} {outbox_flag}"#),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{how:?}: missing {line} in\n{metrics}"
        );
    }
    web.shutdown(Duration::from_secs(1)).await;
    // Requests the web server is finishing hold the monitor for a moment at
    // a time; wait until the last lets go.
    let mut monitor = monitor;
    let mut waits = 0;
    let monitor = loop {
        match Arc::try_unwrap(monitor) {
            Ok(monitor) => break monitor,
            Err(shared) => {
                waits += 1;
                assert!(waits < 250, "the web server kept the monitor for 5 s");
                monitor = shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    monitor.shutdown().await;

    // Both fresh databases open normally next time.
    drop(Store::open(&state_dir, StoreConfig::default()).expect("the fresh store reopens"));
    drop(Outbox::open(&outbox_path(&state_dir), &[]).expect("the fresh outbox reopens"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_store_and_outbox_are_quarantined() {
    damaged_state_is_quarantined_and_monitoring_goes_on(Damage::Truncate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_in_store_and_outbox_are_quarantined() {
    damaged_state_is_quarantined_and_monitoring_goes_on(Damage::Random).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_another_schema_version_is_quarantined() {
    damaged_state_is_quarantined_and_monitoring_goes_on(Damage::Schema).await;
}

/// Root ignores file permissions, so "cannot be created" is a state directory
/// that is a regular file: neither the store nor a fresh one can open, and
/// nothing can be moved aside inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_created_runs_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::write(&state_dir, b"not a directory").unwrap();
    let opened = open_store(&state_dir, StoreConfig::default());
    assert_eq!(opened.status.mode, ComponentMode::Disabled);
    assert!(opened.status.error.is_some());
    let store = opened.store;
    assert!(store.is_disabled());
    store.record_round(&round(1)).unwrap();
    assert!(store.flush().is_err(), "a disabled store keeps nothing");
    assert_eq!(store.metrics().dropped_rounds_total, 1);
    assert!(!store.health().ok);
    assert_eq!(
        std::fs::read(&state_dir).unwrap(),
        b"not a directory",
        "untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_that_cannot_bind_is_retried_until_it_does() {
    let blocker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = blocker.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &format!("[reflector]\nlisten = [\"{addr}\"]\ntcp = false\n"),
    );
    let settings = config.reflector.clone().unwrap();
    let slot = Arc::new(Mutex::new(None));
    let (status, retry) = start_reflector(settings, Arc::clone(&slot), Duration::from_millis(100));
    let retry = retry.expect("a failed bind leaves a retry task");
    {
        let status = status.lock().unwrap();
        assert_eq!(status.mode, ComponentMode::Retrying);
        assert!(
            status.error.as_deref().unwrap().contains(&addr.to_string()),
            "{status:?}"
        );
    }
    assert!(slot.lock().unwrap().is_none());
    // Still taken after a few retries.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(slot.lock().unwrap().is_none());
    assert_eq!(status.lock().unwrap().mode, ComponentMode::Retrying);

    drop(blocker);
    tokio::time::timeout(Duration::from_secs(5), retry)
        .await
        .expect("the retry binds once the port is free")
        .unwrap();
    assert_eq!(status.lock().unwrap().mode, ComponentMode::Ok);
    let reflector = slot.lock().unwrap().take().expect("the reflector runs");
    assert_eq!(reflector.local_addrs(), [addr]);
    reflector.stop();
}

/// The monitor itself starts while its reflector cannot bind, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_starts_while_its_reflector_cannot_bind() {
    let blocker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = blocker.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &format!("[reflector]\nlisten = [\"{addr}\"]\ntcp = false\n"),
    );
    let monitor = Monitor::start_with_engine(config, sim_engine()).expect("starts");
    let reflector = monitor
        .components()
        .into_iter()
        .find(|c| c.component == "reflector")
        .expect("reported");
    assert_eq!(reflector.mode, ComponentMode::Retrying);
    monitor.shutdown().await;
    drop(blocker);
}

/// `hopwatch check` opens the store and outbox on copies, says which do not
/// open, lists quarantined copies, and leaves the originals untouched.
#[test]
fn check_reports_what_opens_and_what_was_quarantined() {
    use hopwatch::cli::check::{storage_checks, Level};
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    write_state(&state_dir);
    let findings = storage_checks(&state_dir);
    let level_of = |findings: &[hopwatch::cli::check::Finding], what: &str| {
        findings
            .iter()
            .find(|f| f.what == what)
            .unwrap_or_else(|| panic!("no {what} in {findings:?}"))
            .clone()
    };
    assert_eq!(
        level_of(&findings, "history store").level,
        Level::Ok,
        "{findings:?}"
    );
    assert_eq!(
        level_of(&findings, "alert outbox").level,
        Level::Ok,
        "{findings:?}"
    );
    assert_eq!(
        level_of(&findings, "quarantine").level,
        Level::Ok,
        "{findings:?}"
    );

    damage(&state_dir, Damage::Schema);
    let before = snapshot(&state_dir, true);
    std::fs::create_dir(state_dir.join("outbox.quarantined-20260101T000000Z")).unwrap();
    let findings = storage_checks(&state_dir);
    let store = level_of(&findings, "history store");
    assert_eq!(store.level, Level::Warn, "{findings:?}");
    assert!(
        store.detail.contains("schema version 99"),
        "{}",
        store.detail
    );
    assert_eq!(
        level_of(&findings, "alert outbox").level,
        Level::Ok,
        "{findings:?}"
    );
    let q = level_of(&findings, "quarantine");
    assert_eq!(q.level, Level::Warn);
    assert!(
        q.detail.contains("outbox.quarantined-20260101T000000Z"),
        "{}",
        q.detail
    );
    assert!(
        snapshot(&state_dir, true) == before,
        "the check opened copies only"
    );

    // While a daemon holds the store, it is neither copied nor opened.
    let held = Store::open(dir.path().join("held"), StoreConfig::default()).unwrap();
    let findings = storage_checks(held.path());
    let store = level_of(&findings, "history store");
    assert!(store.detail.contains("in use"), "{}", store.detail);
}

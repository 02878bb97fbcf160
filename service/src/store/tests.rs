//! Store behaviour through its public API on a real sled directory: schema
//! checks, batching, rollups against raw data, late rounds, crash-lost
//! rollups, retention, the write-buffer cap, events and the flusher thread.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::model::{BranchIndex, HopSample};
use crate::probe::{TimestampSource, Ttl};
use crate::store::keys::{self, rollup_key, SeriesNum};
use crate::store::rollup::STORED_GROUPING_POWER;
use crate::store::segment::Segments;

/// An hour boundary, so minute and hour buckets line up with the data.
const T0: u64 = 1_700_002_800_000;

fn id(name: &str) -> TargetId {
    TargetId::new(name).unwrap()
}

/// A 10-hop round: TTL k answers in about k ms (whole microseconds, the
/// stored resolution); TTL 4 drops every 7th probe and the destination
/// (TTL 10) every 13th round.
fn round(target: &str, seq: u64, at_ms: u64) -> RoundRecord {
    let dest_lost = seq.is_multiple_of(13);
    let hops = (1..=10u8)
        .map(|ttl| {
            let lost = (ttl == 4 && seq.is_multiple_of(7)) || (ttl == 10 && dest_lost);
            let rtt_ns = (!lost).then(|| {
                ttl as u64 * 1_000_000 + (seq * 7919 + ttl as u64 * 104_729) % 900 * 1_000
            });
            HopSample::answered_or_lost(ttl, IpAddr::from([10, 0, ttl, 1]), rtt_ns, ttl == 10)
        })
        .collect();
    RoundRecord {
        target: id(target),
        seq,
        started_at_ms: at_ms,
        hops,
        destination_ttl: (!dest_lost).then(|| Ttl::new(10).unwrap()),
        source: TimestampSource::Ebpf,
    }
}

fn open(path: &Path) -> Store {
    Store::open_at(path, StoreConfig::default(), T0).unwrap()
}

/// Writes `seconds` rounds of `target`, one per second from `T0`.
fn write_rounds(store: &Store, target: &str, seconds: u64) {
    for s in 0..seconds {
        store
            .record_round(&round(target, s, T0 + s * 1000))
            .unwrap();
    }
}

/// Nearest-rank percentile, as the histogram defines it.
fn exact_percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Checks a rollup point against the raw samples it covers.
fn check_point(point: &Point, raw: &[&Point]) {
    let sent: u64 = raw.iter().map(|p| p.sent).sum();
    let lost: u64 = raw.iter().map(|p| p.lost).sum();
    let mut values: Vec<u64> = raw.iter().filter_map(|p| p.min_ns).collect();
    values.sort_unstable();
    assert_eq!((point.sent, point.lost), (sent, lost), "at {}", point.at_ms);
    assert_eq!(point.min_ns, values.first().copied());
    assert_eq!(point.max_ns, values.last().copied());
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let sd = (values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    assert!((point.avg_ns.unwrap() - mean).abs() < 1e-6 * mean);
    assert!((point.stddev_ns.unwrap() - sd).abs() < 1e-6 * sd.max(1.0));
    let tolerance = 2f64.powi(-(STORED_GROUPING_POWER as i32));
    for (q, got) in [
        (0.5, point.p50_ns),
        (0.95, point.p95_ns),
        (0.99, point.p99_ns),
    ] {
        let want = exact_percentile(&values, q) as f64;
        let got = got.unwrap() as f64;
        assert!(
            (got - want).abs() <= tolerance * want,
            "p{q} at {}: {got} vs {want}",
            point.at_ms
        );
    }
}

/// Checks every rollup point of `rollups` against the raw points in its bucket.
fn check_rollups_against_raw(rollups: &Series, raw: &Series) {
    let width = rollups.interval_ms;
    assert!(!rollups.points.is_empty());
    for point in &rollups.points {
        let inside: Vec<&Point> = raw
            .points
            .iter()
            .filter(|p| p.at_ms >= point.at_ms && p.at_ms < point.at_ms + width)
            .collect();
        check_point(point, &inside);
    }
    let all: Vec<&Point> = raw.points.iter().collect();
    check_point(&rollups.total, &all);
}

#[test]
fn an_empty_directory_is_initialised_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/store");
    drop(open(&path));
    assert!(path.join("db").exists() || path.join("conf").exists());
    let store = open(&path);
    assert!(store.targets().is_empty());
}

#[test]
fn a_newer_schema_version_is_refused_naming_path_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    schema::force_schema_version(dir.path(), 7);
    let err = Store::open(dir.path(), StoreConfig::default())
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 7,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("version 7") && message.contains("version 1"),
        "{message}"
    );
}

#[test]
fn data_without_a_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = schema::open_waiting_for_lock(&schema::sled_config(dir.path(), 1 << 20)).unwrap();
        db.insert(b"someone else's", b"data").unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path(), StoreConfig::default())
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::SchemaMissing { .. }), "{err:?}");
}

#[test]
fn writes_wait_for_the_flush_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    write_rounds(&store, "a", 100);
    let a = id("a");
    assert_eq!(
        store.rounds(&a, 0, u64::MAX).unwrap().len(),
        100,
        "reads see the write buffer"
    );
    assert!(
        Segments::reader(&dir.path().join(ROUNDS_DIR))
            .files()
            .unwrap()
            .is_empty(),
        "nothing on disk before the flush"
    );
    // Packed: a few bytes per hop sample, not postcard's twelve or more.
    let pending = store.health().pending_bytes;
    assert!((100 * 20..100 * 60).contains(&pending), "pending {pending}");
    assert_eq!(store.metrics().pending_bytes, pending);

    let report = store.flush_at(T0 + 100_000).unwrap();
    assert_eq!(report.rounds, 100);
    // The rounds went to the files as one compressed chunk, far smaller
    // than their buffered form; the target's name and the first minute's
    // rollups went to sled.
    assert!(
        report.bytes > 0 && report.bytes < pending,
        "{report:?} vs pending {pending}"
    );
    assert_eq!(store.metrics().write_bytes_total, report.bytes);
    assert_eq!(store.health().pending_bytes, 0);
    assert_eq!(store.rounds(&a, 0, u64::MAX).unwrap().len(), 100);

    // A flush with nothing new to write or roll up writes nothing.
    let idle = store.flush_at(T0 + 100_000).unwrap();
    assert_eq!((idle.bytes, idle.rounds, idle.rollups), (0, 0, 0));

    drop(store);
    let store = open(dir.path());
    let rounds = store.rounds(&a, 0, u64::MAX).unwrap();
    assert_eq!(rounds.len(), 100);
    assert_eq!(rounds[42], round("a", 42, T0 + 42_000));
    assert_eq!(store.last_round(&a).unwrap().unwrap().seq, 99);
}

#[test]
fn target_numbers_are_stable_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.record_round(&round("a", 1, T0)).unwrap();
    store.record_round(&round("b", 2, T0)).unwrap();
    store.flush_at(T0 + 1_000).unwrap();
    drop(store);
    let store = open(dir.path());
    store.record_round(&round("c", 3, T0)).unwrap();
    store.flush_at(T0 + 1_000).unwrap();
    assert_eq!(store.targets(), vec![id("a"), id("b"), id("c")]);
    for (name, seq) in [("a", 1), ("b", 2), ("c", 3)] {
        let rounds = store.rounds(&id(name), 0, u64::MAX).unwrap();
        assert_eq!(
            rounds.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![seq],
            "{name}"
        );
    }
}

#[test]
fn rollups_match_statistics_computed_from_raw_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    write_rounds(&store, "a", 3 * 3600);
    store.flush_at(T0 + 3 * HOUR_MS + MINUTE_MS).unwrap();
    let a = id("a");
    let to = T0 + 3 * HOUR_MS;
    for hop in [Hop::Destination, Hop::Ttl(1), Hop::Ttl(4), Hop::Ttl(10)] {
        let raw = store.series(&a, hop, T0, to, Resolution::Raw).unwrap();
        assert_eq!(raw.points.len(), 3 * 3600);
        let minutes = store.series(&a, hop, T0, to, Resolution::Minute).unwrap();
        assert_eq!(minutes.points.len(), 180, "{hop}");
        check_rollups_against_raw(&minutes, &raw);
        let hours = store.series(&a, hop, T0, to, Resolution::Hour).unwrap();
        assert_eq!(hours.points.len(), 3, "{hop}");
        check_rollups_against_raw(&hours, &raw);
    }
    // The loss pattern is visible where it was injected.
    let ttl4 = store
        .series(&a, Hop::Ttl(4), T0, to, Resolution::Hour)
        .unwrap();
    assert_eq!(
        ttl4.total.lost,
        (0..3 * 3600u64).filter(|s| s.is_multiple_of(7)).count() as u64
    );
    let dest = store
        .series(&a, Hop::Destination, T0, to, Resolution::Hour)
        .unwrap();
    assert_eq!(
        dest.total.lost,
        (0..3 * 3600u64).filter(|s| s.is_multiple_of(13)).count() as u64
    );
}

#[test]
fn auto_resolution_follows_the_span() {
    assert_eq!(Resolution::Auto.resolve(6 * HOUR_MS), Resolution::Raw);
    assert_eq!(
        Resolution::Auto.resolve(6 * HOUR_MS + 1),
        Resolution::Minute
    );
    assert_eq!(
        Resolution::Auto.resolve(7 * 24 * HOUR_MS),
        Resolution::Minute
    );
    assert_eq!(
        Resolution::Auto.resolve(30 * 24 * HOUR_MS),
        Resolution::Hour
    );
    assert_eq!(Resolution::Hour.resolve(1), Resolution::Hour);
    assert_eq!("1m".parse::<Resolution>().unwrap(), Resolution::Minute);
    assert!("5m".parse::<Resolution>().is_err());

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    write_rounds(&store, "a", 2 * 3600);
    store.flush_at(T0 + 3 * HOUR_MS).unwrap();
    let a = id("a");
    let day = store
        .series(
            &a,
            Hop::Destination,
            T0,
            T0 + 24 * HOUR_MS,
            Resolution::Auto,
        )
        .unwrap();
    assert_eq!(
        (day.resolution, day.interval_ms, day.points.len()),
        (Resolution::Minute, MINUTE_MS, 120)
    );
    let month = store.series(
        &a,
        Hop::Destination,
        T0,
        T0 + 30 * 24 * HOUR_MS,
        Resolution::Auto,
    );
    assert_eq!(month.unwrap().points.len(), 2);
    assert!(matches!(
        store.series(&a, Hop::Ttl(0), T0, T0 + 1, Resolution::Raw),
        Err(StoreError::InvalidTtl)
    ));
    assert!(matches!(
        store.series(&a, Hop::Destination, 5, 4, Resolution::Raw),
        Err(StoreError::InvalidRange { .. })
    ));
    let unknown = store
        .series(&id("zz"), Hop::Destination, T0, T0 + 1, Resolution::Raw)
        .unwrap();
    assert!(unknown.points.is_empty());
}

#[test]
fn a_late_round_recomputes_its_minute_and_hour() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let late = 30; // second 30 of the first minute
    for s in (0..2 * 3600).filter(|&s| s != late) {
        store.record_round(&round("a", s, T0 + s * 1000)).unwrap();
    }
    store.flush_at(T0 + 2 * HOUR_MS + MINUTE_MS).unwrap();
    let a = id("a");
    let first = |res| {
        store
            .series(&a, Hop::Destination, T0, T0 + MINUTE_MS, res)
            .unwrap()
            .points[0]
            .sent
    };
    assert_eq!(
        (first(Resolution::Minute), first(Resolution::Hour)),
        (59, 3599)
    );

    store
        .record_round(&round("a", late, T0 + late * 1000))
        .unwrap();
    store
        .flush_at(T0 + 2 * HOUR_MS + MINUTE_MS + 5_000)
        .unwrap();
    assert_eq!(
        (first(Resolution::Minute), first(Resolution::Hour)),
        (60, 3600)
    );
    let raw = store
        .series(&a, Hop::Ttl(3), T0, T0 + HOUR_MS, Resolution::Raw)
        .unwrap();
    let hour = store
        .series(&a, Hop::Ttl(3), T0, T0 + HOUR_MS, Resolution::Hour)
        .unwrap();
    check_rollups_against_raw(&hour, &raw);
}

#[test]
fn an_hour_closed_early_is_completed_after_a_restart() {
    // A restart whose clock closed an hour that then gets more rounds (the
    // crash test's writer and a daemon restarted with a clock behind the
    // last catch-up both do this).
    let dir = tempfile::tempdir().unwrap();
    let a = id("a");
    {
        let store = open(dir.path());
        write_rounds(&store, "a", 650);
        store.flush_at(T0 + 5 * HOUR_MS).unwrap();
        let hour = store.series(&a, Hop::Destination, T0, T0 + HOUR_MS, Resolution::Hour);
        assert_eq!(hour.unwrap().points[0].sent, 650);
    }
    let store = Store::open_at(dir.path(), StoreConfig::default(), T0 + 650_000).unwrap();
    for s in 650..2 * 3600 {
        store.record_round(&round("a", s, T0 + s * 1000)).unwrap();
        if s.is_multiple_of(5) {
            store.flush_at(T0 + s * 1000).unwrap();
        }
    }
    store.flush_at(T0 + 2 * HOUR_MS + MINUTE_MS).unwrap();
    let raw = store
        .series(&a, Hop::Ttl(7), T0, T0 + 2 * HOUR_MS, Resolution::Raw)
        .unwrap();
    let hours = store
        .series(&a, Hop::Ttl(7), T0, T0 + 2 * HOUR_MS, Resolution::Hour)
        .unwrap();
    assert_eq!(
        hours.points.iter().map(|p| p.sent).collect::<Vec<_>>(),
        vec![3600, 3600]
    );
    check_rollups_against_raw(&hours, &raw);
    let minutes = store
        .series(&a, Hop::Ttl(7), T0, T0 + 2 * HOUR_MS, Resolution::Minute)
        .unwrap();
    check_rollups_against_raw(&minutes, &raw);
}

#[test]
fn rollups_lost_in_a_crash_are_recomputed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let now = T0 + 2 * HOUR_MS + MINUTE_MS;
    let a = id("a");
    let (minutes, hours) = {
        let store = open(dir.path());
        write_rounds(&store, "a", 2 * 3600);
        store.flush_at(now).unwrap();
        let m = store
            .series(&a, Hop::Ttl(2), T0, now, Resolution::Minute)
            .unwrap();
        let h = store
            .series(&a, Hop::Ttl(2), T0, now, Resolution::Hour)
            .unwrap();
        assert_eq!((m.points.len(), h.points.len()), (120, 2));
        (m, h)
    };
    // What a crash before the second hour's minutes and its hour rollup
    // reached their files leaves: neither. T0 is 23:00 UTC, so the second
    // hour is the first of the next day's hour file.
    {
        let rollups = dir.path().join(super::ROLLUPS_DIR);
        let mut second_hour = 0;
        for entry in std::fs::read_dir(&rollups).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name.starts_with(&format!("m1-{:013}-", T0 + HOUR_MS))
                || name.starts_with(&format!("h1-{:013}-", T0 + HOUR_MS))
            {
                std::fs::remove_file(&path).unwrap();
                second_hour += 1;
            }
        }
        assert_eq!(second_hour, 2, "the second hour's minute and hour files");
    }
    let store = Store::open_at(dir.path(), StoreConfig::default(), now).unwrap();
    assert_eq!(
        store
            .series(&a, Hop::Ttl(2), T0, now, Resolution::Minute)
            .unwrap(),
        minutes
    );
    assert_eq!(
        store
            .series(&a, Hop::Ttl(2), T0, now, Resolution::Hour)
            .unwrap(),
        hours
    );
}

#[test]
fn retention_sweeps_delete_only_expired_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = id("a");
    write_rounds(&store, "a", 3 * 3600);
    let event = StoredEvent {
        target: a.clone(),
        at_ms: T0 + 1,
        kind: "route_change".into(),
        payload: serde_json::json!({"hop": 3}),
    };
    store.record_event(&event).unwrap();
    store.flush_at(T0 + 3 * HOUR_MS + MINUTE_MS).unwrap();
    let count = |res| {
        store
            .series(&a, Hop::Destination, 0, u64::MAX / 2, res)
            .unwrap()
            .points
            .len()
    };
    assert_eq!(
        (
            count(Resolution::Raw),
            count(Resolution::Minute),
            count(Resolution::Hour)
        ),
        (10_800, 180, 3)
    );

    let day = 24 * HOUR_MS;
    // Raw rounds are kept 48 h, by whole hours of files: 90 minutes past
    // the cutoff, the first hour's file is gone and the second is kept
    // until its last round expires.
    store.flush_at(T0 + 2 * day + 90 * MINUTE_MS).unwrap();
    assert_eq!(
        (
            count(Resolution::Raw),
            count(Resolution::Minute),
            count(Resolution::Hour)
        ),
        (7_200, 180, 3)
    );
    // Minute rollups are kept 30 days, by whole hours of files too: the
    // first hour's minutes are gone, the second hour's kept.
    store.flush_at(T0 + 30 * day + 90 * MINUTE_MS).unwrap();
    assert_eq!(
        (
            count(Resolution::Raw),
            count(Resolution::Minute),
            count(Resolution::Hour)
        ),
        (0, 120, 3)
    );
    assert_eq!(store.events(&a, 0, u64::MAX).unwrap(), vec![event]);
    // Events are kept 90 days, hour rollups 365, by whole days of files:
    // T0 is 23:00 UTC, so its hour is the first day's file, and the next
    // two hours are the second day's, kept until the last of them expires.
    assert_eq!(T0 % day, 23 * HOUR_MS);
    store.flush_at(T0 + 91 * day).unwrap();
    assert!(store.events(&a, 0, u64::MAX).unwrap().is_empty());
    store.flush_at(T0 + 365 * day + 2 * HOUR_MS).unwrap();
    assert_eq!((count(Resolution::Minute), count(Resolution::Hour)), (0, 2));
    store.flush_at(T0 + 366 * day + 2 * HOUR_MS).unwrap();
    assert_eq!(count(Resolution::Hour), 0);
    assert_eq!(
        store.metrics().swept_keys_total,
        // Three hours' files of rounds, three of minute rollups, the event
        // and two days' files of hour rollups.
        3 + 3 + 1 + 2
    );
    // A sweep is not due again within the sweep interval.
    assert_eq!(
        store
            .flush_at(T0 + 366 * day + 2 * HOUR_MS + 1_000)
            .unwrap()
            .swept,
        0
    );
}

#[test]
fn the_write_buffer_cap_drops_the_oldest_rounds_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    // Packed, these 10-hop rounds take about 36 bytes each.
    let config = StoreConfig {
        max_pending_bytes: 1_500,
        ..StoreConfig::default()
    };
    let store = Store::open_at(dir.path(), config, T0).unwrap();
    write_rounds(&store, "a", 100);
    let dropped = store.metrics().dropped_rounds_total;
    assert!(dropped > 50, "dropped {dropped}");
    assert!(store.health().pending_bytes <= 1_500);
    store.flush_at(T0 + 100_000).unwrap();
    let seqs: Vec<u64> = store
        .rounds(&id("a"), 0, u64::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs.len() as u64 + dropped, 100);
    assert_eq!(
        seqs,
        (dropped..100).collect::<Vec<_>>(),
        "the newest rounds are kept"
    );
}

#[test]
fn events_are_listed_by_target_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ev = |target: &str, at_ms, kind: &str| StoredEvent {
        target: id(target),
        at_ms,
        kind: kind.into(),
        payload: serde_json::json!({"before": ["10.0.0.1"], "after": ["10.0.0.2"], "at": at_ms}),
    };
    let events = [
        ev("a", T0 + 5, "route_change"),
        ev("b", T0 + 6, "alert"),
        ev("a", T0 + 5, "alert"), // same millisecond as the first
        ev("a", T0 + 9_000, "hop_count"),
    ];
    for e in &events {
        store.record_event(e).unwrap();
    }
    store.flush_at(T0 + 10_000).unwrap();
    let a = store.events(&id("a"), T0, T0 + 10_000).unwrap();
    assert_eq!(a.len(), 3);
    assert!(a.contains(&events[0]) && a.contains(&events[2]));
    assert_eq!(a[2], events[3]);
    assert_eq!(store.events(&id("a"), T0 + 6, T0 + 9_000).unwrap(), vec![]);
    assert_eq!(
        store.events(&id("b"), 0, u64::MAX).unwrap(),
        vec![events[1].clone()]
    );
}

#[test]
fn the_flusher_thread_writes_on_its_interval_and_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        flush_interval: Duration::from_millis(50),
        ..StoreConfig::default()
    };
    let store = Arc::new(Store::open(dir.path(), config).unwrap());
    let flusher = store.spawn_flusher().unwrap();
    let a = id("a");
    let now = now_ms();
    store.record_round(&round("a", 1, now)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.rounds(&a, 0, u64::MAX).unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the flusher never wrote"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    flusher.stop();
    let flushes = store.metrics().flushes_total;
    store.record_round(&round("a", 2, now + 1_000)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        store.metrics().flushes_total,
        flushes,
        "a stopped flusher does not flush"
    );
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(
        store.rounds(&a, 0, u64::MAX).unwrap().len(),
        2,
        "dropping the store flushed"
    );
}

/// What a hopwatch before the rounds' files left: a sled value per round.
/// Those rounds are read (and rolled up) beside the files' until they expire.
#[test]
fn rounds_an_older_hopwatch_kept_in_sled_are_read_with_the_files() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        let db = schema::open_waiting_for_lock(&schema::sled_config(dir.path(), 1 << 20)).unwrap();
        db.open_tree(schema::TARGETS)
            .unwrap()
            .insert("old", &TargetNum(7).to_bytes())
            .unwrap();
        let raw = db.open_tree(schema::RAW).unwrap();
        for s in 0..90 {
            let round = round("old", s, T0 + s * 1_000);
            raw.insert(
                keys::raw_key(TargetNum(7), round.started_at_ms),
                codec::encode(&codec::RawRoundV1::from_round(&round)),
            )
            .unwrap();
        }
        db.flush().unwrap();
    }
    let old = id("old");
    let store = open(dir.path());
    // The daemon carries on after the upgrade: the next rounds go to files.
    for s in 90..150 {
        store
            .record_round(&round("old", s, T0 + s * 1_000))
            .unwrap();
    }
    store.flush_at(T0 + 3 * MINUTE_MS + 20_000).unwrap();
    let rounds = store.rounds(&old, 0, u64::MAX).unwrap();
    assert_eq!(rounds.len(), 150);
    assert_eq!(rounds[10], round("old", 10, T0 + 10_000), "from sled");
    assert_eq!(rounds[100], round("old", 100, T0 + 100_000), "from a file");
    assert_eq!(store.last_round(&old).unwrap().unwrap().seq, 149);
    let raw = store
        .series(&old, Hop::Ttl(4), T0, T0 + 3 * MINUTE_MS, Resolution::Raw)
        .unwrap();
    let minutes = store
        .series(
            &old,
            Hop::Ttl(4),
            T0,
            T0 + 3 * MINUTE_MS,
            Resolution::Minute,
        )
        .unwrap();
    assert_eq!(minutes.points.len(), 3, "minute 1 spans sled and a file");
    check_rollups_against_raw(&minutes, &raw);
}

/// A power cut between two flushes: what the files held is all there after
/// the reopen, the open minute's rollups are computed from the files, and a
/// torn record at a file's end costs only itself.
#[test]
fn after_a_power_cut_the_files_are_read_and_a_torn_tail_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let a = id("a");
    {
        let store = open(dir.path());
        write_rounds(&store, "a", 150);
        // Minutes 0 and 1 close; minute 2's 30 rounds are in the file only.
        store.flush_at(T0 + 150_000).unwrap();
        // Nothing is buffered, so dropping it writes nothing more.
        drop(store);
    }
    let rounds_dir = dir.path().join(ROUNDS_DIR);
    let (_, file) = Segments::reader(&rounds_dir).files().unwrap().remove(0);
    // An append the cut interrupted.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend(b"hwR1 half a record");
    std::fs::write(&file, &bytes).unwrap();
    let store = Store::open_at(dir.path(), StoreConfig::default(), T0 + 200_000).unwrap();
    assert_eq!(store.rounds(&a, 0, u64::MAX).unwrap().len(), 150);
    let minutes = store
        .series(&a, Hop::Destination, T0, T0 + 200_000, Resolution::Minute)
        .unwrap();
    let sent: Vec<u64> = minutes.points.iter().map(|p| p.sent).collect();
    assert_eq!(sent, [60, 60, 30], "minute 2 rolled up from the file");
    assert_eq!(
        store.metrics().corrupt_values_total,
        0,
        "a torn tail is not corruption"
    );
}

#[test]
fn minute_flushes_come_just_after_each_minute_closes() {
    let minute = Duration::from_secs(60);
    let offset = Duration::from_secs(16);
    // At 10:00:05 the next flush is at 10:00:16, then every minute after.
    assert_eq!(
        until_next_flush(T0 + 5_000, minute, offset),
        Duration::from_secs(11)
    );
    assert_eq!(
        until_next_flush(T0 + 16_000, minute, offset),
        Duration::from_secs(60)
    );
    assert_eq!(
        until_next_flush(T0 + 59_000, minute, offset),
        Duration::from_secs(17)
    );
    // A short interval keeps its own grid.
    let second = Duration::from_secs(1);
    assert_eq!(
        until_next_flush(T0 + 200, second, offset),
        Duration::from_millis(800)
    );
}

#[test]
fn recent_rounds_of_many_targets_come_from_one_read_each_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    write_rounds(&store, "a", 120);
    write_rounds(&store, "b", 100);
    store.flush_at(T0 + 130_000).unwrap();
    // b's last 20 rounds are still in the buffer.
    for s in 100..120 {
        store.record_round(&round("b", s, T0 + s * 1000)).unwrap();
    }
    let found = store
        .recent_rounds(
            &[
                (id("a"), T0 + 60_000),
                (id("b"), T0 + 90_000),
                (id("never-seen"), T0),
            ],
            T0 + 200_000,
        )
        .unwrap();
    let seqs = |name: &str| -> Vec<u64> { found[&id(name)].iter().map(|r| r.seq).collect() };
    assert_eq!(seqs("a"), (60..120).collect::<Vec<_>>());
    assert_eq!(seqs("b"), (90..120).collect::<Vec<_>>());
    assert!(!found.contains_key(&id("never-seen")));
}

#[test]
fn minutes_not_yet_in_a_section_come_back_from_the_rounds_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let a = id("a");
    let now = T0 + 25 * MINUTE_MS + 10_000;
    let before = {
        let store = open(dir.path());
        write_rounds(&store, "a", 25 * 60);
        store.flush_at(now).unwrap();
        assert!(
            store.minutes.pending() > 0,
            "minutes after the last ten-minute boundary wait in memory"
        );
        let files: Vec<_> = std::fs::read_dir(dir.path().join(super::ROLLUPS_DIR))
            .unwrap()
            .collect();
        assert_eq!(files.len(), 1, "one section file for the hour");
        store
            .series(&a, Hop::Ttl(3), T0, now, Resolution::Minute)
            .unwrap()
    };
    assert_eq!(before.points.len(), 24, "minutes 0..24 closed");
    // The store was dropped without writing its memory: reopening rolls the
    // minutes since the last section up again from the rounds' files.
    let store = Store::open_at(dir.path(), StoreConfig::default(), now).unwrap();
    let after = store
        .series(&a, Hop::Ttl(3), T0, now, Resolution::Minute)
        .unwrap();
    assert_eq!(after, before);
}

/// A store an older hopwatch wrote keeps its minute rollups in sled's `m1`
/// tree (one value per target, series and minute): they are read beside the
/// minute files, and the hours after the upgrade roll up from the files.
#[test]
fn minute_rollups_an_older_hopwatch_kept_in_sled_are_read_with_the_files() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let old_minute = |m: u64| {
        let mut acc = crate::store::rollup::SeriesAcc::default();
        for i in 0..60 {
            acc.push(Some(4_000_000 + m * 1_000 + i));
        }
        acc.finish(&mut crate::store::rollup::scratch_histogram())
    };
    {
        let db = schema::open_waiting_for_lock(&schema::sled_config(dir.path(), 1 << 20)).unwrap();
        db.open_tree(schema::TARGETS)
            .unwrap()
            .insert("old", &TargetNum(7).to_bytes())
            .unwrap();
        let m1 = db.open_tree(schema::MINUTES).unwrap();
        let h1 = db.open_tree(schema::HOURS).unwrap();
        let mut hour = crate::store::rollup::Stats::default();
        for m in 0..60 {
            let stats = old_minute(m);
            hour.merge(&stats);
            m1.insert(
                rollup_key(TargetNum(7), SeriesNum(4), T0 + m * MINUTE_MS),
                codec::encode(&stats.to_value()),
            )
            .unwrap();
        }
        h1.insert(
            rollup_key(TargetNum(7), SeriesNum(4), T0),
            codec::encode(&hour.to_value()),
        )
        .unwrap();
        db.flush().unwrap();
    }
    let old = id("old");
    let store = Store::open_at(dir.path(), StoreConfig::default(), T0 + HOUR_MS).unwrap();
    for s in 0..3600 {
        store
            .record_round(&round("old", s, T0 + HOUR_MS + s * 1_000))
            .unwrap();
    }
    let now = T0 + 2 * HOUR_MS + MINUTE_MS;
    store.flush_at(now).unwrap();
    let minutes = store
        .series(&old, Hop::Ttl(4), T0, now, Resolution::Minute)
        .unwrap();
    assert_eq!(
        minutes.points.len(),
        120,
        "an hour from sled, an hour from files"
    );
    assert_eq!(
        minutes.points[7],
        old_minute(7).to_point(T0 + 7 * MINUTE_MS)
    );
    let raw = store
        .series(&old, Hop::Ttl(4), T0 + HOUR_MS, now, Resolution::Raw)
        .unwrap();
    let new_minutes = store
        .series(&old, Hop::Ttl(4), T0 + HOUR_MS, now, Resolution::Minute)
        .unwrap();
    check_rollups_against_raw(&new_minutes, &raw);
    let hours = store
        .series(&old, Hop::Ttl(4), T0, now, Resolution::Hour)
        .unwrap();
    assert_eq!(hours.points.len(), 2);
    assert_eq!(hours.points[0].sent, 3600);
    assert_eq!(
        hours.points[1].sent, 3600,
        "the new hour rolled up from the files"
    );
    assert!(
        dir.path().join(ROLLUPS_DIR).read_dir().unwrap().count() > 0,
        "the new minutes went to files"
    );
}

/// The crash test's story (`tests/store_crash.rs`): a writer on a clock a
/// day behind the reopening process, killed right after an hour's last
/// round while its next append left only an empty file for the new hour.
/// The wall-clock reopen's minute sections claim the whole hour, so the
/// open must look behind the empty file for the newest round and roll the
/// minutes before it up again.
#[test]
fn a_clock_behind_the_claims_and_an_empty_newest_file_lose_no_minute() {
    let dir = tempfile::tempdir().unwrap();
    let a = id("a");
    let later = T0 + 24 * HOUR_MS;
    let mut seq = 0;
    for end in [2675u64, 4475, 7200] {
        {
            let store = open(dir.path());
            while seq < end {
                for _ in 0..25 {
                    store
                        .record_round(&round("a", seq, T0 + seq * 1000))
                        .unwrap();
                    seq += 1;
                }
                store.flush_at(T0 + seq * 1000).unwrap();
            }
        }
        if end == 7200 {
            let empty = dir
                .path()
                .join(ROUNDS_DIR)
                .join(format!("raw-{:013}-009.seg", T0 + 2 * HOUR_MS));
            std::fs::write(empty, b"").unwrap();
        }
        let store = Store::open_at(dir.path(), StoreConfig::default(), later).unwrap();
        let m = store
            .series(
                &a,
                Hop::Destination,
                T0,
                T0 + seq * 1000,
                Resolution::Minute,
            )
            .unwrap();
        let wrong: Vec<u64> = (0..seq / 60)
            .filter(|i| {
                !m.points
                    .iter()
                    .any(|p| p.at_ms == T0 + i * MINUTE_MS && p.sent == 60)
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "after round {end}: minutes {wrong:?} are wrong"
        );
    }
}

/// A round of `target` over an ECMP branch whose destination drops every
/// `every`-th round (and answers otherwise).
fn branch_round(target: &str, seq: u64, at_ms: u64, every: u64) -> RoundRecord {
    let mut round = round(target, seq, at_ms);
    let lost = seq.is_multiple_of(every);
    let dest = round.hops.last_mut().unwrap();
    *dest = HopSample::answered_or_lost(
        10,
        IpAddr::from([10, 0, 10, 1]),
        (!lost).then_some(10_000_000 + seq * 1_000),
        true,
    );
    round.destination_ttl = (!lost).then(|| Ttl::new(10).unwrap());
    round
}

#[test]
fn branch_rounds_are_a_series_of_their_own_with_rollups_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = id("a");
    let (one, two) = (BranchIndex::new(1).unwrap(), BranchIndex::new(2).unwrap());
    let seconds = 2 * 3600;
    for s in 0..seconds {
        let at = T0 + s * 1000;
        store.record_round(&round("a", s, at)).unwrap();
        store
            .record_branch_round(one, &branch_round("a", s, at, 1_000_000))
            .unwrap();
        store
            .record_branch_round(two, &branch_round("a", s, at, 3))
            .unwrap();
    }
    assert_eq!(
        store.branches_of(&a),
        vec![one, two],
        "buffered branches count"
    );
    store.flush_at(T0 + 2 * HOUR_MS + MINUTE_MS).unwrap();
    let to = T0 + 2 * HOUR_MS;
    let lost_every = |every: u64| (0..seconds).filter(|s| s.is_multiple_of(every)).count() as u64;
    let check = |store: &Store| {
        // The branches do not mix with the target or with each other.
        for (series, lost) in [
            (a.clone(), lost_every(13)),
            (a.branch_series(one), lost_every(1_000_000)),
            (a.branch_series(two), lost_every(3)),
        ] {
            let raw = store
                .series(&series, Hop::Destination, T0, to, Resolution::Raw)
                .unwrap();
            assert_eq!(
                (raw.total.sent, raw.total.lost),
                (seconds, lost),
                "{series}"
            );
            for resolution in [Resolution::Minute, Resolution::Hour] {
                let rolled = store
                    .series(&series, Hop::Destination, T0, to, resolution)
                    .unwrap();
                check_rollups_against_raw(&rolled, &raw);
            }
            // Every hop of a branch is rolled up, like a target's.
            let hop4 = store
                .series(&series, Hop::Ttl(4), T0, to, Resolution::Hour)
                .unwrap();
            assert_eq!(hop4.points.len(), 2, "{series}");
        }
        // Targets are listed without their branches; branches by target.
        assert_eq!(store.targets(), vec![a.clone()]);
        assert_eq!(store.branches_of(&a), vec![one, two]);
        assert!(store.branches_of(&id("b")).is_empty());
    };
    check(&store);
    drop(store);
    let store = open(dir.path());
    check(&store);
}

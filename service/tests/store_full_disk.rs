//! A full disk does not lose accepted history: on a 4 MiB tmpfs, fill the
//! filesystem, show that store flushes fail and health says so while rounds
//! keep being accepted, free space, and show that writes resume and every
//! round accepted before and during the outage (within the buffer cap) is on
//! disk. Needs root (to mount the tmpfs) and fails loudly without it.

use std::fs::{self, File};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use hopwatch::model::{HopAnswer, HopSample, RoundRecord, TargetId};
use hopwatch::monitor::components::{self, ComponentStatus, STORE};
use hopwatch::probe::{Rtt, TimestampSource, Ttl};
use hopwatch::store::{Store, StoreConfig, HOUR_MS};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

const T0: u64 = 1_700_002_800_000;

/// A tmpfs mounted for the test's lifetime; unmounted on drop, panics included.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> anyhow::Result<Tmpfs> {
        assert!(
            nix::unistd::geteuid().is_root(),
            "store_full_disk must run as root: it mounts a small tmpfs to fill it (CI runs as root)"
        );
        fs::create_dir_all(&path)?;
        mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0700").as_str()),
        )
        .with_context(|| format!("mounting a tmpfs at {}", path.display()))?;
        Ok(Tmpfs { path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so files the store still holds open cannot keep it mounted.
        if let Err(e) = umount2(&self.path, MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {e}", self.path.display());
        }
    }
}

fn round(seq: u64) -> RoundRecord {
    RoundRecord {
        target: TargetId::new("disk").unwrap(),
        seq,
        started_at_ms: T0 + seq * 1000,
        hops: (1..=10u8)
            .map(|ttl| {
                HopSample::answered(
                    Ttl::new(ttl).unwrap(),
                    HopAnswer {
                        responder: IpAddr::from([198, 51, 100, ttl]),
                        // Whole microseconds: the resolution rounds are stored at.
                        rtt: Rtt::from_nanos(ttl as u64 * 1_000_000 + seq % 1000 * 1_000),
                        is_destination: ttl == 10,
                        reply_ttl: None,
                        quote: None,
                    },
                )
            })
            .collect(),
        destination_ttl: Ttl::new(10),
        source: TimestampSource::Kernel,
    }
}

/// Fills the filesystem at `dir` with one file; returns its path.
fn fill(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("filler");
    let mut file = File::create(&path)?;
    let chunk = vec![0xa5u8; 16 * 1024];
    loop {
        match file.write_all(&chunk).and_then(|()| file.sync_all()) {
            Ok(()) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e).context("filling the tmpfs"),
        }
    }
    // Whatever partial chunk fit is written; the filesystem is now full.
    Ok(path)
}

#[test]
fn a_full_disk_keeps_accepted_rounds_and_writes_resume_when_space_returns() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let fs = Tmpfs::mount(tmp.path().join("mnt"), "4m")?;
    let dir = fs.path.join("store");
    let config = StoreConfig {
        max_pending_bytes: 2 << 20,
        cache_capacity_bytes: 1 << 20,
        ..StoreConfig::default()
    };
    let target = TargetId::new("disk")?;
    let mut seq = 0u64;
    let mut now = T0;
    let store = Store::open_at(&dir, config.clone(), now)?;

    // Before: writes succeed.
    for _ in 0..300 {
        store.record_round(&round(seq))?;
        seq += 1;
    }
    now += 300_000;
    store.flush_at(now).context("flushing with free space")?;
    assert!(store.health().ok);

    let filler = fill(&fs.path)?;

    // Full: keep accepting rounds; flushes fail and health says so.
    let mut failures = 0;
    for _ in 0..100 {
        for _ in 0..50 {
            store.record_round(&round(seq))?;
            seq += 1;
        }
        now += 50_000;
        if store.flush_at(now).is_err() {
            failures += 1;
            if failures == 3 {
                break;
            }
        }
    }
    ensure!(
        failures == 3,
        "flushes kept succeeding on a full filesystem"
    );
    let health = store.health();
    eprintln!("health while full: {health:?}");
    assert!(!health.ok);
    assert_eq!(health.consecutive_failures, 3);
    let error = health
        .last_error
        .as_deref()
        .expect("the error is in health");
    assert!(
        error.contains(&dir.display().to_string()),
        "the error names the store: {error}"
    );
    assert_eq!(health.last_error_at_ms, Some(now));
    // Three flushes' rounds wait, packed (two bytes or more a hop sample).
    assert!(
        health.pending_bytes > 150 * 10 * 2,
        "the failed writes are kept: {health:?}"
    );
    // What the service's `store` alert says while writes fail.
    let opened_fine = ComponentStatus::ok(STORE);
    let problem = components::store_problem(&opened_fine, &store).expect("a store alert is due");
    assert!(
        problem.starts_with("the history store cannot write: 3 flushes failed in a row"),
        "{problem}"
    );
    let metrics = store.metrics();
    assert!(metrics.flush_errors_total >= 3);
    assert_eq!(
        metrics.dropped_rounds_total, 0,
        "nothing dropped within the cap"
    );

    // Space returns: the next flush reopens sled and writes everything.
    fs::remove_file(&filler)?;
    now += 5_000;
    let report = store
        .flush_at(now)
        .context("flushing after space returned")?;
    assert!(report.rounds >= 150, "{report:?}");
    let health = store.health();
    assert!(health.ok && health.pending_bytes == 0, "{health:?}");
    assert_eq!(
        components::store_problem(&opened_fine, &store),
        None,
        "the store alert clears once writes succeed"
    );
    assert!(
        health.last_error.is_some(),
        "the last error stays visible for diagnosis"
    );

    let check = |store: &Store| -> anyhow::Result<()> {
        let rounds = store.rounds(&target, 0, u64::MAX)?;
        ensure!(
            rounds.len() as u64 == seq,
            "{} of {seq} rounds stored",
            rounds.len()
        );
        for (i, r) in rounds.iter().enumerate() {
            ensure!(*r == round(i as u64), "round {i} differs");
        }
        Ok(())
    };
    check(&store)?;
    // And it is on disk, not only in sled's cache.
    drop(store);
    let store = Store::open_at(&dir, config, now)?;
    check(&store)?;
    // Rollups were derived from all of it once minutes closed.
    store.flush_at(now + HOUR_MS)?;
    let minutes = store.series(
        &target,
        hopwatch::store::Hop::Destination,
        T0,
        now,
        hopwatch::store::Resolution::Minute,
    )?;
    assert_eq!(minutes.points.iter().map(|p| p.sent).sum::<u64>(), seq);
    drop(store);
    drop(fs);
    Ok(())
}

//! The synthetic rounds the store examples and the crash test write, and the
//! writer loop the crash test (`tests/store_crash.rs`) kills with SIGKILL.
//! Shared by path so the test can run the loop in a child process of its own
//! executable instead of building the example.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use hopwatch::model::{HopAnswer, HopSample, RoundRecord, TargetId};
use hopwatch::probe::{Rtt, TimestampSource, Ttl};
use hopwatch::store::{Store, StoreConfig, StoredEvent};

/// The target the writer records.
pub const TARGET: &str = "crash";

/// What the writer prints after each flush that completed, before the last
/// round's sequence number.
pub const FLUSHED: &str = "flushed ";

/// A 10-hop round whose RTTs and losses vary with `seq`.
pub fn round(target: &TargetId, seq: u64, at_ms: u64) -> RoundRecord {
    let dest_lost = seq.is_multiple_of(97);
    let hops = (1..=10u8)
        .map(|ttl| {
            let lost = (ttl == 6 && seq.is_multiple_of(11)) || (ttl == 10 && dest_lost);
            let jitter = (seq.wrapping_mul(2_654_435_761) ^ (ttl as u64 * 40_503)) % 2_000_000;
            let answer = HopAnswer {
                responder: IpAddr::from([192, 0, 2, ttl]),
                rtt: Rtt::from_nanos(ttl as u64 * 2_000_000 + jitter),
                is_destination: ttl == 10,
                reply_ttl: None,
                quote: None,
            };
            let ttl = Ttl::new(ttl).expect("TTLs start at 1");
            if lost {
                HopSample::lost(ttl)
            } else {
                HopSample::answered(ttl, answer)
            }
        })
        .collect();
    RoundRecord {
        target: target.clone(),
        seq,
        started_at_ms: at_ms,
        hops,
        destination_ttl: (!dest_lost).then_some(Ttl::new(10).expect("not 0")),
        source: TimestampSource::Ebpf,
    }
}

/// The event the writer records every 50 rounds, naming its round.
pub fn event(target: &TargetId, seq: u64, at_ms: u64) -> StoredEvent {
    StoredEvent {
        target: target.clone(),
        at_ms,
        kind: "test".into(),
        payload: serde_json::json!({ "seq": seq }),
    }
}

/// Writes rounds of [`TARGET`] until killed: resumes after the last stored
/// round, round `seq` starts at `start_ms + seq × 1 s`, an event every 50
/// rounds, a flush every `per_flush` rounds followed by `flushed <seq>` on
/// stdout.
pub fn write(dir: &Path, start_ms: u64, per_flush: u64) -> anyhow::Result<()> {
    // The catch-up flush at open uses the synthetic clock's start, so it
    // closes nothing the writer has not reached; the first flush below
    // recomputes whatever rollups the last kill interrupted.
    let store = Store::open_at(dir, StoreConfig::default(), start_ms)?;
    let target = TargetId::new(TARGET)?;
    let mut seq = store.last_round(&target)?.map_or(0, |r| r.seq + 1);
    // Events go in their own batch after the rounds', so a kill can keep a
    // round and lose its event: put back any missing from before `seq`.
    let have: std::collections::HashSet<u64> = store
        .events(&target, 0, u64::MAX)?
        .iter()
        .filter_map(|e| e.payload["seq"].as_u64())
        .collect();
    for s in (0..seq).step_by(50).filter(|s| !have.contains(s)) {
        store.record_event(&event(&target, s, start_ms + s * 1000))?;
    }
    loop {
        for _ in 0..per_flush {
            let at = start_ms + seq * 1000;
            store.record_round(&round(&target, seq, at))?;
            if seq.is_multiple_of(50) {
                store.record_event(&event(&target, seq, at))?;
            }
            seq += 1;
        }
        store.flush_at(start_ms + seq * 1000)?;
        println!("{FLUSHED}{}", seq - 1);
        std::thread::sleep(Duration::from_millis(2));
    }
}

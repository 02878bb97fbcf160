//! History-store simulations for `bench-monitor`: synthetic rounds of one
//! 10-hop target written through the real store library
//! ([`hopwatch::store::Store`]) against a synthetic clock, so days of
//! history take seconds; the store directory's size sampled as it grows;
//! and timed history queries on the result. Besides, what the model's data
//! itself amounts to: the keys and values the store encodes for a day of
//! it, before sled lays them out ([`logical_day`]).
//!
//! The rounds follow a fixed, documented model ([`SimModel`]) rather than
//! uniform noise, because rollup sizes depend on the data: each rollup keeps
//! a sparse histogram, and its size is the number of distinct histogram
//! buckets (1.6 % wide as stored) the bucket's RTTs fall in.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hopwatch::{
    model::{HopAnswer, HopSample, RoundRecord, TargetId},
    probe::{Rtt, TimestampSource, Ttl},
    store::{
        codec::{encode, RawRoundV1},
        keys::{raw_key, rollup_key, SeriesNum, TargetNum},
        rollup::{scratch_histogram, SeriesAcc, Stats},
        Hop, Resolution, Store, StoreConfig, StoreError, HOUR_MS,
    },
};

/// Errors of a simulation; each names the store directory.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("store {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("measuring {path}: {source}")]
    Size {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not empty: a simulation needs a fresh directory")]
    NotEmpty { path: PathBuf },
}

const DAY_MS: u64 = 24 * HOUR_MS;
/// The synthetic clock starts on an hour boundary far from the wall clock.
pub const SIM_START_MS: u64 = 1_600_000_000_000 / HOUR_MS * HOUR_MS;
/// Hops of the simulated target (the destination is the 10th).
pub const SIM_HOPS: u8 = 10;

/// The synthetic path: hop `k` (1-based) has a base RTT of
/// 0.5 ms + 2.6 ms × (k − 1) (0.5 to 23.9 ms); every sample adds queueing
/// delay drawn from an exponential distribution with a mean of 3 % of the
/// base; intermediate routers answer from their slow path, adding 0–2 ms to
/// 5 % of their replies; 1 % of rounds hit a congestion spike of 5–30 ms on
/// every hop from a random one on; hop 6 rate-limits its ICMP errors (10 %
/// lost), the destination loses 0.5 % and other hops 0.2 %.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimModel;

/// splitmix64: a fixed, seedable stream of well-mixed numbers.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in (0, 1) from `key`.
fn unit(key: u64) -> f64 {
    ((mix(key) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

impl SimModel {
    /// Round `seq` of `target`, started at `at_ms`.
    pub fn round(&self, target: &TargetId, seq: u64, at_ms: u64) -> RoundRecord {
        let draw = |what: u64| unit(seq.wrapping_mul(64).wrapping_add(what));
        let spike_from = (draw(0) < 0.01).then(|| 1 + (draw(1) * f64::from(SIM_HOPS)) as u8);
        let spike_ns = 5e6 + draw(2) * 25e6;
        let dest_lost = draw(3) < 0.005;
        let hops = (1..=SIM_HOPS)
            .map(|ttl| {
                let t = u64::from(ttl) * 4;
                let is_dest = ttl == SIM_HOPS;
                let loss = match ttl {
                    6 => 0.10,
                    _ if is_dest => 0.0,
                    _ => 0.002,
                };
                let lost = (is_dest && dest_lost) || draw(8 + t) < loss;
                let base = 0.5e6 + 2.6e6 * f64::from(ttl - 1);
                let mut rtt = base * (1.0 - 0.03 * draw(9 + t).ln());
                if !is_dest && draw(10 + t) < 0.05 {
                    rtt += draw(11 + t) * 2e6;
                }
                if spike_from.is_some_and(|from| ttl >= from) {
                    rtt += spike_ns;
                }
                let ttl = Ttl::new(ttl).expect("simulated TTLs start at 1");
                if lost {
                    HopSample::lost(ttl)
                } else {
                    HopSample::answered(
                        ttl,
                        HopAnswer {
                            responder: IpAddr::V4(Ipv4Addr::new(192, 0, 2, ttl.get())),
                            rtt: Rtt::from_nanos(rtt as u64),
                            is_destination: is_dest,
                            reply_ttl: None,
                            quote: None,
                        },
                    )
                }
            })
            .collect();
        RoundRecord {
            target: target.clone(),
            seq,
            started_at_ms: at_ms,
            hops,
            destination_ttl: (!dest_lost).then_some(Ttl::new(SIM_HOPS).expect("SIM_HOPS is not 0")),
            source: TimestampSource::Ebpf,
        }
    }
}

/// How a simulation writes.
#[derive(Debug, Clone)]
pub struct SimPlan {
    pub config: StoreConfig,
    /// Synthetic days written.
    pub days: u64,
    /// Rounds (one per second) written at the start of every hour; 3600 is
    /// every second, fewer skips the rest of the hour.
    pub seconds_per_hour: u64,
    /// Synthetic seconds between flushes: the daemon's `flush_interval`.
    pub flush_every_s: u64,
    /// Synthetic hours between two size samples.
    pub sample_every_h: u64,
}

/// The store directory's size at one point of a simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizeSample {
    /// Synthetic days since the start.
    pub day: f64,
    /// Sum of the files' lengths.
    pub apparent: u64,
    /// Blocks the files take.
    pub allocated: u64,
}

/// What a simulation did.
pub struct SimOutcome {
    pub store: Store,
    pub target: TargetId,
    pub rounds: u64,
    pub samples: Vec<SizeSample>,
    /// The synthetic clock at the end.
    pub now_ms: u64,
    pub wall: Duration,
}

/// Runs `plan` into the fresh directory `dir` and returns the open store.
pub fn simulate(dir: &Path, plan: &SimPlan) -> Result<SimOutcome, SimError> {
    let store_err = |source| SimError::Store {
        path: dir.to_path_buf(),
        source,
    };
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(SimError::NotEmpty {
            path: dir.to_path_buf(),
        });
    }
    let started = Instant::now();
    let target = TargetId::new("sim").expect("a valid name");
    let store = Store::open_at(dir, plan.config.clone(), SIM_START_MS).map_err(store_err)?;
    let model = SimModel;
    let mut samples = Vec::new();
    let mut rounds = 0;
    let mut now = SIM_START_MS;
    let hours = plan.days * 24;
    let per_hour = plan.seconds_per_hour.clamp(1, 3600);
    for hour in 0..hours {
        let hour_start = SIM_START_MS + hour * HOUR_MS;
        for s in 0..per_hour {
            let at = hour_start + s * 1000;
            store
                .record_round(&model.round(&target, rounds, at))
                .map_err(store_err)?;
            rounds += 1;
            if (s + 1) % plan.flush_every_s == 0 {
                now = at + 1000;
                store.flush_at(now).map_err(store_err)?;
            }
        }
        if (hour + 1) % plan.sample_every_h.max(1) == 0 {
            // Closes the rollups of the hour before sampling.
            now = now.max(hour_start + HOUR_MS);
            store.flush_at(now).map_err(store_err)?;
            let (apparent, allocated) = dir_size(dir)?;
            samples.push(SizeSample {
                day: (hour + 1) as f64 / 24.0,
                apparent,
                allocated,
            });
        }
    }
    now = now.max(SIM_START_MS + hours * HOUR_MS);
    store.flush_at(now).map_err(store_err)?;
    Ok(SimOutcome {
        store,
        target,
        rounds,
        samples,
        now_ms: now,
        wall: started.elapsed(),
    })
}

/// Bytes of keys and values one day of the model adds to each tree, as the
/// store encodes them (before sled's page compression and layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogicalDay {
    pub raw: u64,
    pub minutes: u64,
    pub hours: u64,
}

/// The sample a round gives `hop`'s series, as the store's rollups count it:
/// the destination at whatever TTL answered (a lost probe if none did), a
/// TTL only up to the destination.
fn series_sample(round: &RoundRecord, hop: Hop) -> Option<Option<u64>> {
    let sample = match hop {
        Hop::Destination => Some(round.destination().and_then(HopSample::rtt)),
        Hop::Ttl(ttl) => round
            .path_samples()
            .iter()
            .find(|h| h.ttl.get() == ttl)
            .map(HopSample::rtt),
    };
    sample.map(|rtt| rtt.map(Rtt::as_nanos))
}

/// One day of the model encoded the way the store encodes it: every round,
/// every series' minute rollups, and the hour rollups merged from them.
pub fn logical_day() -> LogicalDay {
    let target = TargetId::new("sim").expect("a valid name");
    let num = TargetNum(1);
    let series: Vec<Hop> = std::iter::once(Hop::Destination)
        .chain((1..=SIM_HOPS).map(Hop::Ttl))
        .collect();
    let rollup_bytes = |hop: Hop, stats: &Stats| {
        (rollup_key(num, SeriesNum::of(hop), 0).len() + encode(&stats.to_value()).len()) as u64
    };
    let mut scratch = scratch_histogram();
    let mut day = LogicalDay {
        raw: 0,
        minutes: 0,
        hours: 0,
    };
    let mut seq = 0;
    for _hour in 0..24 {
        let mut hour: Vec<Stats> = series.iter().map(|_| Stats::default()).collect();
        for _minute in 0..60 {
            let mut accs: Vec<SeriesAcc> = series.iter().map(|_| SeriesAcc::default()).collect();
            for _second in 0..60 {
                let at = SIM_START_MS + seq * 1000;
                let round = SimModel.round(&target, seq, at);
                day.raw +=
                    (raw_key(num, at).len() + encode(&RawRoundV1::from_round(&round)).len()) as u64;
                for (acc, &hop) in accs.iter_mut().zip(&series) {
                    if let Some(sample) = series_sample(&round, hop) {
                        acc.push(sample);
                    }
                }
                seq += 1;
            }
            for ((acc, &hop), hour) in accs.iter().zip(&series).zip(&mut hour) {
                let stats = acc.finish(&mut scratch);
                day.minutes += rollup_bytes(hop, &stats);
                hour.merge(&stats);
            }
        }
        for (stats, &hop) in hour.iter().zip(&series) {
            day.hours += rollup_bytes(hop, stats);
        }
    }
    day
}

/// Apparent and allocated bytes of every file under `dir`.
pub fn dir_size(dir: &Path) -> Result<(u64, u64), SimError> {
    let err = |source| SimError::Size {
        path: dir.to_path_buf(),
        source,
    };
    let mut apparent = 0;
    let mut allocated = 0;
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let meta = entry.metadata().map_err(err)?;
        if meta.is_dir() {
            let (a, b) = dir_size(&entry.path())?;
            apparent += a;
            allocated += b;
        } else {
            apparent += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    Ok((apparent, allocated))
}

/// Least-squares growth per day of the allocated size over samples from
/// `from_day` on; `None` with fewer than two such samples.
pub fn growth_per_day(samples: &[SizeSample], from_day: f64) -> Option<f64> {
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.day >= from_day)
        .map(|s| (s.day, s.allocated as f64))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Timings of one query repeated.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryTiming {
    /// Resolution served and points returned (per series).
    pub resolution: Resolution,
    pub points: usize,
    pub series: usize,
    pub median: Duration,
    pub max: Duration,
    pub runs: usize,
}

/// Times `runs` reads of the last `span_ms` before `now_ms` at automatic
/// resolution: of the destination alone, or of every hop (one series each,
/// as the web UI reads a target's hops from rollups).
pub fn time_query(
    store: &Store,
    target: &TargetId,
    now_ms: u64,
    span_ms: u64,
    all_hops: bool,
    runs: usize,
) -> Result<QueryTiming, SimError> {
    let store_err = |source| SimError::Store {
        path: store.path().to_path_buf(),
        source,
    };
    let hops: Vec<Hop> = if all_hops {
        std::iter::once(Hop::Destination)
            .chain((1..=SIM_HOPS).map(Hop::Ttl))
            .collect()
    } else {
        vec![Hop::Destination]
    };
    let from = now_ms.saturating_sub(span_ms);
    let mut times = Vec::with_capacity(runs);
    let mut resolution = Resolution::Auto;
    let mut points = 0;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        for &hop in &hops {
            let series = store
                .series(target, hop, from, now_ms, Resolution::Auto)
                .map_err(store_err)?;
            resolution = series.resolution;
            points = series.points.len();
            std::hint::black_box(&series);
        }
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok(QueryTiming {
        resolution,
        points,
        series: hops.len(),
        median: times[times.len() / 2],
        max: *times.last().expect("at least one run"),
        runs: times.len(),
    })
}

/// The number of days a span covers, for labels ("24 h", "30 d").
pub fn span_label(span_ms: u64) -> String {
    if span_ms < 2 * DAY_MS {
        format!("{} h", span_ms / HOUR_MS)
    } else {
        format!("{} d", span_ms / DAY_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_deterministic_and_plausible() {
        let id = TargetId::new("t").unwrap();
        let a = SimModel.round(&id, 7, 1_000);
        assert_eq!(a, SimModel.round(&id, 7, 1_000));
        assert_eq!(a.hops.len(), usize::from(SIM_HOPS));
        let mut lost6 = 0;
        let mut dest_rtts = Vec::new();
        for seq in 0..20_000 {
            let r = SimModel.round(&id, seq, seq * 1000);
            lost6 += u32::from(r.hops[5].is_lost());
            if let Some(d) = r.destination() {
                dest_rtts.push(d.rtt().unwrap().as_nanos());
            }
        }
        // 10 % of hop 6 lost; the destination's RTT near its 23.9 ms base.
        assert!((1_700..2_300).contains(&lost6), "{lost6}");
        dest_rtts.sort_unstable();
        let median = dest_rtts[dest_rtts.len() / 2];
        assert!((23_900_000..25_500_000).contains(&median), "{median}");
    }

    #[test]
    fn a_logical_day_counts_every_round_and_rollup() {
        let day = logical_day();
        // 86,400 ten-hop rounds of a few bytes per hop; 1,440 × 11 minute
        // rollups and 24 × 11 hour rollups, each at least key + sums.
        assert!((86_400 * 50..86_400 * 400).contains(&day.raw), "{day:?}");
        assert!(day.minutes > 1_440 * 11 * 40, "{day:?}");
        assert!((24 * 11 * 40..day.minutes).contains(&day.hours), "{day:?}");
    }

    #[test]
    fn growth_is_a_least_squares_slope() {
        let s = |day, allocated| SizeSample {
            day,
            apparent: allocated,
            allocated,
        };
        let samples = [s(0.5, 50), s(1.0, 100), s(2.0, 200), s(3.0, 310)];
        let g = growth_per_day(&samples, 1.0).unwrap();
        assert!((g - 105.0).abs() < 1e-9, "{g}");
        assert_eq!(growth_per_day(&samples[..2], 1.0), None);
    }

    #[test]
    fn a_short_simulation_rolls_up_and_is_queryable() {
        let dir = std::env::temp_dir().join(format!("storesim-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let plan = SimPlan {
            config: StoreConfig::default(),
            days: 1,
            seconds_per_hour: 120,
            flush_every_s: 5,
            sample_every_h: 6,
        };
        let out = simulate(&dir, &plan).unwrap();
        assert_eq!(out.rounds, 24 * 120);
        assert_eq!(out.samples.len(), 4);
        assert!(out.samples[3].allocated > 0);
        let q = time_query(&out.store, &out.target, out.now_ms, 24 * HOUR_MS, false, 3).unwrap();
        // 24 h → minute rollups; two written minutes per hour.
        assert_eq!(q.resolution, Resolution::Minute);
        assert!((46..=48).contains(&q.points), "{}", q.points);
        drop(out);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Bytes per hop sample of the raw history's two forms, side by side on the
//! same synthetic rounds: one postcard value per round (store format 1, what
//! the store writes today) and compressed column chunks (`store::chunk`) of
//! several lengths.
//!
//! Two series of 10-hop rounds at one round per second for a day:
//! - `lab`: what the test lab's veth chain gives, ~10 µs per hop ± 2 µs, no loss;
//! - `wan`: a WAN-like path, hop k at 2·k ms (20 ms at the destination),
//!   300 µs Gaussian jitter, 1 % spikes of ~5 ms, 1 % loss, and a route change
//!   (hops 4 to 7 get new responders) half-way through the day.
//!
//! ```text
//! cargo run --release -p hopwatch-service --example store_chunk
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use hopwatch::model::{HopAnswer, HopSample, RoundRecord, TargetId};
use hopwatch::probe::{Rtt, TimestampSource, Ttl};
use hopwatch::store::chunk;
use hopwatch::store::codec::{self, RawRoundV1};

#[path = "common/noise.rs"]
mod noise;
use noise::Noise;

const HOPS: u8 = 10;
const ROUNDS: u64 = 86_400;
const START_MS: u64 = 1_790_000_000_000;

#[derive(Clone, Copy)]
enum Profile {
    Lab,
    Wan,
}

fn responder(ttl: u8, rerouted: bool) -> IpAddr {
    let branch = u8::from(rerouted && (4..=7).contains(&ttl));
    IpAddr::V4(Ipv4Addr::new(198, 18, ttl, 1 + branch))
}

fn series(profile: Profile) -> Vec<RoundRecord> {
    let target = TargetId::new("bench").expect("valid id");
    let mut noise = Noise(fastrand::Rng::with_seed(15));
    (0..ROUNDS)
        .map(|seq| {
            let rerouted = seq >= ROUNDS / 2;
            let hops = (1..=HOPS)
                .map(|ttl| {
                    let rtt_ns = match profile {
                        Profile::Lab => {
                            let us = 10.0 * f64::from(ttl) + 2.0 * noise.gaussian();
                            Some((us.max(1.0) * 1_000.0) as u64)
                        }
                        Profile::Wan => {
                            if noise.0.f64() < 0.01 {
                                None
                            } else {
                                let mut us = 2_000.0 * f64::from(ttl) + 300.0 * noise.gaussian();
                                if noise.0.f64() < 0.01 {
                                    us += 5_000.0 * (0.5 + noise.0.f64());
                                }
                                // Nanoseconds, as the kernel gives them.
                                Some((us.max(1.0) * 1_000.0) as u64 + noise.0.u64(0..1_000))
                            }
                        }
                    };
                    let answer = rtt_ns.map(|ns| HopAnswer {
                        responder: responder(ttl, rerouted),
                        rtt: Rtt::from_nanos(ns),
                        is_destination: ttl == HOPS,
                        reply_ttl: None,
                        quote: None,
                    });
                    let ttl = Ttl::new(ttl).expect("TTLs start at 1");
                    answer.map_or(HopSample::lost(ttl), |a| HopSample::answered(ttl, a))
                })
                .collect::<Vec<_>>();
            let destination_ttl = hops.iter().find(|h| h.reached()).map(|h| h.ttl);
            RoundRecord {
                target: target.clone(),
                seq,
                started_at_ms: START_MS + seq * 1_000,
                hops,
                destination_ttl,
                source: TimestampSource::Ebpf,
            }
        })
        .collect()
}

fn main() {
    println!(
        "| series | form | bytes per hop sample | encode µs per chunk | decode µs per chunk |"
    );
    println!("|---|---|---|---|---|");
    for (name, profile) in [("lab", Profile::Lab), ("wan", Profile::Wan)] {
        let rounds = series(profile);
        let samples = rounds.len() as f64 * f64::from(HOPS);
        let rows: usize = rounds
            .iter()
            .map(|r| codec::encode(&RawRoundV1::from_round(r)).len())
            .sum();
        println!(
            "| {name} | a postcard value per round (format 1) | {:.2} | | |",
            rows as f64 / samples
        );
        let target = rounds[0].target.clone();
        for length in [60usize, 300, 600, 3_600] {
            let (mut bytes, mut encode_s, mut decode_s, mut chunks) = (0usize, 0.0, 0.0, 0u32);
            for part in rounds.chunks(length) {
                let started = Instant::now();
                let value = chunk::encode(part);
                encode_s += started.elapsed().as_secs_f64();
                let started = Instant::now();
                let back = chunk::decode(&value, &target).expect("a chunk decodes");
                decode_s += started.elapsed().as_secs_f64();
                assert_eq!(back.len(), part.len());
                bytes += value.len();
                chunks += 1;
            }
            println!(
                "| {name} | chunks of {length} rounds | {:.3} | {:.0} | {:.0} |",
                bytes as f64 / samples,
                encode_s * 1e6 / f64::from(chunks),
                decode_s * 1e6 / f64::from(chunks)
            );
        }
    }
}

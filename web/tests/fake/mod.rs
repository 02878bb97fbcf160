//! A fake read model and control for the router tests: two targets with a
//! few hops, stored series made of single probes, and a control that records
//! what it was asked to do.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, Response};
use hopwatch_web::dto::*;
use hopwatch_web::metrics::{
    BranchMetrics, EngineMetrics, Histogram, HopMetrics, KernelMetrics, MemoryMetrics,
    MetricsSnapshot, PeerMetrics, StoreMetrics, TargetMetrics,
};
use hopwatch_web::{
    AppState, BranchRef, Control, ControlError, FlowSelection, HopSelection, ReadError, ReadModel,
    TimeRange, Token, Tokens, WebSettings,
};
use http_body_util::BodyExt;
use tokio::sync::broadcast;
use tower::ServiceExt;

pub const READ_TOKEN: &str = "read-token-0123456789abcdef";
pub const WRITE_TOKEN: &str = "write-token-0123456789abcdef";

pub fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, last, 2))
}

pub fn stats(sent: u64, received: u64, avg_ms: f64) -> StatsDto {
    let ns = (avg_ms * 1e6) as u64;
    StatsDto {
        sent,
        received,
        loss_pct: Some(100.0 * (sent - received) as f64 / sent as f64),
        last_ns: Some(ns),
        avg_ns: Some(ns as f64),
        best_ns: Some(ns - 1000),
        worst_ns: Some(ns + 5000),
        stddev_ns: Some(1200.0),
        p50_ns: Some(ns),
        p95_ns: Some(ns + 4000),
        p99_ns: Some(ns + 5000),
        jitter_ns: Some(800.0),
        jitter_max_ns: Some(3000),
    }
}

/// The AS of the responder at a TTL, as an ASN database would know it: hop
/// 1 is in a transit network (a comma and quotes in its name), the rest unknown.
pub fn as_of(ttl: u8) -> Option<(u32, &'static str)> {
    (ttl == 1).then_some((64_500, "Example \"Transit\", Inc."))
}

pub fn detail(id: &str, hops: u8, rounds: u64) -> TargetDetail {
    let rows: Vec<HopRow> = (1..=hops)
        .map(|ttl| HopRow {
            ttl,
            responders: vec![ResponderDto {
                address: ip(ttl),
                hostname: Some(format!("r{ttl}.lab.example")),
                asn: as_of(ttl).map(|(asn, _)| asn),
                as_org: as_of(ttl).map(|(_, org)| org.to_owned()),
                latitude: None,
                longitude: None,
                city: None,
                country: None,
                special_purpose: Some("benchmarking (RFC 2544)".into()),
                share_pct: Some(100.0),
                avg_ns: Some(f64::from(ttl) * 1e6),
                last_seen_ms: Some(1_000),
            }],
            other_responders: 0,
            window: stats(100, if ttl == 2 { 60 } else { 100 }, f64::from(ttl)),
            since_start: stats(rounds, rounds, f64::from(ttl)),
            jitter_rfc3550_ns: Some(500.0),
            rate_limited: ttl == 2,
            slow_responder: false,
            is_destination: ttl == hops,
            mpls: Vec::new(),
            middleboxes: Vec::new(),
        })
        .collect();
    TargetDetail {
        summary: TargetSummary {
            id: id.to_owned(),
            name: format!("{id} label"),
            label: Some(format!("{id} label")),
            description: None,
            tags: vec!["lab".into()],
            host: ip(hops).to_string(),
            address: Some(ip(hops)),
            protocol: "icmp".into(),
            port: 0,
            interval_ms: 1000,
            packet_size: 64,
            final_hop_only: false,
            state: TargetState::Running,
            error: None,
            paused: false,
            hop_count: Some(hops),
            rounds,
            last_round_at_ms: Some(1_000 * rounds),
            loss_pct: Some(0.0),
            latency: Latency {
                last_ns: Some(3_000_000),
                avg_ns: Some(3_000_000.0),
                best_ns: Some(2_900_000),
                worst_ns: Some(3_500_000),
                p50_ns: Some(3_000_000),
                p95_ns: Some(3_400_000),
            },
            jitter_ns: Some(800.0),
            mos: Some(4.39),
            alerts: vec![],
            timestamp_source: Some("ebpf".into()),
            finding: None,
        },
        window_probes: 100,
        hops: rows,
        path: (1..=hops)
            .map(|ttl| PathHopDto {
                ttl,
                responder: Some(ip(ttl)),
                responders: vec![ip(ttl)],
            })
            .collect(),
        pending_change_rounds: 0,
        destination: DestinationDto {
            ttl: Some(hops),
            address: Some(ip(hops)),
            window: stats(100, 100, 3.0),
            since_start: stats(rounds, rounds, 3.0),
            jitter_rfc3550_ns: Some(500.0),
            mos: Some(4.39),
            r_factor: Some(93.0),
        },
        findings: vec![],
        recent_events: vec![],
        middleboxes: vec![],
        multipath: None,
        branches: vec![],
        branch_findings: vec![],
    }
}

/// One hop of [`geo`]: an address and, when the city database places it,
/// where (latitude, longitude, city, country); `special` names the block of a
/// special-purpose address, never looked up.
pub struct GeoHop {
    pub address: Option<&'static str>,
    pub place: Option<(f64, f64, &'static str, &'static str)>,
    pub special: Option<&'static str>,
}

/// The path of [`geo`], hop by hop: a private first hop, two placed
/// routers, a hop that never answers, a public router the city database
/// does not know, and three more placed ones to the destination.
pub const GEO_PATH: [GeoHop; 8] = [
    GeoHop {
        address: Some("192.168.1.1"),
        place: None,
        special: Some("private (RFC 1918)"),
    },
    GeoHop {
        address: Some("80.81.192.10"),
        place: Some((50.11, 8.68, "Frankfurt am Main", "Germany")),
        special: None,
    },
    GeoHop {
        address: Some("80.249.208.20"),
        place: Some((52.37, 4.90, "Amsterdam", "Netherlands")),
        special: None,
    },
    GeoHop {
        address: None,
        place: None,
        special: None,
    },
    GeoHop {
        address: Some("195.66.224.30"),
        place: None,
        special: None,
    },
    GeoHop {
        address: Some("206.126.236.40"),
        place: Some((39.04, -77.49, "Ashburn", "United States")),
        special: None,
    },
    GeoHop {
        address: Some("206.223.116.50"),
        place: Some((41.88, -87.63, "Chicago", "United States")),
        special: None,
    },
    GeoHop {
        address: Some("206.223.123.60"),
        place: Some((37.77, -122.42, "San Francisco", "United States")),
        special: None,
    },
];

/// Target `geo`: [`GEO_PATH`], as a read model with a city database serves it.
pub fn geo() -> TargetDetail {
    let mut t = detail("geo", GEO_PATH.len() as u8, 30);
    for (row, hop) in t.hops.iter_mut().zip(&GEO_PATH) {
        row.responders = match hop.address {
            None => Vec::new(),
            Some(address) => {
                let mut r = row.responders[0].clone();
                r.address = address.parse().expect("an IP");
                r.hostname = None;
                r.asn = None;
                r.as_org = None;
                r.latitude = hop.place.map(|p| p.0);
                r.longitude = hop.place.map(|p| p.1);
                r.city = hop.place.map(|p| p.2.to_owned());
                r.country = hop.place.map(|p| p.3.to_owned());
                r.special_purpose = hop.special.map(str::to_owned);
                vec![r]
            }
        };
        if hop.address.is_none() {
            // Never answers: every probe lost, no latency.
            row.window = StatsDto {
                sent: 100,
                received: 0,
                loss_pct: Some(100.0),
                last_ns: None,
                avg_ns: None,
                best_ns: None,
                worst_ns: None,
                stddev_ns: None,
                p50_ns: None,
                p95_ns: None,
                p99_ns: None,
                jitter_ns: None,
                jitter_max_ns: None,
            };
            row.since_start = row.window.clone();
        }
    }
    let dest: std::net::IpAddr = GEO_PATH[GEO_PATH.len() - 1]
        .address
        .expect("the destination answers")
        .parse()
        .expect("an IP");
    t.summary.host = dest.to_string();
    t.summary.address = Some(dest);
    t.destination.address = Some(dest);
    t.path = t
        .hops
        .iter()
        .map(|h| PathHopDto {
            ttl: h.ttl,
            responder: h.responders.first().map(|r| r.address),
            responders: h.responders.iter().map(|r| r.address).collect(),
        })
        .collect();
    t
}

/// A firing alert of `subject` keyed `target` (a target's name or `peer:NAME`).
pub fn alert(
    subject: AlertSubject,
    target: &str,
    since_ms: u64,
    summary: &str,
    localisation: Option<serde_json::Value>,
) -> AlertDto {
    AlertDto {
        name: "loss".into(),
        id: format!("i-{since_ms}"),
        subject,
        target: target.into(),
        since_ms: Some(since_ms),
        summary: summary.into(),
        value: Some(20.0),
        threshold: Some(10.0),
        unit: Some("pct".into()),
        localisation,
    }
}

/// What the control was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Pause(String, bool),
    Add(NewTarget),
    Remove(String),
}

/// Two webhooks: a healthy JSON one and an Alertmanager one that fails.
pub fn webhooks() -> Vec<WebhookDto> {
    vec![
        WebhookDto {
            name: "ops".into(),
            format: "json".into(),
            url: "https://hooks.example/…".into(),
            signed: true,
            failing: false,
            pending: 0,
            delivered: 12,
            resent: 0,
            failed_attempts: 1,
            consecutive_failures: 0,
            last_success_at_ms: Some(9_000),
            last_error_at_ms: Some(4_000),
            last_error: Some("timed out".into()),
            next_retry_at_ms: None,
            retrying_targets: vec![],
            dropped_age: 0,
            dropped_bytes: 0,
        },
        WebhookDto {
            name: "am".into(),
            format: "alertmanager".into(),
            url: "http://127.0.0.1:9093/…".into(),
            signed: false,
            failing: true,
            pending: 3,
            delivered: 2,
            resent: 5,
            failed_attempts: 7,
            consecutive_failures: 4,
            last_success_at_ms: Some(2_000),
            last_error_at_ms: Some(8_000),
            last_error: Some("the receiver answered HTTP 500".into()),
            next_retry_at_ms: Some(10_000),
            retrying_targets: vec!["alpha".into()],
            dropped_age: 1,
            dropped_bytes: 0,
        },
    ]
}

/// Target `alpha`: three hops, a loss alert firing since 7 s.
pub fn alpha() -> TargetDetail {
    let mut alpha = detail("alpha", 3, 10);
    alpha.summary.alerts = vec![alert(
        AlertSubject::Target,
        "alpha",
        7_000,
        "destination loss 20.0% over the last 100 probes (raises at 10.0%)",
        Some(serde_json::json!({"kind": "loss", "ttl": 2})),
    )];
    alpha
}

/// Two closed incidents of alpha (a loss whose localisation was updated once,
/// a latency alert) and one still raised on a peer. Times are relative to now.
pub fn incidents() -> Vec<IncidentDto> {
    let now = hopwatch_web::query::now_ms();
    let incident = |id: &str, name: &str, target: &str, ago_min: u64, lasted_min: Option<u64>| {
        let raised = now - ago_min * 60_000;
        IncidentDto {
            id: id.into(),
            name: name.into(),
            subject: if target.starts_with("peer:") {
                AlertSubject::Peer
            } else {
                AlertSubject::Target
            },
            target: target.into(),
            label: None,
            raised_at_ms: raised,
            cleared_at_ms: lasted_min.map(|m| raised + m * 60_000),
            clear_reason: lasted_min.map(|_| "recovered".into()),
            duration_ms: lasted_min.unwrap_or(ago_min) * 60_000,
            summary: format!("{name} on {target}"),
            peak_value: Some(42.0),
            threshold: Some(20.0),
            unit: Some("pct".into()),
            localisation: Some(serde_json::json!({"kind": "loss", "ttl": 2, "confidence": 0.98})),
            updates: u32::from(name == "loss"),
        }
    };
    vec![
        incident("i-1", "loss", "alpha", 3 * 24 * 60, Some(25)),
        incident("i-2", "latency", "alpha", 90, Some(10)),
        incident("i-3", "loss", "peer:branch-b", 5, None),
    ]
}

pub struct Fake {
    pub targets: Mutex<Vec<TargetDetail>>,
    pub webhooks: Mutex<Vec<WebhookDto>>,
    pub events: broadcast::Sender<EventDto>,
    pub engine_running: Mutex<bool>,
    pub calls: Mutex<Vec<Call>>,
    pub fail_store: Mutex<bool>,
    /// How long every history read takes (series, events, exports).
    pub read_delay: Mutex<std::time::Duration>,
    /// The range of every series read, in order.
    pub series_ranges: Mutex<Vec<TimeRange>>,
    /// Scrapes encoded and told so (`scrape_done`).
    pub scrapes_done: Mutex<u32>,
}

impl Fake {
    pub fn new() -> Arc<Fake> {
        Arc::new(Fake {
            targets: Mutex::new(vec![alpha(), detail("beta", 2, 20)]),
            webhooks: Mutex::new(webhooks()),
            events: broadcast::channel(16).0,
            engine_running: Mutex::new(true),
            calls: Mutex::new(Vec::new()),
            fail_store: Mutex::new(false),
            read_delay: Mutex::new(std::time::Duration::ZERO),
            series_ranges: Mutex::new(Vec::new()),
            scrapes_done: Mutex::new(0),
        })
    }

    pub fn bump(&self, id: &str) {
        let mut targets = self.targets.lock().unwrap();
        let t = targets.iter_mut().find(|t| t.summary.id == id).unwrap();
        t.summary.rounds += 1;
        t.summary.last_round_at_ms = Some(t.summary.rounds * 1_000);
    }

    fn find(&self, id: &str) -> Option<TargetDetail> {
        self.targets
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.summary.id == id)
            .cloned()
    }

    fn store_check(&self) -> Result<(), ReadError> {
        // A slow store: the read model runs on the blocking pool, so sleeping is fair.
        let delay = *self.read_delay.lock().unwrap();
        std::thread::sleep(delay);
        if *self.fail_store.lock().unwrap() {
            return Err(ReadError::Failed {
                what: "reading rounds",
                source: "sled: /var/lib/hopwatch/db: corrupted page".into(),
            });
        }
        Ok(())
    }
}

/// One single-probe point per second over the range; every 10th lost.
fn raw_points(range: TimeRange, base_ns: u64) -> Vec<PointDto> {
    (range.from_ms..range.to_ms)
        .step_by(1000)
        .enumerate()
        .map(|(i, at)| {
            PointDto::single(at, (i % 10 != 9).then_some(base_ns + (i as u64 % 7) * 1000))
        })
        .collect()
}

/// Longest span the fake (like the service) answers below hour rollups.
pub const MINUTE_UP_TO_MS: u64 = 7 * 86_400_000;

/// One 1-hour rollup per hour over the range, as the service serves spans
/// beyond 7 days: 3,600 probes each, 1 % lost.
fn hour_points(range: TimeRange, base_ns: u64) -> Vec<PointDto> {
    let first = range.from_ms - range.from_ms % 3_600_000;
    (first..range.to_ms)
        .step_by(3_600_000)
        .enumerate()
        .map(|(i, at)| {
            let ns = base_ns + (i as u64 % 24) * 10_000;
            PointDto {
                at_ms: at,
                sent: 3_600,
                lost: 36,
                min_ns: Some(ns - 100_000),
                avg_ns: Some(ns as f64),
                max_ns: Some(ns + 900_000),
                stddev_ns: Some(50_000.0),
                p50_ns: Some(ns),
                p95_ns: Some(ns + 500_000),
                p99_ns: Some(ns + 800_000),
            }
        })
        .collect()
}

/// What the service checks of `branch=N`: the target is multipath and the
/// branch is one of its branches.
fn branch_check(t: &TargetDetail, flow: FlowSelection) -> Result<(), ReadError> {
    let Some(branch) = flow.branch() else {
        return Ok(());
    };
    if t.multipath.is_none() {
        return Err(ReadError::NotMultipath {
            target: t.summary.id.clone(),
        });
    }
    let known: Vec<BranchRef> = t
        .branches
        .iter()
        .filter_map(|b| BranchRef::new(b.index))
        .collect();
    if !known.contains(&branch) {
        return Err(ReadError::UnknownBranch {
            target: t.summary.id.clone(),
            branch,
            known,
        });
    }
    Ok(())
}

/// `id` as a multipath target with two branches.
pub fn multipath(mut t: TargetDetail) -> TargetDetail {
    t.multipath = Some(MultipathDto {
        discovered_at_ms: 1_000,
        probes_sent: 48,
        discovery_ms: 900,
        found: 2,
        stop: "complete".into(),
    });
    t.branches = (1..=2u8)
        .map(|index| BranchDto {
            index,
            flow_id: 40_000 + u16::from(index),
            split_ttl: Some(1),
            join_ttl: Some(3),
            discovered: vec![Some(ip(1)), Some(ip(10 + index)), Some(ip(3))],
            rounds: 100,
            hops: Vec::new(),
            end_to_end: StatsDto::default(),
        })
        .collect();
    t
}

impl ReadModel for Fake {
    fn service(&self) -> ServiceInfo {
        ServiceInfo {
            version: "0.1.0-test".into(),
            timestamp_source: "ebpf".into(),
            started_at_ms: 1,
            window_probes: 100,
            city_database: true,
        }
    }

    fn targets(&self) -> Vec<TargetSummary> {
        self.targets
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.summary.clone())
            .collect()
    }

    fn target(&self, id: &str) -> Option<TargetDetail> {
        self.find(id)
    }

    fn sparklines(&self) -> Vec<Sparkline> {
        self.targets()
            .iter()
            .map(|t| Sparkline {
                target: t.id.clone(),
                last_at_ms: Some(5_000),
                rtt_us: vec![Some(3000), None, Some(3100)],
            })
            .collect()
    }

    fn series(
        &self,
        id: &str,
        flow: FlowSelection,
        hops: HopSelection,
        range: TimeRange,
    ) -> Result<Option<Vec<SeriesDto>>, ReadError> {
        self.store_check()?;
        self.series_ranges.lock().unwrap().push(range);
        let Some(t) = self.find(id) else {
            return Ok(None);
        };
        branch_check(&t, flow)?;
        // A branch's RTTs are its index in tenths of a millisecond above the target's.
        let offset = flow.branch().map_or(0, |b| u64::from(b.get()) * 100_000);
        let hourly = range.span_ms() > MINUTE_UP_TO_MS;
        let series = |hop: HopRef| {
            let base = offset
                + match hop {
                    HopRef::Ttl(ttl) => u64::from(ttl) * 1_000_000,
                    HopRef::Destination => u64::from(t.summary.hop_count.unwrap()) * 1_000_000,
                };
            SeriesDto {
                hop,
                responder: None,
                resolution: if hourly { "1h" } else { "raw" }.into(),
                interval_ms: if hourly { 3_600_000 } else { 0 },
                points: if hourly {
                    hour_points(range, base)
                } else {
                    raw_points(range, base)
                },
                total: PointDto::default(),
            }
        };
        Ok(Some(match hops {
            HopSelection::One(hop) => vec![series(hop)],
            HopSelection::All => t
                .hops
                .iter()
                .map(|h| series(HopRef::Ttl(h.ttl)))
                .chain([series(HopRef::Destination)])
                .collect(),
        }))
    }

    fn hop_summary(
        &self,
        id: &str,
        flow: FlowSelection,
        range: TimeRange,
    ) -> Result<Option<HopSummaryDto>, ReadError> {
        self.store_check()?;
        let Some(t) = self.find(id) else {
            return Ok(None);
        };
        branch_check(&t, flow)?;
        let total = |ns: u64| PointDto {
            at_ms: range.from_ms,
            sent: 600,
            lost: 6,
            min_ns: Some(ns - 100_000),
            avg_ns: Some(ns as f64),
            max_ns: Some(ns + 900_000),
            stddev_ns: Some(50_000.0),
            p50_ns: Some(ns),
            p95_ns: Some(ns + 500_000),
            p99_ns: Some(ns + 800_000),
        };
        let mut hops: Vec<HopTotalDto> = t
            .hops
            .iter()
            .map(|h| HopTotalDto {
                hop: HopRef::Ttl(h.ttl),
                responder: Some(ip(h.ttl)),
                hostname: Some(format!("r{}.lab.example", h.ttl)),
                asn: as_of(h.ttl).map(|(asn, _)| asn),
                as_org: as_of(h.ttl).map(|(_, org)| org.to_owned()),
                total: total(u64::from(h.ttl) * 1_000_000),
            })
            .collect();
        hops.push(HopTotalDto {
            hop: HopRef::Destination,
            responder: t.summary.address,
            hostname: None,
            asn: None,
            as_org: None,
            total: total(3_000_000),
        });
        Ok(Some(HopSummaryDto {
            measurement: MeasurementDto {
                probe_interval_ms: 1000,
                protocol: "icmp".into(),
                port: 0,
                packet_size: 64,
                window_probes: 100,
                window_ms: 100_000,
                timestamp_source: Some("ebpf".into()),
            },
            resolution: "raw".into(),
            hops,
        }))
    }

    fn events(&self, id: &str, range: TimeRange) -> Result<Option<Vec<EventDto>>, ReadError> {
        self.store_check()?;
        Ok(self.find(id).map(|_| {
            vec![EventDto {
                target: id.to_owned(),
                at_ms: range.from_ms + 1,
                kind: "route_changed".into(),
                summary: "route changed at hop 2".into(),
                detail: serde_json::json!({"before": [ip(1), ip(2)], "after": [ip(1), ip(9)], "first_changed_ttl": 2}),
                as_info: as_of(1)
                    .map(|(asn, org)| AsInfoDto {
                        address: ip(1),
                        asn: Some(asn),
                        as_org: Some(org.to_owned()),
                    })
                    .into_iter()
                    .collect(),
            }]
        }))
    }

    fn health(&self) -> HealthDto {
        HealthDto {
            engine: EngineHealth {
                running: *self.engine_running.lock().unwrap(),
                timestamp_source: "ebpf".into(),
                probes_sent_total: 1234,
                in_flight: 3,
            },
            store: StoreHealthDto {
                ok: true,
                consecutive_failures: 0,
                last_flush_ok_at_ms: Some(5),
                last_error_at_ms: None,
                pending_bytes: 0,
            },
            targets: TargetCounts {
                total: 2,
                running: 2,
                ..TargetCounts::default()
            },
            last_round_at_ms: Some(20_000),
            shutting_down: false,
            components: Vec::new(),
            remote_write: Vec::new(),
        }
    }

    fn webhooks(&self) -> Vec<WebhookDto> {
        self.webhooks.lock().unwrap().clone()
    }

    fn incidents(&self, range: TimeRange, target: Option<&str>) -> Vec<IncidentDto> {
        let mut found: Vec<IncidentDto> = incidents()
            .into_iter()
            .filter(|i| {
                i.raised_at_ms <= range.to_ms
                    && i.cleared_at_ms.is_none_or(|c| c >= range.from_ms)
                    && target.is_none_or(|t| t == i.target)
            })
            .collect();
        found.sort_by_key(|i| std::cmp::Reverse(i.raised_at_ms));
        found
    }

    fn scrape_done(&self) {
        *self.scrapes_done.lock().unwrap() += 1;
    }

    fn metrics(&self) -> MetricsSnapshot {
        let mut h = Histogram::default();
        for v in [0.0002, 0.0031, 0.004, 0.2, 9.0] {
            h.observe(v);
        }
        MetricsSnapshot {
            remote_write: Vec::new(),
            memory: Some(MemoryMetrics {
                heap_in_use_bytes: Some(31 << 20),
                heap_mapped_bytes: Some(36 << 20),
                heap_free_bytes: Some(9 << 20),
                analysis_bytes: 12 << 20,
                recent_events_bytes: 6_400,
            }),
            version: "0.1.0-test".into(),
            timestamp_source: "ebpf".into(),
            engine: EngineMetrics {
                probes_sent: 1000,
                probes_answered: 990,
                probes_timed_out: 10,
                send_errors: 0,
                replies_unmatched: 1,
                in_flight: 2,
                kernel: Some(KernelMetrics {
                    parse_errors: 4,
                    ringbuf_drops: 5,
                    ingress_tc_clock: 6,
                    ..KernelMetrics::default()
                }),
            },
            store: StoreMetrics {
                write_bytes: 4096,
                flushes: 3,
                healthy: true,
                ..StoreMetrics::default()
            },
            live_rounds_skipped: 0,
            webhook_delivery_failures: Some(2),
            alert_outbox: None,
            components: Vec::new(),
            targets: vec![TargetMetrics {
                target: "alpha".into(),
                state: "running".into(),
                hop_count: Some(2),
                mos: Some(4.4),
                loss_ratio: Some(0.01),
                jitter_seconds: Some(0.0002),
                rounds: 100,
                route_changes: 1,
                hop_count_changes: 0,
                alerts_firing: vec!["loss".into()],
                probes_sent: 100,
                probes_received: 5,
                rtt: h.clone(),
                hops: vec![
                    HopMetrics {
                        ttl: 1,
                        responder: Some("198.18.1.2".into()),
                        probes_sent: 100,
                        probes_received: 5,
                        loss_ratio: Some(0.0),
                        jitter_seconds: Some(0.0001),
                        rate_limited: false,
                        slow_responder: false,
                        rtt: Some(h.clone()),
                    },
                    HopMetrics {
                        ttl: 2,
                        responder: None,
                        probes_sent: 100,
                        probes_received: 0,
                        loss_ratio: Some(1.0),
                        jitter_seconds: None,
                        rate_limited: true,
                        slow_responder: false,
                        rtt: Some(Histogram::default()),
                    },
                ],
                branches: vec![BranchMetrics {
                    branch: 2,
                    rounds: 40,
                    loss_ratio: Some(0.3),
                    rtt_avg_seconds: Some(0.003),
                    jitter_seconds: Some(0.0001),
                    split_ttl: Some(1),
                    join_ttl: Some(3),
                    hop_loss: vec![(1, 0.0), (2, 0.3)],
                }],
                discovery_probes: Some(64),
            }],
            peers: vec![PeerMetrics {
                peer: "branch-b".into(),
                state: "running",
                rtt_seconds: Some(0.030),
                forward_owd_seconds: Some(0.025),
                backward_owd_seconds: Some(0.005),
                owd_reliable: true,
                loss_ratio: Some(0.1),
                forward_loss_ratio: Some(0.0),
                backward_loss_ratio: Some(0.1),
                jitter_seconds: Some(0.0001),
                probes_sent: 500,
                probes_received: 450,
                reordered_forward: 1,
                reordered_backward: 2,
                duplicates_forward: 0,
                duplicates_backward: 3,
                alerts_firing: vec!["loss".into()],
            }],
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<EventDto> {
        self.events.subscribe()
    }

    fn peers(&self) -> Vec<PeerDto> {
        vec![peer("branch-b")]
    }

    fn config(&self) -> Result<ConfigDto, hopwatch_web::ConfigReadError> {
        Ok(config_dto())
    }

    /// A point a second per series: RTT 30 ms, forward 25 ms, backward 5 ms.
    fn peer_history(
        &self,
        name: &str,
        range: TimeRange,
    ) -> Result<Option<PeerHistoryDto>, ReadError> {
        if name != "branch-b" {
            return Ok(None);
        }
        let series = |name: &str, base_ns: u64| PeerSeriesDto {
            series: name.to_owned(),
            points: raw_points(range, base_ns),
            total: PointDto::default(),
        };
        Ok(Some(PeerHistoryDto {
            peer: name.to_owned(),
            resolution: "raw".to_owned(),
            interval_ms: 0,
            series: vec![
                series("rtt", 30_000_000),
                series("forward", 25_000_000),
                series("backward", 5_000_000),
            ],
        }))
    }
}

/// A running peer with 30 ms RTT split 25 / 5 ms and 10 % loss on the way
/// back, which raised a loss alert 5 s in (before `alpha`'s).
pub fn peer(name: &str) -> PeerDto {
    let delay = |ms: i64| DelayDto {
        min_ns: ms * 1_000_000,
        mean_ns: ms as f64 * 1e6,
        max_ns: ms * 1_000_000,
    };
    PeerDto {
        name: name.into(),
        label: Some("Branch B".into()),
        description: None,
        tags: vec!["wan".into()],
        address: "198.18.2.2".parse().expect("an IP"),
        port: 862,
        mode: "udp".into(),
        interval_ms: 10.0,
        packet_size: 72,
        state: PeerState::Running,
        error: None,
        local: Some("198.18.2.1:40000".into()),
        window_probes: 100,
        window: PeerWindowDto {
            probes: 100,
            received: 90,
            lost: 10,
            loss_pct: Some(10.0),
            rtt: Some(delay(30)),
            forward: PeerDirectionDto {
                owd: Some(delay(25)),
                loss_pct: Some(0.0),
                ..PeerDirectionDto::default()
            },
            backward: PeerDirectionDto {
                owd: Some(delay(5)),
                lost: 10,
                loss_pct: Some(10.0),
                ..PeerDirectionDto::default()
            },
            owd_verdict: Some("shared_clock".into()),
            owd_reliable: true,
            timestamp_source: Some("kernel".into()),
            ..PeerWindowDto::default()
        },
        totals: None,
        alerts: vec![alert(
            AlertSubject::Peer,
            &format!("peer:{name}"),
            5_000,
            "round-trip loss 10.0% over the last 100 probes (raises at 10.0%), \
             on the backward path (peer → here): forward 0.0%, backward 10.0%",
            Some(serde_json::json!({
                "kind": "loss", "direction": "backward",
                "forward_loss_pct": 0.0, "backward_loss_pct": 10.0,
            })),
        )],
    }
}

/// The configuration the fake shows: what a service's redaction leaves.
pub fn config_dto() -> ConfigDto {
    ConfigDto {
        path: Some("/etc/hopwatch/hopwatch.toml".into()),
        redacted: vec!["web.write_token".into(), "webhook[0].url".into()],
        config: serde_json::json!({
            "web": {"listen": "127.0.0.1:9470", "write_token": "<redacted>"},
            "webhook": [{"name": "ops", "url": "https://hooks.example/<redacted>"}],
            "target": [{"name": "alpha", "host": "198.18.3.2"}],
        }),
        toml: "[web]\nlisten = \"127.0.0.1:9470\"\nwrite_token = \"<redacted>\"\n".into(),
    }
}

impl Control for Fake {
    fn set_paused(&self, id: &str, paused: bool) -> Result<ControlOutcome, ControlError> {
        if id == "broken" {
            return Err(ControlError::Persist {
                path: "/etc/hopwatch/hopwatch.toml".into(),
                source: "permission denied".into(),
            });
        }
        let mut targets = self.targets.lock().unwrap();
        let t = targets
            .iter_mut()
            .find(|t| t.summary.id == id)
            .ok_or(ControlError::UnknownTarget { id: id.into() })?;
        let changed = t.summary.paused != paused;
        t.summary.paused = paused;
        t.summary.state = if paused {
            TargetState::Paused
        } else {
            TargetState::Running
        };
        self.calls
            .lock()
            .unwrap()
            .push(Call::Pause(id.into(), paused));
        Ok(ControlOutcome {
            target: id.into(),
            action: if paused { "paused" } else { "resumed" }.into(),
            changed,
            persisted_to: Some("hopwatch.toml".into()),
        })
    }

    fn add_target(&self, target: &NewTarget) -> Result<ControlOutcome, ControlError> {
        if self.find(&target.name).is_some() {
            return Err(ControlError::TargetExists {
                id: target.name.clone(),
            });
        }
        if target.interval.as_deref() == Some("1ms") {
            return Err(ControlError::Invalid {
                field: "interval".into(),
                reason: "1ms is below the minimum of 100ms".into(),
            });
        }
        self.calls.lock().unwrap().push(Call::Add(target.clone()));
        self.targets
            .lock()
            .unwrap()
            .push(detail(&target.name, 2, 0));
        Ok(ControlOutcome {
            target: target.name.clone(),
            action: "added".into(),
            changed: true,
            persisted_to: Some("hopwatch.toml".into()),
        })
    }

    /// All or nothing, as the service: every entry is checked as
    /// [`Fake::add_target`] checks one before any is added.
    fn add_targets(&self, list: &[NewTarget]) -> Result<Vec<ControlOutcome>, ControlError> {
        let errors: Vec<EntryError> = list
            .iter()
            .enumerate()
            .filter_map(|(index, t)| {
                let (field, reason) = if self.find(&t.name).is_some() {
                    (
                        "name",
                        format!("a target named {:?} already exists", t.name),
                    )
                } else if t.interval.as_deref() == Some("1ms") {
                    ("interval", "1ms is below the minimum of 100ms".to_owned())
                } else {
                    return None;
                };
                Some(EntryError {
                    index,
                    field: Some(field.into()),
                    reason,
                })
            })
            .collect();
        if !errors.is_empty() {
            return Err(ControlError::Entries { errors });
        }
        list.iter().map(|t| self.add_target(t)).collect()
    }

    fn remove_target(&self, id: &str) -> Result<ControlOutcome, ControlError> {
        let mut targets = self.targets.lock().unwrap();
        let before = targets.len();
        targets.retain(|t| t.summary.id != id);
        if targets.len() == before {
            return Err(ControlError::UnknownTarget { id: id.into() });
        }
        self.calls.lock().unwrap().push(Call::Remove(id.into()));
        Ok(ControlOutcome {
            target: id.into(),
            action: "removed".into(),
            changed: true,
            persisted_to: Some("hopwatch.toml".into()),
        })
    }
}

pub fn settings(read: bool, write: bool) -> WebSettings {
    WebSettings {
        tokens: Tokens {
            read: read.then(|| Token::new(READ_TOKEN)),
            write: write.then(|| Token::new(WRITE_TOKEN)),
        },
        max_body_bytes: 4096,
        live_interval: std::time::Duration::from_millis(50),
        overview_max_age: std::time::Duration::from_millis(10),
        ..WebSettings::default()
    }
}

pub fn app(fake: &Arc<Fake>, settings: WebSettings) -> (axum::Router, AppState) {
    let state = AppState::new(
        Arc::clone(fake) as Arc<dyn ReadModel>,
        Arc::clone(fake) as Arc<dyn Control>,
        settings,
    );
    (hopwatch_web::router(state.clone()), state)
}

/// Sends one request through the router.
pub async fn send(router: &axum::Router, request: Request<Body>) -> Response<Body> {
    router.clone().oneshot(request).await.expect("infallible")
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn with_token(method: &str, uri: &str, token: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

pub fn post_json(uri: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(uri).header("content-type", "application/json");
    if let Some(token) = token {
        b = b.header("authorization", format!("Bearer {token}"));
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

pub async fn body_text(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

pub async fn body_json(response: Response<Body>) -> serde_json::Value {
    let text = body_text(response).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

//! MPLS label stacks and quoted-header rewrites through the whole daemon
//! without privileges: a simulated network answers the engine's probes with
//! parsed replies (RFC 4950 labels at two hops, a DSCP rewrite from hop 3 on),
//! the monitor's pipeline turns them into path facts, and the web API serves
//! them on the hops, in the target's middlebox list and as events. Linux
//! routers cannot send RFC 4950 extensions; the lab's test
//! (tests/tests/middlebox_lab.rs) answers for one with a raw socket, and this
//! one checks the same way through the daemon without privileges.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::sim;

use hopwatch::config::Config;
use hopwatch::monitor::Monitor;
use hopwatch::probe::correlate::Correlator;
use hopwatch::probe::parse::{MplsLabel, QuotedHeader, Reply, ReplyKind};
use hopwatch::probe::transport::{OutgoingProbe, SendStamp, TransportError, TxStampId};
use hopwatch::probe::{Engine, ProbeTransport};
use hopwatch::webapi::{NoAlerts, WebApi};
use hopwatch_web::model::ReadModel;
use serde_json::{json, Value};

const SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const TARGET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const HOPS: u8 = 5;

fn router(ttl: u8) -> IpAddr {
    IpAddr::from([198, 18, ttl, 2])
}

/// The label stack router `ttl` reports: two labels at hop 2, one at hop 3.
fn labels(ttl: u8) -> Vec<MplsLabel> {
    let entry = |label: u32, bottom: bool, ttl: u8| {
        MplsLabel::from_entry(label << 12 | u32::from(bottom) << 8 | u32::from(ttl))
    };
    match ttl {
        2 => vec![entry(24001, false, 1), entry(16, true, 1)],
        3 => vec![entry(24002, true, 1)],
        _ => Vec::new(),
    }
}

/// Answers ICMP echo probes like a path of `HOPS` routers whose third one
/// marks DSCP 46 (so quotes from hop 3 on show it).
struct SimPath {
    correlator: Arc<Correlator>,
}

impl ProbeTransport for SimPath {
    fn send(&self, probe: &OutgoingProbe<'_>) -> Result<SendStamp, TransportError> {
        let key = sim::key_of(probe);
        let flow = key.flow;
        let ttl = probe.ttl.get();
        let (responder, kind, icmp_type, quote) = if ttl >= HOPS {
            (IpAddr::V4(TARGET), ReplyKind::EchoReply, 0, None)
        } else {
            let quote = QuotedHeader {
                tos: if ttl >= 3 { 46 << 2 } else { 0 },
                ttl: 1,
                ip_len: 64,
                src: IpAddr::V4(SOURCE),
                src_port: flow,
            };
            (router(ttl), ReplyKind::TimeExceeded, 11, Some(quote))
        };
        let mut mpls = heapless::Vec::new();
        for label in labels(ttl) {
            mpls.push(label).unwrap();
        }
        let reply = Reply {
            mpls,
            reply_ttl: Some(64 - ttl),
            quote,
            ..sim::reply(responder, kind, key, icmp_type, 0)
        };
        let rtt_ns = u64::from(ttl) * 100_000;
        sim::answer(&self.correlator, reply, rtt_ns, Duration::from_millis(1));
        Ok(sim::sent())
    }

    fn take_tx_stamp(&self, _id: TxStampId) -> Option<u64> {
        None
    }
}

fn engine() -> Engine {
    let correlator = Arc::new(Correlator::new());
    let transport = Arc::new(SimPath {
        correlator: Arc::clone(&correlator),
    });
    sim::engine(transport, correlator, SOURCE)
}

fn hop(detail: &Value, ttl: u8) -> &Value {
    detail["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["ttl"] == ttl)
        .unwrap_or_else(|| panic!("no hop {ttl}: {detail:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_and_rewrites_from_parsed_replies_reach_the_api_hops_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[service]\nstate_dir = \"{}\"\n\n[web]\nlisten = \"127.0.0.1:0\"\n\n\
         [defaults]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nmax_hops = 8\n\n\
         [[target]]\nname = \"mpls\"\nhost = \"{TARGET}\"\n",
        dir.path().display()
    );
    let config = Config::parse(&text, dir.path().join("hopwatch.toml")).unwrap();
    let monitor = Arc::new(Monitor::start_with_engine(config.clone(), engine()).unwrap());
    let api = WebApi::new(&monitor, config, None, Arc::new(NoAlerts), None);

    let started = Instant::now();
    let detail = loop {
        let detail = serde_json::to_value(api.target("mpls").expect("target")).unwrap();
        let ready = detail["recent_events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "mpls_changed"))
            && detail["middleboxes"]
                .as_array()
                .is_some_and(|m| !m.is_empty());
        if ready {
            break detail;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no facts after 10 s: {detail:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Labels on their hops, per responder, as mtr prints them.
    assert_eq!(
        hop(&detail, 2)["mpls"],
        json!([{
            "responder": router(2).to_string(),
            "labels": [
                {"label": 24001, "traffic_class": 0, "bottom_of_stack": false, "ttl": 1},
                {"label": 16, "traffic_class": 0, "bottom_of_stack": true, "ttl": 1},
            ],
            "text": "Lbl 24001 TC 0 S 0 TTL 1, Lbl 16 TC 0 S 1 TTL 1",
        }])
    );
    assert_eq!(
        hop(&detail, 3)["mpls"][0]["text"],
        "Lbl 24002 TC 0 S 1 TTL 1"
    );
    for ttl in [1, 4] {
        assert_eq!(hop(&detail, ttl)["mpls"], json!([]), "hop {ttl}");
    }

    // The DSCP rewrite at hop 3, the first whose quote shows it.
    let fact = json!({
        "ttl": 3, "responder": router(3).to_string(), "field": "dscp", "from": 0, "to": 46,
        "summary": format!("DSCP 0 → 46 at hop 3 ({})", router(3)),
    });
    assert_eq!(detail["middleboxes"], json!([fact.clone()]));
    assert_eq!(hop(&detail, 3)["middleboxes"], json!([fact]));
    assert_eq!(hop(&detail, 2)["middleboxes"], json!([]));

    // Both changes are events, with the facts in their detail.
    let events = detail["recent_events"].as_array().unwrap();
    let mpls = events.iter().find(|e| e["kind"] == "mpls_changed").unwrap();
    assert_eq!(mpls["detail"]["before"], json!([]));
    assert_eq!(mpls["detail"]["after"][0]["ttl"], 2, "{mpls:#}");
    assert_eq!(
        mpls["summary"],
        format!(
            "MPLS labels seen: hop 2 ({}) labels 24001/16, hop 3 ({}) labels 24002",
            router(2),
            router(3)
        )
    );
    let middlebox = events
        .iter()
        .find(|e| e["kind"] == "middlebox_changed")
        .unwrap();
    assert_eq!(
        middlebox["detail"]["after"][0]["field"], "dscp",
        "{middlebox:#}"
    );

    drop(api);
    match Arc::try_unwrap(monitor) {
        Ok(monitor) => monitor.shutdown().await,
        Err(_) => panic!("the test kept a reference to the monitor"),
    }
}

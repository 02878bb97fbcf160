//! ReverseDns against a loopback socket that never answers: one query per
//! address however many callers ask, callers never wait, and a silent server
//! ends in `Failed` within the timeout. (Real answers are tested against
//! dnsmasq in the lab: tests/tests/enrich_dns.rs.)

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use super::*;

/// A "DNS server" on loopback that reads nothing and answers nothing.
fn silent_server() -> UdpSocket {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback UDP socket")
}

fn config(server: &UdpSocket, timeout: Duration) -> RdnsConfig {
    RdnsConfig {
        servers: vec![server.local_addr().expect("local address")],
        timeout,
        concurrency: 4,
        queue: 64,
        cache: DnsCachePolicy::default(),
    }
}

/// Distinct lookups waiting on `socket`, by DNS message ID: the resolver may
/// retransmit one query (same ID) while it waits.
fn lookups_received(socket: &UdpSocket) -> BTreeSet<u16> {
    socket.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 512];
    let mut ids = BTreeSet::new();
    while let Ok(len) = socket.recv(&mut buf) {
        assert!(len >= 12, "a {len}-byte datagram is no DNS query");
        ids.insert(u16::from_be_bytes([buf[0], buf[1]]));
    }
    ids
}

async fn wait_until_settled(rdns: &ReverseDns, ip: IpAddr, limit: Duration) -> (Lookup, Duration) {
    let start = Instant::now();
    loop {
        let got = rdns.lookup_cached(ip);
        if got != Lookup::Pending || start.elapsed() > limit {
            return (got, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_query_and_a_silent_server_fails_in_time() {
    let server = silent_server();
    let timeout = Duration::from_millis(300);
    let rdns = Arc::new(ReverseDns::new(config(&server, timeout)).expect("build"));
    let ip: IpAddr = Ipv4Addr::new(192, 0, 2, 7).into();

    // Many callers at once, from plain threads: every one returns at once.
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let rdns = rdns.clone();
            std::thread::spawn(move || rdns.lookup_cached(ip))
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().expect("caller thread"), Lookup::Pending);
    }
    let stats = rdns.stats();
    assert_eq!(stats.cache_misses, 1, "{stats:?}");
    assert_eq!(stats.pending_hits, 15, "{stats:?}");

    let (got, waited) = wait_until_settled(&rdns, ip, timeout * 5).await;
    assert_eq!(got, Lookup::Failed, "after {waited:?}");
    assert!(
        waited < timeout * 3,
        "a silent server took {waited:?} to fail (timeout {timeout:?})"
    );
    assert_eq!(
        lookups_received(&server).len(),
        1,
        "one lookup for sixteen callers"
    );

    // The failure is cached: asking again sends nothing.
    assert_eq!(rdns.lookup_cached(ip), Lookup::Failed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(lookups_received(&server).len(), 0);
    let stats = rdns.stats();
    assert_eq!((stats.failures, stats.in_flight), (1, 0), "{stats:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_turns_misses_away_and_they_are_retried_later() {
    let server = silent_server();
    let mut cfg = config(&server, Duration::from_millis(200));
    cfg.concurrency = 1;
    cfg.queue = 1;
    let rdns = ReverseDns::new(cfg).expect("build");
    // Nothing runs until this task yields, so the dispatcher has not taken
    // anything yet: the second address finds the one-slot queue full.
    let a: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
    let b: IpAddr = Ipv4Addr::new(192, 0, 2, 2).into();
    assert_eq!(rdns.lookup_cached(a), Lookup::Pending);
    assert_eq!(rdns.lookup_cached(b), Lookup::Pending);
    assert_eq!(rdns.stats().queue_full, 1);
    // b was not left pending: once the dispatcher has taken a, the next call
    // queues b.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(rdns.lookup_cached(b), Lookup::Pending);
    assert_eq!(rdns.stats().cache_misses, 3, "{:?}", rdns.stats());
    let (got, _) = wait_until_settled(&rdns, b, Duration::from_secs(2)).await;
    assert_eq!(got, Lookup::Failed);
}

#[test]
fn building_outside_a_runtime_is_a_clear_error() {
    let server = silent_server();
    let err = ReverseDns::new(config(&server, Duration::from_secs(1))).expect_err("no runtime");
    assert!(matches!(err, EnrichError::NoRuntime), "{err}");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn bad_settings_are_refused() {
    let server = silent_server();
    let mut cfg = config(&server, Duration::ZERO);
    let err = ReverseDns::new(cfg.clone()).expect_err("zero timeout");
    assert!(matches!(err, EnrichError::ZeroTimeout { .. }), "{err}");
    cfg.timeout = Duration::from_secs(1);
    cfg.concurrency = 0;
    let err = ReverseDns::new(cfg).expect_err("zero concurrency");
    assert!(matches!(err, EnrichError::ZeroConcurrency), "{err}");
}

#[test]
fn after_its_runtime_stops_a_miss_is_failed_not_pending_for_ever() {
    let server = silent_server();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rdns = runtime.block_on(async { ReverseDns::new(config(&server, Duration::from_secs(1))) });
    let rdns = rdns.expect("build");
    drop(runtime);
    let ip: IpAddr = Ipv4Addr::new(192, 0, 2, 9).into();
    assert_eq!(rdns.lookup_cached(ip), Lookup::Failed);
    assert_eq!(rdns.lookup_cached(ip), Lookup::Failed);
    let stats = rdns.stats();
    assert_eq!(
        (stats.failures, stats.cache_hits, stats.queue_full),
        (1, 1, 0),
        "{stats:?}"
    );
}

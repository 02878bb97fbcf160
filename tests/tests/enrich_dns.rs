//! Reverse DNS enrichment against a real DNS server inside the lab: Debian's
//! dnsmasq runs in the `dst` namespace with PTR data for the routers, and the
//! enricher resolves from the `src` namespace. Names come back, "no name" and
//! names are cached (dnsmasq's query log shows one query per address), a dead
//! server fails within the timeout without holding up anything else, and names
//! expire with the answer's TTL. Privileged; fails (never skips) without root.
//! Every packet stays inside the lab.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hopwatch::enrich::{DnsCachePolicy, EnrichConfig, Enricher, Lookup};
use hopwatch_lab::netns::exec::NsChild;
use hopwatch_lab::{Hop, Lab, LabSpec};

/// The test's PTR domain; `.test` is reserved for testing (RFC 6761).
const DOMAIN: &str = "lab.test";

/// A dnsmasq serving the lab's routers, and the lines it logged.
struct Dnsmasq<'lab> {
    _child: NsChild<'lab>,
    log: Arc<Mutex<Vec<String>>>,
}

impl<'lab> Dnsmasq<'lab> {
    /// Starts dnsmasq in `node`, listening on that node's addresses facing
    /// `peer`, with a name for each router and NXDOMAIN for any other address
    /// in the lab's reverse zones. `local_ttl` is the TTL of its answers.
    fn start(lab: &'lab Lab, node: &str, peer: &str, local_ttl: u32) -> Dnsmasq<'lab> {
        let listen = lab.interface(node, peer).expect("the server's interface");
        let mut cmd = lab.command(node, "dnsmasq").expect("dnsmasq command");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--no-resolv",
            "--no-hosts",
            "--port=53",
            "--bind-interfaces",
            "--user=nobody",
            "--group=nogroup",
            "--log-queries",
            "--log-facility=-",
        ]);
        cmd.arg(format!("--listen-address={}", listen.v4));
        cmd.arg(format!("--listen-address={}", listen.v6));
        cmd.arg(format!("--local-ttl={local_ttl}"));
        // Answer for the lab's reverse zones only, from local data: NXDOMAIN
        // for addresses without a record, and nothing ever forwarded.
        for zone in [
            "18.198.in-addr.arpa",
            "19.198.in-addr.arpa",
            "8.b.d.0.1.0.0.2.ip6.arpa",
        ] {
            cmd.arg(format!("--local=/{zone}/"));
        }
        for hop in lab.hops() {
            // A host record makes the PTR records for both addresses.
            cmd.arg(format!(
                "--host-record={},{},{}",
                router_name(&hop),
                hop.v4,
                hop.v6
            ));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = lab.spawn(node, cmd).expect(
            "dnsmasq starts (apt-get install dnsmasq-base; deploy/setup-test.sh installs it)",
        );
        let stderr = child.child_mut().stderr.take().expect("dnsmasq's stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        let server = Dnsmasq { _child: child, log };
        // dnsmasq binds its sockets before it logs this; a failed bind exits
        // with the reason on stderr, shown below.
        let ready = server.wait_for(Duration::from_secs(10), |lines| {
            lines
                .iter()
                .any(|l| l.contains("using only locally-known addresses"))
        });
        assert!(
            ready,
            "dnsmasq did not start; it said:\n{}",
            server.lines().join("\n")
        );
        server
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    fn wait_for(&self, limit: Duration, done: impl Fn(&[String]) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done(&self.log.lock().expect("log lock")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// PTR queries for `ip` among `lines`.
    fn ptr_queries_in(lines: &[String], ip: IpAddr) -> usize {
        let needle = format!("query[PTR] {} ", reverse_name(ip));
        lines.iter().filter(|l| l.contains(&needle)).count()
    }

    /// Waits until dnsmasq has logged `want` PTR queries for every one of
    /// `ips` (its log is written a little after the answer), then checks that
    /// no more than that arrived.
    fn assert_ptr_queries(&self, ips: &[IpAddr], want: usize) {
        self.wait_for(Duration::from_secs(5), |lines| {
            ips.iter()
                .all(|ip| Self::ptr_queries_in(lines, *ip) >= want)
        });
        let lines = self.lines();
        for ip in ips {
            assert_eq!(
                Self::ptr_queries_in(&lines, *ip),
                want,
                "PTR queries for {ip}; dnsmasq logged:\n{}",
                lines.join("\n")
            );
        }
    }
}

/// The message ID and question name of a DNS query datagram.
fn query_id_and_name(datagram: &[u8]) -> (u16, String) {
    assert!(datagram.len() > 12, "a DNS query is longer than its header");
    let id = u16::from_be_bytes([datagram[0], datagram[1]]);
    let mut labels = Vec::new();
    let mut at = 12;
    while let Some(&len) = datagram.get(at).filter(|&&len| len != 0) {
        let label = datagram
            .get(at + 1..at + 1 + usize::from(len))
            .expect("a label inside the datagram");
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += 1 + usize::from(len);
    }
    (id, labels.join("."))
}

fn router_name(hop: &Hop) -> String {
    format!("{}.{DOMAIN}", hop.name)
}

/// The PTR owner name of `ip`, as dnsmasq logs it.
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let [a, b, c, d] = a.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(a) => {
            let mut labels: Vec<String> = a
                .octets()
                .iter()
                .flat_map(|byte| [byte >> 4, byte & 0xf])
                .map(|nibble| format!("{nibble:x}"))
                .collect();
            labels.reverse();
            format!("{}.ip6.arpa", labels.join("."))
        }
    }
}

fn enricher(server: SocketAddr, timeout: Duration, cache: DnsCachePolicy) -> Enricher {
    Enricher::new(EnrichConfig {
        reverse_dns: true,
        dns_timeout: timeout,
        dns_servers: vec![server],
        dns_cache: cache,
        asn_database: None,
        ..EnrichConfig::default()
    })
    .expect("enricher")
}

/// Polls until `ip` is no longer pending, or `limit` passes.
async fn settled(enricher: &Enricher, ip: IpAddr, limit: Duration) -> Lookup {
    let start = Instant::now();
    loop {
        let got = enricher.lookup_cached(ip).expect("reverse DNS is on");
        if got != Lookup::Pending || start.elapsed() > limit {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `f` on a current-thread runtime in the lab's source namespace.
fn in_src<T: Send>(lab: &Lab, f: impl std::future::Future<Output = T> + Send) -> T {
    lab.run_in("src", move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f)
    })
    .expect("running in the source namespace")
}

fn lab() -> Lab {
    LabSpec::chain(2)
        .build()
        .expect("the lab builds (needs root: CAP_NET_ADMIN, CAP_SYS_ADMIN)")
}

#[test]
fn routers_resolve_through_dnsmasq_and_every_answer_is_cached() {
    let lab = lab();
    let dns = Dnsmasq::start(&lab, "dst", "r2", 300);
    let server = SocketAddr::new(lab.interface("dst", "r2").unwrap().v4.into(), 53);
    let hops = lab.hops();
    let named: Vec<(IpAddr, String)> = hops
        .iter()
        .flat_map(|h| [(h.v4.into(), router_name(h)), (h.v6.into(), router_name(h))])
        .collect();
    // The source's own addresses have no record: dnsmasq says NXDOMAIN.
    let nameless: Vec<IpAddr> = vec![lab.src_v4().into(), lab.src_v6().into()];
    let all: Vec<IpAddr> = named
        .iter()
        .map(|(ip, _)| *ip)
        .chain(nameless.iter().copied())
        .collect();

    let enricher = in_src(&lab, {
        let (named, nameless, all) = (named.clone(), nameless.clone(), all.clone());
        async move {
            let enricher = enricher(server, Duration::from_secs(2), DnsCachePolicy::default());
            for ip in &all {
                assert_eq!(
                    enricher.lookup_cached(*ip),
                    Some(Lookup::Pending),
                    "{ip}: first call"
                );
            }
            for (ip, name) in &named {
                let got = settled(&enricher, *ip, Duration::from_secs(5)).await;
                assert_eq!(got, Lookup::Resolved(name.clone()), "{ip}");
                assert_eq!(
                    enricher.responder_info(*ip).hostname.as_deref(),
                    Some(name.as_str())
                );
            }
            for ip in &nameless {
                assert_eq!(
                    settled(&enricher, *ip, Duration::from_secs(5)).await,
                    Lookup::NotFound,
                    "{ip}"
                );
                assert_eq!(enricher.responder_info(*ip).hostname, None);
            }
            enricher
        }
    });
    dns.assert_ptr_queries(&all, 1);

    // Everything again, names and "no name" alike: from the cache, no query.
    for _ in 0..3 {
        for (ip, name) in &named {
            assert_eq!(
                enricher.lookup_cached(*ip),
                Some(Lookup::Resolved(name.clone()))
            );
        }
        for ip in &nameless {
            assert_eq!(enricher.lookup_cached(*ip), Some(Lookup::NotFound));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    dns.assert_ptr_queries(&all, 1);

    let stats = enricher.stats().dns.expect("reverse DNS stats");
    assert_eq!(stats.cache_misses, all.len() as u64, "{stats:?}");
    assert_eq!(
        (stats.resolved, stats.not_found, stats.failures),
        (named.len() as u64, 2, 0),
        "{stats:?}"
    );
    assert!(stats.cache_hits >= 3 * all.len() as u64, "{stats:?}");
    assert_eq!(stats.in_flight, 0, "{stats:?}");
}

#[test]
fn a_dead_server_fails_within_the_timeout_without_holding_up_other_lookups() {
    let lab = lab();
    let live = Dnsmasq::start(&lab, "dst", "r2", 300);
    let live_server = SocketAddr::new(lab.interface("dst", "r2").unwrap().v6.into(), 53);
    // The dead server: a socket on r1 that takes queries and never answers.
    let dead_addr = SocketAddr::new(lab.interface("r1", "r2").unwrap().v4.into(), 53);
    let dead = lab
        .run_in("r1", move || UdpSocket::bind(dead_addr))
        .expect("run in r1")
        .expect("bind the dead server's socket");
    let hops = lab.hops();
    let asked: Vec<IpAddr> = hops
        .iter()
        .flat_map(|h| [IpAddr::from(h.v4), IpAddr::from(h.v6)])
        .collect();
    let r2 = hops.last().expect("two routers");
    let (r2_v4, r2_name) = (IpAddr::from(r2.v4), router_name(r2));
    let timeout = Duration::from_millis(800);

    in_src(&lab, {
        let asked = asked.clone();
        async move {
            let dead = enricher(dead_addr, timeout, DnsCachePolicy::default());
            let live = enricher(live_server, timeout, DnsCachePolicy::default());
            let start = Instant::now();
            for ip in &asked {
                assert_eq!(dead.lookup_cached(*ip), Some(Lookup::Pending));
            }
            let calls_took = start.elapsed();
            assert!(
                calls_took < timeout / 4,
                "queueing four lookups took {calls_took:?}: callers must not wait"
            );

            // While the dead server's lookups hang, another enricher on the same
            // runtime (its own server, over IPv6) gets its answer.
            assert_eq!(live.lookup_cached(r2_v4), Some(Lookup::Pending));
            assert_eq!(
                settled(&live, r2_v4, timeout).await,
                Lookup::Resolved(r2_name)
            );
            let live_took = start.elapsed();
            assert!(live_took < timeout, "the live lookup took {live_took:?}");
            for ip in &asked {
                assert_eq!(
                    dead.lookup_cached(*ip),
                    Some(Lookup::Pending),
                    "{ip} ended before its timeout"
                );
            }

            // All four fail together, after one timeout: they ran side by side.
            for ip in &asked {
                assert_eq!(
                    settled(&dead, *ip, timeout * 3).await,
                    Lookup::Failed,
                    "{ip}"
                );
            }
            let failed_after = start.elapsed();
            assert!(
                failed_after >= timeout && failed_after < timeout * 2,
                "four lookups to a dead server ended after {failed_after:?} (timeout {timeout:?})"
            );
            // The failure is cached.
            for ip in &asked {
                assert_eq!(dead.lookup_cached(*ip), Some(Lookup::Failed));
            }
            let stats = dead.stats().dns.expect("stats");
            assert_eq!(
                (stats.cache_misses, stats.failures, stats.in_flight),
                (4, 4, 0),
                "{stats:?}"
            );
        }
    });

    // One lookup per address reached the dead server, and none after it
    // failed. The resolver retransmits a UDP query it has no answer for
    // (same message ID, every 333 ms), so lookups are counted by ID.
    dead.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 512];
    let mut lookups: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    while let Ok(len) = dead.recv(&mut buf) {
        let (id, qname) = query_id_and_name(&buf[..len]);
        lookups.entry(qname).or_default().insert(id);
    }
    let want: BTreeSet<String> = asked.iter().map(|ip| reverse_name(*ip)).collect();
    assert_eq!(
        lookups.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "names asked at the dead server"
    );
    for (qname, ids) in &lookups {
        assert_eq!(
            ids.len(),
            1,
            "{qname} was looked up more than once: message IDs {ids:?}"
        );
    }
    live.assert_ptr_queries(&[r2_v4], 1);
}

#[test]
fn names_expire_with_the_answers_ttl() {
    let lab = lab();
    // Answers with a 1 s TTL, and a policy that does not raise it.
    let dns = Dnsmasq::start(&lab, "dst", "r2", 1);
    let server = SocketAddr::new(lab.interface("dst", "r2").unwrap().v4.into(), 53);
    let r1 = lab.hops().first().cloned().expect("a router");
    let (ip, name) = (IpAddr::from(r1.v4), router_name(&r1));
    let policy = DnsCachePolicy {
        min_ttl: Duration::ZERO,
        ..DnsCachePolicy::default()
    };

    in_src(&lab, async move {
        let enricher = enricher(server, Duration::from_secs(2), policy);
        enricher.lookup_cached(ip);
        let answer = Lookup::Resolved(name.clone());
        assert_eq!(settled(&enricher, ip, Duration::from_secs(5)).await, answer);
        let resolved_at = Instant::now();
        assert_eq!(
            enricher.lookup_cached(ip),
            Some(answer.clone()),
            "cached within its TTL"
        );

        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            enricher.lookup_cached(ip),
            Some(Lookup::Pending),
            "the 1 s answer was still cached {:?} after it arrived",
            resolved_at.elapsed()
        );
        assert_eq!(settled(&enricher, ip, Duration::from_secs(5)).await, answer);
    });
    dns.assert_ptr_queries(&[ip], 2);
}

//! Proves the eBPF timestamper end to end on this kernel: each test builds its own
//! namespaces (prober A — router R — target B, joined by veth pairs, addresses in
//! 198.18.0.0/15 and 2001:db8::/32), loads the programs inside A, sends real
//! probes, and checks the kernel's reply events, RTTs and counters.
//!
//! Needs root (CAP_SYS_ADMIN for namespaces, CAP_BPF and CAP_NET_ADMIN for eBPF)
//! and fails loudly without it. Traffic stays inside the namespaces created here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use hopwatch::probe::ebpf::{AttachMode, EbpfTimestamper, ReplyEvents};
use hopwatch_probe_common::{ipproto, ProbeFilter, ProbeKey, ReplyEvent};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const FLOW_LO: u16 = 40_000;
const FLOW_HI: u16 = 40_100;
const FILTER: ProbeFilter = ProbeFilter::flows(FLOW_LO, FLOW_HI);

const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const R4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const B4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const R6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);

// ---------------------------------------------------------------------------
// The lab: three namespaces, removed on drop.

/// A — R — B. A is the prober, R forwards (and sends time-exceeded), B is the target.
struct Lab {
    a: String,
    r: String,
    b: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2; `sudo deploy/setup.sh` installs it)")?;
    ensure!(
        out.status.success(),
        "`ip {}` failed: {} (these tests need root: CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn sysctl(ns: &str, settings: &[&str]) -> Result<()> {
    let mut args = vec!["netns", "exec", ns, "sysctl", "-q", "-w"];
    args.extend_from_slice(settings);
    ip(&args)
}

impl Lab {
    fn new() -> Result<Lab> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "hwe{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            a: format!("{id}-a"),
            r: format!("{id}-r"),
            b: format!("{id}-b"),
        };
        for ns in [&lab.a, &lab.r, &lab.b] {
            ip(&["netns", "add", ns])?;
            // Without DAD, IPv6 link-local addresses work as soon as the links are
            // up; otherwise the first neighbour discovery can stall for a second
            // and land in a probe's RTT.
            sysctl(
                ns,
                &[
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            )?;
        }
        lab.wire().context("building the lab")?;
        Ok(lab)
    }

    fn wire(&self) -> Result<()> {
        let (a, r, b) = (self.a.as_str(), self.r.as_str(), self.b.as_str());
        ip(&[
            "-n", a, "link", "add", "a0", "type", "veth", "peer", "name", "r0", "netns", r,
        ])?;
        ip(&[
            "-n", r, "link", "add", "r1", "type", "veth", "peer", "name", "b0", "netns", b,
        ])?;
        let addrs: [(&str, &str, &[&str]); 4] = [
            (a, "a0", &["198.18.1.1/24", "2001:db8:1::1/64"]),
            (r, "r0", &["198.18.1.2/24", "2001:db8:1::2/64"]),
            (r, "r1", &["198.18.2.1/24", "2001:db8:2::1/64"]),
            (b, "b0", &["198.18.2.2/24", "2001:db8:2::2/64"]),
        ];
        for (ns, dev, list) in addrs {
            for addr in list {
                let mut args = vec!["-n", ns, "addr", "add", addr, "dev", dev];
                if addr.contains(':') {
                    // Skip duplicate address detection: the address is usable at once.
                    args.push("nodad");
                }
                ip(&args)?;
            }
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        for ns in [a, r, b] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", a, "route", "add", "default", "via", "198.18.1.2"])?;
        ip(&[
            "-n",
            a,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:1::2",
        ])?;
        ip(&["-n", b, "route", "add", "default", "via", "198.18.2.1"])?;
        ip(&[
            "-n",
            b,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:2::1",
        ])?;
        sysctl(
            r,
            &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
        )?;
        // Routers rate-limit ICMP errors; the tests send them back to back.
        for ns in [r, b] {
            sysctl(
                ns,
                &["net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"],
            )?;
        }
        Ok(())
    }

    /// Runs `f` on a thread inside namespace `ns` with a current-thread tokio
    /// runtime, as the engine would run in its own namespace.
    fn run_in<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl AsyncFnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || -> Result<T> {
            enter_netns(&path)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("test thread panicked"))?
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.r, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Moves the calling thread (only) into the named namespace.
fn enter_netns(path: &str) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns({path}); needs CAP_SYS_ADMIN"))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Probes, built by hand so the test knows each probe's identity on the wire.

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    let mut odd: Option<u8> = None;
    for &b in chunks.iter().flat_map(|c| c.iter()) {
        match odd.take() {
            Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
            None => odd = Some(b),
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"hopwatch-ebpf-test");
    if !v6 {
        // The kernel fills in the ICMPv6 checksum itself (it needs the pseudo-header).
        let c = checksum(&[&p]);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// A UDP datagram with its checksum computed here, as the prober does: the
/// checksum is part of the probe's identity.
fn udp_datagram(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> (Vec<u8>, u16) {
    let payload = b"hopwatch-ebpf-test";
    let len = (8 + payload.len()) as u16;
    let mut d = Vec::new();
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&t.octets());
            pseudo.extend_from_slice(&[0, ipproto::UDP]);
            pseudo.extend_from_slice(&len.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(t)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&t.octets());
            pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, ipproto::UDP]);
        }
        _ => unreachable!("mixed families"),
    }
    let mut c = checksum(&[&pseudo, &d]);
    if c == 0 {
        c = 0xffff;
    }
    d[6..8].copy_from_slice(&c.to_be_bytes());
    (d, c)
}

fn raw_socket(dst: IpAddr, proto: i32, ttl: u32) -> Result<Socket> {
    let socket = match dst {
        IpAddr::V4(_) => {
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(proto)))?;
            s.set_ttl(ttl)?;
            s
        }
        IpAddr::V6(_) => {
            let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(proto)))?;
            s.set_unicast_hops_v6(ttl)?;
            s
        }
    };
    Ok(socket)
}

fn send_raw(dst: IpAddr, proto: u8, ttl: u32, packet: &[u8]) -> Result<()> {
    let socket =
        raw_socket(dst, i32::from(proto), ttl).context("raw socket (needs CAP_NET_RAW)")?;
    socket.send_to(packet, &SockAddr::from(SocketAddr::new(dst, 0)))?;
    Ok(())
}

fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn key_for(dst: IpAddr, proto: u8, flow: u16, seq: u32) -> ProbeKey {
    match dst {
        IpAddr::V4(a) => ProbeKey::v4(a.octets(), proto, flow, seq),
        IpAddr::V6(a) => ProbeKey::v6(a.octets(), proto, flow, seq),
    }
}

fn addr_bytes(a: IpAddr) -> [u8; 16] {
    key_for(a, 0, 0, 0).dst
}

/// Waits for the event whose key satisfies `wanted`, skipping others (IPv6
/// neighbour discovery and the like never match, but other probes may).
async fn wait_for(
    events: &mut ReplyEvents,
    wanted: impl Fn(&ProbeKey) -> bool,
) -> Result<ReplyEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .context("no matching reply event within 3 s")??;
        if wanted(&event.key) {
            return Ok(event);
        }
    }
}

/// What every matched event must satisfy: the right key and responder, a kernel
/// RTT inside the userspace send→receive window, and a snapshot that starts with
/// the reply's IP header.
fn check_event(
    event: &ReplyEvent,
    key: &ProbeKey,
    responder: IpAddr,
    sent_ns: u64,
    received_ns: u64,
) -> Result<()> {
    ensure!(event.key == *key, "key {:?}, expected {key:?}", event.key);
    ensure!(
        event.responder == addr_bytes(responder),
        "responder {:?}, expected {responder}",
        event.responder
    );
    let rtt = event.rtt_ns();
    ensure!(
        rtt > 0 && rtt < 1_000_000_000,
        "implausible kernel RTT {rtt} ns"
    );
    // Shown with --nocapture: kernel RTT against the userspace send→receive time.
    println!(
        "{responder}: kernel RTT {rtt} ns, userspace window {} ns",
        received_ns - sent_ns
    );
    ensure!(
        sent_ns <= event.tx_ns && event.rx_ns <= received_ns,
        "kernel stamps {}..{} outside the userspace window {sent_ns}..{received_ns}",
        event.tx_ns,
        event.rx_ns
    );
    ensure!(event.ifindex != 0, "no ifindex");
    let snap = &event.packet[..event.snap_len as usize];
    ensure!(snap.len() >= 28, "snapshot of {} bytes", snap.len());
    let version = if responder.is_ipv4() { 4 } else { 6 };
    ensure!(
        snap[0] >> 4 == version,
        "snapshot does not start with an IPv{version} header"
    );
    ensure!(
        event.packet[snap.len()..].iter().all(|&b| b == 0),
        "bytes past snap_len are not zeroed"
    );
    Ok(())
}

/// Loads the timestamper in the prober's namespace and checks the basics.
fn load() -> Result<(EbpfTimestamper, ReplyEvents)> {
    load_expecting(&["lo", "a0"])
}

/// Loads the timestamper in the current (test) namespace and checks that it is
/// attached to at least `interfaces`.
fn load_expecting(interfaces: &[&str]) -> Result<(EbpfTimestamper, ReplyEvents)> {
    let (ts, events) = EbpfTimestamper::load(FILTER)
        .context("loading the eBPF timestamper (needs root: CAP_BPF, CAP_NET_ADMIN)")?;
    let names: Vec<String> = ts
        .attached_interfaces()
        .into_iter()
        .map(|i| i.name)
        .collect();
    for wanted in interfaces {
        ensure!(
            names.iter().any(|n| n == wanted),
            "attached to {names:?}, expected {interfaces:?}"
        );
    }
    Ok((ts, events))
}

/// Sends one probe and returns the matched event with the userspace send/receive
/// times around it.
async fn probe(
    events: &mut ReplyEvents,
    dst: IpAddr,
    proto: u8,
    ttl: u32,
    packet: &[u8],
    key: &ProbeKey,
) -> Result<(ReplyEvent, u64, u64)> {
    let sent = monotonic_ns();
    send_raw(dst, proto, ttl, packet)?;
    let event = wait_for(events, |k| k == key).await?;
    Ok((event, sent, monotonic_ns()))
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn icmp_echo_reply_is_matched_with_a_kernel_rtt() -> Result<()> {
    let lab = Lab::new()?;
    lab.run_in(&lab.a.clone(), async || {
        let (ts, mut events) = load()?;
        if tcx_kernel() {
            ensure!(
                ts.attach_mode() == AttachMode::Tcx,
                "expected TCX links on kernel >= 6.6"
            );
        }
        for (dst, proto) in [
            (IpAddr::V4(B4), ipproto::ICMP),
            (IpAddr::V6(B6), ipproto::ICMPV6),
        ] {
            let (id, seq) = (40_001, 7);
            let key = key_for(dst, proto, id, u32::from(seq));
            let packet = echo_request(dst.is_ipv6(), id, seq);
            let (event, sent, received) = probe(&mut events, dst, proto, 64, &packet, &key).await?;
            check_event(&event, &key, dst, sent, received)?;
            ensure!(
                event.reply_proto == proto,
                "reply proto {}",
                event.reply_proto
            );
            let echo_reply = if dst.is_ipv6() { 129 } else { 0 };
            ensure!(event.icmp_type == echo_reply && event.icmp_code == 0);
        }
        let c = ts.counters()?;
        ensure!(c.egress_stamped >= 2, "counters {c:?}");
        ensure!(c.ingress_matched >= 2, "counters {c:?}");
        // The loader turns on the kernel's receive stamps, so every reply is timed
        // by the skb's stamp (checked against the clocks around it above), not by
        // the TC clock fallback.
        ensure!(c.ingress_tc_clock == 0, "counters {c:?}");
        Ok(())
    })
}

#[test]
fn udp_probes_match_time_exceeded_and_port_unreachable_by_the_quoted_header() -> Result<()> {
    let lab = Lab::new()?;
    lab.run_in(&lab.a.clone(), async || {
        let (ts, mut events) = load()?;
        let cases = [
            // (source, destination, TTL, expected responder, ICMP type/code)
            (IpAddr::V4(A4), IpAddr::V4(B4), 1, IpAddr::V4(R4), (11, 0)),
            (IpAddr::V4(A4), IpAddr::V4(B4), 64, IpAddr::V4(B4), (3, 3)),
            (IpAddr::V6(A6), IpAddr::V6(B6), 1, IpAddr::V6(R6), (3, 0)),
            (IpAddr::V6(A6), IpAddr::V6(B6), 64, IpAddr::V6(B6), (1, 4)),
        ];
        for (i, (src, dst, ttl, responder, (ty, code))) in cases.into_iter().enumerate() {
            let sport = 40_010 + i as u16;
            let (datagram, csum) = udp_datagram(src, dst, sport, 33_434);
            let key = key_for(dst, ipproto::UDP, sport, u32::from(csum));
            let (event, sent, received) =
                probe(&mut events, dst, ipproto::UDP, ttl, &datagram, &key).await?;
            check_event(&event, &key, responder, sent, received)
                .with_context(|| format!("UDP probe to {dst} with TTL {ttl}"))?;
            ensure!(
                (event.icmp_type, event.icmp_code) == (ty, code),
                "ICMP {}/{} from {responder}, expected {ty}/{code}",
                event.icmp_type,
                event.icmp_code
            );
            // The snapshot carries the quoted probe for userspace (extensions, MPLS).
            let quoted_udp = if dst.is_ipv4() {
                20 + 8 + 20
            } else {
                40 + 8 + 40
            };
            let snap = &event.packet[..event.snap_len as usize];
            ensure!(
                snap.len() >= quoted_udp + 8
                    && snap[quoted_udp..quoted_udp + 2] == sport.to_be_bytes(),
                "snapshot does not hold the quoted UDP header"
            );
        }
        let c = ts.counters()?;
        ensure!(
            c.egress_stamped >= 4 && c.ingress_matched >= 4,
            "counters {c:?}"
        );
        Ok(())
    })
}

#[test]
fn tcp_syn_is_matched_by_the_rst_that_acknowledges_it() -> Result<()> {
    let lab = Lab::new()?;
    lab.run_in(&lab.a.clone(), async || {
        let (ts, mut events) = load()?;
        for (src, dst) in [
            (IpAddr::V4(A4), IpAddr::V4(B4)),
            (IpAddr::V6(A6), IpAddr::V6(B6)),
        ] {
            let sport = if dst.is_ipv4() { 40_020 } else { 40_021 };
            // A kernel TCP connect: the SYN's sequence number is the kernel's ISN,
            // which the test learns from the RST that acknowledges it.
            let socket = match dst {
                IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(src, sport))?;
            let sent = monotonic_ns();
            let refused = socket.connect(SocketAddr::new(dst, 9)).await;
            ensure!(
                refused.is_err(),
                "port 9 in the target namespace should be closed"
            );
            let event = wait_for(&mut events, |k| {
                k.proto == ipproto::TCP && k.flow == sport && k.dst == addr_bytes(dst)
            })
            .await?;
            let received = monotonic_ns();
            check_event(&event, &event.key, dst, sent, received)?;
            ensure!(event.reply_proto == ipproto::TCP);
            ensure!(
                event.icmp_type & 0x04 != 0,
                "TCP flags {:#x}, expected RST",
                event.icmp_type
            );
            let tcp = if dst.is_ipv4() { 20 } else { 40 };
            let ack = u32::from_be_bytes(event.packet[tcp + 8..tcp + 12].try_into()?);
            ensure!(
                event.key.seq == ack.wrapping_sub(1),
                "key seq {} does not match the RST's ack {ack}",
                event.key.seq
            );
        }
        let c = ts.counters()?;
        ensure!(c.ingress_matched >= 2, "counters {c:?}");
        Ok(())
    })
}

/// Sends from namespace B, as if from a remote host, packets that reach A's TC
/// ingress as replies: one with no stamp, one truncated.
#[test]
fn counters_record_unmatched_and_malformed_replies() -> Result<()> {
    let lab = Lab::new()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
    let b = lab.b.clone();
    let sender = std::thread::spawn(move || -> Result<()> {
        enter_netns(&format!("/run/netns/{b}"))?;
        ready_rx.recv()?;
        // An echo reply in our flow range that answers no probe of ours.
        let mut reply = echo_request(false, 40_030, 1);
        reply[0] = 0;
        reply[2..4].copy_from_slice(&[0, 0]);
        let c = checksum(&[&reply]);
        reply[2..4].copy_from_slice(&c.to_be_bytes());
        send_raw(IpAddr::V4(A4), ipproto::ICMP, 64, &reply)?;
        // A time-exceeded whose quoted IP header is cut short.
        let mut bad = vec![11, 0, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 40];
        let c = checksum(&[&bad]);
        bad[2..4].copy_from_slice(&c.to_be_bytes());
        send_raw(IpAddr::V4(A4), ipproto::ICMP, 64, &bad)?;
        sent_tx.send(())?;
        Ok(())
    });
    let result = lab.run_in(&lab.a.clone(), async move || {
        let (ts, _events) = load()?;
        let before = ts.counters()?;
        ready_tx.send(())?;
        sent_rx.recv_timeout(Duration::from_secs(5))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let c = ts.counters()?;
            if c.ingress_unmatched > before.ingress_unmatched && c.parse_error > before.parse_error
            {
                ensure!(
                    c.ingress_matched == before.ingress_matched,
                    "counters {c:?}"
                );
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("counters did not move: before {before:?}, after {c:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    result
}

/// The netlink (cls_bpf) path that kernels before 6.6 use, exercised on this one.
/// A filter placed behind ours must still see every packet: our programs only
/// observe, so they hand the packet on instead of ending the chain.
#[test]
fn netlink_mode_matches_replies_lets_later_filters_run_and_detaches() -> Result<()> {
    let lab = Lab::new()?;
    let a = lab.a.clone();
    let tc = move |args: &[&str]| -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &a, "tc"])
            .args(args)
            .output()
            .context("running tc (iproute2)")?;
        ensure!(
            out.status.success(),
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // This kernel has no matchall/gact; a u32 filter that mirrors every packet to
    // a spare veth counts what reaches it in its action's statistics.
    ip(&[
        "-n", &lab.a, "link", "add", "sink0", "type", "veth", "peer", "name", "sink1",
    ])?;
    ip(&["-n", &lab.a, "link", "set", "sink0", "up"])?;
    tc(&["qdisc", "add", "dev", "a0", "clsact"])?;
    tc(&[
        "filter", "add", "dev", "a0", "ingress", "prio", "60000", "protocol", "all", "u32",
        "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "sink0",
    ])?;
    let tc_in = tc.clone();
    lab.run_in(&lab.a.clone(), async move || {
        let (ts, mut events) = EbpfTimestamper::load_with_mode(FILTER, AttachMode::Netlink)?;
        let filters = tc_in(&["filter", "show", "dev", "a0", "ingress"])?;
        ensure!(
            filters.contains("hopwatch_ingress"),
            "no cls_bpf filter: {filters}"
        );
        let (dst, id, seq) = (IpAddr::V4(B4), 40_050, 3);
        let key = key_for(dst, ipproto::ICMP, id, u32::from(seq));
        let packet = echo_request(false, id, seq);
        let (event, sent, received) =
            probe(&mut events, dst, ipproto::ICMP, 64, &packet, &key).await?;
        check_event(&event, &key, dst, sent, received)?;
        drop(ts);
        Ok(())
    })?;
    let stats = tc(&["-s", "filter", "show", "dev", "a0", "ingress"])?;
    ensure!(
        !stats.contains("hopwatch"),
        "filters left after drop: {stats}"
    );
    let passed = stats
        .split_whitespace()
        .skip_while(|w| *w != "bytes")
        .nth(1)
        .and_then(|n| n.parse::<u64>().ok())
        .with_context(|| format!("no packet count for the later filter in: {stats}"))?;
    ensure!(passed > 0, "the filter behind ours saw no packet: {stats}");
    Ok(())
}

/// hopwatch runs on routers: probes of other hosts that it forwards must not be
/// stamped even when their flow falls in its range.
#[test]
fn forwarded_probes_are_not_stamped() -> Result<()> {
    let lab = Lab::new()?;
    let (loaded_tx, loaded_rx) = std::sync::mpsc::channel::<()>();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
    let a = lab.a.clone();
    let prober = std::thread::spawn(move || -> Result<()> {
        enter_netns(&format!("/run/netns/{a}"))?;
        loaded_rx.recv()?;
        send_raw(
            IpAddr::V4(B4),
            ipproto::ICMP,
            64,
            &echo_request(false, 40_040, 1),
        )?;
        sent_tx.send(())?;
        Ok(())
    });
    let result = lab.run_in(&lab.r.clone(), async move || {
        let (ts, _events) = load_expecting(&["lo", "r0", "r1"])?;
        loaded_tx.send(())?;
        sent_rx.recv_timeout(Duration::from_secs(5))?;
        // The echo reply crossing R's ingress is in range but has no stamp: seeing
        // it counted proves the request crossed R too.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let c = ts.counters()?;
            if c.ingress_unmatched + c.ingress_matched > 0 {
                ensure!(
                    c.egress_stamped == 0 && c.ingress_matched == 0,
                    "forwarded probe stamped: {c:?}"
                );
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the forwarded echo reply was never seen at ingress: {c:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    prober
        .join()
        .map_err(|_| anyhow::anyhow!("prober panicked"))??;
    result
}

#[test]
fn new_interfaces_are_attached_and_drop_detaches_everything() -> Result<()> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let lab = Lab::new()?;
    let a = lab.a.clone();
    lab.run_in(&lab.a.clone(), async move || {
        let count_ours = |iface: &str| -> Result<usize> {
            let mut n = 0;
            for dir in [TcAttachType::Egress, TcAttachType::Ingress] {
                let (_, progs) = SchedClassifier::query_tcx(iface, dir)?;
                n += progs
                    .iter()
                    .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("hopwatch_")))
                    .count();
            }
            Ok(n)
        };
        let (ts, _events) = load()?;
        if ts.attach_mode() == AttachMode::Tcx {
            ensure!(count_ours("a0")? == 2, "expected egress and ingress on a0");
        }
        ip(&[
            "-n", &a, "link", "add", "hw-late0", "type", "veth", "peer", "name", "hw-late1",
        ])?;
        let appeared = wait_until(|| has_iface(&ts, "hw-late0")).await;
        ensure!(appeared, "hw-late0 was not attached within 5 s");
        ip(&["-n", &a, "link", "del", "hw-late0"])?;
        let gone = wait_until(|| !has_iface(&ts, "hw-late0")).await;
        ensure!(gone, "hw-late0 was not forgotten within 5 s");
        drop(ts);
        if tcx_kernel() {
            for iface in ["a0", "lo"] {
                ensure!(
                    count_ours(iface)? == 0,
                    "programs still attached to {iface} after drop"
                );
            }
        }
        Ok(())
    })
}

fn has_iface(ts: &EbpfTimestamper, name: &str) -> bool {
    ts.attached_interfaces().iter().any(|i| i.name == name)
}

async fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// TCX (and the assertions that depend on it) needs kernel 6.6.
fn tcx_kernel() -> bool {
    use aya::util::KernelVersion;
    matches!(KernelVersion::current(), Ok(v) if v >= KernelVersion::new(6, 6, 0))
}

/// Without CAP_BPF/CAP_SYS_ADMIN the load must fail (so the engine falls back) with
/// a message that names the missing capabilities. Capabilities are per thread, so
/// dropping them on one test thread leaves the others privileged.
#[test]
fn load_without_capabilities_fails_with_a_message_naming_them() -> Result<()> {
    let lab = Lab::new()?;
    // aya probes kernel features once per process; probe them while privileged so
    // this thread's missing capabilities cannot poison the other tests.
    let _ = aya::features();
    lab.run_in(&lab.a.clone(), async || {
        drop_effective_capabilities()?;
        match EbpfTimestamper::load(FILTER) {
            Ok(_) => bail!("loaded without CAP_BPF and CAP_SYS_ADMIN"),
            Err(err) => {
                let message = err.to_string();
                println!("unprivileged load: {message}");
                ensure!(
                    message.contains("CAP_BPF") && message.contains("CAP_NET_ADMIN"),
                    "error does not name the capabilities: {message}"
                );
                Ok(())
            }
        }
    })
}

/// Clears the calling thread's effective capability set (capset(2) is per thread).
fn drop_effective_capabilities() -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset read and write a v3 header and two data structs.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    ensure!(ret == 0, "capget: {}", std::io::Error::last_os_error());
    for d in &mut data {
        d.effective = 0;
    }
    // SAFETY: as above.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    ensure!(ret == 0, "capset: {}", std::io::Error::last_os_error());
    Ok(())
}

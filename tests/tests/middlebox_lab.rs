//! Middleboxes and MPLS through a real `hopwatch run` in the lab, read from
//! its API: a DSCP rewrite on one router (IPv4 and IPv6) and a NAT that leaves
//! the ICMP quote as it rewrote it (stateless, nft) are each reported at the
//! hop whose quote first shows them, with a `middlebox_changed` event; a
//! router that reports an RFC 4950 label stack (Linux cannot, so a packet
//! socket and a raw socket on r2 answer for it) has its labels on its hop,
//! with an `mpls_changed` event; and Linux MASQUERADE, whose
//! conntrack translates the quote inside related ICMP errors back to the
//! original, is shown to leave nothing to see. One daemon, one target per
//! scenario, so the lab and the daemon start once; a headless Chromium then
//! finds each fact on its hop of the target page. Privileged, and needs
//! iptables, nftables, chromium and chromium-driver (deploy/setup-test.sh);
//! fails, never skips, without them.

use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hopwatch_lab::browser::{
    console, open, save_screenshot, wait_js, BrowserError, Chromium, DRIVER_PORT,
};
use hopwatch_lab::daemon::Daemon;
use hopwatch_lab::webclient::{self, eventually};
use hopwatch_lab::{hopwatch_bin, Lab, LabSpec};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

const WEB: &str = "127.0.0.1:9470";

#[track_caller]
fn must<T>(result: Result<T, impl Display>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `args` in `node`'s namespace; fails with its stderr.
fn run(lab: &Lab, node: &str, args: &[&str]) {
    let mut cmd = must(lab.command(node, args[0]));
    cmd.args(&args[1..]);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {args:?} in {node}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{args:?} in {node} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The label stack the MPLS router reports: as an LSR with a two-label stack.
const LABELS: [u32; 2] = [24001 << 12 | 1, 16 << 12 | 0x100 | 1];
/// Marks the fake router's own replies, so the rule that silences the kernel's
/// time-exceeded lets them out.
const MPLS_MARK: u32 = 0x4950;

/// Makes `node` answer probes to `target` that expire there the way an MPLS
/// router does (RFC 4884 length, RFC 4950 label stack), which Linux cannot:
/// the kernel's own time-exceeded for that target is dropped, and a packet
/// socket sees each expiring probe and a raw socket answers it from
/// `responder`. Runs until `stop` is set.
fn mpls_router(
    lab: &Lab,
    node: &str,
    target: Ipv4Addr,
    responder: Ipv4Addr,
    stop: Arc<AtomicBool>,
) -> hopwatch_lab::netns::enter::NsThread<()> {
    let ruleset = format!(
        "table ip mpls_router {{\n\
         chain out {{ type filter hook output priority 0; \
         meta mark != {MPLS_MARK:#x} icmp type time-exceeded @nh,352,32 {:#x} drop; }}\n}}\n",
        u32::from(target)
    );
    let rules = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(rules.path(), ruleset).unwrap();
    run(lab, node, &["nft", "-f", rules.path().to_str().unwrap()]);
    must(lab.spawn_in(node, "mpls-router", move || {
        let eth_p_ip = (libc::ETH_P_IP as u16).to_be();
        let sniff = Socket::new(
            Domain::PACKET,
            Type::DGRAM,
            Some(Protocol::from(i32::from(eth_p_ip))),
        )
        .expect("packet socket (needs root)");
        sniff
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let answer =
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).expect("raw socket");
        answer.set_mark(MPLS_MARK).unwrap();
        answer
            .bind(&SocketAddr::new(IpAddr::V4(responder), 0).into())
            .expect("bind to the responder address");
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok((len, from)) = sniff.recv_from(&mut buf) else {
                continue;
            };
            // SAFETY: recv_from initialised the first `len` bytes.
            let packet: Vec<u8> = buf[..len]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            // SAFETY: a packet socket's source address is a sockaddr_ll.
            let ll = unsafe { std::ptr::read(from.as_ptr().cast::<libc::sockaddr_ll>()) };
            let incoming = ll.sll_pkttype != libc::PACKET_OUTGOING;
            let expiring = packet.len() >= 28
                && packet[0] >> 4 == 4
                && packet[8] == 1
                && packet[9] == 1
                && packet[16..20] == target.octets();
            if !(incoming && expiring) {
                continue;
            }
            let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
            let reply = time_exceeded_with_labels(&packet, &LABELS);
            let _ = answer.send_to(&reply, &SocketAddr::new(IpAddr::V4(src), 0).into());
        }
    }))
}

/// RFC 792 time exceeded quoting `probe`, padded to 128 bytes with the
/// RFC 4884 length set, and an RFC 4950 incoming label stack object.
fn time_exceeded_with_labels(probe: &[u8], labels: &[u32]) -> Vec<u8> {
    let checksum = |data: &[u8]| {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    };
    let mut original = probe[..probe.len().min(128)].to_vec();
    original.resize(128, 0);
    let mut ext = vec![0x20, 0, 0, 0];
    ext.extend_from_slice(&((4 + 4 * labels.len()) as u16).to_be_bytes());
    ext.extend_from_slice(&[1, 1]);
    for label in labels {
        ext.extend_from_slice(&label.to_be_bytes());
    }
    let c = checksum(&ext);
    ext[2..4].copy_from_slice(&c.to_be_bytes());
    let mut icmp = vec![11, 0, 0, 0, 0, (128 / 4) as u8, 0, 0];
    icmp.extend_from_slice(&original);
    icmp.extend_from_slice(&ext);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    icmp
}

fn config_text(state: &Path, targets: &[(&str, IpAddr, &str)]) -> String {
    let mut text = format!(
        "[service]\nstate_dir = {:?}\ntimestamps = \"ebpf\"\n\n[storage]\nflush_interval = \"1s\"\n\n\
         [enrichment]\nreverse_dns = false\n\n[web]\nlisten = \"{WEB}\"\n\n\
         [defaults]\ninterval = \"200ms\"\ntimeout = \"1s\"\nmax_hops = 8\n",
        state.display().to_string()
    );
    for (name, ip, protocol) in targets {
        text.push_str(&format!(
            "\n[[target]]\nname = \"{name}\"\nhost = \"{ip}\"\nprotocol = \"{protocol}\"\n"
        ));
    }
    text
}

fn detail(lab: &Lab, target: &str) -> Value {
    must(webclient::get_json(
        lab,
        "src",
        &format!("http://{WEB}/api/v1/targets/{target}"),
        &[],
        None,
    ))
}

fn events(lab: &Lab, target: &str) -> Vec<Value> {
    let body = must(webclient::get_json(
        lab,
        "src",
        &format!("http://{WEB}/api/v1/targets/{target}/events"),
        &[],
        None,
    ));
    body["events"].as_array().cloned().unwrap_or_default()
}

/// Waits for the target's confirmed middlebox facts to include `field`;
/// returns that fact (from the top-level list) and the detail it came in.
fn wait_for_fact(lab: &Lab, target: &str, field: &str) -> (Value, Value) {
    must(eventually(
        Duration::from_secs(20),
        &format!("a {field} middlebox fact on {target}"),
        || {
            let d = detail(lab, target);
            d["middleboxes"]
                .as_array()
                .and_then(|m| m.iter().find(|f| f["field"] == field).cloned())
                .map(|f| (f, d.clone()))
                .ok_or_else(|| format!("{:#}", d["middleboxes"]))
        },
    ))
}

/// The fact must sit on the hop row of its TTL, with the same fields.
fn assert_on_hop(detail: &Value, fact: &Value) {
    let ttl = fact["ttl"].as_u64().unwrap();
    let row = detail["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["ttl"].as_u64() == Some(ttl))
        .unwrap_or_else(|| panic!("no hop row for TTL {ttl}: {detail:#}"));
    assert!(
        row["middleboxes"].as_array().unwrap().contains(fact),
        "hop {ttl} does not show {fact}: {row:#}"
    );
}

fn assert_event(lab: &Lab, target: &str, field: &str) {
    let found = must(eventually(
        Duration::from_secs(10),
        &format!("a stored middlebox_changed event for {target}"),
        || {
            let all = events(lab, target);
            all.iter()
                .find(|e| {
                    e["kind"] == "middlebox_changed"
                        && e["detail"]["after"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|f| f["field"] == field))
                })
                .cloned()
                .ok_or_else(|| format!("{all:#?}"))
        },
    ));
    assert_eq!(
        found["detail"]["before"],
        serde_json::json!([]),
        "{found:#}"
    );
    assert!(
        found["summary"].as_str().unwrap().starts_with("middlebox:"),
        "{found:#}"
    );
}

#[test]
fn dscp_rewrites_a_nat_and_mpls_labels_are_reported_at_their_hops_and_masquerade_is_invisible() {
    // src - r1 - r2 - r3 - dst: TTL 1 is r1, 2 r2, 3 r3, 4 the target.
    let lab = LabSpec::chain(3).targets(4).build().expect("lab");
    let t4 = lab.targets_v4();
    let t6 = lab.targets_v6();
    let (dscp4, dscp6, nat, masq) = (
        IpAddr::V4(t4[0]),
        IpAddr::V6(t6[0]),
        IpAddr::V4(t4[1]),
        IpAddr::V4(t4[2]),
    );

    // ECN: r1 sets ECT(1) on what it forwards to the IPv6 target (the TOS
    // target with mask 3 touches the ECN bits only), so r2's quote shows it.
    run(
        &lab,
        "r1",
        &[
            "ip6tables",
            "-t",
            "mangle",
            "-A",
            "POSTROUTING",
            "-d",
            &dscp6.to_string(),
            "-j",
            "TOS",
            "--set-tos",
            "0x01/0x03",
        ],
    );
    // DSCP EF (46) on what r2 forwards to the first target: r2's own quote
    // (the probe expired before forwarding) still shows 0, r3's shows 46.
    let (d4, d6) = (dscp4.to_string(), dscp6.to_string());
    run(
        &lab,
        "r2",
        &[
            "iptables",
            "-t",
            "mangle",
            "-A",
            "POSTROUTING",
            "-d",
            &d4,
            "-j",
            "DSCP",
            "--set-dscp",
            "46",
        ],
    );
    run(
        &lab,
        "r2",
        &[
            "ip6tables",
            "-t",
            "mangle",
            "-A",
            "POSTROUTING",
            "-d",
            &d6,
            "-j",
            "DSCP",
            "--set-dscp",
            "46",
        ],
    );

    // A NAT on r1 that rewrites the source statelessly (nft payload
    // mangling, as stateless NAT boxes do): the probe leaves r1 from r1's own
    // address toward r2, and ICMP to that address is sent on to the source.
    // Nothing translates the quote back, so r2's quote (TTL 2) shows the new
    // source. (This kernel has no tc pedit or nat action.)
    let out = lab.interface("r1", "r2").expect("r1's link to r2");
    let r1_out = out.v4.to_string();
    let src = lab.src_v4().to_string();
    let ruleset = format!(
        "table ip stateless_nat {{\n\
         chain out {{ type filter hook postrouting priority 300; \
         ip daddr {nat} ip saddr set {r1_out}; }}\n\
         chain back {{ type filter hook prerouting priority -300; \
         ip daddr {r1_out} ip protocol icmp ip daddr set {src}; }}\n}}\n"
    );
    let rules = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(rules.path(), ruleset).unwrap();
    run(&lab, "r1", &["nft", "-f", rules.path().to_str().unwrap()]);

    // Linux NAT: MASQUERADE on r2 to the third target (not on r1, whose
    // stateless rule sends on all ICMP to r1's address before conntrack could
    // translate it), probed with UDP, whose checksum is the probe's identity:
    // a quote left rewritten would not even match its probe.
    let r2_out = lab.interface("r2", "r3").expect("r2's link to r3");
    let masq_s = masq.to_string();
    run(
        &lab,
        "r2",
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            &r2_out.ifname,
            "-d",
            &masq_s,
            "-j",
            "MASQUERADE",
        ],
    );

    // r2 reports MPLS labels for the fourth target, as a label switch router.
    let mpls = t4[3];
    let r2 = match lab.expected_trace(IpAddr::V4(mpls))[1] {
        Some(IpAddr::V4(r2)) => r2,
        other => panic!("r2 answers TTL 2 from an IPv4 address, not {other:?}"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let router = mpls_router(&lab, "r2", mpls, r2, Arc::clone(&stop));

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("hopwatch.toml");
    std::fs::write(
        &config,
        config_text(
            &dir.path().join("state"),
            &[
                ("dscp", dscp4, "icmp"),
                ("dscp6", dscp6, "icmp"),
                ("nat", nat, "icmp"),
                ("masq", masq, "udp"),
                ("mpls", IpAddr::V4(mpls), "icmp"),
            ],
        ),
    )
    .unwrap();
    let daemon = must(Daemon::start(&lab, "src", &hopwatch_bin(), &config));

    for (target, addr) in [("dscp", dscp4), ("dscp6", dscp6)] {
        let (fact, detail) = wait_for_fact(&lab, target, "dscp");
        let r3 = lab.expected_trace(addr)[2].expect("r3 answers");
        assert_eq!(fact["ttl"], 3, "{target}: {fact:#}");
        assert_eq!(fact["responder"], r3.to_string(), "{target}: {fact:#}");
        assert_eq!(
            (fact["from"].clone(), fact["to"].clone()),
            (0.into(), 46.into()),
            "{fact:#}"
        );
        assert_eq!(fact["summary"], format!("DSCP 0 → 46 at hop 3 ({r3})"));
        assert_on_hop(&detail, &fact);
        assert_event(&lab, target, "dscp");
        if target == "dscp" {
            // Nothing else was rewritten.
            assert_eq!(
                detail["middleboxes"].as_array().unwrap().len(),
                1,
                "{detail:#}"
            );
            continue;
        }
        // The IPv6 target's ECN bits were set a hop earlier, by r1.
        let (ecn, detail) = wait_for_fact(&lab, target, "ecn");
        let r2 = lab.expected_trace(addr)[1].expect("r2 answers");
        assert_eq!(
            (ecn["ttl"].clone(), ecn["responder"].clone()),
            (2.into(), r2.to_string().into()),
            "{ecn:#}"
        );
        assert_eq!(
            (ecn["from"].clone(), ecn["to"].clone()),
            (0.into(), 1.into()),
            "{ecn:#}"
        );
        assert_on_hop(&detail, &ecn);
        assert_eq!(
            detail["middleboxes"].as_array().unwrap().len(),
            2,
            "{detail:#}"
        );
    }

    let (fact, nat_detail) = wait_for_fact(&lab, "nat", "source_address");
    let r2 = lab.expected_trace(nat)[1].expect("r2 answers");
    assert_eq!(fact["ttl"], 2, "{fact:#}");
    assert_eq!(fact["responder"], r2.to_string());
    assert_eq!(fact["from"], src, "{fact:#}");
    assert_eq!(fact["to"], r1_out, "{fact:#}");
    assert_on_hop(&nat_detail, &fact);
    assert_event(&lab, "nat", "source_address");

    // The MASQUERADE target, once reached and past as many rounds as the
    // others needed (their facts took 3 confirming rounds), has quotes that
    // match what was sent.
    let d = must(eventually(
        Duration::from_secs(20),
        "the MASQUERADE target reached for 15 rounds",
        || {
            let d = detail(&lab, "masq");
            (d["hop_count"] == 4 && d["rounds"].as_u64().unwrap_or(0) >= 15)
                .then_some(d.clone())
                .ok_or_else(|| format!("{d:#}"))
        },
    ));
    assert_eq!(
        d["middleboxes"],
        serde_json::json!([]),
        "Linux conntrack translates the quote back; if this now shows a fact, the kernel changed: {d:#}"
    );
    assert!(
        !events(&lab, "masq")
            .iter()
            .any(|e| e["kind"] == "middlebox_changed"),
        "no middlebox event for MASQUERADE"
    );
    // The label stack r2 reports is on hop 2, from r2, as mtr prints it, and
    // its appearance is an event.
    let hop2 = must(eventually(
        Duration::from_secs(20),
        "labels on hop 2 of mpls",
        || {
            let d = detail(&lab, "mpls");
            d["hops"]
                .as_array()
                .and_then(|h| h.iter().find(|h| h["ttl"] == 2).cloned())
                .filter(|h| h["mpls"].as_array().is_some_and(|m| !m.is_empty()))
                .ok_or_else(|| format!("{:#}", d["hops"]))
        },
    ));
    assert_eq!(hop2["mpls"][0]["responder"], r2.to_string(), "{hop2:#}");
    assert_eq!(
        hop2["mpls"][0]["text"],
        "Lbl 24001 TC 0 S 0 TTL 1, Lbl 16 TC 0 S 1 TTL 1"
    );
    let mpls_detail = detail(&lab, "mpls");
    for h in mpls_detail["hops"].as_array().unwrap() {
        if h["ttl"] != 2 {
            assert_eq!(
                h["mpls"],
                serde_json::json!([]),
                "only hop 2 has labels: {h:#}"
            );
        }
    }
    assert_eq!(
        mpls_detail["middleboxes"],
        serde_json::json!([]),
        "{mpls_detail:#}"
    );
    must(eventually(
        Duration::from_secs(10),
        "a stored mpls_changed event",
        || {
            let all = events(&lab, "mpls");
            all.iter()
                .any(|e| e["kind"] == "mpls_changed" && e["detail"]["after"][0]["ttl"] == 2)
                .then_some(())
                .ok_or_else(|| format!("{all:#?}"))
        },
    ));

    // The target pages show each fact on its hop, in a real headless Chromium.
    let chromium = must(Chromium::find());
    let driver = must(chromium.start_driver(&lab, "src", DRIVER_PORT));
    let profile = dir.path().join("chromium-profile");
    let shown = driver
        .session(&profile, async |client| {
            let mut shown = Vec::new();
            for (target, facts) in [("dscp", 1), ("dscp6", 2), ("nat", 1)] {
                open(client, &format!("http://{WEB}/targets/{target}")).await?;
                // Every middlebox shown, as "hop:text", once all are there.
                let text = wait_js(
                    client,
                    &format!("{target}'s hops showing {facts} middlebox facts"),
                    &format!(
                        "const all = [...document.querySelectorAll('#hops tr')].flatMap((r) =>\n\
                           [...r.querySelectorAll('.fact.middlebox')].map((f) => r.dataset.hop + ':' + f.textContent));\n\
                         return all.length === {facts} ? all.join('|') : null;"
                    ),
                )
                .await?;
                save_screenshot(client, &screenshots().join(format!("middlebox-{target}.png"))).await?;
                shown.push((target, text, console(client).await?));
            }
            open(client, &format!("http://{WEB}/targets/mpls")).await?;
            let labels = wait_js(
                client,
                "mpls's hop 2 showing its labels",
                "const f = document.querySelector('#hops tr[data-hop=\"2\"] .fact.mpls');\n\
                 return f ? f.textContent : null;",
            )
            .await?;
            shown.push(("mpls", labels, console(client).await?));
            Ok::<_, BrowserError>(shown)
        })
        .unwrap_or_else(|e| panic!("browser check failed: {e}"));
    let trace = |addr: IpAddr, ttl: usize| lab.expected_trace(addr)[ttl - 1].expect("answers");
    for (target, text, console) in shown {
        let text = text.as_str().unwrap_or_default().to_owned();
        let expected = match target {
            "dscp" => format!("3:middleboxDSCP 0 → 46 at hop 3 ({})", trace(dscp4, 3)),
            "dscp6" => format!(
                "2:middleboxECN 0 → 1 at hop 2 ({})|3:middleboxDSCP 0 → 46 at hop 3 ({})",
                trace(dscp6, 2),
                trace(dscp6, 3)
            ),
            "nat" => format!(
                "2:middleboxsource address {src} → {r1_out} at hop 2 ({})",
                trace(nat, 2)
            ),
            _ => "MPLS[Lbl 24001 TC 0 S 0 TTL 1] [Lbl 16 TC 0 S 1 TTL 1]".to_owned(),
        };
        assert_eq!(text, expected, "{target}");
        assert!(console.is_empty(), "{target}: console messages {console:?}");
    }
    must(daemon.stop());
    stop.store(true, Ordering::Relaxed);
    router.join();
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots directory");
    dir
}

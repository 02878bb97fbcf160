//! Middleboxes through a real `hopwatch run` in the lab, read from its API: a
//! DSCP rewrite on one router (IPv4 and IPv6) and a NAT that leaves the ICMP
//! quote as it rewrote it (stateless, nft) are each reported at the hop whose quote first shows
//! them, with a `middlebox_changed` event; and Linux MASQUERADE, whose
//! conntrack translates the quote inside related ICMP errors back to the
//! original, is shown to leave nothing to see. One daemon, one target per
//! scenario, so the lab and the daemon start once; a headless Chromium then
//! finds each fact on its hop of the target page. Privileged, and needs
//! iptables, nftables, chromium and chromium-driver (deploy/setup-test.sh);
//! fails, never skips, without them.

use std::fmt::Display;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hopwatch_lab::browser::{
    console, save_screenshot, wait_js, BrowserError, Chromium, DRIVER_PORT,
};
use hopwatch_lab::daemon::Daemon;
use hopwatch_lab::webclient::{self, eventually};
use hopwatch_lab::{hopwatch_bin, Lab, LabSpec};
use serde_json::Value;

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
fn fact(lab: &Lab, target: &str, field: &str) -> (Value, Value) {
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
fn a_dscp_rewrite_and_a_nat_are_reported_at_their_hops_and_masquerade_is_invisible() {
    // src - r1 - r2 - r3 - dst: TTL 1 is r1, 2 r2, 3 r3, 4 the target.
    let lab = LabSpec::chain(3).targets(3).build().expect("lab");
    let t4 = lab.targets_v4();
    let t6 = lab.targets_v6();
    let (dscp4, dscp6, nat, masq) = (
        IpAddr::V4(t4[0]),
        IpAddr::V6(t6[0]),
        IpAddr::V4(t4[1]),
        IpAddr::V4(t4[2]),
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
            ],
        ),
    )
    .unwrap();
    let daemon = must(Daemon::start(&lab, "src", &hopwatch_bin(), &config));

    for (target, addr) in [("dscp", dscp4), ("dscp6", dscp6)] {
        let (fact, detail) = fact(&lab, target, "dscp");
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
        // Nothing else was rewritten.
        assert_eq!(
            detail["middleboxes"].as_array().unwrap().len(),
            1,
            "{detail:#}"
        );
        assert_event(&lab, target, "dscp");
    }

    let (fact, nat_detail) = fact(&lab, "nat", "source_address");
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
    // The target pages show each fact on its hop, in a real headless Chromium.
    let chromium = must(Chromium::find());
    let driver = must(chromium.start_driver(&lab, "src", DRIVER_PORT));
    let profile = dir.path().join("chromium-profile");
    let shown = driver
        .session(&profile, async |client| {
            let mut shown = Vec::new();
            for (target, ttl) in [("dscp", 3), ("dscp6", 3), ("nat", 2)] {
                client
                    .goto(&format!("http://{WEB}/targets/{target}"))
                    .await
                    .map_err(|e| BrowserError::Script {
                        what: format!("opening {target}'s page"),
                        source: Box::new(e),
                    })?;
                let text = wait_js(
                    client,
                    &format!("{target}'s hop {ttl} showing its middlebox"),
                    &format!(
                        "const f = document.querySelector('#hops tr[data-hop=\"{ttl}\"] .fact.middlebox');\n\
                         return f ? f.textContent : null;"
                    ),
                )
                .await?;
                // No other hop shows one.
                let elsewhere = client
                    .execute(
                        &format!(
                            "return [...document.querySelectorAll('#hops tr')]\
                             .filter(r => r.dataset.hop !== '{ttl}' && r.querySelector('.fact.middlebox')).length;"
                        ),
                        vec![],
                    )
                    .await
                    .map_err(|e| BrowserError::Script {
                        what: "counting middlebox rows".into(),
                        source: Box::new(e),
                    })?;
                save_screenshot(client, &screenshots().join(format!("middlebox-{target}.png"))).await?;
                shown.push((target, text, elsewhere, console(client).await?));
            }
            Ok::<_, BrowserError>(shown)
        })
        .unwrap_or_else(|e| panic!("browser check failed: {e}"));
    for (target, text, elsewhere, console) in shown {
        let text = text.as_str().unwrap_or_default().to_owned();
        let expected = if target == "nat" {
            "source address"
        } else {
            "DSCP 0 → 46"
        };
        assert!(
            text.contains("middlebox") && text.contains(expected),
            "{target}: {text:?}"
        );
        assert_eq!(elsewhere, 0, "{target}: a middlebox on another hop");
        assert!(console.is_empty(), "{target}: console messages {console:?}");
    }
    must(daemon.stop());
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots directory");
    dir
}

//! `hopwatch trace` as a user runs it: the real binary inside a lab namespace,
//! its output formats and its exit codes. Privileged.

use std::process::Output;

use hopwatch_lab::hopwatch_bin;
use hopwatch_lab::{Lab, LabSpec};

fn trace(lab: &Lab, args: &[&str]) -> Output {
    let mut cmd = lab
        .command("src", hopwatch_bin().to_str().unwrap())
        .expect("command in src");
    cmd.arg("trace").args(args);
    cmd.output().expect("hopwatch runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn json_report_lists_every_hop_with_microsecond_rtts() {
    let lab = LabSpec::chain(2).build().expect("lab");
    let target = lab.targets_v4()[0].to_string();
    let out = trace(
        &lab,
        &["-c", "3", "-i", "0.1", "-w", "1", "--json", &target],
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(report["timestamp_source"], "ebpf");
    assert_eq!(report["destination_ttl"], 3);
    let hops = report["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 3);
    let expected = lab.expected_trace(target.parse().unwrap());
    for (hop, want) in hops.iter().zip(&expected) {
        assert_eq!(hop["sent"], 3);
        assert_eq!(hop["received"], 3);
        assert_eq!(hop["loss_pct"], 0.0);
        assert_eq!(hop["responders"][0]["address"], want.unwrap().to_string());
        let avg = hop["avg_ns"].as_u64().unwrap();
        assert!(avg > 0 && avg < 50_000_000, "avg {avg} ns");
    }
}

#[test]
fn table_csv_and_raw_outputs() {
    let lab = LabSpec::chain(1).build().expect("lab");
    let target = lab.targets_v6()[0].to_string();

    let table = trace(&lab, &["-c", "2", "-i", "0.1", "-w", "1", &target]);
    assert!(table.status.success(), "stderr: {}", stderr(&table));
    let text = stdout(&table);
    assert!(text.contains("Loss%") && text.contains("StDev"), "{text}");
    assert!(text.contains("timestamps: ebpf"), "{text}");
    assert!(text.contains(&target), "{text}");

    let csv = trace(
        &lab,
        &[
            "-c", "2", "-i", "0.1", "-w", "1", "-P", "udp", "--csv", &target,
        ],
    );
    assert!(csv.status.success(), "stderr: {}", stderr(&csv));
    let csv = stdout(&csv);
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("ttl,responder,loss_pct"));
    assert_eq!(lines.count(), 2, "{csv}");

    let raw = trace(
        &lab,
        &[
            "-c", "2", "-i", "0.1", "-w", "1", "-P", "tcp", "-m", "2", "--raw", &target,
        ],
    );
    assert!(raw.status.success(), "stderr: {}", stderr(&raw));
    let raw = stdout(&raw);
    let lines: Vec<&str> = raw.lines().collect();
    assert_eq!(lines.len(), 4, "two TTLs, two rounds: {raw}");
    for line in lines {
        for field in [
            "ttl=",
            "proto=tcp",
            "sport=",
            "dport=80",
            "tcp_seq=",
            "sent=",
            "rtt_ns=",
            "source=ebpf",
        ] {
            assert!(line.contains(field), "{field} missing from {line}");
        }
    }
}

#[test]
fn exit_codes_say_what_went_wrong() {
    let lab = LabSpec::chain(1).build().expect("lab");
    let target = lab.targets_v4()[0].to_string();

    let bad_flag = trace(&lab, &["--bogus", &target]);
    assert_eq!(bad_flag.status.code(), Some(2), "{}", stderr(&bad_flag));

    let bad_ttls = trace(&lab, &["-f", "9", "-m", "3", &target]);
    assert_eq!(bad_ttls.status.code(), Some(2));
    assert!(stderr(&bad_ttls).contains("--first-ttl 9 is above --max-ttl 3"));

    let too_small = trace(&lab, &["-s", "10", &target]);
    assert_eq!(too_small.status.code(), Some(2), "{}", stderr(&too_small));

    // Resolution fails inside the namespace: it has no resolver to reach.
    let unknown = trace(&lab, &["no-such-host.invalid"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("unknown host \"no-such-host.invalid\""));

    let wrong_family = trace(&lab, &["-6", &target]);
    assert_eq!(
        wrong_family.status.code(),
        Some(3),
        "{}",
        stderr(&wrong_family)
    );

    // An address outside the lab plan has no route from the source host; the
    // lab routes nothing else, so no packet leaves.
    let no_route = trace(&lab, &["-c", "1", "203.0.113.1"]);
    assert_eq!(no_route.status.code(), Some(5), "{}", stderr(&no_route));

    // Without privileges: drop every capability and become nobody.
    let mut cmd = lab.command("src", "setpriv").expect("command in src");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ])
    .arg(hopwatch_bin())
    .args(["trace", "-c", "1", &target]);
    let unprivileged = cmd.output().expect("setpriv runs");
    assert_eq!(
        unprivileged.status.code(),
        Some(4),
        "{}",
        stderr(&unprivileged)
    );
    assert!(
        stderr(&unprivileged).contains("CAP_NET_RAW"),
        "{}",
        stderr(&unprivileged)
    );
}

#[test]
fn source_address_and_interface_selection() {
    let lab = LabSpec::chain(1).build().expect("lab");
    let target = lab.targets_v4()[0].to_string();
    let src = lab.src_v4().to_string();
    let iface = lab
        .interface("src", "r1")
        .expect("src's interface")
        .ifname
        .clone();

    let by_source = trace(
        &lab,
        &["-c", "1", "-w", "1", "--json", "--source", &src, &target],
    );
    assert!(by_source.status.success(), "{}", stderr(&by_source));
    let report: serde_json::Value = serde_json::from_slice(&by_source.stdout).unwrap();
    assert_eq!(report["source_address"], src);
    assert_eq!(report["destination_ttl"], 2);

    let by_interface = trace(
        &lab,
        &["-c", "1", "-w", "1", "--json", "-I", &iface, &target],
    );
    assert!(by_interface.status.success(), "{}", stderr(&by_interface));
    let report: serde_json::Value = serde_json::from_slice(&by_interface.stdout).unwrap();
    assert_eq!(report["destination_ttl"], 2);

    // An address this host does not have cannot be bound.
    let foreign = trace(&lab, &["-c", "1", "--source", "198.18.0.2", &target]);
    assert_ne!(foreign.status.code(), Some(0));
    assert!(
        stderr(&foreign).contains("198.18.0.2"),
        "{}",
        stderr(&foreign)
    );

    let no_such_interface = trace(&lab, &["-c", "1", "-I", "nope0", &target]);
    assert_ne!(no_such_interface.status.code(), Some(0));
    assert!(
        stderr(&no_such_interface).contains("nope0"),
        "{}",
        stderr(&no_such_interface)
    );
}

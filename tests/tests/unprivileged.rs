//! hopwatch runs and probes, with eBPF timestamps, as a non-root user holding
//! exactly the capabilities the shipped systemd unit grants, and nothing else.
//! The test reads the unit file, so the two cannot drift apart. Privileged
//! (it needs root to drop to those capabilities).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use hopwatch_lab::hopwatch_bin;
use hopwatch_lab::{Lab, LabSpec};

const NOBODY: u32 = 65534;

/// The capabilities the unit grants, as setpriv names them (`net_raw`, ...).
fn unit_capabilities() -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/hopwatch.service");
    let text = std::fs::read_to_string(&unit).expect("the systemd unit");
    let line = text
        .lines()
        .find(|l| l.starts_with("AmbientCapabilities="))
        .expect("the unit sets AmbientCapabilities");
    let bounding = text
        .lines()
        .find(|l| l.starts_with("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    let parse = |l: &str| -> Vec<String> {
        l.split_once('=')
            .unwrap()
            .1
            .split_whitespace()
            .map(|c| c.trim_start_matches("CAP_").to_lowercase())
            .collect()
    };
    let caps = parse(line);
    assert_eq!(caps, parse(bounding), "ambient and bounding sets agree");
    assert!(
        !caps.iter().any(|c| c == "sys_admin"),
        "the unit never grants CAP_SYS_ADMIN"
    );
    caps
}

/// `setpriv` that becomes `nobody` with exactly `caps` (ambient, inheritable, bounding).
fn as_nobody_with(lab: &Lab, caps: &[String]) -> Command {
    let set = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = lab.command("src", "setpriv").expect("command in src");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg(hopwatch_bin());
    cmd
}

#[test]
fn trace_uses_ebpf_timestamps_with_only_the_units_capabilities() {
    let caps = unit_capabilities();
    let lab = LabSpec::chain(2).build().expect("lab");
    let target = lab.targets_v4()[0].to_string();
    let mut cmd = as_nobody_with(&lab, &caps);
    cmd.args([
        "trace", "-c", "2", "-i", "0.1", "-w", "1", "--json", &target,
    ]);
    let out = cmd.output().expect("hopwatch runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        report["timestamp_source"], "ebpf",
        "eBPF loads without root; stderr: {stderr}"
    );
    assert_eq!(report["destination_ttl"], 3);
    assert!(!stderr.contains("falling back"), "no fallback: {stderr}");
}

#[test]
fn without_the_ebpf_capabilities_it_falls_back_to_kernel_stamps_and_says_so() {
    let lab = LabSpec::chain(1).build().expect("lab");
    let target = lab.targets_v4()[0].to_string();
    let mut cmd = as_nobody_with(&lab, &["net_raw".to_owned()]);
    cmd.args([
        "--log", "warn", "trace", "-c", "1", "-w", "1", "--json", &target,
    ]);
    let out = cmd.output().expect("hopwatch runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["timestamp_source"], "kernel");
    assert!(
        stderr.contains("eBPF timestamps unavailable"),
        "the fallback is logged: {stderr}"
    );
    assert!(
        stderr.contains("CAP_BPF"),
        "the log names the missing capability: {stderr}"
    );
}

#[test]
fn the_daemon_runs_and_stores_history_as_a_non_root_user() {
    let caps = unit_capabilities();
    let lab = LabSpec::chain(1).build().expect("lab");
    let target = lab.targets_v4()[0];
    let dir = tempfile::tempdir().unwrap();
    // Like systemd's StateDirectory: a directory the service user owns.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    nix::unistd::chown(&state, Some(NOBODY.into()), Some(NOBODY.into())).expect("chown");
    let config = dir.path().join("hopwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nstate_dir = {:?}\n[storage]\nflush_interval = \"1s\"\n[defaults]\ninterval = \"200ms\"\n\
             [[target]]\nname = \"t\"\nhost = \"{target}\"\n",
            state.display().to_string()
        ),
    )
    .unwrap();

    let mut cmd = as_nobody_with(&lab, &caps);
    cmd.arg("check").arg("-c").arg(&config);
    let check = cmd.output().expect("check runs");
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "check: {report}");
    assert!(
        report.contains("[ok  ] eBPF load"),
        "check loads eBPF without root: {report}"
    );

    let mut cmd = as_nobody_with(&lab, &caps);
    cmd.args(["--log", "info", "run", "-c"]).arg(&config);
    let mut daemon = cmd.spawn().expect("daemon starts");
    std::thread::sleep(std::time::Duration::from_secs(3));
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) };
    let status = daemon.wait().expect("daemon exits");
    assert!(status.success(), "clean stop: {status:?}");

    let mut cmd = as_nobody_with(&lab, &caps);
    cmd.args(["export", "-c"]).arg(&config).args([
        "-t",
        "t",
        "--resolution",
        "raw",
        "--format",
        "json",
    ]);
    let out = cmd.output().expect("export runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let points = doc["points"].as_array().unwrap();
    assert!(
        points.len() >= 8,
        "rounds stored by the unprivileged daemon: {}",
        points.len()
    );
}

//! `hopwatch run` as an operator runs it: the real binary in the lab, reloads
//! on file change and SIGHUP, a bad config that does not stop it, a clean stop
//! on SIGTERM, `hopwatch export` afterwards, and `kill -9` at random moments
//! followed by restarts. Privileged.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hopwatch_lab::hopwatch_bin;
use hopwatch_lab::{Lab, LabSpec};

fn write_config(path: &Path, state: &Path, targets: &[(&str, IpAddr)], extra: &str) {
    let mut text = format!(
        "[service]\nstate_dir = {:?}\n\n[storage]\nflush_interval = \"1s\"\n\n\
         [defaults]\ninterval = \"200ms\"\ntimeout = \"500ms\"\nmax_hops = 8\n{extra}",
        state.display().to_string()
    );
    for (name, ip) in targets {
        text.push_str(&format!(
            "\n[[target]]\nname = \"{name}\"\nhost = \"{ip}\"\n"
        ));
    }
    std::fs::write(path, text).expect("write config");
}

/// A running daemon whose log lines are collected; killed on drop.
struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(lab: &Lab, config: &Path) -> Daemon {
        let mut cmd = lab
            .command("src", hopwatch_bin().to_str().unwrap())
            .expect("command");
        cmd.args(["--log", "info", "run", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("hopwatch run starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon { child, log }
    }

    fn wait_for_log(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no log line with {needle:?} within {limit:?}; log:\n{}",
            self.log.lock().unwrap().join("\n")
        );
    }

    fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal {signal} to the daemon");
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "the daemon did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stored rounds of `target` at the destination, via `hopwatch export`.
fn exported_rounds(lab: &Lab, config: &Path, target: &str) -> u64 {
    let mut cmd = lab
        .command("src", hopwatch_bin().to_str().unwrap())
        .expect("command");
    cmd.args(["export", "-c"]).arg(config).args([
        "-t",
        target,
        "--from",
        "1h",
        "--resolution",
        "raw",
        "--format",
        "json",
    ]);
    let out = cmd.output().expect("hopwatch export runs");
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("export is JSON");
    doc["points"].as_array().expect("points").len() as u64
}

#[test]
fn reloads_on_file_change_and_sighup_survives_a_bad_config_and_stops_cleanly() {
    let lab = LabSpec::chain(1).targets(2).build().expect("lab");
    let (a, b) = (
        IpAddr::V4(lab.targets_v4()[0]),
        IpAddr::V4(lab.targets_v4()[1]),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hopwatch.toml");
    let state = dir.path().join("state");
    write_config(&config, &state, &[("a", a)], "");

    let mut daemon = Daemon::start(&lab, &config);
    daemon.wait_for_log("monitoring started", Duration::from_secs(10));
    daemon.wait_for_log("probing", Duration::from_secs(10));

    // The file changes: the daemon notices within its 2 s watch interval.
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime second
    write_config(&config, &state, &[("a", a), ("b", b)], "");
    daemon.wait_for_log("target added", Duration::from_secs(6));

    // A broken file is reported and ignored; the daemon keeps running.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&config, "[defaults]\nintervall = \"1s\"\n").unwrap();
    daemon.wait_for_log("the new config is invalid", Duration::from_secs(6));
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "still running after a bad config"
    );

    // SIGHUP reloads on demand.
    write_config(&config, &state, &[("a", a), ("b", b)], "");
    let reloads = daemon.count_log("config reloaded");
    daemon.signal(libc::SIGHUP);
    let start = Instant::now();
    while daemon.count_log("config reloaded") <= reloads {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    std::thread::sleep(Duration::from_secs(1));
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    daemon.wait_for_log("history flushed", Duration::from_secs(1));

    assert!(
        exported_rounds(&lab, &config, "a") >= 10,
        "a's rounds are in the store"
    );
    assert!(
        exported_rounds(&lab, &config, "b") >= 3,
        "b's rounds are in the store"
    );
}

#[test]
fn kill_9_at_random_moments_never_corrupts_the_store_or_loses_flushed_history() {
    let lab = LabSpec::chain(1).build().expect("lab");
    let a = IpAddr::V4(lab.targets_v4()[0]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hopwatch.toml");
    write_config(&config, &dir.path().join("state"), &[("a", a)], "");

    let mut stored = 0;
    // A simple deterministic spread of kill moments, from mid-flush to just after one.
    for (i, run_ms) in [1300u64, 2100, 1750, 2600, 1450, 2900, 1900, 2300]
        .iter()
        .enumerate()
    {
        let mut daemon = Daemon::start(&lab, &config);
        daemon.wait_for_log("monitoring started", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(*run_ms));
        daemon.signal(libc::SIGKILL);
        daemon.wait_exit(Duration::from_secs(5));
        // The store opens cleanly, and what was there before is still there.
        let now = exported_rounds(&lab, &config, "a");
        assert!(
            now >= stored,
            "run {i}: stored rounds went from {stored} down to {now}"
        );
        // More than a flush interval of probing at 5 rounds/s: something new was flushed.
        assert!(now > stored, "run {i}: nothing was flushed in {run_ms} ms");
        stored = now;
    }
}

//! The README's demo end to end: `hopwatch-demo --fast` runs for a short
//! `--duration` on a free port. While it runs, the web UI and the API answer
//! on the host's 127.0.0.1 (through the demo's forwarder into the lab) and the
//! write token it prints works. Its webhook receiver prints loss alerts that
//! name the hop where the loss starts, latency alerts that name the router
//! after the slowed link, route changes, and nothing at all for the target
//! behind the rate-limiting router. Afterwards the daemon is gone and so are
//! the lab's namespaces. Privileged: fails (never skips) without root.

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hopwatch_lab::demo::receiver::Delivery;
use hopwatch_lab::demo::scenario::{self, answer_address};
use hopwatch_lab::{hopwatch_bin, Plan};
use serde_json::Value;

/// Long enough for the fast timeline's loss burst (from 15 s), first route
/// change (52.5 s) and latency step (from 71 s) to raise their alerts.
const DURATION_S: u64 = 100;

/// The demo process and everything it printed. Dropping it while the demo
/// runs sends SIGINT (the demo then removes its lab) and, failing that, kills it.
struct Demo {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Demo {
    fn start(port: u16) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hopwatch-demo"))
            .args(["--fast", "--duration", &DURATION_S.to_string()])
            .args(["--port", &port.to_string(), "--hopwatch"])
            .arg(hopwatch_bin())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hopwatch-demo starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let lines = Arc::clone(&stdout);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let text = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut all = String::new();
            let mut err = err;
            // Read in pieces so a failure shows what was printed so far.
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.push_str(&String::from_utf8_lossy(&buf[..n]));
                *text.lock().unwrap() = all.clone();
            }
        });
        Demo {
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// The first stdout line containing `needle`, waiting up to `limit`.
    fn line_with(&mut self, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the demo exited ({status}) before printing {needle:?}\n{}",
                    self.output()
                );
            }
            assert!(
                start.elapsed() < limit,
                "no line with {needle:?} within {limit:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the readers take the last lines.
                std::thread::sleep(Duration::from_millis(300));
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "the demo did not stop within {limit:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the PID of our unreaped child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The word after `prefix` in `line`.
fn word_after<'a>(line: &'a str, prefix: &str) -> &'a str {
    let (_, rest) = line
        .split_once(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} is not in {line:?}"));
    rest.split(|c: char| c.is_whitespace() || c == ',')
        .next()
        .unwrap()
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn get(url: &str) -> (u16, String) {
    let mut response = http()
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

fn get_json(url: &str) -> Value {
    let (status, body) = get(url);
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url} is not JSON ({e}): {body}"))
}

fn post(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = http().post(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request
        .send_empty()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

fn namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_demo_monitors_its_lab_alerts_where_the_events_are_and_cleans_up() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut demo = Demo::start(port);
    let lab = word_after(
        &demo.line_with("hopwatch-demo: lab ", Duration::from_secs(30)),
        "hopwatch-demo: lab ",
    )
    .to_owned();
    let pid: u32 = word_after(
        &demo.line_with("hopwatch run started, pid ", Duration::from_secs(10)),
        "pid ",
    )
    .parse()
    .expect("a pid");
    demo.line_with(
        &format!("hopwatch demo is running: open {base}/"),
        Duration::from_secs(40),
    );
    let token = word_after(
        &demo.line_with(" Write token ", Duration::from_secs(1)),
        "Write token ",
    )
    .to_owned();

    // The UI and the API, from the host's loopback.
    let (status, page) = get(&format!("{base}/"));
    assert_eq!(status, 200, "{page}");
    assert!(page.to_lowercase().contains("<html"), "{page}");
    let index = get_json(&format!("{base}/api/v1"));
    assert!(index.is_object() || index.is_array(), "{index}");
    let targets = get_json(&format!("{base}/api/v1/targets"));
    let mut names: Vec<&str> = targets["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["core", "dst", "dst-v6", "edge", "web"]);

    // The printed write token works, and writes need it.
    let pause = format!("{base}/api/v1/targets/edge/pause");
    assert_eq!(post(&pause, None).0, 401, "a write without the token");
    let (status, body) = post(&pause, Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["action"],
        "paused"
    );
    let (status, body) = post(&format!("{base}/api/v1/targets/edge/resume"), Some(&token));
    assert_eq!(status, 200, "{body}");

    // r1's rate limiting is real: edge's first hop loses replies and is
    // flagged, so edge raising nothing below means something.
    let start = Instant::now();
    loop {
        let edge = get_json(&format!("{base}/api/v1/targets/edge"));
        let hop1 = &edge["hops"][0];
        if hop1["rate_limited"] == true && hop1["window"]["loss_pct"].as_f64().unwrap_or(0.0) > 20.0
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "edge's hop 1 is not flagged as rate limited: {hop1}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let status = demo.wait(Duration::from_secs(DURATION_S + 60));
    let output = demo.output();
    assert!(
        status.success(),
        "the demo stops cleanly: {status}\n{output}"
    );
    assert!(output.contains("stopped cleanly"), "{output}");

    let deliveries: Vec<Delivery> = demo
        .stdout
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| Delivery::parse(l))
        .collect();
    let find = |kind: &str, target: &str| {
        deliveries
            .iter()
            .find(|d| d.kind == kind && d.target == target && d.state == "raised")
            .unwrap_or_else(|| panic!("no raised {kind} alert for {target}\n{output}"))
    };
    let plan = Plan::new(&scenario::lab_spec(), "expected").unwrap();
    let (loss_ttl, r3_v4, r3_v6) = scenario::loss_starts_at(&plan);
    // Every target behind the lossy link raises a loss alert. Each names where
    // the loss starts from the window at that moment: never before the lossy
    // link, and (the analysis being statistical, on a window only partly
    // filled by the burst) at r3 for at least one of them.
    let losses: Vec<&Delivery> = ["core", "dst", "web", "dst-v6"]
        .iter()
        .map(|target| find("loss", target))
        .collect();
    for loss in &losses {
        assert!(
            loss.hop.is_some_and(|hop| hop >= loss_ttl),
            "the loss cannot start before r2 -> r3: {loss:?}\n{output}"
        );
    }
    assert!(
        losses.iter().any(|loss| loss.hop == Some(loss_ttl)
            && [IpAddr::V4(r3_v4), IpAddr::V6(r3_v6)]
                .map(Some)
                .contains(&loss.responder)),
        "the loss starts at hop {loss_ttl}, r3\n{output}"
    );
    // The latency step comes while traffic takes the longer branch (b1 - b2).
    let (r5_v4, _) = scenario::latency_starts_at(&plan);
    let r5_ttl = plan
        .path_routers(1)
        .iter()
        .position(|&n| n == plan.find("r5").unwrap())
        .unwrap() as u8
        + 1;
    let latency = find("latency", "dst");
    assert_eq!(
        (latency.hop, latency.responder),
        (Some(r5_ttl), Some(IpAddr::V4(r5_v4))),
        "the latency step starts after r4 -> r5\n{output}"
    );
    // The route changes where the branches begin: hop 4 is b1 now.
    let (b1_v4, _) = answer_address(&plan, "b1", "r3").unwrap();
    let route = find("route_change", "dst");
    assert_eq!(
        (route.hop, route.responder),
        (Some(4), Some(IpAddr::V4(b1_v4))),
        "{output}"
    );
    find("route_change", "core");
    assert!(
        !deliveries
            .iter()
            .any(|d| d.target == "core" && d.kind == "latency"),
        "the latency step is beyond core\n{output}"
    );
    assert!(
        !deliveries.iter().any(|d| d.target == "edge"),
        "nothing for the target behind the rate-limiting router\n{output}"
    );
    assert!(deliveries.iter().all(|d| d.signed), "{output}");

    // Everything is gone.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon (pid {pid}) is still there"
    );
    let left: Vec<String> = namespaces()
        .lines()
        .filter(|l| l.starts_with(&format!("{lab}-")))
        .map(str::to_owned)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

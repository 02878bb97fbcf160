//! The config file the demo writes for `hopwatch run`: its targets, web server,
//! alert thresholds tuned so the scripted events raise within a minute, and the
//! webhook to the demo's receiver. `deploy/examples/lab-demo.toml` is this file
//! with example values ([`example`]); a test keeps the two identical.

use std::fmt::Write as _;
use std::path::Path;

use super::scenario::{self, DemoTarget, Pace, WINDOW};
use crate::Plan;

/// The values that change from run to run.
#[derive(Debug, Clone)]
pub struct ConfigParams<'a> {
    /// The daemon's store.
    pub state_dir: &'a Path,
    /// The web server's port on the source namespace's loopback (the demo
    /// forwards the same port on the host's loopback to it).
    pub web_port: u16,
    /// Needed to pause, resume, add and remove targets.
    pub write_token: &'a str,
    /// The receiver's URL (loopback of the source namespace).
    pub webhook_url: &'a str,
    /// The webhook's HMAC key.
    pub webhook_secret: &'a str,
    pub pace: Pace,
    pub targets: &'a [DemoTarget],
}

/// A TOML basic string. JSON's string escapes are a subset of TOML's, so
/// serde_json's quoting is valid TOML.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

/// "250ms", "1s".
fn duration(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The config file's text.
pub fn render(p: &ConfigParams<'_>) -> String {
    let mut text = format!(
        r#"# The config of hopwatch's demo (`sudo bash deploy/demo.sh`), written by
# hopwatch-demo (tests/src/demo/config.rs) with each run's own state directory,
# port, token and receiver. deploy/examples/lab-demo.toml is this file with
# example values (`hopwatch-demo --print-config`); a test keeps them the same.
#
# Every target is inside the lab's address plan (198.18.0.0/15, 2001:db8::/32),
# which exists only in the lab's network namespaces: the daemon runs in the
# lab's `src` namespace, never on a real network.

[service]
state_dir = {state_dir}

[storage]
flush_interval = "2s"

[statistics]
# A short window: events show within seconds and pass within a minute.
window = {WINDOW}

[enrichment]
# No reverse DNS: no query may leave the lab.
reverse_dns = false

[web]
# The demo forwards this port on the host's 127.0.0.1 to the daemon.
listen = "127.0.0.1:{port}"
write_token = {token}

[alerts]
loss_pct = 20
latency_ms = 20
latency_stat = "p50"
# Loss bursts are random: a run of lost probes is not an outage.
unreachable_rounds = 20
# Alerts raise once the condition held for 10 rounds: by then the window
# holds enough of a loss burst to say where it starts.
raise_rounds = 10
clear_rounds = 10

[defaults]
interval = "{interval}"
timeout = "1s"
max_hops = 12
"#,
        state_dir = quoted(&p.state_dir.display().to_string()),
        port = p.web_port,
        token = quoted(p.write_token),
        interval = duration(p.pace.interval()),
    );
    for t in p.targets {
        let _ = write!(
            text,
            "\n[[target]]\nname = {}\nhost = \"{}\"\n",
            quoted(t.name),
            t.host
        );
        if t.protocol != "icmp" {
            let _ = writeln!(text, "protocol = \"{}\"", t.protocol);
        }
        if let Some(port) = t.port {
            let _ = writeln!(text, "port = {port}");
        }
        if let Some(ms) = t.interval_ms {
            let _ = writeln!(text, "interval = \"{}\"", duration(p.pace.scaled_ms(ms)));
        }
        let _ = write!(
            text,
            "label = {}\ndescription = {}\ntags = [\"lab\"]\n",
            quoted(t.label),
            quoted(&t.shows.split_whitespace().collect::<Vec<_>>().join(" ")),
        );
    }
    let _ = write!(
        text,
        "\n# The demo's receiver prints every delivery.\n[[webhook]]\nname = \"demo-receiver\"\n\
         url = {}\nsecret = {}\ntimeout = \"2s\"\nretry_initial = \"500ms\"\nretry_max = \"5s\"\n",
        quoted(p.webhook_url),
        quoted(p.webhook_secret),
    );
    text
}

/// The config with example values, as in `deploy/examples/lab-demo.toml`.
pub fn example() -> String {
    let plan = Plan::new(&scenario::lab_spec(), "example").expect("the demo's spec is valid");
    let targets = scenario::targets(&plan);
    render(&ConfigParams {
        state_dir: Path::new("/tmp/hopwatch-demo/state"),
        web_port: 8080,
        write_token: "demo-write-token-printed-at-start",
        webhook_url: "http://127.0.0.1:9471/hook",
        webhook_secret: "demo-webhook-secret",
        pace: Pace::Normal,
        targets: &targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_is_what_the_demo_writes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/lab-demo.toml");
        let shipped = std::fs::read_to_string(&path).expect("deploy/examples/lab-demo.toml");
        assert!(
            shipped == example(),
            "{} differs from the demo's config; regenerate it with \
             `target/debug/hopwatch-demo --print-config > deploy/examples/lab-demo.toml`",
            path.display()
        );
    }

    #[test]
    fn the_config_is_valid_and_tuned_to_the_pace() {
        let dir = std::path::PathBuf::from("/nonexistent/hopwatch-demo-state");
        for (pace, interval) in [(Pace::Normal, 1000u64), (Pace::Fast, 250)] {
            let plan = Plan::new(&scenario::lab_spec(), "x").unwrap();
            let targets = scenario::targets(&plan);
            let text = render(&ConfigParams {
                state_dir: &dir,
                web_port: 18080,
                write_token: "a-token-of-enough-length",
                webhook_url: "http://127.0.0.1:1/hook",
                webhook_secret: "s\"cret\\",
                pace,
                targets: &targets,
            });
            let config = hopwatch::config::Config::parse(&text, "demo.toml")
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(config.targets.len(), targets.len());
            for (target, demo) in config.targets.iter().zip(&targets) {
                let own = demo.interval_ms.map(|ms| ms * interval / 1000);
                assert_eq!(
                    target.probe.interval.as_millis(),
                    u128::from(own.unwrap_or(interval)),
                    "{}",
                    demo.name
                );
            }
            assert_eq!(config.web.listen.port(), 18080);
            assert_eq!(config.alerts.webhooks.len(), 1);
        }
    }
}

//! The text the demo prints once everything runs: where to look (the web UI,
//! the API with the write token, the webhook lines), what each target shows,
//! the timeline, and how to stop.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::console::clock;
use super::scenario::{seconds, DemoTarget, Timeline};

/// What the banner needs to know.
#[derive(Debug)]
pub struct Facts<'a> {
    pub port: u16,
    pub write_token: &'a str,
    pub timestamps: &'a str,
    pub lab_id: &'a str,
    pub src_ns: &'a str,
    pub hopwatch: &'a Path,
    pub pid: u32,
    pub config: &'a Path,
    pub log: &'a Path,
    pub targets: &'a [DemoTarget],
    /// A lab address that is not a target yet, for the "add" example.
    pub spare: IpAddr,
    pub timeline: Timeline,
    /// Where `--duration` stops the demo, if given.
    pub stop_at: Option<Duration>,
}

const RULE: &str =
    "================================================================================";

/// "7.5 min", "112.5 s".
fn every(d: Duration) -> String {
    if d >= Duration::from_secs(120) {
        format!("{} min", d.as_secs_f64() / 60.0)
    } else {
        seconds(d)
    }
}

/// The banner's text.
pub fn render(f: &Facts<'_>) -> String {
    let url = format!("http://127.0.0.1:{}", f.port);
    let auth = format!("-H 'Authorization: Bearer {}'", f.write_token);
    let mut t = String::new();
    let _ = writeln!(t, "{RULE}");
    let _ = writeln!(t, " hopwatch demo is running: open {url}/");
    let _ = writeln!(t, "{RULE}");
    let _ = writeln!(
        t,
        " Web UI      {url}/   (JSON API {url}/api/v1, Prometheus {url}/metrics)"
    );
    let _ = writeln!(
        t,
        " Timestamps  {} (the daemon's timestamp source, shown on every target)",
        f.timestamps
    );
    let _ = writeln!(
        t,
        " Write token {}  (pause, resume, add, remove; the UI asks for it), e.g.\n   \
         curl -X POST {auth} {url}/api/v1/targets/web/pause\n   \
         curl -X POST {auth} {url}/api/v1/targets/web/resume\n   \
         curl -X POST {auth} -H 'Content-Type: application/json' \\\n        \
         -d '{{\"name\": \"spare\", \"host\": \"{}\"}}' {url}/api/v1/targets",
        f.write_token, f.spare
    );
    let _ = writeln!(
        t,
        " Webhooks    go to this program's receiver, which checks their signature and\n   \
         prints each one below as \"webhook: STATE kind target=... hop=... responder=...\""
    );
    let _ = writeln!(
        t,
        " Lab         {}: src - r1 - r2 - r3 - {{a1 | b1 - b2}} - r4 - r5 - dst\n   \
         (namespaces {}-*; e.g. ip netns exec {} {} trace 198.19.0.1)",
        f.lab_id,
        f.lab_id,
        f.src_ns,
        f.hopwatch.display()
    );
    let _ = writeln!(
        t,
        " Daemon      hopwatch run, pid {}, in namespace {}\n   config {}\n   log    {}",
        f.pid,
        f.src_ns,
        f.config.display(),
        f.log.display()
    );
    let _ = writeln!(t, "\n Targets");
    for target in f.targets {
        let protocol = match target.port {
            Some(port) => format!("{}/{port}", target.protocol),
            None => target.protocol.to_owned(),
        };
        let _ = writeln!(
            t,
            "   {:<7} {:<14} {:<8} {}",
            target.name,
            target.host.to_string(),
            protocol,
            target
                .shows
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let _ = writeln!(
        t,
        "\n Timeline (times since the demo started; it repeats every {})",
        every(f.timeline.cycle())
    );
    for n in 0..f.timeline.events_per_cycle() {
        let (at, event) = f.timeline.nth(n);
        let _ = writeln!(t, "   {:>6}  {}", clock(at), f.timeline.describe(event));
    }
    let stop = match f.stop_at {
        Some(at) => format!(" (or by itself at {})", clock(at)),
        None => String::new(),
    };
    let _ = writeln!(
        t,
        "\n Ctrl-C stops the demo{stop}: the daemon stops and the lab is removed."
    );
    let _ = write!(t, "{RULE}");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scenario::{self, Pace};
    use crate::Plan;

    #[test]
    fn the_banner_says_where_to_look_and_what_comes_when() {
        let plan = Plan::new(&scenario::lab_spec(), "hw1-0").unwrap();
        let targets = scenario::targets(&plan);
        let text = render(&Facts {
            port: 8081,
            write_token: "demo-0123456789abcdef",
            timestamps: "ebpf",
            lab_id: "hw1-0",
            src_ns: "hw1-0-src",
            hopwatch: Path::new("/usr/bin/hopwatch"),
            pid: 4242,
            config: Path::new("/tmp/x/hopwatch.toml"),
            log: Path::new("/tmp/x/hopwatch.log"),
            targets: &targets,
            spare: "198.18.2.2".parse().unwrap(),
            timeline: Timeline::new(Pace::Normal),
            stop_at: None,
        });
        assert!(text.contains("open http://127.0.0.1:8081/"), "{text}");
        assert!(text.contains(
            "curl -X POST -H 'Authorization: Bearer demo-0123456789abcdef' \
             http://127.0.0.1:8081/api/v1/targets/web/pause"
        ));
        assert!(text.contains("\"host\": \"198.18.2.2\""));
        assert!(text.contains("pid 4242"));
        for target in &targets {
            assert!(text.contains(&format!("   {:<7} {}", target.name, target.host)));
        }
        assert!(text.contains("repeats every 7.5 min"), "{text}");
        assert!(text.contains("    +1:00  loss burst"), "{text}");
        assert!(text.contains("    +7:00  route change"), "{text}");
        assert!(text.contains("Ctrl-C stops the demo:"));
    }
}

//! `screenshot`: the README's pictures of the web UI, taken from a real
//! `hopwatch run` in the network lab with headless Chromium (through
//! chromedriver), so they show what the product shows. Needs root, a built
//! `hopwatch`, and Debian's chromium and chromium-driver (deploy/setup-test.sh):
//!
//!     cargo build -p hopwatch-service -p hopwatch-tests --bin screenshot
//!     sudo target/debug/screenshot --out docs/img
//!
//! The lab: src - r1 - r2 - (a1 | b1 - b2) - r3 - r4 - dst, six targets. For
//! about five minutes: r2 rate-limits its ICMP errors (a grey hop), the a1 -> r3
//! link adds 6 ms ± 1.5 ms and b1 -> b2 11 ms ± 2 ms, then r3 -> r4 loses 10%
//! of packets, then the path moves from branch a to the slower branch b (a
//! route, hop-count and latency change). Every packet stays inside the lab's
//! namespaces.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use fantoccini::Client;
use hopwatch_lab::browser::{click, save_screenshot, wait_js, Chromium, DRIVER_PORT};
use hopwatch_lab::daemon::Daemon;
use hopwatch_lab::{At, DelaySpec, LabSpec, PathSelect};

const WEB: &str = "127.0.0.1:9470";

#[derive(Debug, Parser)]
#[command(about = "Screenshots of hopwatch's web UI on a lab network with impairments")]
struct Args {
    /// The hopwatch binary to run.
    #[arg(long, default_value = "target/debug/hopwatch")]
    hopwatch: PathBuf,
    /// Where the PNGs go (ui-overview.png, ui-target.png).
    #[arg(long, default_value = "docs/img")]
    out: PathBuf,
    /// Minutes of scripted events before the pictures are taken (at least 2).
    #[arg(long, default_value_t = 5)]
    minutes: u64,
}

fn config(state: &Path, targets: &[(&str, &str, IpAddr, &str)]) -> String {
    let mut text = format!(
        "[service]\nstate_dir = {state:?}\n\n[storage]\nflush_interval = \"1s\"\n\n\
         [enrichment]\nreverse_dns = false\n\n[web]\nlisten = \"{WEB}\"\n\n\
         [alerts]\nlatency_ms = 50\nlatency_stat = \"p95\"\n\n\
         [defaults]\ninterval = \"500ms\"\ntimeout = \"1s\"\nmax_hops = 12\n",
        state = state.display().to_string()
    );
    for (name, label, host, extra) in targets {
        text.push_str(&format!(
            "\n[[target]]\nname = \"{name}\"\nlabel = \"{label}\"\nhost = \"{host}\"\n{extra}"
        ));
    }
    text
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.minutes >= 2, "--minutes must be at least 2");
    let chromium = Chromium::find()?;
    let hopwatch = args
        .hopwatch
        .canonicalize()
        .with_context(|| format!("{} (build it first)", args.hopwatch.display()))?;
    std::fs::create_dir_all(&args.out)?;
    let out = args.out.canonicalize()?;

    let lab = LabSpec::chain(4)
        .parallel(2, &[1, 2])
        .targets(2)
        .build()
        .context("building the lab")?;
    let (t0, t1) = (lab.targets_v4()[0], lab.targets_v4()[1]);
    let t1_v6 = lab.targets_v6()[1];
    let r1 = lab.expected_trace(IpAddr::V4(t0))[0].context("r1 answers")?;
    let dir = tempfile::Builder::new().prefix("hopwatch-shot").tempdir()?;
    let config_path = dir.path().join("hopwatch.toml");
    std::fs::write(
        &config_path,
        config(
            &dir.path().join("state"),
            &[
                ("gateway", "First hop (r1)", r1, "tags = [\"lan\"]\n"),
                ("app", "App servers", IpAddr::V4(t0), "tags = [\"wan\"]\n"),
                (
                    "app-tcp",
                    "App servers, TCP 443",
                    IpAddr::V4(t0),
                    "protocol = \"tcp\"\nport = 443\n",
                ),
                (
                    "dns",
                    "Resolver, UDP 53",
                    IpAddr::V4(t1),
                    "protocol = \"udp\"\nport = 53\n",
                ),
                ("app-v6", "App servers over IPv6", IpAddr::V6(t1_v6), ""),
                ("backup", "Backup site", IpAddr::V4(t1), "paused = true\n"),
            ],
        ),
    )?;
    let daemon = Daemon::start(&lab, "src", &hopwatch, &config_path)?;
    let started = Instant::now();
    let minutes = Duration::from_secs(args.minutes * 60);
    println!(
        "hopwatch runs; scripted events for {} minutes",
        args.minutes
    );

    let _rate_limit = lab.icmp_rate_limit("r2", 2, 2)?;
    let _delay_a = lab.delay(
        At::link("a1", "r3"),
        DelaySpec::jittered(Duration::from_millis(6), Duration::from_micros(1500)),
    )?;
    let _delay_b = lab.delay(
        At::link("b1", "b2"),
        DelaySpec::jittered(Duration::from_millis(11), Duration::from_millis(2)),
    )?;
    std::thread::sleep(minutes / 2);
    println!("loss 10% on r3 -> r4");
    let _loss = lab.loss(At::link("r3", "r4"), 10.0)?;
    std::thread::sleep(minutes * 3 / 10);
    println!("route change: branch b");
    lab.set_path(PathSelect::Branch(1))?;
    std::thread::sleep(minutes.saturating_sub(started.elapsed()));

    let driver = chromium.start_driver(&lab, "src", DRIVER_PORT)?;
    let profile = dir.path().join("chromium-profile");
    let span_minutes = args.minutes + 1;
    let shots = driver.session(&profile, async |client| {
        take(client, &out, span_minutes).await
    })?;
    for shot in shots {
        println!("wrote {}", shot.display());
    }
    let status = daemon.stop()?;
    anyhow::ensure!(status.success(), "hopwatch exited with {status}");
    Ok(())
}

async fn take(client: &Client, out: &Path, span_minutes: u64) -> anyhow::Result<Vec<PathBuf>> {
    let base = format!("http://{WEB}");
    let mut shots = Vec::new();
    client.set_window_size(1440, 560).await?;
    client.goto(&format!("{base}/")).await?;
    client
        .execute(
            "localStorage.setItem('hopwatch.theme', JSON.stringify('light')); location.reload();",
            vec![],
        )
        .await?;
    wait_js(
        client,
        "overview rows with latencies and sparklines",
        "const r = [...document.querySelectorAll('#targets tbody tr')];\
         return r.length === 6 && r.filter(tr => /^[0-9.]+$/.test(tr.cells[4].textContent.trim())).length === 5;",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    shots.push(save(client, out.join("ui-overview.png")).await?);

    client.set_window_size(1440, 1900).await?;
    client.goto(&format!("{base}/targets/app")).await?;
    wait_js(
        client,
        "the hop table",
        "return document.querySelectorAll('#hops tbody tr[data-hop]').length >= 5;",
    )
    .await?;
    // A custom range of the run's minutes, so the graphs are full; applied
    // once the 15-minute graph has loaded, so that load cannot overwrite it.
    click(client, "button[data-range='15m']").await?;
    wait_js(
        client,
        "the 15-minute latency graph",
        "return Number(document.querySelector('#latency').dataset.points || 0) > 50;",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    client
        .execute(
            &format!(
                "const fmt = d => new Date(d - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);\
                 const now = new Date();\
                 const from = document.querySelector('input[aria-label=From]');\
                 const to = document.querySelector('input[aria-label=To]');\
                 from.value = fmt(new Date(now - {span_minutes} * 60000));\
                 to.value = fmt(new Date(now.getTime() + 60000));\
                 [...document.querySelectorAll('.custom button')].find(b => b.textContent === 'Apply').click();"
            ),
            vec![],
        )
        .await?;
    wait_js(
        client,
        "the latency graph",
        "return Number(document.querySelector('#latency').dataset.points || 0) > 50;",
    )
    .await?;
    wait_js(
        client,
        "the heatmap",
        "return Number(document.querySelector('#heatmap').dataset.cells || 0);",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    shots.push(save(client, out.join("ui-target.png")).await?);
    Ok(shots)
}

/// Saves the window at `path` and returns the path.
async fn save(client: &Client, path: PathBuf) -> anyhow::Result<PathBuf> {
    save_screenshot(client, &path).await?;
    Ok(path)
}

//! The demo from start to stop: bind the UI port on the host, build the lab,
//! start the receiver and forwarder, write the config, start the daemon, print
//! the banner, play the timeline until a stop signal or `--duration`, then stop
//! the daemon by its PID, the servers, the impairments, and remove the lab, in
//! that order, whatever happened before.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::banner::{self, Facts};
use super::config::{self, ConfigParams};
use super::console::{clock, plain, Console};
use super::daemon::Daemon;
use super::error::{DemoError, WebFailure};
use super::scenario::{self, seconds, Network, Pace, Timeline};
use super::services::Services;
use super::signals::Signals;
use crate::Lab;

/// The web UI's port when none is asked for.
pub const DEFAULT_PORT: u16 = 8080;
/// Ports tried after it when it is taken.
const PORT_TRIES: u16 = 20;
/// How long the daemon may take to start its web server.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long it may take to stop after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct Options {
    /// The web UI's port on the host's 127.0.0.1; `None`: [`DEFAULT_PORT`] or
    /// the next free one.
    pub port: Option<u16>,
    /// Stop after this long (counted from the daemon's start); `None`: run
    /// until a stop signal.
    pub duration: Option<Duration>,
    pub pace: Pace,
    /// The `hopwatch` binary.
    pub hopwatch: PathBuf,
}

/// Why the demo stopped (both are clean stops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Signal(Signal),
    Duration,
}

/// Runs the demo; `Ok` after a clean stop.
pub fn run(opts: &Options, signals: &Signals) -> Result<(), DemoError> {
    if !opts.hopwatch.is_file() {
        return Err(DemoError::HopwatchMissing {
            path: opts.hopwatch.clone(),
        });
    }
    let ui = bind_ui(opts.port)?;
    plain("hopwatch-demo: building the lab network");
    let lab = scenario::lab_spec()
        .build()
        .map_err(|source| DemoError::Lab {
            step: "building the lab",
            source,
        })?;
    let (id, count) = (lab.id().to_owned(), lab.namespaces().len());
    plain(format_args!(
        "hopwatch-demo: lab {id} is up ({count} namespaces, {id}-*)"
    ));
    let result = run_in_lab(&lab, ui, opts, signals);
    let removed = lab.teardown().map_err(|source| DemoError::Lab {
        step: "removing the lab",
        source,
    });
    match &removed {
        Ok(()) => plain(format_args!(
            "hopwatch-demo: lab {id} removed ({count} namespaces)"
        )),
        // Reported here when the demo itself failed too (the caller gets that).
        Err(err) if result.is_err() => eprintln!("hopwatch-demo: {err}"),
        Err(_) => {}
    }
    result.and(removed)
}

/// Listens on the host's 127.0.0.1: on `port`, or on the first free port from
/// [`DEFAULT_PORT`].
pub fn bind_ui(port: Option<u16>) -> Result<TcpListener, DemoError> {
    let bind = |port: u16| match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(listener) => Ok(Some(listener)),
        Err(err) if err.kind() == io::ErrorKind::AddrInUse => Ok(None),
        Err(source) => Err(DemoError::Listen { port, source }),
    };
    if let Some(port) = port {
        return bind(port)?.ok_or(DemoError::PortInUse { port });
    }
    let last = DEFAULT_PORT + PORT_TRIES - 1;
    for port in DEFAULT_PORT..=last {
        if let Some(listener) = bind(port)? {
            if port != DEFAULT_PORT {
                plain(format_args!(
                    "hopwatch-demo: 127.0.0.1:{DEFAULT_PORT} is in use; the web UI \
                     gets 127.0.0.1:{port} instead"
                ));
            }
            return Ok(listener);
        }
    }
    Err(DemoError::NoFreePort {
        first: DEFAULT_PORT,
        last,
    })
}

fn run_in_lab(
    lab: &Lab,
    ui: TcpListener,
    opts: &Options,
    signals: &Signals,
) -> Result<(), DemoError> {
    let port = ui
        .local_addr()
        .map_err(|source| DemoError::Listen { port: 0, source })?
        .port();
    let targets = scenario::targets(lab.plan());
    let mut network = Network::new(lab, opts.pace).map_err(|source| DemoError::Lab {
        step: "rate-limiting the ICMP errors of r1",
        source,
    })?;
    let workdir = tempfile::Builder::new()
        .prefix("hopwatch-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?;
    let write_token = format!("demo-{}", random_hex()?);
    let secret = random_hex()?;
    let console = Console::start();
    let services = Services::start(lab, ui, console, &secret)?;
    let config_path = workdir.path().join("hopwatch.toml");
    let config_text = config::render(&ConfigParams {
        state_dir: &workdir.path().join("state"),
        web_port: port,
        write_token: &write_token,
        webhook_url: &services.webhook_url(),
        webhook_secret: &secret,
        pace: opts.pace,
        targets: &targets,
    });
    write_private(&config_path, &config_text)?;
    let log = workdir.path().join("hopwatch.log");
    let src_ns = lab.src().ns.clone();
    let mut daemon = Daemon::start(lab, &opts.hopwatch, &config_path, &log)?;
    plain(format_args!(
        "hopwatch-demo: hopwatch run started, pid {}, in namespace {src_ns}",
        daemon.pid()
    ));

    let played = (|| {
        let mut early = None;
        let ready = daemon.wait_ready(START_LIMIT, || {
            early = signals.pending();
            early.is_some()
        })?;
        if !ready {
            return Ok(Stop::Signal(early.expect("interrupted by a signal")));
        }
        let timestamps = web_check(port)?;
        let timeline = Timeline::new(opts.pace);
        plain(banner::render(&Facts {
            port,
            write_token: &write_token,
            timestamps: &timestamps,
            lab_id: lab.id(),
            src_ns: &src_ns,
            hopwatch: &opts.hopwatch,
            pid: daemon.pid(),
            config: &config_path,
            log: &log,
            targets: &targets,
            spare: scenario::loss_starts_at(lab.plan()).1.into(),
            timeline,
            stop_at: opts.duration,
        }));
        play(
            &timeline,
            &mut network,
            &mut daemon,
            console,
            signals,
            opts.duration,
        )
    })();

    let how = match &played {
        Ok(Stop::Signal(signal)) => format!("{signal}"),
        Ok(Stop::Duration) => "--duration reached".to_owned(),
        Err(_) => "error".to_owned(),
    };
    console.say(format_args!(
        "{how}: stopping hopwatch run (pid {}), the receiver, and the lab",
        daemon.pid()
    ));
    let pid = daemon.pid();
    let stopped = daemon.stop(STOP_LIMIT);
    services.stop();
    // Lifts the impairments (and stops the delay element) before the lab goes.
    drop(network);
    let outcome = match (played, stopped) {
        (Err(err), stopped) => {
            if let Err(also) = stopped {
                eprintln!("hopwatch-demo: {also}");
            }
            Err(err)
        }
        (Ok(_), Err(err)) => Err(err),
        (Ok(_), Ok(status)) if !status.success() => Err(DemoError::DaemonFailed {
            pid,
            status,
            log: log.clone(),
        }),
        (Ok(_), Ok(status)) => Ok(status),
    };
    match outcome {
        Ok(status) => {
            plain(format_args!(
                "hopwatch-demo: hopwatch run (pid {pid}) stopped cleanly ({status})"
            ));
            Ok(())
        }
        Err(err) => {
            // What is needed to see what went wrong outlives the demo.
            let kept = workdir.keep();
            eprintln!(
                "hopwatch-demo: the daemon's config, log and store are kept in {}",
                kept.display()
            );
            Err(err)
        }
    }
}

/// Plays the timeline until a stop signal, `duration`, or a failure.
fn play(
    timeline: &Timeline,
    network: &mut Network<'_>,
    daemon: &mut Daemon<'_>,
    console: Console,
    signals: &Signals,
    duration: Option<Duration>,
) -> Result<Stop, DemoError> {
    let end = duration.map(|d| console.started() + d);
    for n in 0.. {
        let (at, event) = timeline.nth(n);
        let due = console.started() + at;
        loop {
            let now = Instant::now();
            if end.is_some_and(|end| now >= end) {
                return Ok(Stop::Duration);
            }
            if now >= due {
                break;
            }
            let mut step = (due - now).min(Duration::from_secs(1));
            if let Some(end) = end {
                step = step.min(end - now);
            }
            if let Some(signal) = signals.wait(step) {
                return Ok(Stop::Signal(signal));
            }
            daemon.check_running()?;
        }
        let what = timeline.describe(event);
        network.apply(event).map_err(|source| DemoError::Event {
            event: what.clone(),
            source,
        })?;
        console.say(format_args!("event: {what}"));
        let (next_at, next) = timeline.nth(n + 1);
        plain(format_args!(
            "         next event at {} (in {}): {}",
            clock(next_at),
            seconds(next_at.saturating_sub(console.elapsed())),
            timeline.describe(next)
        ));
    }
    unreachable!("the timeline never ends")
}

/// Checks the web UI through the forwarder, from the host: `/readyz` must
/// answer 200. Returns the daemon's timestamp source.
fn web_check(port: u16) -> Result<String, DemoError> {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let failed = |reason| DemoError::WebUnreachable {
        url: url.clone(),
        reason,
    };
    let start = Instant::now();
    loop {
        let mut response = agent.get(&url).call().map_err(|e| failed(e.into()))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| failed(e.into()))?;
        if status == 200 {
            let ready: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            return Ok(ready["timestamp_source"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned());
        }
        // 503 while the engine starts; give it a few seconds.
        if start.elapsed() > Duration::from_secs(10) {
            return Err(failed(WebFailure::Status { status, body }));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// 16 random bytes in hex.
fn random_hex() -> Result<String, DemoError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(DemoError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a file only its owner can read (the config holds the tokens).
fn write_private(path: &Path, text: &str) -> Result<(), DemoError> {
    let failed = |source| DemoError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::write(path, text).map_err(failed)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)
}

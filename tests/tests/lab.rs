//! The lab's own tests: they build real namespaces (root required; without it they
//! fail with the lab's "needs root" message) and check with `ping` that the network
//! is what the lab says it is and that every impairment is measurable.

use std::{
    io::IoSliceMut,
    net::{IpAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use hopwatch_lab::{netns, At, DelaySpec, KernelIcmpLimit, Lab, LabSpec, PathSelect};
use nix::{
    sys::{
        socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage},
        time::TimeSpec,
    },
    time::{clock_gettime, ClockId},
};

fn build(spec: LabSpec) -> Lab {
    let started = Instant::now();
    let lab = spec
        .build()
        .unwrap_or_else(|e| panic!("building the lab failed: {e}"));
    eprintln!("lab {} built in {:?}", lab.id(), started.elapsed());
    lab
}

/// What `ping -t ttl` sees at each TTL towards `target`: the error source, the
/// target itself when it replied, or None.
fn observed_trace(lab: &Lab, target: IpAddr, max_ttl: u8) -> Vec<Option<IpAddr>> {
    (1..=max_ttl)
        .map(|ttl| {
            let r = lab
                .ping("src", target)
                .unwrap()
                .ttl(ttl)
                .wait(Duration::from_millis(300))
                .run()
                .unwrap();
            if r.received > 0 {
                Some(target)
            } else {
                r.error_sources().first().copied()
            }
        })
        .collect()
}

fn assert_trace(lab: &Lab, target: IpAddr) {
    let expected = lab.expected_trace(target);
    let seen = observed_trace(lab, target, expected.len() as u8);
    assert_eq!(seen, expected, "trace to {target} in lab {}", lab.id());
}

#[test]
fn chain_has_the_planned_hops_over_v4_and_v6() {
    let lab = build(LabSpec::chain(3));
    let hops = lab.hops();
    let names: Vec<_> = hops.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["r1", "r2", "r3"]);
    assert_eq!(hops[0].v4.to_string(), "198.18.0.2");
    assert_eq!(hops[0].v6.to_string(), "2001:db8::2");
    assert_trace(&lab, lab.targets_v4()[0].into());
    assert_trace(&lab, lab.targets_v6()[0].into());
    // The reply's TTL tells the return path length too: 64 minus 3 routers.
    let r = lab.ping("src", lab.targets_v4()[0]).unwrap().run().unwrap();
    assert_eq!(r.reply_ttls, [61]);
}

#[test]
fn many_targets_are_reachable_over_v4_and_v6() {
    let lab = build(LabSpec::chain(2).targets(1000));
    assert_eq!(lab.targets_v4().len(), 1000);
    for i in [0, 1, 253, 254, 500, 999] {
        for target in [
            IpAddr::from(lab.targets_v4()[i]),
            lab.targets_v6()[i].into(),
        ] {
            let r = lab.ping("src", target).unwrap().run().unwrap();
            assert_eq!(r.received, 1, "target {target} unreachable");
            assert_eq!(lab.owner_of(target), Some("dst"));
        }
    }
    // Addresses outside the plan are not routed anywhere.
    let r = lab
        .ping("src", "192.0.2.1".parse::<IpAddr>().unwrap())
        .unwrap()
        .wait(Duration::from_millis(200))
        .run();
    assert!(r.is_err() || r.unwrap().received == 0);
}

#[test]
fn random_loss_is_measurable_and_removable() {
    let lab = build(LabSpec::chain(2));
    let target = lab.targets_v4()[0];
    let ping = || {
        lab.ping("src", target)
            .unwrap()
            .count(300)
            .interval(Duration::from_millis(2))
            .wait(Duration::from_millis(200))
            .run()
            .unwrap()
    };
    let loss = lab.loss(At::link("r1", "r2"), 30.0).unwrap();
    let lossy = ping();
    assert!(
        (0.18..=0.42).contains(&lossy.loss()),
        "30% loss measured as {:.1}%",
        lossy.loss() * 100.0
    );
    loss.remove().unwrap();
    assert_eq!(ping().loss(), 0.0);
}

/// The tests that judge timing (delay, jitter, blackout length) take turns:
/// on two cores, two of them side by side delay each other's userspace delay
/// element and iptables calls and fail on tolerances that hold alone.
/// Across binaries, under nextest (deploy/test.sh), `.config/nextest.toml`
/// runs them alone by name: a test that takes a turn here is named there.
static TIMING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn timing_turn() -> std::sync::MutexGuard<'static, ()> {
    hopwatch::sys::lock(&TIMING)
}

#[test]
fn blackout_and_burst_drop_consecutive_packets() {
    let _turn = timing_turn();
    let lab = build(LabSpec::chain(2));
    let target = lab.targets_v6()[0];
    // 10 ms pings for 1.5 s with a 200 ms blackout early on: ~20 lost in a row.
    let ping = lab
        .ping("src", target)
        .unwrap()
        .count(150)
        .interval(Duration::from_millis(10))
        .wait(Duration::from_millis(200));
    let pinger = std::thread::spawn(move || ping.run().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let blackout = lab
        .blackout_for(At::router("r2"), Duration::from_millis(200))
        .unwrap();
    // It lifts itself by running iptables, which waits for the xtables lock
    // that parallel lab tests hold now and then: note when it actually did.
    while blackout.is_active() && started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let active = started.elapsed();
    assert!(!blackout.is_active(), "blackout did not lift itself");
    assert!(
        active >= Duration::from_millis(200),
        "lifted early: {active:?}"
    );
    drop(blackout);
    let report = pinger.join().unwrap();
    let lost = report.transmitted - report.received;
    // About one ping per 10 ms of blackout; installing the rule takes a little
    // of it, and the lift is noticed up to 5 ms late.
    let expected = (active.as_millis() / 10) as u32;
    assert!(
        lost >= 12 && lost <= expected + 5,
        "lost {lost} in a blackout active for {active:?}"
    );

    let burst = lab.drop_burst(At::link("src", "r1"), 5).unwrap();
    let r = lab
        .ping("src", target)
        .unwrap()
        .count(20)
        .interval(Duration::from_millis(2))
        .wait(Duration::from_millis(200))
        .run()
        .unwrap();
    assert_eq!(r.transmitted - r.received, 5);
    let stats = burst.remove().unwrap();
    assert_eq!(stats.dropped, 5);
}

#[test]
fn delay_and_jitter_are_measurable() {
    let _turn = timing_turn();
    let lab = build(LabSpec::chain(3));
    let target = lab.targets_v4()[0];
    let ping = |target: IpAddr| {
        lab.ping("src", target)
            .unwrap()
            .count(40)
            .interval(Duration::from_millis(5))
            .run()
            .unwrap()
    };
    let base = ping(target.into()).mean_rtt().unwrap();

    let delay = lab
        .delay(
            At::link("r1", "r2"),
            DelaySpec::fixed(Duration::from_millis(30)),
        )
        .unwrap();
    for target in [IpAddr::from(target), lab.targets_v6()[0].into()] {
        let r = ping(target);
        assert_eq!(r.received, 40);
        let (min, mean) = (r.min_rtt().unwrap(), r.mean_rtt().unwrap());
        assert!(
            min >= Duration::from_millis(30),
            "min {min:?} below the delay"
        );
        assert!(
            mean < Duration::from_millis(33) + base,
            "mean {mean:?} for a 30 ms delay"
        );
    }
    // Changed while running: jitter spreads the RTTs.
    delay.set(DelaySpec::jittered(
        Duration::from_millis(20),
        Duration::from_millis(10),
    ));
    let r = ping(target.into());
    let (min, max, sd) = (
        r.min_rtt().unwrap(),
        r.max_rtt().unwrap(),
        r.rtt_stddev().unwrap(),
    );
    assert!(min >= Duration::from_millis(10), "min {min:?}");
    // 30 ms at most, plus the userspace element's release lag on a busy
    // machine (seen: 6.5 ms while the test suite built a package alongside).
    assert!(max <= Duration::from_millis(40), "max {max:?}");
    assert!(
        sd >= Duration::from_millis(2),
        "stddev {sd:?} with 10 ms jitter"
    );
    let stats = delay.remove().unwrap();
    eprintln!("delay element: {stats:?}");
    assert_eq!(stats.queued, stats.accepted);
    // The element's own error; generous because the machine may be busy.
    assert!(stats.late_mean <= Duration::from_millis(1), "{stats:?}");
    assert!(ping(target.into()).mean_rtt().unwrap() < Duration::from_millis(5));
}

/// Thousands of packets per second through a 10 ms delay. One-way delays are the
/// kernel receive timestamp (SO_TIMESTAMPNS) minus the send time carried in each UDP
/// datagram, so a busy machine delaying the receiving thread does not count.
#[test]
fn delay_element_holds_thousands_of_packets_per_second_accurately() {
    let _turn = timing_turn();
    let lab = build(LabSpec::chain(1));
    let hold = Duration::from_millis(10);
    let delay = lab
        .delay(At::link("r1", "dst"), DelaySpec::fixed(hold))
        .unwrap();
    let target = lab.targets_v4()[0];
    const PACKETS: u32 = 4000;
    let receiver = lab
        .spawn_in("dst", "udp-sink", move || {
            let sock = UdpSocket::bind((target, 9000)).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            setsockopt(&sock, sockopt::ReceiveTimestampns, &true).unwrap();
            let mut delays = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                let (n, arrived) = {
                    let mut iov = [IoSliceMut::new(&mut buf)];
                    let mut cmsg = nix::cmsg_space!(TimeSpec);
                    let Ok(msg) = recvmsg::<SockaddrStorage>(
                        sock.as_raw_fd(),
                        &mut iov,
                        Some(&mut cmsg),
                        MsgFlags::empty(),
                    ) else {
                        break; // the read timeout: the sender is done
                    };
                    let arrived = msg.cmsgs().unwrap().find_map(|c| match c {
                        ControlMessageOwned::ScmTimestampns(ts) => Some(nanos(ts)),
                        _ => None,
                    });
                    (msg.bytes, arrived.expect("kernel receive timestamp"))
                };
                assert_eq!(n, 16);
                let sent = u64::from_be_bytes(buf[..8].try_into().unwrap());
                delays.push(Duration::from_nanos(arrived.saturating_sub(sent)));
            }
            delays
        })
        .unwrap();
    let sent_in = lab
        .run_in("src", || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            let started = Instant::now();
            // 4000 packets over 1 s: 4 per millisecond.
            for i in 0..PACKETS {
                let due = started + Duration::from_micros(u64::from(i) * 250);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut payload = [0u8; 16];
                payload[..8].copy_from_slice(&realtime_nanos().to_be_bytes());
                sock.send_to(&payload, (target, 9000)).unwrap();
            }
            started.elapsed()
        })
        .unwrap();
    let mut delays = receiver.join();
    let stats = delay.remove().unwrap();
    delays.sort();
    let pct = |p: usize| delays[(delays.len() - 1) * p / 100];
    let rate = f64::from(PACKETS) / sent_in.as_secs_f64();
    eprintln!(
        "{} of {PACKETS} packets at ~{rate:.0}/s: one-way min {:?} p50 {:?} p99 {:?} max {:?}; element {stats:?}",
        delays.len(),
        delays[0],
        pct(50),
        pct(99),
        delays[delays.len() - 1]
    );
    assert_eq!(delays.len() as u32, PACKETS, "packets lost in the element");
    assert!(delays[0] >= hold, "released early: {:?}", delays[0]);
    assert!(
        pct(50) < hold + Duration::from_millis(1),
        "median error too large"
    );
    assert!(
        pct(99) < hold + Duration::from_millis(5),
        "p99 error too large"
    );
    assert_eq!(stats.overruns, 0);
}

fn nanos(ts: TimeSpec) -> u64 {
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// CLOCK_REALTIME, the clock of kernel receive timestamps.
fn realtime_nanos() -> u64 {
    nanos(clock_gettime(ClockId::CLOCK_REALTIME).unwrap())
}

#[test]
fn route_change_switches_branch_and_path_length() {
    let lab = build(LabSpec::chain(3).parallel(1, &[1, 3]));
    let target: IpAddr = lab.targets_v4()[0].into();
    let names = |lab: &Lab| {
        lab.hops()
            .iter()
            .map(|h| h.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&lab), ["r1", "a1", "r2", "r3"]);
    assert_trace(&lab, target);
    assert_trace(&lab, lab.targets_v6()[0].into());

    let reply_ttl = |lab: &Lab| lab.ping("src", target).unwrap().run().unwrap().reply_ttls[0];
    assert_eq!(reply_ttl(&lab), 64 - 4);
    {
        let _longer = lab.with_path(PathSelect::Branch(1)).unwrap();
        assert_eq!(names(&lab), ["r1", "b1", "b2", "b3", "r2", "r3"]);
        assert_trace(&lab, target);
        assert_trace(&lab, lab.targets_v6()[0].into());
        assert_eq!(reply_ttl(&lab), 64 - 6);
    }
    assert_eq!(lab.path(), PathSelect::Branch(0));
    assert_trace(&lab, target);
}

#[test]
fn ecmp_spreads_flows_over_both_branches() {
    let lab = build(LabSpec::chain(2).parallel(1, &[1, 1]).targets(64).ecmp());
    let branch_first = |v6: bool| -> std::collections::BTreeSet<IpAddr> {
        (0..2)
            .map(|b| {
                let hop = &lab.hops_via(b)[1];
                if v6 {
                    IpAddr::from(hop.v6)
                } else {
                    IpAddr::from(hop.v4)
                }
            })
            .collect()
    };
    for v6 in [false, true] {
        let targets: Vec<IpAddr> = if v6 {
            lab.targets_v6()[..32].iter().map(|&a| a.into()).collect()
        } else {
            lab.targets_v4()[..32].iter().map(|&a| a.into()).collect()
        };
        let mut seen = std::collections::BTreeSet::new();
        // ICMP has no ports, so different targets make the different flows.
        for target in targets {
            let r = lab
                .ping("src", target)
                .unwrap()
                .ttl(2)
                .wait(Duration::from_millis(300))
                .run()
                .unwrap();
            let from = r.error_sources();
            assert_eq!(from.len(), 1, "{target}: {r:?}");
            seen.insert(from[0]);
            // The merging router answers from the branch the probe came through.
            let branch = usize::from(from[0] != lab.hops_via(0)[1].responder(target).unwrap());
            let r = lab.ping("src", target).unwrap().ttl(3).run().unwrap();
            assert_eq!(
                r.error_sources(),
                [lab.hops_via(branch)[2].responder(target).unwrap()]
            );
        }
        assert_eq!(seen, branch_first(v6), "flows did not use both branches");
    }
}

#[test]
fn silent_routers_forward_but_do_not_answer() {
    let lab = build(LabSpec::chain(3).silent("r2"));
    let target: IpAddr = lab.targets_v6()[0].into();
    let expected = lab.expected_trace(target);
    assert_eq!(expected[1], None);
    assert_trace(&lab, target);
    assert_trace(&lab, lab.targets_v4()[0].into());

    let quiet = lab.silence("r1").unwrap();
    assert_eq!(lab.expected_trace(target)[0], None);
    assert_trace(&lab, target);
    drop(quiet);
    assert!(lab.hops()[0].answers);
    assert_trace(&lab, target);
}

#[test]
fn icmp_rate_limiting_is_visible() {
    let lab = build(LabSpec::chain(2));
    let target = lab.targets_v4()[0];
    let burst_of_ttl1 = || {
        lab.ping("src", target)
            .unwrap()
            .ttl(1)
            .count(50)
            .interval(Duration::from_millis(4))
            .wait(Duration::from_millis(100))
            .run()
            .unwrap()
            .errors
            .len()
    };
    assert_eq!(
        burst_of_ttl1(),
        50,
        "lab routers must not rate-limit by default"
    );
    {
        let _limit = lab.icmp_rate_limit("r1", 10, 5).unwrap();
        // 0.2 s at 10/s after a burst of 5: about 7.
        let answered = burst_of_ttl1();
        assert!(
            (4..=10).contains(&answered),
            "{answered} answers with a 10/s limit"
        );
    }
    {
        let limit = KernelIcmpLimit {
            per_destination: Duration::from_millis(100),
            ..KernelIcmpLimit::linux_default()
        };
        let _limit = lab.kernel_icmp_ratelimit("r1", limit).unwrap();
        let answered = burst_of_ttl1();
        assert!(
            (4..=12).contains(&answered),
            "{answered} answers with the kernel limit"
        );
    }
    assert_eq!(burst_of_ttl1(), 50, "limits must be lifted by their guards");
}

#[test]
fn closures_and_commands_run_inside_namespaces() {
    let lab = build(LabSpec::chain(1));
    let src = lab.src_v4();
    // The source address exists only inside the lab's src namespace.
    let port = lab
        .run_in("src", move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let sock = tokio::net::UdpSocket::bind((src, 0)).await.unwrap();
                sock.local_addr().unwrap().port()
            })
        })
        .unwrap();
    assert_ne!(port, 0);
    assert!(
        UdpSocket::bind((src, 0)).is_err(),
        "lab address visible outside the lab"
    );

    let out = lab
        .command("r1", "ip")
        .unwrap()
        .args(["-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    assert!(
        links.contains("to-src") && links.contains("to-dst"),
        "{links}"
    );
}

#[test]
fn drop_removes_everything_even_after_a_panic() {
    let mut names = Vec::new();
    let mut pid = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = build(LabSpec::chain(2).parallel(1, &[1, 2]));
        names = lab.namespaces();
        let _delay = lab
            .delay(At::router("r1"), DelaySpec::fixed(Duration::from_millis(5)))
            .unwrap();
        let _loss = lab.loss(At::link("r2", "dst"), 5.0).unwrap();
        let mut sleep = lab.command("dst", "sleep").unwrap();
        sleep.arg("600");
        let child = lab.spawn("dst", sleep).unwrap();
        pid = child.pid();
        assert!(names.iter().all(|n| netns::exists(n)));
        panic!("intentional panic: the lab must still be removed");
    }));
    assert!(result.is_err());
    assert!(!names.is_empty());
    let left: Vec<_> = names.iter().filter(|n| netns::exists(n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let prefix = format!("{}-", names[0].rsplit_once('-').unwrap().0);
    let with_prefix: Vec<_> = netns::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(
        with_prefix.is_empty(),
        "namespaces named {prefix}*: {with_prefix:?}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "child {pid} still running"
    );
}

/// Stops `hopwatch-lab up` (a child this test started) with SIGTERM when dropped.
struct UpProcess(std::process::Child);

impl Drop for UpProcess {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

#[test]
fn cli_builds_impairs_and_removes_a_lab() {
    use std::{
        io::{BufRead, BufReader},
        process::{Command, Stdio},
    };
    let bin = env!("CARGO_BIN_EXE_hopwatch-lab");
    let run = |args: &[&str]| Command::new(bin).args(args).output().unwrap();
    // --for is only the safety net: the test stops it earlier.
    let mut up = UpProcess(
        Command::new(bin)
            .args(["up", "--routers", "2", "--targets", "4", "--for", "30s"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = up.0.stdout.take().unwrap();
    let first = BufReader::new(stdout).lines().next().unwrap().unwrap();
    let id = first.split_whitespace().nth(1).unwrap().to_owned();
    assert!(first.starts_with("lab hw"), "{first}");

    let out = run(&[
        "impair",
        &id,
        "--for",
        "200ms",
        "loss",
        "--link",
        "r1:r2",
        "--percent",
        "100",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed: loss 100% on link r1->r2"));

    let out = run(&[
        "exec",
        &id,
        "src",
        "ping",
        "-n",
        "-c",
        "1",
        "-W",
        "1",
        "198.19.0.1",
    ]);
    assert!(out.status.success(), "{out:?}");

    let out = run(&["path", &id, "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0 parallel branch"),
        "{out:?}"
    );

    let namespaces: Vec<String> = ["src", "r1", "r2", "dst"]
        .iter()
        .map(|n| format!("{id}-{n}"))
        .collect();
    assert!(namespaces.iter().all(|n| netns::exists(n)));
    drop(up);
    assert!(
        namespaces.iter().all(|n| !netns::exists(n)),
        "up left namespaces"
    );
    assert!(!hopwatch_lab::state::LabState::file(&id).exists());
}

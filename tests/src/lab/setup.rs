//! Building a lab in phases: namespaces, sysctls, veth links, addresses, routes,
//! permanent silences. Each phase configures all namespaces concurrently (one
//! `ip -batch` process or one thread per namespace) and finishes before the next
//! starts, because links need both namespaces and routes need links that are up.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use super::Lab;
use crate::{
    error::{LabError, Result},
    impair::icmp::{kernel_limit_sysctls, unlimited_icmp},
    netns::{self, enter, exec, sysctl},
    topology::{
        plan::{Plan, Role},
        routes,
    },
};

pub(super) fn build(lab: &Lab) -> Result<()> {
    let plan = lab.plan();
    netns::create(&lab.namespaces())?;
    set_sysctls(plan)?;
    run_batches(link_scripts(plan))?;
    run_batches(address_scripts(plan))?;
    let sel = lab.path();
    run_batches(
        plan.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let script = routes::for_node(plan, crate::topology::plan::NodeId(i), sel)
                    .iter()
                    .map(|r| r.replace_line() + "\n")
                    .collect();
                (node.ns.clone(), script)
            })
            .collect(),
    )?;
    for &router in &plan.silent {
        lab.silence_rules(router).apply()?;
        lab.mark_silent(router);
    }
    wait_until_ready(plan)
}

/// How long interfaces may take to come up (carrier changes go through the kernel's
/// linkwatch, which can defer them).
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until every lab interface is usable. Right after `link set up` a veth may
/// still be without carrier for a few milliseconds; IPv6 then has no link-local
/// address on it yet and neither forwards nor answers there, so a test probing at once
/// would see silent hops. An interface counts as ready once its link-local address is
/// listed and not tentative, which IPv6 only does after carrier is up.
fn wait_until_ready(plan: &Plan) -> Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = plan
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let wanted: Vec<String> = plan
                    .links
                    .iter()
                    .flat_map(|l| [&l.up, &l.down])
                    .filter(|e| e.node.0 == i)
                    .map(|e| e.ifname.clone())
                    .collect();
                scope.spawn(move || wait_node_ready(&node.ns, wanted))
            })
            .collect();
        let results: Vec<Result<()>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        results.into_iter().collect()
    })
}

fn wait_node_ready(ns: &str, mut pending: Vec<String>) -> Result<()> {
    let started = Instant::now();
    enter::run_in(ns, || loop {
        // thread-self: this thread's namespace, not the process's.
        let table = std::fs::read_to_string("/proc/thread-self/net/if_inet6").unwrap_or_default();
        pending.retain(|ifname| !link_local_ready(&table, ifname));
        if pending.is_empty() {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(LabError::NotReady {
                ns: ns.to_owned(),
                interfaces: pending.join(", "),
                waited: READY_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    })?
}

/// Whether /proc/net/if_inet6 lists a non-tentative fe80:: address on `ifname`.
/// Lines: address, ifindex, prefix length, scope, flags (hex), name.
fn link_local_ready(table: &str, ifname: &str) -> bool {
    const IFA_F_TENTATIVE: u32 = 0x40;
    table.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() == 6
            && f[5] == ifname
            && f[0].starts_with("fe80")
            && u32::from_str_radix(f[4], 16).is_ok_and(|flags| flags & IFA_F_TENTATIVE == 0)
    })
}

/// Sysctls, written before any link exists so new interfaces inherit the defaults.
fn node_sysctls(role: Role) -> Vec<(String, String)> {
    let mut s: Vec<(String, String)> = [
        // Parallel paths make return traffic arrive on another interface than the
        // one a reply would leave by; reverse-path filtering would drop it.
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        // Addresses are usable at once instead of after duplicate detection.
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        // Unprivileged ICMP sockets, so the prober's non-root mode can be tested.
        ("net.ipv4.ping_group_range", "0 2147483647"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    s.extend(kernel_limit_sysctls(&unlimited_icmp()));
    if role == Role::Router {
        s.extend(
            [
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
                // ECMP hashes on addresses, protocol and ports, so flows with
                // different ports may take different branches.
                ("net.ipv4.fib_multipath_hash_policy", "1"),
                ("net.ipv6.fib_multipath_hash_policy", "1"),
                // ICMP errors come from the interface the probe arrived on. IPv6 does
                // that already (unless the route back has a preferred source); IPv4
                // would use the interface of the route back, which under ECMP need not
                // be the one the probe came through. Same rule for both families makes
                // the expected responder per hop exact.
                ("net.ipv4.icmp_errors_use_inbound_ifaddr", "1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
    }
    s
}

fn set_sysctls(plan: &Plan) -> Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = plan
            .nodes
            .iter()
            .map(|node| scope.spawn(move || sysctl::set(&node.ns, &node_sysctls(node.role))))
            .collect();
        let results: Vec<Result<()>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        results.into_iter().collect()
    })
}

/// Each veth pair is created from its upstream end's namespace with the peer placed
/// straight into the other namespace, so no name ever appears in the root namespace.
///
/// The two ends get different, fixed interface indexes (1000 + 2L and 1001 + 2L for
/// link L). Indexes are per namespace, so both ends would otherwise often get the same
/// number; the kernel's linkwatch then takes the veth for a device without a lower
/// device and defers its carrier change by up to a second (and IPv6 waits for it).
fn link_scripts(plan: &Plan) -> Vec<(String, String)> {
    plan.nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut script = String::new();
            for link in plan.links.iter().filter(|l| l.up.node.0 == i) {
                let _ = writeln!(
                    script,
                    "link add {} index {} type veth peer name {} index {} netns {}",
                    link.up.ifname,
                    1000 + 2 * link.index,
                    link.down.ifname,
                    1001 + 2 * link.index,
                    plan.node(link.down.node).ns
                );
            }
            (node.ns.clone(), script)
        })
        .collect()
}

fn address_scripts(plan: &Plan) -> Vec<(String, String)> {
    plan.nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut script = String::from("link set lo up\n");
            for end in plan
                .links
                .iter()
                .flat_map(|l| [&l.up, &l.down])
                .filter(|e| e.node.0 == i)
            {
                let _ = writeln!(script, "addr add {}/24 dev {}", end.v4, end.ifname);
                let _ = writeln!(script, "addr add {}/64 dev {} nodad", end.v6, end.ifname);
                let _ = writeln!(script, "link set {} up", end.ifname);
            }
            if node.role == Role::Destination {
                for t in &plan.targets_v4 {
                    let _ = writeln!(script, "addr add {t}/32 dev lo");
                }
                for t in &plan.targets_v6 {
                    let _ = writeln!(script, "addr add {t}/128 dev lo nodad");
                }
            }
            (node.ns.clone(), script)
        })
        .collect()
}

/// Runs one `ip -n NS -batch` per (namespace, script) concurrently; all are waited
/// for, and the first failure is returned.
pub(super) fn run_batches(scripts: Vec<(String, String)>) -> Result<()> {
    let mut pending = Vec::new();
    let mut first_error = None;
    for (ns, script) in scripts.iter().filter(|(_, s)| !s.is_empty()) {
        match exec::spawn_ip_batch(Some(ns), script, false) {
            Ok(p) => pending.push(p),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for p in pending {
        if let Err(e) = p.wait() {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_readiness_from_if_inet6() {
        let table = "20010db8000000000000000000000002 02 40 00 80    to-src\n\
                     fe80000000000000e0eccbfffebc4ee4 03 40 20 80    to-r2\n\
                     fe80000000000000e0eccbfffebc4ee5 04 40 20 c0    to-r3\n";
        assert!(link_local_ready(table, "to-r2"));
        assert!(!link_local_ready(table, "to-src"));
        assert!(!link_local_ready(table, "to-r3"), "tentative");
    }
}

//! The hopwatch network lab: a real multi-hop IPv4/IPv6 network built from network
//! namespaces, with impairments that can be applied and removed while traffic flows.
//! Every later test, benchmark and the demo use it.
//!
//! ```no_run
//! use hopwatch_lab::{At, DelaySpec, LabSpec};
//! use std::time::Duration;
//!
//! let lab = LabSpec::chain(3).targets(1000).build()?;        // src - r1 - r2 - r3 - dst
//! let target = lab.targets_v4()[0];
//! let trace = lab.expected_trace(target.into());            // [r1, r2, r3, target]
//! let _slow = lab.delay(At::link("r1", "r2"), DelaySpec::fixed(Duration::from_millis(20)))?;
//! let report = lab.ping("src", target)?.count(5).run()?;
//! # let _ = (trace, report);
//! # Ok::<(), hopwatch_lab::LabError>(())
//! ```
//!
//! # Topology
//! `src` - `r1` - ... - `rN` - `dst`. With [`LabSpec::parallel`]`(k, &[n0, n1, ..])`
//! the link `rk`-`r(k+1)` is replaced by branches: branch 0 is routers `a1..a(n0)`,
//! branch 1 `b1..`, etc. `rk` branches, `r(k+1)` merges. [`PathSelect`] picks one
//! branch or ECMP (multipath route, L4 hash policy) and [`Lab::set_path`] changes it
//! while traffic flows (a route change; a longer or shorter branch lengthens or
//! shortens the path).
//!
//! # Address plan
//! | what | IPv4 | IPv6 |
//! |---|---|---|
//! | whole lab | 198.18.0.0/15 (RFC 2544) | 2001:db8::/32 (RFC 3849) |
//! | link `L` (numbered from `src` outwards) | 198.18.L.0/24 | 2001:db8:0:L::/64 |
//! | end of link `L` nearer `src` / farther | .1 / .2 | ::1 / ::2 |
//! | target `i` (on `dst`'s `lo`) | 198.19.A.B | 2001:db8:1::A:B |
//!
//! with A = i / 254 and B = i % 254 + 1. So `src` is always 198.18.0.1 and
//! 2001:db8::1, and `r1` answers TTL 1 from 198.18.0.2 / 2001:db8::2. Interfaces are
//! named `to-<peer>` (`to-r2`), namespaces `<lab id>-<node>` with lab id
//! `hw<pid>-<n>`, so tests in parallel (and processes) never collide. Hosts route the
//! whole lab prefix to their neighbour and nothing else: traffic to anything outside
//! the plan fails with "network unreachable" instead of leaving the lab.
//!
//! # Expected responders
//! Routers answer from their address on the link the probe arrived by, over IPv4 and
//! IPv6 alike (`icmp_errors_use_inbound_ifaddr=1`), as traceroute users expect from
//! most routers. [`Lab::hops`] / [`Lab::expected_trace`] give the responder per TTL
//! for the current path; [`Lab::hops_via`] / [`Lab::expected_trace_via`] for a given
//! branch (what each ECMP flow sees). Under ECMP, return traffic from the merging
//! router takes branch 0.
//!
//! # Running code inside
//! [`Lab::command`] builds `ip netns exec` commands, [`Lab::spawn`] starts children
//! killed on drop, [`Lab::run_in`] runs a closure on a thread inside a namespace
//! (open sockets, build a current-thread tokio runtime there), [`Lab::ping`] pings.
//!
//! # Impairments ([`impair`])
//! [`Lab::loss`], [`Lab::blackout`], [`Lab::blackout_for`], [`Lab::drop_burst`],
//! [`Lab::delay`] (NFQUEUE element, as the kernel has no netem), [`Lab::silence`],
//! [`Lab::icmp_rate_limit`], [`Lab::kernel_icmp_ratelimit`]. Each returns a guard
//! that borrows the lab and undoes the impairment when dropped. Packet impairments
//! spare IPv6 neighbour discovery and MLD, as they spare ARP.
//!
//! Every node has ICMP rate limiting off, DAD off and rp_filter off; routers forward
//! and hash multipath routes on L4. A process killed before its `Lab` dropped leaves
//! its namespaces behind; `hopwatch-lab down --stale` removes those.

// Only the test suite and the benchmarks use these (feature `suite`, on by
// default; the demo is built without it).
#[cfg(feature = "suite")]
pub mod bench;
pub mod binaries;
#[cfg(feature = "suite")]
pub mod browser;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod impair;
pub mod lab;
pub mod netns;
pub mod ping;
pub mod privilege;
pub mod programs;
#[cfg(feature = "suite")]
pub mod prometheus;
#[cfg(feature = "suite")]
pub mod promql;
pub mod state;
pub mod topology;
pub mod webclient;

pub use binaries::hopwatch_bin;
pub use error::{LabError, Result, SpecError};
pub use impair::{
    delay::Delay,
    icmp::KernelIcmpLimit,
    nfq::{DelaySpec, ElementStats, NfqElement},
    At, Impairment,
};
pub use lab::{Hop, Lab, PathGuard};
pub use ping::{Ping, PingReport};
pub use topology::{
    plan::{Link, LinkEnd, Node, NodeId, Plan, Prefix, Role},
    spec::{LabSpec, ParallelSpec, PathSelect},
};

//! How routers answer: silent routers (forward, but never send time-exceeded) and ICMP
//! error rate limiting, either with an iptables `limit` match on outgoing errors
//! (exact, global token bucket) or with the kernel's own knobs (per-destination
//! interval plus a global budget, what a stock Linux router does).

use std::time::Duration;

use super::{
    filter::{FamilyRules, RuleSet},
    Impairment, Undo,
};
use crate::{
    error::{LabError, Result},
    netns::sysctl,
    topology::plan::{NodeId, Role},
    Lab,
};

/// The ICMP error types routers rate-limit, per family (iptables spelling).
const V4_ERRORS: [&str; 2] = ["time-exceeded", "destination-unreachable"];
const V6_ERRORS: [&str; 2] = ["time-exceeded", "destination-unreachable"];

/// Settings for the kernel's ICMP error rate limiting on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelIcmpLimit {
    /// Minimum interval between errors to the same destination host
    /// (`net.ipv4.icmp_ratelimit`, `net.ipv6.icmp.ratelimit`); the kernel allows a
    /// burst of up to 6 intervals' worth.
    pub per_destination: Duration,
    /// Errors per second over all destinations (`net.ipv4.icmp_msgs_per_sec`, shared by
    /// IPv4 and IPv6).
    pub global_per_sec: u32,
    /// Burst of the global budget (`net.ipv4.icmp_msgs_burst`).
    pub global_burst: u32,
}

impl KernelIcmpLimit {
    /// The stock Linux defaults: 1 s per destination, 1000/s with a burst of 50.
    pub fn linux_default() -> Self {
        Self {
            per_destination: Duration::from_secs(1),
            global_per_sec: 1000,
            global_burst: 50,
        }
    }
}

/// The sysctl values that express `limit`.
pub(crate) fn kernel_limit_sysctls(limit: &KernelIcmpLimit) -> Vec<(String, String)> {
    let ms = limit.per_destination.as_millis().to_string();
    vec![
        ("net.ipv4.icmp_ratelimit".into(), ms.clone()),
        ("net.ipv6.icmp.ratelimit".into(), ms),
        (
            "net.ipv4.icmp_msgs_per_sec".into(),
            limit.global_per_sec.to_string(),
        ),
        (
            "net.ipv4.icmp_msgs_burst".into(),
            limit.global_burst.to_string(),
        ),
    ]
}

/// What the lab sets on every node: no ICMP rate limiting at all, so tests see every
/// answer unless they ask for limiting.
pub(crate) fn unlimited_icmp() -> KernelIcmpLimit {
    KernelIcmpLimit {
        per_destination: Duration::ZERO,
        global_per_sec: 1_000_000,
        global_burst: 1_000_000,
    }
}

impl Lab {
    fn router_id(&self, name: &str) -> Result<NodeId> {
        let id = self.node_id(name)?;
        if self.plan().node(id).role != Role::Router {
            return Err(LabError::NotARouter {
                lab: self.id().to_owned(),
                name: name.to_owned(),
            });
        }
        Ok(id)
    }

    pub(crate) fn silence_rules(&self, router: NodeId) -> RuleSet {
        let drop =
            |proto: &str, flag: &str| vec![format!("-p {proto} --{flag} time-exceeded -j DROP")];
        RuleSet {
            ns: self.plan().node(router).ns.clone(),
            table: "filter",
            chain: self.chain_name("SILENT"),
            v4: FamilyRules::new("OUTPUT", "", drop("icmp", "icmp-type")),
            v6: FamilyRules::new("OUTPUT", "", drop("ipv6-icmp", "icmpv6-type")),
        }
    }

    /// Makes `router` silent until the guard is dropped: it keeps forwarding but
    /// drops the time-exceeded messages it generates, like routers that do not answer
    /// traceroute. [`Lab::hops`] reports it as not answering meanwhile.
    pub fn silence(&self, router: &str) -> Result<Impairment<'_>> {
        let id = self.router_id(router)?;
        let rules = self.silence_rules(id);
        rules.apply()?;
        self.mark_silent(id);
        Ok(Impairment::new(
            self,
            format!("silence {router}"),
            Undo::Silence(rules, id),
        ))
    }

    /// Limits the ICMP errors (time-exceeded, unreachable) node `name` sends to
    /// `per_sec` per second after a burst of `burst`, over all destinations, with an
    /// iptables `limit` match; the excess is dropped silently.
    pub fn icmp_rate_limit(&self, name: &str, per_sec: u32, burst: u32) -> Result<Impairment<'_>> {
        let node = self.node(name)?;
        let family = |proto: &str, flag: &str, types: [&str; 2]| FamilyRules {
            hooks: types
                .iter()
                .map(|t| ("OUTPUT", format!("-p {proto} --{flag} {t}")))
                .collect(),
            rules: vec![
                format!("-m limit --limit {per_sec}/second --limit-burst {burst} -j RETURN"),
                "-j DROP".to_owned(),
            ],
        };
        let rules = RuleSet {
            ns: node.ns.clone(),
            table: "filter",
            chain: self.chain_name("ICMPLIMIT"),
            v4: family("icmp", "icmp-type", V4_ERRORS),
            v6: family("ipv6-icmp", "icmpv6-type", V6_ERRORS),
        };
        rules.apply()?;
        Ok(Impairment::new(
            self,
            format!("ICMP errors from {name} limited to {per_sec}/s, burst {burst}"),
            Undo::Rules(rules),
        ))
    }

    /// Turns on the kernel's own ICMP error rate limiting on node `name` with
    /// `limit`; dropping the guard restores the lab's "no limiting" settings.
    pub fn kernel_icmp_ratelimit(
        &self,
        name: &str,
        limit: KernelIcmpLimit,
    ) -> Result<Impairment<'_>> {
        let ns = self.node(name)?.ns.clone();
        sysctl::set(&ns, &kernel_limit_sysctls(&limit))?;
        Ok(Impairment::new(
            self,
            format!("kernel ICMP rate limit on {name}: {limit:?}"),
            Undo::Sysctls {
                ns,
                values: kernel_limit_sysctls(&unlimited_icmp()),
            },
        ))
    }
}

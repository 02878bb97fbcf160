//! Impairments applied to a running lab and undone by dropping their guard: loss and
//! blackouts ([`loss`]), delay and packet-count bursts through the NFQUEUE element
//! ([`delay`], [`nfq`]), and ICMP behaviour of routers ([`icmp`]). Route changes live
//! with the routes (`Lab::set_path`).
//!
//! Where an impairment acts is an [`At`]: one direction of a link (applied on the
//! sending node's egress interface, so it also catches what that node generates
//! itself, such as its ICMP errors) or everything a router receives, either of them
//! optionally narrowed to the packets addressed to one address (`At::to_address`,
//! so impairments on different targets of `dst` run side by side). Packet
//! impairments spare IPv6 neighbour discovery and MLD, as they spare ARP (not IP).

pub mod delay;
pub(crate) mod filter;
pub mod icmp;
pub mod loss;
pub mod nfq;

use std::{net::IpAddr, sync::mpsc, thread::JoinHandle};

use filter::{packet_rules, FamilyRules, RuleSet};

use crate::{error::Result, netns::sysctl, topology::plan::NodeId, Lab};

/// Where an impairment applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// Packets leaving node `from` towards its neighbour `to`.
    Link {
        /// Sending node name.
        from: String,
        /// Receiving node name.
        to: String,
    },
    /// Every packet node `name` receives, in both directions (but not on `lo`).
    Router(String),
    /// Only the packets at `at` addressed to `dst` (so only its family), e.g. the
    /// probes of one target: impairments scoped this way on different addresses
    /// of `dst` run side by side without seeing each other's traffic.
    ToAddress {
        /// Where, before scoping.
        at: Box<At>,
        /// The destination address the packets must have.
        dst: IpAddr,
    },
}

impl At {
    /// Packets sent from `from` to its neighbour `to`.
    pub fn link(from: &str, to: &str) -> Self {
        Self::Link {
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }

    /// Everything router (or host) `name` receives.
    pub fn router(name: &str) -> Self {
        Self::Router(name.to_owned())
    }

    /// This place, but only for packets addressed to `dst`.
    pub fn to_address(self, dst: IpAddr) -> Self {
        Self::ToAddress {
            at: Box::new(self),
            dst,
        }
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Link { from, to } => write!(f, "link {from}->{to}"),
            Self::Router(name) => write!(f, "router {name}"),
            Self::ToAddress { at, dst } => write!(f, "{at} to {dst}"),
        }
    }
}

/// An [`At`] resolved to a namespace and the netfilter hook that sees its packets.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub ns: String,
    pub hook: &'static str,
    pub matches: String,
    /// `Some(true)` for IPv6 only, `Some(false)` for IPv4 only, `None` for both.
    pub only_v6: Option<bool>,
}

impl Site {
    /// The rule set halves of a packet impairment here ([`packet_rules`]), with
    /// the hooks of a family the site excludes removed (an address match is
    /// valid in one family only).
    pub fn packet_rules(&self, rules: Vec<String>) -> (FamilyRules, FamilyRules) {
        let (mut v4, mut v6) = packet_rules(self.hook, &self.matches, rules);
        match self.only_v6 {
            Some(true) => v4.hooks.clear(),
            Some(false) => v6.hooks.clear(),
            None => {}
        }
        (v4, v6)
    }
}

impl Lab {
    pub(crate) fn site(&self, at: &At) -> Result<Site> {
        match at {
            At::Link { from, to } => {
                let end = self.interface(from, to)?;
                Ok(Site {
                    ns: self.node(from)?.ns.clone(),
                    // mangle POSTROUTING sees forwarded and locally generated packets.
                    hook: "POSTROUTING",
                    matches: format!("-o {}", end.ifname),
                    only_v6: None,
                })
            }
            At::Router(name) => Ok(Site {
                ns: self.node(name)?.ns.clone(),
                // mangle PREROUTING sees everything arriving, before routing.
                hook: "PREROUTING",
                matches: "! -i lo".to_owned(),
                only_v6: None,
            }),
            At::ToAddress { at, dst } => {
                let mut site = self.site(at)?;
                site.matches = format!("{} -d {dst}", site.matches);
                site.only_v6 = Some(dst.is_ipv6());
                Ok(site)
            }
        }
    }
}

/// What undoing an impairment takes.
#[derive(Debug)]
pub(crate) enum Undo {
    Rules(RuleSet),
    Silence(RuleSet, NodeId),
    Sysctls {
        ns: String,
        values: Vec<(String, String)>,
    },
    Timed {
        stop: mpsc::Sender<()>,
        thread: JoinHandle<Result<()>>,
    },
}

/// A guard for an impairment: it is in force until this is dropped or
/// [`remove`](Self::remove)d. It borrows the lab, so it cannot outlive it.
#[derive(Debug)]
#[must_use = "the impairment is removed when this guard is dropped"]
pub struct Impairment<'lab> {
    lab: &'lab Lab,
    label: String,
    undo: Option<Undo>,
}

impl<'lab> Impairment<'lab> {
    pub(crate) fn new(lab: &'lab Lab, label: String, undo: Undo) -> Self {
        Self {
            lab,
            label,
            undo: Some(undo),
        }
    }

    /// What this impairment is, e.g. "loss 10% on link r1->r2".
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether it is still in force (a timed blackout lifts itself).
    pub fn is_active(&self) -> bool {
        match &self.undo {
            None => false,
            Some(Undo::Timed { thread, .. }) => !thread.is_finished(),
            Some(_) => true,
        }
    }

    /// Removes the impairment now and reports whether that worked.
    pub fn remove(mut self) -> Result<()> {
        self.undo_now()
    }

    fn undo_now(&mut self) -> Result<()> {
        match self.undo.take() {
            None => Ok(()),
            Some(Undo::Rules(rules)) => rules.remove(),
            Some(Undo::Silence(rules, node)) => {
                self.lab.unsilence(node);
                rules.remove()
            }
            Some(Undo::Sysctls { ns, values }) => sysctl::set(&ns, &values),
            Some(Undo::Timed { stop, thread }) => {
                let _ = stop.send(());
                match thread.join() {
                    Ok(result) => result,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        }
    }
}

impl Drop for Impairment<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.undo_now() {
            eprintln!("hopwatch-lab: removing {}: {e}", self.label);
        }
    }
}

//! Which path packets take and what a traceroute from `src` should see: the path
//! selection through the parallel section (a route change), and the expected
//! responder per TTL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{setup::run_batches, Lab};
use crate::{
    error::{LabError, Result},
    topology::{routes, spec::PathSelect},
};
use hopwatch::sys::lock;

/// One router on a path, as a traceroute from `src` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The TTL (hop limit) at which this router answers.
    pub ttl: u8,
    /// Node name (`r2`, `b1`, ...).
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Source address of its IPv4 time-exceeded messages.
    pub v4: Ipv4Addr,
    /// Source address of its IPv6 time-exceeded messages.
    pub v6: Ipv6Addr,
    /// False while the router is silent.
    pub answers: bool,
}

impl Hop {
    /// The address that answers a probe towards `target` (same family), or None if
    /// the router is silent.
    pub fn responder(&self, target: IpAddr) -> Option<IpAddr> {
        self.answers.then_some(match target {
            IpAddr::V4(_) => IpAddr::V4(self.v4),
            IpAddr::V6(_) => IpAddr::V6(self.v6),
        })
    }
}

/// Restores the previous path selection when dropped.
#[derive(Debug)]
#[must_use = "the previous path is restored when this guard is dropped"]
pub struct PathGuard<'lab> {
    lab: &'lab Lab,
    previous: Option<PathSelect>,
}

impl PathGuard<'_> {
    /// Restores the previous path now.
    pub fn restore(mut self) -> Result<()> {
        self.undo()
    }

    fn undo(&mut self) -> Result<()> {
        match self.previous.take() {
            Some(prev) => self.lab.set_path(prev).map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for PathGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.undo() {
            eprintln!("hopwatch-lab: restoring path: {e}");
        }
    }
}

impl Lab {
    /// The current path selection.
    pub fn path(&self) -> PathSelect {
        *lock(&self.path)
    }

    /// Changes the path through the parallel section (a route change, applied with
    /// `ip route replace` at the branching and merging routers while traffic flows)
    /// and returns the previous selection. Selecting a longer or shorter branch
    /// lengthens or shortens the path.
    pub fn set_path(&self, sel: PathSelect) -> Result<PathSelect> {
        let plan = self.plan();
        if plan.branch_count() == 0 || !plan.check_selection(sel) {
            return Err(LabError::NoSuchPath {
                lab: self.id().to_owned(),
                selection: sel.to_string(),
                branches: plan.branch_count(),
            });
        }
        // Held across the change so concurrent changes apply in a consistent order.
        let mut current = lock(&self.path);
        let scripts = routes::policy_routers(plan)
            .into_iter()
            .map(|router| {
                let script = routes::for_node(plan, router, sel)
                    .iter()
                    .map(|r| r.replace_line() + "\n")
                    .collect();
                (plan.node(router).ns.clone(), script)
            })
            .collect();
        run_batches(scripts)?;
        Ok(std::mem::replace(&mut *current, sel))
    }

    /// Changes only the way back: the merging router sends packets towards
    /// `src` through branch `sel` while forward traffic keeps its path. Replies
    /// from the merging router and every hop after it then cross another
    /// branch (asymmetric routing); a traceroute sees the same hops as before.
    pub fn set_return_path(&self, sel: PathSelect) -> Result<()> {
        let plan = self.plan();
        let merging = routes::policy_routers(plan).last().copied();
        let Some(merging) = merging.filter(|_| plan.check_selection(sel)) else {
            return Err(LabError::NoSuchPath {
                lab: self.id().to_owned(),
                selection: sel.to_string(),
                branches: plan.branch_count(),
            });
        };
        let _current = lock(&self.path);
        let script = routes::for_node(plan, merging, sel)
            .iter()
            .map(|r| r.replace_line() + "\n")
            .collect();
        run_batches(vec![(plan.node(merging).ns.clone(), script)])
    }

    /// Like [`set_path`](Self::set_path), restoring the previous path when the guard
    /// is dropped.
    pub fn with_path(&self, sel: PathSelect) -> Result<PathGuard<'_>> {
        let previous = self.set_path(sel)?;
        Ok(PathGuard {
            lab: self,
            previous: Some(previous),
        })
    }

    /// The routers on the path packets take now (under ECMP: the path of branch 0).
    pub fn hops(&self) -> Vec<Hop> {
        let branch = match self.path() {
            PathSelect::Branch(b) => b,
            PathSelect::Ecmp => 0,
        };
        self.hops_via(branch)
    }

    /// The routers a packet crosses when it takes `branch` through the parallel
    /// section (ignored without one), each with the address it answers from: its
    /// address on the link the probe arrived by (the lab makes IPv4 and IPv6 both
    /// answer from the inbound interface). Under ECMP, each flow sees the hops of the
    /// branch it hashed to.
    pub fn hops_via(&self, branch: usize) -> Vec<Hop> {
        let plan = self.plan();
        let routers = plan.path_routers(branch);
        let previous = std::iter::once(plan.src).chain(routers.iter().copied());
        routers
            .iter()
            .zip(previous)
            .enumerate()
            .map(|(i, (&router, prev))| {
                let end = plan
                    .link_between(router, prev)
                    .and_then(|l| l.end_on(router))
                    .expect("consecutive path nodes share a link");
                let node = plan.node(router);
                Hop {
                    ttl: (i + 1) as u8,
                    name: node.name.clone(),
                    ns: node.ns.clone(),
                    v4: end.v4,
                    v6: end.v6,
                    answers: !self.is_silent(router),
                }
            })
            .collect()
    }

    /// What a traceroute from `src` to `target` should see now, TTL 1 first: each
    /// router's responder (None while silent), then `target` itself.
    pub fn expected_trace(&self, target: IpAddr) -> Vec<Option<IpAddr>> {
        Self::trace_of(self.hops(), target)
    }

    /// Like [`expected_trace`](Self::expected_trace) for a probe that takes `branch`.
    pub fn expected_trace_via(&self, branch: usize, target: IpAddr) -> Vec<Option<IpAddr>> {
        Self::trace_of(self.hops_via(branch), target)
    }

    fn trace_of(hops: Vec<Hop>, target: IpAddr) -> Vec<Option<IpAddr>> {
        hops.iter()
            .map(|h| h.responder(target))
            .chain(std::iter::once(Some(target)))
            .collect()
    }
}

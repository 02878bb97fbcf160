//! The [`Lab`] value: it owns the namespaces of one topology, builds them
//! (`setup`), answers questions about them (names, addresses, expected hops in
//! `paths`) and deletes them when dropped.

mod paths;
mod setup;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
    sync::{
        atomic::{AtomicU32, AtomicUsize, Ordering},
        Mutex,
    },
};

use hopwatch::sys::lock;

pub use paths::{Hop, PathGuard};

use crate::{
    error::{LabError, Result},
    netns::{
        self,
        enter::{self, NsThread},
        exec::{self, NsChild},
    },
    ping::Ping,
    privilege,
    topology::{
        plan::{LinkEnd, Node, NodeId, Plan},
        spec::{LabSpec, PathSelect},
    },
};

/// Labs built by this process so far; with the PID it makes names unique.
static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// A running lab network. Dropping it deletes every namespace it created (which
/// takes their links, addresses, routes and firewall rules with them). Impairment
/// guards, children and path guards borrow it, so they are gone before it is.
#[derive(Debug)]
pub struct Lab {
    plan: Plan,
    owned: bool,
    path: Mutex<PathSelect>,
    silenced: Mutex<Vec<NodeId>>,
    next_queue: AtomicU32,
    next_chain: AtomicU32,
}

impl Lab {
    /// Builds the lab described by `spec`. Needs root; fails with
    /// [`LabError::NotPrivileged`] otherwise. If building fails halfway, whatever was
    /// created is removed before the error is returned.
    pub fn build(spec: LabSpec) -> Result<Self> {
        privilege::check()?;
        let n = NEXT_LAB.fetch_add(1, Ordering::SeqCst);
        let id = format!("hw{}-{n}", std::process::id());
        let plan = Plan::new(&spec, &id)?;
        let lab = Self::new(plan, spec.path, true);
        setup::build(&lab)?;
        Ok(lab)
    }

    /// A handle on a lab built by another process (e.g. `hopwatch-lab up`), to
    /// impair it or change its path. It does not own the namespaces: dropping it
    /// leaves the lab in place.
    pub fn attach(plan: Plan, path: PathSelect) -> Result<Self> {
        privilege::check()?;
        let lab = Self::new(plan, path, false);
        *lock(&lab.silenced) = lab.plan.silent.clone();
        Ok(lab)
    }

    fn new(plan: Plan, path: PathSelect, owned: bool) -> Self {
        Self {
            plan,
            owned,
            path: Mutex::new(path),
            silenced: Mutex::new(Vec::new()),
            // Different processes may impair the same namespace (the CLI next to
            // `up`), so chain names and queue numbers start from the PID.
            next_queue: AtomicU32::new(std::process::id() % 30_000 + 1),
            next_chain: AtomicU32::new(0),
        }
    }

    /// The lab id (`hw<pid>-<n>`), the prefix of all its namespace names.
    pub fn id(&self) -> &str {
        &self.plan.id
    }

    /// The full plan: nodes, links, addresses, targets.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Every namespace of the lab.
    pub fn namespaces(&self) -> Vec<String> {
        self.plan.nodes.iter().map(|n| n.ns.clone()).collect()
    }

    /// The node called `name` (`src`, `r1`, `a1`, `dst`, ...).
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.node_id(name).map(|id| self.plan.node(id))
    }

    /// The namespace of node `name`.
    pub fn ns(&self, name: &str) -> Result<&str> {
        self.node(name).map(|n| n.ns.as_str())
    }

    pub(crate) fn node_id(&self, name: &str) -> Result<NodeId> {
        self.plan.find(name).ok_or_else(|| LabError::UnknownNode {
            lab: self.plan.id.clone(),
            name: name.to_owned(),
            known: self
                .plan
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The source host.
    pub fn src(&self) -> &Node {
        self.plan.node(self.plan.src)
    }

    /// The destination host, which owns the targets.
    pub fn dst(&self) -> &Node {
        self.plan.node(self.plan.dst)
    }

    /// The source host's IPv4 address (198.18.0.1).
    pub fn src_v4(&self) -> Ipv4Addr {
        self.plan.links[0].up.v4
    }

    /// The source host's IPv6 address (2001:db8::1).
    pub fn src_v6(&self) -> Ipv6Addr {
        self.plan.links[0].up.v6
    }

    /// The IPv4 targets on `dst`.
    pub fn targets_v4(&self) -> &[Ipv4Addr] {
        &self.plan.targets_v4
    }

    /// The IPv6 targets on `dst` (target i matches IPv4 target i).
    pub fn targets_v6(&self) -> &[Ipv6Addr] {
        &self.plan.targets_v6
    }

    /// The interface of node `name` that faces its neighbour `peer`.
    pub fn interface(&self, name: &str, peer: &str) -> Result<&LinkEnd> {
        let (a, b) = (self.node_id(name)?, self.node_id(peer)?);
        self.plan
            .link_between(a, b)
            .and_then(|l| l.end_on(a))
            .ok_or_else(|| LabError::NoSuchLink {
                lab: self.plan.id.clone(),
                from: name.to_owned(),
                to: peer.to_owned(),
            })
    }

    /// Which node owns `addr` (interface address or target), by name.
    pub fn owner_of(&self, addr: IpAddr) -> Option<&str> {
        self.plan
            .owner_of(addr)
            .map(|id| self.plan.node(id).name.as_str())
    }

    /// `ip netns exec <ns of node> <program>`: add arguments and run it.
    pub fn command(&self, node: &str, program: &str) -> Result<Command> {
        Ok(exec::command(self.ns(node)?, program))
    }

    /// Starts `cmd` (built with [`command`](Self::command)) as a child that is killed
    /// when the returned handle is dropped.
    pub fn spawn(&self, node: &str, cmd: Command) -> Result<NsChild<'_>> {
        NsChild::spawn(cmd, self.ns(node)?)
    }

    /// Runs `f` on a new thread inside node `node`'s namespace and returns its result
    /// (sockets it opens live in that namespace).
    pub fn run_in<T, F>(&self, node: &str, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        enter::run_in(self.ns(node)?, f)
    }

    /// Starts `f` on a named thread inside node `node`'s namespace (e.g. a server the
    /// test talks to); join it before the lab is dropped.
    pub fn spawn_in<T, F>(&self, node: &str, thread_name: &str, f: F) -> Result<NsThread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        enter::spawn_in(self.ns(node)?, thread_name, f)
    }

    /// A `ping` from node `node` to `target`; configure it and call `run`.
    pub fn ping(&self, node: &str, target: impl Into<IpAddr>) -> Result<Ping> {
        Ok(Ping::new(self.ns(node)?, target.into()))
    }

    /// A chain name for an impairment: unique per lab handle and process.
    pub(crate) fn chain_name(&self, kind: &str) -> String {
        let n = self.next_chain.fetch_add(1, Ordering::SeqCst);
        format!("HW-{kind}-{}-{n}", std::process::id())
    }

    /// An NFQUEUE queue number not used by this handle yet.
    pub(crate) fn next_queue(&self) -> u16 {
        let n = self.next_queue.fetch_add(1, Ordering::SeqCst);
        (n % u32::from(u16::MAX - 1) + 1) as u16
    }

    pub(crate) fn mark_silent(&self, node: NodeId) {
        lock(&self.silenced).push(node);
    }

    pub(crate) fn unsilence(&self, node: NodeId) {
        let mut silenced = lock(&self.silenced);
        if let Some(i) = silenced.iter().position(|&n| n == node) {
            silenced.remove(i);
        }
    }

    pub(crate) fn is_silent(&self, node: NodeId) -> bool {
        lock(&self.silenced).contains(&node)
    }

    /// Whether dropping this value removes the lab.
    pub fn is_owner(&self) -> bool {
        self.owned
    }

    /// Deletes the lab's namespaces now (what drop does), reporting failures.
    pub fn teardown(mut self) -> Result<()> {
        let result = self.delete_namespaces();
        self.owned = false;
        result
    }

    fn delete_namespaces(&self) -> Result<()> {
        if self.owned {
            netns::delete(&self.namespaces())
        } else {
            Ok(())
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.delete_namespaces() {
            eprintln!("hopwatch-lab: removing lab {}: {e}", self.plan.id);
        }
    }
}

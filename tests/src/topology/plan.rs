//! The address plan: which namespaces, links, interface names and addresses a spec
//! turns into. See the crate docs for the plan in one table.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::{Deserialize, Serialize};

use super::spec::{LabSpec, PathSelect};
use crate::error::SpecError;

/// Everything in a lab's IPv4 plan: links in 198.18.0.0/16, targets in 198.19.0.0/16.
pub const LAB_V4: Prefix = Prefix::V4(Ipv4Addr::new(198, 18, 0, 0), 15);
/// Everything in a lab's IPv6 plan: links in 2001:db8:0::/48, targets in 2001:db8:1::/48.
pub const LAB_V6: Prefix = Prefix::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32);
/// The IPv4 prefix that holds the targets (routed towards `dst`).
pub const TARGETS_V4: Prefix = Prefix::V4(Ipv4Addr::new(198, 19, 0, 0), 16);
/// The IPv6 prefix that holds the targets (routed towards `dst`).
pub const TARGETS_V6: Prefix = Prefix::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0), 48);
/// Link subnets are numbered 0..MAX_LINKS.
pub const MAX_LINKS: usize = 255;
/// Targets use 198.19.A.B with B in 1..=254, so 254 per /24.
pub const MAX_TARGETS: usize = 254 * 256;

/// An IP prefix (address and length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Prefix {
    /// IPv4 network.
    V4(Ipv4Addr, u8),
    /// IPv6 network.
    V6(Ipv6Addr, u8),
}

impl Prefix {
    /// Whether `addr` is inside this prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (*self, addr) {
            (Self::V4(net, len), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (Self::V6(net, len), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_v6(&self) -> bool {
        matches!(self, Self::V6(..))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(a, l) => write!(f, "{a}/{l}"),
            Self::V6(a, l) => write!(f, "{a}/{l}"),
        }
    }
}

/// Index of a node in [`Plan::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub usize);

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Where probes start (`src`).
    Source,
    /// Forwards, answers expiring packets with time-exceeded.
    Router,
    /// Owns the target addresses (`dst`).
    Destination,
}

/// One network namespace of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Short name inside the lab: `src`, `r1`.., `a1`.. (branch a), `dst`.
    pub name: String,
    /// The namespace name (`<lab id>-<name>`), usable with `ip netns exec`.
    pub ns: String,
    /// What it does.
    pub role: Role,
}

/// One end of a link: an interface in a node's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEnd {
    /// The node owning the interface.
    pub node: NodeId,
    /// Interface name in that namespace: `to-<peer name>`.
    pub ifname: String,
    /// Its IPv4 address (/24).
    pub v4: Ipv4Addr,
    /// Its IPv6 address (/64).
    pub v6: Ipv6Addr,
}

/// A veth pair between two nodes. Link `L` is 198.18.L.0/24 and 2001:db8:0:L::/64;
/// the end nearer the source (`up`) is .1 / ::1, the other (`down`) .2 / ::2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The link number `L`.
    pub index: usize,
    /// The end nearer the source.
    pub up: LinkEnd,
    /// The end nearer the destination.
    pub down: LinkEnd,
}

impl Link {
    /// 198.18.L.0/24.
    pub fn v4_prefix(&self) -> Prefix {
        Prefix::V4(link_v4(self.index, 0), 24)
    }

    /// 2001:db8:0:L::/64.
    pub fn v6_prefix(&self) -> Prefix {
        Prefix::V6(link_v6(self.index, 0), 64)
    }

    /// The end on `node`, if the link touches it.
    pub fn end_on(&self, node: NodeId) -> Option<&LinkEnd> {
        [&self.up, &self.down].into_iter().find(|e| e.node == node)
    }

    /// The end opposite `node`, if the link touches it.
    pub fn peer_of(&self, node: NodeId) -> Option<&LinkEnd> {
        if self.up.node == node {
            Some(&self.down)
        } else if self.down.node == node {
            Some(&self.up)
        } else {
            None
        }
    }
}

/// Parallel branches between a branching and a merging trunk router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parallel {
    /// Where the branches start.
    pub branch_router: NodeId,
    /// Where they join again.
    pub merge_router: NodeId,
    /// The routers of each branch, in order from the branching router.
    pub branches: Vec<Vec<NodeId>>,
}

/// A whole lab as data: nodes, links, addresses and targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Unique lab id (`hw<pid>-<counter>`), the prefix of every namespace name.
    pub id: String,
    /// All nodes; [`NodeId`] indexes this.
    pub nodes: Vec<Node>,
    /// All links, numbered in path order from the source.
    pub links: Vec<Link>,
    /// The source host.
    pub src: NodeId,
    /// The destination host.
    pub dst: NodeId,
    /// Trunk routers `r1..rN`.
    pub trunk: Vec<NodeId>,
    /// The parallel section, if any.
    pub parallel: Option<Parallel>,
    /// IPv4 targets on `dst`.
    pub targets_v4: Vec<Ipv4Addr>,
    /// IPv6 targets on `dst`, target i matching IPv4 target i.
    pub targets_v6: Vec<Ipv6Addr>,
    /// Routers silent for the lab's whole life.
    pub silent: Vec<NodeId>,
}

/// 198.18.L.host
fn link_v4(link: usize, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, link as u8, host)
}

/// 2001:db8:0:L::host
fn link_v6(link: usize, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, link as u16, 0, 0, 0, host)
}

/// Target `i` over IPv4: 198.19.(i / 254).(i % 254 + 1), never .0 or .255.
pub fn target_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (i / 254) as u8, (i % 254 + 1) as u8)
}

/// Target `i` over IPv6: 2001:db8:1::A:B with the same A and B as [`target_v4`].
pub fn target_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        1,
        0,
        0,
        0,
        (i / 254) as u16,
        (i % 254 + 1) as u16,
    )
}

impl Plan {
    /// Derives the plan for `spec`; `id` prefixes every namespace name.
    pub fn new(spec: &LabSpec, id: &str) -> Result<Self, SpecError> {
        validate(spec)?;
        let mut nodes = Vec::new();
        let mut add_node = |name: String, role: Role| {
            nodes.push(Node {
                ns: format!("{id}-{name}"),
                name,
                role,
            });
            NodeId(nodes.len() - 1)
        };
        let src = add_node("src".into(), Role::Source);
        let trunk: Vec<NodeId> = (1..=spec.routers)
            .map(|i| add_node(format!("r{i}"), Role::Router))
            .collect();
        let branches: Vec<Vec<NodeId>> = spec
            .parallel
            .iter()
            .flat_map(|p| p.branches.iter().enumerate())
            .map(|(b, &len)| {
                let letter = char::from(b'a' + b as u8);
                (1..=len)
                    .map(|i| add_node(format!("{letter}{i}"), Role::Router))
                    .collect()
            })
            .collect();
        let dst = add_node("dst".into(), Role::Destination);

        let parallel = spec.parallel.as_ref().map(|p| Parallel {
            branch_router: trunk[p.after - 1],
            merge_router: trunk[p.after],
            branches,
        });

        let mut plan = Self {
            id: id.to_owned(),
            nodes,
            links: Vec::new(),
            src,
            dst,
            trunk: trunk.clone(),
            parallel,
            targets_v4: (0..spec.targets).map(target_v4).collect(),
            targets_v6: (0..spec.targets).map(target_v6).collect(),
            silent: Vec::new(),
        };

        // Links in path order, so link numbers grow with distance from the source.
        let stages: Vec<NodeId> = std::iter::once(src)
            .chain(trunk.iter().copied())
            .chain(std::iter::once(dst))
            .collect();
        for pair in stages.windows(2) {
            let (u, v) = (pair[0], pair[1]);
            match plan.parallel.clone() {
                Some(p) if p.branch_router == u => {
                    for branch in &p.branches {
                        let mut prev = u;
                        for &x in branch {
                            plan.add_link(prev, x);
                            prev = x;
                        }
                        plan.add_link(prev, v);
                    }
                }
                _ => plan.add_link(u, v),
            }
        }

        for name in &spec.silent {
            match plan.find(name) {
                Some(id) if plan.nodes[id.0].role == Role::Router => plan.silent.push(id),
                _ => return Err(SpecError::UnknownSilentRouter(name.clone())),
            }
        }
        Ok(plan)
    }

    fn add_link(&mut self, up: NodeId, down: NodeId) {
        let index = self.links.len();
        let end = |node: NodeId, peer: NodeId, host: u8| LinkEnd {
            node,
            ifname: format!("to-{}", self.nodes[peer.0].name),
            v4: link_v4(index, host),
            v6: link_v6(index, u16::from(host)),
        };
        let link = Link {
            index,
            up: end(up, down, 1),
            down: end(down, up, 2),
        };
        self.links.push(link);
    }

    /// The node called `name`.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name).map(NodeId)
    }

    /// The node with id `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// Links touching `node`.
    pub fn links_of(&self, node: NodeId) -> impl Iterator<Item = &Link> {
        self.links
            .iter()
            .filter(move |l| l.up.node == node || l.down.node == node)
    }

    /// The link between `a` and `b`, if they are neighbours.
    pub fn link_between(&self, a: NodeId, b: NodeId) -> Option<&Link> {
        self.links
            .iter()
            .find(|l| (l.up.node == a && l.down.node == b) || (l.up.node == b && l.down.node == a))
    }

    /// Number of parallel branches (0 without a parallel section).
    pub fn branch_count(&self) -> usize {
        self.parallel.as_ref().map_or(0, |p| p.branches.len())
    }

    /// The routers a packet from `src` to `dst` crosses when it takes `branch` through
    /// the parallel section (ignored without one), in TTL order: element i answers
    /// TTL i+1.
    pub fn path_routers(&self, branch: usize) -> Vec<NodeId> {
        let mut path = Vec::new();
        for &r in &self.trunk {
            path.push(r);
            if let Some(p) = &self.parallel {
                if p.branch_router == r {
                    path.extend(p.branches[branch].iter().copied());
                }
            }
        }
        path
    }

    /// Checks `sel` against this plan.
    pub fn check_selection(&self, sel: PathSelect) -> bool {
        match sel {
            PathSelect::Ecmp => self.branch_count() >= 2,
            PathSelect::Branch(n) => n < self.branch_count().max(1),
        }
    }

    /// Which node owns `addr` (an interface address or a target).
    pub fn owner_of(&self, addr: IpAddr) -> Option<NodeId> {
        if TARGETS_V4.contains(addr) || TARGETS_V6.contains(addr) {
            let is_target = match addr {
                IpAddr::V4(a) => self.targets_v4.contains(&a),
                IpAddr::V6(a) => self.targets_v6.contains(&a),
            };
            return is_target.then_some(self.dst);
        }
        self.links
            .iter()
            .flat_map(|l| [&l.up, &l.down])
            .find_map(|e| (IpAddr::V4(e.v4) == addr || IpAddr::V6(e.v6) == addr).then_some(e.node))
    }
}

fn validate(spec: &LabSpec) -> Result<(), SpecError> {
    if spec.routers == 0 {
        return Err(SpecError::NoRouters);
    }
    if spec.targets > MAX_TARGETS {
        return Err(SpecError::TooManyTargets {
            requested: spec.targets,
            max: MAX_TARGETS,
        });
    }
    let mut links = spec.routers + 1;
    let mut branches = 0;
    if let Some(p) = &spec.parallel {
        if p.after == 0 || p.after >= spec.routers {
            return Err(SpecError::ParallelOutOfRange {
                after: p.after,
                routers: spec.routers,
            });
        }
        if p.branches.len() < 2 {
            return Err(SpecError::TooFewBranches(p.branches.len()));
        }
        if p.branches.len() > 26 {
            return Err(SpecError::TooManyBranches(p.branches.len()));
        }
        if let Some(i) = p.branches.iter().position(|&n| n == 0) {
            return Err(SpecError::EmptyBranch(i));
        }
        links += p.branches.iter().map(|n| n + 1).sum::<usize>() - 1;
        branches = p.branches.len();
    }
    if links > MAX_LINKS {
        return Err(SpecError::TooManyLinks(links));
    }
    let ok = match spec.path {
        PathSelect::Branch(n) => n < branches.max(1),
        PathSelect::Ecmp => branches >= 2,
    };
    if !ok {
        let branch = match spec.path {
            PathSelect::Branch(n) => n,
            PathSelect::Ecmp => 0,
        };
        return Err(SpecError::NoSuchBranch { branch, branches });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_numbers_links_in_path_order() {
        let plan = Plan::new(&LabSpec::chain(2).targets(300), "hwT").unwrap();
        let names: Vec<_> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["src", "r1", "r2", "dst"]);
        assert_eq!(plan.links.len(), 3);
        let l0 = &plan.links[0];
        assert_eq!(plan.node(l0.up.node).name, "src");
        assert_eq!(l0.up.v4, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(l0.down.v6, "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(l0.down.ifname, "to-src");
        assert_eq!(plan.links[2].up.ifname, "to-dst");
        assert_eq!(plan.nodes[1].ns, "hwT-r1");
        assert_eq!(plan.targets_v4[0], Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(plan.targets_v4[254], Ipv4Addr::new(198, 19, 1, 1));
        assert_eq!(
            plan.targets_v6[254],
            "2001:db8:1::1:1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            plan.owner_of(IpAddr::V4(plan.targets_v4[299])),
            Some(plan.dst)
        );
        assert_eq!(plan.owner_of("198.19.200.1".parse().unwrap()), None);
    }

    #[test]
    fn parallel_branches_sit_between_branch_and_merge_router() {
        let plan = Plan::new(&LabSpec::chain(3).parallel(1, &[1, 3]), "hwT").unwrap();
        let path = |b| -> Vec<String> {
            plan.path_routers(b)
                .iter()
                .map(|&n| plan.node(n).name.clone())
                .collect()
        };
        assert_eq!(path(0), ["r1", "a1", "r2", "r3"]);
        assert_eq!(path(1), ["r1", "b1", "b2", "b3", "r2", "r3"]);
        // src-r1, r1-a1, a1-r2, r1-b1, b1-b2, b2-b3, b3-r2, r2-r3, r3-dst
        assert_eq!(plan.links.len(), 9);
        let r2 = plan.find("r2").unwrap();
        assert_eq!(plan.links_of(r2).count(), 3);
    }

    #[test]
    fn bad_specs_are_rejected() {
        assert_eq!(
            Plan::new(&LabSpec::chain(0), "x").unwrap_err(),
            SpecError::NoRouters
        );
        assert!(matches!(
            Plan::new(&LabSpec::chain(2).parallel(2, &[1, 1]), "x"),
            Err(SpecError::ParallelOutOfRange { .. })
        ));
        assert!(matches!(
            Plan::new(&LabSpec::chain(2).parallel(1, &[1, 0]), "x"),
            Err(SpecError::EmptyBranch(1))
        ));
        assert!(matches!(
            Plan::new(&LabSpec::chain(2).ecmp(), "x"),
            Err(SpecError::NoSuchBranch { .. })
        ));
        assert!(matches!(
            Plan::new(&LabSpec::chain(2).silent("dst"), "x"),
            Err(SpecError::UnknownSilentRouter(_))
        ));
        assert!(matches!(
            Plan::new(&LabSpec::chain(300), "x"),
            Err(SpecError::TooManyLinks(301))
        ));
    }

    #[test]
    fn prefixes_contain_their_addresses() {
        assert!(LAB_V4.contains("198.19.3.4".parse().unwrap()));
        assert!(!LAB_V4.contains("198.20.0.1".parse().unwrap()));
        assert!(TARGETS_V6.contains("2001:db8:1::5:6".parse().unwrap()));
        assert!(!TARGETS_V6.contains("2001:db8:2::1".parse().unwrap()));
        assert!(!TARGETS_V6.contains("198.19.0.1".parse().unwrap()));
    }
}

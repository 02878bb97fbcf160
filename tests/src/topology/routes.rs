//! The routes each node needs. Hosts get one summary route per family towards their
//! only neighbour. Routers get a route per prefix along shortest paths, except where
//! a path through the parallel section is chosen by policy: at the branching router
//! (forward, per [`PathSelect`]) and at the merging router (return traffic).

use std::{collections::VecDeque, net::IpAddr};

use super::{
    plan::{NodeId, Parallel, Plan, Prefix, Role, LAB_V4, LAB_V6, TARGETS_V4, TARGETS_V6},
    spec::PathSelect,
};

/// One gateway of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// The neighbour's address on the shared link.
    pub via: IpAddr,
    /// The local interface towards it.
    pub dev: String,
}

/// A route: one next hop, or several (a multipath route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub prefix: Prefix,
    /// Gateways; more than one makes an ECMP route.
    pub nexthops: Vec<NextHop>,
}

impl Route {
    /// The `ip -batch` line that installs (or replaces) this route.
    pub fn replace_line(&self) -> String {
        // `ip` infers the family from the prefix (`-6` is not valid inside a batch).
        let mut line = format!("route replace {}", self.prefix);
        if let [hop] = self.nexthops.as_slice() {
            line.push_str(&format!(" via {} dev {}", hop.via, hop.dev));
        } else {
            for hop in &self.nexthops {
                line.push_str(&format!(" nexthop via {} dev {}", hop.via, hop.dev));
            }
        }
        line
    }
}

/// A destination group: the IPv4 and IPv6 prefix of one link (or the targets) and the
/// nodes they are directly attached to.
struct Destination {
    v4: Prefix,
    v6: Prefix,
    attached: Vec<NodeId>,
}

fn destinations(plan: &Plan) -> Vec<Destination> {
    let mut out: Vec<Destination> = plan
        .links
        .iter()
        .map(|l| Destination {
            v4: l.v4_prefix(),
            v6: l.v6_prefix(),
            attached: vec![l.up.node, l.down.node],
        })
        .collect();
    out.push(Destination {
        v4: TARGETS_V4,
        v6: TARGETS_V6,
        attached: vec![plan.dst],
    });
    out
}

/// Hop counts between every pair of nodes (the lab is tiny, so BFS from each node).
fn distances(plan: &Plan) -> Vec<Vec<usize>> {
    let n = plan.nodes.len();
    (0..n)
        .map(|start| {
            let mut dist = vec![usize::MAX; n];
            dist[start] = 0;
            let mut queue = VecDeque::from([NodeId(start)]);
            while let Some(u) = queue.pop_front() {
                for link in plan.links_of(u) {
                    let v = link.peer_of(u).expect("link touches u").node;
                    if dist[v.0] == usize::MAX {
                        dist[v.0] = dist[u.0] + 1;
                        queue.push_back(v);
                    }
                }
            }
            dist
        })
        .collect()
}

/// Where a destination lies relative to the parallel section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// On the source side of it (the branching router and everything before).
    Before,
    /// On the destination side of it (the merging router and everything after).
    After,
    /// Attached to a branch router: reached through that branch.
    InBranch,
}

fn side(p: &Parallel, plan: &Plan, dist: &[Vec<usize>], attached: &[NodeId]) -> Side {
    if attached
        .iter()
        .any(|n| p.branches.iter().any(|b| b.contains(n)))
    {
        return Side::InBranch;
    }
    // Without the branches, the trunk is a line: a node is before the section if it
    // is not farther from the source than the branching router.
    let from_src = |n: NodeId| dist[plan.src.0][n.0];
    if attached
        .iter()
        .all(|&n| from_src(n) <= from_src(p.branch_router))
    {
        Side::Before
    } else {
        Side::After
    }
}

/// The neighbours `node` forwards to for a destination attached to `attached`, after
/// the path policy. Empty when `node` is itself attached (a connected route).
///
/// Shortest paths alone would let a router inside a branch send traffic back to the
/// branching router (both ways around the section can be equally long), which loops
/// once the branching router is told to use that branch. So traffic crossing the
/// section follows its branch: forward inside it, and the branching and merging
/// routers pick the branch by policy. Everything else follows shortest paths, whose
/// next hops always get closer, so no route can loop.
fn next_nodes(
    plan: &Plan,
    dist: &[Vec<usize>],
    node: NodeId,
    attached: &[NodeId],
    sel: PathSelect,
) -> Vec<NodeId> {
    if attached.contains(&node) {
        return Vec::new();
    }
    if let Some(p) = &plan.parallel {
        let side = side(p, plan, dist, attached);
        let chosen = |sel: PathSelect, all_for_ecmp: bool| -> Vec<usize> {
            match sel {
                PathSelect::Branch(i) => vec![i],
                PathSelect::Ecmp if all_for_ecmp => (0..p.branches.len()).collect(),
                // Return traffic stays on branch 0 under ECMP, so a flow's RTT depends
                // only on the branch its probes hash to.
                PathSelect::Ecmp => vec![0],
            }
        };
        if node == p.branch_router && side == Side::After {
            return chosen(sel, true)
                .into_iter()
                .map(|i| p.branches[i][0])
                .collect();
        }
        if node == p.merge_router && side == Side::Before {
            return chosen(sel, false)
                .into_iter()
                .map(|i| *p.branches[i].last().expect("branches are not empty"))
                .collect();
        }
        for branch in &p.branches {
            if let Some(i) = branch.iter().position(|&n| n == node) {
                match side {
                    Side::After => {
                        return vec![branch.get(i + 1).copied().unwrap_or(p.merge_router)]
                    }
                    Side::Before => {
                        return vec![if i == 0 {
                            p.branch_router
                        } else {
                            branch[i - 1]
                        }]
                    }
                    Side::InBranch => {}
                }
            }
        }
    }
    let to_dest = |from: NodeId| {
        attached
            .iter()
            .map(|a| dist[from.0][a.0])
            .min()
            .unwrap_or(usize::MAX)
    };
    let here = to_dest(node);
    plan.links_of(node)
        .map(|l| l.peer_of(node).expect("link touches node").node)
        .filter(|&nb| to_dest(nb).saturating_add(1) == here)
        .collect()
}

/// Every route `node` needs under path selection `sel` (both families).
pub fn for_node(plan: &Plan, node: NodeId, sel: PathSelect) -> Vec<Route> {
    let hop = |to: NodeId, v6: bool| -> NextHop {
        let link = plan
            .link_between(node, to)
            .expect("next node is a neighbour");
        let peer = link.peer_of(node).expect("link touches node");
        let mine = link.end_on(node).expect("link touches node");
        NextHop {
            via: if v6 { peer.v6.into() } else { peer.v4.into() },
            dev: mine.ifname.clone(),
        }
    };
    if plan.node(node).role != Role::Router {
        // A host has one link; everything in the lab plan is behind its neighbour.
        let link = plan.links_of(node).next().expect("hosts have a link");
        let nb = link.peer_of(node).expect("link touches node").node;
        return vec![
            Route {
                prefix: LAB_V4,
                nexthops: vec![hop(nb, false)],
            },
            Route {
                prefix: LAB_V6,
                nexthops: vec![hop(nb, true)],
            },
        ];
    }
    let dist = distances(plan);
    let mut routes = Vec::new();
    for dest in destinations(plan) {
        let next = next_nodes(plan, &dist, node, &dest.attached, sel);
        if next.is_empty() {
            continue;
        }
        for (prefix, v6) in [(dest.v4, false), (dest.v6, true)] {
            routes.push(Route {
                prefix,
                nexthops: next.iter().map(|&nb| hop(nb, v6)).collect(),
            });
        }
    }
    routes
}

/// The routers whose routes depend on the path selection.
pub fn policy_routers(plan: &Plan) -> Vec<NodeId> {
    plan.parallel
        .iter()
        .flat_map(|p| [p.branch_router, p.merge_router])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::spec::LabSpec;

    fn names(plan: &Plan, route: &Route) -> Vec<String> {
        route
            .nexthops
            .iter()
            .map(|h| h.dev.trim_start_matches("to-").to_owned())
            .map(|n| plan.node(plan.find(&n).unwrap()).name.clone())
            .collect()
    }

    fn route_to(routes: &[Route], prefix: Prefix) -> &Route {
        routes.iter().find(|r| r.prefix == prefix).unwrap()
    }

    #[test]
    fn chain_routes_point_both_ways() {
        let plan = Plan::new(&LabSpec::chain(3), "t").unwrap();
        let r2 = plan.find("r2").unwrap();
        let routes = for_node(&plan, r2, PathSelect::default());
        assert_eq!(names(&plan, route_to(&routes, TARGETS_V4)), ["r3"]);
        assert_eq!(
            names(&plan, route_to(&routes, plan.links[0].v6_prefix())),
            ["r1"]
        );
        // Connected: link 1 (r1-r2) and link 2 (r2-r3) get no route.
        assert!(routes.iter().all(|r| r.prefix != plan.links[1].v4_prefix()));
        assert_eq!(routes.len(), 2 * 3);
        let src_routes = for_node(&plan, plan.src, PathSelect::default());
        assert_eq!(
            src_routes[0].replace_line(),
            "route replace 198.18.0.0/15 via 198.18.0.2 dev to-r1"
        );
    }

    #[test]
    fn selection_steers_branch_and_merge_routers() {
        let plan = Plan::new(&LabSpec::chain(3).parallel(1, &[1, 3]), "t").unwrap();
        let r1 = plan.find("r1").unwrap();
        let r2 = plan.find("r2").unwrap();
        let src_net = plan.links[0].v4_prefix();

        let fwd = for_node(&plan, r1, PathSelect::Branch(1));
        assert_eq!(names(&plan, route_to(&fwd, TARGETS_V4)), ["b1"]);
        let back = for_node(&plan, r2, PathSelect::Branch(1));
        assert_eq!(names(&plan, route_to(&back, src_net)), ["b3"]);

        let fwd = for_node(&plan, r1, PathSelect::Ecmp);
        let ecmp = route_to(&fwd, TARGETS_V6);
        assert_eq!(names(&plan, ecmp), ["a1", "b1"]);
        assert!(ecmp
            .replace_line()
            .starts_with("route replace 2001:db8:1::/48 nexthop via"));
        let back = for_node(&plan, r2, PathSelect::Ecmp);
        assert_eq!(names(&plan, route_to(&back, src_net)), ["a1"]);

        // Inside a branch, the branch is used whatever the selection.
        let b2_link = plan
            .link_between(plan.find("b1").unwrap(), plan.find("b2").unwrap())
            .unwrap();
        let fwd = for_node(&plan, r1, PathSelect::Branch(0));
        assert_eq!(names(&plan, route_to(&fwd, b2_link.v4_prefix())), ["b1"]);

        assert_eq!(policy_routers(&plan), [r1, r2]);
    }

    /// Follows every next hop of every route towards `prefix` depth-first, failing on
    /// a node seen twice on one walk.
    fn walk(
        plan: &Plan,
        tables: &[Vec<Route>],
        prefix: Prefix,
        attached: &[NodeId],
        seen: &mut Vec<NodeId>,
        sel: PathSelect,
    ) {
        let at = *seen.last().unwrap();
        if attached.contains(&at) {
            return;
        }
        let route = tables[at.0]
            .iter()
            .find(|r| r.prefix == prefix || r.prefix == LAB_V4)
            .unwrap_or_else(|| panic!("{sel}: no route to {prefix} at {at:?}"));
        for hop in &route.nexthops {
            let next = plan.owner_of(hop.via).unwrap();
            assert!(
                !seen.contains(&next),
                "{sel}: loop to {prefix}: {seen:?} -> {next:?}"
            );
            seen.push(next);
            walk(plan, tables, prefix, attached, seen, sel);
            seen.pop();
        }
    }

    /// Follows routes hop by hop from every node to every destination under every
    /// selection: each walk must arrive without revisiting a node.
    #[test]
    fn no_route_loops() {
        for spec in [
            LabSpec::chain(4).parallel(2, &[1, 3]),
            LabSpec::chain(3).parallel(1, &[2, 2, 1]),
            LabSpec::chain(2).parallel(1, &[3, 1]),
        ] {
            let plan = Plan::new(&spec, "t").unwrap();
            let sels = (0..plan.branch_count())
                .map(PathSelect::Branch)
                .chain([PathSelect::Ecmp]);
            for sel in sels {
                let tables: Vec<Vec<Route>> = (0..plan.nodes.len())
                    .map(|i| for_node(&plan, NodeId(i), sel))
                    .collect();
                let dests = plan
                    .links
                    .iter()
                    .map(|l| (l.v4_prefix(), vec![l.up.node, l.down.node]))
                    .chain([(TARGETS_V4, vec![plan.dst])]);
                for (prefix, attached) in dests {
                    for start in 0..plan.nodes.len() {
                        walk(
                            &plan,
                            &tables,
                            prefix,
                            &attached,
                            &mut vec![NodeId(start)],
                            sel,
                        );
                    }
                }
            }
        }
    }
}

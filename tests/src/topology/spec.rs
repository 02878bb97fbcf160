//! The lab description a test or the CLI writes, with a small builder.

use serde::{Deserialize, Serialize};

/// Which of the parallel branches carries traffic between the branching and the
/// merging router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathSelect {
    /// Only branch `n` (0-based: branch 0 is `a1..`, branch 1 is `b1..`), both ways.
    #[serde(rename = "branch")]
    Branch(usize),
    /// Forward traffic is spread over all branches by a multipath route hashed on
    /// L3+L4 (fib_multipath_hash_policy=1), so each flow keeps one branch. Return
    /// traffic from the merging router uses branch 0, so a flow's RTT depends only on
    /// its forward branch (see [`crate::Lab::hops_via`]).
    #[serde(rename = "ecmp")]
    Ecmp,
}

impl Default for PathSelect {
    /// Branch 0: deterministic unless a test asks for ECMP.
    fn default() -> Self {
        Self::Branch(0)
    }
}

impl std::fmt::Display for PathSelect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Branch(n) => write!(f, "branch {n}"),
            Self::Ecmp => f.write_str("ecmp"),
        }
    }
}

/// Two or more parallel paths between trunk router `r{after}` (which branches) and
/// `r{after+1}` (which merges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParallelSpec {
    /// The branching trunk router's number (1-based, `1 <= after < routers`).
    pub after: usize,
    /// Routers in each branch; branch 0 is named `a1, a2, ..`, branch 1 `b1, ..`.
    pub branches: Vec<usize>,
}

/// A lab topology: `src` - `r1` - ... - `rN` - `dst`, optionally with parallel
/// branches between two trunk routers, and `targets` addresses on `dst`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabSpec {
    /// Trunk routers `r1..rN` (the branch routers come on top).
    pub routers: usize,
    /// Target addresses per family on the destination host.
    pub targets: usize,
    /// Optional parallel section.
    pub parallel: Option<ParallelSpec>,
    /// The initial path through the parallel section.
    pub path: PathSelect,
    /// Routers that never send time-exceeded (for the lab's whole life).
    pub silent: Vec<String>,
}

impl LabSpec {
    /// A plain chain of `routers` routers with 16 targets.
    pub fn chain(routers: usize) -> Self {
        Self {
            routers,
            targets: 16,
            parallel: None,
            path: PathSelect::default(),
            silent: Vec::new(),
        }
    }

    /// Sets the number of target addresses (per family) on the destination host.
    #[must_use]
    pub fn targets(mut self, n: usize) -> Self {
        self.targets = n;
        self
    }

    /// Adds parallel branches after trunk router `r{after}`, merging at `r{after+1}`;
    /// `branches[i]` is the number of routers in branch i.
    #[must_use]
    pub fn parallel(mut self, after: usize, branches: &[usize]) -> Self {
        self.parallel = Some(ParallelSpec {
            after,
            branches: branches.to_vec(),
        });
        self
    }

    /// Starts with ECMP over all branches.
    #[must_use]
    pub fn ecmp(mut self) -> Self {
        self.path = PathSelect::Ecmp;
        self
    }

    /// Starts with only branch `n` in use.
    #[must_use]
    pub fn branch(mut self, n: usize) -> Self {
        self.path = PathSelect::Branch(n);
        self
    }

    /// Makes router `name` (e.g. "r2", "a1") silent: it forwards but never sends
    /// time-exceeded.
    #[must_use]
    pub fn silent(mut self, name: &str) -> Self {
        self.silent.push(name.to_owned());
        self
    }

    /// Builds the lab (needs root). Shorthand for [`crate::Lab::build`].
    pub fn build(self) -> crate::Result<crate::Lab> {
        crate::Lab::build(self)
    }
}

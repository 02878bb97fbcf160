//! The lab's error type. Every variant says what was being done and where (the command
//! line, the namespace, the file), because a failing lab is usually a machine problem
//! that a person has to diagnose from the test output alone.

use std::{io, path::PathBuf, process::ExitStatus};

/// Errors from building, changing or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The process lacks the capabilities to create namespaces and configure networking.
    #[error(
        "the network lab needs root: this process lacks {missing} (needed to create network \
         namespaces, veth links and firewall rules). Run the tests as root, e.g. \
         `sudo -E cargo test -p hopwatch-tests`"
    )]
    NotPrivileged {
        /// The missing capabilities, e.g. "CAP_NET_ADMIN, CAP_SYS_ADMIN".
        missing: String,
    },

    /// A tool the lab drives (ip, iptables, ping) is not installed.
    #[error("`{tool}` is not installed or not on PATH ({source}); deploy/setup.sh installs the lab's tools (deploy/setup-test.sh the test-only ones)")]
    ToolMissing {
        /// The program name.
        tool: String,
        /// The spawn error.
        source: io::Error,
    },

    /// A command could not be started at all.
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The full command line.
        command: String,
        /// The spawn error.
        source: io::Error,
    },

    /// A command ran and failed.
    #[error("`{command}` failed ({status}){}: {stderr}", ns_suffix(.ns.as_deref()))]
    CommandFailed {
        /// The full command line (with its standard input, for batch commands).
        command: String,
        /// The namespace it acted on, if any.
        ns: Option<String>,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on standard error.
        stderr: String,
    },

    /// `setns` into a namespace failed (usually: the namespace does not exist).
    #[error("could not enter network namespace {ns}: {source}")]
    EnterNamespace {
        /// The namespace name.
        ns: String,
        /// The underlying error.
        source: io::Error,
    },

    /// Reading or writing a sysctl inside a namespace failed.
    #[error("sysctl {key}{} in namespace {ns}: {source}", value_suffix(.value.as_deref()))]
    Sysctl {
        /// The namespace.
        ns: String,
        /// The dotted key, e.g. `net.ipv4.ip_forward`.
        key: String,
        /// The value being written (None for a read).
        value: Option<String>,
        /// The underlying error.
        source: io::Error,
    },

    /// The lab description asks for something the lab cannot build.
    #[error("invalid lab spec: {0}")]
    Spec(#[from] SpecError),

    /// A node name that the lab does not have.
    #[error("lab {lab} has no node `{name}` (it has: {known})")]
    UnknownNode {
        /// The lab id.
        lab: String,
        /// The name asked for.
        name: String,
        /// The names it has, comma separated.
        known: String,
    },

    /// Two nodes that are not neighbours.
    #[error("lab {lab} has no link from {from} to {to}")]
    NoSuchLink {
        /// The lab id.
        lab: String,
        /// Sending side.
        from: String,
        /// Receiving side.
        to: String,
    },

    /// A router-only operation named a host.
    #[error("{name} in lab {lab} is a host, not a router")]
    NotARouter {
        /// The lab id.
        lab: String,
        /// The node name.
        name: String,
    },

    /// A path selection for a lab without parallel paths, or a branch it does not have.
    #[error("lab {lab} cannot select {selection}: it has {branches} parallel branch(es)")]
    NoSuchPath {
        /// The lab id.
        lab: String,
        /// The selection asked for.
        selection: String,
        /// How many branches the lab has (0: no parallel section).
        branches: usize,
    },

    /// Interfaces that did not become ready (carrier up, IPv6 link-local address
    /// configured) in time after the lab was built.
    #[error("interfaces {interfaces} in namespace {ns} were not ready after {waited:?}")]
    NotReady {
        /// The namespace.
        ns: String,
        /// The interfaces still not ready, comma separated.
        interfaces: String,
        /// How long the lab waited.
        waited: std::time::Duration,
    },

    /// A loss percentage outside 0..=100.
    #[error("loss must be between 0 and 100 percent, got {percent}")]
    InvalidPercent {
        /// The value given.
        percent: f64,
    },

    /// The NFQUEUE delay element's netlink socket failed.
    #[error("NFQUEUE element in namespace {ns}, queue {queue}: {op}: {source}")]
    Nfqueue {
        /// The namespace.
        ns: String,
        /// The queue number.
        queue: u16,
        /// What it was doing ("open socket", "bind queue", "send verdicts", ...).
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },

    /// A thread the lab started (namespace thread, delay element) panicked.
    #[error("lab thread `{thread}` panicked")]
    ThreadPanicked {
        /// The thread's name.
        thread: String,
    },

    /// The CLI's lab state file could not be read or written.
    #[error("lab state file {}: {source}", .path.display())]
    StateIo {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The CLI's lab state file is not what this version writes.
    #[error("lab state file {} is not valid: {source}", .path.display())]
    StateFormat {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },

    /// A tool printed something the lab could not parse.
    #[error("could not understand the output of `{command}`: {detail}")]
    UnexpectedOutput {
        /// The command line.
        command: String,
        /// What was wrong.
        detail: String,
    },
}

/// Why a lab spec was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A chain needs at least one router.
    #[error("a lab needs at least one router")]
    NoRouters,
    /// The parallel section must start after an existing router and merge before the
    /// destination, so `after` must be in 1..routers.
    #[error("parallel section after router {after} needs a merging router after it, but the chain has {routers} router(s) (use 1 <= after < routers)")]
    ParallelOutOfRange {
        /// The branching router index asked for.
        after: usize,
        /// Routers in the chain.
        routers: usize,
    },
    /// Parallel paths need two or more branches.
    #[error("a parallel section needs at least 2 branches, got {0}")]
    TooFewBranches(usize),
    /// Branch names are letters, so at most 26.
    #[error("at most 26 parallel branches, got {0}")]
    TooManyBranches(usize),
    /// Every branch has at least one router (so its path is observable).
    #[error("branch {0} has no routers; every branch needs at least one")]
    EmptyBranch(usize),
    /// Link subnets are 198.18.L.0/24 with L < 255.
    #[error("the topology needs {0} links; the address plan allows 255")]
    TooManyLinks(usize),
    /// Targets are numbered inside 198.19.0.0/16.
    #[error("{requested} targets requested; the address plan allows {max}")]
    TooManyTargets {
        /// Asked for.
        requested: usize,
        /// The limit.
        max: usize,
    },
    /// The initial path names a branch that does not exist.
    #[error("initial path selects branch {branch} but there are {branches} branch(es)")]
    NoSuchBranch {
        /// Asked for.
        branch: usize,
        /// Existing.
        branches: usize,
    },
    /// A silent router that is not in the topology.
    #[error("silent router `{0}` is not a router of this topology")]
    UnknownSilentRouter(String),
}

fn ns_suffix(ns: Option<&str>) -> String {
    ns.map(|ns| format!(" in namespace {ns}"))
        .unwrap_or_default()
}

fn value_suffix(value: Option<&str>) -> String {
    value.map(|v| format!(" = {v}")).unwrap_or_default()
}

/// The lab's result type.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

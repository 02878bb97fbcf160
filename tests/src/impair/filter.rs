//! Firewall rule sets: each impairment that iptables can express owns one chain
//! (`HW-<KIND>-<n>`) plus the jumps into it, added and removed atomically per family
//! with `iptables-restore --noflush`, so removal never touches rules it did not add.

use crate::{
    error::Result,
    netns::exec::{self},
};

/// IPv4 or IPv6 half of a rule set.
#[derive(Debug, Clone, Default)]
pub(crate) struct FamilyRules {
    /// `(builtin chain, match arguments)`: where traffic jumps into the set's chain.
    pub hooks: Vec<(&'static str, String)>,
    /// Rules of the set's own chain, without `-A CHAIN`.
    pub rules: Vec<String>,
}

impl FamilyRules {
    /// One hook and the given rules.
    pub fn new(hook: &'static str, matches: impl Into<String>, rules: Vec<String>) -> Self {
        Self {
            hooks: vec![(hook, matches.into())],
            rules,
        }
    }
}

/// ICMPv6 types of neighbour discovery and multicast listener discovery: MLD query,
/// report, done (130-132), router and neighbour solicitation and advertisement
/// (133-136), MLDv2 report (143).
const NDP_AND_MLD: [u8; 8] = [130, 131, 132, 133, 134, 135, 136, 143];

/// The IPv4 and IPv6 halves of a packet impairment whose IPv6 half lets neighbour
/// discovery and MLD through untouched. ARP is not IP, so iptables never sees it;
/// sparing their IPv6 counterparts gives both families the same behaviour, and keeps
/// a "drop the next 5 packets" from hitting an MLD report instead of a probe.
pub(crate) fn packet_rules(
    hook: &'static str,
    matches: &str,
    rules: Vec<String>,
) -> (FamilyRules, FamilyRules) {
    let v4 = FamilyRules::new(hook, matches, rules.clone());
    let mut v6_rules: Vec<String> = NDP_AND_MLD
        .iter()
        .map(|t| format!("-p ipv6-icmp --icmpv6-type {t} -j RETURN"))
        .collect();
    v6_rules.extend(rules);
    (v4, FamilyRules::new(hook, matches, v6_rules))
}

/// A chain of rules in one table of one namespace, for both families.
#[derive(Debug, Clone)]
pub(crate) struct RuleSet {
    pub ns: String,
    pub table: &'static str,
    pub chain: String,
    pub v4: FamilyRules,
    pub v6: FamilyRules,
}

impl RuleSet {
    fn script(&self, rules: &FamilyRules, add: bool) -> String {
        let chain = &self.chain;
        let mut s = format!("*{}\n", self.table);
        if add {
            s.push_str(&format!(":{chain} - [0:0]\n"));
            for rule in &rules.rules {
                s.push_str(&format!("-A {chain} {rule}\n"));
            }
            for (hook, matches) in &rules.hooks {
                // Insert at the top: the newest impairment sees packets first.
                s.push_str(&format!("-I {hook} 1 {matches} -j {chain}\n"));
            }
        } else {
            for (hook, matches) in &rules.hooks {
                s.push_str(&format!("-D {hook} {matches} -j {chain}\n"));
            }
            s.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
        s.push_str("COMMIT\n");
        s
    }

    fn restore(&self, v6: bool, add: bool) -> Result<()> {
        let rules = if v6 { &self.v6 } else { &self.v4 };
        if rules.hooks.is_empty() {
            return Ok(());
        }
        let tool = if v6 {
            "ip6tables-restore"
        } else {
            "iptables-restore"
        };
        let mut cmd = exec::command(&self.ns, tool);
        cmd.arg("--noflush");
        exec::run(cmd, Some(&self.ns), Some(&self.script(rules, add))).map(drop)
    }

    /// Adds the chain and its jumps for both families (all or nothing).
    pub fn apply(&self) -> Result<()> {
        self.restore(false, true)?;
        if let Err(e) = self.restore(true, true) {
            let _ = self.restore(false, false);
            return Err(e);
        }
        Ok(())
    }

    /// Removes the jumps and the chain for both families; reports the first failure
    /// after trying both.
    pub fn remove(&self) -> Result<()> {
        let v4 = self.restore(false, false);
        let v6 = self.restore(true, false);
        v4.and(v6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_add_and_remove_the_same_jump() {
        let set = RuleSet {
            ns: "x".into(),
            table: "mangle",
            chain: "HW-LOSS-1".into(),
            v4: FamilyRules::new(
                "POSTROUTING",
                "-o to-r2",
                vec!["-m statistic --mode random --probability 0.25 -j DROP".into()],
            ),
            v6: FamilyRules::default(),
        };
        assert_eq!(
            set.script(&set.v4, true),
            "*mangle\n:HW-LOSS-1 - [0:0]\n\
             -A HW-LOSS-1 -m statistic --mode random --probability 0.25 -j DROP\n\
             -I POSTROUTING 1 -o to-r2 -j HW-LOSS-1\nCOMMIT\n"
        );
        assert_eq!(
            set.script(&set.v4, false),
            "*mangle\n-D POSTROUTING -o to-r2 -j HW-LOSS-1\n-F HW-LOSS-1\n-X HW-LOSS-1\nCOMMIT\n"
        );
    }
}

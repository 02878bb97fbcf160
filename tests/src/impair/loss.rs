//! Packet loss with iptables in the mangle table: random loss with the `statistic`
//! match, blackouts (drop everything) for as long as the guard lives or for a set time.

use std::{sync::mpsc, time::Duration};

use super::{filter::RuleSet, At, Impairment, Undo};
use crate::{
    error::{LabError, Result},
    Lab,
};

impl Lab {
    fn drop_rules(&self, at: &At, kind: &str, rule: String) -> Result<RuleSet> {
        let site = self.site(at)?;
        let (v4, v6) = site.packet_rules(vec![rule]);
        Ok(RuleSet {
            ns: site.ns,
            table: "mangle",
            chain: self.chain_name(kind),
            v4,
            v6,
        })
    }

    /// Drops `percent` % of packets at `at`, independently at random, both families.
    pub fn loss(&self, at: At, percent: f64) -> Result<Impairment<'_>> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(LabError::InvalidPercent { percent });
        }
        let rule = format!(
            "-m statistic --mode random --probability {:.6} -j DROP",
            percent / 100.0
        );
        let rules = self.drop_rules(&at, "LOSS", rule)?;
        rules.apply()?;
        Ok(Impairment::new(
            self,
            format!("loss {percent}% on {at}"),
            Undo::Rules(rules),
        ))
    }

    /// Drops every packet at `at` until the guard is dropped.
    pub fn blackout(&self, at: At) -> Result<Impairment<'_>> {
        let rules = self.drop_rules(&at, "BLACKOUT", "-j DROP".to_owned())?;
        rules.apply()?;
        Ok(Impairment::new(
            self,
            format!("blackout on {at}"),
            Undo::Rules(rules),
        ))
    }

    /// Drops every packet at `at` for `duration`, then lifts itself (or earlier, when
    /// the guard is dropped). Returns once the blackout is in force.
    pub fn blackout_for(&self, at: At, duration: Duration) -> Result<Impairment<'_>> {
        let rules = self.drop_rules(&at, "BLACKOUT", "-j DROP".to_owned())?;
        rules.apply()?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("blackout-{}", rules.chain))
            .spawn({
                let rules = rules.clone();
                move || {
                    // Either the time is up or the guard asked to stop early (or
                    // went away); all of them end the blackout.
                    let _ = stopped.recv_timeout(duration);
                    rules.remove()
                }
            });
        let thread = match thread {
            Ok(t) => t,
            Err(source) => {
                let _ = rules.remove();
                return Err(LabError::Spawn {
                    command: "blackout timer thread".into(),
                    source,
                });
            }
        };
        Ok(Impairment::new(
            self,
            format!("blackout for {duration:?} on {at}"),
            Undo::Timed { stop, thread },
        ))
    }
}

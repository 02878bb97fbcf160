//! Delay, jitter and packet-count bursts: an NFQUEUE rule at the impairment's site
//! feeds a [`NfqElement`] running in that namespace.

use std::ops::Deref;

use super::{
    filter::{FamilyRules, RuleSet},
    nfq::{DelaySpec, ElementStats, NfqElement},
    At,
};
use crate::{
    error::{LabError, Result},
    Lab,
};

/// A running delay element and the rule feeding it. Dropping it removes the rule
/// first, then releases everything still held and stops the element. It dereferences
/// to the element, so `set`, `drop_next` and `stats` work on it directly.
#[derive(Debug)]
#[must_use = "the delay is removed when this guard is dropped"]
pub struct Delay<'lab> {
    _lab: &'lab Lab,
    label: String,
    rules: Option<RuleSet>,
    element: Option<NfqElement>,
}

impl Delay<'_> {
    /// What this is, e.g. "delay 20ms ±5ms on link r1->r2".
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Removes the rule and stops the element, returning its final counters.
    pub fn remove(mut self) -> Result<ElementStats> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<ElementStats> {
        // Rule first: once it is gone no new packet is queued, so stopping the
        // element cannot strand one.
        let rules = self.rules.take().map_or(Ok(()), |r| r.remove());
        let stats = match self.element.take() {
            Some(element) => element.stop(),
            None => Ok(ElementStats::default()),
        };
        rules?;
        stats
    }
}

impl Deref for Delay<'_> {
    type Target = NfqElement;

    fn deref(&self) -> &NfqElement {
        self.element.as_ref().expect("element lives until teardown")
    }
}

impl Drop for Delay<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("hopwatch-lab: removing {}: {e}", self.label);
        }
    }
}

impl Lab {
    /// Starts an element on a queue number nobody in the namespace uses yet (another
    /// process, such as the CLI next to `hopwatch-lab up`, may hold some).
    fn start_on_free_queue(&self, ns: &str, spec: DelaySpec) -> Result<(u16, NfqElement)> {
        let mut attempt = 0;
        loop {
            let queue = self.next_queue();
            match NfqElement::start(ns, queue, spec) {
                Ok(element) => return Ok((queue, element)),
                // The kernel answers EPERM when another socket owns the queue.
                Err(LabError::Nfqueue { source, .. })
                    if attempt < 16
                        && matches!(source.raw_os_error(), Some(libc::EPERM | libc::EBUSY)) =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn start_element(
        &self,
        at: &At,
        spec: DelaySpec,
        drop_first: u64,
        label: String,
    ) -> Result<Delay<'_>> {
        let site = self.site(at)?;
        self.start_element_with(&site.ns, spec, drop_first, label, |queue| {
            site.packet_rules(vec![format!("-j NFQUEUE --queue-num {queue}")])
        })
    }

    /// Starts an element in `ns` and the rules `rules(queue)` feeding it.
    fn start_element_with(
        &self,
        ns: &str,
        spec: DelaySpec,
        drop_first: u64,
        label: String,
        rules: impl FnOnce(u16) -> (FamilyRules, FamilyRules),
    ) -> Result<Delay<'_>> {
        let (queue, element) = self.start_on_free_queue(ns, spec)?;
        // Armed before the rule exists, so the burst starts with the first packet.
        element.drop_next(drop_first);
        let (v4, v6) = rules(queue);
        let rules = RuleSet {
            ns: ns.to_owned(),
            table: "mangle",
            chain: self.chain_name("NFQ"),
            v4,
            v6,
        };
        rules.apply()?;
        Ok(Delay {
            _lab: self,
            label,
            rules: Some(rules),
            element: Some(element),
        })
    }

    /// Delays every packet at `at` by `spec` (both families) until the guard is
    /// dropped. The delay can be changed while traffic flows with [`NfqElement::set`].
    /// IPv6 neighbour discovery and MLD pass undelayed, as ARP does. The element's
    /// own error is in [`NfqElement::stats`]; on this kind of VM it releases packets
    /// about 0.1 ms after their deadline on average, and milliseconds late when the
    /// CPUs are busy, so tests judge measured delays against the hold times it
    /// actually applied (`hold_min`, `hold_mean`, `hold_max` there).
    pub fn delay(&self, at: At, spec: DelaySpec) -> Result<Delay<'_>> {
        let label = format!("delay {:?} ±{:?} on {at}", spec.delay, spec.jitter);
        self.start_element(&at, spec, 0, label)
    }

    /// Drops the next `packets` packets at `at` (consecutive losses), then passes
    /// traffic undelayed until the guard is dropped; more bursts can be triggered with
    /// [`NfqElement::drop_next`].
    pub fn drop_burst(&self, at: At, packets: u64) -> Result<Delay<'_>> {
        let label = format!("burst of {packets} drops on {at}");
        self.start_element(&at, DelaySpec::default(), packets, label)
    }

    /// Makes router `name` a slow responder until the guard is dropped: the
    /// time-exceeded messages it generates itself wait `spec` (both families),
    /// while the traffic it forwards passes undelayed, as on a router whose
    /// ICMP answers come from a slow control plane.
    pub fn delay_own_icmp_errors(&self, name: &str, spec: DelaySpec) -> Result<Delay<'_>> {
        let ns = self.node(name)?.ns.clone();
        let label = format!("time-exceeded from {name} delayed {:?}", spec.delay);
        self.start_element_with(&ns, spec, 0, label, |queue| {
            let rule = vec![format!("-j NFQUEUE --queue-num {queue}")];
            // mangle OUTPUT sees only what the router generates, never what it forwards.
            (
                FamilyRules::new("OUTPUT", "-p icmp --icmp-type time-exceeded", rule.clone()),
                FamilyRules::new("OUTPUT", "-p ipv6-icmp --icmpv6-type time-exceeded", rule),
            )
        })
    }
}

//! Middlebox detection from the header an ICMP error quotes: what the probe
//! looked like when it reached the responder, compared with what was sent
//! (tracebox, Detal et al., IMC 2013). A DSCP or ECN rewrite, a source address
//! that changed (NAT whose box does not translate the quote back), a TTL or a
//! length that is not what the probe carried show here. Also the reply's MPLS
//! label stack in a fixed-size form, so a round's samples stay `Copy`.
//!
//! What cannot show: Linux conntrack NAT (MASQUERADE, SNAT) translates the
//! header quoted inside related ICMP errors back to the original, checksums
//! included, so its quotes match what was sent (docs/api.md, "Path facts").
//! A rewritten source port or echo identifier cannot show either: it is part
//! of the probe's identity, so such a reply matches no probe.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::parse::{MplsLabel, QuotedHeader, ReplyKind, MPLS_CAPACITY};

/// An IP header field a middlebox may rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderField {
    /// The upper six bits of the IPv4 TOS / IPv6 traffic class.
    Dscp,
    /// The lower two bits: ECN.
    Ecn,
    /// The source address: NAT that leaves the quote as it rewrote it.
    SourceAddress,
    /// A time-exceeded quote whose TTL is above 1: something raised it on the way.
    Ttl,
    /// The IP packet's length.
    Length,
}

impl HeaderField {
    pub const ALL: [HeaderField; 5] = [
        HeaderField::Dscp,
        HeaderField::Ecn,
        HeaderField::SourceAddress,
        HeaderField::Ttl,
        HeaderField::Length,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            HeaderField::Dscp => "dscp",
            HeaderField::Ecn => "ecn",
            HeaderField::SourceAddress => "source_address",
            HeaderField::Ttl => "ttl",
            HeaderField::Length => "length",
        }
    }
}

impl fmt::Display for HeaderField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderField::Dscp => "DSCP",
            HeaderField::Ecn => "ECN",
            HeaderField::SourceAddress => "source address",
            HeaderField::Ttl => "TTL",
            HeaderField::Length => "length",
        })
    }
}

/// A header field's value: a number, or an address for the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    Number(u32),
    Address(IpAddr),
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Number(n) => n.fmt(f),
            FieldValue::Address(a) => a.fmt(f),
        }
    }
}

/// One field the quote shows changed: sent (or, for the TTL, expected) as
/// `from`, quoted as `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rewrite {
    pub field: HeaderField,
    pub from: FieldValue,
    pub to: FieldValue,
}

impl fmt::Display for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} → {}", self.field, self.from, self.to)
    }
}

/// The rewrites one quote shows, at most one per field, in [`HeaderField::ALL`] order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rewrites([Option<Rewrite>; HeaderField::ALL.len()]);

impl Rewrites {
    pub fn iter(&self) -> impl Iterator<Item = Rewrite> + '_ {
        self.0.iter().flatten().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    fn set(&mut self, rewrite: Rewrite) {
        let i = HeaderField::ALL
            .iter()
            .position(|f| *f == rewrite.field)
            .expect("every field is in ALL");
        self.0[i] = Some(rewrite);
    }
}

/// The header fields a probe left with; the kernel fills in the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentHeader {
    pub src: IpAddr,
    /// hopwatch sends with TOS / traffic class 0 (it sets no IP_TOS).
    pub tos: u8,
    pub ip_len: u16,
}

/// What the quote of a reply of `kind` shows rewritten, compared with `sent`.
pub fn compare(sent: &SentHeader, quoted: &QuotedHeader, kind: ReplyKind) -> Rewrites {
    let mut found = Rewrites::default();
    let number = |v: u8| FieldValue::Number(u32::from(v));
    let (dscp, ecn) = (|tos: u8| tos >> 2, |tos: u8| tos & 0x3);
    if dscp(sent.tos) != dscp(quoted.tos) {
        found.set(Rewrite {
            field: HeaderField::Dscp,
            from: number(dscp(sent.tos)),
            to: number(dscp(quoted.tos)),
        });
    }
    if ecn(sent.tos) != ecn(quoted.tos) {
        found.set(Rewrite {
            field: HeaderField::Ecn,
            from: number(ecn(sent.tos)),
            to: number(ecn(quoted.tos)),
        });
    }
    if sent.src != quoted.src {
        found.set(Rewrite {
            field: HeaderField::SourceAddress,
            from: FieldValue::Address(sent.src),
            to: FieldValue::Address(quoted.src),
        });
    }
    // A router quotes a probe whose TTL ran out there with 1 (Linux) or 0
    // (routers that decrement first). The destination's quote carries what
    // is left after the path, which depends on the hop count, so only the
    // time-exceeded quote has a known expectation.
    if kind == ReplyKind::TimeExceeded && quoted.ttl > 1 {
        found.set(Rewrite {
            field: HeaderField::Ttl,
            from: number(1),
            to: number(quoted.ttl),
        });
    }
    if sent.ip_len != quoted.ip_len {
        found.set(Rewrite {
            field: HeaderField::Length,
            from: FieldValue::Number(u32::from(sent.ip_len)),
            to: FieldValue::Number(u32::from(quoted.ip_len)),
        });
    }
    found
}

/// An RFC 4950 label stack, outermost first, in a fixed-size `Copy` form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LabelStack {
    len: u8,
    labels: [MplsLabel; MPLS_CAPACITY],
}

impl LabelStack {
    pub const EMPTY: LabelStack = LabelStack {
        len: 0,
        labels: [MplsLabel {
            label: 0,
            traffic_class: 0,
            bottom_of_stack: false,
            ttl: 0,
        }; MPLS_CAPACITY],
    };

    /// The first [`MPLS_CAPACITY`] labels of `labels` (the parser keeps no more).
    pub fn new(labels: &[MplsLabel]) -> LabelStack {
        let mut stack = LabelStack::EMPTY;
        for label in labels.iter().take(MPLS_CAPACITY) {
            stack.labels[usize::from(stack.len)] = *label;
            stack.len += 1;
        }
        stack
    }

    pub fn as_slice(&self) -> &[MplsLabel] {
        &self.labels[..usize::from(self.len)]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for LabelStack {
    fn default() -> Self {
        LabelStack::EMPTY
    }
}

impl fmt::Debug for LabelStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// What one ICMP error's quote and extensions said about the path up to its
/// responder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QuoteReading {
    pub rewrites: Rewrites,
    pub mpls: LabelStack,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> SentHeader {
        SentHeader {
            src: "192.0.2.1".parse().unwrap(),
            tos: 0,
            ip_len: 64,
        }
    }

    fn quoted() -> QuotedHeader {
        QuotedHeader {
            tos: 0,
            ttl: 1,
            ip_len: 64,
            src: "192.0.2.1".parse().unwrap(),
            src_port: 40001,
        }
    }

    #[test]
    fn an_untouched_quote_shows_nothing() {
        assert!(compare(&sent(), &quoted(), ReplyKind::TimeExceeded).is_empty());
        // Routers that decrement before they check quote TTL 0.
        let zero = QuotedHeader { ttl: 0, ..quoted() };
        assert!(compare(&sent(), &zero, ReplyKind::TimeExceeded).is_empty());
    }

    #[test]
    fn each_rewritten_field_is_named_with_what_was_sent_and_what_arrived() {
        let q = QuotedHeader {
            tos: (46 << 2) | 1,
            ttl: 7,
            ip_len: 68,
            src: "198.18.0.5".parse().unwrap(),
            ..quoted()
        };
        let found: Vec<Rewrite> = compare(&sent(), &q, ReplyKind::TimeExceeded)
            .iter()
            .collect();
        let n = FieldValue::Number;
        assert_eq!(
            found,
            vec![
                Rewrite {
                    field: HeaderField::Dscp,
                    from: n(0),
                    to: n(46)
                },
                Rewrite {
                    field: HeaderField::Ecn,
                    from: n(0),
                    to: n(1)
                },
                Rewrite {
                    field: HeaderField::SourceAddress,
                    from: FieldValue::Address(sent().src),
                    to: FieldValue::Address(q.src)
                },
                Rewrite {
                    field: HeaderField::Ttl,
                    from: n(1),
                    to: n(7)
                },
                Rewrite {
                    field: HeaderField::Length,
                    from: n(64),
                    to: n(68)
                },
            ]
        );
        assert_eq!(found[0].to_string(), "DSCP 0 → 46");
        // The destination's quote has no TTL expectation.
        let at_destination = compare(
            &sent(),
            &q,
            ReplyKind::DestinationUnreachable {
                code: 3,
                reached: true,
            },
        );
        assert!(at_destination.iter().all(|r| r.field != HeaderField::Ttl));
    }

    #[test]
    fn a_label_stack_keeps_its_labels_in_order() {
        let labels: Vec<MplsLabel> = (0..3)
            .map(|i| MplsLabel::from_entry((24000 + i) << 12 | u32::from(i == 2) << 8 | 1))
            .collect();
        let stack = LabelStack::new(&labels);
        assert_eq!(stack.as_slice(), &labels[..]);
        assert!(LabelStack::default().is_empty());
        assert_eq!(stack.as_slice()[2].to_string(), "Lbl 24002 TC 0 S 1 TTL 1");
    }
}

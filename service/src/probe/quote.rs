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

/// The rewrites one quote shows, at most one per field, each as (sent,
/// quoted). Kept compact (about 50 bytes) because every answered sample of a
/// round carries one; [`Rewrites::iter`] gives them as [`Rewrite`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rewrites {
    dscp: Option<[u8; 2]>,
    ecn: Option<[u8; 2]>,
    /// The quoted TTL; 1 is what a time-exceeded quote should carry.
    ttl: Option<u8>,
    length: Option<[u16; 2]>,
    source: Option<[IpAddr; 2]>,
}

impl Rewrites {
    /// In [`HeaderField::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = Rewrite> {
        let n = |v: u8| FieldValue::Number(u32::from(v));
        let rewrite = |field, from, to| Rewrite { field, from, to };
        [
            self.dscp
                .map(|[a, b]| rewrite(HeaderField::Dscp, n(a), n(b))),
            self.ecn.map(|[a, b]| rewrite(HeaderField::Ecn, n(a), n(b))),
            self.source.map(|[a, b]| {
                rewrite(
                    HeaderField::SourceAddress,
                    FieldValue::Address(a),
                    FieldValue::Address(b),
                )
            }),
            self.ttl.map(|t| rewrite(HeaderField::Ttl, n(1), n(t))),
            self.length.map(|[a, b]| {
                rewrite(
                    HeaderField::Length,
                    FieldValue::Number(u32::from(a)),
                    FieldValue::Number(u32::from(b)),
                )
            }),
        ]
        .into_iter()
        .flatten()
    }

    pub fn is_empty(&self) -> bool {
        *self == Rewrites::default()
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
    let changed = |a, b| (a != b).then_some([a, b]);
    let (dscp, ecn) = (|tos: u8| tos >> 2, |tos: u8| tos & 0x3);
    Rewrites {
        dscp: changed(dscp(sent.tos), dscp(quoted.tos)),
        ecn: changed(ecn(sent.tos), ecn(quoted.tos)),
        // A router quotes a probe whose TTL ran out there with 1 (Linux) or 0
        // (routers that decrement first). The destination's quote carries what
        // is left after the path, which depends on the hop count, so only the
        // time-exceeded quote has a known expectation.
        ttl: (kind == ReplyKind::TimeExceeded && quoted.ttl > 1).then_some(quoted.ttl),
        length: (sent.ip_len != quoted.ip_len).then_some([sent.ip_len, quoted.ip_len]),
        // An unspecified source (ICMPv4 may leave it to the kernel) has
        // nothing to compare with.
        source: (!sent.src.is_unspecified() && sent.src != quoted.src)
            .then_some([sent.src, quoted.src]),
    }
}

/// What one ICMP error says: its quote compared with `sent`, and its labels.
/// A router inside an MPLS tunnel quotes the IP TTL as the tunnel's ingress
/// left it (above 1: the "qTTL" of Donnet et al., IMC 2012), so with a label
/// stack a quoted TTL is the tunnel's, not a rewrite.
pub fn reading(
    sent: &SentHeader,
    quoted: &QuotedHeader,
    kind: ReplyKind,
    labels: &[MplsLabel],
) -> QuoteReading {
    let mut rewrites = compare(sent, quoted, kind);
    if !labels.is_empty() {
        rewrites.ttl = None;
    }
    QuoteReading {
        rewrites,
        mpls: LabelStack::new(labels),
    }
}

/// An RFC 4950 label stack, outermost first, in a fixed-size `Copy` form
/// (the entries as on the wire, 36 bytes).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LabelStack {
    len: u8,
    entries: [u32; MPLS_CAPACITY],
}

impl LabelStack {
    /// The first [`MPLS_CAPACITY`] labels of `labels` (the parser keeps no more).
    pub fn new(labels: &[MplsLabel]) -> LabelStack {
        let mut stack = LabelStack::default();
        for label in labels.iter().take(MPLS_CAPACITY) {
            stack.entries[usize::from(stack.len)] = label.to_entry();
            stack.len += 1;
        }
        stack
    }

    pub fn labels(&self) -> impl Iterator<Item = MplsLabel> + '_ {
        self.entries[..usize::from(self.len)]
            .iter()
            .map(|e| MplsLabel::from_entry(*e))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for LabelStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.labels()).finish()
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
        // A source the kernel chose is not a rewrite.
        let kernel_chose = SentHeader {
            src: "0.0.0.0".parse().unwrap(),
            ..sent()
        };
        assert!(compare(&kernel_chose, &quoted(), ReplyKind::TimeExceeded).is_empty());
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
    fn a_raised_ttl_under_a_label_stack_is_the_tunnel_not_a_rewrite() {
        let q = QuotedHeader { ttl: 9, ..quoted() };
        let label = [MplsLabel::from_entry(24001 << 12 | 0x100 | 1)];
        let tunnel = reading(&sent(), &q, ReplyKind::TimeExceeded, &label);
        assert!(tunnel.rewrites.is_empty());
        assert_eq!(tunnel.mpls.labels().collect::<Vec<_>>(), label);
        let plain = reading(&sent(), &q, ReplyKind::TimeExceeded, &[]);
        assert_eq!(
            plain.rewrites.iter().next().map(|r| r.field),
            Some(HeaderField::Ttl)
        );
    }

    /// Every answered sample carries a reading, so its size is a budget.
    #[test]
    fn a_reading_stays_small() {
        assert!(
            std::mem::size_of::<QuoteReading>() <= 96,
            "{}",
            std::mem::size_of::<QuoteReading>()
        );
    }

    #[test]
    fn a_label_stack_keeps_its_labels_in_order() {
        let labels: Vec<MplsLabel> = (0..3)
            .map(|i| MplsLabel::from_entry((24000 + i) << 12 | u32::from(i == 2) << 8 | 1))
            .collect();
        let stack = LabelStack::new(&labels);
        assert_eq!(stack.labels().collect::<Vec<_>>(), labels);
        assert!(LabelStack::default().is_empty());
        assert_eq!(
            stack.labels().nth(2).unwrap().to_string(),
            "Lbl 24002 TC 0 S 1 TTL 1"
        );
    }
}

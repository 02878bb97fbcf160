//! The reference clock of the accuracy benchmark: a tcpdump capture of the
//! prober's interface, read with `pcap-file` and parsed with `etherparse` (not
//! with hopwatch's own parser, so a parsing bug cannot hide itself), turned into
//! probes keyed by their identity on the wire, each with its send time and the
//! first reply that answers it.

use std::{
    collections::{BTreeSet, HashMap},
    fs::File,
    io::BufReader,
    net::IpAddr,
    path::Path,
};

use etherparse::{IpNumber, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use pcap_file::{pcap::PcapReader, DataLink};

use super::error::{BenchError, Result};

/// The part of a probe's identity carried by its transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// ICMP or ICMPv6 echo request: identifier and sequence.
    Icmp { id: u16, seq: u16 },
    /// UDP: ports and checksum (hopwatch steers the checksum per probe).
    Udp { sport: u16, dport: u16, csum: u16 },
    /// TCP SYN: ports and sequence number.
    Tcp { sport: u16, dport: u16, seq: u32 },
}

/// A probe's identity on the wire: where it went and its transport identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireKey {
    pub dst: IpAddr,
    pub transport: Transport,
}

/// One reply as the capture saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapturedReply {
    /// Capture timestamp, ns since the Unix epoch.
    pub at_ns: u64,
    pub responder: IpAddr,
}

/// One probe as the capture saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapturedProbe {
    pub key: WireKey,
    /// IPv4 TTL or IPv6 hop limit on the wire.
    pub ttl: u8,
    /// Capture timestamp, ns since the Unix epoch.
    pub sent_ns: u64,
    /// The first reply that answers it.
    pub reply: Option<CapturedReply>,
}

impl CapturedProbe {
    /// The RTT between the probe leaving and its reply arriving, by the capture's clock.
    pub fn rtt_ns(&self) -> Option<u64> {
        self.reply.map(|r| r.at_ns.saturating_sub(self.sent_ns))
    }
}

/// Every probe of a capture, and counts of what did not fit.
#[derive(Debug, Default)]
pub struct CaptureIndex {
    probes: HashMap<WireKey, CapturedProbe>,
    /// Keys sent more than once: ambiguous, so left out of `probes`.
    pub duplicate_keys: BTreeSet<WireKey>,
    /// Replies whose probe is not in the capture.
    pub orphan_replies: usize,
    /// Second and later replies to one probe.
    pub extra_replies: usize,
    /// Packets read in total.
    pub packets: usize,
}

impl CaptureIndex {
    /// Reads `path` (a pcap written by tcpdump on an Ethernet-like interface).
    /// `local` are the prober's own addresses: packets from them are probes,
    /// packets to them are replies.
    pub fn read(path: &Path, local: &[IpAddr]) -> Result<CaptureIndex> {
        let pcap_error = |source| BenchError::Pcap {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(|source| BenchError::File {
            what: "opening the capture",
            path: path.to_owned(),
            source,
        })?;
        let mut reader = PcapReader::new(BufReader::new(file)).map_err(pcap_error)?;
        let link = reader.header().datalink;
        if link != DataLink::ETHERNET {
            return Err(BenchError::LinkType {
                path: path.to_owned(),
                link: format!("{link:?}"),
            });
        }
        let mut packets = Vec::new();
        while let Some(packet) = reader.next_packet() {
            let packet = packet.map_err(pcap_error)?;
            packets.push((packet.timestamp.as_nanos() as u64, packet.data.into_owned()));
        }
        Ok(CaptureIndex::from_frames(
            packets.iter().map(|(ts, data)| (*ts, data.as_slice())),
            local,
        ))
    }

    /// Builds the index from Ethernet frames and their timestamps (ns), in capture order.
    pub fn from_frames<'a>(
        frames: impl IntoIterator<Item = (u64, &'a [u8])>,
        local: &[IpAddr],
    ) -> CaptureIndex {
        let mut index = CaptureIndex::default();
        let mut replies = Vec::new();
        for (at_ns, frame) in frames {
            index.packets += 1;
            match classify(frame, local) {
                Some(Packet::Probe { key, ttl }) => {
                    if index.duplicate_keys.contains(&key) {
                        continue;
                    }
                    let probe = CapturedProbe {
                        key,
                        ttl,
                        sent_ns: at_ns,
                        reply: None,
                    };
                    if index.probes.insert(key, probe).is_some() {
                        index.probes.remove(&key);
                        index.duplicate_keys.insert(key);
                    }
                }
                Some(Packet::Reply { key, responder }) => replies.push((key, at_ns, responder)),
                None => {}
            }
        }
        // Replies are matched after every probe is known, so a probe seen after
        // its reply (impossible on one interface, but cheap to rule out) is still
        // matched, and by the earliest reply.
        for (key, at_ns, responder) in replies {
            match index.probes.get_mut(&key) {
                Some(probe) if probe.reply.is_none() && at_ns >= probe.sent_ns => {
                    probe.reply = Some(CapturedReply { at_ns, responder });
                }
                Some(_) => index.extra_replies += 1,
                None => index.orphan_replies += 1,
            }
        }
        index
    }

    /// The probe with this identity, unless it was ambiguous.
    pub fn get(&self, key: &WireKey) -> Option<&CapturedProbe> {
        self.probes.get(key)
    }

    /// Every unambiguous probe.
    pub fn probes(&self) -> impl Iterator<Item = &CapturedProbe> {
        self.probes.values()
    }

    /// Number of unambiguous probes.
    pub fn len(&self) -> usize {
        self.probes.len()
    }

    /// True when no probe was captured.
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// The ICMP echo identifiers the captured probes used (one per mtr process).
    pub fn icmp_ids(&self) -> BTreeSet<u16> {
        self.probes
            .keys()
            .filter_map(|k| match k.transport {
                Transport::Icmp { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }
}

enum Packet {
    Probe { key: WireKey, ttl: u8 },
    Reply { key: WireKey, responder: IpAddr },
}

/// Addresses, TTL and transport of an IP packet.
struct Ip<'a> {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    proto: IpNumber,
    payload: &'a [u8],
}

fn ip_of<'a>(net: &LaxNetSlice<'a>) -> Option<Ip<'a>> {
    match net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            Some(Ip {
                src: h.source_addr().into(),
                dst: h.destination_addr().into(),
                ttl: h.ttl(),
                proto: v4.payload().ip_number,
                payload: v4.payload().payload,
            })
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            Some(Ip {
                src: h.source_addr().into(),
                dst: h.destination_addr().into(),
                ttl: h.hop_limit(),
                proto: v6.payload().ip_number,
                payload: v6.payload().payload,
            })
        }
        LaxNetSlice::Arp(_) => None,
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The probe identity from the first 8 bytes of a transport header, which is
/// all an ICMP error is guaranteed to quote. `None` for packets that are not
/// probes (echo replies, other ICMP).
fn probe_transport(proto: IpNumber, t: &[u8]) -> Option<Transport> {
    match proto {
        IpNumber::ICMP | IpNumber::IPV6_ICMP => {
            let request = if proto == IpNumber::ICMP { 8 } else { 128 };
            (*t.first()? == request).then_some(Transport::Icmp {
                id: be16(t, 4)?,
                seq: be16(t, 6)?,
            })
        }
        IpNumber::UDP => Some(Transport::Udp {
            sport: be16(t, 0)?,
            dport: be16(t, 2)?,
            csum: be16(t, 6)?,
        }),
        IpNumber::TCP => Some(Transport::Tcp {
            sport: be16(t, 0)?,
            dport: be16(t, 2)?,
            seq: be32(t, 4)?,
        }),
        _ => None,
    }
}

fn classify(frame: &[u8], local: &[IpAddr]) -> Option<Packet> {
    let sliced = LaxSlicedPacket::from_ethernet(frame).ok()?;
    let ip = ip_of(sliced.net.as_ref()?)?;
    if local.contains(&ip.src) {
        // A probe: ICMP echo request, UDP, or a TCP SYN (not the RST the
        // kernel sends when a SYN-ACK answers a raw-socket SYN).
        if let Some(TransportSlice::Tcp(tcp)) = &sliced.transport {
            if !tcp.syn() || tcp.ack() {
                return None;
            }
        }
        let transport = probe_transport(ip.proto, ip.payload)?;
        return Some(Packet::Probe {
            key: WireKey {
                dst: ip.dst,
                transport,
            },
            ttl: ip.ttl,
        });
    }
    if !local.contains(&ip.dst) {
        return None;
    }
    let responder = ip.src;
    let key = match sliced.transport.as_ref()? {
        TransportSlice::Icmpv4(icmp) => icmp_reply_key(
            icmp.type_u8(),
            icmp.bytes5to8(),
            icmp.payload(),
            responder,
            [0, 11, 3],
        )?,
        TransportSlice::Icmpv6(icmp) => icmp_reply_key(
            icmp.type_u8(),
            icmp.bytes5to8(),
            icmp.payload(),
            responder,
            [129, 3, 1],
        )?,
        TransportSlice::Tcp(tcp) if tcp.rst() || (tcp.syn() && tcp.ack()) => WireKey {
            dst: responder,
            transport: Transport::Tcp {
                sport: tcp.destination_port(),
                dport: tcp.source_port(),
                seq: tcp.acknowledgment_number().wrapping_sub(1),
            },
        },
        _ => return None,
    };
    Some(Packet::Reply { key, responder })
}

/// The probe an ICMP reply answers. `types` are the echo-reply,
/// time-exceeded and destination-unreachable type numbers of the ICMP version.
fn icmp_reply_key(
    icmp_type: u8,
    bytes5to8: [u8; 4],
    payload: &[u8],
    responder: IpAddr,
    [echo_reply, time_exceeded, unreachable]: [u8; 3],
) -> Option<WireKey> {
    if icmp_type == echo_reply {
        return Some(WireKey {
            dst: responder,
            transport: Transport::Icmp {
                id: be16(&bytes5to8, 0)?,
                seq: be16(&bytes5to8, 2)?,
            },
        });
    }
    if icmp_type != time_exceeded && icmp_type != unreachable {
        return None;
    }
    // The quoted packet: its IP header, then at least 8 bytes of transport.
    let quoted = LaxSlicedPacket::from_ip(payload).ok()?;
    let inner = ip_of(quoted.net.as_ref()?)?;
    Some(WireKey {
        dst: inner.dst,
        transport: probe_transport(inner.proto, inner.payload)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const TARGET: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

    fn echo_request(ttl: u8, id: u16, seq: u16) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(SRC.octets(), TARGET.octets(), ttl)
            .icmpv4_echo_request(id, seq)
            .write(&mut out, &[0u8; 36])
            .unwrap();
        out
    }

    fn time_exceeded(probe: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [1; 6])
            .ipv4(ROUTER.octets(), SRC.octets(), 64)
            .icmpv4(etherparse::Icmpv4Type::TimeExceeded(
                etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
            ))
            // The quoted packet is the probe's IP packet, without Ethernet.
            .write(&mut out, &probe[14..])
            .unwrap();
        out
    }

    fn echo_reply(id: u16, seq: u16) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [1; 6])
            .ipv4(TARGET.octets(), SRC.octets(), 62)
            .icmpv4_echo_reply(id, seq)
            .write(&mut out, &[0u8; 36])
            .unwrap();
        out
    }

    #[test]
    fn probes_are_matched_to_quoting_and_echo_replies() {
        let p1 = echo_request(1, 7, 100);
        let p2 = echo_request(3, 7, 101);
        let r1 = time_exceeded(&p1);
        let r2 = echo_reply(7, 101);
        let frames: Vec<(u64, &[u8])> =
            vec![(1_000, &p1), (1_500, &p2), (2_250, &r1), (4_000, &r2)];
        let index = CaptureIndex::from_frames(frames, &[SRC.into()]);
        let key = |seq| WireKey {
            dst: TARGET.into(),
            transport: Transport::Icmp { id: 7, seq },
        };
        let first = index.get(&key(100)).expect("first probe");
        assert_eq!((first.ttl, first.rtt_ns()), (1, Some(1_250)));
        assert_eq!(first.reply.unwrap().responder, IpAddr::from(ROUTER));
        let second = index.get(&key(101)).expect("second probe");
        assert_eq!((second.ttl, second.rtt_ns()), (3, Some(2_500)));
        assert_eq!(index.orphan_replies, 0);
        assert_eq!(index.icmp_ids().into_iter().collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn a_key_sent_twice_is_ambiguous_and_left_out() {
        let p = echo_request(2, 9, 5);
        let r = echo_reply(9, 5);
        let frames: Vec<(u64, &[u8])> = vec![(10, &p), (20, &p), (30, &r)];
        let index = CaptureIndex::from_frames(frames, &[SRC.into()]);
        assert!(index.is_empty());
        assert_eq!(index.duplicate_keys.len(), 1);
        assert_eq!(index.orphan_replies, 1);
    }

    #[test]
    fn tcp_rst_answers_the_syn_it_acknowledges() {
        let mut syn = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(SRC.octets(), TARGET.octets(), 5)
            .tcp(40000, 80, 0xdead_beef, 1024)
            .syn()
            .write(&mut syn, &[])
            .unwrap();
        let mut rst = Vec::new();
        PacketBuilder::ethernet2([2; 6], [1; 6])
            .ipv4(TARGET.octets(), SRC.octets(), 60)
            .tcp(80, 40000, 0, 0)
            .rst()
            .ack(0xdead_bef0)
            .write(&mut rst, &[])
            .unwrap();
        let frames: Vec<(u64, &[u8])> = vec![(100, &syn), (180, &rst)];
        let index = CaptureIndex::from_frames(frames, &[SRC.into()]);
        let probe = index
            .get(&WireKey {
                dst: TARGET.into(),
                transport: Transport::Tcp {
                    sport: 40000,
                    dport: 80,
                    seq: 0xdead_beef,
                },
            })
            .expect("the SYN is a probe");
        assert_eq!(probe.rtt_ns(), Some(80));
    }
}

//! The ring-buffer reader: the replies the ingress program matched, in arrival
//! order, awaited through tokio or taken without blocking.

use aya::maps::{MapData, RingBuf};
use hopwatch_probe_common::{ReplyEvent, SmallReplyEvent};
use tokio::io::unix::AsyncFd;

use super::EbpfError;

/// Matched replies from the kernel, in arrival order.
///
/// Keeps working after the [`EbpfTimestamper`](super::EbpfTimestamper) is dropped, but then no new
/// events arrive.
pub struct ReplyEvents {
    state: RingState,
}

enum RingState {
    /// Not yet registered with tokio (load() may run outside a runtime).
    Idle(RingBuf<MapData>),
    Registered(AsyncFd<RingBuf<MapData>>),
    /// Only while switching states.
    Empty,
}

impl std::fmt::Debug for ReplyEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyEvents").finish_non_exhaustive()
    }
}

impl ReplyEvents {
    pub(super) fn new(ring: RingBuf<MapData>) -> Self {
        ReplyEvents {
            state: RingState::Idle(ring),
        }
    }

    /// Waits for the next reply event. Cancel-safe: an event is removed from the
    /// ring only when it is returned.
    pub async fn next(&mut self) -> Result<ReplyEvent, EbpfError> {
        let fd = self.registered()?;
        loop {
            let mut guard = fd
                .readable_mut()
                .await
                .map_err(|source| EbpfError::RingBuf { source })?;
            if let Some(event) = read_one(guard.get_inner_mut()) {
                return event;
            }
            // Readiness is edge-triggered; tokio's tick check keeps a wakeup that
            // raced with this read from being lost.
            guard.clear_ready();
        }
    }

    /// Returns an event if one is waiting, without blocking.
    pub fn try_next(&mut self) -> Option<Result<ReplyEvent, EbpfError>> {
        match &mut self.state {
            RingState::Idle(ring) => read_one(ring),
            RingState::Registered(fd) => read_one(fd.get_mut()),
            RingState::Empty => None,
        }
    }

    fn registered(&mut self) -> Result<&mut AsyncFd<RingBuf<MapData>>, EbpfError> {
        if let RingState::Idle(_) = self.state {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(EbpfError::NoRuntime);
            }
            let RingState::Idle(ring) = std::mem::replace(&mut self.state, RingState::Empty) else {
                unreachable!("checked above");
            };
            // SAFETY: the ring buffer's fd is the map's own, owned by `ring` itself,
            // so it stays open and the same for as long as the AsyncFd holds `ring`.
            let registered =
                unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
            match registered {
                Ok(fd) => self.state = RingState::Registered(fd),
                Err(err) => {
                    let (ring, source) = err.into_parts();
                    self.state = RingState::Idle(ring);
                    return Err(EbpfError::RingBuf { source });
                }
            }
        }
        match &mut self.state {
            RingState::Registered(fd) => Ok(fd),
            _ => Err(EbpfError::NoRuntime),
        }
    }
}

/// The next record, in whichever of the two sizes the ingress program wrote
/// it (a small one widened, so the rest of the engine sees one type).
fn read_one(ring: &mut RingBuf<MapData>) -> Option<Result<ReplyEvent, EbpfError>> {
    let item = ring.next()?;
    Some(decode(&item))
}

fn decode(record: &[u8]) -> Result<ReplyEvent, EbpfError> {
    const FULL: usize = std::mem::size_of::<ReplyEvent>();
    const SMALL: usize = std::mem::size_of::<SmallReplyEvent>();
    match record.len() {
        // SAFETY (both arms): the record holds exactly the type's size in
        // bytes, the types are plain old data (every bit pattern valid), and
        // read_unaligned needs no alignment.
        FULL => Ok(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<ReplyEvent>()) }),
        SMALL => {
            let small =
                unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<SmallReplyEvent>()) };
            Ok(small.widen())
        }
        len => Err(EbpfError::UnexpectedRecord {
            len,
            small: SMALL,
            full: FULL,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hopwatch_probe_common::{ProbeKey, REPLY_SNAP_SMALL};

    fn small_event() -> SmallReplyEvent {
        let mut packet = [0u8; REPLY_SNAP_SMALL];
        for (i, b) in packet.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        SmallReplyEvent {
            key: ProbeKey {
                dst: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                family: hopwatch_probe_common::family::IPV4,
                proto: hopwatch_probe_common::ipproto::UDP,
                flow: 33_434,
                seq: 7,
            },
            responder: [10, 0, 0, 254, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            tx_ns: 1_000,
            rx_ns: 1_250,
            ifindex: 3,
            reply_proto: 1,
            icmp_type: 11,
            icmp_code: 0,
            _pad: 0,
            snap_len: 92,
            _pad2: 0,
            packet,
        }
    }

    fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: reading a plain-old-data value's own bytes.
        unsafe {
            std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn a_small_record_is_widened_with_every_field_and_its_snapshot() {
        let small = small_event();
        let event = decode(&bytes_of(&small)).expect("a small record decodes");
        assert_eq!(event.key, small.key);
        assert_eq!(event.responder, small.responder);
        assert_eq!(
            (event.tx_ns, event.rx_ns, event.rtt_ns()),
            (1_000, 1_250, 250)
        );
        assert_eq!(event.ifindex, 3);
        assert_eq!(
            (event.reply_proto, event.icmp_type, event.icmp_code),
            (1, 11, 0)
        );
        assert_eq!(event.snap_len, 92);
        assert_eq!(event.packet[..REPLY_SNAP_SMALL], small.packet[..]);
        assert!(event.packet[REPLY_SNAP_SMALL..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_full_record_decodes_as_it_is() {
        let mut full = small_event().widen();
        full.packet[200] = 0xAB;
        full.snap_len = 201;
        let event = decode(&bytes_of(&full)).expect("a full record decodes");
        assert_eq!(event.snap_len, 201);
        assert_eq!(event.packet[200], 0xAB);
        assert_eq!(event.key, full.key);
    }

    #[test]
    fn a_record_of_any_other_length_is_an_error_naming_the_sizes() {
        let bytes = bytes_of(&small_event());
        let err = decode(&bytes[..100]).unwrap_err().to_string();
        assert!(err.contains("100 bytes"), "{err}");
        assert!(err.contains("200") && err.contains("328"), "{err}");
    }
}

//! The ring-buffer reader: the replies the ingress program matched, in arrival
//! order, awaited through tokio or taken without blocking.

use aya::maps::{MapData, RingBuf};
use hopwatch_probe_common::ReplyEvent;
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

fn read_one(ring: &mut RingBuf<MapData>) -> Option<Result<ReplyEvent, EbpfError>> {
    let item = ring.next()?;
    let expected = std::mem::size_of::<ReplyEvent>();
    if item.len() < expected {
        return Some(Err(EbpfError::ShortRecord {
            len: item.len(),
            expected,
        }));
    }
    // SAFETY: the record holds at least size_of::<ReplyEvent>() bytes, ReplyEvent is
    // plain old data (every bit pattern valid), and read_unaligned needs no alignment.
    Some(Ok(unsafe {
        std::ptr::read_unaligned(item.as_ptr().cast::<ReplyEvent>())
    }))
}

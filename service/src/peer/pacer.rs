//! The pacing loop of a STAMP Session-Sender, shared by the UDP sender
//! ([`super::sender`]) and the TCP one ([`super::tcp`]): probes on an absolute
//! schedule (ppoll with nanosecond timeouts, so 1 ms and shorter intervals stay
//! on time without a timer wheel's 1 ms granularity), replies and transmit
//! stamps read as they come, and after the last probe a wait for the
//! stragglers of at most one timeout. A transport supplies the sending and the
//! reading through [`PacedSession`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sender::{SenderConfig, SenderError};
use super::tracker::Tracker;

/// Most a poll waits, so stop and abort are noticed.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// What a transport does for the pacing loop.
pub(super) trait PacedSession {
    /// The book of probes in flight.
    fn tracker(&mut self) -> &mut Tracker;
    /// The socket whose readability (replies, error-queue stamps) wakes the loop.
    fn fd(&self) -> RawFd;
    /// Sends the next probe.
    fn send_one(&mut self) -> Result<(), SenderError>;
    /// Reads every transmit stamp, then every reply, that is waiting.
    fn drain(&mut self) -> Result<(), SenderError>;
}

/// The schedule of one session and the flags that end it.
pub(super) struct Pacer {
    peer: SocketAddr,
    interval: Duration,
    count: Option<u64>,
    timeout: Duration,
    /// Stop sending; the probes in flight may still be answered.
    stop: Arc<AtomicBool>,
    /// End now.
    abort: Arc<AtomicBool>,
}

impl Pacer {
    pub(super) fn new(
        config: &SenderConfig,
        stop: Arc<AtomicBool>,
        abort: Arc<AtomicBool>,
    ) -> Self {
        Pacer {
            peer: config.peer,
            interval: config.interval,
            count: config.count,
            timeout: config.timeout,
            stop,
            abort,
        }
    }

    /// Runs the session until `count` probes were sent and resolved, until a
    /// stop (then the probes in flight get at most one timeout), or until an
    /// abort.
    pub(super) fn run(&self, mut session: impl PacedSession) -> Result<(), SenderError> {
        let peer = self.peer;
        let mut sent: u64 = 0;
        let mut next_send = Instant::now();
        let mut stop_deadline: Option<Instant> = None;
        loop {
            if self.abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            let now = Instant::now();
            let sending =
                !self.stop.load(Ordering::Relaxed) && self.count.is_none_or(|count| sent < count);
            if sending && now >= next_send {
                session.send_one()?;
                sent += 1;
                next_send += self.interval;
                // Far behind (the thread was not scheduled): restart the schedule
                // rather than send a burst that would distort the measurement.
                if now > next_send + self.interval * 4 {
                    next_send = now + self.interval;
                }
                continue;
            }
            if !sending {
                // Done sending: wait for the stragglers, at most one timeout.
                let limit = *stop_deadline.get_or_insert(now + self.timeout);
                if session.tracker().in_flight() == 0 || now >= limit {
                    session.drain()?;
                    session.tracker().expire_all();
                    return Ok(());
                }
            }
            let mut wake = now + MAX_WAIT;
            if sending {
                wake = wake.min(next_send);
            }
            if let Some(deadline) = session.tracker().next_deadline() {
                wake = wake.min(deadline);
            }
            wait_readable(session.fd(), wake.saturating_duration_since(now))
                .map_err(|source| SenderError::Poll { peer, source })?;
            session.drain()?;
            session.tracker().expire(Instant::now());
        }
    }
}

/// Waits until `fd` is readable (or has an error-queue message) or `timeout`
/// passes; a signal ends the wait early, which is no error.
fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let mut fds = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 1, &ts, std::ptr::null()) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(())
}

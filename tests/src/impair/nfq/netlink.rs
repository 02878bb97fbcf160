//! A minimal NFQUEUE client speaking nfnetlink directly: bind a queue in metadata-only
//! mode, read packet ids, send verdicts in batches.
//!
//! Why not the `nfq` crate: 0.2.5 gives no access to its socket, so it cannot be
//! polled with a timeout (which a delay element needs to wake at the next deadline),
//! and every held packet pins its whole receive buffer. The delay element only needs
//! the packet id, so it never copies payload (NFQNL_COPY_META).

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    time::Duration,
};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::socket::{
        bind, recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
        SockFlag, SockProtocol, SockType,
    },
};

// linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
// linux/netfilter/nfnetlink.h, nfnetlink_queue.h
const NFGEN_HDRLEN: usize = 4;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NFQA_CFG_F_GSO: u32 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A verdict for a queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the packet continue (NF_ACCEPT).
    Accept,
    /// Drop it (NF_DROP).
    Drop,
}

/// Kernel-side queue length: how many packets may wait for a verdict. Thousands of
/// packets per second held for hundreds of milliseconds need well over the default 1024.
const QUEUE_MAXLEN: u32 = 65_536;
/// Receive buffer: packet notifications that do not fit are dropped by the kernel.
const RCVBUF: usize = 8 << 20;
/// Verdicts are sent in batches of concatenated netlink messages, under the socket's
/// send buffer size.
const VERDICT_BATCH_BYTES: usize = 32 * 1024;

/// A bound NFQUEUE socket. It lives in the network namespace of the thread that
/// opened it.
#[derive(Debug)]
pub struct NfqSocket {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Errors the kernel reported for verdicts (e.g. an unknown packet id).
    pub verdict_errors: u64,
}

impl NfqSocket {
    /// Opens a netfilter netlink socket and binds queue `queue` in metadata-only mode.
    pub fn open(queue: u16) -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // RcvBufForce exceeds rmem_max (root only); fall back to what is allowed.
        if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &RCVBUF)?;
        }
        let mut sock = Self {
            fd,
            queue,
            seq: 0,
            rx: vec![0; 64 * 1024],
            tx: Vec::with_capacity(VERDICT_BATCH_BYTES + 64),
            verdict_errors: 0,
        };
        sock.config(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])?;
        // copy_range (be32) = 0 and copy_mode, packed: 5 bytes.
        sock.config(NFQA_CFG_PARAMS, &[0, 0, 0, 0, NFQNL_COPY_META])?;
        sock.config(NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAXLEN.to_be_bytes())?;
        // GSO: take large segments as they are instead of having the kernel split them;
        // the element never looks inside.
        let mut flags = Vec::with_capacity(16);
        push_attr(&mut flags, NFQA_CFG_MASK, &NFQA_CFG_F_GSO.to_be_bytes());
        push_attr(&mut flags, NFQA_CFG_FLAGS, &NFQA_CFG_F_GSO.to_be_bytes());
        sock.request_raw(&flags)?;
        Ok(sock)
    }

    /// The socket, for polling.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn config(&mut self, attr: u16, payload: &[u8]) -> io::Result<()> {
        let mut attrs = Vec::with_capacity(16);
        push_attr(&mut attrs, attr, payload);
        self.request_raw(&attrs)
    }

    /// Sends one config message with NLM_F_ACK and waits for the kernel's answer.
    fn request_raw(&mut self, attrs: &[u8]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(64);
        push_msg_header(
            &mut msg,
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            self.seq,
            self.queue,
        );
        msg.extend_from_slice(attrs);
        finish_msg(&mut msg, 0);
        sendto(
            self.fd.as_raw_fd(),
            &msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        loop {
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(2000u16))? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer from nfnetlink_queue",
                ));
            }
            let n = recv(self.fd.as_raw_fd(), &mut self.rx, MsgFlags::MSG_DONTWAIT)?;
            for msg in Messages::new(&self.rx[..n]) {
                if msg.kind == NLMSG_ERROR && msg.seq == self.seq {
                    return match error_code(msg.payload) {
                        0 => Ok(()),
                        code => Err(io::Error::from_raw_os_error(code)),
                    };
                }
            }
        }
    }

    /// Reads one datagram without blocking and appends the ids of the packets it
    /// announces to `ids`. Returns false when nothing was waiting. ENOBUFS (the kernel
    /// could not deliver notifications; those packets were dropped) is returned as an
    /// error for the caller to count.
    pub fn recv_ids(&mut self, ids: &mut Vec<u32>) -> io::Result<bool> {
        let n = match recv(self.fd.as_raw_fd(), &mut self.rx, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        for msg in Messages::new(&self.rx[..n]) {
            match msg.kind {
                k if k == (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET) => {
                    if let Some(id) = packet_id(msg.payload) {
                        ids.push(id);
                    }
                }
                NLMSG_ERROR if error_code(msg.payload) != 0 => self.verdict_errors += 1,
                _ => {}
            }
        }
        Ok(true)
    }

    /// Queues a verdict; sent by [`flush`](Self::flush) or when the batch is full.
    pub fn verdict(&mut self, id: u32, verdict: Verdict) -> io::Result<()> {
        let start = self.tx.len();
        push_msg_header(
            &mut self.tx,
            NFQNL_MSG_VERDICT,
            NLM_F_REQUEST,
            0,
            self.queue,
        );
        let code: u32 = match verdict {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
        };
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&code.to_be_bytes());
        hdr[4..].copy_from_slice(&id.to_be_bytes());
        push_attr(&mut self.tx, NFQA_VERDICT_HDR, &hdr);
        finish_msg(&mut self.tx, start);
        if self.tx.len() >= VERDICT_BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends all queued verdicts in one datagram.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.tx.is_empty() {
            return Ok(());
        }
        let result = sendto(
            self.fd.as_raw_fd(),
            &self.tx,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        );
        self.tx.clear();
        result.map(drop).map_err(Into::into)
    }

    /// Waits until the socket is readable or `timeout` passes.
    pub fn wait_readable(
        &self,
        extra: BorrowedFd<'_>,
        timeout: Duration,
    ) -> io::Result<(bool, bool)> {
        use nix::{poll::ppoll, sys::time::TimeSpec};
        let mut fds = [
            PollFd::new(self.fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(extra, PollFlags::POLLIN),
        ];
        match ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready = |fd: &PollFd<'_>| {
            fd.revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR))
        };
        Ok((ready(&fds[0]), ready(&fds[1])))
    }
}

/// nlmsghdr (length patched by [`finish_msg`]) followed by nfgenmsg for `queue`.
fn push_msg_header(buf: &mut Vec<u8>, msg_type: u16, flags: u16, seq: u32, queue: u16) {
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&(NFNL_SUBSYS_QUEUE << 8 | msg_type).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id = queue (big endian).
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&queue.to_be_bytes());
}

/// Writes the length of the message that starts at `start` into its header.
fn finish_msg(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// Appends one netlink attribute, padded to 4 bytes.
fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The errno in an NLMSG_ERROR payload (0 for an ACK), as a positive number.
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).abs())
        .unwrap_or(0)
}

/// The packet id from an NFQNL_MSG_PACKET payload (nfgenmsg, then attributes).
fn packet_id(payload: &[u8]) -> Option<u32> {
    let mut attrs = payload.get(NFGEN_HDRLEN..)?;
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NFQA_PACKET_HDR && len >= 8 {
            return Some(u32::from_be_bytes([attrs[4], attrs[5], attrs[6], attrs[7]]));
        }
        attrs = attrs.get(align4(len)..).unwrap_or(&[]);
    }
    None
}

/// One netlink message of a datagram.
struct Message<'a> {
    kind: u16,
    seq: u32,
    payload: &'a [u8],
}

/// Iterates over the netlink messages of a datagram, stopping at anything malformed.
struct Messages<'a> {
    buf: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        let b = self.buf;
        if b.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        self.buf = b.get(align4(len)..).unwrap_or(&[]);
        if kind == NLMSG_DONE {
            return None;
        }
        Some(Message {
            kind,
            seq,
            payload: &b[NLMSG_HDRLEN..len],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_message_layout() {
        let mut buf = Vec::new();
        push_msg_header(&mut buf, NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, 7);
        push_attr(&mut buf, NFQA_VERDICT_HDR, &[0, 0, 0, 1, 0, 0, 0, 42]);
        finish_msg(&mut buf, 0);
        assert_eq!(buf.len(), 16 + 4 + 12);
        assert_eq!(u32::from_ne_bytes(buf[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), 3 << 8 | 1);
        assert_eq!(&buf[18..20], &7u16.to_be_bytes());
    }

    #[test]
    fn parses_packet_id_and_skips_other_attributes() {
        let mut payload = vec![0, 0, 0, 3];
        push_attr(&mut payload, 9, &[1, 2, 3]); // some other attribute, padded
        push_attr(&mut payload, NFQA_PACKET_HDR, &[0, 0, 1, 2, 8, 0, 3]);
        assert_eq!(packet_id(&payload), Some(258));
        let mut msg = Vec::new();
        push_msg_header(&mut msg, NFQNL_MSG_PACKET, 0, 0, 3);
        msg.truncate(NLMSG_HDRLEN);
        msg.extend_from_slice(&payload);
        finish_msg(&mut msg, 0);
        let parsed: Vec<_> = Messages::new(&msg).collect();
        assert_eq!(parsed.len(), 1);
        assert_eq!(packet_id(parsed[0].payload), Some(258));
    }

    #[test]
    fn params_attribute_is_padded() {
        let mut buf = Vec::new();
        push_attr(&mut buf, NFQA_CFG_PARAMS, &[0, 0, 0, 0, NFQNL_COPY_META]);
        assert_eq!(buf.len(), 12);
        assert_eq!(u16::from_ne_bytes([buf[0], buf[1]]), 9);
    }
}

//! STAMP over TCP framing ([`super::tcp`]): each STAMP packet travels as a frame,
//! a 2-octet big-endian body length, then the body (a STAMP packet of
//! `BASE_LEN..=MAX_FRAME` octets, padding included).
//!
//! Kept apart from the socket code, with nothing but [`super::wire`] as a
//! dependency, so the byte and index arithmetic of splitting a stream into frames
//! can be fuzzed on its own (service/fuzz, target `tcp_frames`, compiles this file
//! through a `#[path]` module) and property-tested without a connection.

use std::ops::Range;

use super::wire::BASE_LEN;

/// Largest frame body.
pub const MAX_FRAME: usize = 9216;
/// The frame header: the body's length.
pub const FRAME_HEADER: usize = 2;

/// A frame header naming a body length outside `BASE_LEN..=MAX_FRAME`: the stream
/// is not STAMP framing, and nothing after it can be trusted to be a frame start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("STAMP TCP frame of {len} octets is outside {BASE_LEN}..={MAX_FRAME}")]
pub struct BadLength {
    pub len: usize,
}

/// The header announcing a body of `body_len` octets (which the caller has kept
/// within `BASE_LEN..=MAX_FRAME`, so it fits the 16 bits).
pub fn header(body_len: usize) -> [u8; FRAME_HEADER] {
    debug_assert!((BASE_LEN..=MAX_FRAME).contains(&body_len));
    (body_len as u16).to_be_bytes()
}

/// Bytes read off a stream and not yet handed out as frames.
///
/// The buffer holds two largest frames: after [`FrameBuffer::spare`] moves a partial
/// frame (shorter than one largest frame) to the front, room for at least one whole
/// largest frame is left, so a read never gets an empty buffer (which would return
/// 0 and look like the peer closing the connection).
pub struct FrameBuffer {
    buf: Vec<u8>,
    /// Start of the bytes not yet handed out.
    start: usize,
    /// End of the bytes read.
    end: usize,
}

impl Default for FrameBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameBuffer {
    pub fn new() -> Self {
        FrameBuffer {
            buf: vec![0; 2 * (FRAME_HEADER + MAX_FRAME)],
            start: 0,
            end: 0,
        }
    }

    /// Bytes read and not yet handed out as frames.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Where the next read goes: the free space after the pending bytes, which are
    /// moved to the front first. Never empty (see the type's doc).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that a read put `n` bytes at the front of [`FrameBuffer::spare`].
    pub fn filled(&mut self, n: usize) {
        assert!(n <= self.buf.len() - self.end, "read past the spare room");
        self.end += n;
    }

    /// Splits off the next complete frame and returns where its body is, for
    /// [`FrameBuffer::body`]; `None` until a whole frame has been read. The body
    /// stays in place until the next [`FrameBuffer::spare`], so the caller reads it
    /// without a copy.
    pub fn next_frame(&mut self) -> Result<Option<Range<usize>>, BadLength> {
        if self.pending() < FRAME_HEADER {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([
            self.buf[self.start],
            self.buf[self.start + 1],
        ]));
        if !(BASE_LEN..=MAX_FRAME).contains(&len) {
            return Err(BadLength { len });
        }
        if self.pending() < FRAME_HEADER + len {
            return Ok(None);
        }
        let body = self.start + FRAME_HEADER;
        self.start = body + len;
        if self.start == self.end {
            // All consumed: the next read starts at the front.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(body..body + len))
    }

    /// The body of a frame [`FrameBuffer::next_frame`] just returned.
    pub fn body(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in reads of the sizes `chunk` picks (capped by the spare room)
    /// and collects the bodies, stopping at the first bad header.
    fn split(stream: &[u8], mut chunk: impl FnMut() -> usize) -> (Vec<Vec<u8>>, Option<BadLength>) {
        let mut frames = FrameBuffer::new();
        let mut bodies = Vec::new();
        let mut at = 0;
        loop {
            loop {
                match frames.next_frame() {
                    Ok(Some(range)) => bodies.push(frames.body(range).to_vec()),
                    Ok(None) => break,
                    Err(bad) => return (bodies, Some(bad)),
                }
            }
            if at == stream.len() {
                return (bodies, None);
            }
            let spare = frames.spare();
            assert!(!spare.is_empty(), "a read would get an empty buffer");
            let n = chunk().clamp(1, spare.len()).min(stream.len() - at);
            spare[..n].copy_from_slice(&stream[at..at + n]);
            frames.filled(n);
            at += n;
        }
    }

    fn framed(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut stream = Vec::new();
        for body in bodies {
            stream.extend_from_slice(&header(body.len()));
            stream.extend_from_slice(body);
        }
        stream
    }

    #[test]
    fn frames_come_out_whole_however_the_stream_is_cut() {
        let bodies: Vec<Vec<u8>> = [BASE_LEN, 100, MAX_FRAME, BASE_LEN, 1500, MAX_FRAME]
            .iter()
            .enumerate()
            .map(|(i, &len)| vec![i as u8 + 1; len])
            .collect();
        let stream = framed(&bodies);
        for size in [1, 2, 3, 45, 46, 47, 4096, MAX_FRAME + 1, usize::MAX] {
            assert_eq!(split(&stream, || size), (bodies.clone(), None), "{size}");
        }
    }

    #[test]
    fn impossible_lengths_are_refused() {
        for len in [0, 1, BASE_LEN - 1, MAX_FRAME + 1, 0xffff] {
            let mut stream = (len as u16).to_be_bytes().to_vec();
            stream.resize(2 + len.min(MAX_FRAME + 10), 0);
            assert_eq!(split(&stream, || 7), (vec![], Some(BadLength { len })));
        }
    }

    /// The fuzz target's property in the normal suite: for streams of valid frames
    /// cut into random reads, and for mutations of them, the buffer never hands out
    /// a body outside the bytes read, every body has a valid length, a stream of
    /// valid frames comes out frame for frame, and a read never gets an empty buffer.
    #[test]
    fn random_and_mutated_streams_keep_frame_boundaries() {
        let mut rng = fastrand::Rng::with_seed(0x7463_705f_6672_616d);
        let mut intact = 0;
        for round in 0..3_000 {
            let bodies: Vec<Vec<u8>> = (0..rng.usize(0..6))
                .map(|_| {
                    let len = match rng.u8(0..4) {
                        0 => BASE_LEN,
                        1 => MAX_FRAME,
                        _ => rng.usize(BASE_LEN..=2 * BASE_LEN + 100),
                    };
                    (0..len).map(|_| rng.u8(..)).collect()
                })
                .collect();
            let mut stream = framed(&bodies);
            let mutated = round % 3 == 0 && !stream.is_empty();
            if mutated {
                for _ in 0..1 + rng.usize(0..4) {
                    let at = rng.usize(0..stream.len());
                    match rng.u8(0..4) {
                        0 => stream[at] ^= 1 << rng.u8(0..8),
                        1 => stream[at] = [0, 0x23, 0x24, 0xff][rng.usize(0..4)],
                        2 => stream.truncate(at),
                        _ => stream.insert(at, rng.u8(..)),
                    }
                    if stream.is_empty() {
                        break;
                    }
                }
            }
            let big_reads = rng.bool();
            let (got, bad) = split(&stream, || {
                if big_reads {
                    rng.usize(1..=2 * MAX_FRAME)
                } else {
                    rng.usize(1..64)
                }
            });
            let total: usize = got.iter().map(|b| FRAME_HEADER + b.len()).sum();
            assert!(total <= stream.len());
            for body in &got {
                assert!((BASE_LEN..=MAX_FRAME).contains(&body.len()));
            }
            if let Some(BadLength { len }) = bad {
                assert!(!(BASE_LEN..=MAX_FRAME).contains(&len));
            }
            if !mutated {
                assert_eq!((&got, bad), (&bodies, None));
                intact += 1;
            } else {
                // Whatever came out before the stream went wrong is a prefix of
                // the frames, as framed: frame boundaries hold up to the damage.
                let out = framed(&got);
                assert_eq!(&stream[..out.len()], &out[..]);
            }
        }
        assert!(intact > 1_000);
    }
}

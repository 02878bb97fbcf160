//! Fuzz target: splitting a STAMP-over-TCP stream into frames
//! (service/src/peer/framing.rs, the buffer `tcp.rs` reads into) must never
//! panic, never hand out a body outside the bytes read or of an impossible
//! length, never offer a read an empty buffer, and must cut a stream exactly at
//! its frame boundaries however the reads fall.
//!
//! Input: the first byte seeds the read sizes (small reads, or large ones when its
//! top bit is set), the rest is the stream. Each body is then decoded as a
//! Session-Sender packet, as the reflector does. The stable test
//! `random_and_mutated_streams_keep_frame_boundaries` in framing.rs checks the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/peer/timestamp.rs"]
mod timestamp;

#[allow(dead_code)]
#[path = "../../src/peer/wire.rs"]
mod wire;

#[allow(dead_code)]
#[path = "../../src/peer/framing.rs"]
mod framing;

use framing::{BadLength, FrameBuffer, FRAME_HEADER, MAX_FRAME};
use wire::{SenderPacket, BASE_LEN};

fuzz_target!(|input: &[u8]| {
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    // Read sizes from a tiny xorshift seeded by the first byte: deterministic per
    // input, so a crash reproduces.
    let mut state = u32::from(seed) | 0x100;
    let mut read_size = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let limit = if seed & 0x80 != 0 { 2 * MAX_FRAME } else { 64 };
        1 + (state as usize % limit)
    };
    let mut frames = FrameBuffer::new();
    let mut at = 0;
    // Where the next frame starts in `stream`: each body must be the octets right
    // after its header there.
    let mut frame_start = 0;
    loop {
        let bad = loop {
            match frames.next_frame() {
                Ok(Some(range)) => {
                    let body = frames.body(range);
                    assert!((BASE_LEN..=MAX_FRAME).contains(&body.len()));
                    let header = &stream[frame_start..frame_start + FRAME_HEADER];
                    assert_eq!(
                        usize::from(u16::from_be_bytes([header[0], header[1]])),
                        body.len()
                    );
                    let start = frame_start + FRAME_HEADER;
                    assert_eq!(body, &stream[start..start + body.len()]);
                    frame_start = start + body.len();
                    assert!(frame_start <= at, "a body past the bytes read");
                    SenderPacket::decode(body).expect("a frame body is a whole packet");
                }
                Ok(None) => break None,
                Err(bad) => break Some(bad),
            }
        };
        if let Some(BadLength { len }) = bad {
            assert!(!(BASE_LEN..=MAX_FRAME).contains(&len));
            let header = &stream[frame_start..frame_start + FRAME_HEADER];
            assert_eq!(usize::from(u16::from_be_bytes([header[0], header[1]])), len);
            return;
        }
        assert_eq!(frames.pending(), at - frame_start);
        if at == stream.len() {
            return;
        }
        let spare = frames.spare();
        assert!(!spare.is_empty(), "a read would get an empty buffer");
        let n = read_size().min(spare.len()).min(stream.len() - at);
        spare[..n].copy_from_slice(&stream[at..at + n]);
        frames.filled(n);
        at += n;
    }
});

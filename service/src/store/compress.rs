//! zstd compression of the store's chunks and rollup blocks through one
//! context per thread, kept from call to call.
//!
//! `zstd::stream::encode_all` makes a context per call and frees it on
//! return: its tables, sized for a stream of unknown length, for every
//! target's chunk at each flush and every target's block at each section,
//! 1,000 of them a minute at 1,000 targets and the largest share by size of
//! what the flush thread allocated (heaptrack, docs/benchmarks.md, "Where
//! the rise comes from"). A block compressor is told each input's
//! size and sizes its tables to it, and one kept per thread allocates them
//! once. Its frames differ from a stream's only in stating their content
//! size, which every zstd reader handles: stores written before read the
//! same, and these frames read back through the stream decoders.

use std::cell::RefCell;

/// Scratch room kept between calls; a larger input's is given back.
const SCRATCH_KEPT_BYTES: usize = 256 << 10;

thread_local! {
    /// The thread's context and the buffer it compresses into.
    static CONTEXT: RefCell<(zstd::block::Compressor, Vec<u8>)> =
        RefCell::new((zstd::block::Compressor::new(), Vec::new()));
}

/// `raw` as one zstd frame at `level`, in a Vec of exactly its length.
pub fn compress(raw: &[u8], level: i32) -> Vec<u8> {
    let mut frame = Vec::new();
    compress_onto(raw, level, &mut frame);
    frame.shrink_to_fit();
    frame
}

/// Appends `raw` as one zstd frame at `level` to `out`.
pub fn compress_onto(raw: &[u8], level: i32, out: &mut Vec<u8>) {
    CONTEXT.with(|context| {
        let (compressor, scratch) = &mut *context.borrow_mut();
        scratch.clear();
        scratch.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        let len = compressor
            .compress_to_buffer(raw, scratch, level)
            // Into room of zstd's bound for the input, only a zstd bug fails.
            .expect("zstd compresses into room of its own bound");
        out.extend_from_slice(&scratch[..len]);
        scratch.shrink_to(SCRATCH_KEPT_BYTES);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_through_the_stream_decoder_and_match_a_streams_size() {
        let raw: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for level in [3, 9, 3] {
            let frame = compress(&raw, level);
            assert_eq!(frame.len(), frame.capacity());
            assert_eq!(zstd::stream::decode_all(frame.as_slice()).unwrap(), raw);
            let streamed = zstd::stream::encode_all(raw.as_slice(), level).unwrap();
            // The same compression; a few header bytes state the size.
            assert!(
                frame.len().abs_diff(streamed.len()) <= 8,
                "{} vs {}",
                frame.len(),
                streamed.len()
            );
        }
        assert_eq!(
            zstd::stream::decode_all(compress(&[], 9).as_slice()).unwrap(),
            Vec::<u8>::new()
        );
    }
}

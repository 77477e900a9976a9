//! Everything on the wire between a primary and its backup: the checkpoint
//! stream of `docs/STREAM.md`, carrying in each checkpoint frame the legacy
//! save-stream body of `docs/FORMAT.md` §4.
//!
//! ```text
//! header (56 bytes)            magic, version 2, guest pages, stream id, CRC-32C
//! frames:
//!   "CKPT" reserved seq        a checkpoint: the legacy body, then the trailer
//!       body                   PFN batches, COMPRESSED_DATA, toolstack chunks, 0
//!       trailer (48 bytes)     seq, data pages, page digest, frame CRC-32C
//!   "CKND" reserved count CRC  the end of the stream; nothing may follow
//! ```
//!
//! Each part is a type that writes and reads itself ([`StreamHeader`],
//! [`Trailer`], [`EndFrame`]); [`StreamWriter`] writes a whole stream and
//! [`StreamReader`] reads one checkpoint at a time into a [`Body`], checking
//! every rule of the format against the [`Limits`] before it allocates.
//! Every byte of a frame, from its tag to its digest, is covered by the
//! frame's CRC-32C, chained from the header's, so that any corruption is
//! detected before a checkpoint is applied; the page digest ([`Digest`])
//! covers what applying it produces.

mod body;
mod digest;
mod error;
mod frame;
mod header;
mod limits;
mod reader;
mod writer;

pub use body::{Body, ChunkSpan, PageAt, ToolstackChunk};
pub use digest::{digest_key, page_fingerprint, Digest, DIGEST_KEY_SEED};
pub use error::StreamError;
pub use frame::{EndFrame, FrameHead, Trailer, END_LEN, FRAME_HEAD_LEN, TRAILER_LEN};
pub use header::{StreamHeader, HEADER_LEN, STREAM_MAGIC, STREAM_VERSION};
pub use limits::Limits;
pub(crate) use limits::{CHUNK_COST, TOOLSTACK_COST};
pub use reader::{Event, StreamReader};
pub use writer::StreamWriter;

/// Chunk type: end of body.
pub const CHUNK_END: i32 = 0;
/// Chunk type: compressed page data (`u64` length, then the encodings).
pub const CHUNK_COMPRESSED_DATA: i32 = -12;
/// Chunk type: the receiver switches to Format B from the next checkpoint.
pub const CHUNK_ENABLE_COMPRESSION: i32 = -13;
/// Largest PFN batch.
pub const MAX_BATCH: usize = 1024;

/// Payload size of the toolstack's own chunks (Xen 4.x, x86_64), which the
/// engine passes through without interpreting: `Some(n)` for a fixed size,
/// `None` for chunks it does not carry (TMEM's are variable and nested).
pub fn toolstack_payload_len(id: i32) -> Option<usize> {
    match id {
        -1 => Some(0),                        // ENABLE_VERIFY_MODE
        -2 => Some(12),                       // VCPU_INFO: max_vcpu_id u32, vcpumap u64
        -3 | -4 | -8 | -10 | -11 => Some(12), // HVM params: pad u32, value u64
        -7 => Some(20), // TSC_INFO: mode u32, nsec u64, khz u32, incarnation u32
        -9 => Some(0),  // LAST_CHECKPOINT
        _ => None,      // -5 TMEM, -6 TMEM_EXTRA, and anything unknown
    }
}

/// CRC-32C of `bytes`, continuing from `crc`: the check that chains the
/// header, every frame and the end of a stream.
pub(crate) fn crc(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// Reads a little-endian integer of `N` bytes at `at` of a fixed-size block.
pub(crate) fn le<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N]
        .try_into()
        .expect("the caller's block holds the field")
}

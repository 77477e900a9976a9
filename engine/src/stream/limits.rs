//! The limits a reader enforces on untrusted input (`docs/STREAM.md`,
//! "Receiver rules"): each is checked before the bytes it bounds are
//! allocated, so a hostile stream costs at most these amounts.

use serde::{Deserialize, Serialize};

/// Bounds on what a stream may make a reader hold: the guest it claims,
/// and what one checkpoint may make it buffer.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest COMPRESSED_DATA payload accepted, in bytes.
    pub max_chunk_bytes: u64,
    /// Largest checkpoint accepted: page data, toolstack payloads and the
    /// bookkeeping of its chunks, in bytes.
    pub max_checkpoint_bytes: u64,
    /// Most PFN entries accepted in one checkpoint.
    pub max_checkpoint_entries: u64,
    /// Most toolstack chunks accepted in one checkpoint.
    pub max_toolstack_chunks: u64,
    /// Largest guest accepted, in pages: a stream whose header claims more
    /// is refused before anything is created for it (at most 2^28, the
    /// format's own bound). A backup sizes its memory from its own
    /// configuration, never from the stream.
    pub max_guest_pages: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_chunk_bytes: 64 << 20,
            max_checkpoint_bytes: 1 << 30,
            max_checkpoint_entries: 1 << 20,
            max_toolstack_chunks: 4096,
            max_guest_pages: 1 << 20,
        }
    }
}

/// What one COMPRESSED_DATA chunk's bookkeeping is charged against
/// `max_checkpoint_bytes`, so that a flood of empty chunks is bounded too.
pub(crate) const CHUNK_COST: u64 = 64;
/// The same for a toolstack chunk, on top of its payload.
pub(crate) const TOOLSTACK_COST: u64 = 64;

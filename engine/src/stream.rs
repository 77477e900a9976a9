//! The checkpoint stream file: the legacy save-stream body (`FORMAT.md` §4)
//! wrapped in a small header and a per-checkpoint trailer of this project's
//! own, so that a stream file is self-contained and every checkpoint can be
//! verified end to end. The layout is specified in `docs/STREAM.md`.
//!
//! ```text
//! stream header (32 bytes)
//!   0  magic        "CKPTSTRM"
//!   8  version      u32 = 1
//!  12  header_len   u32 = 32
//!  16  guest_pages  u64   pages of the guest; every PFN must be below it
//!  24  page_size    u32 = 4096
//!  28  reserved     u32 = 0
//! frames, each opened by a u32 tag:
//!   "CKPT"  u32 reserved, u64 seq, legacy body (ends with chunk type 0), trailer
//!   "CKND"  u32 reserved, u64 checkpoints (end of stream)
//! trailer (40 bytes)
//!   0  magic        "CKTR"
//!   4  reserved     u32 = 0
//!   8  seq          u64   equal to the frame's
//!  16  data_pages   u64   data-carrying PFN entries in the body
//!  24  digest       16 bytes, XXH3-128 over (pfn u64, XXH3-64(page) u64) of
//!                   every data-carrying entry in body order, page = content
//!                   after the checkpoint is applied
//! ```

use ckpt_simd::Page;
use std::io::{self, Write};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Stream header magic.
pub const STREAM_MAGIC: &[u8; 8] = b"CKPTSTRM";
/// Stream format version.
pub const STREAM_VERSION: u32 = 1;
/// Bytes in the stream header.
pub const HEADER_LEN: usize = 32;
/// Tag of a checkpoint frame.
pub const TAG_CHECKPOINT: [u8; 4] = *b"CKPT";
/// Tag of the end-of-stream frame.
pub const TAG_END: [u8; 4] = *b"CKND";
/// Trailer magic.
pub const TRAILER_MAGIC: [u8; 4] = *b"CKTR";
/// Bytes in a trailer.
pub const TRAILER_LEN: usize = 40;

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
pub fn foreign_payload_len(id: i32) -> Option<usize> {
    match id {
        -1 => Some(0),                        // ENABLE_VERIFY_MODE
        -2 => Some(12),                       // VCPU_INFO: max_vcpu_id u32, vcpumap u64
        -3 | -4 | -8 | -10 | -11 => Some(12), // HVM params: pad u32, value u64
        -7 => Some(20), // TSC_INFO: mode u32, nsec u64, khz u32, incarnation u32
        -9 => Some(0),  // LAST_CHECKPOINT
        _ => None,      // -5 TMEM, -6 TMEM_EXTRA, and anything unknown
    }
}

/// A toolstack chunk carried through the stream unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignChunk {
    /// Chunk type, -1..=-11.
    pub id: i32,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// The stream header's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Pages of the guest.
    pub guest_pages: u64,
}

impl StreamHeader {
    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(STREAM_MAGIC);
        b[8..12].copy_from_slice(&STREAM_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.guest_pages.to_le_bytes());
        b[24..28].copy_from_slice(&(ckpt_simd::PAGE_SIZE as u32).to_le_bytes());
        b
    }
}

/// A checkpoint trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Checkpoint sequence number.
    pub seq: u64,
    /// Data-carrying entries in the body.
    pub data_pages: u64,
    /// Digest of the checkpoint (see the module documentation).
    pub digest: u128,
}

impl Trailer {
    /// The trailer's bytes.
    pub fn to_bytes(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[..4].copy_from_slice(&TRAILER_MAGIC);
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.data_pages.to_le_bytes());
        b[24..40].copy_from_slice(&self.digest.to_le_bytes());
        b
    }

    /// Parses a trailer, or says which field is wrong.
    pub fn from_bytes(b: &[u8; TRAILER_LEN]) -> Result<Trailer, &'static str> {
        if b[..4] != TRAILER_MAGIC {
            return Err("trailer magic");
        }
        if b[4..8] != [0; 4] {
            return Err("trailer reserved field");
        }
        Ok(Trailer {
            seq: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            data_pages: u64::from_le_bytes(b[16..24].try_into().unwrap()),
            digest: u128::from_le_bytes(b[24..40].try_into().unwrap()),
        })
    }
}

/// Folds the pages of one checkpoint, in body order, into its digest.
pub struct Digest {
    state: Xxh3,
    pages: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Digest::new()
    }
}

impl Digest {
    /// An empty digest.
    pub fn new() -> Digest {
        Digest {
            state: Xxh3::new(),
            pages: 0,
        }
    }

    /// Adds a page by its content hash ([`page_hash`]).
    pub fn add_hashed(&mut self, pfn: u64, hash: u64) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&pfn.to_le_bytes());
        b[8..].copy_from_slice(&hash.to_le_bytes());
        self.state.update(&b);
        self.pages += 1;
    }

    /// Adds a page by its content.
    pub fn add(&mut self, pfn: u64, page: &Page) {
        self.add_hashed(pfn, page_hash(page));
    }

    /// Pages added.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The digest value.
    pub fn finish(&self) -> u128 {
        self.state.digest128()
    }
}

/// The per-page hash the digest is built from.
pub fn page_hash(page: &Page) -> u64 {
    xxh3_64(page)
}

/// Writes PFN entries as batches of at most 1024 (Format B: no page data).
pub fn write_pfn_batches(w: &mut impl Write, entries: &[u64]) -> io::Result<u64> {
    let mut written = 0;
    for batch in entries.chunks(MAX_BATCH) {
        w.write_all(&(batch.len() as i32).to_le_bytes())?;
        let mut buf = Vec::with_capacity(batch.len() * 8);
        for e in batch {
            buf.extend_from_slice(&e.to_le_bytes());
        }
        w.write_all(&buf)?;
        written += 4 + buf.len() as u64;
    }
    Ok(written)
}

/// Writes one chunk type with no payload.
pub fn write_chunk_type(w: &mut impl Write, ty: i32) -> io::Result<u64> {
    w.write_all(&ty.to_le_bytes())?;
    Ok(4)
}

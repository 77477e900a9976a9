//! Frames (`docs/STREAM.md`, "Frames", "Trailer", "End of stream"): the
//! fixed-size parts around each checkpoint's body.
//!
//! ```text
//! checkpoint frame head (16)   trailer (48)               end frame (24)
//!  0 "CKPT"                     0 "CKTR"                   0 "CKND"
//!  4 reserved u32 = 0           4 reserved u32 = 0         4 reserved u32 = 0
//!  8 seq u64                    8 seq u64                  8 checkpoints u64
//!                              16 data_pages u64          16 check u32
//!                              24 digest, 16 bytes        20 reserved u32 = 0
//!                              40 check u32
//!                              44 reserved u32 = 0
//! ```
//!
//! A trailer's check is the CRC-32C of every byte of its frame from the tag
//! through the digest, continuing from the header's check; the end frame's
//! covers its first 16 bytes the same way.

use super::{crc, le};

/// Tag of a checkpoint frame.
pub const TAG_CHECKPOINT: [u8; 4] = *b"CKPT";
/// Tag of the end-of-stream frame.
pub const TAG_END: [u8; 4] = *b"CKND";
/// Trailer magic.
pub const TRAILER_MAGIC: [u8; 4] = *b"CKTR";
/// Bytes in a checkpoint frame's head.
pub const FRAME_HEAD_LEN: usize = 16;
/// Bytes in a trailer.
pub const TRAILER_LEN: usize = 48;
/// Bytes in the end frame.
pub const END_LEN: usize = 24;

/// The head of a checkpoint frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    /// Checkpoint sequence number: 0, 1, 2, ... without a gap.
    pub seq: u64,
}

impl FrameHead {
    /// The head's bytes.
    pub fn to_bytes(&self) -> [u8; FRAME_HEAD_LEN] {
        let mut b = [0u8; FRAME_HEAD_LEN];
        b[..4].copy_from_slice(&TAG_CHECKPOINT);
        b[8..].copy_from_slice(&self.seq.to_le_bytes());
        b
    }
}

/// A checkpoint's trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Checkpoint sequence number, equal to its frame's.
    pub seq: u64,
    /// Data-carrying PFN entries in the body.
    pub data_pages: u64,
    /// Digest of the checkpoint's pages after it is applied
    /// ([`super::Digest`]).
    pub digest: u128,
}

impl Trailer {
    /// The trailer's bytes; `frame_crc` is the check of the frame so far
    /// (from the header's check, over every byte from the tag up to the
    /// trailer).
    pub fn to_bytes(&self, frame_crc: u32) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[..4].copy_from_slice(&TRAILER_MAGIC);
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.data_pages.to_le_bytes());
        b[24..40].copy_from_slice(&self.digest.to_le_bytes());
        let check = crc(frame_crc, &b[..40]);
        b[40..44].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Parses a trailer whose frame so far checks to `frame_crc`, or says
    /// which field is wrong.
    pub fn from_bytes(b: &[u8; TRAILER_LEN], frame_crc: u32) -> Result<Trailer, &'static str> {
        if b[..4] != TRAILER_MAGIC {
            return Err("trailer magic");
        }
        if u32::from_le_bytes(le(b, 40)) != crc(frame_crc, &b[..40]) {
            return Err("frame check (the checkpoint is corrupt)");
        }
        if b[4..8] != [0; 4] || b[44..48] != [0; 4] {
            return Err("trailer reserved field");
        }
        Ok(Trailer {
            seq: u64::from_le_bytes(le(b, 8)),
            data_pages: u64::from_le_bytes(le(b, 16)),
            digest: u128::from_le_bytes(le(b, 24)),
        })
    }
}

/// The end of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndFrame {
    /// Checkpoints in the stream.
    pub checkpoints: u64,
}

impl EndFrame {
    /// The end frame's bytes for a stream whose header checks to `seed`.
    pub fn to_bytes(&self, seed: u32) -> [u8; END_LEN] {
        let mut b = [0u8; END_LEN];
        b[..4].copy_from_slice(&TAG_END);
        b[8..16].copy_from_slice(&self.checkpoints.to_le_bytes());
        let check = crc(seed, &b[..16]);
        b[16..20].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Parses an end frame of a stream whose header checks to `seed`.
    pub fn from_bytes(b: &[u8; END_LEN], seed: u32) -> Result<EndFrame, &'static str> {
        if b[..4] != TAG_END {
            return Err("end frame tag");
        }
        if u32::from_le_bytes(le(b, 16)) != crc(seed, &b[..16]) {
            return Err("end frame check (corrupt)");
        }
        if b[4..8] != [0; 4] || b[20..24] != [0; 4] {
            return Err("end frame reserved field");
        }
        Ok(EndFrame {
            checkpoints: u64::from_le_bytes(le(b, 8)),
        })
    }
}

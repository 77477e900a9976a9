//! The stream header (`docs/STREAM.md`, "Stream header"): what the stream is
//! for, written once at its start and checked before anything else is read.
//!
//! ```text
//!  0  magic        "CKPTSTRM"
//!  8  version      u32 = 2
//! 12  header_len   u32 = 56
//! 16  guest_pages  u64   every PFN of the stream is below it (<= 2^28)
//! 24  page_size    u32 = 4096
//! 28  reserved     u32 = 0
//! 32  stream_id    16 bytes, chosen at random by the sender
//! 48  check        u32   CRC-32C of bytes 0..48; seeds every frame's check
//! 52  reserved     u32 = 0
//! ```

use super::{crc, le, StreamError};
use crate::page::PFN_LIMIT;
use ckpt_simd::PAGE_SIZE;

/// Stream header magic.
pub const STREAM_MAGIC: &[u8; 8] = b"CKPTSTRM";
/// The stream format version this build writes and reads.
pub const STREAM_VERSION: u32 = 2;
/// Bytes in the stream header.
pub const HEADER_LEN: usize = 56;

/// The stream header's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Pages of the guest; every PFN must be below it.
    pub guest_pages: u64,
    /// The stream's identity: a backup holding a checkpoint of one stream
    /// refuses another unless told to start over.
    pub stream_id: u128,
}

impl StreamHeader {
    /// A header for a guest of `guest_pages` pages with a fresh random id.
    pub fn new(guest_pages: u64) -> StreamHeader {
        StreamHeader {
            guest_pages,
            stream_id: random_id(),
        }
    }

    /// The header's bytes, its check included.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(STREAM_MAGIC);
        b[8..12].copy_from_slice(&STREAM_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.guest_pages.to_le_bytes());
        b[24..28].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        b[32..48].copy_from_slice(&self.stream_id.to_le_bytes());
        let check = crc(0, &b[..48]);
        b[48..52].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// The header's check, which every frame's check continues from, so
    /// that a frame of one stream never passes in another.
    pub fn check(&self) -> u32 {
        u32::from_le_bytes(le(&self.to_bytes(), 48))
    }

    /// Parses a header, or says which field is wrong.
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Result<StreamHeader, StreamError> {
        let bad = |field| Err(StreamError::BadHeader { field });
        if &b[..8] != STREAM_MAGIC {
            return Err(StreamError::NotAStream { magic: le(b, 0) });
        }
        let version = u32::from_le_bytes(le(b, 8));
        if version != STREAM_VERSION {
            return Err(StreamError::UnsupportedVersion { found: version });
        }
        if u32::from_le_bytes(le(b, 12)) != HEADER_LEN as u32 {
            return bad("header length");
        }
        if u32::from_le_bytes(le(b, 48)) != crc(0, &b[..48]) {
            return bad("check (the header is corrupt)");
        }
        let guest_pages = u64::from_le_bytes(le(b, 16));
        if guest_pages == 0 || guest_pages > PFN_LIMIT {
            return bad("guest pages");
        }
        if u32::from_le_bytes(le(b, 24)) != PAGE_SIZE as u32 {
            return bad("page size");
        }
        if b[28..32] != [0; 4] || b[52..56] != [0; 4] {
            return bad("reserved");
        }
        Ok(StreamHeader {
            guest_pages,
            stream_id: u128::from_le_bytes(le(b, 32)),
        })
    }
}

/// 128 random bits from the operating system.
fn random_id() -> u128 {
    let mut b = [0u8; 16];
    // Without an entropy source, a clock-derived id still tells streams apart.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return t ^ (std::process::id() as u128) << 96;
    }
    u128::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_byte_flip_is_rejected() {
        let h = StreamHeader {
            guest_pages: 4096,
            stream_id: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        };
        let b = h.to_bytes();
        assert_eq!(StreamHeader::from_bytes(&b).unwrap(), h);
        for i in 0..HEADER_LEN {
            for bit in 0..8 {
                let mut c = b;
                c[i] ^= 1 << bit;
                assert!(StreamHeader::from_bytes(&c).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn ids_differ() {
        assert_ne!(
            StreamHeader::new(1).stream_id,
            StreamHeader::new(1).stream_id
        );
    }
}

//! The heartbeat frame (`docs/STREAM.md`, "Heartbeat frame"): sent by a
//! primary between checkpoints while it has nothing else to send, so that
//! its backup can tell an idle primary from a lost one.
//!
//! ```text
//!  0 "CKHB"
//!  4 reserved u32 = 0
//!  8 next_seq u64    checkpoints completed so far in the stream
//! 16 number u64      0, 1, 2, ... per stream, without a gap
//! 24 check u32       CRC-32C of bytes 0..24, continuing from the header's check
//! 28 reserved u32 = 0
//! ```
//!
//! A heartbeat carries no checkpoint data and changes nothing a receiver
//! commits; the reader checks it and reports it ([`super::Event::Heartbeat`]).

use super::{crc, le};

/// Tag of a heartbeat frame.
pub const TAG_HEARTBEAT: [u8; 4] = *b"CKHB";
/// Bytes in a heartbeat frame.
pub const HEARTBEAT_LEN: usize = 32;

/// A heartbeat frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Checkpoints completed in the stream before the heartbeat: the
    /// sequence number of the next checkpoint.
    pub next_seq: u64,
    /// The heartbeat's number in its stream: 0, 1, 2, ...
    pub number: u64,
}

impl Heartbeat {
    /// The frame's bytes for a stream whose header checks to `seed`.
    pub fn to_bytes(&self, seed: u32) -> [u8; HEARTBEAT_LEN] {
        let mut b = [0u8; HEARTBEAT_LEN];
        b[..4].copy_from_slice(&TAG_HEARTBEAT);
        b[8..16].copy_from_slice(&self.next_seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.number.to_le_bytes());
        let check = crc(seed, &b[..24]);
        b[24..28].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Parses a heartbeat frame of a stream whose header checks to `seed`,
    /// or says which field is wrong.
    pub fn from_bytes(b: &[u8; HEARTBEAT_LEN], seed: u32) -> Result<Heartbeat, &'static str> {
        if b[..4] != TAG_HEARTBEAT {
            return Err("heartbeat tag");
        }
        if u32::from_le_bytes(le(b, 24)) != crc(seed, &b[..24]) {
            return Err("heartbeat check (corrupt)");
        }
        if b[4..8] != [0; 4] || b[28..32] != [0; 4] {
            return Err("heartbeat reserved field");
        }
        Ok(Heartbeat {
            next_seq: u64::from_le_bytes(le(b, 8)),
            number: u64::from_le_bytes(le(b, 16)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_exact_bytes_and_every_bit_flip_rejected() {
        let h = Heartbeat {
            next_seq: 0x0102_0304_0506_0708,
            number: 9,
        };
        let seed = 0xdead_beef;
        let b = h.to_bytes(seed);
        assert_eq!(&b[..4], b"CKHB");
        assert_eq!(&b[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[16..24], &[9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            u32::from_le_bytes(b[24..28].try_into().unwrap()),
            crc32c::crc32c_append(seed, &b[..24])
        );
        assert_eq!(Heartbeat::from_bytes(&b, seed), Ok(h));
        // Another stream's heartbeat does not pass.
        assert!(Heartbeat::from_bytes(&b, seed ^ 1).is_err());
        for i in 0..HEARTBEAT_LEN {
            for bit in 0..8 {
                let mut c = b;
                c[i] ^= 1 << bit;
                assert!(
                    Heartbeat::from_bytes(&c, seed).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
    }
}

//! The back channel (`docs/REPLICATION.md`, "Back channel"): what a backup
//! sends its primary on the same connection, in the other direction. Every
//! message is 40 bytes with a CRC-32C continuing from the stream header's
//! check, so that a reply to one stream never passes in another.
//!
//! ```text
//!  0 tag u8[4]     "CKAK" acknowledgement, "CKHR" heartbeat reply, "CKNO" refusal
//!  4 code u32      refusal reason (1 guest size, 2 another primary, 3 rejected), else 0
//!  8 value u64     ACK: sequence number; CKHR: heartbeat number; CKNO: detail
//! 16 digest u128   ACK: the committed checkpoint's page digest; else 0
//! 32 check u32     CRC-32C of bytes 0..32, continuing from the header's check
//! 36 reserved u32 = 0
//! ```

use std::fmt;

/// Bytes of one back-channel message.
pub const REPLY_LEN: usize = 40;
const TAG_ACK: [u8; 4] = *b"CKAK";
const TAG_HEARTBEAT_REPLY: [u8; 4] = *b"CKHR";
const TAG_REFUSAL: [u8; 4] = *b"CKNO";

/// Why a backup refused a stream or a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The stream is for a guest of another size than the backup's image.
    GuestSize {
        /// Pages of the backup's image.
        image_pages: u64,
    },
    /// The backup's image holds another primary's checkpoint, and the
    /// backup was not told to start over.
    OtherPrimary,
    /// A checkpoint broke a rule of the stream or its digest did not
    /// match; the backup keeps its image and closes the connection.
    Rejected {
        /// The checkpoint's sequence number.
        seq: u64,
    },
}

impl Refusal {
    /// Whether a primary can go on with a new stream (only a rejected
    /// checkpoint; the other refusals hold for every stream it could send).
    pub fn retryable(&self) -> bool {
        matches!(self, Refusal::Rejected { .. })
    }

    fn code(&self) -> (u32, u64) {
        match *self {
            Refusal::GuestSize { image_pages } => (1, image_pages),
            Refusal::OtherPrimary => (2, 0),
            Refusal::Rejected { seq } => (3, seq),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::GuestSize { image_pages } => write!(
                f,
                "the backup's image is for a guest of {image_pages} pages, not this one"
            ),
            Refusal::OtherPrimary => write!(
                f,
                "the backup's image holds another primary's checkpoint (start the backup with --new to replace it)"
            ),
            Refusal::Rejected { seq } => {
                write!(f, "the backup rejected checkpoint {seq} and kept its image")
            }
        }
    }
}

/// One back-channel message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Checkpoint `seq` of the stream has been received whole, verified
    /// and committed.
    Ack {
        /// Its sequence number.
        seq: u64,
        /// Its page digest, as the trailer gave it and the backup verified.
        digest: u128,
    },
    /// The answer to heartbeat `number`.
    HeartbeatReply {
        /// The heartbeat's number.
        number: u64,
    },
    /// The backup refuses the stream (or a checkpoint of it) and closes
    /// the connection.
    Refusal(Refusal),
}

impl Reply {
    /// The message's bytes for a stream whose header checks to `seed`.
    pub fn to_bytes(&self, seed: u32) -> [u8; REPLY_LEN] {
        let mut b = [0u8; REPLY_LEN];
        let (tag, code, value, digest) = match *self {
            Reply::Ack { seq, digest } => (TAG_ACK, 0, seq, digest),
            Reply::HeartbeatReply { number } => (TAG_HEARTBEAT_REPLY, 0, number, 0),
            Reply::Refusal(r) => {
                let (code, value) = r.code();
                (TAG_REFUSAL, code, value, 0)
            }
        };
        b[..4].copy_from_slice(&tag);
        b[4..8].copy_from_slice(&code.to_le_bytes());
        b[8..16].copy_from_slice(&value.to_le_bytes());
        b[16..32].copy_from_slice(&digest.to_le_bytes());
        let check = crc32c::crc32c_append(seed, &b[..32]);
        b[32..36].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Parses a message of a stream whose header checks to `seed`, or says
    /// which field is wrong.
    pub fn from_bytes(b: &[u8; REPLY_LEN], seed: u32) -> Result<Reply, &'static str> {
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        if u32_at(32) != crc32c::crc32c_append(seed, &b[..32]) {
            return Err("check (corrupt, or a reply to another stream)");
        }
        if u32_at(36) != 0 {
            return Err("reserved field");
        }
        let code = u32_at(4);
        let value = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
        let digest = u128::from_le_bytes(b[16..32].try_into().expect("16 bytes"));
        let tag: [u8; 4] = b[..4].try_into().expect("4 bytes");
        if tag != TAG_ACK && digest != 0 {
            return Err("digest of a message that carries none");
        }
        if tag != TAG_REFUSAL && code != 0 {
            return Err("code of a message that carries none");
        }
        match tag {
            TAG_ACK => Ok(Reply::Ack { seq: value, digest }),
            TAG_HEARTBEAT_REPLY => Ok(Reply::HeartbeatReply { number: value }),
            TAG_REFUSAL => match code {
                1 => Ok(Reply::Refusal(Refusal::GuestSize { image_pages: value })),
                2 if value == 0 => Ok(Reply::Refusal(Refusal::OtherPrimary)),
                3 => Ok(Reply::Refusal(Refusal::Rejected { seq: value })),
                _ => Err("refusal code"),
            },
            _ => Err("tag"),
        }
    }
}

/// The lineage of a stream id: the half a primary keeps across its
/// streams (bits 64..127), so that a backup knows a reconnecting primary.
pub fn lineage(stream_id: u128) -> u64 {
    (stream_id >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_with_exact_bytes() {
        let seed = 0x1234_5678;
        let ack = Reply::Ack {
            seq: 7,
            digest: 0x00ff_0000_0000_0000_0000_0000_0000_0001,
        };
        let b = ack.to_bytes(seed);
        assert_eq!(&b[..4], b"CKAK");
        assert_eq!(&b[4..8], &[0; 4]);
        assert_eq!(&b[8..16], &[7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(b[16], 1);
        assert_eq!(b[30], 0xff);
        assert_eq!(
            u32::from_le_bytes(b[32..36].try_into().unwrap()),
            crc32c::crc32c_append(seed, &b[..32])
        );
        assert_eq!(&b[36..], &[0; 4]);
        for m in [
            ack,
            Reply::HeartbeatReply { number: 3 },
            Reply::Refusal(Refusal::GuestSize { image_pages: 99 }),
            Reply::Refusal(Refusal::OtherPrimary),
            Reply::Refusal(Refusal::Rejected { seq: 5 }),
        ] {
            let b = m.to_bytes(seed);
            assert_eq!(Reply::from_bytes(&b, seed), Ok(m));
            assert!(Reply::from_bytes(&b, seed + 1).is_err(), "{m:?}");
            for i in 0..REPLY_LEN {
                for bit in 0..8 {
                    let mut c = b;
                    c[i] ^= 1 << bit;
                    assert!(Reply::from_bytes(&c, seed).is_err(), "{m:?} byte {i}");
                }
            }
        }
    }

    #[test]
    fn lineage_is_the_high_half() {
        assert_eq!(
            lineage(0xaaaa_bbbb_cccc_dddd_0000_0000_0000_0001),
            0xaaaa_bbbb_cccc_dddd
        );
    }
}

//! What can be wrong with a record stream beyond what the legacy body can
//! get wrong (`docs/RECORDS.md`, "Reader rules"). The reader reports these
//! inside [`crate::StreamError::Record`]; the rules both formats share
//! (limits, PFN entries, truncation) keep their own variants there.

use thiserror::Error;

/// Why a record stream, or one of its records, was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The input does not start with the image header's marker.
    #[error("not a record stream (marker {marker:#018x})")]
    NotARecordStream {
        /// The first eight bytes, big-endian.
        marker: u64,
    },
    /// An image header field is wrong.
    #[error("bad image header: {field} is {found:#x}")]
    BadImageHeader {
        /// The field.
        field: &'static str,
        /// Its value.
        found: u64,
    },
    /// A version of Xen's specification this build does not read.
    #[error("record stream version {found} is not supported: this build reads version 3")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// A big-endian stream (options bit 0).
    #[error("big-endian record streams are not supported")]
    BigEndian,
    /// A domain header field is wrong.
    #[error("bad domain header: {field} is {found:#x}")]
    BadDomainHeader {
        /// The field.
        field: &'static str,
        /// Its value.
        found: u64,
    },
    /// A CKPT_STREAM_INFO field is wrong.
    #[error("bad CKPT_STREAM_INFO: {field} is {found:#x}")]
    BadStreamInfo {
        /// The field.
        field: &'static str,
        /// Its value.
        found: u64,
    },
    /// The check over the headers does not match: they are corrupt.
    #[error("the stream's headers are corrupt: check {stored:#010x}, computed {computed:#010x}")]
    HeaderCheck {
        /// The check in CKPT_STREAM_INFO.
        stored: u32,
        /// The check of the bytes read.
        computed: u32,
    },
    /// A checkpoint's check does not match: some byte of it is corrupt.
    #[error("checkpoint corrupt: CKPT_INTEGRITY at offset {offset} has check {stored:#010x}, its records give {computed:#010x}")]
    IntegrityMismatch {
        /// Offset of the integrity record.
        offset: u64,
        /// The check in the record.
        stored: u32,
        /// The check of the bytes read.
        computed: u32,
    },
    /// A mandatory record this build does not know: the restore must fail.
    #[error("unknown mandatory record type {ty:#010x} at offset {offset}")]
    UnknownRecord {
        /// Where its header starts.
        offset: u64,
        /// Its type.
        ty: u32,
    },
    /// A record of Xen's that a ckpt stream does not carry.
    #[error("record {name} ({ty:#x}) at offset {offset} is not carried by a ckpt stream")]
    UnsupportedRecord {
        /// Where its header starts.
        offset: u64,
        /// Its type.
        ty: u32,
        /// Its name in Xen's specification.
        name: &'static str,
    },
    /// A record where the stream's layout does not allow it.
    #[error("{name} at offset {offset}: {rule}")]
    Misplaced {
        /// Where its header starts.
        offset: u64,
        /// Its name.
        name: &'static str,
        /// The rule of the layout it breaks.
        rule: &'static str,
    },
    /// A record with a wrong length or field.
    #[error("bad record {ty:#010x} at offset {offset}: {field}")]
    BadRecord {
        /// Where its header starts.
        offset: u64,
        /// Its type.
        ty: u32,
        /// What is wrong.
        field: &'static str,
    },
    /// A record larger than the limits allow for its kind.
    #[error("record {ty:#010x} at offset {offset} has a body of {len} bytes, above {limit}")]
    RecordTooLarge {
        /// Where its header starts.
        offset: u64,
        /// Its type.
        ty: u32,
        /// Its body length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A compressed page record uses the zstd stage the stream did not
    /// negotiate, or an unknown stage.
    #[error("compressed page record at offset {offset} uses stage {stage}, which the stream's CKPT_STREAM_INFO does not allow")]
    StageNotNegotiated {
        /// Where its header starts.
        offset: u64,
        /// The stage code.
        stage: u32,
    },
    /// The zstd stage's payload does not decompress.
    #[error("compressed page record at offset {offset}: zstd payload is invalid ({reason})")]
    Decompress {
        /// Where the payload starts.
        offset: u64,
        /// zstd's reason.
        reason: &'static str,
    },
    /// The zstd stage's payload decompresses to another length than the
    /// record states.
    #[error("compressed page record at offset {offset}: zstd payload gives {found} bytes, the record states {expected}")]
    StageLength {
        /// Where the payload starts.
        offset: u64,
        /// The encodings' length the record states.
        expected: u64,
        /// What the payload decompressed to.
        found: u64,
    },
}

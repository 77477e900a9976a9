//! The stream's error type: every way a stream can break a rule of
//! `docs/STREAM.md` or `docs/FORMAT.md` §4, each with the offset where it
//! happened (bytes from the start of the stream).

use ckpt_simd::DecodeError;
use std::io;
use thiserror::Error;

/// Why a stream or one of its checkpoints was rejected.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Reading failed for a reason other than the end of the input.
    #[error("read failed at offset {offset}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The input ended in the middle of something.
    #[error("stream truncated at offset {offset} while reading {context}")]
    Truncated {
        /// Where the input ended.
        offset: u64,
        /// What was being read.
        context: &'static str,
    },
    /// The input does not start with the stream magic.
    #[error("not a ckpt stream (magic {magic:02x?})")]
    NotAStream {
        /// The first eight bytes.
        magic: [u8; 8],
    },
    /// A stream version this build does not read.
    #[error("stream version {found} is not supported: this build reads version 2 (re-create the stream with this version of ckpt)")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// A header field is wrong.
    #[error("bad stream header (offset 0, 56 bytes): {field}")]
    BadHeader {
        /// The field.
        field: &'static str,
    },
    /// The header claims a guest larger than the reader accepts.
    #[error("stream is for a guest of {guest_pages} pages, more than the {limit} pages this backup accepts (max_guest_pages)")]
    GuestTooLarge {
        /// Pages the header claims.
        guest_pages: u64,
        /// The limit.
        limit: u64,
    },
    /// A frame tag that is neither a checkpoint nor the end.
    #[error("unknown frame tag {tag:02x?} at offset {offset}")]
    UnknownFrame {
        /// Where.
        offset: u64,
        /// The tag.
        tag: [u8; 4],
    },
    /// A frame head, trailer or end frame with a wrong field.
    #[error("bad frame at offset {offset}: {field}")]
    BadFrame {
        /// Where the frame part starts.
        offset: u64,
        /// What is wrong.
        field: &'static str,
    },
    /// A checkpoint out of sequence.
    #[error("checkpoint at offset {offset} has sequence {found}, expected {expected}")]
    Sequence {
        /// Where.
        offset: u64,
        /// Expected sequence number.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// Bytes after the end frame.
    #[error("bytes after the end of the stream at offset {offset}")]
    TrailingBytes {
        /// Where they start.
        offset: u64,
    },
    /// A PFN batch of more than 1024 entries.
    #[error("PFN batch of {count} entries at offset {offset} (at most 1024)")]
    BatchTooLarge {
        /// Where.
        offset: u64,
        /// Entries claimed.
        count: i32,
    },
    /// A PFN entry with an unknown page type or reserved bits set.
    #[error("PFN entry {entry:#018x} at offset {offset}: {reason}")]
    BadEntry {
        /// Where.
        offset: u64,
        /// The entry.
        entry: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A PFN at or past the guest's size.
    #[error("pfn {pfn:#x} at offset {offset} is outside the guest ({guest_pages} pages)")]
    PfnOutOfRange {
        /// Where.
        offset: u64,
        /// The PFN.
        pfn: u64,
        /// Guest pages.
        guest_pages: u64,
    },
    /// The same PFN twice in one checkpoint.
    #[error("pfn {pfn:#x} at offset {offset} appears twice in one checkpoint")]
    DuplicatePfn {
        /// Where.
        offset: u64,
        /// The PFN.
        pfn: u64,
    },
    /// More PFN entries than the configured limit.
    #[error("checkpoint exceeds {limit} PFN entries at offset {offset}")]
    TooManyEntries {
        /// Where.
        offset: u64,
        /// The limit.
        limit: u64,
    },
    /// A COMPRESSED_DATA chunk longer than the configured limit.
    #[error("compressed chunk of {len} bytes at offset {offset} exceeds {limit}")]
    ChunkTooLarge {
        /// Where.
        offset: u64,
        /// Claimed length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The checkpoint's buffered data would exceed the configured limit.
    #[error("checkpoint data exceeds {limit} bytes at offset {offset}")]
    CheckpointTooLarge {
        /// Where.
        offset: u64,
        /// The limit.
        limit: u64,
    },
    /// More toolstack chunks than the configured limit.
    #[error("checkpoint exceeds {limit} toolstack chunks at offset {offset}")]
    TooManyToolstackChunks {
        /// Where.
        offset: u64,
        /// The limit.
        limit: u64,
    },
    /// COMPRESSED_DATA before compression was enabled (Format A).
    #[error("compressed data at offset {offset} before ENABLE_COMPRESSION")]
    CompressedBeforeEnable {
        /// Where.
        offset: u64,
    },
    /// ENABLE_COMPRESSION while compression is already on.
    #[error("ENABLE_COMPRESSION at offset {offset} while compression is already enabled")]
    EnableTwice {
        /// Where.
        offset: u64,
    },
    /// More compressed pages than data-carrying PFN entries so far.
    #[error("compressed page {page} at offset {offset} has no PFN entry yet ({entries} data entries seen)")]
    PagesBeforeEntries {
        /// Where.
        offset: u64,
        /// Index of the page in the checkpoint.
        page: u64,
        /// Data-carrying entries seen.
        entries: u64,
    },
    /// A malformed page encoding, or one split across two chunks.
    #[error("page {page} at offset {offset}: {source}")]
    BadPage {
        /// Where the encoding starts.
        offset: u64,
        /// Index of the page in the checkpoint.
        page: u64,
        /// The rule it broke.
        #[source]
        source: DecodeError,
    },
    /// End of body with fewer compressed pages than data entries.
    #[error("body ends with {pages} compressed pages for {entries} data entries (checkpoint at offset {offset})")]
    MissingPages {
        /// Where the checkpoint's frame starts.
        offset: u64,
        /// Data-carrying entries.
        entries: u64,
        /// Pages received.
        pages: u64,
    },
    /// A chunk type the stream may not carry.
    #[error("unknown chunk type {ty} at offset {offset}")]
    UnknownChunk {
        /// Where.
        offset: u64,
        /// The type.
        ty: i32,
    },
    /// A toolstack chunk the engine does not carry (TMEM).
    #[error("unsupported chunk type {ty} at offset {offset}")]
    UnsupportedChunk {
        /// Where.
        offset: u64,
        /// The type.
        ty: i32,
    },
    /// A rule only a record stream has (`docs/RECORDS.md`) was broken.
    #[error(transparent)]
    Record(#[from] super::records::RecordError),
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> io::Error {
        match e {
            StreamError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

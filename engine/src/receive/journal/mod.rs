//! A crash-consistent guest image file for a backup (`docs/REPLICATION.md`,
//! "The backup's image"): each checkpoint is committed through a
//! write-ahead journal of its page encodings, so that a backup killed at
//! any instant comes back holding exactly one complete checkpoint.
//!
//! Three files sit together: the image (`PATH`, page `p` at offset
//! `p * 4096`), its state (`PATH.state`: guest size and the checkpoint the
//! image holds, in two alternating slots; [`state`]) and the journal
//! (`PATH.journal`: one record per checkpoint, the checkpoint's verified
//! page encodings; [`record`]). [`DurableImage`] ([`image`]) commits a
//! verified checkpoint ([`crate::GuestMemory::commit_checkpoint`]):
//!
//! 1. the encodings (`docs/FORMAT.md` §1), as the stream carried them, are
//!    written to the journal with a record header; fsync;
//! 2. the commit record (a CRC-32C over the whole record) is written;
//!    fsync. The checkpoint is now committed: the acknowledgement may leave;
//! 3. the encodings are decoded into the image;
//! 4. later, in [`crate::Replica::settle`], before the next commit: the
//!    image is synced and the state slot rewritten (the journal is retired).
//!
//! Opening an image recovers it: a committed journal record not yet
//! retired is applied again (an encoding writes absolute bytes only, so
//! applying it over a page torn half way through applying it gives the
//! checkpoint's page), the page digest of what it produced is checked, and
//! an uncommitted record is dropped; [`Recovery`] says which.
//! [`Durability::Grouped`] writes each record with one fsync and retires
//! the journal only every so many bytes; [`Durability::InPlace`] has no
//! journal at all and exists to measure what the journal costs.

mod image;
mod record;
mod state;

pub use image::DurableImage;

use crate::send::Latency;
use ckpt_simd::DecodeError;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// How a [`DurableImage`] makes a commit durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Write-ahead journal in the strict order: journal data, fsync,
    /// commit record, fsync, apply; image fsync and retire in
    /// [`crate::Replica::settle`], before the next commit. Four syncs per
    /// checkpoint, two before the acknowledgement.
    Journal,
    /// Write-ahead journal with one fsync per checkpoint (data and commit
    /// record together: the record's CRC tells a torn record from a whole
    /// one), records appended, and the image synced and the journal
    /// retired once it holds `retire_bytes`. Recovery applies every record
    /// since the last retirement, in order.
    Grouped {
        /// Journal bytes after which it is retired.
        retire_bytes: u64,
    },
    /// No journal: pages are written straight into the image and synced.
    /// A crash in the middle of a commit leaves a torn image; this exists
    /// to measure what the journal costs.
    InPlace,
}

/// Why a committed journal record cannot be applied.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordFault {
    /// A page entry's PFN is outside the guest.
    #[error("pfn {pfn} is outside the guest of {guest_pages} pages")]
    PfnOutsideGuest {
        /// The PFN.
        pfn: u64,
        /// Pages of the guest.
        guest_pages: u64,
    },
    /// A page entry's encoding length is 0, longer than any encoding, or
    /// past the record's encoding bytes.
    #[error("an encoding of {len} bytes (1..={max} here)")]
    EncodingLength {
        /// The length the entry gives.
        len: u64,
        /// The most it could be.
        max: u64,
    },
    /// A page entry's bytes are not one encoding of that length.
    #[error("the encoding is not one page encoding of its length: {source}")]
    Encoding {
        /// What the decoder found.
        #[source]
        source: DecodeError,
    },
    /// A page entry's encoding ends before its length.
    #[error("the encoding ends after {used} of its {len} bytes")]
    EncodingShort {
        /// The length the entry gives.
        len: u64,
        /// Bytes the encoding uses.
        used: u64,
    },
    /// The entries' encodings do not add up to the header's count.
    #[error("the page entries hold {found} bytes of encodings, the header says {expected}")]
    EncodedBytes {
        /// The header's count.
        expected: u64,
        /// What the entries hold.
        found: u64,
    },
    /// A record of the earlier format, which journaled whole pages.
    #[error("the record journals whole pages, the format of an earlier version of the engine: recover the image with that version first")]
    WholePages,
}

/// Why an image could not be opened, created or recovered.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The image has no state file: it is not an image this engine made.
    #[error("{path} exists but is not a ckpt image (no {path}.state); move it away or choose another path")]
    NotAnImage {
        /// The image.
        path: PathBuf,
    },
    /// There is no image at the path.
    #[error("{path}: no image (no {path}.state)")]
    Missing {
        /// The image.
        path: PathBuf,
    },
    /// An image already exists at the path.
    #[error("{path}: an image already exists")]
    Exists {
        /// The image.
        path: PathBuf,
    },
    /// The state or the image is damaged beyond what recovery repairs.
    #[error("{path}: damaged image: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A committed journal record (its commit record checks) that cannot
    /// be applied; nothing of it was written.
    #[error("{path}: the committed record at offset {record} cannot be applied (at offset {offset}): {fault}")]
    BadRecord {
        /// The journal.
        path: PathBuf,
        /// Offset of the record.
        record: u64,
        /// Offset of what is wrong.
        offset: u64,
        /// What is wrong.
        #[source]
        fault: RecordFault,
    },
    /// The journal was applied again, and the pages it produced do not
    /// have the checkpoint's page digest: the image held something else
    /// than the checkpoint before it, so it is not that checkpoint now.
    #[error("{path}: after applying the journal again, the pages of checkpoint {seq} do not have its digest (expected {expected:032x}, found {computed:032x})")]
    DigestMismatch {
        /// The image.
        path: PathBuf,
        /// The checkpoint.
        seq: u64,
        /// Its page digest.
        expected: u128,
        /// The digest of the image's pages.
        computed: u128,
    },
    /// A guest size outside 1..=2^28 pages.
    #[error("a guest of {pages} pages is outside 1..=2^28")]
    GuestSize {
        /// Pages asked for.
        pages: u64,
    },
}

/// An uncommitted checkpoint found in the journal and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discarded {
    /// Its stream.
    pub stream_id: u128,
    /// Its sequence number.
    pub seq: u64,
    /// Journal bytes dropped.
    pub bytes: u64,
}

/// What opening an image did to recover it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Committed checkpoints the journal held that were applied to the
    /// image again, oldest first.
    pub replayed: Vec<crate::Commit>,
    /// Page encodings and zeroed pages applied by those.
    pub replayed_pages: u64,
    /// Pages of the last checkpoint replayed whose page digest was
    /// recomputed from the image after the replay, and matched: every page
    /// that checkpoint carried (0 when nothing was replayed).
    pub digest_pages: u64,
    /// An uncommitted checkpoint that was dropped.
    pub discarded: Option<Discarded>,
}

impl Recovery {
    /// Whether the image was left clean (nothing to replay or drop).
    pub fn clean(&self) -> bool {
        self.replayed.is_empty() && self.discarded.is_none()
    }
}

/// What committing has cost so far.
#[derive(Clone, Debug, Default)]
pub struct CommitStats {
    /// Checkpoints committed.
    pub commits: u64,
    /// Pages committed (data-carrying entries, EMPTY included).
    pub pages: u64,
    /// Pages zeroed (checkpoint 0 of a new stream over an older one).
    pub zeroed: u64,
    /// Bytes written to the journal.
    pub journal_bytes: u64,
    /// fsync calls (journal, image and state).
    pub syncs: u64,
    /// Per checkpoint, the whole commit call: the journal and its syncs,
    /// then the apply (the acknowledgement leaves after it).
    pub commit: Latency,
    /// Per checkpoint, writing the journal record until its commit record
    /// is durable (the checkpoint is committed from there on).
    pub journal: Latency,
    /// Per checkpoint, decoding the encodings into the image.
    pub apply: Latency,
    /// Per retirement: syncing the image and writing the state.
    pub settle: Latency,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// The state file of the image at `path`.
pub fn state_path(path: &Path) -> PathBuf {
    with_suffix(path, ".state")
}

/// The journal of the image at `path`.
pub fn journal_path(path: &Path) -> PathBuf {
    with_suffix(path, ".journal")
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u128_at(b: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(b[at..at + 16].try_into().expect("16 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

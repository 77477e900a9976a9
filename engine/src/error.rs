//! The sending side's error type.

use crate::page::PageType;
use thiserror::Error;

/// Why the sender refused a call or stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SendError {
    /// A PFN at or past the guest's page count.
    #[error("pfn {pfn:#x} is outside the guest ({guest_pages} pages)")]
    PfnOutOfRange {
        /// The PFN given.
        pfn: u64,
        /// The guest's page count.
        guest_pages: u64,
    },
    /// The same PFN twice in one checkpoint: the stream's receiver would
    /// reject the checkpoint.
    #[error("pfn {pfn:#x} was already given in this checkpoint")]
    DuplicatePfn {
        /// The PFN given.
        pfn: u64,
    },
    /// A page of a type that carries no data was given page contents.
    #[error("pfn {pfn:#x} has type {ty:?}, which carries no page data")]
    NoPageData {
        /// The PFN given.
        pfn: u64,
        /// Its type.
        ty: PageType,
    },
    /// A page of a type that carries data was given no contents.
    #[error("pfn {pfn:#x} has type {ty:?}, which needs page data")]
    MissingPageData {
        /// The PFN given.
        pfn: u64,
        /// Its type.
        ty: PageType,
    },
    /// A toolstack chunk of a type the stream does not carry, or whose
    /// payload has the wrong size for its type.
    #[error("toolstack chunk {id} with a {len}-byte payload is not supported")]
    ToolstackChunk {
        /// Chunk type.
        id: i32,
        /// Payload length given.
        len: usize,
    },
    /// The checkpoint would exceed a limit of the backup's.
    #[error("the checkpoint would exceed the backup's limit of {limit} {what}")]
    Limit {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: u64,
    },
    /// Options that cannot work together.
    #[error("invalid sender options: {0}")]
    Options(String),
    /// A call out of order (for example a page outside a checkpoint).
    #[error("out of order: {0}")]
    Sequence(&'static str),
    /// Writing the stream failed; the sender stops.
    #[error("writing the stream failed: {0}")]
    Write(#[source] std::io::Error),
    /// The sender has stopped (after an error or `finish`).
    #[error("the sender has stopped")]
    Finished,
    /// The worker threads could not be started.
    #[error("cannot start worker threads: {0}")]
    ThreadPool(String),
}

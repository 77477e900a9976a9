//! The checkpoint engine: delta cache, staging ring, compression, and the
//! stream between a Remus sender and its backup.
//!
//! Wire formats are specified in `FORMAT.md` (shipped beside the project as
//! `shared/FORMAT.md`); each module's documentation names the section it
//! implements.
#![deny(missing_docs)]

pub mod cache;
pub mod compress;
pub mod config;
pub mod extent;
pub mod memory;
pub mod page;
pub mod pipeline;
pub mod receiver;
#[cfg(target_os = "linux")]
pub mod record;
pub mod ring;
pub mod stream;
pub mod synth;
pub mod trace;

pub use compress::{BatchCompressor, Chunk, ChunkView, CompressOptions, Compressor, FormCounts};
pub use page::{PageBuf, PageType};

use thiserror::Error;

/// Errors of the sending side.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A PFN at or past the guest's page count.
    #[error("pfn {pfn:#x} is outside the guest ({guest_pages} pages)")]
    PfnOutOfRange {
        /// The PFN given.
        pfn: u64,
        /// The guest's page count.
        guest_pages: u64,
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
    ForeignChunk {
        /// Chunk type.
        id: i32,
        /// Payload length given.
        len: usize,
    },
    /// A call out of order (for example a page outside a checkpoint).
    #[error("out of order: {0}")]
    Sequence(&'static str),
    /// Writing the stream failed; the sender stops.
    #[error("writing the stream failed: {0}")]
    Write(std::io::Error),
    /// The sender has stopped (after an error or `finish`).
    #[error("the sender has stopped")]
    Finished,
    /// The worker threads could not be started.
    #[error("cannot start worker threads: {0}")]
    ThreadPool(String),
}

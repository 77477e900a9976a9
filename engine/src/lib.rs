//! The checkpoint engine a toolstack links: it compresses a Remus primary's
//! checkpoints into a stream and, on the backup, verifies and commits them.
//!
//! The formats are described in the project's `docs/`: the page encoding,
//! the delta cache, the staging ring and the legacy save-stream body in
//! `docs/FORMAT.md`, the stream around them in `docs/STREAM.md`, and the
//! second wire format, the record stream (Xen's migration stream v3 with
//! the project's records and an optional zstd stage), in `docs/RECORDS.md`.
//! A [`Sender`] writes the one [`SenderOptions::format`] names; a
//! [`Receiver`] reads either. Each module names the section it implements.
//!
//! # Sending
//!
//! A [`Sender`] writes to any [`std::io::Write`]. Per checkpoint, while the
//! guest is paused: [`Sender::begin_checkpoint`], one [`Sender::page`] per
//! dirty page, [`Sender::end_checkpoint`]; then the guest resumes while the
//! pages are compressed and written. The first checkpoint (the whole memory)
//! goes out uncompressed and switches compression on:
//!
//! ```
//! use ckpt_engine::{Codec, PageType, Sender, SenderOptions};
//!
//! let guest_pages = 1024;
//! let mut memory = vec![[0u8; 4096]; guest_pages];
//! let mut sender = Sender::new(Vec::new(), Codec::best(), &SenderOptions::new(guest_pages as u64))?;
//!
//! // The initial image, uncompressed.
//! sender.begin_checkpoint()?;
//! for (pfn, page) in memory.iter().enumerate() {
//!     sender.page(pfn as u64, PageType::Normal, Some(page))?;
//! }
//! sender.enable_compression()?;
//! sender.end_checkpoint()?;
//!
//! // The guest runs, dirties a few pages; the next checkpoint sends them.
//! for pfn in [3, 700] {
//!     memory[pfn][..8].copy_from_slice(b"changed!");
//! }
//! sender.begin_checkpoint()?;
//! for pfn in [3u64, 700] {
//!     sender.page(pfn, PageType::Normal, Some(&memory[pfn as usize]))?;
//! }
//! sender.end_checkpoint()?;
//!
//! let (stream, stats, _latencies) = sender.finish()?;
//! assert_eq!((stats.checkpoints, stats.pages), (2, 1024 + 2));
//! # assert_eq!(stream.len() as u64, stats.output_bytes);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Receiving
//!
//! A [`Receiver`] reads from any [`std::io::Read`] and commits each checkpoint
//! to a [`GuestMemory`] only once it has arrived whole and its digest
//! matches; a rejected checkpoint leaves memory as the last one left it.
//!
//! ```
//! use ckpt_engine::{Codec, GuestMemory, Limits, PageType, Receiver, Sender, SenderOptions, SparseMemory};
//!
//! # let mut sender = Sender::new(Vec::new(), Codec::best(), &SenderOptions::new(16))?;
//! # sender.begin_checkpoint()?;
//! # sender.page(5, PageType::Normal, Some(&[7u8; 4096]))?;
//! # sender.enable_compression()?;
//! # sender.end_checkpoint()?;
//! # let (stream, _, _) = sender.finish()?;
//! // `stream` is what a Sender wrote: a socket, a file, or bytes in memory.
//! let mut receiver = Receiver::new(&stream[..], Limits::default(), Codec::best())?;
//! let mut memory = SparseMemory::new(receiver.guest_pages());
//! while let Some(checkpoint) = receiver.next_checkpoint(&mut memory)? {
//!     println!("checkpoint {} committed: {} pages", checkpoint.seq, checkpoint.data_pages);
//! }
//! assert_eq!(memory.page(5), &[7u8; 4096]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Replicating
//!
//! [`replicate::Primary`] and [`replicate::Backup`] put a sender and a
//! receiver on the two ends of a TCP connection, with acknowledgements,
//! heartbeats, reconnects and failover; a [`DurableImage`] is a backup's
//! crash-consistent image file. `docs/REPLICATION.md` describes them, with
//! an example that runs as a test.
#![deny(missing_docs)]

mod error;
pub mod page;
mod receive;
pub mod replicate;
mod send;
pub mod stream;

#[cfg(feature = "lab")]
pub mod lab;

pub use ckpt_simd::{Codec, Kernel, Page, PAGE_SIZE};
pub use error::SendError;
pub use page::{PageBuf, PageType};
pub use receive::extent;
#[cfg(target_os = "linux")]
pub use receive::ExtentMemory;
#[cfg(unix)]
pub use receive::{
    journal_path, state_path, CommitStats, Discarded, Durability, DurableImage, ImageError,
    RecordFault, Recovery,
};
pub use receive::{
    CheckpointInfo, Commit, GuestMemory, ImageFile, PageEncoding, ReceiveError, Receiver, Replica,
    SparseMemory, SuperpagePolicy, SuperpageReport, VerifiedCheckpoint,
};
pub use send::{
    CachePolicy, ChunkView, CompressOptions, Compressor, FormCounts, Latencies, Latency, SendStats,
    Sender, SenderOptions, UnknownPolicy, MAX_CACHE_PAGES,
};
pub use stream::{
    Event, Format, Limits, StreamError, StreamHeader, ZstdPlacement, ZstdStage, DEFAULT_ZSTD_LEVEL,
};

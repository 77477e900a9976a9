//! The primary's side: a Remus sender's pages in, a checkpoint stream out.
//!
//! - [`ring`]: the staging ring the guest-paused copy fills (`docs/FORMAT.md` §3);
//! - [`cache`]: the delta cache of last-sent copies, its policies, seeding
//!   and adaptive size (§2);
//! - [`plan`]: every cache decision of a batch, made before encoding (§2);
//! - [`encode`]: the batch encoded on the worker pool (§1);
//! - [`sender`]: the `Sender`, whose [`pipeline`] overlaps staging, encoding
//!   and writing;
//! - [`sink`]: the writer stage's seam to either wire format;
//! - [`compressor`]: the page-level front end without a stream.

pub(crate) mod cache;
mod compressor;
mod encode;
mod options;
mod pipeline;
mod plan;
pub(crate) mod ring;
mod sender;
mod sink;
mod stats;

pub use cache::{CachePolicy, UnknownPolicy, MAX_CACHE_PAGES};
pub use compressor::{ChunkView, Compressor};
#[cfg(feature = "lab")]
pub(crate) use encode::{BatchCompressor, Chunk};
pub use options::CompressOptions;
pub use sender::{Sender, SenderOptions};
pub use stats::{FormCounts, Latencies, Latency, SendStats};

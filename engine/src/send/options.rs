//! The compressing stage's settings, shared by the delta cache, the batch
//! encoder and both front ends (docs/FORMAT.md §2 for the cache they size).

use super::cache::CachePolicy;

/// Settings of the compressing stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressOptions {
    /// Delta cache capacity in pages; with `cache_budget`, the size the
    /// cache starts from when it is not seeded.
    pub cache_pages: usize,
    /// Which pages the delta cache keeps (LRU reproduces the original).
    pub cache_policy: CachePolicy,
    /// Size the cache after each checkpoint to the guest's re-dirtied
    /// working set, within this many bytes (copies, bookkeeping and ghost
    /// entries). `None`: fixed at `cache_pages`.
    pub cache_budget: Option<u64>,
    /// Store the pages of uncompressed checkpoints (Format A) in the cache:
    /// the backup holds them, so they serve as references from the first
    /// compressed checkpoint on.
    pub seed_cache: bool,
    /// Worker threads for the page kernels (1: no parallelism).
    pub threads: usize,
    /// Pin each worker thread to its own core.
    pub pin_threads: bool,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            cache_pages: 8192,
            cache_policy: CachePolicy::Lru,
            cache_budget: None,
            seed_cache: true,
            threads: 1,
            pin_threads: false,
        }
    }
}

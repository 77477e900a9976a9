//! What a replacement policy decides, and the policies there are
//! (`docs/FORMAT.md` §2.5).
//!
//! A policy keeps the order of the PFNs it holds and decides hits, victims
//! and where a new page goes; the [index](super::CacheIndex) hands out slots
//! (a free one before any eviction, `docs/FORMAT.md` §2.2) and the arena
//! holds the copies. Every policy gives a valid stream: the receiver does
//! not see which pages the sender chose to send FULL (§2.1).

use std::fmt;
use std::str::FromStr;

/// Which pages the delta cache keeps when it is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CachePolicy {
    /// Least recently used: the original's policy, the only one that
    /// reproduces the golden vectors byte for byte.
    #[default]
    Lru,
    /// S3-FIFO (Yang et al., SOSP 2023): a small FIFO that a page leaves
    /// unless it is re-dirtied while there, a main FIFO with a 2-bit
    /// frequency per page, and a ghost FIFO of PFNs that admits a page
    /// straight to the main FIFO when it comes back.
    S3Fifo,
    /// LIRS (Jiang and Zhang, SIGMETRICS 2002): pages ranked by the recency
    /// of their last two dirtyings; 99% of the cache holds the pages with
    /// the shortest reuse distance and the rest turns over. Keeps a fixed
    /// part of a re-dirtied set larger than the cache, where LRU keeps none.
    Lirs,
}

impl CachePolicy {
    /// Every policy, the default (LRU) first.
    pub const ALL: [CachePolicy; 3] = [CachePolicy::Lru, CachePolicy::S3Fifo, CachePolicy::Lirs];

    /// The names [`CachePolicy::from_str`] takes, in the order of [`CachePolicy::ALL`].
    pub const NAMES: [&'static str; 3] = ["lru", "s3fifo", "lirs"];

    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            CachePolicy::Lru => "lru",
            CachePolicy::S3Fifo => "s3fifo",
            CachePolicy::Lirs => "lirs",
        }
    }

    /// Ghost entries (PFNs without a copy) the policy keeps at most, per
    /// page of capacity. They count against the cache's memory budget.
    pub(crate) fn ghosts_per_page(self) -> f64 {
        match self {
            CachePolicy::Lru => 0.0,
            // The ghost FIFO is as long as the main FIFO (90%).
            CachePolicy::S3Fifo => 1.0 - super::s3fifo::SMALL_SHARE,
            // Non-resident entries of the stack, at most one per page.
            CachePolicy::Lirs => 1.0,
        }
    }

    pub(super) fn build(self, capacity: usize) -> Box<dyn Policy> {
        match self {
            CachePolicy::Lru => Box::new(super::lru::Lru::default()),
            CachePolicy::S3Fifo => Box::new(super::s3fifo::S3Fifo::new(capacity)),
            CachePolicy::Lirs => Box::new(super::lirs::Lirs::new(capacity)),
        }
    }
}

impl fmt::Display for CachePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a policy's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown cache policy {name:?} (known: {})", CachePolicy::NAMES.join(", "))]
pub struct UnknownPolicy {
    /// The name given.
    pub name: String,
}

impl FromStr for CachePolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CachePolicy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPolicy { name: s.into() })
    }
}

/// The decisions of one replacement policy. Every call is made in send
/// order by the planner, before any page kernel runs.
pub(super) trait Policy: Send + Sync {
    /// A normal page of `pfn`: when its copy is resident, records the use
    /// and returns its slot.
    fn access(&mut self, pfn: u64) -> Option<u32>;
    /// Stores `pfn`, which is not resident, in `slot`. `seeded`: the page
    /// comes from an uncompressed checkpoint and was never re-dirtied.
    fn insert(&mut self, pfn: u64, slot: u32, seeded: bool);
    /// Chooses a resident page, drops its copy and returns its PFN and
    /// slot. Only called when something is resident.
    fn evict(&mut self) -> (u64, u32);
    /// Drops the copy of `pfn` (a raw page); returns its slot.
    fn remove(&mut self, pfn: u64) -> Option<u32>;
    /// The slot of `pfn`'s copy, leaving the policy's state as it is.
    fn peek(&self, pfn: u64) -> Option<u32>;
    /// Pages resident.
    fn resident(&self) -> usize;
    /// Entries remembered, resident and ghosts.
    fn entries(&self) -> usize;
    /// The capacity changed (resident pages already fit): resize the
    /// policy's own shares and ghost lists.
    fn set_capacity(&mut self, capacity: usize);
    /// `pfn`'s copy moved to `slot`.
    fn relocate(&mut self, pfn: u64, slot: u32);
    /// Every resident (PFN, slot), in no particular order.
    fn residents(&self) -> Vec<(u64, u32)>;
    /// Resident PFNs from the most to the least likely to stay.
    fn by_rank(&self) -> Vec<u64>;
}

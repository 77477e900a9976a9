//! The sender's delta cache (`docs/FORMAT.md` §2; its policies, seeding and
//! adaptive size: §2.5): the last-sent copy of up to `capacity` pages, keyed
//! by PFN.
//!
//! - The [index](CacheIndex) decides hits, misses and victims: a
//!   [`CachePolicy`] (LRU, the original's and the default; S3-FIFO; LIRS)
//!   orders the PFNs, and the index hands out slots, a free one (never used,
//!   or freed by a raw page) before any eviction, exactly as the original's
//!   freed slot moved to the LRU end (§2.2).
//! - The [arena](arena) holds the copies in segments, so that it grows
//!   without moving a page.
//! - Seeding: pages sent uncompressed (Format A, §4.4) are copies the
//!   backup holds, so they may enter the cache ([`seed`](DeltaCache::seed)).
//! - Sizing: with a memory budget, a [sizer](sizer) resizes the cache after
//!   each checkpoint toward the guest's re-dirtied working set.
//!
//! Every policy is held to the same memory: a fixed size of `N` pages buys
//! what LRU needs for `N` pages (copies and bookkeeping), and a policy that
//! keeps ghost entries holds fewer copies to pay for them.

mod arena;
mod lirs;
mod lists;
mod lru;
mod policy;
mod s3fifo;
mod seed;
mod sizer;

pub(crate) use arena::SlotTable;
pub use policy::{CachePolicy, UnknownPolicy};

use self::arena::Arena;
use self::lists::ENTRY_BYTES;
use self::policy::Policy;
use self::sizer::{Sizer, SIZER_BYTES_PER_PAGE};
use super::options::CompressOptions;
use crate::page::PageBuf;
use ckpt_simd::PAGE_SIZE;

/// What [`CacheIndex::lookup`] decided for a normal page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The PFN is cached in this slot: encode EMPTY or DELTA against it.
    Hit(u32),
    /// The PFN was not cached; it now owns this slot (a free one, or the
    /// slot of the PFN named in `evicted`): send FULL, store.
    Miss {
        /// The slot the page is stored in.
        slot: u32,
        /// The PFN whose copy the slot held, if one was evicted.
        evicted: Option<u64>,
    },
}

/// The cache's bookkeeping: which PFN owns which slot, and which goes next.
pub(crate) struct CacheIndex {
    policy: Box<dyn Policy>,
    free: Vec<u32>,
    fresh: u32,
    capacity: u32,
    sizer: Option<Sizer>,
    /// Pages looked up (not seeded) since the last checkpoint ended.
    uses: usize,
}

impl CacheIndex {
    fn new(policy: CachePolicy, capacity: usize, sizer: Option<Sizer>) -> CacheIndex {
        CacheIndex {
            policy: policy.build(capacity),
            free: Vec::new(),
            fresh: 0,
            capacity: capacity as u32,
            sizer,
            uses: 0,
        }
    }

    /// Drops the copy of `pfn` (a raw page was staged); its slot is reused
    /// by the next miss. Returns whether a copy was dropped.
    pub(crate) fn invalidate(&mut self, pfn: u64) -> bool {
        match self.policy.remove(pfn) {
            Some(slot) => {
                self.free.push(slot);
                true
            }
            None => false,
        }
    }

    /// Looks `pfn` up for a normal page, recording the use or giving it a
    /// slot.
    pub(crate) fn lookup(&mut self, pfn: u64) -> Lookup {
        self.use_page(pfn, false)
    }

    /// Like [`CacheIndex::lookup`], for a page of an uncompressed
    /// checkpoint: the caller stores the page in the slot either way.
    pub(crate) fn seed(&mut self, pfn: u64) -> Lookup {
        self.use_page(pfn, true)
    }

    #[inline]
    fn use_page(&mut self, pfn: u64, seeded: bool) -> Lookup {
        self.uses += !seeded as usize;
        if let Some(sizer) = &mut self.sizer {
            sizer.observe(pfn);
        }
        if let Some(slot) = self.policy.access(pfn) {
            return Lookup::Hit(slot);
        }
        let (slot, evicted) = if let Some(slot) = self.free.pop() {
            (slot, None)
        } else if self.fresh < self.capacity {
            self.fresh += 1;
            (self.fresh - 1, None)
        } else {
            let (old, slot) = self.policy.evict();
            (slot, Some(old))
        };
        self.policy.insert(pfn, slot, seeded);
        Lookup::Miss { slot, evicted }
    }
}

/// Most pages a cache may hold: slots are numbered with `u32`, and a
/// cache larger than 2^28 pages (1 TiB) would outnumber every PFN.
pub const MAX_CACHE_PAGES: usize = 1 << 28;

/// Fewest pages the adaptive size goes down to.
const MIN_AUTO_PAGES: usize = 1024;

/// Bytes one page of capacity costs under `policy`: the copy, its entry,
/// and the ghost entries the policy keeps per page.
fn page_cost(policy: CachePolicy) -> f64 {
    (PAGE_SIZE + ENTRY_BYTES) as f64 + ENTRY_BYTES as f64 * policy.ghosts_per_page()
}

/// The delta cache: index and page copies.
pub(crate) struct DeltaCache {
    index: CacheIndex,
    arena: Arena,
    policy: CachePolicy,
    seeding: bool,
}

#[allow(dead_code)] // some accessors serve tests and the lab only
impl DeltaCache {
    /// An LRU cache of exactly `capacity` pages (at least 1, at most
    /// [`MAX_CACHE_PAGES`]).
    pub(crate) fn new(capacity: usize) -> DeltaCache {
        DeltaCache::with_policy(CachePolicy::Lru, capacity)
    }

    /// A cache of exactly `capacity` pages under `policy`, its ghosts not
    /// counted.
    pub(crate) fn with_policy(policy: CachePolicy, capacity: usize) -> DeltaCache {
        let capacity = capacity.clamp(1, MAX_CACHE_PAGES);
        let mut arena = Arena::default();
        arena.grow_to(capacity);
        DeltaCache {
            index: CacheIndex::new(policy, capacity, None),
            arena,
            policy,
            seeding: false,
        }
    }

    /// The cache `opts` asks for: `cache_pages` pages' worth of LRU memory
    /// (ghosts paid for with copies), or, with a budget, sized adaptively
    /// within it, from the whole budget when seeding (the image is the only
    /// evidence there is) or else from `cache_pages`.
    pub(crate) fn with_options(opts: &CompressOptions) -> DeltaCache {
        let policy = opts.cache_policy;
        let (capacity, sizer) = match opts.cache_budget {
            None => {
                let bytes = opts.cache_pages as f64 * page_cost(CachePolicy::Lru);
                ((bytes / page_cost(policy)) as usize, None)
            }
            Some(budget) => {
                let per_page = page_cost(policy) + SIZER_BYTES_PER_PAGE as f64;
                let max = ((budget as f64 / per_page) as usize).clamp(1, MAX_CACHE_PAGES);
                let start = if opts.seed_cache {
                    max
                } else {
                    opts.cache_pages.min(max)
                };
                (start, Some(Sizer::new(MIN_AUTO_PAGES, max)))
            }
        };
        let capacity = capacity.clamp(1, MAX_CACHE_PAGES);
        // A fixed cache takes its memory now, as a single arena did; an
        // adaptive one as it grows.
        let mut arena = Arena::default();
        if sizer.is_none() {
            arena.grow_to(capacity);
        }
        DeltaCache {
            index: CacheIndex::new(policy, capacity, sizer),
            arena,
            policy,
            seeding: opts.seed_cache,
        }
    }

    /// The policy in force.
    pub(crate) fn policy(&self) -> CachePolicy {
        self.policy
    }

    /// Whether uncompressed pages seed the cache.
    pub(crate) fn seeding(&self) -> bool {
        self.seeding
    }

    /// Pages the cache holds at most.
    pub(crate) fn capacity(&self) -> usize {
        self.index.capacity as usize
    }

    /// Pages cached now.
    pub(crate) fn len(&self) -> usize {
        self.index.policy.resident()
    }

    /// True when nothing is cached.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory the cache holds: the slots used so far, every entry (ghosts
    /// too) and the sizer's bookkeeping.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.index.fresh as usize * PAGE_SIZE
            + self.index.policy.entries() * ENTRY_BYTES
            + self.index.sizer.as_ref().map_or(0, Sizer::bytes)
    }

    /// Whether `pfn` is cached (its standing is left as it is).
    pub(crate) fn contains(&self, pfn: u64) -> bool {
        self.index.policy.peek(pfn).is_some()
    }

    /// Drops the cached copy of `pfn` (a raw page was staged); its slot is
    /// reused by the next miss. Returns whether a copy was dropped.
    pub(crate) fn invalidate(&mut self, pfn: u64) -> bool {
        self.index.invalidate(pfn)
    }

    /// Looks `pfn` up for a normal page, recording the use or giving it a
    /// slot.
    pub(crate) fn lookup(&mut self, pfn: u64) -> Lookup {
        self.index.lookup(pfn)
    }

    /// The cached copy of `pfn`, if any (its standing is left as it is).
    pub(crate) fn peek(&self, pfn: u64) -> Option<&PageBuf> {
        self.index.policy.peek(pfn).map(|s| self.arena.get(s))
    }

    /// The page copy in `slot`.
    pub(crate) fn slot(&self, slot: u32) -> &PageBuf {
        self.arena.get(slot)
    }

    /// The index and the slots apart, for a batch of `batch` pages: the
    /// slots cover every slot the batch's plan can hand out, so that
    /// decisions can go on while encoders hold slots.
    pub(crate) fn split_mut(&mut self, batch: usize) -> (&mut CacheIndex, Slots<'_>) {
        let index = &mut self.index;
        let want = (index.capacity as usize).min(index.fresh as usize + batch);
        let got = self.arena.grow_to(want);
        if got < want {
            // The system refused memory: hold what there is.
            index.capacity = (got.max(index.fresh as usize).max(1)) as u32;
            index.policy.set_capacity(index.capacity as usize);
            while index.policy.resident() > index.capacity as usize {
                let (_, slot) = index.policy.evict();
                index.free.push(slot);
            }
        }
        let limit = want.min(got);
        (
            index,
            Slots {
                arena: &mut self.arena,
                limit,
            },
        )
    }

    /// Ends a checkpoint: with a budget, resizes the cache for the next
    /// one, then adds the segments that a compressed checkpoint as large as
    /// this one would take fresh slots in, so that the next batch finds its
    /// memory ready (backing fresh memory is slow; this runs on the compress
    /// thread between checkpoints, while the guest runs). Returns the
    /// capacity.
    pub(crate) fn end_checkpoint(&mut self) -> usize {
        let cap = self.capacity();
        let resident = self.len();
        if let Some(next) = self
            .index
            .sizer
            .as_mut()
            .map(|s| s.end_checkpoint(cap, resident))
        {
            self.resize(next);
        }
        let ahead = self.index.fresh as usize + std::mem::take(&mut self.index.uses);
        self.arena.grow_to(ahead.min(self.capacity()));
        self.capacity()
    }

    /// Sets the capacity to `pages`: shrinking evicts as the policy says,
    /// moves copies out of the slots above the new size and gives their
    /// segments back; growing only raises the limit (segments are added as
    /// batches need them).
    pub(crate) fn resize(&mut self, pages: usize) {
        let new = pages.clamp(1, MAX_CACHE_PAGES);
        let index = &mut self.index;
        index.policy.set_capacity(new);
        while index.policy.resident() > new {
            let (_, slot) = index.policy.evict();
            index.free.push(slot);
        }
        if (index.fresh as usize) > new {
            let mut used = vec![false; new];
            let mut movers = Vec::new();
            for (pfn, slot) in index.policy.residents() {
                match used.get_mut(slot as usize) {
                    Some(u) => *u = true,
                    None => movers.push((pfn, slot)),
                }
            }
            let mut free: Vec<u32> = (0..new as u32)
                .rev()
                .filter(|&s| !used[s as usize])
                .collect();
            for (pfn, from) in movers {
                let to = free
                    .pop()
                    .expect("the pages resident fit below the new size");
                self.arena.copy(from, to);
                index.policy.relocate(pfn, to);
            }
            index.free = free;
            index.fresh = new as u32;
        }
        self.arena.shrink_to(new);
        index.capacity = new as u32;
    }

    /// Cached PFNs from the most to the least likely to stay.
    pub(crate) fn pfns_by_rank(&self) -> Vec<u64> {
        self.index.policy.by_rank()
    }
}

/// The slots of the arena that one batch's plan may hand out.
pub(crate) struct Slots<'a> {
    arena: &'a mut Arena,
    limit: usize,
}

impl Slots<'_> {
    /// A table handing out each slot once (one per wave of the plan).
    pub(crate) fn table(&mut self) -> SlotTable<'_> {
        self.arena.table(self.limit)
    }
}

#[cfg(test)]
mod tests;

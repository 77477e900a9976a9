//! The sender's delta cache (`docs/FORMAT.md` §2): the last-sent copy of up to
//! `capacity` pages, keyed by PFN, evicted least-recently-used.
//!
//! The index is an [`lru::LruCache`] from PFN to a slot of one contiguous,
//! cache-line-aligned arena that holds the page copies. Slots freed by raw
//! pages go to a free list that the next miss uses before anything is
//! evicted, exactly as the original's freed slot moved to the LRU end.

use crate::page::PageBuf;
use lru::LruCache;

/// What [`CacheIndex::lookup`] decided for a normal page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The PFN is cached in this slot (now most recently used): encode
    /// EMPTY or DELTA against it.
    Hit(u32),
    /// The PFN was not cached; it now owns this slot (a free one, or the
    /// least recently used PFN's, named in `evicted`): send FULL, store.
    Miss {
        /// The slot the page is stored in.
        slot: u32,
        /// The PFN whose copy the slot held, if one was evicted.
        evicted: Option<u64>,
    },
}

/// The cache's bookkeeping: which PFN owns which slot, in LRU order.
pub(crate) struct CacheIndex {
    lru: LruCache<u64, u32>,
    free: Vec<u32>,
    fresh: u32,
    capacity: u32,
}

impl CacheIndex {
    /// Drops the copy of `pfn` (a raw page was staged); its slot is reused
    /// by the next miss. Returns whether a copy was dropped.
    pub(crate) fn invalidate(&mut self, pfn: u64) -> bool {
        match self.lru.pop(&pfn) {
            Some(slot) => {
                self.free.push(slot);
                true
            }
            None => false,
        }
    }

    /// Looks `pfn` up for a normal page, promoting it or giving it a slot.
    pub(crate) fn lookup(&mut self, pfn: u64) -> Lookup {
        if let Some(&slot) = self.lru.get(&pfn) {
            return Lookup::Hit(slot);
        }
        let (slot, evicted) = if let Some(slot) = self.free.pop() {
            (slot, None)
        } else if self.fresh < self.capacity {
            self.fresh += 1;
            (self.fresh - 1, None)
        } else {
            let (old, slot) = self.lru.pop_lru().expect("a full cache has an LRU entry");
            (slot, Some(old))
        };
        self.lru.put(pfn, slot);
        Lookup::Miss { slot, evicted }
    }
}

/// Most pages a cache may hold: slots are numbered with `u32`, and a
/// cache larger than 2^28 pages (1 TiB) would outnumber every PFN.
pub const MAX_CACHE_PAGES: usize = 1 << 28;

/// LRU cache of page copies.
pub(crate) struct DeltaCache {
    index: CacheIndex,
    arena: Box<[PageBuf]>,
}

#[allow(dead_code)] // some accessors serve tests and the lab only
impl DeltaCache {
    /// A cache of `capacity` pages (at least 1, at most [`MAX_CACHE_PAGES`]).
    pub(crate) fn new(capacity: usize) -> DeltaCache {
        let capacity = capacity.clamp(1, MAX_CACHE_PAGES);
        DeltaCache {
            index: CacheIndex {
                lru: LruCache::unbounded(),
                free: Vec::new(),
                fresh: 0,
                capacity: capacity as u32,
            },
            arena: PageBuf::arena(capacity),
        }
    }

    /// Pages the cache holds at most.
    pub(crate) fn capacity(&self) -> usize {
        self.arena.len()
    }

    /// Pages cached now.
    pub(crate) fn len(&self) -> usize {
        self.index.lru.len()
    }

    /// True when nothing is cached.
    pub(crate) fn is_empty(&self) -> bool {
        self.index.lru.is_empty()
    }

    /// Whether `pfn` is cached (does not change its recency).
    pub(crate) fn contains(&self, pfn: u64) -> bool {
        self.index.lru.contains(&pfn)
    }

    /// Drops the cached copy of `pfn` (a raw page was staged); its slot is
    /// reused by the next miss. Returns whether a copy was dropped.
    pub(crate) fn invalidate(&mut self, pfn: u64) -> bool {
        self.index.invalidate(pfn)
    }

    /// Looks `pfn` up for a normal page, promoting it or giving it a slot.
    pub(crate) fn lookup(&mut self, pfn: u64) -> Lookup {
        self.index.lookup(pfn)
    }

    /// The cached copy of `pfn`, if any (does not change its recency).
    pub(crate) fn peek(&self, pfn: u64) -> Option<&PageBuf> {
        self.index
            .lru
            .peek(&pfn)
            .map(|&slot| &self.arena[slot as usize])
    }

    /// The page copy in `slot`.
    pub(crate) fn slot(&self, slot: u32) -> &PageBuf {
        &self.arena[slot as usize]
    }

    /// The index and the arena apart, so that decisions can go on while
    /// encoders hold slots of the arena.
    pub(crate) fn split_mut(&mut self) -> (&mut CacheIndex, &mut [PageBuf]) {
        (&mut self.index, &mut self.arena)
    }

    /// Cached PFNs from most to least recently used.
    pub(crate) fn pfns_by_recency(&self) -> impl Iterator<Item = u64> + '_ {
        self.index.lru.iter().map(|(&pfn, _)| pfn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_and_reuses_freed_slots_first() {
        let mut c = DeltaCache::new(3);
        for pfn in 0..3 {
            assert!(matches!(c.lookup(pfn), Lookup::Miss { evicted: None, .. }));
        }
        assert!(matches!(c.lookup(0), Lookup::Hit(_))); // order now 1, 2, 0
        assert!(matches!(
            c.lookup(9),
            Lookup::Miss {
                evicted: Some(1),
                ..
            }
        ));
        assert!(c.invalidate(2));
        assert!(!c.invalidate(2));
        // The freed slot serves the next miss: nothing is evicted.
        assert!(matches!(c.lookup(7), Lookup::Miss { evicted: None, .. }));
        assert!(matches!(
            c.lookup(8),
            Lookup::Miss {
                evicted: Some(0),
                ..
            }
        ));
        assert_eq!(c.len(), 3);
        assert_eq!(c.pfns_by_recency().collect::<Vec<_>>(), vec![8, 7, 9]);
    }
}

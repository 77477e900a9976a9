//! S3-FIFO (Yang, Zhang, Qiu, Yue, Rashmi: "FIFO queues are all you need
//! for cache eviction", SOSP 2023), for pages keyed by PFN
//! (`docs/FORMAT.md` §2.5).
//!
//! A new page enters the small FIFO (a tenth of the cache). When the small
//! FIFO is over its share, its oldest page leaves: to the main FIFO if it
//! was re-dirtied while there, else to the ghost FIFO, which keeps only its
//! PFN. A page that misses while its PFN is a ghost goes straight to the
//! main FIFO. The main FIFO evicts its oldest page whose 2-bit frequency is
//! zero, giving each page it passes over one more round and a lower count.
//! A hit only counts: no list moves on the encoding path.
//!
//! Why it fits dirty pages: much of what a guest dirties once is written
//! once (fresh allocations, buffers filled and dropped), and the small FIFO
//! drops those pages after a tenth of the cache's turnover instead of a
//! whole one, so they never push out the re-dirtied set.

use super::lists::{List, Store, NIL};
use super::policy::Policy;

/// The small FIFO's share of the capacity.
pub(crate) const SMALL_SHARE: f64 = 0.1;
/// Largest frequency a page counts to.
const FREQ_MAX: u8 = 3;

const SMALL: u8 = 1;
const MAIN: u8 = 2;
const GHOST: u8 = 3;

pub(super) struct S3Fifo {
    st: Store,
    small: List<0>,
    main: List<0>,
    ghost: List<0>,
    small_target: usize,
    ghost_limit: usize,
}

impl S3Fifo {
    pub(super) fn new(capacity: usize) -> S3Fifo {
        let mut p = S3Fifo {
            st: Store::default(),
            small: List::new(SMALL),
            main: List::new(MAIN),
            ghost: List::new(GHOST),
            small_target: 1,
            ghost_limit: 0,
        };
        p.set_capacity(capacity);
        p
    }

    fn trim_ghosts(&mut self) {
        while self.ghost.len() > self.ghost_limit {
            let n = self.ghost.pop_back(&mut self.st).expect("ghosts");
            self.st.release(n);
        }
    }
}

impl Policy for S3Fifo {
    fn access(&mut self, pfn: u64) -> Option<u32> {
        let n = self.st.find(pfn)?;
        let node = self.st.node_mut(n);
        if node.slot == NIL {
            return None;
        }
        node.tag = (node.tag + 1).min(FREQ_MAX);
        Some(node.slot)
    }

    fn insert(&mut self, pfn: u64, slot: u32, _seeded: bool) {
        match self.st.find(pfn) {
            Some(n) => {
                // A ghost: it came back within the main FIFO's turnover.
                self.ghost.unlink(&mut self.st, n);
                let node = self.st.node_mut(n);
                node.slot = slot;
                node.tag = 0;
                self.main.push_front(&mut self.st, n);
            }
            None => {
                let n = self.st.alloc(pfn, slot, 0);
                self.small.push_front(&mut self.st, n);
            }
        }
    }

    fn evict(&mut self) -> (u64, u32) {
        loop {
            if self.small.len() >= self.small_target || self.main.is_empty() {
                let n = self.small.pop_back(&mut self.st).expect("a resident page");
                let node = self.st.node_mut(n);
                if node.tag > 0 {
                    node.tag = 0;
                    self.main.push_front(&mut self.st, n);
                    continue;
                }
                let (pfn, slot) = (node.pfn, node.slot);
                node.slot = NIL;
                self.ghost.push_front(&mut self.st, n);
                self.trim_ghosts();
                return (pfn, slot);
            }
            let n = self.main.pop_back(&mut self.st).expect("a main page");
            let node = self.st.node_mut(n);
            if node.tag > 0 {
                node.tag -= 1;
                self.main.push_front(&mut self.st, n);
                continue;
            }
            let (pfn, slot) = (node.pfn, node.slot);
            self.st.release(n);
            return (pfn, slot);
        }
    }

    fn remove(&mut self, pfn: u64) -> Option<u32> {
        let n = self.st.find(pfn)?;
        let slot = self.st.node(n).slot;
        if slot == NIL {
            return None; // a ghost holds no bytes to go stale
        }
        if self.small.holds(&self.st, n) {
            self.small.unlink(&mut self.st, n);
        } else {
            self.main.unlink(&mut self.st, n);
        }
        self.st.release(n);
        Some(slot)
    }

    fn peek(&self, pfn: u64) -> Option<u32> {
        let slot = self.st.node(self.st.find(pfn)?).slot;
        (slot != NIL).then_some(slot)
    }

    fn resident(&self) -> usize {
        self.small.len() + self.main.len()
    }

    fn entries(&self) -> usize {
        self.st.len()
    }

    fn set_capacity(&mut self, capacity: usize) {
        self.small_target = ((capacity as f64 * SMALL_SHARE) as usize).max(1);
        self.ghost_limit = capacity.saturating_sub(self.small_target);
        self.trim_ghosts();
    }

    fn relocate(&mut self, pfn: u64, slot: u32) {
        if let Some(n) = self.st.find(pfn) {
            self.st.node_mut(n).slot = slot;
        }
    }

    fn residents(&self) -> Vec<(u64, u32)> {
        self.st
            .all()
            .map(|n| self.st.node(n))
            .filter(|node| node.slot != NIL)
            .map(|node| (node.pfn, node.slot))
            .collect()
    }

    fn by_rank(&self) -> Vec<u64> {
        let main = self.main.iter(&self.st);
        let small = self.small.iter(&self.st);
        main.chain(small).map(|n| self.st.node(n).pfn).collect()
    }
}

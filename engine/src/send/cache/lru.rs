//! Least recently used (`docs/FORMAT.md` §2.2): a hit moves the page to the
//! front, the victim is the page at the back. The original's policy, kept
//! decision for decision so that the golden vectors come out byte for byte.

use super::lists::{List, Store};
use super::policy::Policy;

/// One list, most recently used first.
pub(super) struct Lru {
    st: Store,
    list: List<0>,
}

impl Default for Lru {
    fn default() -> Self {
        Lru {
            st: Store::default(),
            list: List::new(1),
        }
    }
}

impl Policy for Lru {
    fn access(&mut self, pfn: u64) -> Option<u32> {
        let n = self.st.find(pfn)?;
        self.list.move_to_front(&mut self.st, n);
        Some(self.st.node(n).slot)
    }

    fn insert(&mut self, pfn: u64, slot: u32, _seeded: bool) {
        let n = self.st.alloc(pfn, slot, 0);
        self.list.push_front(&mut self.st, n);
    }

    fn evict(&mut self) -> (u64, u32) {
        let n = self
            .list
            .pop_back(&mut self.st)
            .expect("evict is called with pages resident");
        let node = *self.st.node(n);
        self.st.release(n);
        (node.pfn, node.slot)
    }

    fn remove(&mut self, pfn: u64) -> Option<u32> {
        let n = self.st.find(pfn)?;
        self.list.unlink(&mut self.st, n);
        let slot = self.st.node(n).slot;
        self.st.release(n);
        Some(slot)
    }

    fn peek(&self, pfn: u64) -> Option<u32> {
        self.st.find(pfn).map(|n| self.st.node(n).slot)
    }

    fn resident(&self) -> usize {
        self.list.len()
    }

    fn entries(&self) -> usize {
        self.st.len()
    }

    fn set_capacity(&mut self, _capacity: usize) {}

    fn relocate(&mut self, pfn: u64, slot: u32) {
        if let Some(n) = self.st.find(pfn) {
            self.st.node_mut(n).slot = slot;
        }
    }

    fn residents(&self) -> Vec<(u64, u32)> {
        self.st
            .all()
            .map(|n| (self.st.node(n).pfn, self.st.node(n).slot))
            .collect()
    }

    fn by_rank(&self) -> Vec<u64> {
        self.list
            .iter(&self.st)
            .map(|n| self.st.node(n).pfn)
            .collect()
    }
}

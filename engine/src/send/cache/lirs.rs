//! LIRS (Jiang and Zhang: "LIRS: an efficient low inter-reference recency
//! set replacement policy", SIGMETRICS 2002), for pages keyed by PFN
//! (`docs/FORMAT.md` §2.5).
//!
//! A page's inter-reference recency is the number of other pages dirtied
//! between its last two dirtyings. The pages with the lowest (LIR pages)
//! take 99% of the cache and are never evicted while they keep it; the
//! other 1% holds resident HIR pages in a FIFO queue, where every miss
//! evicts. The recency stack remembers recent pages, resident or not (a
//! non-resident one is a ghost: a PFN without a copy); a HIR page dirtied
//! again while still in the stack has a reuse distance shorter than the
//! oldest LIR page's, and takes its place. Stack pruning keeps a LIR page
//! at the bottom.
//!
//! Why it fits dirty pages: a guest re-dirties its working set in every
//! checkpoint, in PFN order. When that set is larger than the cache, LRU
//! evicts each page just before it comes round again and every page goes
//! FULL (`docs/FORMAT.md` §2.3); LIRS keeps a fixed LIR part of the set and
//! turns over only the rest.
//!
//! Pages seeded from the initial image enter as resident HIR pages in the
//! stack: a seed that is dirtied while its stack entry lasts becomes LIR.
//! Non-resident entries are bounded by the capacity, so that the ghosts
//! cost at most one entry per page.

use super::lists::{List, Store, NIL};
use super::policy::Policy;

const LIR: u8 = 0;
const HIR: u8 = 1;
const NONRES: u8 = 2;

/// The resident HIR pages' share of the capacity.
const HIR_SHARE: f64 = 0.01;

pub(super) struct Lirs {
    st: Store,
    /// The recency stack, most recent first (link pair 0).
    stack: List<0>,
    /// Resident HIR pages, newest first (link pair 1).
    queue: List<1>,
    /// Non-resident pages of the stack, newest first (link pair 1).
    nonres: List<1>,
    lir: usize,
    lir_limit: usize,
    nonres_limit: usize,
}

impl Lirs {
    pub(super) fn new(capacity: usize) -> Lirs {
        let mut p = Lirs {
            st: Store::default(),
            stack: List::new(1),
            queue: List::new(2),
            nonres: List::new(3),
            lir: 0,
            lir_limit: 0,
            nonres_limit: 0,
        };
        p.set_capacity(capacity);
        p
    }

    /// Removes HIR and non-resident entries from the stack's bottom until
    /// a LIR page is there.
    fn prune(&mut self) {
        while let Some(n) = self.stack.back() {
            match self.st.node(n).tag {
                LIR => break,
                HIR => self.stack.unlink(&mut self.st, n),
                _ => {
                    self.stack.unlink(&mut self.st, n);
                    self.nonres.unlink(&mut self.st, n);
                    self.st.release(n);
                }
            }
        }
    }

    /// The LIR page at the stack's bottom becomes a resident HIR page.
    fn demote_bottom(&mut self) {
        let b = self.stack.back().expect("a LIR page at the bottom");
        debug_assert_eq!(self.st.node(b).tag, LIR);
        self.stack.unlink(&mut self.st, b);
        self.st.node_mut(b).tag = HIR;
        self.queue.push_front(&mut self.st, b);
        self.lir -= 1;
        self.prune();
    }

    /// `n` (resident, off the queue) becomes a LIR page at the stack's top.
    fn promote(&mut self, n: u32) {
        self.st.node_mut(n).tag = LIR;
        self.lir += 1;
        if self.stack.holds(&self.st, n) {
            self.stack.move_to_front(&mut self.st, n);
        } else {
            self.stack.push_front(&mut self.st, n);
        }
        while self.lir > self.lir_limit {
            self.demote_bottom();
        }
        self.prune();
    }

    fn trim_nonres(&mut self) {
        while self.nonres.len() > self.nonres_limit {
            let n = self.nonres.pop_back(&mut self.st).expect("non-resident");
            self.stack.unlink(&mut self.st, n);
            self.st.release(n);
        }
    }
}

impl Policy for Lirs {
    fn access(&mut self, pfn: u64) -> Option<u32> {
        let n = self.st.find(pfn)?;
        let node = *self.st.node(n);
        match node.tag {
            LIR => {
                self.stack.move_to_front(&mut self.st, n);
                self.prune();
            }
            HIR if self.stack.holds(&self.st, n) => {
                self.queue.unlink(&mut self.st, n);
                self.promote(n);
            }
            HIR => {
                self.stack.push_front(&mut self.st, n);
                self.queue.move_to_front(&mut self.st, n);
            }
            _ => return None,
        }
        Some(node.slot)
    }

    fn insert(&mut self, pfn: u64, slot: u32, seeded: bool) {
        match self.st.find(pfn) {
            Some(n) => {
                // Non-resident, in the stack: dirtied again within the
                // oldest LIR page's recency.
                self.nonres.unlink(&mut self.st, n);
                self.st.node_mut(n).slot = slot;
                self.promote(n);
            }
            None if !seeded && self.lir < self.lir_limit => {
                let n = self.st.alloc(pfn, slot, LIR);
                self.lir += 1;
                self.stack.push_front(&mut self.st, n);
            }
            None => {
                let n = self.st.alloc(pfn, slot, HIR);
                self.stack.push_front(&mut self.st, n);
                self.queue.push_front(&mut self.st, n);
                // With no LIR page yet (a seeded cache), this HIR page is
                // the stack's bottom; the next demotion expects a LIR one.
                self.prune();
            }
        }
    }

    fn evict(&mut self) -> (u64, u32) {
        if self.queue.is_empty() {
            self.demote_bottom();
        }
        let v = self
            .queue
            .pop_back(&mut self.st)
            .expect("a resident HIR page");
        let node = *self.st.node(v);
        if self.stack.holds(&self.st, v) {
            let n = self.st.node_mut(v);
            n.tag = NONRES;
            n.slot = NIL;
            self.nonres.push_front(&mut self.st, v);
            self.trim_nonres();
        } else {
            self.st.release(v);
        }
        (node.pfn, node.slot)
    }

    fn remove(&mut self, pfn: u64) -> Option<u32> {
        let n = self.st.find(pfn)?;
        let node = *self.st.node(n);
        match node.tag {
            LIR => {
                self.stack.unlink(&mut self.st, n);
                self.lir -= 1;
                self.st.release(n);
                self.prune();
            }
            HIR => {
                self.queue.unlink(&mut self.st, n);
                if self.stack.holds(&self.st, n) {
                    self.stack.unlink(&mut self.st, n);
                }
                self.st.release(n);
            }
            _ => return None, // a ghost holds no bytes to go stale
        }
        Some(node.slot)
    }

    fn peek(&self, pfn: u64) -> Option<u32> {
        let slot = self.st.node(self.st.find(pfn)?).slot;
        (slot != NIL).then_some(slot)
    }

    fn resident(&self) -> usize {
        self.lir + self.queue.len()
    }

    fn entries(&self) -> usize {
        self.st.len()
    }

    fn set_capacity(&mut self, capacity: usize) {
        let hir = ((capacity as f64 * HIR_SHARE) as usize).max(1);
        self.lir_limit = capacity.saturating_sub(hir);
        self.nonres_limit = capacity;
        while self.lir > self.lir_limit {
            self.demote_bottom();
        }
        self.trim_nonres();
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
        let lir = self
            .stack
            .iter(&self.st)
            .filter(|&n| self.st.node(n).tag == LIR);
        let hir = self.queue.iter(&self.st);
        lir.chain(hir).map(|n| self.st.node(n).pfn).collect()
    }
}

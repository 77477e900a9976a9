//! The bookkeeping every policy is built on (the entries that
//! `docs/FORMAT.md` §2.5 counts against the cache's memory): one node per PFN the index
//! remembers (a resident copy, or a ghost that holds only the PFN), a hash
//! map from PFN to node, and intrusive doubly-linked lists over node numbers.
//!
//! A node has two pairs of links, so that it can sit in two lists at once
//! (LIRS keeps a page both in its recency stack and in its queue). Lists run
//! from the front (newest) to the back (oldest).

use rustc_hash::FxHashMap;

/// No node, no slot.
pub(super) const NIL: u32 = u32::MAX;

/// One remembered PFN.
#[derive(Clone, Copy, Debug)]
pub(super) struct Node {
    /// The PFN.
    pub pfn: u64,
    /// Its arena slot, or [`NIL`] for a ghost.
    pub slot: u32,
    /// Per link pair: previous (towards the front) and next node.
    links: [[u32; 2]; 2],
    /// Per link pair: the list the node is on (0: none).
    on: [u8; 2],
    /// The policy's own state (a frequency, a status).
    pub tag: u8,
}

/// Bookkeeping bytes one node costs at most: the node itself and its hash
/// map entry, counted twice because the map may be half empty after it
/// grows. Every policy counts its ghosts at this price too.
pub(crate) const ENTRY_BYTES: usize =
    std::mem::size_of::<Node>() + 2 * std::mem::size_of::<(u64, u32)>();

/// The nodes and the map from PFN to node.
#[derive(Default)]
pub(super) struct Store {
    nodes: Vec<Node>,
    free: Vec<u32>,
    map: FxHashMap<u64, u32>,
}

impl Store {
    /// The node of `pfn`, if it is remembered.
    #[inline]
    pub fn find(&self, pfn: u64) -> Option<u32> {
        self.map.get(&pfn).copied()
    }

    /// A new node for `pfn` (which must not be remembered yet), on no list.
    pub fn alloc(&mut self, pfn: u64, slot: u32, tag: u8) -> u32 {
        let node = Node {
            pfn,
            slot,
            links: [[NIL; 2]; 2],
            on: [0; 2],
            tag,
        };
        let n = match self.free.pop() {
            Some(n) => {
                self.nodes[n as usize] = node;
                n
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        let old = self.map.insert(pfn, n);
        debug_assert!(old.is_none(), "pfn {pfn} remembered twice");
        n
    }

    /// Forgets node `n` (it must be on no list).
    pub fn release(&mut self, n: u32) {
        let node = &self.nodes[n as usize];
        debug_assert_eq!(node.on, [0, 0], "released while linked");
        self.map.remove(&node.pfn);
        self.free.push(n);
    }

    #[inline]
    pub fn node(&self, n: u32) -> &Node {
        &self.nodes[n as usize]
    }

    #[inline]
    pub fn node_mut(&mut self, n: u32) -> &mut Node {
        &mut self.nodes[n as usize]
    }

    /// Nodes remembered (resident and ghosts).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every remembered node, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = u32> + '_ {
        self.map.values().copied()
    }
}

/// A list over link pair `L`, with its own non-zero `id`.
#[derive(Clone, Copy, Debug)]
pub(super) struct List<const L: usize> {
    id: u8,
    front: u32,
    back: u32,
    len: usize,
}

impl<const L: usize> List<L> {
    /// An empty list; `id` (not 0) tells which list a node is on.
    pub const fn new(id: u8) -> Self {
        List {
            id,
            front: NIL,
            back: NIL,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The oldest node.
    pub fn back(&self) -> Option<u32> {
        (self.back != NIL).then_some(self.back)
    }

    /// Whether node `n` is on this list.
    #[inline]
    pub fn holds(&self, st: &Store, n: u32) -> bool {
        st.node(n).on[L] == self.id
    }

    /// Puts `n` (on no list of this link pair) at the front.
    pub fn push_front(&mut self, st: &mut Store, n: u32) {
        let old = self.front;
        let node = st.node_mut(n);
        debug_assert_eq!(node.on[L], 0);
        node.on[L] = self.id;
        node.links[L] = [NIL, old];
        if old == NIL {
            self.back = n;
        } else {
            st.node_mut(old).links[L][0] = n;
        }
        self.front = n;
        self.len += 1;
    }

    /// Takes `n`, which is on this list, off it.
    pub fn unlink(&mut self, st: &mut Store, n: u32) {
        let node = st.node_mut(n);
        debug_assert_eq!(node.on[L], self.id);
        let [prev, next] = node.links[L];
        node.on[L] = 0;
        node.links[L] = [NIL; 2];
        if prev == NIL {
            self.front = next;
        } else {
            st.node_mut(prev).links[L][1] = next;
        }
        if next == NIL {
            self.back = prev;
        } else {
            st.node_mut(next).links[L][0] = prev;
        }
        self.len -= 1;
    }

    /// Moves `n`, which is on this list, to the front.
    pub fn move_to_front(&mut self, st: &mut Store, n: u32) {
        if self.front != n {
            self.unlink(st, n);
            self.push_front(st, n);
        }
    }

    /// Takes the oldest node off the list.
    pub fn pop_back(&mut self, st: &mut Store) -> Option<u32> {
        let n = self.back()?;
        self.unlink(st, n);
        Some(n)
    }

    /// The nodes from front to back.
    pub fn iter<'a>(&self, st: &'a Store) -> impl Iterator<Item = u32> + 'a {
        let mut n = self.front;
        std::iter::from_fn(move || {
            (n != NIL).then(|| {
                let cur = n;
                n = st.node(cur).links[L][1];
                cur
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keep_order_and_a_node_sits_on_two_at_once() {
        let mut st = Store::default();
        let mut a = List::<0>::new(1);
        let mut b = List::<1>::new(2);
        let n: Vec<u32> = (0..4).map(|p| st.alloc(p, p as u32, 0)).collect();
        for &x in &n {
            a.push_front(&mut st, x);
        }
        b.push_front(&mut st, n[1]);
        b.push_front(&mut st, n[3]);
        a.move_to_front(&mut st, n[0]);
        a.unlink(&mut st, n[2]);
        let pfns = |l: Vec<u32>| l.iter().map(|&x| st.node(x).pfn).collect::<Vec<_>>();
        assert_eq!(pfns(a.iter(&st).collect()), [0, 3, 1]);
        assert_eq!(pfns(b.iter(&st).collect()), [3, 1]);
        assert!(a.holds(&st, n[1]) && b.holds(&st, n[1]) && !a.holds(&st, n[2]));
        assert_eq!(a.pop_back(&mut st), Some(n[1]));
        assert_eq!((a.len(), b.len()), (2, 2));
        st.release(n[2]);
        assert_eq!(st.find(2), None);
        assert_eq!(st.find(3), Some(n[3]));
        // A released node's number is reused.
        assert_eq!(st.alloc(9, 0, 0), n[2]);
    }
}

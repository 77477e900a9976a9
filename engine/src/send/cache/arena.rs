//! The page copies of `docs/FORMAT.md` §2.1: a segmented arena of page-aligned pages. Slot `s`
//! lives in segment `s >> SEGMENT_SHIFT` at index `s & SEGMENT_MASK`, so
//! the arena grows by adding segments, never by moving the pages it holds.
//! A segment is its own anonymous mapping, added when a batch may need its
//! slots (so an adaptive cache holds memory only for the pages it keeps)
//! and backed at once, and the system takes the memory back when a
//! shrinking cache drops the segment.

use crate::page::PageBuf;
use memmap2::{MmapMut, MmapOptions};

/// Slots per segment, as a shift: 1024 pages (4 MiB).
pub(crate) const SEGMENT_SHIFT: u32 = 10;
/// Slots per segment.
pub(crate) const SEGMENT_PAGES: usize = 1 << SEGMENT_SHIFT;
const SEGMENT_MASK: u32 = (SEGMENT_PAGES - 1) as u32;

/// Page copies in segments.
#[derive(Default)]
pub(crate) struct Arena {
    segments: Vec<MmapMut>,
}

fn pages(seg: &MmapMut) -> &[PageBuf] {
    bytemuck::cast_slice(&seg[..])
}

fn pages_mut(seg: &mut MmapMut) -> &mut [PageBuf] {
    bytemuck::cast_slice_mut(&mut seg[..])
}

impl Arena {
    /// Slots the arena holds now.
    pub(crate) fn slots(&self) -> usize {
        self.segments.len() * SEGMENT_PAGES
    }

    /// Adds segments until slot `slots - 1` exists, or until the system
    /// refuses a mapping; returns the slots there are.
    pub(crate) fn grow_to(&mut self, slots: usize) -> usize {
        while self.slots() < slots {
            // Populated at once: one system call backs the segment, where
            // first writes would fault page by page while encoding.
            let len = SEGMENT_PAGES * std::mem::size_of::<PageBuf>();
            match MmapOptions::new().len(len).populate().map_anon() {
                Ok(seg) => self.segments.push(seg),
                Err(_) => break,
            }
        }
        self.slots()
    }

    /// Drops whole segments above slot `slots - 1`.
    pub(crate) fn shrink_to(&mut self, slots: usize) {
        self.segments.truncate(slots.div_ceil(SEGMENT_PAGES));
    }

    #[inline]
    fn at(slot: u32) -> (usize, usize) {
        (
            (slot >> SEGMENT_SHIFT) as usize,
            (slot & SEGMENT_MASK) as usize,
        )
    }

    /// The copy in `slot`.
    #[inline]
    pub(crate) fn get(&self, slot: u32) -> &PageBuf {
        let (s, i) = Arena::at(slot);
        &pages(&self.segments[s])[i]
    }

    /// The copy in `slot`, to write.
    #[inline]
    pub(crate) fn get_mut(&mut self, slot: u32) -> &mut PageBuf {
        let (s, i) = Arena::at(slot);
        &mut pages_mut(&mut self.segments[s])[i]
    }

    /// Copies the page in `from` into `to`.
    pub(crate) fn copy(&mut self, from: u32, to: u32) {
        let page = *self.get(from);
        *self.get_mut(to) = page;
    }

    /// A table that hands out each of the first `slots` slots at most once,
    /// so that encoders can write different slots at the same time.
    pub(crate) fn table(&mut self, slots: usize) -> SlotTable<'_> {
        let mut table = Vec::with_capacity(slots);
        for seg in self.segments.iter_mut() {
            let want = slots - table.len();
            if want == 0 {
                break;
            }
            table.extend(pages_mut(seg).iter_mut().take(want).map(Some));
        }
        SlotTable { slots: table }
    }
}

/// Slots of an [`Arena`], each to be taken once.
pub(crate) struct SlotTable<'a> {
    slots: Vec<Option<&'a mut PageBuf>>,
}

impl<'a> SlotTable<'a> {
    /// Takes `slot`; `None` if it was taken already or is beyond the table.
    #[inline]
    pub(crate) fn take(&mut self, slot: u32) -> Option<&'a mut PageBuf> {
        self.slots.get_mut(slot as usize).and_then(Option::take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_keeps_every_page_where_it_was() {
        let mut a = Arena::default();
        a.grow_to(3);
        assert_eq!(a.slots(), SEGMENT_PAGES);
        a.get_mut(2).0[0] = 7;
        let before = a.get(2) as *const PageBuf;
        a.grow_to(3 * SEGMENT_PAGES + 1);
        assert_eq!(a.slots(), 4 * SEGMENT_PAGES);
        // Same address, same bytes: nothing was copied.
        assert_eq!(a.get(2) as *const PageBuf, before);
        assert_eq!(a.get(2).0[0], 7);
        let last = (4 * SEGMENT_PAGES - 1) as u32;
        a.get_mut(last).0[4095] = 9;
        a.copy(last, 5);
        assert_eq!(a.get(5).0[4095], 9);
        a.shrink_to(SEGMENT_PAGES + 1);
        assert_eq!(a.slots(), 2 * SEGMENT_PAGES);
        assert_eq!(a.get(2).0[0], 7);
    }

    #[test]
    fn a_table_hands_each_slot_out_once() {
        let mut a = Arena::default();
        a.grow_to(2 * SEGMENT_PAGES);
        let far = SEGMENT_PAGES as u32 + 3;
        let mut t = a.table(SEGMENT_PAGES + 10);
        t.take(far).expect("first take").0[1] = 4;
        assert!(t.take(far).is_none());
        assert!(
            t.take(SEGMENT_PAGES as u32 + 10).is_none(),
            "beyond the table"
        );
        assert!(t.take(0).is_some());
        assert_eq!(a.get(far).0[1], 4);
    }
}

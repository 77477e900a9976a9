//! The staging ring (`FORMAT.md` §3): while the guest is paused, the sender
//! copies each dirty page into the next slot of this buffer and nothing
//! else happens; compression runs after the guest resumes.
//!
//! When the last slot is filled the owner compresses and emits what is staged
//! (one COMPRESSED_DATA chunk), then stages on, so a checkpoint of exactly
//! the capacity gives one chunk. Raw pages drop their cached copy "at staging
//! time": the compressor applies the drops of a whole batch before it
//! decides anything for that batch, which gives the same bytes as dropping at
//! the copy and keeps the paused phase to the copy alone.

use crate::page::{PageBuf, PageType};
use ckpt_simd::Page;

/// One staged page: where it goes and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagedPage {
    /// Guest page frame number.
    pub pfn: u64,
    /// Page type (only types that carry data are staged).
    pub ty: PageType,
}

/// A fixed-capacity buffer of page copies in send order.
pub struct StagingRing {
    pages: Box<[PageBuf]>,
    entries: Vec<StagedPage>,
}

impl StagingRing {
    /// A ring of `capacity` pages (at least 1).
    pub fn new(capacity: usize) -> StagingRing {
        let capacity = capacity.max(1);
        StagingRing {
            pages: PageBuf::arena(capacity),
            entries: Vec::with_capacity(capacity),
        }
    }

    /// Pages the ring holds.
    pub fn capacity(&self) -> usize {
        self.pages.len()
    }

    /// Pages staged now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when every slot is filled.
    pub fn is_full(&self) -> bool {
        self.entries.len() == self.pages.len()
    }

    /// Copies `page` into the next slot. Returns true when that filled the
    /// ring. The caller must not push into a full ring.
    #[inline]
    pub fn push(&mut self, pfn: u64, ty: PageType, page: &Page) -> bool {
        let i = self.entries.len();
        self.pages[i].0.copy_from_slice(page);
        self.entries.push(StagedPage { pfn, ty });
        self.is_full()
    }

    /// The staged entries in send order.
    pub fn entries(&self) -> &[StagedPage] {
        &self.entries
    }

    /// The copy staged at position `i`.
    pub fn page(&self, i: usize) -> &Page {
        &self.pages[i].0
    }

    /// Empties the ring for the next batch.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

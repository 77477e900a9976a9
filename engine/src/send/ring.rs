//! The staging ring (`docs/FORMAT.md` §3): while the guest is paused, the sender
//! copies each dirty page into the next slot and nothing else happens;
//! compression runs after the guest resumes.
//!
//! A batch holds at most `capacity` pages; when the last slot is filled the
//! owner compresses and emits what is staged (one COMPRESSED_DATA chunk) and
//! stages on, so a checkpoint of exactly the capacity gives one chunk. Raw
//! pages drop their cached copy "at staging time": the compressor applies the
//! drops of a whole batch before it decides anything for that batch, which
//! gives the same bytes as dropping at the copy and keeps the paused phase to
//! the copy alone.
//!
//! The ring's memory is a pool of fixed segments of [`SEGMENT_PAGES`] pages.
//! A batch takes segments as it grows and gives them back when it is
//! cleared, possibly on another thread: while one batch is compressed the
//! next can be staged into the free segments, and the total never exceeds
//! the pool, so memory stays bounded whatever the checkpoint sizes.

use crate::page::{PageBuf, PageType};
use ckpt_simd::Page;
use crossbeam_channel::{Receiver, Sender};

/// Pages per ring segment.
pub const SEGMENT_PAGES: usize = 64;

type Segment = Box<[PageBuf]>;

/// The ring's memory: segments shared by the batches staged from it.
#[derive(Clone)]
pub struct SegmentPool {
    give: Sender<Segment>,
    take: Receiver<Segment>,
    pages: usize,
}

impl SegmentPool {
    /// A pool holding at least `pages` pages.
    pub fn new(pages: usize) -> SegmentPool {
        let n = pages.max(1).div_ceil(SEGMENT_PAGES);
        let (give, take) = crossbeam_channel::bounded(n);
        for _ in 0..n {
            give.send(PageBuf::arena(SEGMENT_PAGES))
                .expect("pool has room");
        }
        SegmentPool {
            give,
            take,
            pages: n * SEGMENT_PAGES,
        }
    }

    /// Pages the pool holds in all.
    pub fn pages(&self) -> usize {
        self.pages
    }
}

/// One staged page: where it goes and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagedPage {
    /// Guest page frame number.
    pub pfn: u64,
    /// Page type (only types that carry data are staged).
    pub ty: PageType,
}

/// A batch of staged page copies in send order, at most `capacity` pages.
pub struct StagingRing {
    pool: SegmentPool,
    segments: Vec<Segment>,
    entries: Vec<StagedPage>,
    capacity: usize,
}

impl StagingRing {
    /// A ring of `capacity` pages with a pool of its own.
    pub fn new(capacity: usize) -> StagingRing {
        let capacity = capacity.max(1);
        StagingRing::with_pool(capacity, SegmentPool::new(capacity))
    }

    /// A batch of at most `capacity` pages drawing on `pool` (which must hold
    /// at least `capacity` pages).
    pub fn with_pool(capacity: usize, pool: SegmentPool) -> StagingRing {
        let capacity = capacity.clamp(1, pool.pages());
        StagingRing {
            pool,
            segments: Vec::new(),
            entries: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Pages a batch holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
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
        self.entries.len() == self.capacity
    }

    /// Copies `page` into the next slot. Returns true when that filled the
    /// batch. Waits for a free segment when every segment is in use by
    /// batches still being compressed. The caller must not push into a full
    /// batch.
    #[inline]
    pub fn push(&mut self, pfn: u64, ty: PageType, page: &Page) -> bool {
        assert!(!self.is_full(), "push into a full staging batch");
        let i = self.entries.len();
        if i == self.segments.len() * SEGMENT_PAGES {
            let seg = self
                .pool
                .take
                .recv()
                .expect("the pool outlives its batches");
            self.segments.push(seg);
        }
        self.segments[i / SEGMENT_PAGES][i % SEGMENT_PAGES]
            .0
            .copy_from_slice(page);
        self.entries.push(StagedPage { pfn, ty });
        self.is_full()
    }

    /// The staged entries in send order.
    pub fn entries(&self) -> &[StagedPage] {
        &self.entries
    }

    /// The copy staged at position `i`.
    #[inline]
    pub fn page(&self, i: usize) -> &Page {
        &self.segments[i / SEGMENT_PAGES][i % SEGMENT_PAGES].0
    }

    /// Empties the batch, giving its segments back to the pool.
    pub fn clear(&mut self) {
        self.entries.clear();
        for seg in self.segments.drain(..) {
            // The pool's channel holds every segment, so this never blocks.
            let _ = self.pool.give.send(seg);
        }
    }

    /// A new empty batch on the same pool.
    pub fn sibling(&self) -> StagingRing {
        StagingRing::with_pool(self.capacity, self.pool.clone())
    }
}

impl Drop for StagingRing {
    fn drop(&mut self) {
        self.clear();
    }
}

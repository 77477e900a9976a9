//! The page-level front end, for callers that write their own stream (the
//! libxc drop-in among them): stage pages while the guest is paused,
//! compress after it resumes, and get each batch back as the payload of one
//! COMPRESSED_DATA chunk (`docs/FORMAT.md` §1 to §3). It shares the
//! sender's rules for a page ([`check_page`]) but writes no PFN entries, so
//! a PFN may be staged twice: the later copy is encoded against the earlier
//! one, as the original did.

use super::encode::{BatchCompressor, Chunk};
use super::options::CompressOptions;
use super::ring::StagingRing;
use super::stats::FormCounts;
use crate::error::SendError;
use crate::page::{PageType, PFN_LIMIT};
use ckpt_simd::{Codec, Page};

/// Stages pages and compresses them batch by batch.
pub struct Compressor {
    ring: StagingRing,
    batch: BatchCompressor,
    guest_pages: u64,
    chunk: Chunk,
    /// The ring still holds the pages of the chunk handed out last.
    clear_pending: bool,
}

/// A compressed batch as [`Compressor`] hands it out: the chunk and the
/// staged pages its FULL encodings refer to.
pub struct ChunkView<'a> {
    chunk: &'a Chunk,
    ring: &'a StagingRing,
}

impl ChunkView<'_> {
    /// Pages encoded in the chunk.
    pub fn pages(&self) -> usize {
        self.ring.len()
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.chunk.len()
    }

    /// True when the chunk carries no page.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// How the pages were sent.
    pub fn counts(&self) -> &FormCounts {
        self.chunk.counts()
    }

    /// The payload's pieces, in order.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.chunk.pieces(self.ring)
    }

    /// The payload as one vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.pieces().for_each(|p| v.extend_from_slice(p));
        v
    }
}

impl Compressor {
    /// A compressor for a guest of `guest_pages` pages, with a staging ring
    /// of `ring_pages`.
    pub fn new(
        codec: Codec,
        opts: &CompressOptions,
        ring_pages: usize,
        guest_pages: u64,
    ) -> Result<Compressor, SendError> {
        Ok(Compressor {
            ring: StagingRing::new(ring_pages),
            batch: BatchCompressor::new(codec, opts)?,
            guest_pages: guest_pages.min(PFN_LIMIT),
            chunk: Chunk::new(),
            clear_pending: false,
        })
    }

    /// Pages a batch holds at most.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Pages staged and not yet compressed.
    pub fn staged(&self) -> usize {
        if self.clear_pending {
            0
        } else {
            self.ring.len()
        }
    }

    /// Stages one page. When it fills the ring, compresses what is staged
    /// and returns that chunk, which must be sent before staging goes on.
    pub fn stage(
        &mut self,
        pfn: u64,
        ty: PageType,
        page: &Page,
    ) -> Result<Option<ChunkView<'_>>, SendError> {
        check_page(pfn, ty, true, self.guest_pages)?;
        self.take_cleared();
        if self.ring.push(pfn, ty, page) {
            return Ok(Some(self.compress_staged()));
        }
        Ok(None)
    }

    /// Compresses whatever is still staged; `None` when nothing is.
    pub fn finish(&mut self) -> Option<ChunkView<'_>> {
        self.take_cleared();
        if self.ring.is_empty() {
            return None;
        }
        Some(self.compress_staged())
    }

    /// Drops whatever is staged, uncompressed.
    pub fn reset(&mut self) {
        self.ring.clear();
        self.clear_pending = false;
    }

    fn take_cleared(&mut self) {
        if std::mem::take(&mut self.clear_pending) {
            self.ring.clear();
        }
    }

    fn compress_staged(&mut self) -> ChunkView<'_> {
        self.batch.compress(&self.ring, &mut self.chunk, None);
        self.clear_pending = true;
        ChunkView {
            chunk: &self.chunk,
            ring: &self.ring,
        }
    }
}

/// The rules every front end applies to a page before it is staged: a PFN
/// inside the guest (the original let PFN == size through) and page data
/// exactly for the types that carry it.
pub(crate) fn check_page(
    pfn: u64,
    ty: PageType,
    has_data: bool,
    guest_pages: u64,
) -> Result<(), SendError> {
    if pfn >= guest_pages || pfn >= PFN_LIMIT {
        return Err(SendError::PfnOutOfRange { pfn, guest_pages });
    }
    match (ty.carries_data(), has_data) {
        (true, false) => Err(SendError::MissingPageData { pfn, ty }),
        (false, true) => Err(SendError::NoPageData { pfn, ty }),
        _ => Ok(()),
    }
}

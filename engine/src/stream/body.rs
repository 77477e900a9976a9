//! One checkpoint's legacy body as read from the wire (`docs/FORMAT.md` §4):
//! its PFN entries, its page data (raw pages in Format A, the chunks' page
//! encodings in Format B) and the toolstack's chunks, kept as received until
//! the checkpoint has been verified.
//!
//! [`Body::walk_pages`] is the one place that pairs page data with PFN
//! entries and checks the rules that need the pages' lengths: a page may not
//! arrive before its PFN entry, may not be split across two chunks, and the
//! body must carry exactly one page per data-carrying entry.

use super::{StreamError, Trailer};
use ckpt_simd::{Page, PAGE_SIZE};

/// A toolstack chunk (-1..-11) carried through the stream unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolstackChunk {
    /// Chunk type.
    pub id: i32,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Where one COMPRESSED_DATA chunk's payload sits in [`Body::payload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSpan {
    /// Stream offset of the payload's first byte.
    pub offset: u64,
    /// Start in the body's payload.
    pub start: usize,
    /// End in the body's payload.
    pub end: usize,
    /// Data-carrying PFN entries seen before the chunk arrived.
    pub data_entries: u64,
    /// PFN entries of any type seen before the chunk arrived.
    pub entries: u64,
    /// The chunk carries exactly the pages of the data-carrying entries
    /// since the previous chunk, no fewer (a record stream's compressed
    /// page record); a legacy chunk may carry fewer.
    pub whole: bool,
}

/// One page's data as [`Body::walk_pages`] hands it out.
#[derive(Clone, Copy, Debug)]
pub enum PageAt<'a> {
    /// Format A: the page itself.
    Raw(&'a Page),
    /// Format B: the rest of the chunk, starting with this page's encoding.
    Encoded {
        /// From the page's encoding to the end of its chunk.
        input: &'a [u8],
        /// Stream offset of the encoding.
        offset: u64,
    },
}

/// One checkpoint as read, not yet verified or applied.
#[derive(Clone, Debug, Default)]
pub struct Body {
    /// Sequence number.
    pub seq: u64,
    /// Format B (compressed) or Format A.
    pub compressed: bool,
    /// Stream offset of the frame.
    pub offset: u64,
    /// Bytes of the whole frame.
    pub frame_len: u64,
    /// PFN entries in send order (type in bits 28..31).
    pub entries: Vec<u64>,
    /// PFNs of the data-carrying entries, in order.
    pub data_pfns: Vec<u64>,
    /// End, in `data_pfns`, of each PFN batch that carries data.
    pub batch_ends: Vec<usize>,
    /// Page data: raw pages (Format A) or the chunks' payloads (Format B).
    pub payload: Vec<u8>,
    /// The COMPRESSED_DATA chunks, in order.
    pub chunks: Vec<ChunkSpan>,
    /// Format A: the entries of each PFN batch (or PAGE_DATA record), in
    /// order, so that a body can be written again as it was split.
    pub batches: Vec<u32>,
    /// The toolstack's chunks, in order.
    pub toolstack: Vec<ToolstackChunk>,
    /// Whether the body carries ENABLE_COMPRESSION.
    pub enables_compression: bool,
    /// The trailer.
    pub trailer: Option<Trailer>,
    /// Stream offset of the trailer.
    pub trailer_offset: u64,
}

impl Body {
    /// Empties the body, keeping its buffers.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.data_pfns.clear();
        self.batch_ends.clear();
        self.payload.clear();
        self.chunks.clear();
        self.batches.clear();
        self.toolstack.clear();
        self.enables_compression = false;
        self.trailer = None;
    }

    /// Calls `page` for every page of the body in order, with its index and
    /// PFN; `page` returns the bytes of input the page used (the length of
    /// its encoding; ignored for raw pages). Checks that no page comes
    /// before its PFN entry or crosses the end of its chunk, and that there
    /// is exactly one page per data-carrying entry.
    pub fn walk_pages(
        &self,
        mut page: impl FnMut(usize, u64, PageAt<'_>) -> Result<usize, StreamError>,
    ) -> Result<(), StreamError> {
        if !self.compressed {
            for (k, &pfn) in self.data_pfns.iter().enumerate() {
                let at = k * PAGE_SIZE;
                let raw = self.payload[at..at + PAGE_SIZE]
                    .try_into()
                    .expect("Format A holds one page per data entry");
                page(k, pfn, PageAt::Raw(raw))?;
            }
            return Ok(());
        }
        let mut k = 0usize;
        for chunk in &self.chunks {
            let mut at = chunk.start;
            while at < chunk.end {
                let offset = chunk.offset + (at - chunk.start) as u64;
                if k as u64 >= chunk.data_entries {
                    return Err(StreamError::PagesBeforeEntries {
                        offset,
                        page: k as u64,
                        entries: chunk.data_entries,
                    });
                }
                let input = &self.payload[at..chunk.end];
                at += page(k, self.data_pfns[k], PageAt::Encoded { input, offset })?.max(1);
                k += 1;
            }
            if chunk.whole && (k as u64) < chunk.data_entries {
                return Err(StreamError::MissingPages {
                    offset: chunk.offset,
                    entries: chunk.data_entries,
                    pages: k as u64,
                });
            }
        }
        if k != self.data_pfns.len() {
            return Err(StreamError::MissingPages {
                offset: self.offset,
                entries: self.data_pfns.len() as u64,
                pages: k as u64,
            });
        }
        Ok(())
    }
}

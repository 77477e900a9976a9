//! Hooks for measurement, compiled only with the `lab` feature: what a
//! benchmark needs to read pages where, and on the core where, the sender
//! reads them. Nothing a toolstack links depends on them.

use crate::page::PageBuf;
use crate::send::BatchCompressor;
use ckpt_simd::Codec;

pub use crate::send::ring::StagingRing;

/// The compressor at rest, as [`crate::Sender::inspect`] shows it.
pub struct Inspect<'a> {
    batch: &'a BatchCompressor,
}

impl<'a> Inspect<'a> {
    pub(crate) fn new(batch: &'a BatchCompressor) -> Inspect<'a> {
        Inspect { batch }
    }

    /// The kernel in use.
    pub fn codec(&self) -> Codec {
        self.batch.codec()
    }

    /// The delta cache's copy of `pfn`, if it holds one (its recency is
    /// left as it is).
    pub fn cached(&self, pfn: u64) -> Option<&PageBuf> {
        self.batch.cache().peek(pfn)
    }

    /// The memory floor of `pairs`: reads both pages of each pair
    /// ([`Codec::read_floor`]) on the compressor's own workers, as many as
    /// encode and pinned as they are, and returns a value that depends on
    /// every byte read.
    pub fn read_floor(&self, pairs: &[(&PageBuf, &PageBuf)]) -> u64 {
        let codec = self.batch.codec();
        self.batch
            .on_workers(pairs, |(new, old)| codec.read_floor(&new.0, &old.0))
    }

    /// Pages the delta cache holds now.
    pub fn cached_pages(&self) -> usize {
        self.batch.cache().len()
    }
}

pub use crate::send::ring::SEGMENT_PAGES;

/// The batch encoder on its own, without the pipeline around it: what the
/// pipeline benchmark times with one and with two threads.
pub struct BatchEncoder {
    batch: BatchCompressor,
    chunk: crate::send::Chunk,
}

impl BatchEncoder {
    /// An encoder with its own cache and worker pool.
    pub fn new(
        codec: Codec,
        opts: &crate::send::CompressOptions,
    ) -> Result<BatchEncoder, crate::error::SendError> {
        Ok(BatchEncoder {
            batch: BatchCompressor::new(codec, opts)?,
            chunk: crate::send::Chunk::new(),
        })
    }

    /// Compresses what `ring` holds; returns the payload's length.
    pub fn compress(&mut self, ring: &StagingRing) -> usize {
        self.batch.compress(ring, &mut self.chunk, None);
        self.chunk.len()
    }
}

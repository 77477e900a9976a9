//! Encoding one staged batch into the payload of one COMPRESSED_DATA chunk
//! (`docs/FORMAT.md` §1 and §2), following its [plan](super::plan).
//!
//! The plan's segments go to the worker pool as they are decided, so
//! encoding starts while the rest of the batch is planned; a segment marked
//! `after_all` waits for everything before it. Each segment encodes its
//! pages against their cache slots and hashes each page for the
//! checkpoint's digest while it is still in cache. FULL pages are never
//! copied into the chunk: the chunk refers to the staged page, which the
//! writer sends as it is.

use super::cache::DeltaCache;
use super::plan::{Decision, Planner, Segment, SlotWaves};
use super::ring::StagingRing;
use super::stats::FormCounts;
use crate::page::PageBuf;
use crate::stream::{digest_key, page_fingerprint};
use crate::SendError;
use ckpt_simd::{ChangeMap, Codec, Form, MAX_ENCODED_LEN, PAGE_SIZE};
use std::ops::Range;

/// A piece of a chunk's payload: bytes of the chunk's buffer, or a staged
/// page of the batch, written as it is (the data of a FULL encoding).
#[derive(Clone, Debug)]
enum Piece {
    Bytes(Range<usize>),
    Staged(usize),
}

/// One compressed batch: the payload of a COMPRESSED_DATA chunk, read
/// together with the batch it was compressed from.
pub(crate) struct Chunk {
    buf: Vec<u8>,
    pieces: Vec<Piece>,
    /// Fingerprint of each page's new content, in batch order.
    hashes: Vec<u128>,
    counts: FormCounts,
}

impl Chunk {
    /// An empty chunk whose buffer grows on first use.
    pub(crate) fn new() -> Chunk {
        Chunk {
            buf: Vec::new(),
            pieces: Vec::new(),
            hashes: Vec::new(),
            counts: FormCounts::default(),
        }
    }

    /// Payload length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Bytes(r) => r.len(),
                Piece::Staged(_) => PAGE_SIZE,
            })
            .sum()
    }

    /// The payload's pieces, in order; FULL pages' data comes from `ring`,
    /// the batch this chunk was compressed from.
    pub(crate) fn pieces<'a>(&'a self, ring: &'a StagingRing) -> impl Iterator<Item = &'a [u8]> {
        self.pieces.iter().map(move |p| match p {
            Piece::Bytes(r) => &self.buf[r.clone()],
            Piece::Staged(i) => &ring.page(*i)[..],
        })
    }

    /// The fingerprint of each page's new content, in batch order.
    pub(crate) fn hashes(&self) -> &[u128] {
        &self.hashes
    }

    /// How the pages were sent.
    pub(crate) fn counts(&self) -> &FormCounts {
        &self.counts
    }
}

/// Settings of the compressing stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressOptions {
    /// Delta cache capacity in pages.
    pub cache_pages: usize,
    /// Worker threads for the page kernels (1: no parallelism).
    pub threads: usize,
    /// Pin each worker thread to its own core.
    pub pin_threads: bool,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            cache_pages: 8192,
            threads: 1,
            pin_threads: false,
        }
    }
}

/// Compresses staged batches against the delta cache.
pub(crate) struct BatchCompressor {
    cache: DeltaCache,
    waves: SlotWaves,
    codec: Codec,
    pool: Option<rayon::ThreadPool>,
    threads: usize,
}

/// A page of a segment with the cache slot it reads or writes.
struct Work<'a> {
    decision: Decision,
    slot: Option<&'a mut PageBuf>,
}

/// What one encoded segment reports back.
struct SegmentResult {
    first: usize,
    pieces: Vec<Piece>,
    hashes: Vec<u128>,
    counts: FormCounts,
}

/// Pages whose first encoding pass runs back to back.
const MAP_GROUP: usize = 8;

/// Encodes the pages `first..first + work.len()` of `ring` into `out` (room
/// for `MAX_ENCODED_LEN` per page, at offset `first * MAX_ENCODED_LEN` of
/// the chunk's buffer), and hashes each page's new content. A FULL page
/// contributes its marker to `out` and the staged page itself as a piece.
fn encode_segment(
    codec: Codec,
    ring: &StagingRing,
    first: usize,
    work: &mut [Work<'_>],
    out: &mut [u8],
) -> SegmentResult {
    let base = first * MAX_ENCODED_LEN;
    let mut o = 0;
    let mut start = 0;
    let mut pieces = Vec::new();
    let mut hashes = Vec::with_capacity(work.len());
    let mut counts = FormCounts::default();
    let mut maps = [(ChangeMap::default(), 0u128); MAP_GROUP];
    let key = digest_key();
    for (g, group) in work.chunks_mut(MAP_GROUP).enumerate() {
        // The encoder's first pass for a group of pages in a row: their
        // cold references stream in together, where encoding page by page
        // waits for each page's misses between emissions. The digest's
        // fingerprint of each new page is taken in the same pass.
        for (k, w) in group.iter().enumerate() {
            if let (Decision::Hit(_), Some(cached)) = (w.decision, w.slot.as_deref()) {
                let page = ring.page(first + g * MAP_GROUP + k);
                maps[k] = codec.change_map_fingerprint(page, &cached.0, key);
            }
        }
        for (k, w) in group.iter_mut().enumerate() {
            let j = g * MAP_GROUP + k;
            let page = ring.page(first + j);
            match (w.decision, w.slot.as_deref_mut()) {
                (Decision::Hit(_), Some(cached)) => {
                    let dst = &mut out[o..];
                    o += codec
                        .encode_changes(&maps[k].0, page, &mut cached.0, dst)
                        .expect("a segment region holds MAX_ENCODED_LEN per page");
                    match Form::of_first_byte(dst[0]) {
                        Form::Empty => counts.empty += 1,
                        _ => counts.delta += 1,
                    }
                    hashes.push(maps[k].1);
                }
                (decision, cached) => {
                    match (decision, cached) {
                        (Decision::Miss { .. }, Some(cached)) => {
                            cached.0.copy_from_slice(page);
                            counts.full_miss += 1;
                        }
                        _ => counts.full_raw += 1,
                    }
                    out[o] = ckpt_simd::FULL_MARKER;
                    o += 1;
                    pieces.push(Piece::Bytes(base + start..base + o));
                    pieces.push(Piece::Staged(first + j));
                    start = o;
                    hashes.push(page_fingerprint(&codec, page));
                }
            }
        }
    }
    if o > start {
        pieces.push(Piece::Bytes(base + start..base + o));
    }
    SegmentResult {
        first,
        pieces,
        hashes,
        counts,
    }
}

impl BatchCompressor {
    /// A compressor with its own thread pool when `threads > 1`.
    pub(crate) fn new(codec: Codec, opts: &CompressOptions) -> Result<BatchCompressor, SendError> {
        if !(1..=super::cache::MAX_CACHE_PAGES).contains(&opts.cache_pages) {
            return Err(SendError::Options(format!(
                "cache_pages {} is outside 1..={}",
                opts.cache_pages,
                super::cache::MAX_CACHE_PAGES
            )));
        }
        let threads = opts.threads.max(1);
        let pool = if threads > 1 {
            let cores = if opts.pin_threads {
                core_affinity::get_core_ids().unwrap_or_default()
            } else {
                Vec::new()
            };
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("ckpt-encode-{i}"))
                    .start_handler(move |i| {
                        if cores.len() >= 2 {
                            core_affinity::set_for_current(cores[i % cores.len()]);
                        }
                    })
                    .build()
                    .map_err(|e| SendError::ThreadPool(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(BatchCompressor {
            cache: DeltaCache::new(opts.cache_pages),
            waves: SlotWaves::default(),
            codec,
            pool,
            threads,
        })
    }

    /// The kernel in use.
    #[cfg_attr(not(feature = "lab"), allow(dead_code))]
    pub(crate) fn codec(&self) -> Codec {
        self.codec
    }

    /// The delta cache.
    #[cfg_attr(not(feature = "lab"), allow(dead_code))]
    pub(crate) fn cache(&self) -> &DeltaCache {
        &self.cache
    }

    /// Hashes every page staged in `ring` (a batch sent uncompressed) into
    /// `hashes`, on the pool when there is one.
    pub(crate) fn hash_pages(&self, ring: &StagingRing, hashes: &mut Vec<u128>) {
        hashes.clear();
        let n = ring.len();
        match &self.pool {
            Some(pool) if n >= 64 => {
                use rayon::prelude::*;
                pool.install(|| {
                    (0..n)
                        .into_par_iter()
                        .map(|i| page_fingerprint(&self.codec, ring.page(i)))
                        .collect_into_vec(hashes)
                });
            }
            _ => hashes.extend((0..n).map(|i| page_fingerprint(&self.codec, ring.page(i)))),
        }
    }

    /// Compresses everything staged in `ring` into `chunk` (replacing its
    /// contents). The ring is left as it is.
    pub(crate) fn compress(&mut self, ring: &StagingRing, chunk: &mut Chunk) {
        let n = ring.len();
        chunk.pieces.clear();
        chunk.hashes.clear();
        chunk.counts = FormCounts::default();
        let need = n * MAX_ENCODED_LEN;
        if chunk.buf.len() < need {
            chunk.buf = vec![0u8; need.max(ring.capacity() * MAX_ENCODED_LEN)];
        }
        let (index, arena) = self.cache.split_mut();
        let seg = match self.pool {
            Some(_) => (n / (self.threads * 8)).clamp(16, 512),
            None => n.max(1),
        };
        let codec = self.codec;
        let mut planner = Planner::new(index, ring.entries(), &mut self.waves, seg);
        let mut out: &mut [u8] = &mut chunk.buf[..need];
        let results = std::sync::Mutex::new(Vec::<SegmentResult>::new());
        let results = &results;
        let mut next = planner.next();
        while let Some(first_segment) = next.take() {
            // One wave: its segments use each slot at most once.
            let mut wave = Wave {
                slots: arena.iter_mut().map(Some).collect(),
                out: std::mem::take(&mut out),
            };
            next = match &self.pool {
                Some(pool) => pool.scope(|scope| {
                    wave.run(first_segment, &mut planner, |first, mut work, out| {
                        scope.spawn(move |_| {
                            let r = encode_segment(codec, ring, first, &mut work, out);
                            results.lock().expect("results").push(r);
                        })
                    })
                }),
                None => wave.run(first_segment, &mut planner, |first, mut work, out| {
                    let r = encode_segment(codec, ring, first, &mut work, out);
                    results.lock().expect("results").push(r);
                }),
            };
            out = wave.out;
        }
        let mut results = std::mem::take(&mut *results.lock().expect("results"));
        results.sort_unstable_by_key(|r| r.first);
        for r in results {
            chunk.pieces.extend(r.pieces);
            chunk.hashes.extend(r.hashes);
            chunk.counts.add(&r.counts);
        }
    }
}

/// The cache slots and the output not yet handed out in one wave.
struct Wave<'s, 'o> {
    slots: Vec<Option<&'s mut PageBuf>>,
    out: &'o mut [u8],
}

impl<'s, 'o> Wave<'s, 'o> {
    /// Hands `first` and the planner's next segments to `spawn` with their
    /// slots and output regions, until the batch ends or a segment must wait
    /// for this wave (it is returned).
    fn run(
        &mut self,
        first: Segment,
        planner: &mut Planner<'_>,
        mut spawn: impl FnMut(usize, Vec<Work<'s>>, &'o mut [u8]),
    ) -> Option<Segment> {
        let mut segment = first;
        loop {
            let work: Vec<Work<'s>> = segment
                .decisions
                .iter()
                .map(|&decision| Work {
                    decision,
                    slot: decision.slot().map(|s| {
                        self.slots[s as usize]
                            .take()
                            .expect("the plan hands out a slot once per wave")
                    }),
                })
                .collect();
            let (out, rest) = std::mem::take(&mut self.out)
                .split_at_mut(segment.decisions.len() * MAX_ENCODED_LEN);
            self.out = rest;
            spawn(segment.first, work, out);
            segment = planner.next()?;
            if segment.after_all {
                return Some(segment);
            }
        }
    }
}

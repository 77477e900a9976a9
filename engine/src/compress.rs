//! Compression of staged batches (`FORMAT.md` §2 and §3).
//!
//! [`BatchCompressor`] turns one staged batch into one COMPRESSED_DATA
//! payload. It first applies the batch's raw-page drops, then makes one cheap
//! pass in send order that decides every cache hit, miss and slot, then runs
//! the page kernels, in parallel when it has more than one thread. Because
//! every decision is made before any kernel runs, the bytes are the same for
//! any thread count. The pass hands each decided segment to the pool at once
//! and goes on deciding. A slot used twice in one batch (a PFN sent twice, or
//! a batch larger than the cache) waits until everything decided before it
//! is encoded, so a page is never encoded against a copy that an earlier page
//! of the batch is still writing. FULL pages are never copied into the
//! chunk: the chunk refers to the staged page, which the writer sends as it
//! is.
//!
//! [`Compressor`] is the sender-facing API in a Remus sender's natural order:
//! [`Compressor::stage`] while the guest is paused, [`Compressor::finish`]
//! after it resumes.

use crate::cache::{CacheIndex, DeltaCache, Lookup};
use crate::page::{PageBuf, PageType, PFN_LIMIT};
use crate::ring::StagingRing;
use crate::EngineError;
use ckpt_simd::{ChangeMap, Codec, Form, MAX_ENCODED_LEN};
use std::ops::Range;

/// Per-form page counts of a chunk or checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FormCounts {
    /// Normal pages sent FULL because they missed the cache.
    pub full_miss: u64,
    /// Raw (page-table) pages, always FULL.
    pub full_raw: u64,
    /// Pages equal to their cached copy.
    pub empty: u64,
    /// Pages sent as deltas.
    pub delta: u64,
}

impl FormCounts {
    /// All pages counted.
    pub fn pages(&self) -> u64 {
        self.full_miss + self.full_raw + self.empty + self.delta
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &FormCounts) {
        self.full_miss += other.full_miss;
        self.full_raw += other.full_raw;
        self.empty += other.empty;
        self.delta += other.delta;
    }
}

/// A piece of a chunk's payload: bytes of the chunk's buffer, or a staged
/// page of the batch, written as it is (the data of a FULL encoding, which is
/// never copied into the chunk).
#[derive(Clone, Debug)]
enum Piece {
    Bytes(Range<usize>),
    Staged(usize),
}

/// One compressed batch: the payload of a COMPRESSED_DATA chunk.
///
/// The payload is a list of pieces: encodings in one buffer (one run per
/// parallel segment) and, for FULL pages, the staged pages themselves. It is
/// read together with the batch it was compressed from
/// ([`Chunk::pieces`], [`Chunk::to_vec`]).
pub struct Chunk {
    buf: Vec<u8>,
    pieces: Vec<Piece>,
    entries: Vec<(u64, PageType)>,
    counts: FormCounts,
}

impl Default for Chunk {
    fn default() -> Self {
        Chunk::new()
    }
}

impl Chunk {
    /// An empty chunk whose buffer grows on first use.
    pub fn new() -> Chunk {
        Chunk {
            buf: Vec::new(),
            pieces: Vec::new(),
            entries: Vec::new(),
            counts: FormCounts::default(),
        }
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Bytes(r) => r.len(),
                Piece::Staged(_) => ckpt_simd::PAGE_SIZE,
            })
            .sum()
    }

    /// True when the chunk carries no page.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pages encoded in this chunk.
    pub fn pages(&self) -> usize {
        self.entries.len()
    }

    /// The payload's pieces, in order; FULL pages' data comes from `ring`,
    /// the batch this chunk was compressed from.
    pub fn pieces<'a>(&'a self, ring: &'a StagingRing) -> impl Iterator<Item = &'a [u8]> {
        self.pieces.iter().map(move |p| match p {
            Piece::Bytes(r) => &self.buf[r.clone()],
            Piece::Staged(i) => &ring.page(*i)[..],
        })
    }

    /// The payload as one vector.
    pub fn to_vec(&self, ring: &StagingRing) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.pieces(ring).for_each(|p| v.extend_from_slice(p));
        v
    }

    /// (PFN, type) of each page, in send order.
    pub fn entries(&self) -> &[(u64, PageType)] {
        &self.entries
    }

    /// How the pages were sent.
    pub fn counts(&self) -> &FormCounts {
        &self.counts
    }
}

/// What the decision pass chose for one staged page.
#[derive(Clone, Copy)]
enum Job {
    Raw,
    Hit(u32),
    Miss(u32),
}

impl Job {
    fn slot(self) -> Option<u32> {
        match self {
            Job::Raw => None,
            Job::Hit(s) | Job::Miss(s) => Some(s),
        }
    }
}

/// Settings of a [`BatchCompressor`].
#[derive(Clone, Debug)]
pub struct CompressOptions {
    /// Delta cache capacity in pages.
    pub cache_pages: usize,
    /// Worker threads for the page kernels (1: no parallelism).
    pub threads: usize,
    /// Pin each worker thread to its own core.
    pub pin_threads: bool,
}

/// Compresses staged batches against the delta cache.
pub struct BatchCompressor {
    cache: DeltaCache,
    codec: Codec,
    pool: Option<rayon::ThreadPool>,
    threads: usize,
}

struct Work<'a> {
    job: Job,
    slot: Option<&'a mut PageBuf>,
}

/// What one encoded segment reports back.
struct SegmentResult {
    first: usize,
    pieces: Vec<Piece>,
    counts: FormCounts,
}

/// Pages whose first encoding pass runs back to back.
const MAP_GROUP: usize = 8;

/// Encodes the pages `first..first + work.len()` of `ring` into `out` (room
/// for `MAX_ENCODED_LEN` per page, at offset `first * MAX_ENCODED_LEN` of
/// the chunk's buffer). A FULL
/// page contributes its marker to `out` and the staged page itself as a
/// piece of its own.
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
    let mut counts = FormCounts::default();
    let mut maps = [ChangeMap::default(); MAP_GROUP];
    for (g, group) in work.chunks_mut(MAP_GROUP).enumerate() {
        // The encoder's first pass for a group of pages in a row: their
        // cold references stream in together, where encoding page by page
        // waits for each page's misses between emissions.
        for (k, w) in group.iter().enumerate() {
            if let (Job::Hit(_), Some(cached)) = (w.job, w.slot.as_deref()) {
                maps[k] = codec.change_map(ring.page(first + g * MAP_GROUP + k), &cached.0);
            }
        }
        for (k, w) in group.iter_mut().enumerate() {
            let j = g * MAP_GROUP + k;
            let page = ring.page(first + j);
            match (w.job, w.slot.as_deref_mut()) {
                (Job::Hit(_), Some(cached)) => {
                    let dst = &mut out[o..];
                    o += codec
                        .encode_changes(&maps[k], page, &mut cached.0, dst)
                        .expect("a segment region holds MAX_ENCODED_LEN per page");
                    match Form::of_first_byte(dst[0]) {
                        Form::Empty => counts.empty += 1,
                        _ => counts.delta += 1,
                    }
                }
                (job, cached) => {
                    if let (Job::Miss(_), Some(cached)) = (job, cached) {
                        cached.0.copy_from_slice(page);
                    }
                    out[o] = ckpt_simd::FULL_MARKER;
                    o += 1;
                    pieces.push(Piece::Bytes(base + start..base + o));
                    pieces.push(Piece::Staged(first + j));
                    start = o;
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
        counts,
    }
}

impl BatchCompressor {
    /// A compressor with its own thread pool when `threads > 1`.
    pub fn new(codec: Codec, opts: &CompressOptions) -> Result<BatchCompressor, EngineError> {
        let threads = opts.threads.max(1);
        let pool = if threads > 1 {
            // One worker per core, pinned: left to the scheduler, a worker
            // woken for a few milliseconds of work often lands on the core
            // its peer is using and waits there for the load balancer.
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
                    .map_err(|e| EngineError::ThreadPool(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(BatchCompressor {
            cache: DeltaCache::new(opts.cache_pages),
            codec,
            pool,
            threads,
        })
    }

    /// The kernel in use.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The delta cache.
    pub fn cache(&self) -> &DeltaCache {
        &self.cache
    }

    /// Compresses everything staged in `ring` into `chunk` (replacing its
    /// contents). The ring is left as it is.
    ///
    /// Decisions are made in send order, one segment at a time; each decided
    /// segment is encoded on the pool while the next is decided. A page
    /// whose slot an earlier page of the same batch still holds (a PFN sent
    /// twice, or a batch larger than the cache) waits until everything
    /// before it is encoded.
    pub fn compress(&mut self, ring: &StagingRing, chunk: &mut Chunk) {
        let entries = ring.entries();
        let n = entries.len();
        chunk.pieces.clear();
        chunk.entries.clear();
        chunk.entries.extend(entries.iter().map(|e| (e.pfn, e.ty)));
        chunk.counts = FormCounts::default();
        let need = n * MAX_ENCODED_LEN;
        if chunk.buf.len() < need {
            chunk.buf = vec![0u8; need.max(ring.capacity() * MAX_ENCODED_LEN)];
        }
        let (index, arena) = self.cache.split_mut();
        // Staging-time drops of the batch's raw pages, before any decision.
        for e in entries.iter().filter(|e| e.ty.is_raw()) {
            index.invalidate(e.pfn);
        }
        let seg = match self.pool {
            Some(_) => (n / (self.threads * 8)).clamp(16, 512),
            None => n.max(1),
        };
        let codec = self.codec;
        let mut d = Decider {
            entries,
            next: 0,
            carried: None,
            counts: FormCounts::default(),
            out_rest: &mut chunk.buf[..need],
            seg,
        };
        let results = std::sync::Mutex::new(Vec::<SegmentResult>::new());
        while !d.done() {
            // One scope: each slot handed out at most once.
            let mut slots: Vec<Option<&mut PageBuf>> = arena.iter_mut().map(Some).collect();
            match &self.pool {
                Some(pool) => pool.scope(|scope| {
                    d.decide(index, &mut slots, |first, mut work, out| {
                        let results = &results;
                        scope.spawn(move |_| {
                            let r = encode_segment(codec, ring, first, &mut work, out);
                            results.lock().expect("results").push(r);
                        });
                    })
                }),
                None => d.decide(index, &mut slots, |first, mut work, out| {
                    let r = encode_segment(codec, ring, first, &mut work, out);
                    results.lock().expect("results").push(r);
                }),
            }
        }
        let mut counts = d.counts;
        let mut results = results.into_inner().expect("results");
        results.sort_unstable_by_key(|r| r.first);
        for r in results {
            chunk.pieces.extend(r.pieces);
            counts.empty += r.counts.empty;
            counts.delta += r.counts.delta;
        }
        chunk.counts = counts;
    }
}

/// The decision pass: walks the batch in send order, deciding hits, misses
/// and slots, and hands out each decided segment with its output region.
struct Decider<'e, 'b> {
    entries: &'e [crate::ring::StagedPage],
    next: usize,
    carried: Option<Job>,
    counts: FormCounts,
    out_rest: &'b mut [u8],
    seg: usize,
}

impl<'b> Decider<'_, 'b> {
    fn done(&self) -> bool {
        self.next == self.entries.len() && self.carried.is_none()
    }

    /// Decides segments until the batch ends or a page needs a slot that
    /// this scope already handed out; `emit` receives each segment.
    fn decide<'s>(
        &mut self,
        index: &mut CacheIndex,
        slots: &mut [Option<&'s mut PageBuf>],
        mut emit: impl FnMut(usize, Vec<Work<'s>>, &'s mut [u8]),
    ) where
        'b: 's,
    {
        loop {
            let first = self.next - self.carried.is_some() as usize;
            let mut work = Vec::with_capacity(self.seg);
            let mut conflict = false;
            while work.len() < self.seg {
                let job = match self.carried.take() {
                    Some(job) => job,
                    None if self.next < self.entries.len() => {
                        let e = self.entries[self.next];
                        self.next += 1;
                        if e.ty.is_raw() {
                            // A normal copy of the same PFN earlier in this
                            // batch must not outlive the raw page that
                            // overwrites it on the receiver.
                            index.invalidate(e.pfn);
                            self.counts.full_raw += 1;
                            Job::Raw
                        } else {
                            match index.lookup(e.pfn) {
                                Lookup::Hit(s) => Job::Hit(s),
                                Lookup::Miss { slot, .. } => {
                                    self.counts.full_miss += 1;
                                    Job::Miss(slot)
                                }
                            }
                        }
                    }
                    None => break,
                };
                let slot = match job.slot() {
                    Some(s) => match slots[s as usize].take() {
                        Some(r) => Some(r),
                        None => {
                            self.carried = Some(job);
                            conflict = true;
                            break;
                        }
                    },
                    None => None,
                };
                work.push(Work { job, slot });
            }
            if !work.is_empty() {
                let (out, rest) =
                    std::mem::take(&mut self.out_rest).split_at_mut(work.len() * MAX_ENCODED_LEN);
                self.out_rest = rest;
                emit(first, work, out);
            }
            if conflict || self.done() {
                return;
            }
        }
    }
}

/// The sender-facing compressor: stage pages while the guest is paused,
/// finish after it resumes.
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
    /// The chunk (entries, counts, length).
    pub fn chunk(&self) -> &Chunk {
        self.chunk
    }

    /// The payload as one vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunk.to_vec(self.ring)
    }

    /// The payload's pieces, in order.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.chunk.pieces(self.ring)
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
    ) -> Result<Compressor, EngineError> {
        Ok(Compressor {
            ring: StagingRing::new(ring_pages),
            batch: BatchCompressor::new(codec, opts)?,
            guest_pages: guest_pages.min(PFN_LIMIT),
            chunk: Chunk::new(),
            clear_pending: false,
        })
    }

    /// Stages one page. When it fills the ring, compresses what is staged
    /// and returns that chunk, which must be sent before staging goes on.
    pub fn stage(
        &mut self,
        pfn: u64,
        ty: PageType,
        page: &ckpt_simd::Page,
    ) -> Result<Option<ChunkView<'_>>, EngineError> {
        check_pfn(pfn, self.guest_pages)?;
        if !ty.carries_data() {
            return Err(EngineError::NoPageData { pfn, ty });
        }
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

    fn take_cleared(&mut self) {
        if std::mem::take(&mut self.clear_pending) {
            self.ring.clear();
        }
    }

    fn compress_staged(&mut self) -> ChunkView<'_> {
        self.batch.compress(&self.ring, &mut self.chunk);
        self.clear_pending = true;
        ChunkView {
            chunk: &self.chunk,
            ring: &self.ring,
        }
    }

    /// The batch compressor (cache, kernel, threads).
    pub fn batch(&self) -> &BatchCompressor {
        &self.batch
    }
}

/// Rejects a PFN outside the guest (the original let PFN == size through).
pub fn check_pfn(pfn: u64, guest_pages: u64) -> Result<(), EngineError> {
    if pfn >= guest_pages || pfn >= PFN_LIMIT {
        return Err(EngineError::PfnOutOfRange { pfn, guest_pages });
    }
    Ok(())
}

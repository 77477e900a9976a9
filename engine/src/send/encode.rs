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
//!
//! With a record stream's zstd stage in the segments (`docs/RECORDS.md`,
//! "CKPT_COMPRESSED_PAGE_DATA"), each segment also compresses its own
//! encodings into a zstd frame while they are in cache; the chunk then
//! carries one frame per segment, and segments are made coarser so that
//! frames stay large.

use super::cache::{DeltaCache, SlotTable};
use super::options::CompressOptions;
use super::plan::{Decision, Planner, Segment, SlotWaves};
use super::ring::StagingRing;
use super::stats::FormCounts;
use crate::error::SendError;
use crate::page::PageBuf;
use crate::stream::{digest_key, page_fingerprint};
use ckpt_simd::{ChangeMap, Codec, Form, MAX_ENCODED_LEN, PAGE_SIZE};
use std::ops::Range;
use std::time::{Duration, Instant};

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
    /// The payload through the zstd stage, as frames in order (empty
    /// without the stage, or when a frame could not be made).
    frames: Vec<Vec<u8>>,
    /// Frame buffers kept for the next batch.
    spare: Vec<Vec<u8>>,
    /// Time spent in zstd, summed over the threads that ran it.
    zstd_time: Duration,
}

impl Chunk {
    /// An empty chunk whose buffer grows on first use.
    pub(crate) fn new() -> Chunk {
        Chunk {
            buf: Vec::new(),
            pieces: Vec::new(),
            hashes: Vec::new(),
            counts: FormCounts::default(),
            frames: Vec::new(),
            spare: Vec::new(),
            zstd_time: Duration::ZERO,
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

    /// The payload as zstd frames, in order; empty without the stage.
    pub(crate) fn frames(&self) -> &[Vec<u8>] {
        &self.frames
    }

    /// Bytes of the zstd frames.
    pub(crate) fn frames_len(&self) -> usize {
        self.frames.iter().map(Vec::len).sum()
    }

    /// Time spent in zstd for this chunk, summed over threads.
    pub(crate) fn zstd_time(&self) -> Duration {
        self.zstd_time
    }

    /// Moves the frames to the spare buffers (the chunk is reused).
    fn recycle_frames(&mut self) {
        self.spare.append(&mut self.frames);
    }

    /// The zstd stage on a thread of its own: the whole payload (its pieces
    /// from `ring`) as one frame at `level`. Without a frame (zstd could
    /// not allocate), the chunk goes out as it is.
    pub(crate) fn compress_whole(&mut self, ring: &StagingRing, level: i32) {
        self.recycle_frames();
        self.zstd_time = Duration::ZERO;
        let mut frame = self.spare.pop().unwrap_or_default();
        frame.clear();
        let t = Instant::now();
        let made = crate::stream::records::compress_frame(
            level,
            self.len(),
            self.pieces(ring),
            &mut frame,
        );
        self.zstd_time = t.elapsed();
        if made.is_ok() {
            self.frames.push(frame);
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
    /// The segment's encodings as a zstd frame, with the stage; `None`
    /// when zstd failed (the chunk then goes out without the stage).
    frame: Option<Vec<u8>>,
    zstd_time: Duration,
}

/// Pages whose first encoding pass runs back to back.
const MAP_GROUP: usize = 8;

/// Segments per worker thread when each compresses its own zstd frame:
/// few enough that frames stay large, enough to balance the threads.
const ZSTD_SEGMENTS_PER_THREAD: usize = 2;

/// Encodes the pages `first..first + work.len()` of `ring` into `out` (room
/// for `MAX_ENCODED_LEN` per page, at offset `first * MAX_ENCODED_LEN` of
/// the chunk's buffer), and hashes each page's new content. A FULL page
/// contributes its marker to `out` and the staged page itself as a piece.
/// With `zstd`, the segment's encodings then go through the zstd stage
/// into `frame`.
fn encode_segment(
    codec: Codec,
    ring: &StagingRing,
    first: usize,
    work: &mut [Work<'_>],
    out: &mut [u8],
    zstd: Option<(i32, Vec<u8>)>,
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
    let mut zstd_time = Duration::ZERO;
    let frame = zstd.and_then(|(level, mut frame)| {
        let t = Instant::now();
        let bytes = |p: &Piece| match p {
            Piece::Bytes(r) => &out[r.start - base..r.end - base],
            Piece::Staged(i) => &ring.page(*i)[..],
        };
        let len = pieces.iter().map(|p| bytes(p).len()).sum();
        let made = crate::stream::records::compress_frame(
            level,
            len,
            pieces.iter().map(bytes),
            &mut frame,
        );
        zstd_time = t.elapsed();
        made.ok().map(|()| frame)
    });
    SegmentResult {
        first,
        pieces,
        hashes,
        counts,
        frame,
        zstd_time,
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
            cache: DeltaCache::with_options(opts),
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

    /// Runs `f` over `items` on the workers that encode (each taking a
    /// contiguous share, as segments are shared), or on this thread without
    /// a pool, and folds the results with XOR.
    #[cfg(feature = "lab")]
    pub(crate) fn on_workers<T: Sync>(&self, items: &[T], f: impl Fn(&T) -> u64 + Sync) -> u64 {
        match &self.pool {
            Some(pool) => {
                use rayon::prelude::*;
                let share = items.len().div_ceil(self.threads).max(1);
                pool.install(|| {
                    items
                        .par_chunks(share)
                        .map(|c| c.iter().fold(0, |acc, x| acc ^ f(x)))
                        .reduce(|| 0, |a, b| a ^ b)
                })
            }
            None => items.iter().fold(0, |acc, x| acc ^ f(x)),
        }
    }

    /// Seeds the cache with the pages staged in `ring` (a batch sent
    /// uncompressed) and hashes every page into `hashes`, on the pool.
    pub(crate) fn seed(&mut self, ring: &StagingRing, hashes: &mut Vec<u128>) {
        let pool = self.pool.as_ref();
        self.cache
            .seed(ring, self.codec, pool, &mut self.waves, hashes);
    }

    /// Ends a checkpoint: the cache resizes if it is sized adaptively.
    /// Returns its capacity in pages and the memory it holds.
    pub(crate) fn end_checkpoint(&mut self) -> (usize, usize) {
        (self.cache.end_checkpoint(), self.cache.memory_bytes())
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
    /// contents), each segment's encodings also through zstd at the level
    /// `zstd` gives. The ring is left as it is.
    pub(crate) fn compress(&mut self, ring: &StagingRing, chunk: &mut Chunk, zstd: Option<i32>) {
        let n = ring.len();
        chunk.pieces.clear();
        chunk.hashes.clear();
        chunk.counts = FormCounts::default();
        chunk.recycle_frames();
        chunk.zstd_time = Duration::ZERO;
        let mut spare = std::mem::take(&mut chunk.spare);
        let need = n * MAX_ENCODED_LEN;
        if chunk.buf.len() < need {
            chunk.buf = vec![0u8; need.max(ring.capacity() * MAX_ENCODED_LEN)];
        }
        let (index, mut slots) = self.cache.split_mut(n);
        let seg = match (&self.pool, zstd) {
            (Some(_), None) => (n / (self.threads * 8)).clamp(16, 512),
            (Some(_), Some(_)) => n.div_ceil(self.threads * ZSTD_SEGMENTS_PER_THREAD).max(64),
            (None, _) => n.max(1),
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
                slots: slots.table(),
                out: std::mem::take(&mut out),
            };
            let spare = &mut spare;
            let mut frame_for = move || {
                zstd.map(|level| {
                    let mut f = spare.pop().unwrap_or_default();
                    f.clear();
                    (level, f)
                })
            };
            next = match &self.pool {
                Some(pool) => pool.scope(|scope| {
                    wave.run(first_segment, &mut planner, |first, mut work, out| {
                        let frame = frame_for();
                        scope.spawn(move |_| {
                            let r = encode_segment(codec, ring, first, &mut work, out, frame);
                            results.lock().expect("results").push(r);
                        })
                    })
                }),
                None => wave.run(first_segment, &mut planner, |first, mut work, out| {
                    let r = encode_segment(codec, ring, first, &mut work, out, frame_for());
                    results.lock().expect("results").push(r);
                }),
            };
            out = wave.out;
        }
        let mut results = std::mem::take(&mut *results.lock().expect("results"));
        results.sort_unstable_by_key(|r| r.first);
        let mut framed = zstd.is_some();
        for r in results {
            chunk.pieces.extend(r.pieces);
            chunk.hashes.extend(r.hashes);
            chunk.counts.add(&r.counts);
            chunk.zstd_time += r.zstd_time;
            match r.frame {
                Some(f) => chunk.frames.push(f),
                None => framed = false,
            }
        }
        if !framed {
            // A segment without its frame: the chunk goes out as it is.
            chunk.recycle_frames();
        }
        chunk.spare.append(&mut spare);
    }
}

/// The cache slots and the output not yet handed out in one wave.
struct Wave<'s, 'o> {
    slots: SlotTable<'s>,
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
                        self.slots
                            .take(s)
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

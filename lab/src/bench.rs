//! `ckpt bench`: replays a trace through the full sender pipeline and the
//! receiver, verifying after every checkpoint that the receiver's memory
//! equals the trace's.
//!
//! Phase 1 sends: the trace's first epoch (the initial image) goes out
//! uncompressed with ENABLE_COMPRESSION, as a live migration's last
//! iteration; every later epoch is a compressed checkpoint. In the same
//! run, the memory floor reads both the new and the previous content of
//! every dirty page. Phase 2 receives the stream, timing the receiver
//! alone, and compares each checkpoint's pages with the trace. The stream
//! waits between the phases in an unnamed temporary file (in the page cache
//! while memory allows), so that a long trace costs disk, not memory.

use crate::pipeline_bench::peak_rss_bytes;
use crate::replay::{replay, Checkpoint, Source, TraceSource};
use crate::trace::TraceLimits;
use crate::LabError;
use ckpt_engine::{GuestMemory, Latency, PageBuf, Receiver, Sender, SenderOptions, SparseMemory};
use ckpt_simd::{Codec, PAGE_SIZE};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{BufWriter, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize, Default, Clone, Copy)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

fn pct(h: &Latency) -> Percentiles {
    let ms = |q| h.quantile(q).as_secs_f64() * 1e3;
    Percentiles {
        p50: ms(0.5),
        p99: ms(0.99),
        p999: ms(0.999),
    }
}

/// The figures of one trace (the `--json` object).
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Trace file.
    pub trace: String,
    /// Workload recorded in the trace.
    pub workload: String,
    /// Compressed checkpoints (the initial image is not counted).
    pub checkpoints: u64,
    /// Pages in the compressed checkpoints.
    pub pages: u64,
    /// Page bytes of the compressed checkpoints.
    pub input_bytes: u64,
    /// Stream bytes of the compressed checkpoints (PFN batches, chunks, framing).
    pub output_bytes: u64,
    /// input_bytes / output_bytes.
    pub ratio: f64,
    /// Page bytes / time the compressor spent (all threads' wall time).
    pub encode_gbps: f64,
    /// Page bytes / time the receiver spent (parse, verify, apply).
    pub decode_gbps: f64,
    /// Page bytes / time to read both the new and the previous content of
    /// every dirty page where the compressor reads them (the copy staging
    /// just made, and the delta-cache slot), on the compressor's thread, in
    /// the same run and the same cache state (previous contents cold).
    pub floor_gbps: f64,
    /// The same read over copies of the same bytes laid out one after the
    /// other, where the hardware prefetcher runs ahead across pages; the
    /// compressor's references sit in delta-cache slots and never are.
    pub floor_copies_gbps: f64,
    /// encode_gbps / floor_gbps.
    pub encode_vs_floor: f64,
    /// Pages compressed per second.
    pub pages_per_s: f64,
    /// Share of words changed within dirty pages (pages seen before only).
    pub words_changed_share: f64,
    /// Mean runs (SKIP and COPY markers' runs) per re-dirtied page.
    pub runs_per_page: f64,
    /// Dirty pages per compressed checkpoint: median.
    pub dirty_pages_p50: u64,
    /// Dirty pages per compressed checkpoint: 99th percentile.
    pub dirty_pages_p99: u64,
    /// Pages sent FULL because they missed the cache, as a share of pages.
    pub full_miss_share: f64,
    /// Pages sent as deltas, as a share.
    pub delta_share: f64,
    /// Pages unchanged, as a share.
    pub empty_share: f64,
    /// Staging latency per checkpoint (guest-paused copy).
    pub stage_ms: Percentiles,
    /// Compression latency per checkpoint.
    pub compress_ms: Percentiles,
    /// From pause to trailer written, per checkpoint.
    pub checkpoint_ms: Percentiles,
    /// Page kernel.
    pub kernel: String,
    /// Compression threads.
    pub threads: usize,
    /// True only if every checkpoint matched the trace.
    pub verified: bool,
    /// Peak resident memory of this process.
    pub peak_rss_bytes: u64,
}

/// Where the bench's stream waits between its phases.
type Spool = BufWriter<std::fs::File>;

/// Replays `trace` and measures it.
pub fn run(trace: &Path, codec: Codec, opts: &SenderOptions) -> Result<BenchReport, LabError> {
    // Phase 1: send.
    let mut source = TraceSource::open_with_limits(trace, TraceLimits::for_receiver(&opts.limits))?;
    let meta: serde_json::Value = serde_json::from_str(source.reader().meta()).unwrap_or_default();
    let guest_pages = source.guest_pages();
    let opts = SenderOptions {
        guest_pages,
        ..opts.clone()
    };
    let spool = tempfile::tempfile()?;
    let mut sender = Sender::new(BufWriter::with_capacity(1 << 20, spool), codec, &opts)?;
    let mut floor = Duration::ZERO;
    let mut floor_copies = Duration::ZERO;
    let mut floor_sink = 0u64;
    let mut evict = vec![1u8; 96 << 20];
    let (mut changed_words, mut compared_words, mut runs, mut redirtied) = (0u64, 0u64, 0u64, 0u64);
    let mut dirty = Histogram::<u64>::new(3).expect("histogram");
    let mut checkpoints = 0u64;
    replay(&mut source, &mut sender, |cp, sender| {
        // Wait for the pipeline before measuring or decoding the next
        // epoch: the bench's own work (zstd, change profiles) must not
        // compete with the compress stage for the two cores, and the floor
        // below is measured with the pipeline idle.
        sender.sync()?;
        checkpoints += 1;
        if cp.enable_compression {
            return Ok(());
        }
        let _ = dirty.record(cp.entries.len() as u64);
        let previous = cp.previous.as_ref().expect("traces know previous contents");
        for (n, o) in cp.pages.iter().zip(previous.iter()) {
            if o.0.iter().all(|&b| b == 0) {
                continue; // first appearance (or a zero page): no delta
            }
            let (c, r) = change_profile(&n.0, &o.0);
            changed_words += c;
            runs += r;
            compared_words += 1024;
            redirtied += 1;
        }
        let (t, sink, t_copies) = floor_in_place(sender, cp, &mut evict)?;
        floor += t;
        floor_copies += t_copies;
        floor_sink ^= sink;
        // The compressor starts from the same state as the floor did.
        evict_both(sender, &mut evict)
    })?;
    std::hint::black_box(floor_sink);
    let (spool, sent, lat) = sender.finish()?;
    let mut stream = spool.into_inner().map_err(|e| e.into_error())?;
    stream.seek(SeekFrom::Start(0))?;

    // Phase 2: receive and verify.
    let mut rx = Receiver::new(stream, opts.limits.clone(), codec)?;
    let mut memory = SparseMemory::new(guest_pages);
    let mut source = TraceSource::open_with_limits(trace, TraceLimits::for_receiver(&opts.limits))?;
    let mut verified = true;
    let mut receive = Duration::ZERO;
    let mut index = 0u64;
    while let Some(cp) = source.next_checkpoint()? {
        let t = Instant::now();
        let info = rx.next_checkpoint(&mut memory)?;
        let took = t.elapsed();
        let Some(info) = info else {
            verified = false;
            break;
        };
        if index > 0 {
            receive += took;
        }
        let _ = info;
        verified &= cp
            .entries
            .iter()
            .zip(cp.pages.iter())
            .all(|(&(pfn, _), page)| memory.page(pfn) == &page.0);
        index += 1;
    }
    verified &= rx.next_checkpoint(&mut memory)?.is_none() && index == checkpoints;
    // The whole memory, once more at the end.
    let store = source.reader().memory();
    verified &= (0..guest_pages).all(|p| store.get(p).is_none_or(|page| memory.page(p) == page));

    let compressed_pages = sent.pages - sent.uncompressed;
    let input = compressed_pages * PAGE_SIZE as u64;
    // The compressed checkpoints' frames: neither the initial image nor the
    // stream's header and end frame.
    let framing = (ckpt_engine::stream::HEADER_LEN + ckpt_engine::stream::END_LEN) as u64;
    let output = sent.output_bytes - sent.uncompressed_output_bytes - framing;
    let gbps = |d: Duration| input as f64 / d.as_secs_f64().max(1e-12) / 1e9;
    let share = |n: u64| n as f64 / compressed_pages.max(1) as f64;
    Ok(BenchReport {
        trace: trace.display().to_string(),
        workload: meta["workload"].as_str().unwrap_or("?").to_string(),
        checkpoints: sent.checkpoints.saturating_sub(1),
        pages: compressed_pages,
        input_bytes: input,
        output_bytes: output,
        ratio: input as f64 / output.max(1) as f64,
        encode_gbps: gbps(sent.compress_time),
        decode_gbps: gbps(receive),
        floor_gbps: gbps(floor),
        floor_copies_gbps: gbps(floor_copies),
        encode_vs_floor: gbps(sent.compress_time) / gbps(floor),
        words_changed_share: changed_words as f64 / compared_words.max(1) as f64,
        runs_per_page: runs as f64 / redirtied.max(1) as f64,
        dirty_pages_p50: dirty.value_at_quantile(0.5),
        dirty_pages_p99: dirty.value_at_quantile(0.99),
        pages_per_s: compressed_pages as f64 / sent.compress_time.as_secs_f64().max(1e-12),
        full_miss_share: share(sent.counts.full_miss),
        delta_share: share(sent.counts.delta),
        empty_share: share(sent.counts.empty),
        stage_ms: pct(&lat.stage),
        compress_ms: pct(&lat.compress),
        checkpoint_ms: pct(&lat.checkpoint),
        kernel: codec.kernel().name().into(),
        threads: opts.compress.threads,
        verified,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// The memory floor of one epoch: on the compress thread, reads each dirty
/// page's new content (copied by this thread, as staging copies it) and its
/// previous content where the compressor will read it: its delta-cache
/// slot, or, for a page the cache misses, the trace's copy. Caches are
/// evicted on both cores first. Also returns the same read over contiguous
/// copies of both contents.
fn floor_in_place(
    sender: &mut Sender<Spool>,
    cp: &Checkpoint,
    evict: &mut [u8],
) -> Result<(Duration, u64, Duration), LabError> {
    let n = cp.pages.len();
    let copy = |pages: &[PageBuf]| {
        let mut c = PageBuf::arena(n);
        for (t, p) in c.iter_mut().zip(pages) {
            t.0 = p.0;
        }
        c
    };
    let old = copy(cp.previous.as_ref().expect("traces know previous contents"));
    let pfns: Vec<u64> = cp.entries.iter().map(|e| e.0).collect();

    evict_both(sender, evict)?;
    let new = copy(&cp.pages);
    let (in_place, sink, old) = sender.inspect(move |compressor| {
        let codec = compressor.codec();
        let mut sink = 0u64;
        let t = Instant::now();
        for (i, &pfn) in pfns.iter().enumerate() {
            let prev = compressor.cached(pfn).unwrap_or(&old[i]);
            sink ^= codec.read_floor(&new[i].0, &prev.0);
        }
        (t.elapsed(), sink, old)
    })?;

    evict_both(sender, evict)?;
    let new = copy(&cp.pages);
    let (copies, sink2) = sender.inspect(move |compressor| {
        let codec = compressor.codec();
        let mut sink = 0u64;
        let t = Instant::now();
        for (a, b) in new.iter().zip(old.iter()) {
            sink ^= codec.read_floor(&a.0, &b.0);
        }
        (t.elapsed(), sink)
    })?;
    Ok((in_place, sink ^ sink2, copies))
}

/// Evicts the caches of the compress thread's core (its private levels)
/// and then of this one (its own and the shared last level).
fn evict_both(sender: &mut Sender<Spool>, evict: &mut [u8]) -> Result<(), LabError> {
    sender.inspect(|_| {
        let mut private = vec![1u8; 8 << 20];
        evict_caches(&mut private);
    })?;
    evict_caches(evict);
    Ok(())
}

/// Reads and writes a buffer larger than the last-level cache, so that what
/// was cached before is gone.
fn evict_caches(buf: &mut [u8]) {
    for line in buf.chunks_mut(64) {
        line[0] = line[0].wrapping_add(1);
    }
    std::hint::black_box(&buf);
}

/// Words that differ between two pages, and the number of runs (maximal
/// stretches of changed or unchanged words) the delta encoding sees.
pub fn change_profile(new: &ckpt_simd::Page, old: &ckpt_simd::Page) -> (u64, u64) {
    let mut changed = 0;
    let mut runs = 0;
    let mut prev = None;
    for (a, b) in new.chunks_exact(4).zip(old.chunks_exact(4)) {
        let c = a != b;
        changed += c as u64;
        if prev != Some(c) {
            runs += 1;
            prev = Some(c);
        }
    }
    (changed, runs)
}

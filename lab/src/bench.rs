//! `ckpt bench`: replays a trace through the full sender pipeline and the
//! receiver, verifying after every checkpoint that the receiver's memory
//! equals the trace's.
//!
//! Phase 1 sends: the trace's first epoch (the initial image) goes out
//! uncompressed with ENABLE_COMPRESSION, as a live migration's last
//! iteration; every later epoch is a compressed checkpoint. In the same
//! run, the memory floor reads both the new and the previous content of
//! every dirty page, on as many threads as the compressor encodes with. Phase 2 receives the stream, timing the receiver
//! alone, and compares each checkpoint's pages with the trace. The stream
//! waits between the phases in an unnamed temporary file (in the page cache
//! while memory allows), so that a long trace costs disk, not memory.

use crate::figures::{peak_rss_bytes, reset_peak_rss, Quantiles, Rate, Ratios};
use crate::replay::{replay_observed, send_checkpoint, Checkpoint, Source, TraceSource};
use crate::trace::TraceLimits;
use crate::LabError;
use ckpt_engine::{
    GuestMemory, PageBuf, Receiver, SendStats, Sender, SenderOptions, SuperpagePolicy,
    SuperpageReport,
};
use ckpt_simd::{Codec, PAGE_SIZE};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{BufWriter, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

/// One checkpoint of a replay, as the sender sent it (a series of these is
/// what the plots of bytes and latency per checkpoint are drawn from).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CheckpointFigures {
    /// Sequence number; 0 is the initial image (sent uncompressed).
    pub seq: u64,
    /// Data pages.
    pub pages: u64,
    /// Pages sent FULL (cache misses and page tables; every page of the
    /// initial image).
    pub full_pages: u64,
    /// Pages sent as deltas.
    pub delta_pages: u64,
    /// Pages sent EMPTY (unchanged).
    pub empty_pages: u64,
    /// Payload bytes of the FULL pages (4097 per page; 4096 raw in the
    /// initial image).
    pub full_bytes: u64,
    /// Payload bytes of the deltas.
    pub delta_bytes: u64,
    /// Every stream byte of the checkpoint (PFN batches, chunk headers,
    /// trailer and EMPTY markers besides the two above; the stream header
    /// not counted).
    pub output_bytes: u64,
    /// Staging: from the first page handed to the sender to the return of
    /// `end_checkpoint` (the guest is paused for this).
    pub stage_ms: f64,
    /// Compression time of the checkpoint's batches.
    pub compress_ms: f64,
    /// From the first page handed over to the trailer written.
    pub checkpoint_ms: f64,
}

/// The figures of one trace (an element of `--json`'s `traces`).
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
    /// input_bytes / output_bytes: the initial image not counted.
    pub ratio: f64,
    /// Pages of the initial image (sent uncompressed).
    pub initial_image_pages: u64,
    /// Every byte of the stream, the initial image included.
    pub stream_bytes: u64,
    /// Page bytes of every checkpoint / stream_bytes: the initial image
    /// counted.
    pub ratio_with_initial_image: f64,
    /// Page bytes / time the compressor spent (all threads' wall time);
    /// null when that time is too short to measure (figures::MIN_RATE_TIME).
    pub encode_gbps: Option<f64>,
    /// Time the compressor spent, in ms.
    pub encode_ms: f64,
    /// Page bytes / time the receiver spent (parse, verify, apply); null
    /// when that time is too short to measure.
    pub decode_gbps: Option<f64>,
    /// Time the receiver spent on the compressed checkpoints, in ms.
    pub decode_ms: f64,
    /// Page bytes / time to read both the new and the previous content of
    /// every dirty page where the compressor reads them (the copy staging
    /// just made, and the delta-cache slot), on the compressor's workers
    /// (as many threads as encode, pinned as they are), in the same run and
    /// the same cache state (previous contents cold).
    pub floor_gbps: Option<f64>,
    /// The same read over copies of the same bytes laid out one after the
    /// other, where the hardware prefetcher runs ahead across pages; the
    /// compressor's references sit in delta-cache slots and never are.
    pub floor_copies_gbps: Option<f64>,
    /// encode_gbps / floor_gbps (the floor's time over the compressor's).
    pub encode_vs_floor: Option<f64>,
    /// Pages compressed per second.
    pub pages_per_s: Option<f64>,
    /// Share of words changed within dirty pages (pages seen before only).
    pub words_changed_share: f64,
    /// Mean runs (SKIP and COPY markers' runs) per re-dirtied page.
    pub runs_per_page: f64,
    /// Dirty pages per compressed checkpoint: median.
    pub dirty_pages_p50: u64,
    /// Dirty pages per compressed checkpoint: most.
    pub dirty_pages_max: u64,
    /// Pages sent FULL because they missed the cache, as a share of pages.
    pub full_miss_share: f64,
    /// Pages sent as deltas, as a share.
    pub delta_share: f64,
    /// Delta-cache policy.
    pub cache_policy: String,
    /// Whether the initial image seeded the cache.
    pub cache_seeded: bool,
    /// The cache's capacity in pages after each checkpoint, the initial
    /// image's first (it changes only when sized adaptively).
    pub cache_pages: Vec<u64>,
    /// Most memory the cache held: slots used, entries, ghosts, sizer.
    pub cache_bytes: u64,
    /// Normal pages of the compressed checkpoints found in the cache.
    pub hit_rate: f64,
    /// Normal pages sent FULL because they missed the cache.
    pub full_pages: u64,
    /// Pages unchanged, as a share.
    pub empty_share: f64,
    /// Staging latency per compressed checkpoint (guest-paused copy).
    pub stage_ms: Quantiles,
    /// Compression latency per compressed checkpoint.
    pub compress_ms: Quantiles,
    /// From the first page handed over to the trailer written, per
    /// compressed checkpoint.
    pub checkpoint_ms: Quantiles,
    /// Wire format: "legacy" or "records".
    pub format: String,
    /// The zstd stage's level, if the stream has one.
    pub zstd_level: Option<i32>,
    /// Where the sender ran the stage ("segments" or "thread").
    pub zstd_placement: Option<String>,
    /// Bytes of page encodings of the compressed checkpoints, before the
    /// zstd stage (what the records carry without it).
    pub encoded_bytes: u64,
    /// Page-data bytes of the compressed checkpoints as sent (after the
    /// stage; equal to `encoded_bytes` without one).
    pub payload_bytes: u64,
    /// The stage's encode cost: zstd time summed over threads, per page.
    pub zstd_us_per_page: f64,
    /// The encoder's own cost for comparison: the compress stage's wall
    /// time per page (with the stage in the segments, zstd included).
    pub compress_us_per_page: f64,
    /// zstd time per checkpoint, summed over threads.
    pub zstd_ms: Quantiles,
    /// The same checkpoints without the zstd stage, sent in lockstep.
    pub without_stage: Option<Baseline>,
    /// Page kernel.
    pub kernel: String,
    /// Compression threads.
    pub threads: usize,
    /// True only if every checkpoint matched the trace.
    pub verified: bool,
    /// Peak resident memory while this trace was replayed (the process's
    /// peak is reset before each trace; see peak_rss_scope).
    pub peak_rss_bytes: u64,
    /// "trace" when the peak was reset before this trace, "process" when
    /// the system did not allow it and the figure is the process's peak.
    pub peak_rss_scope: &'static str,
    /// Every checkpoint sent, the initial image first.
    pub series: Vec<CheckpointFigures>,
    /// How the receiver's memory was backed: the superpage policy, 2 MiB
    /// extents and 4 KiB pages allocated, extents broken, and the share of
    /// fully written extents the kernel really backs with huge pages.
    #[serde(flatten)]
    pub superpages: Option<SuperpageReport>,
}

/// Where the bench's stream waits between its phases: a file, so that a
/// long trace's stream never has to fit in memory.
type Spool = BufWriter<std::fs::File>;

/// The figures of the sender without the zstd stage, run in lockstep.
#[derive(Debug, Serialize)]
pub struct Baseline {
    /// Stream bytes of the compressed checkpoints.
    pub output_bytes: u64,
    /// Page-data bytes of the compressed checkpoints (the encodings).
    pub payload_bytes: u64,
    /// input_bytes / output_bytes.
    pub ratio: f64,
    /// Compression latency per checkpoint.
    pub compress_ms: Quantiles,
    /// From the first page handed over to the checkpoint's last record
    /// written.
    pub checkpoint_ms: Quantiles,
}

/// What one checkpoint added to the sender's totals.
fn checkpoint_figures(seq: u64, before: &SendStats, now: &SendStats) -> CheckpointFigures {
    let pages = now.pages - before.pages;
    let payload = now.payload_bytes - before.payload_bytes;
    let raw = now.uncompressed - before.uncompressed;
    let c = &now.counts;
    let b = &before.counts;
    let full = (c.full_miss - b.full_miss) + (c.full_raw - b.full_raw);
    let empty = c.empty - b.empty;
    let full_bytes = full * (PAGE_SIZE as u64 + 1) + raw * PAGE_SIZE as u64;
    let header = if seq == 0 {
        ckpt_engine::stream::HEADER_LEN as u64
    } else {
        0
    };
    CheckpointFigures {
        seq,
        pages,
        full_pages: full + raw,
        delta_pages: c.delta - b.delta,
        empty_pages: empty,
        full_bytes,
        delta_bytes: payload.saturating_sub(full_bytes + empty),
        output_bytes: (now.output_bytes - before.output_bytes).saturating_sub(header),
        compress_ms: (now.compress_time - before.compress_time).as_secs_f64() * 1e3,
        ..CheckpointFigures::default()
    }
}

/// Replays `trace` and measures it. A trace with no checkpoint after its
/// initial image is refused: there is nothing to measure.
pub fn run(
    trace: &Path,
    codec: Codec,
    opts: &SenderOptions,
    superpages: SuperpagePolicy,
) -> Result<BenchReport, LabError> {
    // This trace's peak, not the peak of whatever ran before it.
    let peak_rss_scope = if reset_peak_rss() { "trace" } else { "process" };
    // Phase 1: send.
    let mut source = TraceSource::open_with_limits(trace, TraceLimits::for_receiver(&opts.limits))?;
    let meta: serde_json::Value = serde_json::from_str(source.reader().meta()).unwrap_or_default();
    let guest_pages = source.guest_pages();
    let opts = SenderOptions {
        guest_pages,
        ..opts.clone()
    };
    let spool: Spool = BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
    let mut sender = Sender::new(spool, codec, &opts)?;
    // With a zstd stage, the same checkpoints also go through a sender
    // without it, one after the other, to compare them in the same run.
    let mut baseline = match opts.zstd {
        Some(_) => Some(Sender::new(
            std::io::sink(),
            codec,
            &SenderOptions {
                zstd: None,
                ..opts.clone()
            },
        )?),
        None => None,
    };
    let mut floor = Duration::ZERO;
    let mut floor_copies = Duration::ZERO;
    let mut floor_sink = 0u64;
    // Both closures below evict the caches, one after the other.
    let evict = std::cell::RefCell::new(vec![1u8; 96 << 20]);
    let (mut changed_words, mut compared_words, mut runs, mut redirtied) = (0u64, 0u64, 0u64, 0u64);
    let mut dirty = Histogram::<u64>::new(3).expect("histogram");
    let mut series: Vec<CheckpointFigures> = Vec::new();
    let mut totals = SendStats::default();
    let mut cache_pages = Vec::new();
    let started = std::cell::Cell::new(Instant::now());
    replay_observed(
        &mut source,
        &mut sender,
        |cp, sender| {
            // The pipeline is idle here (`after` waited for it): the bench's
            // own work (zstd, change profiles, the floor) never competes
            // with the compress stage for the cores.
            if !cp.enable_compression {
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
                let (t, sink, t_copies) = floor_in_place(sender, cp, &mut evict.borrow_mut())?;
                floor += t;
                floor_copies += t_copies;
                floor_sink ^= sink;
                // The compressor starts from the same state as the floor did.
                evict_both(sender, &mut evict.borrow_mut())?;
            }
            started.set(Instant::now());
            Ok(())
        },
        |cp, sender| {
            let stage = started.get().elapsed();
            sender.sync()?;
            let whole = started.get().elapsed();
            if let Some(b) = baseline.as_mut() {
                // The same checkpoint without the stage, alone on the machine.
                evict_caches(&mut evict.borrow_mut());
                send_checkpoint(b, cp)?;
                b.sync()?;
            }
            let now = sender.stats();
            cache_pages.push(now.cache_pages);
            let mut f = checkpoint_figures(series.len() as u64, &totals, &now);
            f.stage_ms = stage.as_secs_f64() * 1e3;
            f.checkpoint_ms = whole.as_secs_f64() * 1e3;
            series.push(f);
            totals = now;
            Ok(())
        },
    )?;
    std::hint::black_box(floor_sink);
    let (spool, sent, lat) = sender.finish()?;
    let baseline = match baseline {
        Some(b) => {
            let (_, s, l) = b.finish()?;
            Some((s, l))
        }
        None => None,
    };
    if sent.checkpoints < 2 {
        return Err(LabError::Invalid(format!(
            "{}: {} epoch(s), no checkpoint after the initial image: nothing to measure",
            trace.display(),
            sent.checkpoints
        )));
    }

    // Phase 2: receive and verify.
    let mut stream = spool.into_inner().map_err(|e| e.into_error())?;
    stream.seek(SeekFrom::Start(0))?;
    let mut rx = Receiver::new(stream, opts.limits.clone(), codec)?;
    let mut memory = BackupMemory::new(guest_pages, superpages)?;
    let mut source = TraceSource::open_with_limits(trace, TraceLimits::for_receiver(&opts.limits))?;
    let mut verified = true;
    let mut receive = Duration::ZERO;
    let mut index = 0u64;
    while let Some(cp) = source.next_checkpoint()? {
        let t = Instant::now();
        let info = rx.next_checkpoint(&mut memory)?;
        let took = t.elapsed();
        if info.is_none() {
            verified = false;
            break;
        }
        if index > 0 {
            receive += took;
        }
        verified &= cp
            .entries
            .iter()
            .zip(cp.pages.iter())
            .all(|(&(pfn, _), page)| memory.page(pfn) == &page.0);
        index += 1;
    }
    verified &= rx.next_checkpoint(&mut memory)?.is_none() && index == sent.checkpoints;
    // The whole memory, once more at the end.
    let store = source.reader().memory();
    verified &= (0..guest_pages).all(|p| store.get(p).is_none_or(|page| memory.page(p) == page));

    let ratios = Ratios::of_stream(&sent);
    let compressed_pages = sent.pages - sent.uncompressed;
    let input = ratios.checkpoint_input_bytes;
    let encode = Rate::new(input, sent.compress_time);
    let floor = Rate::new(input, floor);
    let share = |n: u64| n as f64 / compressed_pages.max(1) as f64;
    let per_page = |d: Duration| d.as_secs_f64() * 1e6 / compressed_pages.max(1) as f64;
    let later = &series[1..];
    let q = |f: fn(&CheckpointFigures) -> f64| {
        Quantiles::of_ms(&later.iter().map(f).collect::<Vec<_>>())
    };
    Ok(BenchReport {
        trace: trace.display().to_string(),
        workload: meta["workload"].as_str().unwrap_or("?").to_string(),
        checkpoints: sent.checkpoints - 1,
        pages: compressed_pages,
        input_bytes: input,
        output_bytes: ratios.checkpoint_output_bytes,
        ratio: ratios.ratio,
        initial_image_pages: sent.uncompressed,
        stream_bytes: ratios.total_output_bytes,
        ratio_with_initial_image: ratios.ratio_with_initial_image,
        encode_gbps: encode.gbps,
        encode_ms: encode.ms,
        decode_gbps: Rate::new(input, receive).gbps,
        decode_ms: receive.as_secs_f64() * 1e3,
        floor_gbps: floor.gbps,
        floor_copies_gbps: Rate::new(input, floor_copies).gbps,
        encode_vs_floor: encode.gbps.zip(floor.gbps).map(|(e, f)| e / f),
        words_changed_share: changed_words as f64 / compared_words.max(1) as f64,
        runs_per_page: runs as f64 / redirtied.max(1) as f64,
        dirty_pages_p50: dirty.value_at_quantile(0.5),
        dirty_pages_max: dirty.max(),
        pages_per_s: encode
            .gbps
            .map(|_| compressed_pages as f64 / sent.compress_time.as_secs_f64()),
        full_miss_share: share(sent.counts.full_miss),
        delta_share: share(sent.counts.delta),
        empty_share: share(sent.counts.empty),
        cache_policy: opts.compress.cache_policy.name().into(),
        cache_seeded: opts.compress.seed_cache,
        cache_pages,
        cache_bytes: sent.cache_bytes,
        hit_rate: {
            let c = &sent.counts;
            let hits = c.empty + c.delta;
            hits as f64 / (hits + c.full_miss).max(1) as f64
        },
        full_pages: sent.counts.full_miss,
        stage_ms: q(|c| c.stage_ms),
        compress_ms: q(|c| c.compress_ms),
        checkpoint_ms: q(|c| c.checkpoint_ms),
        format: opts.format.name().into(),
        zstd_level: opts.zstd.map(|z| z.level),
        zstd_placement: opts.zstd.map(|z| z.placement.name().into()),
        encoded_bytes: sent.encoded_bytes,
        payload_bytes: sent.payload_bytes - sent.uncompressed * PAGE_SIZE as u64,
        zstd_us_per_page: per_page(sent.zstd_time),
        compress_us_per_page: per_page(sent.compress_time),
        zstd_ms: Quantiles::of_latency(&lat.zstd),
        without_stage: baseline.map(|(s, l)| {
            let r = Ratios::of_stream(&s);
            Baseline {
                output_bytes: r.checkpoint_output_bytes,
                payload_bytes: s.payload_bytes - s.uncompressed * PAGE_SIZE as u64,
                ratio: r.ratio,
                compress_ms: Quantiles::of_latency(&l.compress),
                checkpoint_ms: Quantiles::of_latency(&l.checkpoint),
            }
        }),
        kernel: codec.kernel().name().into(),
        threads: opts.compress.threads,
        verified,
        peak_rss_bytes: peak_rss_bytes(),
        peak_rss_scope,
        series,
        superpages: superpage_report(&memory),
    })
}

/// The backup's memory for the bench: by 2 MiB extent under a superpage
/// policy where the kernel has huge pages to give (Linux), else sparse.
#[cfg(target_os = "linux")]
struct BackupMemory;

#[cfg(target_os = "linux")]
impl BackupMemory {
    #[allow(clippy::new_ret_no_self)]
    fn new(pages: u64, policy: SuperpagePolicy) -> Result<ckpt_engine::ExtentMemory, LabError> {
        Ok(ckpt_engine::ExtentMemory::new(pages, policy)?)
    }
}

#[cfg(not(target_os = "linux"))]
struct BackupMemory;

#[cfg(not(target_os = "linux"))]
impl BackupMemory {
    #[allow(clippy::new_ret_no_self)]
    fn new(pages: u64, _policy: SuperpagePolicy) -> Result<ckpt_engine::SparseMemory, LabError> {
        Ok(ckpt_engine::SparseMemory::new(pages))
    }
}

/// The memory floor of one epoch: on the compressor's workers (as many as
/// encode; one thread without a pool), reads each dirty page's new content (copied by this thread, as staging copies it) and its
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
        let t = Instant::now();
        let pairs: Vec<(&PageBuf, &PageBuf)> = pfns
            .iter()
            .enumerate()
            .map(|(i, &pfn)| (&new[i], compressor.cached(pfn).unwrap_or(&old[i])))
            .collect();
        let sink = compressor.read_floor(&pairs);
        (t.elapsed(), sink, old)
    })?;

    evict_both(sender, evict)?;
    let new = copy(&cp.pages);
    let (copies, sink2) = sender.inspect(move |compressor| {
        let t = Instant::now();
        let pairs: Vec<(&PageBuf, &PageBuf)> = new.iter().zip(old.iter()).collect();
        let sink = compressor.read_floor(&pairs);
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

#[cfg(target_os = "linux")]
fn superpage_report(memory: &ckpt_engine::ExtentMemory) -> Option<SuperpageReport> {
    memory.report().ok()
}

#[cfg(not(target_os = "linux"))]
fn superpage_report(_: &ckpt_engine::SparseMemory) -> Option<SuperpageReport> {
    None
}

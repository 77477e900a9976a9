//! `ckpt bench-pipeline`: the send pipeline's goals, measured in one run.
//!
//! - Compression of one 8196-page checkpoint with 1 and with 2 threads
//!   (same batch, same cache state, medians).
//! - Staging 8196 pages into the ring against a plain memcpy of the same
//!   pages into a buffer of the same size (medians, alternated).
//! - Peak resident memory (VmHWM) of a sender and of a receiver, each run in
//!   a child process of its own, against their budgets.

use crate::figures::Goal;
use crate::synth::{fill_page, mutate, Rng};
use crate::LabError;
use ckpt_engine::lab::{BatchEncoder, StagingRing, SEGMENT_PAGES};
use ckpt_engine::{
    CompressOptions, ImageFile, Limits, PageBuf, PageType, Receiver, Sender, SenderOptions,
};
use ckpt_simd::{Codec, MAX_ENCODED_LEN, PAGE_SIZE};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

/// Pages in the benchmark checkpoint (the default ring).
pub const PAGES: usize = 8196;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Two versions of every page of a checkpoint, staged in two rings.
fn two_versions(pages: usize, seed: u64) -> (StagingRing, StagingRing) {
    let mut rng = Rng::new(seed);
    let mut a = StagingRing::new(pages);
    let mut b = StagingRing::new(pages);
    let densities = [0.0, 0.001, 0.01, 0.05, 0.25, 0.5, 1.0];
    let mut page = Box::new([0u8; PAGE_SIZE]);
    for pfn in 0..pages as u64 {
        fill_page(&mut rng, &mut page);
        a.push(pfn, PageType::Normal, &page);
        let d = densities[rng.below(densities.len() as u64) as usize];
        mutate(&mut rng, &mut page, d, true);
        b.push(pfn, PageType::Normal, &page);
    }
    (a, b)
}

/// Median compression times (ms) of an 8196-page batch with 1 and with 2
/// threads; the two compressors take turns so both see the same machine.
pub fn compress_ms(codec: Codec, reps: usize) -> Result<(f64, f64), LabError> {
    let (a, b) = two_versions(PAGES, 0xB17);
    let make = |threads| {
        BatchEncoder::new(
            codec,
            &CompressOptions {
                // Large enough that every page of the batch stays cached.
                cache_pages: 2 * PAGES,
                threads,
                pin_threads: true,
                ..CompressOptions::default()
            },
        )
    };
    let mut compressors = [make(1)?, make(2)?];
    for c in compressors.iter_mut() {
        c.compress(&a); // prime: every page FULL
    }
    let mut times = [Vec::new(), Vec::new()];
    for r in 0..2 * reps {
        for (k, c) in compressors.iter_mut().enumerate() {
            let ring = if r % 2 == 0 { &b } else { &a };
            let t = Instant::now();
            c.compress(ring);
            times[k].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let [one, two] = times;
    Ok((median(one), median(two)))
}

/// Median times (ms) of the memory floor over the same batch (both versions
/// of every page read, nothing else) on 1 and on 2 threads: how much two
/// cores can read at once on this machine.
pub fn floor_scaling_ms(codec: Codec, reps: usize) -> (f64, f64) {
    let (a, b) = two_versions(PAGES, 0xB17);
    let read = |range: std::ops::Range<usize>| {
        range.fold(0u64, |acc, i| acc ^ codec.read_floor(a.page(i), b.page(i)))
    };
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        std::hint::black_box(read(0..PAGES));
        one.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        std::thread::scope(|s| {
            let h = s.spawn(|| read(0..PAGES / 2));
            std::hint::black_box(read(PAGES / 2..PAGES));
            std::hint::black_box(h.join().unwrap_or(0));
        });
        two.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (median(one), median(two))
}

/// Median times (ms) of staging 8196 pages and of a plain memcpy of them.
pub fn staging_vs_memcpy(reps: usize) -> (f64, f64) {
    let mut rng = Rng::new(5);
    let mut guest = PageBuf::arena(PAGES);
    for p in guest.iter_mut() {
        fill_page(&mut rng, &mut p.0);
    }
    let mut ring = StagingRing::new(PAGES);
    let mut dst = PageBuf::arena(PAGES);
    // Touch everything once so that neither side pays first-touch faults.
    for (i, p) in guest.iter().enumerate() {
        ring.push(i as u64, PageType::Normal, &p.0);
        dst[i].0.copy_from_slice(&p.0);
    }
    ring.clear();
    let (mut stage, mut copy) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        for (i, p) in guest.iter().enumerate() {
            // Every 50th page a page table, as dirty sets carry them.
            let ty = if i % 50 == 0 {
                PageType::PageTable {
                    level: 1,
                    pinned: false,
                }
            } else {
                PageType::Normal
            };
            ring.push(i as u64, ty, &p.0);
        }
        stage.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(ring.page(PAGES - 1));
        ring.clear();
        let t = Instant::now();
        for (d, p) in dst.iter_mut().zip(guest.iter()) {
            d.0.copy_from_slice(&p.0);
        }
        copy.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&dst[PAGES - 1]);
    }
    (median(stage), median(copy))
}

pub use crate::figures::peak_rss_bytes;

/// Guest size of the memory runs: 64 Ki pages (256 MiB).
pub const RSS_GUEST: u64 = 1 << 16;

/// Sender part of the memory run: 24 checkpoints of 8196 pages in which
/// every word changes (the largest output the format allows), and one of
/// 20000 pages (ring overflow), written to `out`. Page contents are made on
/// the fly into one buffer, so the guest itself takes no memory here.
pub fn rss_sender(codec: Codec, threads: usize, out: &Path) -> Result<u64, LabError> {
    let opts = SenderOptions {
        compress: CompressOptions {
            cache_pages: 8192,
            threads,
            pin_threads: true,
            ..CompressOptions::default()
        },
        ring_pages: PAGES,
        ..SenderOptions::new(RSS_GUEST)
    };
    let file = File::create(out).map_err(|e| LabError::file(out, e))?;
    let mut sender = Sender::new(BufWriter::with_capacity(1 << 20, file), codec, &opts)?;
    let mut page = Box::new([0u8; PAGE_SIZE]);
    sender.begin_checkpoint()?;
    sender.enable_compression()?;
    sender.end_checkpoint()?;
    for gen in 0..25u64 {
        let n = if gen == 12 { 20_000 } else { PAGES as u64 };
        sender.begin_checkpoint()?;
        for pfn in 0..n {
            let mut rng = Rng::new(pfn ^ 0x1234);
            fill_page(&mut rng, &mut page);
            let k = (gen as u32).wrapping_mul(0x9E37_79B9) | 1;
            for w in page.chunks_exact_mut(4) {
                let v = u32::from_le_bytes(w.try_into().unwrap()) ^ k;
                w.copy_from_slice(&v.to_le_bytes());
            }
            sender.page(pfn, PageType::Normal, Some(&page))?;
        }
        sender.end_checkpoint()?;
    }
    let (mut w, _, _) = sender.finish()?;
    w.flush()?;
    Ok(peak_rss_bytes())
}

/// Receiver part: applies the sender part's stream to an image file.
/// Returns the peak RSS and the largest checkpoint payload it buffered.
pub fn rss_receiver(codec: Codec, stream: &Path, image: &Path) -> Result<(u64, u64), LabError> {
    let file = File::open(stream).map_err(|e| LabError::file(stream, e))?;
    let mut rx = Receiver::new(file, Limits::default(), codec)?;
    let mut memory =
        ImageFile::open(image, rx.guest_pages()).map_err(|e| LabError::file(image, e))?;
    let mut largest = 0;
    while let Some(info) = rx.next_checkpoint(&mut memory)? {
        largest = largest.max(info.payload_bytes);
    }
    Ok((peak_rss_bytes(), largest))
}

/// Hostile part: a stream whose header, batches and chunk lengths claim the
/// most the limits allow, with almost no bytes behind them. Returns the
/// peak RSS after the receiver rejected it.
pub fn rss_hostile(codec: Codec, image: &Path) -> Result<u64, LabError> {
    use ckpt_engine::stream::StreamWriter;
    let header = ckpt_engine::StreamHeader::new(RSS_GUEST);
    let mut w = StreamWriter::new(Vec::new(), &header)?;
    w.begin_checkpoint()?;
    w.enable_compression()?;
    w.end_checkpoint(0, ckpt_engine::stream::Digest::new().finish())?;
    w.begin_checkpoint()?;
    w.pfn_batches(&[5])?;
    let mut s = w.get_ref().clone();
    s.extend_from_slice(&(-12i32).to_le_bytes());
    s.extend_from_slice(&(64u64 << 20).to_le_bytes()); // 64 MiB claimed, 3 bytes sent
    s.extend_from_slice(&[1, 2, 3]);
    let mut rx = Receiver::new(&s[..], Limits::default(), codec)?;
    let mut memory =
        ImageFile::open(image, rx.guest_pages()).map_err(|e| LabError::file(image, e))?;
    let first = rx.next_checkpoint(&mut memory)?;
    let second = rx.next_checkpoint(&mut memory);
    if first.is_none() || second.is_ok() {
        return Err(LabError::Invalid("hostile stream was not rejected".into()));
    }
    Ok(peak_rss_bytes())
}

/// Memory budget of the sender, as the goal states it.
pub fn sender_budget(ring_pages: usize, cache_pages: usize) -> u64 {
    let segments = ring_pages.div_ceil(SEGMENT_PAGES) * SEGMENT_PAGES;
    (segments * PAGE_SIZE + cache_pages * PAGE_SIZE + 2 * ring_pages * MAX_ENCODED_LEN) as u64
        + (32 << 20)
}

/// Memory budget of the receiver: the image, one checkpoint's buffer (the
/// largest checkpoint of the run) and 32 MiB.
pub fn receiver_budget(image_bytes: u64, checkpoint_bytes: u64) -> u64 {
    image_bytes + checkpoint_bytes + (32 << 20)
}

/// The whole measurement (`--json`).
#[derive(Serialize)]
pub struct PipelineFigures {
    /// Median compress time of an 8196-page checkpoint, 1 thread (ms).
    pub compress_1_thread_ms: f64,
    /// The same with 2 threads (ms).
    pub compress_2_threads_ms: f64,
    /// compress_1 / compress_2.
    pub speedup: f64,
    /// The floor over the same batch with 1 thread / with 2 threads.
    pub floor_speedup: f64,
    /// Median staging time of 8196 pages (ms).
    pub stage_ms: f64,
    /// Median memcpy of the same pages (ms).
    pub memcpy_ms: f64,
    /// stage / memcpy.
    pub stage_ratio: f64,
    /// Sender peak RSS (bytes) and its budget.
    pub sender_peak_rss: u64,
    /// Sender budget: ring + cache + two chunks + 32 MiB.
    pub sender_budget: u64,
    /// Receiver peak RSS (bytes).
    pub receiver_peak_rss: u64,
    /// Receiver budget: image + one checkpoint buffer + 32 MiB.
    pub receiver_budget: u64,
    /// The largest checkpoint payload the receiver buffered (bytes).
    pub receiver_largest_checkpoint: u64,
    /// Receiver peak RSS on a hostile stream claiming a 64 MiB chunk.
    pub hostile_peak_rss: u64,
    /// Kernel used.
    pub kernel: String,
    /// Repetitions behind each median.
    pub repetitions: usize,
}

/// Compression speedup two threads must reach over one.
pub const SPEEDUP_GOAL: f64 = 1.8;
/// Most staging may cost against a plain memcpy of the same pages.
pub const STAGE_GOAL: f64 = 1.1;

impl PipelineFigures {
    /// The pipeline's goals against these figures.
    pub fn goals(&self) -> Vec<Goal> {
        vec![
            Goal::at_least(
                "compress speedup, 2 threads over 1",
                self.speedup,
                SPEEDUP_GOAL,
            ),
            Goal::at_most("staging time / memcpy time", self.stage_ratio, STAGE_GOAL),
            Goal::at_most(
                "sender peak RSS / budget",
                self.sender_peak_rss as f64 / self.sender_budget as f64,
                1.0,
            ),
            Goal::at_most(
                "receiver peak RSS / budget",
                self.receiver_peak_rss as f64 / self.receiver_budget as f64,
                1.0,
            ),
        ]
    }
}

/// Runs the whole measurement: compression with 1 and 2 threads, the floor
/// on 1 and 2 threads, staging against memcpy, and the peak memory of a
/// sender, a receiver and a receiver fed a hostile stream, each in a child
/// process of `exe` (the `ckpt` executable, whose hidden `rss-part` command
/// runs one part). `step` is told what is being measured.
pub fn measure(
    codec: Codec,
    reps: usize,
    exe: &Path,
    mut step: impl FnMut(&str),
) -> Result<PipelineFigures, LabError> {
    step("compression with 1 and 2 threads");
    let (c1, c2) = compress_ms(codec, reps)?;
    let (f1, f2) = floor_scaling_ms(codec, reps);
    step("staging against memcpy");
    let (stage, copy) = staging_vs_memcpy(reps);
    step("peak memory (child processes)");
    let dir = std::env::temp_dir().join(format!("ckpt-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| LabError::file(&dir, e))?;
    let part = |name: &str| -> Result<Vec<u64>, LabError> {
        let out = std::process::Command::new(exe)
            .args(["rss-part", name, "--kernel", codec.kernel().name()])
            .arg("--stream")
            .arg(dir.join("stream"))
            .arg("--image")
            .arg(dir.join(format!("{name}.img")))
            .output()
            .map_err(|e| LabError::file(exe, e))?;
        if !out.status.success() {
            return Err(LabError::Invalid(format!(
                "{name} part failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect())
    };
    let figures = (|| {
        let sender = part("sender")?;
        let receiver = part("receiver")?;
        let hostile = part("hostile")?;
        let (&[s], &[r, largest], &[h]) = (&sender[..], &receiver[..], &hostile[..]) else {
            return Err(LabError::Invalid("a memory part printed no figure".into()));
        };
        Ok(PipelineFigures {
            compress_1_thread_ms: c1,
            compress_2_threads_ms: c2,
            speedup: c1 / c2,
            floor_speedup: f1 / f2,
            stage_ms: stage,
            memcpy_ms: copy,
            stage_ratio: stage / copy,
            sender_peak_rss: s,
            sender_budget: sender_budget(PAGES, 8192),
            receiver_peak_rss: r,
            receiver_budget: receiver_budget(RSS_GUEST * PAGE_SIZE as u64, largest),
            receiver_largest_checkpoint: largest,
            hostile_peak_rss: h,
            kernel: codec.kernel().name().into(),
            repetitions: reps,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    figures
}

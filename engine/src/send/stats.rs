//! What a sender reports: per-form page counts, totals, and latency
//! distributions per checkpoint.

use hdrhistogram::Histogram;
use std::time::Duration;

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

/// Totals of what a sender wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Checkpoints written.
    pub checkpoints: u64,
    /// PFN entries written.
    pub entries: u64,
    /// Data-carrying pages written.
    pub pages: u64,
    /// Page bytes in (4096 per data page).
    pub input_bytes: u64,
    /// Bytes written to the stream, framing included.
    pub output_bytes: u64,
    /// Page-data bytes as written (compressed payloads after any zstd
    /// stage, or raw pages in Format A).
    pub payload_bytes: u64,
    /// Bytes of the page encodings in compressed chunks before any zstd
    /// stage (without one, the compressed part of `payload_bytes`).
    pub encoded_bytes: u64,
    /// How compressed pages were sent.
    pub counts: FormCounts,
    /// Pages sent uncompressed (Format A).
    pub uncompressed: u64,
    /// Bytes of the checkpoints sent uncompressed (Format A), framing
    /// included: the initial image, which ratios usually leave out.
    pub uncompressed_output_bytes: u64,
    /// Total time the compression stage spent compressing.
    pub compress_time: Duration,
    /// Time spent in the zstd stage, summed over the threads that ran it.
    pub zstd_time: Duration,
    /// Bytes of the stream outside every checkpoint: its header(s) and end.
    pub framing_bytes: u64,
    /// Delta-cache capacity in pages chosen at the end of the last
    /// checkpoint (it changes only when the cache is sized adaptively).
    pub cache_pages: u64,
    /// Most memory the delta cache held at the end of a checkpoint: slots
    /// used, entries (ghosts too) and the sizer's bookkeeping.
    pub cache_bytes: u64,
}

/// One latency distribution, in microseconds, one value per checkpoint.
#[derive(Clone, Debug)]
pub struct Latency {
    h: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            h: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        }
    }
}

impl Latency {
    /// Records one value.
    pub fn record(&mut self, d: Duration) {
        let _ = self.h.record((d.as_micros() as u64).max(1));
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The value at quantile `q` (0..=1), or zero when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.h.value_at_quantile(q))
    }

    /// The largest value recorded.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.h.max())
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.h.add(&other.h);
    }
}

/// Latency distributions of a sender, one value per checkpoint.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    /// Staging: from `begin_checkpoint` to the return of `end_checkpoint`
    /// (the part of a checkpoint the guest is paused for).
    pub stage: Latency,
    /// Compression of the checkpoint's batches.
    pub compress: Latency,
    /// Writing the checkpoint's frame.
    pub write: Latency,
    /// The zstd stage's time for the checkpoint, summed over threads
    /// (zero without the stage).
    pub zstd: Latency,
    /// From `begin_checkpoint` until the trailer is written.
    pub checkpoint: Latency,
}

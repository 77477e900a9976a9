//! How the lab states a figure, one definition each, so that every command
//! reports the same thing under the same name:
//!
//! - [`Ratios`]: page bytes in over stream bytes out, without and with the
//!   initial image;
//! - [`Quantiles`]: a latency distribution with its sample count, each
//!   percentile given only when there are samples enough to mean it;
//! - [`Rate`]: bytes over a time, the rate given only when the time is long
//!   enough to measure;
//! - [`Goal`]: a measured value against a target, met or not;
//! - [`reset_peak_rss`] and [`peak_rss_bytes`]: peak resident memory over a
//!   stretch of a run rather than the whole process's life.

use ckpt_engine::{Latency, SendStats};
use ckpt_simd::PAGE_SIZE;
use serde::Serialize;
use std::time::Duration;

/// Compression ratios of a run, from its sender's totals. Both count page
/// bytes in (4096 per data page) over stream bytes out (PFN batches,
/// chunks, trailers: everything the stream carries for those pages).
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Ratios {
    /// Page bytes of the checkpoints after the initial image.
    pub checkpoint_input_bytes: u64,
    /// Stream bytes of those checkpoints (their frames only).
    pub checkpoint_output_bytes: u64,
    /// `checkpoint_input_bytes / checkpoint_output_bytes`: the initial
    /// image not counted. This is what replication sends every epoch, and
    /// the figure called "ratio" everywhere.
    pub ratio: f64,
    /// Page bytes of every checkpoint, the initial image included.
    pub total_input_bytes: u64,
    /// Every byte of the stream: header, initial image, checkpoints, end.
    pub total_output_bytes: u64,
    /// `total_input_bytes / total_output_bytes`: the initial image (sent
    /// uncompressed) counted, as a stream file's size shows it.
    pub ratio_with_initial_image: f64,
}

impl Ratios {
    /// The ratios of what `s` counted. `framing` is the bytes of the
    /// stream's header and end frame, which belong to no checkpoint.
    pub fn of(s: &SendStats, framing: u64) -> Ratios {
        let page = PAGE_SIZE as u64;
        let checkpoint_input_bytes = (s.pages - s.uncompressed) * page;
        let checkpoint_output_bytes = s
            .output_bytes
            .saturating_sub(s.uncompressed_output_bytes)
            .saturating_sub(framing);
        let total_input_bytes = s.pages * page;
        Ratios {
            checkpoint_input_bytes,
            checkpoint_output_bytes,
            ratio: ratio(checkpoint_input_bytes, checkpoint_output_bytes),
            total_input_bytes,
            total_output_bytes: s.output_bytes,
            ratio_with_initial_image: ratio(total_input_bytes, s.output_bytes),
        }
    }

    /// The ratios of a stream written by the engine's sender (its own
    /// framing, header and end, as the sender counted it).
    pub fn of_stream(s: &SendStats) -> Ratios {
        Ratios::of(s, s.framing_bytes)
    }
}

/// `a / b`, or 0 when nothing came out (no checkpoint: nothing to divide).
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// A latency distribution in milliseconds. A percentile is given only when
/// the samples reach past it: p90 from 10 samples, p99 from 100, p99.9
/// from 1000. Below that it would be the maximum under another name.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Quantiles {
    /// Samples (checkpoints, epochs).
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile, from 10 samples on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90_ms: Option<f64>,
    /// 99th percentile, from 100 samples on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// 99.9th percentile, from 1000 samples on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p999_ms: Option<f64>,
    /// Largest sample.
    pub max_ms: f64,
}

/// The percentiles [`Quantiles`] may give, with the samples each needs.
const LEVELS: [(f64, u64); 3] = [(0.9, 10), (0.99, 100), (0.999, 1000)];

impl Quantiles {
    /// The distribution of an engine latency histogram.
    pub fn of_latency(l: &Latency) -> Quantiles {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let n = l.count();
        let at = |k: usize| (n >= LEVELS[k].1).then(|| ms(l.quantile(LEVELS[k].0)));
        Quantiles {
            samples: n,
            p50_ms: if n == 0 { 0.0 } else { ms(l.quantile(0.5)) },
            p90_ms: at(0),
            p99_ms: at(1),
            p999_ms: at(2),
            max_ms: ms(l.max()),
        }
    }

    /// The distribution of samples given in milliseconds (nearest rank).
    pub fn of_ms(samples: &[f64]) -> Quantiles {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len() as u64;
        let rank = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, v.len()) - 1];
        let at = |k: usize| (n >= LEVELS[k].1).then(|| rank(LEVELS[k].0));
        Quantiles {
            samples: n,
            p50_ms: if n == 0 { 0.0 } else { rank(0.5) },
            p90_ms: at(0),
            p99_ms: at(1),
            p999_ms: at(2),
            max_ms: v.last().copied().unwrap_or(0.0),
        }
    }
}

/// Timed spans shorter than this give no rate: at that length the timer's
/// granularity and one interruption by the scheduler weigh as much as the
/// work itself.
pub const MIN_RATE_TIME: Duration = Duration::from_millis(1);

/// Bytes handled in a time, and the rate when the time means something.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Rate {
    /// Bytes counted (page bytes).
    pub bytes: u64,
    /// Time taken, in milliseconds.
    pub ms: f64,
    /// `bytes / time` in GB/s, given only when the time is at least
    /// [`MIN_RATE_TIME`].
    pub gbps: Option<f64>,
}

impl Rate {
    /// `bytes` in `time`.
    pub fn new(bytes: u64, time: Duration) -> Rate {
        Rate {
            bytes,
            ms: time.as_secs_f64() * 1e3,
            gbps: (time >= MIN_RATE_TIME).then(|| bytes as f64 / time.as_secs_f64() / 1e9),
        }
    }
}

/// A measured value against a target.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Goal {
    /// What is measured, with its unit ("encode / floor at 5%").
    pub what: String,
    /// The value measured.
    pub value: f64,
    /// The comparison the value must pass: ">=" or "<=".
    pub op: &'static str,
    /// The target.
    pub target: f64,
    /// Whether the value passes.
    pub met: bool,
}

impl Goal {
    /// `value >= target`.
    pub fn at_least(what: impl Into<String>, value: f64, target: f64) -> Goal {
        Goal {
            what: what.into(),
            value,
            op: ">=",
            target,
            met: value >= target,
        }
    }

    /// `value <= target`.
    pub fn at_most(what: impl Into<String>, value: f64, target: f64) -> Goal {
        Goal {
            what: what.into(),
            value,
            op: "<=",
            target,
            met: value <= target,
        }
    }
}

/// Peak resident memory of this process (VmHWM), in bytes; 0 where the
/// system does not say.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak resident memory to the current resident memory (Linux:
/// "5" written to /proc/self/clear_refs), so that [`peak_rss_bytes`] then
/// tells the peak of what follows. False when it could not be reset.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_appear_only_with_samples_enough() {
        let few: Vec<f64> = (1..=40).map(f64::from).collect();
        let q = Quantiles::of_ms(&few);
        assert_eq!(q.samples, 40);
        assert_eq!(q.p50_ms, 20.0);
        assert_eq!(q.p90_ms, Some(36.0));
        assert_eq!(q.p99_ms, None);
        assert_eq!(q.p999_ms, None);
        assert_eq!(q.max_ms, 40.0);
        let many: Vec<f64> = (1..=1000).map(f64::from).collect();
        let q = Quantiles::of_ms(&many);
        assert_eq!(q.p99_ms, Some(990.0));
        assert_eq!(q.p999_ms, Some(999.0));
        let none = Quantiles::of_ms(&[]);
        assert_eq!((none.samples, none.p50_ms, none.max_ms), (0, 0.0, 0.0));
        let json = serde_json::to_string(&Quantiles::of_ms(&few)).unwrap();
        assert!(!json.contains("p99"), "{json}");
    }

    #[test]
    fn latency_histograms_follow_the_same_rule() {
        let mut l = Latency::default();
        for ms in 1..=12u64 {
            l.record(Duration::from_millis(ms));
        }
        let q = Quantiles::of_latency(&l);
        assert_eq!(q.samples, 12);
        assert!(q.p90_ms.is_some() && q.p99_ms.is_none());
        assert!((q.max_ms - 12.0).abs() < 0.02, "{}", q.max_ms);
    }

    #[test]
    fn a_rate_needs_a_measurable_time() {
        assert_eq!(Rate::new(1 << 30, Duration::from_micros(20)).gbps, None);
        let r = Rate::new(2_000_000_000, Duration::from_secs(1));
        assert_eq!(r.gbps, Some(2.0));
        assert_eq!(r.ms, 1000.0);
    }

    #[test]
    fn ratios_with_and_without_the_initial_image() {
        let s = SendStats {
            checkpoints: 3,
            pages: 30,
            uncompressed: 10,
            output_bytes: 10 * 4100 + 2000 + 100,
            uncompressed_output_bytes: 10 * 4100,
            ..SendStats::default()
        };
        let r = Ratios::of(&s, 100);
        assert_eq!(r.checkpoint_input_bytes, 20 * 4096);
        assert_eq!(r.checkpoint_output_bytes, 2000);
        assert_eq!(r.ratio, 20.0 * 4096.0 / 2000.0);
        assert_eq!(r.total_output_bytes, 43100);
        assert_eq!(r.ratio_with_initial_image, 30.0 * 4096.0 / 43100.0);
        assert_eq!(Ratios::of(&SendStats::default(), 0).ratio, 0.0);
    }

    #[test]
    fn goals_compare_both_ways() {
        assert!(Goal::at_least("x", 1.8, 1.8).met);
        assert!(!Goal::at_least("x", 1.79, 1.8).met);
        assert!(Goal::at_most("y", 1.1, 1.1).met);
        assert!(!Goal::at_most("y", 1.2, 1.1).met);
    }
}

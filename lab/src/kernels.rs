//! `ckpt kernels`: lists the kernels and measures them against the memory
//! floor, all in one run so the ratios are fair on a noisy machine.
//!
//! Method: a working set of page pairs (reference copy + new page) at each
//! density of changed words (clustered runs of 1..=16 words). One pass
//! encodes every pair into one output buffer, as a checkpoint's chunk is
//! built. Each pass updates the references, so passes alternate between two
//! "new" versions that differ by the same words: every pass sees the same
//! density. The floor pass reads both pages of every pair and does nothing
//! else. Decode applies one pass's output to a receiver copy (idempotent, so
//! it repeats). Kernels and the floor take turns within each repetition;
//! figures are medians. Throughput counts page bytes (4096 per pair); a
//! pass shorter than [`crate::figures::MIN_RATE_TIME`] is given as a time
//! and a ratio to the floor's time, without a rate.

use crate::figures::{Goal, Rate};
use crate::synth::{fill_page, mutate, Rng};
use ckpt_engine::PageBuf;
use ckpt_simd::{Codec, Kernel, MAX_ENCODED_LEN, PAGE_SIZE};
use serde::Serialize;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Densities measured, in percent of words changed.
pub const DENSITIES: [u32; 5] = [0, 1, 5, 25, 100];

/// One kernel's figures at one density.
#[derive(Clone, Debug, Serialize)]
pub struct DensityFigures {
    /// Percent of words changed.
    pub density_pct: u32,
    /// Median encode pass over the working set.
    pub encode: Rate,
    /// Median decode pass of that pass's output. At low densities the
    /// output is a byte or a few per page and the pass takes microseconds:
    /// its time is given, and its rate only when the time is measurable.
    pub decode: Rate,
    /// Encode time over the floor's time, as a throughput ratio (> 1:
    /// faster than reading both pages).
    pub encode_vs_floor: f64,
    /// Decode time over the floor's time, the same way.
    pub decode_vs_floor: f64,
}

/// One kernel's figures, by density.
#[derive(Clone, Debug, Serialize)]
pub struct KernelFigures {
    /// Kernel name.
    pub name: String,
    /// Figures at each density measured, in increasing density.
    pub densities: Vec<DensityFigures>,
}

/// The floor at one density: both pages of every pair read, nothing else.
#[derive(Clone, Debug, Serialize)]
pub struct FloorFigures {
    /// Percent of words changed.
    pub density_pct: u32,
    /// Median floor pass.
    pub floor: Rate,
}

/// The whole measurement (the `--json` output).
#[derive(Debug, Serialize)]
pub struct KernelBench {
    /// The floor at each density.
    pub floor: Vec<FloorFigures>,
    /// Every kernel measured.
    pub kernels: Vec<KernelFigures>,
    /// The kernel dispatch picks.
    pub dispatch: String,
    /// Working set in MiB (both pages of every pair).
    pub working_set_mib: usize,
    /// Page bytes one pass handles (4096 per pair): what rates count.
    pub pass_bytes: u64,
    /// Repetitions per figure.
    pub repetitions: usize,
    /// Changed words in clustered runs (true) or scattered one by one.
    pub clustered: bool,
}

/// Encode / floor each density must reach (best kernel): from issue 3.
pub const ENCODE_GOALS: [(u32, f64); 5] = [(0, 0.8), (1, 0.8), (5, 0.7), (25, 0.4), (100, 0.6)];
/// Decode / floor from 1% to 25% of words changed.
pub const DECODE_GOAL: f64 = 0.5;

impl KernelBench {
    /// The goals at the densities measured, for the dispatch kernel (or
    /// the only kernel measured).
    pub fn goals(&self) -> Vec<Goal> {
        let Some(k) = self
            .kernels
            .iter()
            .find(|k| k.name == self.dispatch)
            .or(self.kernels.first())
        else {
            return Vec::new();
        };
        let mut goals = Vec::new();
        for d in &k.densities {
            if let Some(&(_, target)) = ENCODE_GOALS.iter().find(|g| g.0 == d.density_pct) {
                goals.push(Goal::at_least(
                    format!("{} encode / floor at {}%", k.name, d.density_pct),
                    d.encode_vs_floor,
                    target,
                ));
            }
        }
        for d in k
            .densities
            .iter()
            .filter(|d| (1..=25).contains(&d.density_pct))
        {
            goals.push(Goal::at_least(
                format!("{} decode / floor at {}%", k.name, d.density_pct),
                d.decode_vs_floor,
                DECODE_GOAL,
            ));
        }
        goals
    }
}

/// Page pairs at one density, with a reference copy per pair, a receiver
/// copy and an output buffer: the state one measurement pass works on.
pub struct WorkingSet {
    a: Box<[PageBuf]>,
    b: Box<[PageBuf]>,
    reference: Box<[PageBuf]>,
    receiver: Box<[PageBuf]>,
    out: Vec<u8>,
}

impl WorkingSet {
    /// `pairs` page pairs whose new versions differ from their references in
    /// `density` percent of words (clustered runs).
    pub fn new(pairs: usize, density: u32, seed: u64) -> WorkingSet {
        WorkingSet::with_pattern(pairs, density, seed, true)
    }

    /// As [`WorkingSet::new`], with changed words in clustered runs or
    /// scattered one by one.
    pub fn with_pattern(pairs: usize, density: u32, seed: u64, clustered: bool) -> WorkingSet {
        let mut rng = Rng::new(seed ^ density as u64);
        let mut a = PageBuf::arena(pairs);
        let mut b = PageBuf::arena(pairs);
        for (pa, pb) in a.iter_mut().zip(b.iter_mut()) {
            fill_page(&mut rng, &mut pa.0);
            pb.0 = pa.0;
            mutate(&mut rng, &mut pb.0, density as f64 / 100.0, clustered);
        }
        WorkingSet {
            reference: a.clone(),
            receiver: a.clone(),
            a,
            b,
            out: vec![0u8; pairs * MAX_ENCODED_LEN],
        }
    }

    /// Encodes every pair once, alternating between the two new versions
    /// (`to_b`) so that every pass sees the same density; returns the bytes
    /// written.
    pub fn encode_pass(&mut self, codec: Codec, to_b: bool) -> usize {
        let new = if to_b { &self.b } else { &self.a };
        let mut o = 0;
        for i in 0..new.len() {
            o += codec
                .encode(&new[i].0, &mut self.reference[i].0, &mut self.out[o..])
                .expect("buffer holds the worst case");
        }
        o
    }

    /// Reads both pages of every pair and nothing else.
    pub fn floor_pass(&self, codec: Codec) -> u64 {
        self.a
            .iter()
            .zip(self.reference.iter())
            .fold(0, |acc, (x, y)| acc ^ codec.read_floor(&x.0, &y.0))
    }

    /// Decodes the first `len` output bytes onto the receiver copies.
    pub fn decode_pass(&mut self, codec: Codec, len: usize) {
        let mut at = 0;
        for page in self.receiver.iter_mut() {
            at += codec
                .decode(&self.out[at..len], &mut page.0)
                .expect("valid");
        }
        assert_eq!(at, len);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Kernels this CPU runs, in preference order (best last).
pub fn supported() -> Vec<Codec> {
    Kernel::ALL
        .iter()
        .filter_map(|&k| Codec::new(k).ok())
        .collect()
}

/// Measures every supported kernel and the floor over a working set of
/// `mib` MiB (both pages of every pair), `reps` repetitions.
pub fn bench(
    mib: usize,
    reps: usize,
    densities: &[u32],
    codecs: &[Codec],
    clustered: bool,
    mut progress: impl FnMut(&str),
) -> KernelBench {
    let pairs = (mib << 20) / (2 * PAGE_SIZE);
    let bytes = (pairs * PAGE_SIZE) as u64;
    let floor_codec = Codec::best();
    let mut floor = Vec::new();
    let mut figures: Vec<KernelFigures> = codecs
        .iter()
        .map(|c| KernelFigures {
            name: c.kernel().name().into(),
            densities: Vec::new(),
        })
        .collect();
    let mut densities = densities.to_vec();
    densities.sort_unstable();
    densities.dedup();
    for &density in &densities {
        progress(&format!("density {density}%"));
        let mut ws = WorkingSet::with_pattern(pairs, density, 0x5EED, clustered);
        let mut floor_t = Vec::new();
        let mut enc_t = vec![Vec::new(); codecs.len()];
        let mut dec_t = vec![Vec::new(); codecs.len()];
        let mut to_b = true;
        // One untimed pass warms every buffer (first touch of the output).
        let warm = ws.encode_pass(floor_codec, to_b);
        to_b = !to_b;
        black_box(warm);
        for _ in 0..reps {
            let t = Instant::now();
            black_box(ws.floor_pass(floor_codec));
            floor_t.push(t.elapsed());
            for (k, &codec) in codecs.iter().enumerate() {
                let t = Instant::now();
                let len = ws.encode_pass(codec, to_b);
                enc_t[k].push(t.elapsed());
                to_b = !to_b;
                // Decode the pass just made, applied to a receiver copy that
                // holds the same bytes as the references did before it.
                let t = Instant::now();
                ws.decode_pass(codec, len);
                dec_t[k].push(t.elapsed());
            }
        }
        let f = median(floor_t);
        floor.push(FloorFigures {
            density_pct: density,
            floor: Rate::new(bytes, f),
        });
        for (k, figs) in figures.iter_mut().enumerate() {
            let (e, d) = (median(enc_t[k].clone()), median(dec_t[k].clone()));
            figs.densities.push(DensityFigures {
                density_pct: density,
                encode: Rate::new(bytes, e),
                decode: Rate::new(bytes, d),
                encode_vs_floor: f.as_secs_f64() / e.as_secs_f64().max(1e-9),
                decode_vs_floor: f.as_secs_f64() / d.as_secs_f64().max(1e-9),
            });
        }
    }
    KernelBench {
        floor,
        kernels: figures,
        dispatch: Kernel::best().name().into(),
        working_set_mib: mib,
        pass_bytes: bytes,
        repetitions: reps,
        clustered,
    }
}

/// The result as a Markdown table: GB/s with the ratio to the floor, or,
/// for a pass too short to give a rate, its time.
pub fn table(b: &KernelBench) -> String {
    let mut s = String::new();
    let cols: Vec<String> = b
        .floor
        .iter()
        .map(|f| format!("{}%", f.density_pct))
        .collect();
    s += &format!("| kernel | op | {} |\n", cols.join(" | "));
    s += &format!("|---|---|{}\n", "---|".repeat(cols.len()));
    let cell = |r: &Rate, vs: Option<f64>| match (r.gbps, vs) {
        (Some(g), Some(v)) => format!("{g:.2} ({v:.2}x)"),
        (Some(g), None) => format!("{g:.2}"),
        (None, Some(v)) => format!("{:.0} µs ({v:.0}x)", r.ms * 1e3),
        (None, None) => format!("{:.0} µs", r.ms * 1e3),
    };
    let floor: Vec<String> = b.floor.iter().map(|f| cell(&f.floor, None)).collect();
    s += &format!("| floor | read both pages | {} |\n", floor.join(" | "));
    for k in &b.kernels {
        let enc: Vec<String> = k
            .densities
            .iter()
            .map(|d| cell(&d.encode, Some(d.encode_vs_floor)))
            .collect();
        let dec: Vec<String> = k
            .densities
            .iter()
            .map(|d| cell(&d.decode, Some(d.decode_vs_floor)))
            .collect();
        s += &format!("| {} | encode | {} |\n", k.name, enc.join(" | "));
        s += &format!("| {} | decode | {} |\n", k.name, dec.join(" | "));
    }
    s
}

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
//! figures are medians. Throughput counts page bytes (4096 per pair).

use crate::synth::{fill_page, mutate, Rng};
use ckpt_engine::PageBuf;
use ckpt_simd::{Codec, Kernel, MAX_ENCODED_LEN, PAGE_SIZE};
use serde::Serialize;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

/// Densities measured, in percent of words changed.
pub const DENSITIES: [u32; 5] = [0, 1, 5, 25, 100];

/// One kernel's figures, keyed by density in percent.
#[derive(Debug, Serialize)]
pub struct KernelFigures {
    /// Kernel name.
    pub name: String,
    /// Median encode throughput, GB/s of page bytes.
    pub encode_gbps: BTreeMap<String, f64>,
    /// Median decode throughput, GB/s of page bytes.
    pub decode_gbps: BTreeMap<String, f64>,
}

/// The whole measurement (the `--json` output).
#[derive(Debug, Serialize)]
pub struct KernelBench {
    /// Median floor throughput per density, GB/s of page bytes.
    pub floor_gbps: BTreeMap<String, f64>,
    /// Every supported kernel.
    pub kernels: Vec<KernelFigures>,
    /// The kernel dispatch picks.
    pub dispatch: String,
    /// Working set in MiB (both pages of every pair).
    pub working_set_mib: usize,
    /// Repetitions per figure.
    pub repetitions: usize,
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
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
    let bytes = (pairs * PAGE_SIZE) as f64;
    let floor_codec = Codec::best();
    let mut floor = BTreeMap::new();
    let mut figures: Vec<KernelFigures> = codecs
        .iter()
        .map(|c| KernelFigures {
            name: c.kernel().name().into(),
            encode_gbps: BTreeMap::new(),
            decode_gbps: BTreeMap::new(),
        })
        .collect();
    for &density in densities {
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
            floor_t.push(bytes / t.elapsed().as_secs_f64() / 1e9);
            for (k, &codec) in codecs.iter().enumerate() {
                let t = Instant::now();
                let len = ws.encode_pass(codec, to_b);
                enc_t[k].push(bytes / t.elapsed().as_secs_f64() / 1e9);
                to_b = !to_b;
                // Decode the pass just made, applied to a receiver copy that
                // holds the same bytes as the references did before it.
                let t = Instant::now();
                ws.decode_pass(codec, len);
                dec_t[k].push(bytes / t.elapsed().as_secs_f64() / 1e9);
            }
        }
        let key = density.to_string();
        floor.insert(key.clone(), median(floor_t));
        for (k, f) in figures.iter_mut().enumerate() {
            f.encode_gbps.insert(key.clone(), median(enc_t[k].clone()));
            f.decode_gbps.insert(key.clone(), median(dec_t[k].clone()));
        }
    }
    KernelBench {
        floor_gbps: floor,
        kernels: figures,
        dispatch: Kernel::best().name().into(),
        working_set_mib: mib,
        repetitions: reps,
    }
}

/// The result as a Markdown table with ratios to the floor.
pub fn table(b: &KernelBench) -> String {
    let mut s = String::new();
    let mut keys: Vec<u32> = b.floor_gbps.keys().filter_map(|k| k.parse().ok()).collect();
    keys.sort_unstable();
    let cols: Vec<String> = keys.iter().map(|d| format!("{d}%")).collect();
    s += &format!("| kernel | op | {} |\n", cols.join(" | "));
    s += &format!("|---|---|{}\n", "---|".repeat(cols.len()));
    let densities: Vec<String> = keys.iter().map(|d| d.to_string()).collect();
    let row = |m: &BTreeMap<String, f64>, floor: Option<&BTreeMap<String, f64>>| {
        densities
            .iter()
            .map(|k| match floor {
                Some(f) => format!("{:.2} ({:.2}x)", m[k], m[k] / f[k]),
                None => format!("{:.2}", m[k]),
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    s += &format!(
        "| floor | read both pages | {} |\n",
        row(&b.floor_gbps, None)
    );
    for k in &b.kernels {
        s += &format!(
            "| {} | encode | {} |\n",
            k.name,
            row(&k.encode_gbps, Some(&b.floor_gbps))
        );
        s += &format!(
            "| {} | decode | {} |\n",
            k.name,
            row(&k.decode_gbps, Some(&b.floor_gbps))
        );
    }
    s
}

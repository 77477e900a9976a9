//! `ckpt demo`: a built-in sequence of checkpoints from a synthetic guest,
//! compressed, decoded by a receiver, and verified page by page.

use ckpt_engine::synth::SyntheticGuest;
use ckpt_engine::{CompressOptions, Compressor, FormCounts, PageBuf};
use ckpt_simd::{Codec, PAGE_SIZE};
use std::time::{Duration, Instant};

/// A chunk as the receiver gets it: its entries and payload.
type SentChunk = (Vec<(u64, ckpt_engine::PageType)>, Vec<u8>);

/// Summary of a demo run.
#[derive(Debug, Default)]
pub struct DemoReport {
    /// Checkpoints sent.
    pub checkpoints: usize,
    /// Pages sent.
    pub pages: u64,
    /// Page bytes in.
    pub input_bytes: u64,
    /// Compressed bytes out.
    pub output_bytes: u64,
    /// How pages were sent.
    pub counts: FormCounts,
    /// Time spent staging (the guest-paused copy).
    pub stage: Duration,
    /// Time spent compressing.
    pub compress: Duration,
    /// Time spent decoding on the receiver.
    pub decode: Duration,
    /// Every page of the receiver equals the guest's after every checkpoint.
    pub verified: bool,
}

/// Dirty-set sizes of the built-in sequence: a first full send, ordinary
/// checkpoints, one that overflows the staging ring, and an empty one.
pub const SEQUENCE: [usize; 12] = [
    6000, 800, 1500, 300, 2600, 9000, 1200, 0, 700, 2000, 450, 3000,
];

/// Runs the built-in sequence.
pub fn run(codec: Codec, opts: &CompressOptions, ring_pages: usize) -> crate::Result<DemoReport> {
    let mut guest = SyntheticGuest::new(32 * 1024, 0xDE70);
    let mut compressor = Compressor::new(codec, opts, ring_pages, guest.pages())?;
    let mut receiver = PageBuf::arena(guest.pages() as usize);
    let mut report = DemoReport {
        verified: true,
        ..Default::default()
    };
    for &n in &SEQUENCE {
        let dirty = guest.checkpoint(n);
        report.checkpoints += 1;
        report.pages += dirty.len() as u64;
        report.input_bytes += (dirty.len() * PAGE_SIZE) as u64;
        let mut chunks: Vec<SentChunk> = Vec::new();
        let mut staged = Duration::ZERO;
        let t = Instant::now();
        for d in &dirty {
            let s = Instant::now();
            let out = compressor.stage(d.pfn, d.ty, guest.page(d.pfn))?;
            staged += s.elapsed();
            if let Some(chunk) = out {
                report.counts.add(chunk.counts());
                chunks.push((chunk.entries().to_vec(), chunk.to_vec()));
            }
        }
        if let Some(chunk) = compressor.finish() {
            report.counts.add(chunk.counts());
            chunks.push((chunk.entries().to_vec(), chunk.to_vec()));
        }
        report.stage += staged;
        report.compress += t.elapsed() - staged;
        let t = Instant::now();
        for (entries, bytes) in &chunks {
            report.output_bytes += bytes.len() as u64;
            let mut at = 0;
            for &(pfn, _) in entries {
                at += codec.decode(&bytes[at..], &mut receiver[pfn as usize].0)?;
            }
        }
        report.decode += t.elapsed();
        report.verified &= dirty
            .iter()
            .all(|d| receiver[d.pfn as usize].0 == *guest.page(d.pfn));
    }
    report.verified &= (0..guest.pages()).all(|p| receiver[p as usize].0 == *guest.page(p));
    Ok(report)
}

//! Seeding (`docs/FORMAT.md` §2.5, of the Format A pages of §4.4): the pages of an uncompressed
//! checkpoint are copies the backup now holds byte for byte, so they may
//! serve as references. A Format A batch is planned like a compressed one
//! (raw pages dropped at staging, free slots first, the policy's victims),
//! with every normal page stored in its slot; the copies and the digest's
//! page fingerprints are made on the worker pool, a wave at a time.

use super::DeltaCache;
use crate::page::PageBuf;
use crate::send::plan::{Planner, Segment, SlotWaves};
use crate::send::ring::StagingRing;
use crate::stream::page_fingerprint;
use ckpt_simd::Codec;

/// One segment's pages: where each goes (if it is cached) and its hash.
type Job<'s, 'h> = (usize, Vec<Option<&'s mut PageBuf>>, &'h mut [u128]);

impl DeltaCache {
    /// Stores the normal pages staged in `ring` (an uncompressed batch) as
    /// the policy places them, and fingerprints every page into `hashes`.
    pub(crate) fn seed(
        &mut self,
        ring: &StagingRing,
        codec: Codec,
        pool: Option<&rayon::ThreadPool>,
        waves: &mut SlotWaves,
        hashes: &mut Vec<u128>,
    ) {
        let n = ring.len();
        hashes.clear();
        hashes.resize(n, 0);
        let seg = match pool {
            Some(p) => (n / (p.current_num_threads() * 8)).clamp(16, 512),
            None => n.max(1),
        };
        let (index, mut slots) = self.split_mut(n);
        let segments: Vec<Segment> = Planner::seeding(index, ring.entries(), waves, seg).collect();
        let mut out: &mut [u128] = &mut hashes[..];
        let mut rest = &segments[..];
        while !rest.is_empty() {
            let len = 1 + rest[1..].iter().take_while(|s| !s.after_all).count();
            let (wave, later) = rest.split_at(len);
            rest = later;
            let mut table = slots.table();
            let mut jobs: Vec<Job<'_, '_>> = Vec::with_capacity(wave.len());
            for s in wave {
                let work = s
                    .decisions
                    .iter()
                    .map(|d| {
                        d.slot().map(|x| {
                            table
                                .take(x)
                                .expect("the plan hands out a slot once per wave")
                        })
                    })
                    .collect();
                let (h, tail) = std::mem::take(&mut out).split_at_mut(s.decisions.len());
                out = tail;
                jobs.push((s.first, work, h));
            }
            let run = |(first, work, h): Job<'_, '_>| {
                for (k, (slot, hash)) in work.into_iter().zip(h.iter_mut()).enumerate() {
                    let page = ring.page(first + k);
                    if let Some(slot) = slot {
                        slot.0.copy_from_slice(page);
                    }
                    *hash = page_fingerprint(&codec, page);
                }
            };
            match pool {
                Some(p) if jobs.len() > 1 => {
                    use rayon::prelude::*;
                    p.install(|| jobs.into_par_iter().for_each(run));
                }
                _ => jobs.into_iter().for_each(run),
            }
        }
    }
}

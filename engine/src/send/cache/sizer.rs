//! The adaptive size (`docs/FORMAT.md` §2.5): how many pages the cache
//! should hold to keep the pages the guest re-dirties, measured checkpoint
//! by checkpoint.
//!
//! For a sample of PFNs (one in eight, chosen by a hash of the PFN, so a
//! page is either always or never sampled) the sizer remembers the
//! checkpoint each was last dirtied in. A page dirtied again after `l`
//! checkpoints (its lag) stays cached only if the cache holds every page
//! dirtied in those `l` checkpoints: `U(l)`, counted from the sample. Lags
//! are weighed with a decay, so that the size follows a working set that
//! grows or shrinks. After each checkpoint the size becomes the smallest
//! `U(l)` that covers 99% of the re-dirtied pages any size within the
//! budget would keep, plus a quarter for headroom: it grows at once, and
//! shrinks by half the excess per checkpoint. Everything is decided on the
//! planner's thread, in send order, so the size (and the stream) is the
//! same for any number of threads.

use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::collections::VecDeque;

/// One PFN in `1 << SAMPLE_SHIFT` is sampled.
const SAMPLE_SHIFT: u32 = 3;
/// Lags told apart, in checkpoints; longer ones count as this one.
const LAGS: usize = 64;
/// Weight a checkpoint's lags keep after each later checkpoint.
const DECAY: f64 = 0.75;
/// Share of the re-dirtied pages the chosen size keeps.
const COVER: f64 = 0.99;
/// Room above the measured set.
const HEADROOM: f64 = 1.25;

/// Bytes of one map slot: the entry and its control byte.
const SLOT_BYTES: usize = std::mem::size_of::<(u64, u64)>() + 1;

/// Bookkeeping bytes the sizer may hold per page of its largest size: it
/// remembers at most two sampled PFNs per sampled page of that size, in a
/// map that may be half empty.
pub(crate) const SIZER_BYTES_PER_PAGE: usize = (2 * 2 * SLOT_BYTES).div_ceil(1 << SAMPLE_SHIFT);

fn sampled(pfn: u64) -> bool {
    pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SAMPLE_SHIFT) == 0
}

/// The working-set measurement.
pub(crate) struct Sizer {
    min_pages: usize,
    max_pages: usize,
    /// Most sampled PFNs remembered.
    limit: usize,
    epoch: u64,
    /// Sampled PFN -> checkpoint it was last dirtied in.
    last: FxHashMap<u64, u64>,
    /// Sampled PFNs by the checkpoint they were last dirtied in, for the
    /// last `LAGS` checkpoints, the current one at the back.
    recent: VecDeque<u64>,
    /// Sampled PFNs last dirtied before those.
    older: u64,
    /// Re-dirtied sampled pages of this checkpoint, by lag (index `LAGS`:
    /// `LAGS` or more).
    now: [u64; LAGS + 1],
    weight: [f64; LAGS + 1],
}

impl Sizer {
    /// A sizer choosing between `min_pages` and `max_pages`.
    pub(crate) fn new(min_pages: usize, max_pages: usize) -> Sizer {
        Sizer {
            min_pages: min_pages.min(max_pages),
            max_pages,
            limit: (2 * max_pages) >> SAMPLE_SHIFT,
            epoch: 0,
            last: FxHashMap::default(),
            recent: VecDeque::from([0]),
            older: 0,
            now: [0; LAGS + 1],
            weight: [0.0; LAGS + 1],
        }
    }

    /// Bookkeeping bytes held now.
    pub(crate) fn bytes(&self) -> usize {
        self.last.capacity() * SLOT_BYTES
    }

    fn count(&mut self, epoch: u64, delta: i64) {
        let age = (self.epoch - epoch) as usize;
        let n = self.recent.len();
        let c = if age < n {
            &mut self.recent[n - 1 - age]
        } else {
            &mut self.older
        };
        *c = c.wrapping_add_signed(delta);
    }

    /// A data page of `pfn` was dirtied in this checkpoint.
    #[inline]
    pub(crate) fn observe(&mut self, pfn: u64) {
        if !sampled(pfn) {
            return;
        }
        let (epoch, full) = (self.epoch, self.last.len() >= self.limit);
        match self.last.entry(pfn) {
            Entry::Vacant(v) => {
                if full {
                    return; // forgotten pages make room at the checkpoint's end
                }
                v.insert(epoch);
                self.count(epoch, 1);
            }
            Entry::Occupied(mut o) => {
                let e = o.insert(epoch);
                if e != epoch {
                    self.count(e, -1);
                    self.count(epoch, 1);
                    self.now[((epoch - e) as usize).min(LAGS)] += 1;
                }
            }
        }
    }

    /// Ends a checkpoint: returns the size for the next one, given the
    /// capacity and the pages resident now.
    pub(crate) fn end_checkpoint(&mut self, capacity: usize, resident: usize) -> usize {
        for (w, n) in self.weight.iter_mut().zip(self.now.iter_mut()) {
            *w = *w * DECAY + std::mem::take(n) as f64;
        }
        // u[l]: sampled pages dirtied within the last l checkpoints.
        let scale = 1u64 << SAMPLE_SHIFT;
        let total: u64 = self.recent.iter().sum::<u64>() + self.older;
        let mut u = [total; LAGS + 1];
        let mut sum = 0;
        for (l, c) in self.recent.iter().rev().enumerate().take(LAGS - 1) {
            sum += c;
            u[l + 1] = sum;
        }
        let fits = |l: usize| (u[l] * scale) as usize <= self.max_pages;
        let fit: f64 = (1..=LAGS)
            .filter(|&l| fits(l))
            .map(|l| self.weight[l])
            .sum();
        let target = if fit < 0.5 {
            capacity // no page came back yet: nothing to measure
        } else {
            let mut acc = 0.0;
            let l = (1..=LAGS)
                .filter(|&l| fits(l))
                .find(|&l| {
                    acc += self.weight[l];
                    acc >= COVER * fit
                })
                .unwrap_or(LAGS);
            ((u[l] * scale) as f64 * HEADROOM) as usize
        };
        let target = target.clamp(self.min_pages, self.max_pages);
        let held = capacity.min(resident);
        let next = if target >= held {
            target
        } else {
            target.max(held - (held - target).div_ceil(2))
        };

        self.epoch += 1;
        self.recent.push_back(0);
        if self.recent.len() > LAGS {
            self.older += self.recent.pop_front().unwrap_or(0);
        }
        if self.last.len() >= self.limit {
            // Forget pages not dirtied within the window: they would need
            // more than the whole window's pages to stay cached anyway.
            let cutoff = self.epoch.saturating_sub(self.recent.len() as u64 - 1);
            self.last.retain(|_, e| *e >= cutoff);
            self.older = 0;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sampled PFNs among `0..n`.
    fn sample(n: u64) -> Vec<u64> {
        (0..n).filter(|&p| sampled(p)).collect()
    }

    #[test]
    fn grows_to_a_set_re_dirtied_every_checkpoint() {
        let mut s = Sizer::new(100, 1 << 20);
        let set = sample(80_000); // about 10,000 sampled
        let mut cap = 1000;
        for _ in 0..3 {
            set.iter().for_each(|&p| s.observe(p));
            cap = s.end_checkpoint(cap, cap);
        }
        // 80,000 pages every checkpoint, plus a quarter.
        let want = (set.len() as u64 * 8) as f64 * HEADROOM;
        assert_eq!(cap, want as usize);
    }

    #[test]
    fn shrinks_by_half_the_excess_when_the_set_shrinks() {
        let mut s = Sizer::new(100, 1 << 20);
        let big = sample(80_000);
        let small = sample(8_000);
        let mut cap = 0;
        for _ in 0..3 {
            big.iter().for_each(|&p| s.observe(p));
            cap = s.end_checkpoint(cap, cap);
        }
        let mut sizes = Vec::new();
        for _ in 0..30 {
            small.iter().for_each(|&p| s.observe(p));
            let next = s.end_checkpoint(cap, cap);
            assert!(next <= cap, "never grows while the set is smaller");
            // Never more than half the excess at once.
            let floor = (small.len() as f64 * 8.0 * HEADROOM) as usize;
            assert!(cap - next <= (cap - floor.min(cap)).div_ceil(2));
            cap = next;
            sizes.push(cap);
        }
        assert_eq!(
            cap,
            (small.len() as f64 * 8.0 * HEADROOM) as usize,
            "{sizes:?}"
        );
    }

    #[test]
    fn stays_within_its_bounds_and_waits_for_evidence() {
        let mut s = Sizer::new(500, 4000);
        let set = sample(80_000);
        // First sight of every page: nothing came back, the size stays.
        set.iter().for_each(|&p| s.observe(p));
        assert_eq!(s.end_checkpoint(1234, 1234), 1234);
        set.iter().for_each(|&p| s.observe(p));
        // The set is larger than the budget: no size within it keeps any
        // of it, so there is still nothing to go on.
        assert_eq!(s.end_checkpoint(1234, 1234), 1234);
        let mut s = Sizer::new(500, 4000);
        let tiny = sample(200);
        assert!(!tiny.is_empty());
        let mut cap = 4000;
        for _ in 0..40 {
            tiny.iter().for_each(|&p| s.observe(p));
            cap = s.end_checkpoint(cap, cap);
        }
        assert_eq!(cap, 500, "a tiny set: the minimum");
    }
}

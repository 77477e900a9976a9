//! The cache plan (`docs/FORMAT.md` §2 and §3): for one staged batch, every
//! decision of the delta cache, made in send order before any page kernel
//! runs, so that the bytes do not depend on how many threads encode.
//!
//! A plan is a sequence of [`Segment`]s of consecutive staged pages, each
//! page with its [`Decision`]: sent raw, a hit on a cached slot, or a miss
//! that takes a slot (a free one, else the victim the cache's policy
//! chooses: the least recently used PFN's under LRU). The
//! raw pages of the batch drop their cached copies before anything is
//! decided, exactly as the original dropped them at staging time; a raw
//! page also drops a copy that an earlier normal page of the same batch
//! stored, so that nothing cached outlives the raw bytes the receiver holds.
//!
//! Segments may be encoded at the same time, except that a segment marked
//! [`Segment::after_all`] must wait until every segment before it is
//! encoded: its first page needs a slot that an earlier segment still
//! writes (a PFN sent twice in the batch, or a batch larger than the cache).

use super::cache::{CacheIndex, Lookup};
use super::ring::StagedPage;

/// What the plan decided for one staged page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A page-table page: sent FULL, never cached.
    Raw,
    /// The PFN is cached in this slot: EMPTY or DELTA against it.
    Hit(u32),
    /// Not cached: sent FULL and stored in this slot, which held `evicted`
    /// (or nothing).
    Miss {
        /// The slot the page is stored in.
        slot: u32,
        /// The PFN whose copy the slot held.
        evicted: Option<u64>,
    },
}

impl Decision {
    /// The cache slot the page reads or writes.
    pub(crate) fn slot(self) -> Option<u32> {
        match self {
            Decision::Raw => None,
            Decision::Hit(s) | Decision::Miss { slot: s, .. } => Some(s),
        }
    }
}

/// Consecutive staged pages and their decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Index in the batch of the segment's first page.
    pub first: usize,
    /// One decision per page, in send order.
    pub decisions: Vec<Decision>,
    /// Every earlier segment must be encoded before this one starts.
    pub after_all: bool,
}

/// The slots already handed out since the last `after_all` barrier: a stamp
/// per slot, so that starting a new wave costs nothing.
#[derive(Default)]
pub(crate) struct SlotWaves {
    stamp: Vec<u32>,
    wave: u32,
}

impl SlotWaves {
    fn new_wave(&mut self) {
        self.wave = self.wave.wrapping_add(1);
        if self.wave == 0 {
            self.stamp.fill(0);
            self.wave = 1;
        }
    }

    /// Marks `slot` used in this wave; false when it already was.
    fn claim(&mut self, slot: u32) -> bool {
        let s = slot as usize;
        if self.stamp.len() <= s {
            self.stamp.resize(s + 1, 0);
        }
        if self.stamp[s] == self.wave {
            return false;
        }
        self.stamp[s] = self.wave;
        true
    }
}

/// Plans one batch segment by segment (an iterator, so that encoding can
/// start on the first segments while the rest is decided).
pub(crate) struct Planner<'a> {
    index: &'a mut CacheIndex,
    entries: &'a [StagedPage],
    waves: &'a mut SlotWaves,
    next: usize,
    /// A decision made but not yet placed: its slot was taken in this wave.
    carried: Option<Decision>,
    segment_pages: usize,
    /// An uncompressed batch: every normal page is stored.
    seeding: bool,
}

impl<'a> Planner<'a> {
    /// Starts planning `entries`, in segments of at most `segment_pages`
    /// pages. Applies the batch's staging-time drops at once.
    pub(crate) fn new(
        index: &'a mut CacheIndex,
        entries: &'a [StagedPage],
        waves: &'a mut SlotWaves,
        segment_pages: usize,
    ) -> Planner<'a> {
        for e in entries.iter().filter(|e| e.ty.is_raw()) {
            index.invalidate(e.pfn);
        }
        waves.new_wave();
        Planner {
            index,
            entries,
            waves,
            next: 0,
            carried: None,
            segment_pages: segment_pages.max(1),
            seeding: false,
        }
    }

    /// Like [`Planner::new`], for an uncompressed batch that seeds the
    /// cache: a hit's slot and a miss's slot both receive the page.
    pub(crate) fn seeding(
        index: &'a mut CacheIndex,
        entries: &'a [StagedPage],
        waves: &'a mut SlotWaves,
        segment_pages: usize,
    ) -> Planner<'a> {
        Planner {
            seeding: true,
            ..Planner::new(index, entries, waves, segment_pages)
        }
    }

    fn decide(&mut self, e: StagedPage) -> Decision {
        if e.ty.is_raw() {
            // A normal copy of the same PFN earlier in this batch must not
            // outlive the raw page that overwrites it on the receiver.
            self.index.invalidate(e.pfn);
            return Decision::Raw;
        }
        let lookup = if self.seeding {
            self.index.seed(e.pfn)
        } else {
            self.index.lookup(e.pfn)
        };
        match lookup {
            Lookup::Hit(s) => Decision::Hit(s),
            Lookup::Miss { slot, evicted } => Decision::Miss { slot, evicted },
        }
    }
}

impl Iterator for Planner<'_> {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        let after_all = self.carried.is_some();
        if after_all {
            self.waves.new_wave();
        }
        let first = self.next - after_all as usize;
        let mut decisions = Vec::with_capacity(self.segment_pages);
        while decisions.len() < self.segment_pages {
            let d = match self.carried.take() {
                Some(d) => d,
                None if self.next < self.entries.len() => {
                    let e = self.entries[self.next];
                    self.next += 1;
                    self.decide(e)
                }
                None => break,
            };
            if let Some(slot) = d.slot() {
                if !self.waves.claim(slot) {
                    self.carried = Some(d);
                    break;
                }
            }
            decisions.push(d);
        }
        if decisions.is_empty() {
            // The first page of this segment needs a slot of the wave: it
            // opens the next segment, after a barrier.
            return self.carried.is_some().then(|| self.next()).flatten();
        }
        Some(Segment {
            first,
            decisions,
            after_all,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The rules of `docs/FORMAT.md` §2 and the cases the golden vectors pin
    //! down, on the plan alone.
    use super::*;
    use crate::page::PageType;
    use crate::send::cache::DeltaCache;
    use Decision::*;

    const RAW: PageType = PageType::PageTable {
        level: 1,
        pinned: false,
    };

    fn staged(pages: &[(u64, PageType)]) -> Vec<StagedPage> {
        pages
            .iter()
            .map(|&(pfn, ty)| StagedPage { pfn, ty })
            .collect()
    }

    fn normal(pfns: &[u64]) -> Vec<StagedPage> {
        staged(
            &pfns
                .iter()
                .map(|&p| (p, PageType::Normal))
                .collect::<Vec<_>>(),
        )
    }

    /// Plans a batch and returns its segments.
    fn plan(cache: &mut DeltaCache, batch: &[StagedPage], seg: usize) -> Vec<Segment> {
        let mut waves = SlotWaves::default();
        let (index, _) = cache.split_mut(batch.len());
        Planner::new(index, batch, &mut waves, seg).collect()
    }

    fn decisions(segments: &[Segment]) -> Vec<Decision> {
        segments.iter().flat_map(|s| s.decisions.clone()).collect()
    }

    fn miss(slot: u32, evicted: Option<u64>) -> Decision {
        Miss { slot, evicted }
    }

    #[test]
    fn first_sight_misses_then_hits() {
        let mut c = DeltaCache::new(4);
        let p = plan(&mut c, &normal(&[10, 11]), 64);
        assert_eq!(decisions(&p), [miss(0, None), miss(1, None)]);
        let p = plan(&mut c, &normal(&[11, 10, 12]), 64);
        assert_eq!(decisions(&p), [Hit(1), Hit(0), miss(2, None)]);
    }

    #[test]
    fn a_raw_page_frees_its_slot_at_staging_time_for_an_earlier_miss() {
        // Cache full with 1, 2, 3 (1 least recent). The batch misses on 9,
        // then stages 2 raw: at staging, 2's slot was freed, so the miss of
        // 9 takes it and evicts nothing. Invalidating at compression time
        // would evict 1 instead (the `raw_invalidate_timing` vector).
        let mut c = DeltaCache::new(3);
        plan(&mut c, &normal(&[1, 2, 3]), 64);
        let batch = staged(&[(9, PageType::Normal), (2, RAW)]);
        let p = plan(&mut c, &batch, 64);
        assert_eq!(decisions(&p), [miss(1, None), Raw]);
        assert!(c.contains(1) && c.contains(3) && c.contains(9) && !c.contains(2));
    }

    #[test]
    fn a_slot_freed_by_a_raw_page_serves_the_next_miss_before_any_eviction() {
        let mut c = DeltaCache::new(3);
        plan(&mut c, &normal(&[1, 2, 3]), 64);
        plan(&mut c, &staged(&[(3, RAW)]), 64);
        let p = plan(&mut c, &normal(&[7, 8]), 64);
        // 7 takes 3's slot; only 8 evicts, the least recently used (1).
        assert_eq!(decisions(&p), [miss(2, None), miss(0, Some(1))]);
    }

    #[test]
    fn eviction_follows_recency() {
        let mut c = DeltaCache::new(3);
        plan(&mut c, &normal(&[1, 2, 3]), 64);
        plan(&mut c, &normal(&[1]), 64); // 2 is now least recent
        let p = plan(&mut c, &normal(&[4, 5]), 64);
        assert_eq!(decisions(&p), [miss(1, Some(2)), miss(2, Some(3))]);
    }

    #[test]
    fn a_pfn_twice_in_a_batch_hits_its_own_slot_after_a_barrier() {
        let mut c = DeltaCache::new(8);
        let p = plan(&mut c, &normal(&[5, 6, 5, 7]), 64);
        assert_eq!(
            decisions(&p),
            [miss(0, None), miss(1, None), Hit(0), miss(2, None)]
        );
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].first, p[0].after_all), (0, false));
        assert_eq!((p[1].first, p[1].after_all), (2, true));
    }

    #[test]
    fn normal_then_raw_in_one_batch_leaves_nothing_cached() {
        let mut c = DeltaCache::new(8);
        let p = plan(&mut c, &staged(&[(5, PageType::Normal), (5, RAW)]), 64);
        assert_eq!(decisions(&p), [miss(0, None), Raw]);
        assert!(!c.contains(5));
    }

    #[test]
    fn a_batch_larger_than_the_cache_reuses_slots_in_waves() {
        // Five misses through a cache of two: the third reuses the first's
        // slot (evicting it) and so must wait for it, as must the fifth.
        let mut c = DeltaCache::new(2);
        let p = plan(&mut c, &normal(&[1, 2, 3, 4, 5]), 64);
        assert_eq!(
            decisions(&p),
            [
                miss(0, None),
                miss(1, None),
                miss(0, Some(1)),
                miss(1, Some(2)),
                miss(0, Some(3))
            ]
        );
        let barriers: Vec<(usize, bool)> = p.iter().map(|s| (s.first, s.after_all)).collect();
        assert_eq!(barriers, [(0, false), (2, true), (4, true)]);
    }

    use crate::send::cache::CachePolicy;

    /// Plans an uncompressed batch that seeds the cache.
    fn plan_seed(cache: &mut DeltaCache, batch: &[StagedPage]) -> Vec<Decision> {
        let mut waves = SlotWaves::default();
        let (index, _) = cache.split_mut(batch.len());
        decisions(&Planner::seeding(index, batch, &mut waves, 64).collect::<Vec<_>>())
    }

    fn hits(d: &[Decision]) -> usize {
        d.iter().filter(|d| matches!(d, Hit(_))).count()
    }

    #[test]
    fn every_policy_frees_a_raw_pages_slot_at_staging_time() {
        // The rule of a_raw_page_frees_its_slot_at_staging_time_for_an_
        // earlier_miss holds whatever the policy: the index hands out a
        // free slot before asking the policy for a victim.
        for policy in CachePolicy::ALL {
            let mut c = DeltaCache::with_policy(policy, 3);
            plan(&mut c, &normal(&[1, 2, 3]), 64);
            let batch = staged(&[(9, PageType::Normal), (2, RAW)]);
            let p = plan(&mut c, &batch, 64);
            assert_eq!(decisions(&p), [miss(1, None), Raw], "{policy}");
            assert!(
                c.contains(1) && c.contains(3) && c.contains(9) && !c.contains(2),
                "{policy}"
            );
            // A normal copy stored earlier in the batch does not outlive
            // the raw page of the same PFN.
            let p = plan(&mut c, &staged(&[(5, PageType::Normal), (5, RAW)]), 64);
            assert!(matches!(decisions(&p)[..], [Miss { .. }, Raw]), "{policy}");
            assert!(!c.contains(5), "{policy}");
        }
    }

    #[test]
    fn every_policy_seeds_from_an_uncompressed_batch_and_raw_pages_drop_seeds() {
        for policy in CachePolicy::ALL {
            let mut c = DeltaCache::with_policy(policy, 8);
            let batch = staged(&[
                (1, PageType::Normal),
                (2, PageType::Normal),
                (3, RAW),
                (4, PageType::Normal),
            ]);
            assert_eq!(
                plan_seed(&mut c, &batch),
                [miss(0, None), miss(1, None), Raw, miss(2, None)],
                "{policy}"
            );
            // A later uncompressed batch: 2 again (same slot), 1 now raw.
            let batch = staged(&[(2, PageType::Normal), (1, RAW)]);
            assert_eq!(plan_seed(&mut c, &batch), [Hit(1), Raw], "{policy}");
            // The first compressed batch finds the seeds.
            let p = plan(&mut c, &normal(&[1, 2, 3, 4]), 64);
            assert_eq!(
                decisions(&p),
                [miss(0, None), Hit(1), miss(3, None), Hit(2)],
                "{policy}"
            );
        }
    }

    #[test]
    fn scan_resistant_policies_keep_a_hot_set_through_a_scan_larger_than_the_cache() {
        let hot: Vec<u64> = (0..20).collect();
        let scan: Vec<u64> = (1000..1500).collect();
        for policy in CachePolicy::ALL {
            let mut c = DeltaCache::with_policy(policy, 100);
            for _ in 0..3 {
                plan(&mut c, &normal(&hot), 64);
            }
            let p = decisions(&plan(&mut c, &normal(&scan), 64));
            assert_eq!(hits(&p), 0, "{policy}: the scan is new");
            let after = decisions(&plan(&mut c, &normal(&hot), 64));
            let want = match policy {
                CachePolicy::Lru => 0, // the scan pushed every hot page out
                CachePolicy::S3Fifo | CachePolicy::Lirs => hot.len(),
            };
            assert_eq!(hits(&after), want, "{policy}");
        }
    }

    #[test]
    fn lirs_keeps_part_of_a_set_re_dirtied_in_order_larger_than_the_cache() {
        // The overflow vector's pattern: 150 pages, in the same order every
        // checkpoint, through 100 slots. LRU misses every page every time.
        let set: Vec<u64> = (0..150).collect();
        for policy in CachePolicy::ALL {
            let mut c = DeltaCache::with_policy(policy, 100);
            plan(&mut c, &normal(&set), 64);
            let later: Vec<usize> = (0..4)
                .map(|_| hits(&decisions(&plan(&mut c, &normal(&set), 64))))
                .collect();
            match policy {
                CachePolicy::Lru => assert_eq!(later, [0; 4]),
                // The 99 LIR pages hit in every round once they are LIR.
                CachePolicy::Lirs => assert!(later[1..].iter().all(|&h| h >= 98), "{later:?}"),
                CachePolicy::S3Fifo => assert!(later.iter().sum::<usize>() > 0, "{later:?}"),
            }
        }
    }

    #[test]
    fn segments_cover_the_batch_in_order_whatever_their_length() {
        let batch = normal(&(0..100).collect::<Vec<_>>());
        let whole = decisions(&plan(&mut DeltaCache::new(64), &batch, 1000));
        for seg in [1, 7, 16, 100] {
            let p = plan(&mut DeltaCache::new(64), &batch, seg);
            assert_eq!(decisions(&p), whole, "segments of {seg}");
            let mut next = 0;
            for s in &p {
                assert_eq!(s.first, next);
                assert!(s.decisions.len() <= seg);
                next += s.decisions.len();
            }
            assert_eq!(next, 100);
        }
    }
}

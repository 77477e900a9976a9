//! The index and the policies on their own: hits, victims, free slots,
//! ghosts, resizing.

use super::*;

fn hit(l: Lookup) -> bool {
    matches!(l, Lookup::Hit(_))
}

#[test]
fn evicts_least_recently_used_and_reuses_freed_slots_first() {
    let mut c = DeltaCache::new(3);
    for pfn in 0..3 {
        assert!(matches!(c.lookup(pfn), Lookup::Miss { evicted: None, .. }));
    }
    assert!(hit(c.lookup(0))); // order now 1, 2, 0
    assert!(matches!(
        c.lookup(9),
        Lookup::Miss {
            evicted: Some(1),
            ..
        }
    ));
    assert!(c.invalidate(2));
    assert!(!c.invalidate(2));
    // The freed slot serves the next miss: nothing is evicted.
    assert!(matches!(c.lookup(7), Lookup::Miss { evicted: None, .. }));
    assert!(matches!(
        c.lookup(8),
        Lookup::Miss {
            evicted: Some(0),
            ..
        }
    ));
    assert_eq!(c.len(), 3);
    assert_eq!(c.pfns_by_rank(), vec![8, 7, 9]);
}

#[test]
fn every_policy_fills_free_slots_before_evicting_and_holds_its_capacity() {
    for policy in CachePolicy::ALL {
        let mut c = DeltaCache::with_policy(policy, 10);
        let mut slots = Vec::new();
        for pfn in 0..10 {
            match c.lookup(pfn) {
                Lookup::Miss {
                    slot,
                    evicted: None,
                } => slots.push(slot),
                other => panic!("{policy}: {other:?}"),
            }
        }
        slots.sort();
        assert_eq!(slots, (0..10).collect::<Vec<_>>(), "{policy}");
        assert!(c.invalidate(4));
        // The freed slot first, then evictions, never more than 10 held.
        assert_eq!(
            c.lookup(100),
            Lookup::Miss {
                slot: 4,
                evicted: None
            },
            "{policy}"
        );
        for pfn in 200..300 {
            let l = c.lookup(pfn);
            assert!(
                matches!(
                    l,
                    Lookup::Miss {
                        evicted: Some(_),
                        ..
                    }
                ),
                "{policy}: {l:?}"
            );
            assert_eq!(c.len(), 10, "{policy}");
        }
        // Each slot belongs to one resident page.
        let mut held: Vec<u32> = c.index.policy.residents().iter().map(|r| r.1).collect();
        held.sort();
        assert_eq!(held, (0..10).collect::<Vec<_>>(), "{policy}");
    }
}

#[test]
fn s3fifo_drops_pages_seen_once_before_pages_re_dirtied() {
    let mut c = DeltaCache::with_policy(CachePolicy::S3Fifo, 20);
    // A hot set of 10, re-dirtied once while in the small FIFO.
    for pfn in 0..10 {
        c.lookup(pfn);
    }
    for pfn in 0..10 {
        assert!(hit(c.lookup(pfn)));
    }
    // A one-time burst four times the cache's size.
    for pfn in 1000..1080 {
        assert!(!hit(c.lookup(pfn)));
    }
    for pfn in 0..10 {
        assert!(c.contains(pfn), "hot page {pfn} survived the burst");
    }
    // A burst page that comes back soon after leaving is a ghost (the
    // ghost FIFO holds the last 18): it goes straight to the main FIFO.
    let back = 1065;
    assert!(!c.contains(back));
    c.lookup(back);
    assert_eq!(c.pfns_by_rank()[0], back);
}

#[test]
fn lirs_keeps_a_fixed_part_of_a_loop_larger_than_the_cache() {
    // A set of 150 re-dirtied in the same order, through 100 pages: LRU
    // evicts every page just before its turn; LIRS keeps its LIR pages.
    let mut hits = std::collections::HashMap::new();
    for policy in CachePolicy::ALL {
        let mut c = DeltaCache::with_policy(policy, 100);
        let mut h = 0;
        for round in 0..10 {
            for pfn in 0..150 {
                h += (round > 0 && hit(c.lookup(pfn))) as u32;
                if round == 0 {
                    c.lookup(pfn);
                }
            }
        }
        hits.insert(policy, h);
    }
    assert_eq!(hits[&CachePolicy::Lru], 0);
    // 9 rounds of 150: LIRS keeps its 99 LIR pages every round after the
    // first lap has made them LIR.
    assert!(hits[&CachePolicy::Lirs] >= 8 * 98, "{hits:?}");
    assert!(hits[&CachePolicy::S3Fifo] > 0, "{hits:?}");
}

#[test]
fn lirs_promotes_a_page_dirtied_again_within_the_stack() {
    let mut c = DeltaCache::with_policy(CachePolicy::Lirs, 100);
    for pfn in 0..99 {
        c.lookup(pfn); // LIR while the LIR set fills
    }
    for pfn in 1000..1010 {
        c.lookup(pfn); // HIR: they share the one HIR slot
    }
    assert!(c.contains(1009) && !c.contains(1005));
    // 1005 is a ghost in the stack: its miss makes it LIR, and the oldest
    // LIR page (0) becomes HIR.
    assert!(!hit(c.lookup(1005)));
    assert!(c.contains(1005));
    assert_eq!(*c.pfns_by_rank().first().unwrap(), 1005);
    assert!(!c.pfns_by_rank()[..99].contains(&0));
}

#[test]
fn ghosts_are_bounded_by_the_capacity() {
    for policy in [CachePolicy::S3Fifo, CachePolicy::Lirs] {
        let mut c = DeltaCache::with_policy(policy, 50);
        for round in 0..3 {
            for pfn in 0..5000u64 {
                c.lookup(pfn * 7 + round);
            }
        }
        let entries = c.index.policy.entries();
        let ghosts = entries - c.len();
        let bound = (policy.ghosts_per_page() * 50.0).ceil() as usize;
        assert!(ghosts <= bound, "{policy}: {ghosts} ghosts > {bound}");
    }
}

#[test]
fn ghosts_cost_copies_under_the_same_budget() {
    let opts = |policy| CompressOptions {
        cache_pages: 8192,
        cache_policy: policy,
        ..CompressOptions::default()
    };
    let lru = DeltaCache::with_options(&opts(CachePolicy::Lru));
    assert_eq!(lru.capacity(), 8192);
    let budget = 8192 * (PAGE_SIZE + ENTRY_BYTES);
    for policy in [CachePolicy::S3Fifo, CachePolicy::Lirs] {
        let c = DeltaCache::with_options(&opts(policy));
        let ghosts = (policy.ghosts_per_page() * c.capacity() as f64) as usize;
        let cost = c.capacity() * (PAGE_SIZE + ENTRY_BYTES) + ghosts * ENTRY_BYTES;
        assert!(cost <= budget, "{policy}");
        assert!(cost + PAGE_SIZE + 2 * ENTRY_BYTES > budget, "{policy}");
        assert!(c.capacity() < 8192);
    }
}

#[test]
fn shrinking_evicts_by_policy_and_moves_copies_below_the_new_size() {
    for policy in CachePolicy::ALL {
        let mut c = DeltaCache::with_policy(policy, 3000);
        {
            let (index, mut slots) = c.split_mut(3000);
            let mut table = slots.table();
            for pfn in 0..3000u64 {
                let (Lookup::Hit(s) | Lookup::Miss { slot: s, .. }) = index.lookup(pfn);
                table.take(s).unwrap().0[..8].copy_from_slice(&pfn.to_le_bytes());
            }
        }
        c.resize(1000);
        assert_eq!((c.capacity(), c.len()), (1000, 1000), "{policy}");
        assert!(
            c.arena.slots() <= 1024,
            "{policy}: segments above given back"
        );
        for pfn in 0..3000u64 {
            if let Some(page) = c.peek(pfn) {
                assert_eq!(page.0[..8], pfn.to_le_bytes(), "{policy}: pfn {pfn}");
            }
        }
        let mut held: Vec<u32> = c.index.policy.residents().iter().map(|r| r.1).collect();
        held.sort();
        assert_eq!(held, (0..1000).collect::<Vec<_>>(), "{policy}");
        // Growing again: misses take new slots before evicting.
        c.resize(1500);
        let (index, _) = c.split_mut(600);
        let fresh = (5000..5500)
            .filter(|&p| matches!(index.lookup(p), Lookup::Miss { evicted: None, .. }))
            .count();
        assert_eq!(fresh, 500, "{policy}");
    }
}

#[test]
fn a_seeded_page_is_cached_and_a_raw_page_drops_it() {
    for policy in CachePolicy::ALL {
        let mut c = DeltaCache::with_policy(policy, 100);
        let (index, _) = c.split_mut(10);
        for pfn in 0..10 {
            assert!(matches!(index.seed(pfn), Lookup::Miss { .. }));
        }
        // Seeded twice (a later uncompressed checkpoint): the same slot.
        assert!(hit(index.seed(3)));
        assert!(index.invalidate(3));
        for pfn in (0..10).filter(|&p| p != 3) {
            assert!(hit(c.lookup(pfn)), "{policy}: {pfn}");
        }
        assert!(!c.contains(3));
    }
}

#[test]
fn a_seeded_cache_never_hands_out_a_ghost_slot() {
    // Seeding fills a cache with pages of no known reuse; pages seen later,
    // evicted and dirtied again must never bring back the slot of a ghost
    // (an entry without a copy). Xorshift walks over up to four times the
    // capacity, each round's set in PFN order as a checkpoint's dirty set.
    for policy in CachePolicy::ALL {
        for (cap, span, per_round) in [(64, 2, 40), (64, 4, 90), (200, 3, 150), (1000, 2, 900)] {
            let mut c = DeltaCache::with_policy(policy, cap);
            for pfn in 0..cap as u64 {
                assert!(matches!(c.index.seed(pfn), Lookup::Miss { .. }), "{policy}");
            }
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ cap as u64;
            for _ in 0..300 {
                let mut set: Vec<u64> = (0..per_round)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x % (span * cap as u64)
                    })
                    .collect();
                set.sort_unstable();
                set.dedup();
                for pfn in set {
                    let slot = match c.lookup(pfn) {
                        Lookup::Hit(s) | Lookup::Miss { slot: s, .. } => s,
                    };
                    assert!((slot as usize) < cap, "{policy}: pfn {pfn} got slot {slot}");
                }
            }
        }
    }
}

#[test]
fn lirs_after_seeding_re_dirties_an_evicted_seeded_page() {
    // Seeded pages have no reuse distance yet: they must not sit at the
    // stack's bottom, where the next demotion expects a LIR page. New
    // pages fill the LIR set, evicting seeded ones; dirtying an evicted
    // seeded page again then promotes it past the LIR limit.
    let cap = 100;
    let mut c = DeltaCache::with_policy(CachePolicy::Lirs, cap);
    for pfn in 0..cap as u64 {
        c.index.seed(pfn);
    }
    for pfn in 1000..1000 + cap as u64 {
        c.lookup(pfn);
    }
    // The seeded pages evicted last are the ghosts still remembered.
    for pfn in (0..cap as u64).rev() {
        let slot = match c.lookup(pfn) {
            Lookup::Hit(s) | Lookup::Miss { slot: s, .. } => s,
        };
        assert!((slot as usize) < cap, "pfn {pfn} got slot {slot}");
    }
}

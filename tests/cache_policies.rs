//! Every cache policy, seeded or not, fixed or sized adaptively, gives a
//! stream the receiver reproduces exactly: on every bundled trace (sender
//! pipeline -> bytes -> receiver, checked page by page after every
//! checkpoint) and on the golden vectors' inputs (page-level compressor ->
//! decoder). LRU's bytes are checked against the vectors in conformance.rs.

use ckpt_engine::{
    CachePolicy, CompressOptions, GuestMemory, Limits, Receiver, SendStats, Sender, SenderOptions,
    SparseMemory,
};
use ckpt_lab::conformance::{round_trip_case, vector_files};
use ckpt_lab::replay::{send_checkpoint, Checkpoint, Source, TraceSource};
use ckpt_simd::Codec;
use std::path::Path;

/// A trace read once: its checkpoints (new contents only) and the memory
/// it ends with.
struct Trace {
    name: String,
    guest: u64,
    checkpoints: Vec<Checkpoint>,
    end: Vec<(u64, Box<ckpt_simd::Page>)>,
}

fn read(trace: &Path) -> Trace {
    let mut source = TraceSource::open(trace).unwrap();
    let mut checkpoints = Vec::new();
    while let Some(mut cp) = source.next_checkpoint().unwrap() {
        cp.previous = None;
        checkpoints.push(cp);
    }
    let guest = source.guest_pages();
    let store = source.reader().memory();
    let end = (0..guest)
        .filter_map(|p| store.get(p).map(|page| (p, Box::new(*page))))
        .collect();
    Trace {
        name: trace.display().to_string(),
        guest,
        checkpoints,
        end,
    }
}

/// Sends `trace` with `compress`, receives the stream, and checks every
/// checkpoint's pages and the whole memory at the end. Returns the
/// sender's totals and, per checkpoint, the receiver's FULL count and pages.
fn round_trip(trace: &Trace, compress: CompressOptions) -> (SendStats, Vec<(u64, u64)>) {
    let opts = SenderOptions {
        compress,
        ..SenderOptions::new(trace.guest)
    };
    let mut sender = Sender::new(Vec::new(), Codec::best(), &opts).unwrap();
    for cp in &trace.checkpoints {
        send_checkpoint(&mut sender, cp).unwrap();
    }
    let (stream, stats, _) = sender.finish().unwrap();

    let mut rx = Receiver::new(&stream[..], Limits::default(), Codec::best()).unwrap();
    let mut memory = SparseMemory::new(trace.guest);
    let mut forms = Vec::new();
    for cp in &trace.checkpoints {
        let info = rx
            .next_checkpoint(&mut memory)
            .unwrap()
            .expect("a checkpoint");
        let data = cp.entries.iter().filter(|(_, ty)| ty.carries_data());
        for ((pfn, _), page) in data.zip(cp.pages.iter()) {
            assert!(
                memory.page(*pfn) == &page.0,
                "{}: pfn {pfn} after checkpoint {}",
                trace.name,
                info.seq
            );
        }
        forms.push((info.full, info.data_pages));
    }
    assert!(rx.next_checkpoint(&mut memory).unwrap().is_none());
    for (p, page) in &trace.end {
        assert!(
            memory.page(*p) == &**page,
            "{}: pfn {p} at the end",
            trace.name
        );
    }
    (stats, forms)
}

#[test]
fn every_policy_round_trips_every_bundled_trace() {
    let traces = ckpt_lab::bundled_traces();
    assert_eq!(traces.len(), 4, "the four bundled traces");
    for trace in traces.iter().map(|t| read(t)) {
        for policy in CachePolicy::ALL {
            // Fixed and small: evictions in every checkpoint, seeding
            // evicting too. Adaptive within 64 MiB: the cache grows on
            // gcc, shrinks (evicting and moving copies) on redis, and stays
            // at the budget on python and postgres. Two threads for one.
            let fixed = CompressOptions {
                cache_pages: 2048,
                cache_policy: policy,
                seed_cache: true,
                threads: 1,
                ..CompressOptions::default()
            };
            let auto = CompressOptions {
                cache_budget: Some(64 << 20),
                threads: 2,
                ..fixed.clone()
            };
            for opts in [fixed, auto] {
                let (stats, forms) = round_trip(&trace, opts.clone());
                // The initial image seeded the adaptive cache (from its
                // whole budget): the first compressed checkpoint is not all
                // FULL. (2048 seeded pages may all be pages it leaves alone.)
                let (full, pages) = forms[1];
                assert!(
                    opts.cache_budget.is_none() || full < pages,
                    "{} {policy} {:?}: first compressed checkpoint {full} FULL of {pages}",
                    trace.name,
                    opts.cache_budget
                );
                assert!(stats.cache_bytes <= opts.cache_budget.unwrap_or(u64::MAX));
            }
        }
    }
}

#[test]
fn without_seeding_the_first_compressed_checkpoint_is_all_full() {
    let trace = ckpt_lab::bundled_traces()
        .into_iter()
        .find(|t| t.to_string_lossy().contains("redis"))
        .expect("the redis trace");
    for seed_cache in [false, true] {
        let (stats, forms) = round_trip(
            &read(&trace),
            CompressOptions {
                seed_cache,
                ..CompressOptions::default()
            },
        );
        let (full, pages) = forms[1];
        // Pages first dirtied after the image miss either way; the rest
        // hit only when seeded.
        assert_eq!(
            full == pages,
            !seed_cache,
            "seeded {seed_cache}: {full} of {pages}"
        );
        assert_eq!(stats.cache_pages, 8192);
    }
}

#[test]
fn every_policy_round_trips_the_vectors_inputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let files = vector_files(&dir).unwrap();
    assert_eq!(files.len(), 11);
    for f in &files {
        let mut full = Vec::new();
        for policy in CachePolicy::ALL {
            let r = round_trip_case(f, Codec::best(), 2, policy).unwrap();
            assert!(r.failure.is_none(), "{} {policy}: {:?}", r.name, r.failure);
            full.push(r.full_misses);
        }
        if f.to_string_lossy().contains("overflow") {
            // The last checkpoint re-dirties more than the cache holds, in
            // the order of the one before (docs/FORMAT.md §2.3).
            let last = |i: usize| *full[i].last().unwrap();
            assert_eq!(last(0), 8172, "LRU: the original's scan weakness");
            assert!(last(2) < last(0) / 2, "LIRS keeps most: {}", last(2));
        }
    }
}

//! Guest memory allocated by 2 MiB extent: the bytes a stream restores are
//! the stream's under every policy, the receiver names each PFN batch
//! before writing it, each extent the policy makes huge really is one huge
//! page (and each it makes small really is not), and breaking an extent
//! keeps its bytes and gives it 4 KiB pages.
#![cfg(target_os = "linux")]

use ckpt_engine::extent::backing::{smaps_totals, PageMap, ThpCounters, ThpSettings};
use ckpt_engine::extent::{
    ExtentMemory, ExtentState, Planner, SuperpagePolicy, EXTENT_BYTES, EXTENT_PAGES,
};
use ckpt_engine::stream::Event;
use ckpt_engine::{
    Codec, CompressOptions, GuestMemory, Limits as ReceiverConfig, Page, Receiver, Sender,
    SenderOptions, SparseMemory,
};
use ckpt_lab::replay::send_checkpoint;
use ckpt_lab::restore_bench::{restore, ImageOrder, Workload};
use ckpt_lab::synth::Scenario;

const N: u64 = EXTENT_PAGES;
/// Eight whole extents and a partial one.
const GUEST: u64 = 8 * N + 300;
const SIZES: [usize; 8] = [300, 1100, 0, 700, 1024, 50, 2500, 9];

fn options(guest_pages: u64) -> SenderOptions {
    SenderOptions {
        compress: CompressOptions {
            cache_pages: 800,
            threads: 2,
            pin_threads: false,
            ..CompressOptions::default()
        },
        // Not a multiple of the 1024-entry PFN batch: batch boundaries
        // fall inside extents.
        ring_pages: 1500,
        ..SenderOptions::new(guest_pages)
    }
}

/// The scenario's stream and, per checkpoint, the PFNs sent with data.
fn scenario_stream() -> (Vec<u8>, Vec<Vec<u64>>) {
    let mut tx = Sender::new(Vec::new(), Codec::best(), &options(GUEST)).unwrap();
    let mut sent = Vec::new();
    for cp in Scenario::new(GUEST, 11, &SIZES) {
        send_checkpoint(&mut tx, &cp).unwrap();
        let pfns = cp
            .entries
            .iter()
            .filter(|(_, ty)| ty.carries_data())
            .map(|&(pfn, _)| pfn)
            .collect();
        sent.push(pfns);
    }
    (tx.finish().unwrap().0, sent)
}

/// Sparse memory that also records the batches the receiver names.
struct Recording {
    inner: SparseMemory,
    batches: Vec<Vec<u64>>,
}

impl GuestMemory for Recording {
    fn pages(&self) -> u64 {
        self.inner.pages()
    }
    fn page(&self, pfn: u64) -> &Page {
        self.inner.page(pfn)
    }
    fn page_mut(&mut self, pfn: u64) -> &mut Page {
        self.inner.page_mut(pfn)
    }
    fn begin_batch(&mut self, pfns: &[u64]) {
        self.batches.push(pfns.to_vec());
    }
}

/// The batches the receiver names, checked against the stream: their
/// PFNs are the data-carrying entries in send order, and their sizes are
/// the data counts of the stream's PFN batches.
fn named_batches(stream: &[u8], sent: &[Vec<u64>]) -> Vec<Vec<u64>> {
    let mut rx = Receiver::new(stream, ReceiverConfig::default(), Codec::best()).unwrap();
    let mut mem = Recording {
        inner: SparseMemory::new(GUEST),
        batches: Vec::new(),
    };
    for want in sent {
        let before = mem.batches.len();
        let mut sizes = Vec::new();
        rx.next_checkpoint_observed(&mut mem, &mut |e| {
            if let Event::Batch { data, .. } = e {
                if *data > 0 {
                    sizes.push(*data as usize);
                }
            }
        })
        .unwrap()
        .unwrap();
        let named = &mem.batches[before..];
        assert_eq!(named.iter().map(Vec::len).collect::<Vec<_>>(), sizes);
        assert_eq!(&named.concat(), want);
    }
    mem.batches
}

/// Whether the kernel's per-page flags can be read here (root).
fn flags_readable() -> bool {
    let s = ThpSettings::read();
    if !s.kpageflags {
        eprintln!("skipped: /proc/kpageflags is not readable (needs root)");
    }
    s.kpageflags
}

fn thp_available() -> bool {
    let s = ThpSettings::read();
    let ok = s.enabled == "madvise" || s.enabled == "always";
    if !ok {
        eprintln!("skipped: transparent huge pages are {:?}", s.enabled);
    }
    ok
}

#[test]
fn receiver_names_each_batch_before_writing_it() {
    let (stream, sent) = scenario_stream();
    let batches = named_batches(&stream, &sent);
    // The first checkpoint alone spans several batches.
    assert!(batches.len() > SIZES.len() + 3);
}

#[test]
fn restored_bytes_equal_the_stream_under_every_policy() {
    let (stream, sent) = scenario_stream();
    let batches = named_batches(&stream, &sent);
    for policy in SuperpagePolicy::ALL {
        let mut reference = SparseMemory::new(GUEST);
        let mut mem = ExtentMemory::new(GUEST, policy).unwrap();
        let mut rx_ref =
            Receiver::new(&stream[..], ReceiverConfig::default(), Codec::best()).unwrap();
        let mut rx = Receiver::new(&stream[..], ReceiverConfig::default(), Codec::best()).unwrap();
        let mut k = 0;
        while let Some(info) = rx.next_checkpoint(&mut mem).unwrap() {
            rx_ref.next_checkpoint(&mut reference).unwrap().unwrap();
            for p in 0..GUEST {
                assert_eq!(
                    mem.page(p)[..],
                    reference.page(p)[..],
                    "{policy}: pfn {p} after checkpoint {}",
                    info.seq
                );
                // Through the guest's view too, for the pages written.
                if mem.is_written(p) {
                    let at = p as usize * 4096;
                    assert_eq!(&mem.bytes()[at..at + 4096], &reference.page(p)[..]);
                }
            }
            k += 1;
        }
        assert_eq!(k, sent.len());
        // The memory decided what a planner decides on the same batches.
        let mut planner = Planner::new(policy, GUEST);
        let mut actions = Vec::new();
        for b in &batches {
            planner.plan(b, &mut actions);
        }
        for e in 0..GUEST.div_ceil(N) {
            assert_eq!(
                mem.extent_state(e),
                planner.state(e),
                "{policy}: extent {e}"
            );
        }
        let r = mem.report().unwrap();
        assert_eq!(r.superpage_policy, policy);
        let huge_actions = actions
            .iter()
            .filter(|a| matches!(a, ckpt_engine::extent::Action::Huge(_)))
            .count() as u64;
        assert_eq!(r.extents_2m, huge_actions);
        assert_eq!(r.pages_written, reference.resident() as u64);
    }
}

#[test]
fn each_policy_decides_as_expected_on_whole_images() {
    let opts = options(0);
    let pages = 6 * N;
    for order in [ImageOrder::Ascending, ImageOrder::Shuffled] {
        let w = Workload::image(pages, order, 5, &[200, 900], Codec::best(), &opts).unwrap();
        for policy in SuperpagePolicy::ALL {
            let mut mem = ExtentMemory::new(pages, policy).unwrap();
            // Checks every page against the guest.
            restore(&w, &mut mem, Codec::best()).unwrap();
            let r = mem.report().unwrap();
            let want_huge = match (policy, order) {
                (SuperpagePolicy::None, _) => 0,
                (SuperpagePolicy::Tracking, ImageOrder::Shuffled) => 0,
                _ => 6,
            };
            assert_eq!(r.extents_2m, want_huge, "{policy} {order:?}");
            assert_eq!(r.extents_broken, 0, "{policy} {order:?}");
            assert_eq!(r.extents_full, 6);
            assert_eq!(r.pages_4k, (6 - want_huge) * N, "{policy} {order:?}");
            for e in 0..6 {
                let want = if want_huge > 0 {
                    ExtentState::Huge
                } else {
                    ExtentState::Small
                };
                assert_eq!(mem.extent_state(e), want);
            }
        }
    }
}

/// Every extent the policy made huge is one huge page (unless the kernel
/// reported a fallback), every other one is not, and `smaps` agrees.
#[test]
fn the_kernel_backs_what_the_policy_chose() {
    if !thp_available() || !flags_readable() {
        return;
    }
    let (stream, _) = scenario_stream();
    for policy in SuperpagePolicy::ALL {
        let before = ThpCounters::read().unwrap();
        let mut mem = ExtentMemory::new(GUEST, policy).unwrap();
        let mut rx = Receiver::new(&stream[..], ReceiverConfig::default(), Codec::best()).unwrap();
        while rx.next_checkpoint(&mut mem).unwrap().is_some() {}
        let fallbacks = ThpCounters::read()
            .unwrap()
            .since(&before)
            .thp_fault_fallback;
        let mut huge = 0;
        for e in 0..GUEST.div_ceil(N) {
            let is = mem.extent_is_huge(e).unwrap().expect("flags readable");
            match mem.extent_state(e) {
                ExtentState::Huge | ExtentState::Pending => {
                    assert!(is || fallbacks > 0, "{policy}: extent {e} not huge");
                }
                _ => assert!(!is, "{policy}: extent {e} is huge"),
            }
            huge += is as u64;
        }
        let r = mem.report().unwrap();
        assert_eq!(r.extents_huge, Some(huge));
        assert_eq!(r.anon_huge_bytes, huge * EXTENT_BYTES as u64, "{policy}");
        if policy == SuperpagePolicy::None {
            assert_eq!(huge, 0);
        }
    }
}

#[test]
fn breaking_an_extent_keeps_its_bytes_and_gives_4k_pages() {
    let mut mem = ExtentMemory::new(4 * N, SuperpagePolicy::Tracking).unwrap();
    let fill = |p: u64| -> Page {
        let mut page = [0u8; 4096];
        for (i, c) in page.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&(p << 32 | i as u64).to_le_bytes());
        }
        page
    };
    // Extent 1 in order to the end of a batch: given a huge page early.
    let first: Vec<u64> = (N..N + 300).collect();
    mem.begin_batch(&first);
    assert_eq!(mem.extent_state(1), ExtentState::Pending);
    for &p in &first {
        *mem.page_mut(p) = fill(p);
    }
    let pm = PageMap::open().unwrap();
    let at = mem.address() + EXTENT_BYTES;
    let thp = thp_available();
    if thp {
        // The whole 2 MiB is there, though only 300 pages were written.
        assert_eq!(pm.resident(at, N as usize).unwrap(), N);
        if let Some(h) = mem.extent_is_huge(1).unwrap() {
            assert!(h, "the pending extent is not a huge page");
        }
        let (_, anon_huge) = smaps_totals(at, at + EXTENT_BYTES).unwrap();
        assert!(anon_huge >= EXTENT_BYTES as u64);
    }
    // The next batch does not continue the run: the extent is broken.
    mem.begin_batch(&[N + 301, 3 * N + 7]);
    assert_eq!(mem.extent_state(1), ExtentState::Small);
    let r = mem.report().unwrap();
    assert_eq!((r.extents_2m, r.extents_broken, r.pages_4k), (1, 1, 300));
    // Exactly the 300 written pages remain, each its own 4 KiB page.
    assert_eq!(pm.resident(at, N as usize).unwrap(), 300);
    assert!(!mem.extent_is_huge(1).unwrap().unwrap_or(false));
    assert_eq!(r.anon_huge_bytes, 0);
    for &p in &first {
        assert_eq!(mem.page(p), &fill(p), "pfn {p} after the break");
    }
    // Pages never written read as zeros and cost nothing.
    assert_eq!(mem.page(N + 400), &[0u8; 4096]);
    assert_eq!(pm.resident(at, N as usize).unwrap(), 300);
    // Writing on into the broken extent adds 4 KiB pages.
    *mem.page_mut(N + 301) = fill(N + 301);
    assert_eq!(mem.report().unwrap().pages_4k, 301);
    assert_eq!(pm.resident(at, N as usize).unwrap(), 301);
}

#[test]
fn writes_without_batches_are_planned_one_by_one() {
    // A caller that never names batches: each write is a batch of one.
    let mut mem = ExtentMemory::new(2 * N, SuperpagePolicy::Tracking).unwrap();
    for p in 0..N {
        mem.page_mut(p)[0] = p as u8 | 1;
    }
    mem.page_mut(N + 3)[0] = 9;
    assert_eq!(mem.extent_state(0), ExtentState::Huge);
    assert_eq!(mem.extent_state(1), ExtentState::Small);
    for p in 0..N {
        assert_eq!(mem.page(p)[0], p as u8 | 1);
    }
    let r = mem.report().unwrap();
    assert_eq!((r.extents_2m, r.extents_broken, r.pages_4k), (1, 0, 1));
}

#[test]
fn guest_sizes_out_of_range_are_refused() {
    assert!(ExtentMemory::new(0, SuperpagePolicy::None).is_err());
    assert!(ExtentMemory::new((1 << 28) + 1, SuperpagePolicy::None).is_err());
    assert_eq!(
        "Tracking".parse::<SuperpagePolicy>().unwrap(),
        SuperpagePolicy::Tracking
    );
    assert!("huge".parse::<SuperpagePolicy>().is_err());
}

//! Whatever the `Sender` accepts, the `Receiver` accepts and reproduces:
//! random call sequences (pages, raw pages, entries without data, toolstack
//! chunks, ring overflows, empty checkpoints, a PFN given twice) go through
//! a sender into a receiver, and the backup's memory is compared with the
//! primary's after every checkpoint.

use ckpt_engine::{
    Codec, CompressOptions, GuestMemory, Limits, PageType, Receiver, SendError, Sender,
    SenderOptions, SparseMemory,
};
use proptest::prelude::*;

const GUEST: u64 = 96;

/// One call on the sender within a checkpoint.
#[derive(Clone, Debug)]
enum Call {
    /// A normal page: pfn, and a seed for how its content changes.
    Page(u64, u8),
    /// A page-table page, sent raw.
    Raw(u64, u8),
    /// An entry that carries no data.
    NoData(u64),
    /// A toolstack chunk (LAST_CHECKPOINT, or an HVM param).
    Toolstack(bool),
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        6 => (0..GUEST, any::<u8>()).prop_map(|(p, s)| Call::Page(p, s)),
        1 => (0..GUEST, any::<u8>()).prop_map(|(p, s)| Call::Raw(p, s)),
        1 => (0..GUEST).prop_map(Call::NoData),
        1 => any::<bool>().prop_map(Call::Toolstack),
    ]
}

/// Changes a few words of `page`, or rewrites it, depending on `seed`.
fn mutate(page: &mut [u8; 4096], seed: u8) {
    match seed % 4 {
        0 => {} // unchanged: EMPTY
        1 => page[(seed as usize * 37) % 4096] ^= seed | 1,
        2 => page[(seed as usize * 16) % 4000..][..64].fill(seed),
        _ => page
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i as u8) ^ seed),
    }
}

fn run(checkpoints: Vec<Vec<Call>>, ring: usize, cache: usize, threads: usize) {
    let opts = SenderOptions {
        compress: CompressOptions {
            cache_pages: cache,
            threads,
            pin_threads: false,
            ..CompressOptions::default()
        },
        ring_pages: ring,
        ..SenderOptions::new(GUEST)
    };
    let mut sender = Sender::new(Vec::new(), Codec::best(), &opts).unwrap();
    let mut primary = vec![[0u8; 4096]; GUEST as usize];
    // Expected memory after each checkpoint: the pages sent with data.
    let mut expected = Vec::new();
    // The initial image, uncompressed, switching compression on.
    sender.begin_checkpoint().unwrap();
    for pfn in 0..GUEST {
        primary[pfn as usize][..8].copy_from_slice(&pfn.to_le_bytes());
        sender
            .page(pfn, PageType::Normal, Some(&primary[pfn as usize]))
            .unwrap();
    }
    sender.enable_compression().unwrap();
    sender.end_checkpoint().unwrap();
    expected.push(primary.clone());
    for calls in checkpoints {
        sender.begin_checkpoint().unwrap();
        let mut listed = std::collections::HashSet::new();
        for c in calls {
            let (pfn, ty, seed) = match c {
                Call::Page(p, s) => (p, PageType::Normal, Some(s)),
                Call::Raw(p, s) => (
                    p,
                    PageType::PageTable {
                        level: 1 + s % 4,
                        pinned: s % 2 == 0,
                    },
                    Some(s),
                ),
                Call::NoData(p) => (p, PageType::XTab, None),
                Call::Toolstack(last) => {
                    let r = if last {
                        sender.toolstack_chunk(-9, &[])
                    } else {
                        sender.toolstack_chunk(-3, &[0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0])
                    };
                    r.unwrap();
                    continue;
                }
            };
            let mut candidate = primary[pfn as usize];
            if let Some(s) = seed {
                mutate(&mut candidate, s);
            }
            let r = sender.page(pfn, ty, seed.map(|_| &candidate));
            if listed.insert(pfn) {
                r.unwrap();
                if seed.is_some() {
                    primary[pfn as usize] = candidate;
                }
            } else {
                // Refused, and the checkpoint goes on as if never asked.
                assert!(matches!(r, Err(SendError::DuplicatePfn { .. })), "{r:?}");
            }
        }
        sender.end_checkpoint().unwrap();
        expected.push(primary.clone());
    }
    let (stream, stats, _) = sender.finish().unwrap();
    assert_eq!(stats.checkpoints as usize, expected.len());

    let mut rx = Receiver::new(&stream[..], Limits::default(), Codec::best()).unwrap();
    let mut backup = SparseMemory::new(GUEST);
    for (k, want) in expected.iter().enumerate() {
        let info = rx
            .next_checkpoint(&mut backup)
            .unwrap_or_else(|e| panic!("checkpoint {k} rejected: {e}"))
            .expect("a checkpoint");
        assert_eq!(info.seq, k as u64);
        for pfn in 0..GUEST {
            assert!(
                backup.page(pfn) == &want[pfn as usize],
                "pfn {pfn} differs after checkpoint {k}"
            );
        }
    }
    assert!(rx.next_checkpoint(&mut backup).unwrap().is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn what_the_sender_accepts_the_receiver_reproduces(
        checkpoints in prop::collection::vec(prop::collection::vec(call(), 0..160), 1..8),
        ring in prop::sample::select(vec![1usize, 7, 64, 200]),
        cache in prop::sample::select(vec![1usize, 5, 40, 512]),
        threads in 1usize..4,
    ) {
        run(checkpoints, ring, cache, threads);
    }
}

#[test]
fn calls_out_of_order_are_refused_and_change_nothing() {
    let mut sender = Sender::new(Vec::new(), Codec::best(), &SenderOptions::new(GUEST)).unwrap();
    let page = [1u8; 4096];
    assert!(matches!(
        sender.page(1, PageType::Normal, Some(&page)),
        Err(SendError::Sequence(_))
    ));
    assert!(matches!(
        sender.toolstack_chunk(-9, &[]),
        Err(SendError::Sequence(_))
    ));
    sender.begin_checkpoint().unwrap();
    assert!(matches!(
        sender.page(GUEST, PageType::Normal, Some(&page)),
        Err(SendError::PfnOutOfRange { .. })
    ));
    assert!(matches!(
        sender.page(2, PageType::XTab, Some(&page)),
        Err(SendError::NoPageData { .. })
    ));
    assert!(matches!(
        sender.page(2, PageType::Normal, None),
        Err(SendError::MissingPageData { .. })
    ));
    assert!(matches!(
        sender.toolstack_chunk(-5, &[]),
        Err(SendError::ToolstackChunk { .. })
    ));
    sender.page(2, PageType::Normal, Some(&page)).unwrap();
    sender.end_checkpoint().unwrap();
    let (stream, _, _) = sender.finish().unwrap();
    let mut rx = Receiver::new(&stream[..], Limits::default(), Codec::best()).unwrap();
    let mut mem = SparseMemory::new(GUEST);
    let info = rx.next_checkpoint(&mut mem).unwrap().unwrap();
    assert_eq!((info.entries, info.data_pages), (1, 1));
    assert_eq!(mem.page(2), &page);
}

#[test]
fn the_sender_refuses_what_the_backup_would_not_accept() {
    let limits = Limits {
        max_checkpoint_entries: 4,
        max_checkpoint_bytes: 3 * 4105 + 2 * 64,
        ..Limits::default()
    };
    let opts = SenderOptions {
        limits: limits.clone(),
        ring_pages: 2,
        ..SenderOptions::new(GUEST)
    };
    let mut sender = Sender::new(Vec::new(), Codec::best(), &opts).unwrap();
    let page = [3u8; 4096];
    sender.begin_checkpoint().unwrap();
    sender.enable_compression().unwrap();
    sender.end_checkpoint().unwrap();
    sender.begin_checkpoint().unwrap();
    for pfn in 0..3 {
        sender.page(pfn, PageType::Normal, Some(&page)).unwrap();
    }
    assert!(matches!(
        sender.page(3, PageType::Normal, Some(&page)),
        Err(SendError::Limit { .. })
    ));
    sender.page(3, PageType::XTab, None).unwrap();
    assert!(matches!(
        sender.page(4, PageType::XTab, None),
        Err(SendError::Limit { .. })
    ));
    sender.end_checkpoint().unwrap();
    let (stream, _, _) = sender.finish().unwrap();
    let mut rx = Receiver::new(&stream[..], limits, Codec::best()).unwrap();
    let mut mem = SparseMemory::new(GUEST);
    while rx.next_checkpoint(&mut mem).unwrap().is_some() {}
    assert_eq!(mem.page(2), &page);
    // A ring whose worst chunk the backup would refuse is refused up front.
    let opts = SenderOptions {
        ring_pages: 1 << 16,
        ..SenderOptions::new(GUEST)
    };
    assert!(matches!(
        Sender::new(Vec::new(), Codec::best(), &opts),
        Err(SendError::Options(_))
    ));
}

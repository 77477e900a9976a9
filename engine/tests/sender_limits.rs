//! The sender keeps the receiver's limits exactly: whatever it accepts
//! under some `Limits`, a receiver with the same `Limits` accepts, even at
//! the edge (every page of a chunk at its worst-case encoding, and the
//! chunk's own bookkeeping), and it does not refuse what the receiver
//! would take.

use ckpt_engine::{
    CompressOptions, GuestMemory, Limits, PageType, Receiver, SendError, Sender, SenderOptions,
    SparseMemory,
};
use ckpt_simd::{Codec, MAX_ENCODED_LEN};

const PAGES: u64 = 8;

/// Sends four checkpoints of every page with every word changed (the
/// worst-case DELTA once cached) under a checkpoint limit of
/// `max_checkpoint_bytes`, each page the sender refuses left out; then
/// receives them with the same limits. Returns the pages sent in each
/// checkpoint.
fn send_and_receive(max_checkpoint_bytes: u64) -> Vec<usize> {
    let limits = Limits {
        max_chunk_bytes: PAGES * MAX_ENCODED_LEN as u64,
        max_checkpoint_bytes,
        ..Limits::default()
    };
    let opts = SenderOptions {
        compress: CompressOptions {
            cache_pages: 64,
            threads: 1,
            pin_threads: false,
            ..CompressOptions::default()
        },
        ring_pages: PAGES as usize,
        limits: limits.clone(),
        ..SenderOptions::new(PAGES)
    };
    let mut tx = Sender::new(Vec::new(), Codec::best(), &opts).unwrap();
    let mut expected = vec![[0u8; 4096]; PAGES as usize];
    let mut sent = Vec::new();
    for k in 0..4u32 {
        tx.begin_checkpoint().unwrap();
        let mut n = 0;
        for (pfn, slot) in expected.iter_mut().enumerate() {
            let mut page = [0u8; 4096];
            for (w, word) in page.chunks_exact_mut(4).enumerate() {
                word.copy_from_slice(&(k * 0x0101_0101 + w as u32 + 1).to_le_bytes());
            }
            match tx.page(pfn as u64, PageType::Normal, Some(&page)) {
                Ok(()) => {
                    *slot = page;
                    n += 1;
                }
                Err(SendError::Limit { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        if k == 0 {
            tx.enable_compression().unwrap();
        }
        tx.end_checkpoint().unwrap();
        sent.push(n);
    }
    let (bytes, _, _) = tx.finish().unwrap();
    let mut rx = Receiver::new(&bytes[..], limits, Codec::best()).unwrap();
    let mut mem = SparseMemory::new(PAGES);
    for (k, &n) in sent.iter().enumerate() {
        let info = rx
            .next_checkpoint(&mut mem)
            .unwrap_or_else(|e| panic!("checkpoint {k}, which the sender accepted: {e}"))
            .expect("a checkpoint");
        assert_eq!(info.data_pages as usize, n);
    }
    assert!(rx.next_checkpoint(&mut mem).unwrap().is_none());
    for (pfn, page) in expected.iter().enumerate() {
        assert_eq!(mem.page(pfn as u64)[..], page[..], "pfn {pfn}");
    }
    sent
}

#[test]
fn a_checkpoint_at_the_byte_limit_is_sent_whole_and_received() {
    // One chunk of eight worst-case pages and its 64 bytes of bookkeeping.
    let whole = PAGES * MAX_ENCODED_LEN as u64 + 64;
    assert_eq!(send_and_receive(whole), [8, 8, 8, 8]);
}

#[test]
fn a_checkpoint_one_byte_over_is_cut_by_the_sender_not_refused_by_the_receiver() {
    let whole = PAGES * MAX_ENCODED_LEN as u64 + 64;
    // Format A charges 4096 a page, so the first checkpoint still fits.
    assert_eq!(send_and_receive(whole - 1), [8, 7, 7, 7]);
}

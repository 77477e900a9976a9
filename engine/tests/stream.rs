//! The stream end to end: sender pipeline -> bytes -> receiver -> memory.

use ckpt_engine::stream::StreamError;
use ckpt_engine::{
    CompressOptions, GuestMemory, Limits, ReceiveError, Receiver, Sender, SenderOptions,
    SparseMemory,
};
use ckpt_lab::replay::send_checkpoint;
use ckpt_lab::synth::Scenario;
use ckpt_simd::{Codec, Page};
use std::io::Read;

const GUEST: u64 = 3000;
/// Includes an overflow (> ring), an exact-ring checkpoint and an empty one.
const SIZES: [usize; 8] = [300, 1100, 0, 700, 1024, 50, 2500, 9];
const RING: usize = 1024;

/// The expected memory after each checkpoint: (pfn, content) of its data pages.
type Expected = Vec<Vec<(u64, Box<Page>)>>;

fn send(threads: usize, ring: usize, cache: usize) -> (Vec<u8>, Expected) {
    let opts = SenderOptions {
        compress: CompressOptions {
            cache_pages: cache,
            threads,
            pin_threads: true,
            ..CompressOptions::default()
        },
        ring_pages: ring,
        stream_id: Some(42),
        ..SenderOptions::new(GUEST)
    };
    let mut sender = Sender::new(Vec::new(), Codec::best(), &opts).unwrap();
    let mut expected = Vec::new();
    for cp in Scenario::new(GUEST, 7, &SIZES) {
        send_checkpoint(&mut sender, &cp).unwrap();
        let data = cp.entries.iter().filter(|(_, ty)| ty.carries_data());
        let exp = data
            .zip(cp.pages.iter())
            .map(|(&(pfn, _), p)| (pfn, Box::new(p.0)))
            .collect();
        expected.push(exp);
    }
    let (bytes, stats, _) = sender.finish().unwrap();
    assert_eq!(stats.checkpoints as usize, SIZES.len() + 1);
    (bytes, expected)
}

fn receive_all(reader: impl Read, expected: &Expected) -> SparseMemory {
    let mut rx = Receiver::new(reader, Limits::default(), Codec::best()).unwrap();
    let mut mem = SparseMemory::new(GUEST);
    for exp in expected {
        let info = rx.next_checkpoint(&mut mem).unwrap().expect("a checkpoint");
        assert_eq!(info.data_pages as usize, exp.len());
        for (pfn, page) in exp {
            assert_eq!(
                mem.page(*pfn)[..],
                page[..],
                "pfn {pfn} after checkpoint {}",
                info.seq
            );
        }
    }
    assert!(rx.next_checkpoint(&mut mem).unwrap().is_none());
    mem
}

#[test]
fn round_trip_over_many_checkpoints() {
    let (bytes, expected) = send(2, RING, 800);
    let mem = receive_all(&bytes[..], &expected);
    // Every page the scenario ever sent holds its last content.
    let mut last = std::collections::HashMap::new();
    for cp in &expected {
        for (pfn, page) in cp {
            last.insert(*pfn, page);
        }
    }
    for (pfn, page) in last {
        assert_eq!(mem.page(pfn)[..], page[..]);
    }
}

#[test]
fn output_is_identical_for_every_thread_count() {
    let (one, _) = send(1, RING, 800);
    for threads in 2..=8 {
        let (many, _) = send(threads, RING, 800);
        assert!(one == many, "stream differs with {threads} threads");
    }
}

/// Delivers one byte per read, as a slow socket may.
struct OneByte<'a>(&'a [u8]);

impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.0[0];
        self.0 = &self.0[1..];
        Ok(1)
    }
}

#[test]
fn reader_fed_one_byte_at_a_time() {
    let (bytes, expected) = send(2, RING, 800);
    receive_all(OneByte(&bytes), &expected);
}

#[test]
fn truncation_anywhere_keeps_the_last_complete_checkpoint() {
    let (bytes, expected) = send(1, RING, 800);
    // Reference images after each complete checkpoint.
    let mut states = Vec::new();
    {
        let mut rx = Receiver::new(&bytes[..], Limits::default(), Codec::best()).unwrap();
        let mut mem = SparseMemory::new(GUEST);
        let mut ends = vec![rx.offset()];
        while rx.next_checkpoint(&mut mem).unwrap().is_some() {
            ends.push(rx.offset());
            states.push(snapshot(&mem));
        }
        assert_eq!(states.len(), expected.len());
        // Cut inside every checkpoint (start, middle, one byte short).
        for k in 1..ends.len() {
            let (a, b) = (ends[k - 1] as usize, ends[k] as usize);
            for cut in [a + 1, (a + b) / 2, b - 1] {
                let mut rx =
                    Receiver::new(&bytes[..cut], Limits::default(), Codec::best()).unwrap();
                let mut mem = SparseMemory::new(GUEST);
                let mut done = 0;
                let err = loop {
                    match rx.next_checkpoint(&mut mem) {
                        Ok(Some(_)) => done += 1,
                        Ok(None) => panic!("truncated stream ended cleanly"),
                        Err(e) => break e,
                    }
                };
                assert!(
                    matches!(err, ReceiveError::Stream(StreamError::Truncated { .. })),
                    "{err}"
                );
                assert_eq!(done, k - 1);
                let want = if k == 1 {
                    snapshot(&SparseMemory::new(GUEST))
                } else {
                    states[k - 2].clone()
                };
                assert!(
                    snapshot(&mem) == want,
                    "memory changed by a truncated checkpoint {k}"
                );
            }
        }
    }
}

fn snapshot(mem: &SparseMemory) -> Vec<u64> {
    (0..GUEST)
        .map(|p| xxhash_rust::xxh3::xxh3_64(mem.page(p)))
        .collect()
}

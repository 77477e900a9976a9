//! Integrity over every byte (SECURITY.md): a small stream with every kind
//! of part (raw pages, FULL, DELTA and EMPTY encodings, page-table pages,
//! entries without data, toolstack chunks, an overflowed staging ring, an
//! empty checkpoint) has each of its bytes inverted, and each bit of its
//! structural bytes (everything but page data) flipped, one at a time. No
//! corrupted stream is accepted: the receiver commits exactly the
//! checkpoints before the damaged frame, refuses that frame, and leaves
//! memory as the last of them left it.

use ckpt_engine::stream::{Event, HEADER_LEN};
use ckpt_engine::{Codec, GuestMemory, Limits, Receiver, SparseMemory};
use ckpt_lab::hostile::sample_stream;

const GUEST: u64 = 64;

fn snapshot(mem: &SparseMemory) -> Vec<u64> {
    (0..GUEST)
        .map(|p| xxhash_rust::xxh3::xxh3_64(mem.page(p)))
        .collect()
}

/// The clean stream read once: the offset where each checkpoint frame
/// ends, the memory after each, and where its page data lies.
struct Reference {
    ends: Vec<u64>,
    states: Vec<Vec<u64>>,
    data: Vec<(u64, u64)>,
}

fn reference(bytes: &[u8]) -> Reference {
    let mut rx = Receiver::new(bytes, Limits::default(), Codec::best()).unwrap();
    let mut mem = SparseMemory::new(GUEST);
    let mut r = Reference {
        ends: Vec::new(),
        states: vec![snapshot(&mem)],
        data: Vec::new(),
    };
    let mut compressed = false;
    let mut data = Vec::new();
    let mut observe = |e: &Event| match *e {
        Event::Checkpoint { compressed: c, .. } => compressed = c,
        Event::Batch {
            offset,
            entries,
            data: d,
        } if !compressed => {
            let at = offset + 4 + 8 * entries as u64;
            data.push((at, at + d as u64 * 4096));
        }
        Event::Compressed { offset, len } => data.push((offset + 12, offset + 12 + len)),
        _ => {}
    };
    while rx
        .next_checkpoint_observed(&mut mem, &mut observe)
        .unwrap()
        .is_some()
    {
        r.ends.push(rx.offset());
        r.states.push(snapshot(&mem));
    }
    r.data = data;
    r
}

/// Receives a damaged copy (damaged at byte `at`) and checks that it is
/// refused with exactly the intact checkpoints committed.
fn check_refused(bytes: &[u8], at: usize, r: &Reference, what: &str) {
    // The frame the damage is in: checkpoints ending at or before it are
    // intact and must commit; the damaged one must not.
    let intact = r.ends.iter().filter(|&&end| end <= at as u64).count();
    let mut mem = SparseMemory::new(GUEST);
    let mut committed = 0;
    let accepted = match Receiver::new(bytes, Limits::default(), Codec::best()) {
        Err(_) => false,
        Ok(mut rx) => loop {
            match rx.next_checkpoint(&mut mem) {
                Ok(Some(_)) => committed += 1,
                Ok(None) => break true,
                Err(_) => break false,
            }
        },
    };
    assert!(!accepted, "{what} at byte {at}: the stream was accepted");
    assert_eq!(
        committed, intact,
        "{what} at byte {at}: {committed} checkpoints committed, {intact} were intact"
    );
    assert!(
        snapshot(&mem) == r.states[committed],
        "{what} at byte {at}: memory differs from checkpoint {committed}'s"
    );
}

#[test]
fn every_byte_inverted_and_every_structural_bit_flipped_is_refused() {
    let clean = sample_stream();
    let r = reference(&clean);
    assert_eq!(r.ends.len(), 6, "the sample has six checkpoints");
    assert_eq!(r.ends.last().map(|&e| e as usize + 24), Some(clean.len()));
    let structural: Vec<usize> = (0..clean.len())
        .filter(|&at| !r.data.iter().any(|&(a, b)| (a..b).contains(&(at as u64))))
        .collect();
    // (offset, mask) of every damage tried, shared out among the cores.
    let mut damages: Vec<(usize, u8)> = (0..clean.len()).map(|at| (at, 0xff)).collect();
    damages.extend(
        structural
            .iter()
            .flat_map(|&at| (0..8).map(move |bit| (at, 1u8 << bit))),
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for part in damages.chunks(damages.len().div_ceil(threads)) {
            let (clean, r) = (&clean, &r);
            s.spawn(move || {
                let mut copy = clean.clone();
                for &(at, mask) in part {
                    copy[at] ^= mask;
                    let what = if mask == 0xff {
                        "inverted byte"
                    } else {
                        "flipped bit"
                    };
                    check_refused(&copy, at, r, what);
                    copy[at] ^= mask;
                }
            });
        }
    });
    let data: u64 = r.data.iter().map(|&(a, b)| b - a).sum();
    assert_eq!(structural.len() as u64 + data, clean.len() as u64);
    eprintln!(
        "{} inverted bytes and {} flipped bits: 0 accepted",
        clean.len(),
        8 * structural.len()
    );
}

#[test]
fn a_byte_appended_or_a_frame_moved_is_refused() {
    let clean = sample_stream();
    let r = reference(&clean);
    let mut longer = clean.clone();
    longer.push(0);
    check_refused(&longer, clean.len(), &r, "byte after the end frame");
    // Checkpoints 2 and 3 swapped: each frame is intact, but out of place.
    let (a, b, c) = (r.ends[1] as usize, r.ends[2] as usize, r.ends[3] as usize);
    let mut swapped = clean[..a].to_vec();
    swapped.extend_from_slice(&clean[b..c]);
    swapped.extend_from_slice(&clean[a..b]);
    swapped.extend_from_slice(&clean[c..]);
    check_refused(&swapped, a, &r, "frames swapped");
    // Checkpoint 3 as another stream (another id) would carry it: its
    // bytes unchanged, its check chained from that stream's header.
    let mut other = clean[..HEADER_LEN].to_vec();
    other[32] ^= 1;
    let seed = crc32c::crc32c(&other[..48]);
    let mut spliced = clean.clone();
    let check = crc32c::crc32c_append(seed, &clean[b..c - 8]);
    spliced[c - 8..c - 4].copy_from_slice(&check.to_le_bytes());
    check_refused(&spliced, b, &r, "frame of another stream");
}

//! The record stream reader on arbitrary bytes: never a panic; a rejected
//! checkpoint never changes memory.
//!
//! The input is used three ways: as every record after valid headers (so
//! the reader's record rules are reached); as the records of one checkpoint
//! closed by an integrity record whose check is right (so the body's rules
//! and the verify pass are reached); and, after a checkpoint that enables
//! compression, as the PFN entries and page encodings of one compressed page
//! record through a real zstd frame (so the stage and the page walk are
//! reached).
#![no_main]

use ckpt_engine::stream::records::{Integrity, RecordWriter, StreamInfo};
use ckpt_engine::{Codec, GuestMemory, Limits, Receiver, SparseMemory};
use libfuzzer_sys::fuzz_target;

const GUEST: u64 = 256;

fn limits() -> Limits {
    Limits {
        max_chunk_bytes: 1 << 20,
        max_checkpoint_bytes: 4 << 20,
        max_checkpoint_entries: 4096,
        max_toolstack_chunks: 64,
        max_guest_pages: GUEST,
    }
}

fn run(input: &[u8]) {
    let Ok(mut rx) = Receiver::new(input, limits(), Codec::best()) else { return };
    let mut mem = SparseMemory::new(GUEST);
    loop {
        let before: Vec<u8> = (0..GUEST).flat_map(|p| mem.page(p)[..64].to_vec()).collect();
        match rx.next_checkpoint(&mut mem) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                let after: Vec<u8> = (0..GUEST).flat_map(|p| mem.page(p)[..64].to_vec()).collect();
                assert_eq!(before, after, "a rejected checkpoint changed memory");
                break;
            }
        }
    }
}

/// The headers of a stream with the zstd stage, and the check every
/// checkpoint's starts from.
fn headers() -> (Vec<u8>, u32) {
    let info = StreamInfo {
        guest_pages: GUEST,
        stream_id: 1,
        zstd_level: Some(1),
    };
    let mut b = RecordWriter::new(Vec::new(), &info).unwrap().finish().unwrap();
    b.truncate(b.len() - 8); // END
    let seed = u32::from_le_bytes(b[80..84].try_into().unwrap());
    (b, seed)
}

/// Appends `records` as one checkpoint closed by a right integrity record.
fn close(b: &mut Vec<u8>, seed: u32, records: &[u8], seq: u64, data_pages: u64) {
    b.extend_from_slice(records);
    let mut crc = crc32c::crc32c_append(seed, records);
    let head = [0x05, 0x00, 0x4B, 0xC3, 40, 0, 0, 0];
    crc = crc32c::crc32c_append(crc, &head);
    b.extend_from_slice(&head);
    let body = Integrity {
        seq,
        data_pages,
        digest: 0,
    }
    .body(crc);
    b.extend_from_slice(&body);
    b.extend_from_slice(&[0x0E, 0, 0, 0, 0, 0, 0, 0]);
}

fuzz_target!(|data: &[u8]| {
    let (h, seed) = headers();

    let mut whole = h.clone();
    whole.extend_from_slice(data);
    run(&whole);

    let mut framed = h.clone();
    close(&mut framed, seed, data, 0, (data.len() / 8) as u64 % 64);
    framed.extend_from_slice(&[0; 8]);
    run(&framed);

    // Checkpoint 0 enables compression; checkpoint 1 carries the input as
    // PFN entries (its first bytes say how many) and page encodings.
    let Some((&n, rest)) = data.split_first() else { return };
    let count = (n as usize % 8 + 1).min(rest.len() / 8);
    if count == 0 {
        return;
    }
    let (pfns, encodings) = rest.split_at(count * 8);
    let mut staged = h;
    close(&mut staged, seed, &[0x03, 0x00, 0x4B, 0xC3, 0, 0, 0, 0], 0, 0);
    let frame = zstd::bulk::compress(encodings, 1).unwrap();
    let len = 16 + pfns.len() + frame.len();
    let mut rec = vec![0x02, 0x00, 0x4B, 0x43];
    rec.extend_from_slice(&(len as u32).to_le_bytes());
    rec.extend_from_slice(&(count as u32).to_le_bytes());
    rec.extend_from_slice(&1u32.to_le_bytes());
    rec.extend_from_slice(&(encodings.len() as u32).to_le_bytes());
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(pfns);
    rec.extend_from_slice(&frame);
    rec.resize(rec.len().div_ceil(8) * 8, 0);
    close(&mut staged, seed, &rec, 1, count as u64);
    staged.extend_from_slice(&[0; 8]);
    run(&staged);
});

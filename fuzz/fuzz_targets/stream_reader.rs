//! The stream reader on arbitrary bytes: never a panic; a rejected
//! checkpoint never changes memory.
//!
//! The input is used twice: as a whole stream after a valid header (so the
//! frame checks are reached), and as the body of one checkpoint frame whose
//! head and trailer (with a correct frame check) the harness writes, so
//! the body's rules and the verify pass are reached too.
#![no_main]

use ckpt_engine::stream::{StreamHeader, Trailer};
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

fuzz_target!(|data: &[u8]| {
    let header = StreamHeader {
        guest_pages: GUEST,
        stream_id: 1,
    };
    let mut whole = header.to_bytes().to_vec();
    whole.extend_from_slice(data);
    run(&whole);

    let mut framed = header.to_bytes().to_vec();
    let start = framed.len();
    framed.extend_from_slice(b"CKPT");
    framed.extend_from_slice(&[0; 12]);
    framed.extend_from_slice(data);
    let crc = crc32c::crc32c_append(header.check(), &framed[start..]);
    let trailer = Trailer {
        seq: 0,
        data_pages: (data.len() / 8) as u64 % 64,
        digest: 0,
    };
    framed.extend_from_slice(&trailer.to_bytes(crc));
    run(&framed);
});

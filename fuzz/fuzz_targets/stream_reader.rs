//! The stream reader on arbitrary bytes: never a panic; a rejected
//! checkpoint never changes memory.
#![no_main]

use ckpt_engine::config::ReceiverConfig;
use ckpt_engine::memory::{GuestMemory, SparseMemory};
use ckpt_engine::receiver::Receiver;
use ckpt_simd::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A valid header for a small guest, so the fuzzer reaches the body.
    let mut input = ckpt_engine::stream::StreamHeader { guest_pages: 256 }.to_bytes().to_vec();
    input.extend_from_slice(data);
    let limits = ReceiverConfig {
        max_chunk_bytes: 1 << 20,
        max_checkpoint_bytes: 4 << 20,
        max_checkpoint_entries: 4096,
    };
    let Ok(mut rx) = Receiver::new(&input[..], limits, Codec::best()) else { return };
    let mut mem = SparseMemory::new(256);
    loop {
        let before: Vec<u8> = (0..256).flat_map(|p| mem.page(p)[..64].to_vec()).collect();
        match rx.next_checkpoint(&mut mem) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                let after: Vec<u8> = (0..256).flat_map(|p| mem.page(p)[..64].to_vec()).collect();
                assert_eq!(before, after, "a rejected checkpoint changed memory");
                break;
            }
        }
    }
});

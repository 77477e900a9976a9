//! The golden-vector reader on arbitrary bytes: never a panic, never more
//! memory than its limits allow; read as a plain file after the magic and
//! as a zstd stream, the way `ckpt conformance` reads `.vec.zst` files.
#![no_main]

use ckpt_lab::vectors::{VectorLimits, VectorReader, MAGIC};
use libfuzzer_sys::fuzz_target;

const LIMITS: VectorLimits = VectorLimits {
    max_records: 16,
    max_output_bytes: 1 << 16,
    max_pages: 64,
};

fn run(input: impl std::io::Read) {
    let Ok(mut r) = VectorReader::with_limits(input, LIMITS) else { return };
    while let Ok(Some(cp)) = r.next_checkpoint() {
        assert!(cp.records.len() <= LIMITS.max_records as usize);
        let bytes: usize = cp.outputs.iter().map(Vec::len).sum();
        assert!(bytes as u64 <= LIMITS.max_output_bytes);
        assert!(cp.outputs.len() <= cp.records.len().max(1));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut plain = MAGIC.to_vec();
    plain.extend_from_slice(data);
    run(&plain[..]);
    if let Ok(mut z) = zstd::stream::read::Decoder::new(data) {
        if z.window_log_max(20).is_ok() {
            run(z);
        }
    }
});

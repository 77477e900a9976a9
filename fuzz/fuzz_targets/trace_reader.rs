//! The trace reader on arbitrary bytes: never a panic, never more memory
//! than its limits allow.
//!
//! The input is used twice: as a whole file, and as the decompressed
//! contents of a trace whose prefix (with a correct check) and zstd frame
//! (with its checksum) the harness writes, so that the epochs' rules are
//! reached: counts and lengths against the limits, entries, duplicates,
//! checksums, page encodings, the end record.
#![no_main]

use ckpt_lab::trace::{TraceLimits, TraceReader, TRACE_MAGIC};
use libfuzzer_sys::fuzz_target;
use std::io::Write;

const LIMITS: TraceLimits = TraceLimits {
    max_epoch_pages: 64,
    max_guest_pages: 256,
};

fn run(file: &[u8]) {
    let Ok(mut r) = TraceReader::with_limits(file, LIMITS) else { return };
    while let Ok(Some(epoch)) = r.next_epoch() {
        assert!(epoch.entries.len() <= LIMITS.max_epoch_pages as usize);
        assert!(epoch.entries.iter().all(|&(pfn, _)| pfn < r.guest_pages()));
    }
    assert!(r.memory().pages() <= LIMITS.max_guest_pages);
}

fuzz_target!(|data: &[u8]| {
    run(data);
    // The first byte picks the guest size, the rest is the frame's content.
    let Some((&g, body)) = data.split_first() else { return };
    let guest_pages = g as u64 + 1;
    let mut file = Vec::with_capacity(24 + body.len());
    file.extend_from_slice(TRACE_MAGIC);
    file.extend_from_slice(&guest_pages.to_le_bytes());
    let check = crc32c::crc32c(&file[..16]);
    file.extend_from_slice(&check.to_le_bytes());
    file.extend_from_slice(&[0; 4]);
    let mut z = zstd::stream::write::Encoder::new(&mut file, 1).expect("zstd");
    z.include_checksum(true).expect("zstd");
    z.write_all(body).expect("memory");
    z.finish().expect("memory");
    run(&file);
});

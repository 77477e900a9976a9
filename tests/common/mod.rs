//! What the tool's integration tests share.

use ckpt_engine::PageType;
use ckpt_lab::trace::TraceWriter;
use ckpt_simd::{Codec, PAGE_SIZE};
use std::path::Path;

/// A small trace: an image of `image` pages, then `epochs` epochs that
/// each rewrite a few words of `dirty` pages.
pub fn write_trace(path: &Path, image: u64, epochs: u64, dirty: u64) {
    let mut w = TraceWriter::create(path, r#"{"workload":"tiny"}"#, Codec::best()).unwrap();
    let mut pages = vec![[0u8; PAGE_SIZE]; image as usize];
    for (i, p) in pages.iter_mut().enumerate() {
        p.iter_mut()
            .enumerate()
            .for_each(|(k, b)| *b = (i * 31 + k * 7) as u8);
    }
    let all: Vec<_> = (0..image)
        .map(|pfn| (pfn, PageType::Normal, &pages[pfn as usize]))
        .collect();
    w.epoch(&all, 1000, 1000).unwrap();
    for e in 0..epochs {
        for pfn in 0..dirty {
            let p = &mut pages[((e * 7 + pfn) % image) as usize];
            p[(e as usize * 12) % 4000] ^= 0x5A;
        }
        let mut list: Vec<u64> = (0..dirty).map(|pfn| (e * 7 + pfn) % image).collect();
        list.sort_unstable();
        list.dedup();
        let batch: Vec<_> = list
            .iter()
            .map(|&pfn| (pfn, PageType::Normal, &pages[pfn as usize]))
            .collect();
        w.epoch(&batch, 1000, 1000).unwrap();
    }
    w.finish().unwrap();
}

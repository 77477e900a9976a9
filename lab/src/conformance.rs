//! `ckpt conformance`: replays golden vectors through the [`Compressor`] with
//! the original's sizes and checks (a) every compressed output byte for byte
//! and (b) that decoding the outputs gives back every input page.

use crate::vectors::{VectorError, VectorLimits, VectorReader};
use ckpt_engine::{CachePolicy, CompressOptions, Compressor, PageType};
use ckpt_simd::{Codec, Page, PAGE_SIZE};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// The original's delta cache size, in pages.
pub const ORIGINAL_CACHE_PAGES: usize = 8192;
/// The original's staging buffer size, in pages.
pub const ORIGINAL_RING_PAGES: usize = 8192;

/// Outcome of one vector file.
#[derive(Debug)]
pub struct CaseResult {
    /// File name without extensions.
    pub name: String,
    /// Checkpoints replayed.
    pub checkpoints: usize,
    /// Pages replayed.
    pub pages: u64,
    /// Compressed bytes compared.
    pub bytes: u64,
    /// The first mismatch, if any.
    pub failure: Option<String>,
}

/// Vector files (`*.vec`, `*.vec.zst`) in `dir`, sorted by name.
pub fn vector_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.ends_with(".vec") || n.ends_with(".vec.zst")
        })
        .collect();
    files.sort();
    Ok(files)
}

fn open_vector(path: &Path) -> io::Result<Box<dyn Read>> {
    let file = BufReader::with_capacity(1 << 20, File::open(path)?);
    if path.extension().is_some_and(|e| e == "zst") {
        let mut dec = zstd::stream::read::Decoder::with_buffer(file)?;
        dec.window_log_max(27)?;
        Ok(Box::new(dec))
    } else {
        Ok(Box::new(file))
    }
}

/// Replays one vector file with `codec` on `threads` threads.
pub fn run_case(path: &Path, codec: Codec, threads: usize) -> io::Result<CaseResult> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .trim_end_matches(".zst")
        .trim_end_matches(".vec")
        .to_string();
    let limits = VectorLimits::default();
    let mut reader = VectorReader::with_limits(open_vector(path)?, limits)?;
    // The original's cache: LRU, fixed size, empty at the start.
    let opts = CompressOptions {
        cache_pages: ORIGINAL_CACHE_PAGES,
        cache_policy: CachePolicy::Lru,
        cache_budget: None,
        seed_cache: false,
        threads,
        pin_threads: true,
    };
    let mut compressor =
        Compressor::new(codec, &opts, ORIGINAL_RING_PAGES, 1 << 28).map_err(io::Error::other)?;
    let mut memory: HashMap<u64, Box<Page>> = HashMap::new();
    let mut result = CaseResult {
        name,
        checkpoints: 0,
        pages: 0,
        bytes: 0,
        failure: None,
    };
    while let Some(cp) = reader.next_checkpoint()? {
        let index = result.checkpoints + 1;
        result.checkpoints = index;
        result.pages += cp.records.len() as u64;
        let mut outputs: Vec<Vec<u8>> = Vec::new();
        for rec in &cp.records {
            if let Some(chunk) = compressor
                .stage(rec.pfn, page_type(rec.raw), &rec.page)
                .map_err(io::Error::other)?
            {
                outputs.push(chunk.to_vec());
            }
        }
        if let Some(chunk) = compressor.finish() {
            outputs.push(chunk.to_vec());
        }
        if result.failure.is_none() {
            result.failure = compare_outputs(index, &outputs, &cp.outputs);
        }
        result.bytes += cp.outputs.iter().map(|o| o.len() as u64).sum::<u64>();
        // (b) decode the original's bytes and check every input page.
        if result.failure.is_none() {
            result.failure = replay_receiver(index, &cp, &mut memory, codec);
        }
        if memory.len() as u64 > limits.max_pages {
            return Err(VectorError::OverLimit {
                checkpoint: index as u32,
                what: "distinct pages",
                found: memory.len() as u64,
                limit: limits.max_pages,
            }
            .into());
        }
    }
    Ok(result)
}

/// Outcome of one vector file's inputs sent through a cache policy.
#[derive(Debug)]
pub struct RoundTrip {
    /// File name without extensions.
    pub name: String,
    /// Pages sent FULL because they missed the cache, per checkpoint.
    pub full_misses: Vec<u64>,
    /// Compressed bytes, all checkpoints.
    pub bytes: u64,
    /// The first page that did not decode to its input, if any.
    pub failure: Option<String>,
}

/// Sends one vector file's inputs through the [`Compressor`] with the
/// original's sizes but `policy`'s cache, and decodes the output: every
/// page must come back as it went in. (Only LRU gives the vectors' bytes;
/// any policy gives a stream the receiver reproduces.)
pub fn round_trip_case(
    path: &Path,
    codec: Codec,
    threads: usize,
    policy: CachePolicy,
) -> io::Result<RoundTrip> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .trim_end_matches(".zst")
        .trim_end_matches(".vec")
        .to_string();
    let mut reader = VectorReader::new(open_vector(path)?)?;
    let opts = CompressOptions {
        cache_pages: ORIGINAL_CACHE_PAGES,
        cache_policy: policy,
        cache_budget: None,
        seed_cache: false,
        threads,
        pin_threads: true,
    };
    let mut compressor =
        Compressor::new(codec, &opts, ORIGINAL_RING_PAGES, 1 << 28).map_err(io::Error::other)?;
    let mut memory: HashMap<u64, Box<Page>> = HashMap::new();
    let mut result = RoundTrip {
        name,
        full_misses: Vec::new(),
        bytes: 0,
        failure: None,
    };
    while let Some(cp) = reader.next_checkpoint()? {
        let mut outputs: Vec<Vec<u8>> = Vec::new();
        let mut full = 0;
        for rec in &cp.records {
            if let Some(chunk) = compressor
                .stage(rec.pfn, page_type(rec.raw), &rec.page)
                .map_err(io::Error::other)?
            {
                full += chunk.counts().full_miss;
                outputs.push(chunk.to_vec());
            }
        }
        if let Some(chunk) = compressor.finish() {
            full += chunk.counts().full_miss;
            outputs.push(chunk.to_vec());
        }
        result.full_misses.push(full);
        result.bytes += outputs.iter().map(|o| o.len() as u64).sum::<u64>();
        let ours = crate::vectors::VecCheckpoint {
            records: cp.records,
            outputs,
        };
        if result.failure.is_none() {
            let index = result.full_misses.len();
            result.failure = replay_receiver(index, &ours, &mut memory, codec);
        }
    }
    Ok(result)
}

fn compare_outputs(index: usize, ours: &[Vec<u8>], theirs: &[Vec<u8>]) -> Option<String> {
    if ours.len() != theirs.len() {
        return Some(format!(
            "checkpoint {index}: {} outputs, expected {}",
            ours.len(),
            theirs.len()
        ));
    }
    for (k, (a, b)) in ours.iter().zip(theirs).enumerate() {
        if a != b {
            let at = a
                .iter()
                .zip(b)
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            return Some(format!(
                "checkpoint {index} output {k}: {} bytes, expected {}; first difference at byte {at}",
                a.len(),
                b.len()
            ));
        }
    }
    None
}

fn replay_receiver(
    index: usize,
    cp: &crate::vectors::VecCheckpoint,
    memory: &mut HashMap<u64, Box<Page>>,
    codec: Codec,
) -> Option<String> {
    let stream: Vec<u8> = cp.outputs.concat();
    let mut at = 0;
    for (i, rec) in cp.records.iter().enumerate() {
        let page = memory
            .entry(rec.pfn)
            .or_insert_with(|| Box::new([0u8; PAGE_SIZE]));
        match codec.decode(&stream[at..], page) {
            Ok(used) => at += used,
            Err(e) => return Some(format!("checkpoint {index} page {i}: {e}")),
        }
        if page[..] != rec.page[..] {
            return Some(format!(
                "checkpoint {index} page {i} (pfn {:#x}): decoded page differs",
                rec.pfn
            ));
        }
    }
    if at != stream.len() {
        return Some(format!(
            "checkpoint {index}: {} bytes left after the last page",
            stream.len() - at
        ));
    }
    None
}

/// How the original staged a vector record: a raw page as a page-table
/// page (sent whole, never cached), any other as a normal page.
fn page_type(raw: bool) -> PageType {
    if raw {
        PageType::PageTable {
            level: 1,
            pinned: false,
        }
    } else {
        PageType::Normal
    }
}

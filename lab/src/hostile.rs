//! Hostile inputs: stream, trace and vector files built to break a reader's
//! bounds (a length taken from the file, a flood of small records, a guest
//! size claimed by a few bytes). The regression tests and
//! `scripts/probe-hardening.sh` feed them to the readers and to `ckpt`, and
//! check that each is refused or read within the memory SECURITY.md
//! promises. Every file is well formed wherever it does not attack, so that
//! it reaches the rule it tests (frame checks, digests and zstd checksums
//! are correct).

use ckpt_engine::page::{entry, PFN_LIMIT};
use ckpt_engine::stream::{Digest, StreamHeader, StreamWriter, HEADER_LEN};
use ckpt_engine::{Codec, PageType};
use ckpt_simd::{scalar, Page, PAGE_SIZE};
use std::io::{self, Read, Write};
use xxhash_rust::xxh3::Xxh3;

/// A stream of no checkpoint whose header claims the largest guest the
/// format allows (2^28 pages, 1 TiB): 80 bytes.
pub fn stream_huge_guest() -> Vec<u8> {
    let header = StreamHeader::new(PFN_LIMIT);
    let w = StreamWriter::new(Vec::new(), &header).expect("writing to memory");
    w.finish().expect("writing to memory")
}

/// A stream of a guest of `guest_pages` pages, no checkpoint, with one
/// byte after its end frame.
pub fn stream_trailing_byte(guest_pages: u64) -> Vec<u8> {
    let w = StreamWriter::new(Vec::new(), &StreamHeader::new(guest_pages)).expect("memory");
    let mut s = w.finish().expect("memory");
    s.push(0);
    s
}

/// The header of a version 1 stream (the same layout, version 1).
pub fn stream_version1() -> Vec<u8> {
    let mut s = StreamHeader::new(16).to_bytes().to_vec();
    s[8..12].copy_from_slice(&1u32.to_le_bytes());
    s
}

/// An endless stream: a valid header and checkpoint frame head, then
/// toolstack chunks -1 (no payload) forever. `take` it for a file.
pub struct ToolstackFlood {
    prefix: Vec<u8>,
    at: usize,
}

impl ToolstackFlood {
    /// The flood, for a guest of 16 pages.
    pub fn new() -> ToolstackFlood {
        let mut w = StreamWriter::new(Vec::new(), &StreamHeader::new(16)).expect("memory");
        w.begin_checkpoint().expect("memory");
        ToolstackFlood {
            prefix: w.get_ref().clone(),
            at: 0,
        }
    }
}

impl Default for ToolstackFlood {
    fn default() -> Self {
        ToolstackFlood::new()
    }
}

impl Read for ToolstackFlood {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let b = if self.at < self.prefix.len() {
                self.prefix[self.at]
            } else {
                // -1 as a little-endian i32: four 0xff bytes.
                0xff
            };
            buf[n] = b;
            n += 1;
            self.at += 1;
        }
        Ok(n)
    }
}

/// Writes a valid stream of `n` empty checkpoints (the first enables
/// compression) for a guest of 16 pages.
pub fn write_empty_checkpoints<W: Write>(out: W, n: u64) -> io::Result<W> {
    let mut w = StreamWriter::new(out, &StreamHeader::new(16))?;
    let empty = Digest::new().finish();
    for k in 0..n {
        w.begin_checkpoint()?;
        if k == 0 {
            w.enable_compression()?;
        }
        w.end_checkpoint(0, empty)?;
    }
    w.finish()
}

/// A stream whose second checkpoint claims a COMPRESSED_DATA chunk of
/// `claimed` bytes and sends three.
pub fn stream_claimed_chunk(claimed: u64) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new(), &StreamHeader::new(16)).expect("memory");
    w.begin_checkpoint().expect("memory");
    w.enable_compression().expect("memory");
    w.end_checkpoint(0, Digest::new().finish()).expect("memory");
    w.begin_checkpoint().expect("memory");
    w.pfn_batches(&[entry(5, PageType::Normal)])
        .expect("memory");
    let mut s = w.get_ref().clone();
    s.extend_from_slice(&(-12i32).to_le_bytes());
    s.extend_from_slice(&claimed.to_le_bytes());
    s.extend_from_slice(&[1, 2, 3]);
    s
}

/// Writes a valid stream of `checkpoints` uncompressed (Format A)
/// checkpoints of `pages` distinct, non-zero pages each, for a guest of
/// `pages` pages: each checkpoint makes a receiver buffer `pages` pages.
pub fn write_full_checkpoints<W: Write>(out: W, pages: u64, checkpoints: u64) -> io::Result<W> {
    let codec = Codec::best();
    let mut w = StreamWriter::new(out, &StreamHeader::new(pages))?;
    let mut pages_buf = ckpt_engine::PageBuf::arena(1024);
    for c in 0..checkpoints {
        w.begin_checkpoint()?;
        let mut digest = Digest::new();
        let mut first = 0;
        while first < pages {
            let n = (pages - first).min(1024);
            let entries: Vec<u64> = (first..first + n)
                .map(|p| entry(p, PageType::Normal))
                .collect();
            for (k, pfn) in (first..first + n).enumerate() {
                fill(&mut pages_buf[k].0, pfn, c);
                digest.add_page(&codec, pfn, &pages_buf[k].0);
            }
            w.pfn_batch_with_data(&entries, pages_buf[..n as usize].iter().map(|p| &p.0))?;
            first += n;
        }
        w.end_checkpoint(pages, digest.finish())?;
    }
    w.finish()
}

fn fill(page: &mut Page, pfn: u64, salt: u64) {
    for (i, word) in page.chunks_exact_mut(8).enumerate() {
        let v = (pfn << 20 ^ salt << 40 ^ i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        word.copy_from_slice(&v.to_le_bytes());
    }
}

/// A small valid stream with every kind of part a stream holds: raw pages
/// (Format A) in the initial image, FULL, DELTA and EMPTY encodings,
/// page-table pages sent raw, entries without data, toolstack chunks of
/// every payload size, checkpoints that overflow the 2-page staging ring
/// (several COMPRESSED_DATA chunks), and an empty checkpoint. Six
/// checkpoints of a 64-page guest, about 37 KB: the stream the byte-flip
/// tests corrupt.
pub fn sample_stream() -> Vec<u8> {
    sample_stream_for(64, 0x5a3e_11ce)
}

/// [`sample_stream`] for a guest of `guest_pages` pages (at least 64) and
/// the stream id `stream_id`.
pub fn sample_stream_for(guest_pages: u64, stream_id: u128) -> Vec<u8> {
    use crate::synth::{fill_page, mutate, Rng};
    use ckpt_engine::{CompressOptions, Sender, SenderOptions};
    let opts = SenderOptions {
        compress: CompressOptions {
            cache_pages: 16,
            threads: 1,
            pin_threads: false,
            ..CompressOptions::default()
        },
        ring_pages: 2,
        stream_id: Some(stream_id),
        ..SenderOptions::new(guest_pages)
    };
    let mut rng = Rng::new(0x000f_11b5);
    let mut memory = ckpt_engine::PageBuf::arena(64);
    let mut tx = Sender::new(Vec::new(), Codec::best(), &opts).expect("options");
    let pt = PageType::PageTable {
        level: 1,
        pinned: false,
    };
    // (pfn, type, how much to change: None = fresh content) per checkpoint.
    type Step = (u64, PageType, Option<f64>);
    let normal = PageType::Normal;
    let checkpoints: [&[Step]; 6] = [
        &[
            (0, normal, None),
            (1, normal, None),
            (2, normal, None),
            (6, pt, None),
            (7, PageType::XTab, None),
        ],
        &[
            (0, normal, Some(0.01)),
            (1, normal, Some(0.0)),
            (2, normal, Some(0.2)),
            (6, pt, Some(0.01)),
            (10, PageType::XAlloc, None),
            (11, normal, None),
        ],
        &[],
        &[
            (0, normal, Some(0.001)),
            (1, normal, Some(0.01)),
            (2, normal, Some(0.0)),
            (11, normal, Some(0.05)),
            (13, PageType::Broken, None),
        ],
        &[(2, normal, Some(1.0)), (63, normal, None)],
        &[(0, normal, Some(0.01))],
    ];
    let toolstack: [&[(i32, &[u8])]; 6] = [
        &[(-2, &[1; 12]), (-7, &[2; 20])],
        &[(-9, &[]), (-3, &[3; 12])],
        &[],
        &[(-1, &[]), (-11, &[4; 12])],
        &[],
        &[(-4, &[5; 12])],
    ];
    for (k, steps) in checkpoints.iter().enumerate() {
        tx.begin_checkpoint().expect("sender");
        for &(pfn, ty, change) in steps.iter() {
            let page = &mut memory[pfn as usize].0;
            match change {
                None => fill_page(&mut rng, page),
                Some(d) => {
                    mutate(&mut rng, page, d, true);
                }
            }
            let data = ty.carries_data().then_some(&*page);
            tx.page(pfn, ty, data).expect("sender");
        }
        for &(id, payload) in toolstack[k] {
            tx.toolstack_chunk(id, payload).expect("sender");
        }
        if k == 0 {
            tx.enable_compression().expect("sender");
        }
        tx.end_checkpoint().expect("sender");
    }
    tx.finish().expect("sender").0
}

/// Builds a trace file (`trace.rs`'s format) byte by byte, so that a test
/// can put in it what [`crate::trace::TraceWriter`] never writes.
pub struct RawTrace {
    body: Vec<u8>,
    epochs: u32,
}

impl RawTrace {
    /// A trace with empty metadata.
    pub fn new() -> RawTrace {
        let mut body = Vec::new();
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(b"{}");
        RawTrace { body, epochs: 0 }
    }

    /// Appends an epoch of raw PFN entries and page encodings.
    pub fn epoch(&mut self, entries: &[u64], payload: &[u8]) -> &mut RawTrace {
        self.epoch_claiming(entries.len() as u32, entries, payload)
    }

    /// Appends an epoch whose count field says `n`, whatever follows.
    pub fn epoch_claiming(&mut self, n: u32, entries: &[u64], payload: &[u8]) -> &mut RawTrace {
        let b = &mut self.body;
        b.extend_from_slice(b"EPCH");
        b.extend_from_slice(&n.to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        let at = b.len();
        for e in entries {
            b.extend_from_slice(&e.to_le_bytes());
        }
        b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let mut h = Xxh3::new();
        h.update(&b[at..b.len() - 8]);
        h.update(payload);
        b.extend_from_slice(payload);
        b.extend_from_slice(&h.digest().to_le_bytes());
        self.epochs += 1;
        self
    }

    /// What the zstd frame holds: the metadata, the epochs and the end
    /// record for a guest of `guest_pages` pages.
    pub fn contents(&mut self, guest_pages: u64) -> Vec<u8> {
        let mut body = std::mem::take(&mut self.body);
        body.extend_from_slice(b"TEND");
        body.extend_from_slice(&self.epochs.to_le_bytes());
        body.extend_from_slice(&guest_pages.to_le_bytes());
        body
    }

    /// The file: prefix with `guest_pages`, the zstd frame (checksummed)
    /// with the end record.
    pub fn finish(&mut self, guest_pages: u64) -> Vec<u8> {
        let body = self.contents(guest_pages);
        let mut out = trace_prefix(guest_pages).to_vec();
        let mut z = zstd::stream::write::Encoder::new(&mut out, 3).expect("zstd");
        z.include_checksum(true).expect("zstd");
        z.write_all(&body).expect("memory");
        z.finish().expect("memory");
        out
    }
}

impl Default for RawTrace {
    fn default() -> Self {
        RawTrace::new()
    }
}

fn trace_prefix(guest_pages: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(crate::trace::TRACE_MAGIC);
    b[8..16].copy_from_slice(&guest_pages.to_le_bytes());
    let check = crc32c::crc32c(&b[..16]);
    b[16..20].copy_from_slice(&check.to_le_bytes());
    b
}

/// A trace whose only epoch claims 2^32 - 1 pages and holds none.
pub fn trace_claimed_epoch() -> Vec<u8> {
    RawTrace::new()
        .epoch_claiming(u32::MAX, &[], &[])
        .finish(16)
}

/// A trace whose epoch lists PFN 0 `n` times (EMPTY encodings).
pub fn trace_duplicates(n: usize) -> Vec<u8> {
    let entries = vec![entry(0, PageType::Normal); n];
    RawTrace::new().epoch(&entries, &vec![0u8; n]).finish(1)
}

/// A trace of one epoch of `n` distinct zero pages (one byte each): a few
/// KiB of file for `n` pages of epoch.
pub fn trace_wide_epoch(n: u64) -> Vec<u8> {
    let entries: Vec<u64> = (0..n).map(|p| entry(p, PageType::Normal)).collect();
    RawTrace::new()
        .epoch(&entries, &vec![0u8; n as usize])
        .finish(n)
}

/// A trace of a guest of `guest_pages` pages whose `epochs` epochs each
/// change one word of `per_epoch` pages spread over the whole guest, so
/// that its recorded memory grows by `per_epoch` pages an epoch.
pub fn trace_wide_guest(guest_pages: u64, epochs: u64, per_epoch: u64) -> Vec<u8> {
    let mut t = RawTrace::new();
    let mut reference = Box::new([0u8; PAGE_SIZE]);
    let mut page = Box::new([0u8; PAGE_SIZE]);
    page[0] = 1;
    let mut one = [0u8; ckpt_simd::MAX_ENCODED_LEN];
    let n = scalar::encode(&page, &mut reference, &mut one).expect("room");
    let stride = (guest_pages / (epochs * per_epoch).max(1)).max(1);
    for e in 0..epochs {
        let entries: Vec<u64> = (0..per_epoch)
            .map(|k| {
                entry(
                    ((e * per_epoch + k) * stride) % guest_pages,
                    PageType::Normal,
                )
            })
            .collect();
        t.epoch(&entries, &one[..n].repeat(per_epoch as usize));
    }
    t.finish(guest_pages)
}

/// A vector file (`CKPTVEC1`, zstd-compressed) of one checkpoint of `n`
/// zero pages at PFNs 0..n and no output.
pub fn vector_many_records(n: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(crate::vectors::MAGIC);
    raw.extend_from_slice(&1u32.to_le_bytes());
    raw.extend_from_slice(&n.to_le_bytes());
    let zero = [0u8; PAGE_SIZE];
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    z.include_checksum(true).expect("zstd");
    z.write_all(&raw).expect("memory");
    for pfn in 0..n as u64 {
        z.write_all(&pfn.to_le_bytes()).expect("memory");
        z.write_all(&[0]).expect("memory");
        z.write_all(&zero).expect("memory");
    }
    z.write_all(&0u32.to_le_bytes()).expect("memory");
    z.finish().expect("memory")
}

/// A vector file of one checkpoint of one record and `k` outputs of
/// `len` zero bytes each.
pub fn vector_big_outputs(k: u32, len: u64) -> Vec<u8> {
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    z.include_checksum(true).expect("zstd");
    let mut head = Vec::new();
    head.extend_from_slice(crate::vectors::MAGIC);
    head.extend_from_slice(&1u32.to_le_bytes());
    head.extend_from_slice(&1u32.to_le_bytes());
    head.extend_from_slice(&0u64.to_le_bytes());
    head.push(0);
    head.extend_from_slice(&[0u8; PAGE_SIZE]);
    head.extend_from_slice(&k.to_le_bytes());
    z.write_all(&head).expect("memory");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..k {
        z.write_all(&len.to_le_bytes()).expect("memory");
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            z.write_all(&zeros[..n]).expect("memory");
            left -= n as u64;
        }
    }
    z.finish().expect("memory")
}

/// Bytes in a stream header, for probes that cut one short.
pub const STREAM_HEADER_LEN: usize = HEADER_LEN;

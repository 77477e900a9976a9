//! Trace files: the dirty sets a recorded program produced, epoch by epoch,
//! with their contents, for replaying through the engine (`ckpt bench`).
//!
//! ```text
//! "CKPTTRC1"                      8 bytes, uncompressed
//! one zstd frame (checksummed) holding:
//!   u32 version (1)
//!   u32 meta_len, meta_len bytes of JSON (workload, command, epoch, ...)
//!   epochs, each:
//!     "EPCH"  u32 n  u64 pause_ns  u64 run_ns
//!     n x u64 PFN entry (bits 28..31 page type, as in a save stream)
//!     u64 payload_len, then n page encodings (the engine's page codec,
//!         each against that PFN's previous content in this trace, or a
//!         zero page the first time)
//!     u64 XXH3-64 of the entries and payload
//!   "TEND"  u32 epochs  u64 pages (one past the highest PFN)
//! ```
//!
//! The first epoch holds every non-zero page of the initial image. Pages
//! are exact: replaying a trace reproduces the recorded memory word for word.

use crate::page::{entry, PageBuf, PageType, PFN_LIMIT, PFN_MASK, TYPE_SHIFT};
use ckpt_simd::{scalar, validate, Codec, Page, MAX_ENCODED_LEN, PAGE_SIZE};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use thiserror::Error;
use xxhash_rust::xxh3::Xxh3;

/// Trace file magic.
pub const TRACE_MAGIC: &[u8; 8] = b"CKPTTRC1";
/// Trace format version.
pub const TRACE_VERSION: u32 = 1;
const EPOCH_TAG: [u8; 4] = *b"EPCH";
const END_TAG: [u8; 4] = *b"TEND";
/// Most pages one epoch may carry (16 GiB of dirty memory).
const MAX_EPOCH_PAGES: u32 = 1 << 22;
/// Most metadata bytes.
const MAX_META: u32 = 1 << 20;

/// A trace that cannot be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TraceError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The file does not start with the trace magic.
    #[error("not a ckpt trace (magic {0:02x?})")]
    NotATrace([u8; 8]),
    /// A version this build does not read.
    #[error("trace version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u32),
    /// The file is damaged.
    #[error("damaged trace at epoch {epoch}: {reason}")]
    Damaged {
        /// Epoch index (0-based) where the damage was found.
        epoch: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Pages by PFN, stored in chunks so the store grows without moving pages.
#[derive(Default)]
pub struct PageStore {
    chunks: Vec<Option<Box<[PageBuf]>>>,
    pages: u64,
}

const STORE_CHUNK: usize = 1024;

impl PageStore {
    /// The page at `pfn`, if it was ever stored.
    pub fn get(&self, pfn: u64) -> Option<&Page> {
        let c = self.chunks.get(pfn as usize / STORE_CHUNK)?.as_ref()?;
        Some(&c[pfn as usize % STORE_CHUNK].0)
    }

    /// The page at `pfn`, zero-filled on first use.
    pub fn get_mut(&mut self, pfn: u64) -> &mut Page {
        let k = pfn as usize / STORE_CHUNK;
        if self.chunks.len() <= k {
            self.chunks.resize_with(k + 1, || None);
        }
        self.pages = self.pages.max(pfn + 1);
        &mut self.chunks[k].get_or_insert_with(|| PageBuf::arena(STORE_CHUNK))
            [pfn as usize % STORE_CHUNK]
            .0
    }

    /// One past the highest PFN stored.
    pub fn pages(&self) -> u64 {
        self.pages
    }
}

static ZERO_PAGE: Page = [0u8; PAGE_SIZE];

/// Writes a trace epoch by epoch.
pub struct TraceWriter<W: Write> {
    out: zstd::stream::write::Encoder<'static, W>,
    reference: PageStore,
    codec: Codec,
    epochs: u32,
    buf: Vec<u8>,
}

impl TraceWriter<BufWriter<File>> {
    /// Creates a trace file with the given metadata (JSON).
    pub fn create(path: &Path, meta: &str, codec: Codec) -> Result<Self, TraceError> {
        TraceWriter::new(BufWriter::new(File::create(path)?), meta, codec)
    }
}

impl<W: Write> TraceWriter<W> {
    /// Starts a trace on `out`.
    pub fn new(mut out: W, meta: &str, codec: Codec) -> Result<Self, TraceError> {
        out.write_all(TRACE_MAGIC)?;
        let mut z = zstd::stream::write::Encoder::new(out, 9)?;
        z.include_checksum(true)?;
        z.long_distance_matching(true)?;
        z.write_all(&TRACE_VERSION.to_le_bytes())?;
        z.write_all(&(meta.len() as u32).to_le_bytes())?;
        z.write_all(meta.as_bytes())?;
        Ok(TraceWriter {
            out: z,
            reference: PageStore::default(),
            codec,
            epochs: 0,
            buf: Vec::new(),
        })
    }

    /// The last content written for `pfn` (the recorder's shadow copy).
    pub fn reference(&self) -> &PageStore {
        &self.reference
    }

    /// Writes one epoch: its pages in send order, the target's pause and run
    /// times. Every PFN must be below 2^28.
    pub fn epoch(
        &mut self,
        pages: &[(u64, PageType, &Page)],
        pause_ns: u64,
        run_ns: u64,
    ) -> Result<(), TraceError> {
        let mut head = Vec::with_capacity(24 + pages.len() * 8);
        head.extend_from_slice(&EPOCH_TAG);
        head.extend_from_slice(&(pages.len() as u32).to_le_bytes());
        head.extend_from_slice(&pause_ns.to_le_bytes());
        head.extend_from_slice(&run_ns.to_le_bytes());
        let mut hash = Xxh3::new();
        let entries_at = head.len();
        for &(pfn, ty, _) in pages {
            assert!(pfn < PFN_LIMIT, "trace pfn out of range");
            head.extend_from_slice(&entry(pfn, ty).to_le_bytes());
        }
        hash.update(&head[entries_at..]);
        self.buf.clear();
        self.buf.resize(pages.len() * MAX_ENCODED_LEN, 0);
        let mut o = 0;
        for &(pfn, _, page) in pages {
            let reference = self.reference.get_mut(pfn);
            o += self
                .codec
                .encode(page, reference, &mut self.buf[o..])
                .expect("room for the worst case");
        }
        hash.update(&self.buf[..o]);
        self.out.write_all(&head)?;
        self.out.write_all(&(o as u64).to_le_bytes())?;
        self.out.write_all(&self.buf[..o])?;
        self.out.write_all(&hash.digest().to_le_bytes())?;
        self.epochs += 1;
        Ok(())
    }

    /// Ends the trace and returns the output.
    pub fn finish(mut self) -> Result<W, TraceError> {
        self.out.write_all(&END_TAG)?;
        self.out.write_all(&self.epochs.to_le_bytes())?;
        self.out.write_all(&self.reference.pages().to_le_bytes())?;
        let mut w = self.out.finish()?;
        w.flush()?;
        Ok(w)
    }
}

/// One epoch read back: its pages with their new and previous contents.
pub struct Epoch {
    /// (PFN, type) in send order.
    pub entries: Vec<(u64, PageType)>,
    /// New content of each page.
    pub new: Box<[PageBuf]>,
    /// Content each page had before this epoch (zero if never seen).
    pub old: Box<[PageBuf]>,
    /// How long the target was paused to record it.
    pub pause_ns: u64,
    /// How long the target ran before it.
    pub run_ns: u64,
}

/// Reads a trace epoch by epoch, keeping the recorded memory.
pub struct TraceReader<R: Read> {
    z: zstd::stream::read::Decoder<'static, BufReader<R>>,
    memory: PageStore,
    /// The trace's metadata (JSON).
    pub meta: String,
    epoch: u64,
    ended: bool,
    /// Pages of the recorded memory (known once the trace has ended).
    pub pages: u64,
}

impl TraceReader<File> {
    /// Opens a trace file.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        TraceReader::new(File::open(path)?)
    }
}

fn damaged(epoch: u64, reason: impl Into<String>) -> TraceError {
    TraceError::Damaged {
        epoch,
        reason: reason.into(),
    }
}

impl<R: Read> TraceReader<R> {
    /// Checks the magic and reads the header.
    pub fn new(mut inner: R) -> Result<Self, TraceError> {
        let mut magic = [0u8; 8];
        inner
            .read_exact(&mut magic)
            .map_err(|_| TraceError::NotATrace(magic))?;
        if &magic != TRACE_MAGIC {
            return Err(TraceError::NotATrace(magic));
        }
        let mut z =
            zstd::stream::read::Decoder::new(inner).map_err(|e| damaged(0, e.to_string()))?;
        let mut b4 = [0u8; 4];
        z.read_exact(&mut b4)
            .map_err(|e| damaged(0, e.to_string()))?;
        let version = u32::from_le_bytes(b4);
        if version != TRACE_VERSION {
            return Err(TraceError::UnsupportedVersion(version));
        }
        z.read_exact(&mut b4)
            .map_err(|e| damaged(0, e.to_string()))?;
        let len = u32::from_le_bytes(b4);
        if len > MAX_META {
            return Err(damaged(0, format!("metadata of {len} bytes")));
        }
        let mut meta = vec![0u8; len as usize];
        z.read_exact(&mut meta)
            .map_err(|e| damaged(0, e.to_string()))?;
        Ok(TraceReader {
            z,
            memory: PageStore::default(),
            meta: String::from_utf8_lossy(&meta).into_owned(),
            epoch: 0,
            ended: false,
            pages: 0,
        })
    }

    /// The recorded memory after the epochs read so far.
    pub fn memory(&self) -> &PageStore {
        &self.memory
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), TraceError> {
        let epoch = self.epoch;
        self.z
            .read_exact(buf)
            .map_err(|e| damaged(epoch, format!("cut short or corrupt ({e})")))
    }

    fn u64(&mut self) -> Result<u64, TraceError> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The next epoch, or `None` after the last.
    pub fn next_epoch(&mut self) -> Result<Option<Epoch>, TraceError> {
        if self.ended {
            return Ok(None);
        }
        let e = self.epoch;
        let mut tag = [0u8; 4];
        self.exact(&mut tag)?;
        let mut b4 = [0u8; 4];
        if tag == END_TAG {
            self.exact(&mut b4)?;
            if u32::from_le_bytes(b4) as u64 != e {
                return Err(damaged(e, "epoch count in the end record differs"));
            }
            self.pages = self.u64()?;
            // Read through the end of the zstd frame so that its checksum
            // is verified and a cut-off file is noticed.
            let mut rest = Vec::new();
            self.z
                .read_to_end(&mut rest)
                .map_err(|err| damaged(e, format!("end of trace cut short or corrupt ({err})")))?;
            if !rest.is_empty() {
                return Err(damaged(e, "data after the end record"));
            }
            self.ended = true;
            return Ok(None);
        }
        if tag != EPOCH_TAG {
            return Err(damaged(e, format!("bad record tag {tag:02x?}")));
        }
        self.exact(&mut b4)?;
        let n = u32::from_le_bytes(b4);
        if n > MAX_EPOCH_PAGES {
            return Err(damaged(e, format!("{n} pages in one epoch")));
        }
        let pause_ns = self.u64()?;
        let run_ns = self.u64()?;
        let mut raw = vec![0u8; n as usize * 8];
        self.exact(&mut raw)?;
        let mut hash = Xxh3::new();
        hash.update(&raw);
        let mut entries = Vec::with_capacity(n as usize);
        for c in raw.chunks_exact(8) {
            let v = u64::from_le_bytes(c.try_into().unwrap());
            let ty = PageType::from_code((v >> TYPE_SHIFT) as u8 & 0xF)
                .filter(|t| t.carries_data() && v >> 32 == 0)
                .ok_or_else(|| damaged(e, format!("bad entry {v:#x}")))?;
            entries.push((v & PFN_MASK, ty));
        }
        let len = self.u64()?;
        if len > n as u64 * MAX_ENCODED_LEN as u64 {
            return Err(damaged(e, format!("payload of {len} bytes for {n} pages")));
        }
        let mut payload = vec![0u8; len as usize];
        self.exact(&mut payload)?;
        hash.update(&payload);
        if self.u64()? != hash.digest() {
            return Err(damaged(e, "epoch checksum mismatch"));
        }
        let mut new = PageBuf::arena(n as usize);
        let mut old = PageBuf::arena(n as usize);
        let mut at = 0;
        for (i, &(pfn, _)) in entries.iter().enumerate() {
            validate(&payload[at..]).map_err(|err| damaged(e, format!("page {i}: {err}")))?;
            old[i].0 = *self.memory.get(pfn).unwrap_or(&ZERO_PAGE);
            let page = self.memory.get_mut(pfn);
            at += scalar::decode(&payload[at..], page)
                .map_err(|err| damaged(e, format!("page {i}: {err}")))?;
            new[i].0 = *page;
        }
        if at != payload.len() {
            return Err(damaged(e, "payload longer than its pages"));
        }
        self.epoch += 1;
        Ok(Some(Epoch {
            entries,
            new,
            old,
            pause_ns,
            run_ns,
        }))
    }
}

//! Trace files: the dirty sets a recorded program produced, epoch by epoch,
//! with their contents, for replaying through the engine (`ckpt bench`).
//!
//! ```text
//! "CKPTTRC2"                      8 bytes   (version 2; "CKPTTRC1" was version 1)
//! u64 guest_pages                 one past the highest PFN; written when the trace ends
//! u32 check                       CRC-32C of the 16 bytes above
//! u32 reserved (0)
//! one zstd frame (checksummed) holding:
//!   u32 meta_len, meta_len bytes of JSON (workload, command, epoch, ...)
//!   epochs, each:
//!     "EPCH"  u32 n  u64 pause_ns  u64 run_ns
//!     n x u64 PFN entry (bits 28..31 page type, as in a save stream),
//!         each PFN below guest_pages and at most once per epoch
//!     u64 payload_len, then n page encodings (the engine's page codec,
//!         each against that PFN's previous content in this trace, or a
//!         zero page the first time)
//!     u64 XXH3-64 of the entries and payload
//!   "TEND"  u32 epochs  u64 guest_pages (equal to the header's)
//! ```
//!
//! The first epoch holds every non-zero page of the initial image. Pages
//! are exact: replaying a trace reproduces the recorded memory word for
//! word. The guest size sits in front of the compressed frame, so a reader
//! knows it before the first epoch; the writer fills it in when it ends.
//! Lengths read from a file are checked against [`TraceLimits`] and buffers
//! grow only with bytes that arrive.

use ckpt_engine::page::{entry, PFN_LIMIT, PFN_MASK, TYPE_SHIFT};
use ckpt_engine::{Limits, PageBuf, PageType};
use ckpt_simd::{scalar, Codec, Page, MAX_ENCODED_LEN, PAGE_SIZE};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use thiserror::Error;
use xxhash_rust::xxh3::Xxh3;

/// Trace file magic (version 2).
pub const TRACE_MAGIC: &[u8; 8] = b"CKPTTRC2";
/// The magic of version 1, which this build refuses with a clear error.
const TRACE_MAGIC_V1: &[u8; 8] = b"CKPTTRC1";
/// Bytes before the zstd frame.
const PREFIX_LEN: usize = 24;
const EPOCH_TAG: [u8; 4] = *b"EPCH";
const END_TAG: [u8; 4] = *b"TEND";
/// Most metadata bytes.
const MAX_META: u32 = 1 << 20;

/// What a trace may make its reader hold: about
/// `(3 * max_epoch_pages + max_guest_pages) * 4 KiB`, plus the zstd window
/// (at most 128 MiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceLimits {
    /// Most pages one epoch may carry: a reader holds up to three copies
    /// of an epoch's pages (new, previous, and the recorded memory).
    pub max_epoch_pages: u32,
    /// Largest recorded guest, in pages: the reader keeps the recorded
    /// memory, one page for each PFN written.
    pub max_guest_pages: u64,
}

impl Default for TraceLimits {
    fn default() -> Self {
        TraceLimits::for_receiver(&Limits::default())
    }
}

impl TraceLimits {
    /// The limits of a trace replayed to a backup with `limits`: an epoch
    /// it could not take as one checkpoint, or a guest larger than it
    /// accepts, is refused before it is read.
    pub fn for_receiver(limits: &Limits) -> TraceLimits {
        let pages = limits
            .max_checkpoint_entries
            .min(limits.max_checkpoint_bytes / PAGE_SIZE as u64)
            .min(1 << 18);
        TraceLimits {
            max_epoch_pages: pages.max(1) as u32,
            max_guest_pages: limits.max_guest_pages.min(PFN_LIMIT),
        }
    }
}

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
    #[error(
        "trace version {0} is not supported (this build reads version 2; re-record the trace)"
    )]
    UnsupportedVersion(u32),
    /// The trace's guest is larger than the reader accepts.
    #[error(
        "trace of a guest of {guest_pages} pages, more than the {limit} accepted (max_guest_pages)"
    )]
    GuestTooLarge {
        /// Pages of the recorded guest.
        guest_pages: u64,
        /// The limit.
        limit: u64,
    },
    /// The trace was never finished (its recorder was killed).
    #[error("unfinished trace: its guest size was never written (the recording was cut off)")]
    Unfinished,
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

fn prefix(guest_pages: u64) -> [u8; PREFIX_LEN] {
    let mut b = [0u8; PREFIX_LEN];
    b[..8].copy_from_slice(TRACE_MAGIC);
    b[8..16].copy_from_slice(&guest_pages.to_le_bytes());
    let check = crc32c::crc32c(&b[..16]);
    b[16..20].copy_from_slice(&check.to_le_bytes());
    b
}

/// Writes a trace epoch by epoch.
pub struct TraceWriter<W: Write + Seek> {
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

impl<W: Write + Seek> TraceWriter<W> {
    /// Starts a trace on `out`, which must be at its start.
    pub fn new(mut out: W, meta: &str, codec: Codec) -> Result<Self, TraceError> {
        // The guest size is not known until the end: zero marks the trace
        // unfinished until `finish` writes it.
        out.write_all(&prefix(0))?;
        let mut z = zstd::stream::write::Encoder::new(out, 9)?;
        z.include_checksum(true)?;
        z.long_distance_matching(true)?;
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

    /// Epochs written so far.
    pub fn epochs(&self) -> u32 {
        self.epochs
    }

    /// Writes one epoch: its pages in send order, each PFN at most once and
    /// below 2^28, and the target's pause and run times.
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

    /// Ends the trace, writes its guest size in front, and returns the
    /// output.
    pub fn finish(mut self) -> Result<W, TraceError> {
        let pages = self.reference.pages().max(1);
        self.out.write_all(&END_TAG)?;
        self.out.write_all(&self.epochs.to_le_bytes())?;
        self.out.write_all(&pages.to_le_bytes())?;
        let mut w = self.out.finish()?;
        let end = w.stream_position()?;
        w.seek(SeekFrom::Start(0))?;
        w.write_all(&prefix(pages))?;
        w.seek(SeekFrom::Start(end))?;
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
    meta: String,
    guest_pages: u64,
    limits: TraceLimits,
    epoch: u64,
    ended: bool,
    /// PFNs of the epoch being read, one bit each.
    seen: Vec<u64>,
}

impl TraceReader<File> {
    /// Opens a trace file, with the default limits.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        TraceReader::open_with_limits(path, TraceLimits::default())
    }

    /// Opens a trace file.
    pub fn open_with_limits(path: &Path, limits: TraceLimits) -> Result<Self, TraceError> {
        if path.is_dir() {
            return Err(TraceError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory, not a trace file",
            )));
        }
        TraceReader::with_limits(File::open(path)?, limits)
    }
}

fn damaged(epoch: u64, reason: impl Into<String>) -> TraceError {
    TraceError::Damaged {
        epoch,
        reason: reason.into(),
    }
}

impl<R: Read> TraceReader<R> {
    /// Checks the prefix and reads the metadata, with the default limits.
    pub fn new(inner: R) -> Result<Self, TraceError> {
        TraceReader::with_limits(inner, TraceLimits::default())
    }

    /// Checks the prefix and reads the metadata.
    pub fn with_limits(mut inner: R, limits: TraceLimits) -> Result<Self, TraceError> {
        let mut b = [0u8; PREFIX_LEN];
        let mut got = 0;
        while got < PREFIX_LEN {
            match inner.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let magic: [u8; 8] = b[..8].try_into().expect("8 bytes");
        if &magic == TRACE_MAGIC_V1 {
            return Err(TraceError::UnsupportedVersion(1));
        }
        if got < PREFIX_LEN || &magic != TRACE_MAGIC {
            return Err(TraceError::NotATrace(magic));
        }
        if u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")) != crc32c::crc32c(&b[..16])
            || b[20..24] != [0; 4]
        {
            return Err(damaged(0, "header check mismatch"));
        }
        let guest_pages = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
        if guest_pages == 0 {
            return Err(TraceError::Unfinished);
        }
        if guest_pages > PFN_LIMIT {
            return Err(damaged(0, format!("guest of {guest_pages} pages")));
        }
        if guest_pages > limits.max_guest_pages {
            return Err(TraceError::GuestTooLarge {
                guest_pages,
                limit: limits.max_guest_pages,
            });
        }
        let mut z =
            zstd::stream::read::Decoder::new(inner).map_err(|e| damaged(0, e.to_string()))?;
        let mut b4 = [0u8; 4];
        z.read_exact(&mut b4)
            .map_err(|e| damaged(0, e.to_string()))?;
        let len = u32::from_le_bytes(b4);
        if len > MAX_META {
            return Err(damaged(0, format!("metadata of {len} bytes")));
        }
        let mut meta = Vec::new();
        (&mut z)
            .take(len as u64)
            .read_to_end(&mut meta)
            .map_err(|e| damaged(0, e.to_string()))?;
        if meta.len() != len as usize {
            return Err(damaged(0, "metadata cut short"));
        }
        Ok(TraceReader {
            z,
            memory: PageStore::default(),
            meta: String::from_utf8_lossy(&meta).into_owned(),
            guest_pages,
            limits,
            epoch: 0,
            ended: false,
            seen: Vec::new(),
        })
    }

    /// The trace's metadata (JSON).
    pub fn meta(&self) -> &str {
        &self.meta
    }

    /// Pages of the recorded guest: one past the highest PFN.
    pub fn guest_pages(&self) -> u64 {
        self.guest_pages
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

    /// Reads exactly `len` bytes, growing the buffer only as they arrive.
    fn bytes(&mut self, len: u64) -> Result<Vec<u8>, TraceError> {
        let mut v = Vec::new();
        let e = self.epoch;
        (&mut self.z)
            .take(len)
            .read_to_end(&mut v)
            .map_err(|err| damaged(e, format!("cut short or corrupt ({err})")))?;
        if v.len() as u64 != len {
            return Err(damaged(e, "cut short"));
        }
        Ok(v)
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
            if self.u64()? != self.guest_pages {
                return Err(damaged(e, "guest size in the end record differs"));
            }
            // Read through the end of the zstd frame so that its checksum
            // is verified and a cut-off file is noticed.
            let mut rest = [0u8; 1];
            match self.z.read(&mut rest) {
                Ok(0) => {}
                Ok(_) => return Err(damaged(e, "data after the end record")),
                Err(err) => {
                    return Err(damaged(
                        e,
                        format!("end of trace cut short or corrupt ({err})"),
                    ))
                }
            }
            self.ended = true;
            return Ok(None);
        }
        if tag != EPOCH_TAG {
            return Err(damaged(e, format!("bad record tag {tag:02x?}")));
        }
        self.exact(&mut b4)?;
        let n = u32::from_le_bytes(b4);
        if n > self.limits.max_epoch_pages {
            return Err(damaged(
                e,
                format!(
                    "{n} pages in one epoch (the limit is {})",
                    self.limits.max_epoch_pages
                ),
            ));
        }
        let pause_ns = self.u64()?;
        let run_ns = self.u64()?;
        let raw = self.bytes(n as u64 * 8)?;
        let mut hash = Xxh3::new();
        hash.update(&raw);
        let words = self.guest_pages.div_ceil(64) as usize;
        if self.seen.len() < words {
            self.seen.resize(words, 0);
        }
        let mut entries = Vec::with_capacity(n as usize);
        let mut failure = None;
        for c in raw.chunks_exact(8) {
            let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            let ty = PageType::from_code((v >> TYPE_SHIFT) as u8 & 0xF)
                .filter(|t| t.carries_data() && v >> 32 == 0);
            let pfn = v & PFN_MASK;
            let Some(ty) = ty.filter(|_| pfn < self.guest_pages) else {
                failure = Some(format!("bad entry {v:#x}"));
                break;
            };
            let (w, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
            if self.seen[w] & bit != 0 {
                failure = Some(format!("pfn {pfn:#x} twice in one epoch"));
                break;
            }
            self.seen[w] |= bit;
            entries.push((pfn, ty));
        }
        for &(pfn, _) in &entries {
            self.seen[(pfn / 64) as usize] &= !(1 << (pfn % 64));
        }
        if let Some(f) = failure {
            return Err(damaged(e, f));
        }
        let len = self.u64()?;
        if len > n as u64 * MAX_ENCODED_LEN as u64 {
            return Err(damaged(e, format!("payload of {len} bytes for {n} pages")));
        }
        let payload = self.bytes(len)?;
        hash.update(&payload);
        if self.u64()? != hash.digest() {
            return Err(damaged(e, "epoch checksum mismatch"));
        }
        let mut new = PageBuf::arena(n as usize);
        let mut old = PageBuf::arena(n as usize);
        let mut at = 0;
        for (i, &(pfn, _)) in entries.iter().enumerate() {
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

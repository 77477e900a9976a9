//! The send pipeline: a Remus sender's checkpoints in, a checkpoint stream
//! out: the legacy stream (`docs/STREAM.md`, with the legacy body of
//! `docs/FORMAT.md` §4) or the record stream (`docs/RECORDS.md`), as
//! [`SenderOptions::format`] says.
//!
//! Three stages overlap across checkpoints, joined by crossbeam channels:
//! the caller stages pages (the guest-paused copy) into the staging ring's
//! segments; a compression thread compresses each staged batch on its
//! worker pool, fingerprinting every page for the digest while it is hot
//! (see [`super::encode`]); a writer thread writes the PFN batches,
//! COMPRESSED_DATA chunks, toolstack chunks, end of body and trailer (see
//! [`super::pipeline`]).
//! Staging checkpoint N+1 proceeds while N is compressed and written;
//! memory stays bounded by the ring's segment pool and two chunk buffers,
//! since a stage that runs ahead waits for them. A record stream's zstd
//! stage runs in the encode segments, or on a thread of its own between
//! the compression and writer threads (with a third chunk buffer), as
//! [`ZstdStage::placement`] says.
//!
//! The send order is preserved exactly: PFN entries are written in the order
//! given, every chunk follows the PFN batch that holds its last page, and
//! pages are encoded in staging order.
//!
//! The sender keeps the receiver's rules: whatever it accepts, a
//! [`crate::Receiver`] with the same [`Limits`] accepts and reproduces. A PFN
//! given twice in one checkpoint is refused with
//! [`SendError::DuplicatePfn`], because the stream's receiver rejects it.

use super::compressor::check_page;
use super::encode::{BatchCompressor, Chunk};
use super::options::CompressOptions;
use super::pipeline::{compress_stage, write_stage, zstd_stage, CheckpointEnd, Out, Shared, Work};
use super::ring::{SegmentPool, StagingRing};
use super::sink::Sink;
use super::stats::{Latencies, SendStats};
use crate::error::SendError;
use crate::page::{entry, PageType, PFN_LIMIT};
use crate::stream::{
    toolstack_payload_len, Format, Limits, StreamHeader, ToolstackChunk, ZstdPlacement, ZstdStage,
    CHUNK_COST, MAX_BATCH, TOOLSTACK_COST,
};
use ckpt_simd::{Codec, Page, MAX_ENCODED_LEN, PAGE_SIZE};
use crossbeam_channel::{bounded, Sender as Tx};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Settings of a [`Sender`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderOptions {
    /// Cache size, compression threads, pinning.
    pub compress: CompressOptions,
    /// Staging ring capacity in pages (pages per COMPRESSED_DATA chunk at most).
    pub ring_pages: usize,
    /// Pages of the guest; every PFN must be below it (at most 2^28).
    pub guest_pages: u64,
    /// What the backup accepts: the sender refuses a checkpoint that would
    /// exceed these limits rather than write one its backup rejects.
    pub limits: Limits,
    /// The stream's identity; `None` draws a random one.
    pub stream_id: Option<u128>,
    /// The wire format: the legacy stream or the record stream.
    pub format: Format,
    /// The record stream's zstd stage over the page encodings, if any
    /// (`None` for a legacy stream, which has no stage).
    pub zstd: Option<ZstdStage>,
}

impl SenderOptions {
    /// The defaults for a guest of `guest_pages` pages: the original's
    /// 8192-page cache, a ring of 8196 pages, one thread, default limits,
    /// the legacy format.
    pub fn new(guest_pages: u64) -> SenderOptions {
        SenderOptions {
            compress: CompressOptions::default(),
            ring_pages: 8196,
            guest_pages,
            limits: Limits::default(),
            stream_id: None,
            format: Format::Legacy,
            zstd: None,
        }
    }

    /// The defaults, writing a record stream with the zstd stage at its
    /// default level.
    pub fn records(guest_pages: u64) -> SenderOptions {
        SenderOptions {
            format: Format::Records,
            zstd: Some(ZstdStage::default()),
            ..SenderOptions::new(guest_pages)
        }
    }
}

/// The current checkpoint's bookkeeping on the caller's side.
struct Open {
    started: Instant,
    entries: u64,
    data_pages: u64,
    bytes: u64,
    toolstack: Vec<ToolstackChunk>,
}

/// Compresses checkpoints into a stream written to `W`.
pub struct Sender<W: Write + Send + 'static> {
    staging: StagingRing,
    entries: Vec<u64>,
    compressed: bool,
    enable_pending: bool,
    open: Option<Open>,
    guest_pages: u64,
    limits: Limits,
    /// PFNs of the open checkpoint, one bit each, and the list to clear.
    seen: Vec<u64>,
    seen_pfns: Vec<u64>,
    to_compress: Option<Tx<Work>>,
    compress_thread: Option<JoinHandle<()>>,
    /// The zstd stage's own thread, when it has one.
    stage_thread: Option<JoinHandle<()>>,
    writer_thread: Option<JoinHandle<Option<W>>>,
    shared: Arc<Mutex<Shared>>,
}

impl<W: Write + Send + 'static> Sender<W> {
    /// Starts a sender: writes the stream header to `out` and starts the
    /// compression and writer threads. Checkpoints start uncompressed
    /// (Format A) until one calls [`Sender::enable_compression`].
    pub fn new(out: W, codec: Codec, opts: &SenderOptions) -> Result<Sender<W>, SendError> {
        let guest_pages = opts.guest_pages;
        if guest_pages == 0 || guest_pages > PFN_LIMIT {
            return Err(SendError::Options(format!(
                "guest_pages {guest_pages} is outside 1..={PFN_LIMIT}"
            )));
        }
        let worst_chunk = opts.ring_pages.max(1) as u64 * MAX_ENCODED_LEN as u64;
        if worst_chunk > opts.limits.max_chunk_bytes {
            return Err(SendError::Options(format!(
                "a ring of {} pages makes chunks of up to {worst_chunk} bytes, above the backup's max_chunk_bytes {}",
                opts.ring_pages, opts.limits.max_chunk_bytes
            )));
        }
        check_format(opts, worst_chunk)?;
        let batch = BatchCompressor::new(codec, &opts.compress)?;
        let staging = StagingRing::with_pool(opts.ring_pages, SegmentPool::new(opts.ring_pages));
        let shared = Arc::new(Mutex::new(Shared {
            error: None,
            latencies: Latencies::default(),
            stats: SendStats {
                framing_bytes: Sink::<W>::framing_bytes(opts.format),
                ..SendStats::default()
            },
        }));
        let (in_segments, on_thread) = match opts.zstd {
            Some(z) if z.placement == ZstdPlacement::Segments => (Some(z.level), None),
            Some(z) => (None, Some(z.level)),
            None => (None, None),
        };
        // A zstd thread holds a chunk of its own while the others work.
        let chunks = if on_thread.is_some() { 3 } else { 2 };
        let (to_compress, compress_rx) = bounded::<Work>(4);
        let (to_write, from_compress) = bounded::<Out>(4);
        let (chunk_back, chunk_pool) = bounded::<Chunk>(chunks);
        for _ in 0..chunks {
            chunk_back.send(Chunk::new()).expect("room for every chunk");
        }
        let (stage_thread, write_rx) = match on_thread {
            Some(level) => {
                let (to_writer, from_stage) = bounded::<Out>(4);
                let t = std::thread::Builder::new()
                    .name("ckpt-zstd".into())
                    .spawn(move || zstd_stage(from_compress, to_writer, level))
                    .map_err(|e| SendError::ThreadPool(e.to_string()))?;
                (Some(t), from_stage)
            }
            None => (None, from_compress),
        };
        let compress_thread = std::thread::Builder::new()
            .name("ckpt-compress".into())
            .spawn(move || compress_stage(batch, compress_rx, to_write, chunk_pool, in_segments))
            .map_err(|e| SendError::ThreadPool(e.to_string()))?;
        let header = StreamHeader {
            guest_pages,
            stream_id: opts
                .stream_id
                .unwrap_or_else(|| StreamHeader::new(guest_pages).stream_id),
        };
        let shared_w = shared.clone();
        let (format, level) = (opts.format, opts.zstd.map(|z| z.level));
        let writer_thread = std::thread::Builder::new()
            .name("ckpt-write".into())
            .spawn(move || {
                let sink = Sink::new(out, &header, format, level);
                write_stage(sink, write_rx, chunk_back, shared_w)
            })
            .map_err(|e| SendError::ThreadPool(e.to_string()))?;
        Ok(Sender {
            staging,
            entries: Vec::new(),
            compressed: false,
            enable_pending: false,
            open: None,
            guest_pages,
            limits: opts.limits.clone(),
            seen: Vec::new(),
            seen_pfns: Vec::new(),
            to_compress: Some(to_compress),
            compress_thread: Some(compress_thread),
            stage_thread,
            writer_thread: Some(writer_thread),
            shared,
        })
    }

    fn check_error(&self) -> Result<(), SendError> {
        let shared = self.shared.lock().expect("sender state");
        match &shared.error {
            Some(e) => Err(SendError::Write(io::Error::new(e.kind(), e.to_string()))),
            None => Ok(()),
        }
    }

    fn send(&self, work: Work) -> Result<(), SendError> {
        let tx = self.to_compress.as_ref().ok_or(SendError::Finished)?;
        if tx.send(work).is_err() {
            self.check_error()?;
            return Err(SendError::Finished);
        }
        Ok(())
    }

    /// Starts a checkpoint (the guest has just been paused).
    pub fn begin_checkpoint(&mut self) -> Result<(), SendError> {
        if self.open.is_some() {
            return Err(SendError::Sequence("begin_checkpoint inside a checkpoint"));
        }
        self.check_error()?;
        self.send(Work::Begin {
            compressed: self.compressed,
        })?;
        self.open = Some(Open {
            started: Instant::now(),
            entries: 0,
            data_pages: 0,
            bytes: 0,
            toolstack: Vec::new(),
        });
        Ok(())
    }

    /// Adds one PFN entry in send order: `page` is its content when the type
    /// carries data (normal and page-table pages), `None` otherwise. A
    /// refused entry changes nothing.
    pub fn page(&mut self, pfn: u64, ty: PageType, page: Option<&Page>) -> Result<(), SendError> {
        let Some(open) = self.open.as_mut() else {
            return Err(SendError::Sequence("page outside a checkpoint"));
        };
        check_page(pfn, ty, page.is_some(), self.guest_pages)?;
        let (w, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
        if self.seen.len() <= w {
            self.seen.resize(self.guest_pages.div_ceil(64) as usize, 0);
        }
        if self.seen[w] & bit != 0 {
            return Err(SendError::DuplicatePfn { pfn });
        }
        if open.entries + 1 > self.limits.max_checkpoint_entries {
            return Err(SendError::Limit {
                what: "PFN entries in one checkpoint",
                limit: self.limits.max_checkpoint_entries,
            });
        }
        // The most this page can cost the backup's buffer, counted as the
        // reader counts it: a page opening a new chunk brings the chunk's
        // bookkeeping.
        let cost = match (page.is_some(), self.compressed) {
            (false, _) => 0,
            (true, false) => PAGE_SIZE as u64,
            (true, true) if self.staging.is_empty() => MAX_ENCODED_LEN as u64 + CHUNK_COST,
            (true, true) => MAX_ENCODED_LEN as u64,
        };
        if open.bytes + cost > self.limits.max_checkpoint_bytes {
            return Err(SendError::Limit {
                what: "bytes of one checkpoint",
                limit: self.limits.max_checkpoint_bytes,
            });
        }
        open.entries += 1;
        open.bytes += cost;
        open.data_pages += page.is_some() as u64;
        self.seen[w] |= bit;
        self.seen_pfns.push(pfn);
        self.entries.push(entry(pfn, ty));
        let full = match page {
            Some(p) => self.staging.push(pfn, ty, p),
            None => false,
        };
        // Format A flushes every PFN batch with its data; Format B flushes
        // when the ring is full (a chunk follows the batch of its last page).
        if full || (!self.compressed && self.entries.len() == MAX_BATCH) {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SendError> {
        let next = self.staging.sibling();
        let ring = std::mem::replace(&mut self.staging, next);
        let entries = std::mem::take(&mut self.entries);
        self.send(Work::Batch {
            entries,
            ring,
            compressed: self.compressed,
        })
    }

    /// Queues a toolstack chunk (type -1..=-11 but TMEM's -5 and -6) for
    /// this checkpoint; it is written after the page data, before the end
    /// of the body.
    pub fn toolstack_chunk(&mut self, id: i32, payload: &[u8]) -> Result<(), SendError> {
        let Some(open) = self.open.as_mut() else {
            return Err(SendError::Sequence("toolstack chunk outside a checkpoint"));
        };
        match toolstack_payload_len(id) {
            Some(n) if n == payload.len() => {}
            _ => {
                return Err(SendError::ToolstackChunk {
                    id,
                    len: payload.len(),
                })
            }
        }
        if open.toolstack.len() as u64 >= self.limits.max_toolstack_chunks {
            return Err(SendError::Limit {
                what: "toolstack chunks in one checkpoint",
                limit: self.limits.max_toolstack_chunks,
            });
        }
        let cost = payload.len() as u64 + TOOLSTACK_COST;
        if open.bytes + cost > self.limits.max_checkpoint_bytes {
            return Err(SendError::Limit {
                what: "bytes of one checkpoint",
                limit: self.limits.max_checkpoint_bytes,
            });
        }
        open.bytes += cost;
        open.toolstack.push(ToolstackChunk {
            id,
            payload: payload.to_vec(),
        });
        Ok(())
    }

    /// Sends ENABLE_COMPRESSION in this (uncompressed) checkpoint: the
    /// following checkpoints are compressed (Format B).
    pub fn enable_compression(&mut self) -> Result<(), SendError> {
        if self.open.is_none() {
            return Err(SendError::Sequence(
                "enable_compression outside a checkpoint",
            ));
        }
        if self.compressed || self.enable_pending {
            return Err(SendError::Sequence("compression is already enabled"));
        }
        self.enable_pending = true;
        Ok(())
    }

    /// Ends the checkpoint: what is staged is compressed and written after
    /// this returns (the guest can resume).
    pub fn end_checkpoint(&mut self) -> Result<(), SendError> {
        let open = self
            .open
            .take()
            .ok_or(SendError::Sequence("end_checkpoint outside a checkpoint"))?;
        for pfn in self.seen_pfns.drain(..) {
            self.seen[(pfn / 64) as usize] &= !(1 << (pfn % 64));
        }
        if !self.entries.is_empty() || !self.staging.is_empty() {
            self.flush()?;
        }
        let enable = std::mem::take(&mut self.enable_pending);
        self.send(Work::End(CheckpointEnd {
            toolstack: open.toolstack,
            enable_compression: enable,
            started: open.started,
            cache: (0, 0),
        }))?;
        let stage = open.started.elapsed();
        self.shared
            .lock()
            .expect("sender state")
            .latencies
            .stage
            .record(stage);
        if enable {
            self.compressed = true;
        }
        Ok(())
    }

    /// Waits until everything sent so far has been compressed and written
    /// (the pipeline is idle when this returns).
    pub fn sync(&mut self) -> Result<(), SendError> {
        let (tx, rx) = bounded(1);
        self.send(Work::Sync(tx))?;
        rx.recv().map_err(|_| SendError::Finished)?;
        self.check_error()
    }

    /// Waits until the pipeline is idle, then runs `f` on the compress
    /// thread with read access to the compressor's state and returns what
    /// it returns. Benchmarks use it to read pages where, and on the core
    /// where, the compressor reads them.
    #[cfg(feature = "lab")]
    pub fn inspect<R, F>(&mut self, f: F) -> Result<R, SendError>
    where
        R: Send + 'static,
        F: FnOnce(&crate::lab::Inspect<'_>) -> R + Send + 'static,
    {
        self.sync()?;
        let (tx, rx) = bounded(1);
        self.send(Work::Inspect(Box::new(move |inspect| {
            let _ = tx.send(f(inspect));
        })))?;
        rx.recv().map_err(|_| SendError::Finished)
    }

    /// Latency distributions so far.
    pub fn latencies(&self) -> Latencies {
        self.shared.lock().expect("sender state").latencies.clone()
    }

    /// Totals so far (of what the writer has written).
    pub fn stats(&self) -> SendStats {
        self.shared.lock().expect("sender state").stats.clone()
    }

    /// Writes the end of the stream, waits for everything to be written and
    /// returns the output.
    pub fn finish(mut self) -> Result<(W, SendStats, Latencies), SendError> {
        if self.open.is_some() {
            return Err(SendError::Sequence("finish inside a checkpoint"));
        }
        self.send(Work::Finish)?;
        let out = self.join();
        self.check_error()?;
        let shared = self.shared.lock().expect("sender state");
        let out = out.ok_or(SendError::Finished)?;
        Ok((out, shared.stats.clone(), shared.latencies.clone()))
    }

    fn join(&mut self) -> Option<W> {
        self.to_compress = None;
        if let Some(t) = self.compress_thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.stage_thread.take() {
            let _ = t.join();
        }
        self.writer_thread
            .take()
            .and_then(|t| t.join().ok().flatten())
    }
}

impl<W: Write + Send + 'static> Drop for Sender<W> {
    fn drop(&mut self) {
        self.join();
    }
}

/// Checks the format's options: a stage only for a record stream, a zstd
/// level zstd has, and records that stay under 2^32 bytes.
fn check_format(opts: &SenderOptions, worst_chunk: u64) -> Result<(), SendError> {
    if opts.format == Format::Records {
        let worst_record = 16 + 8 * opts.limits.max_checkpoint_entries + worst_chunk;
        if worst_record > u32::MAX as u64 {
            return Err(SendError::Options(format!(
                "a record could reach {worst_record} bytes, above a record's 2^32 - 1 (lower max_checkpoint_entries or the ring)"
            )));
        }
    }
    let Some(z) = opts.zstd else { return Ok(()) };
    if opts.format != Format::Records {
        return Err(SendError::Options(
            "the zstd stage needs the record stream format".into(),
        ));
    }
    let levels = crate::stream::zstd_levels();
    if !levels.contains(&z.level) {
        return Err(SendError::Options(format!(
            "zstd level {} is outside {}..={}",
            z.level,
            levels.start(),
            levels.end()
        )));
    }
    Ok(())
}

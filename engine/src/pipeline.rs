//! The send pipeline: a Remus sender's checkpoints in, a checkpoint stream
//! out (`FORMAT.md` §4, framed as in [`crate::stream`]).
//!
//! Three stages overlap across checkpoints, joined by crossbeam channels:
//! the caller stages pages (the guest-paused copy) into the staging ring's
//! segments; a compression thread compresses each staged batch (in parallel
//! over its own rayon pool, see [`crate::compress`]); a writer thread writes
//! PFN batches, COMPRESSED_DATA chunks, the toolstack's chunks, the end of
//! body and the trailer. Staging checkpoint N+1 proceeds while N is
//! compressed and written; memory stays bounded by the ring's segment pool
//! and two chunk buffers, since a stage that runs ahead waits for them.
//!
//! The send order of pages is preserved exactly: PFN entries are written in
//! the order given, every chunk follows the PFN batch that holds its last
//! page, and pages are encoded in staging order.

use crate::compress::{BatchCompressor, Chunk, CompressOptions, FormCounts};
use crate::page::{entry, PageType, PFN_LIMIT};
use crate::ring::{SegmentPool, StagingRing};
use crate::stream::{
    foreign_payload_len, write_chunk_type, write_pfn_batches, Digest, ForeignChunk, StreamHeader,
    Trailer, CHUNK_COMPRESSED_DATA, CHUNK_ENABLE_COMPRESSION, CHUNK_END, MAX_BATCH, TAG_CHECKPOINT,
    TAG_END,
};
use crate::EngineError;
use ckpt_simd::{Codec, Page, PAGE_SIZE};
use crossbeam_channel::{bounded, Receiver, Sender as Tx};
use hdrhistogram::Histogram;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Settings of a [`Sender`].
#[derive(Clone, Debug)]
pub struct SenderOptions {
    /// Cache size, compression threads.
    pub compress: CompressOptions,
    /// Staging ring capacity in pages (pages per COMPRESSED_DATA chunk at most).
    pub ring_pages: usize,
    /// Pages of the guest; every PFN must be below it.
    pub guest_pages: u64,
}

/// Latency histograms, in microseconds, one value per checkpoint.
#[derive(Clone)]
pub struct Latencies {
    /// Staging: from `begin_checkpoint` to the return of `end_checkpoint`
    /// (the part of a checkpoint the guest is paused for).
    pub stage: Histogram<u64>,
    /// Compression of the checkpoint's batches.
    pub compress: Histogram<u64>,
    /// Writing the checkpoint's frame.
    pub write: Histogram<u64>,
    /// From `begin_checkpoint` until the trailer is written.
    pub checkpoint: Histogram<u64>,
}

impl Latencies {
    fn new() -> Latencies {
        let h = || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        Latencies {
            stage: h(),
            compress: h(),
            write: h(),
            checkpoint: h(),
        }
    }
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).max(1));
}

/// Totals of what a sender wrote.
#[derive(Clone, Debug, Default)]
pub struct SendStats {
    /// Checkpoints written.
    pub checkpoints: u64,
    /// PFN entries written.
    pub entries: u64,
    /// Data-carrying pages written.
    pub pages: u64,
    /// Page bytes in (4096 per data page).
    pub input_bytes: u64,
    /// Bytes written to the stream, framing included.
    pub output_bytes: u64,
    /// Page-data bytes (compressed payloads, or raw pages in Format A).
    pub payload_bytes: u64,
    /// How compressed pages were sent.
    pub counts: FormCounts,
    /// Pages sent uncompressed (Format A).
    pub uncompressed: u64,
    /// Total time the compression thread spent compressing.
    pub compress_time: Duration,
}

/// What closes a checkpoint's body, passed unchanged from the caller through
/// the compression stage to the writer.
struct CheckpointEnd {
    seq: u64,
    foreign: Vec<ForeignChunk>,
    enable_compression: bool,
    started: Instant,
}

enum Work {
    Begin {
        seq: u64,
    },
    Batch {
        entries: Vec<u64>,
        ring: StagingRing,
        compressed: bool,
    },
    End(CheckpointEnd),
    Sync(Tx<()>),
    Inspect(Inspection),
    Finish,
}

/// A function run on the compress thread with the compressor at rest.
type Inspection = Box<dyn FnOnce(&BatchCompressor) + Send>;

enum Out {
    Begin {
        seq: u64,
    },
    Batch {
        entries: Vec<u64>,
        chunk: Option<Box<Chunk>>,
        ring: Option<StagingRing>,
        compress: Duration,
    },
    End(CheckpointEnd),
    Sync(Tx<()>),
    Finish,
}

struct Shared {
    error: Option<io::Error>,
    latencies: Latencies,
    stats: SendStats,
}

/// Compresses checkpoints into a stream written to `W`.
pub struct Sender<W: Write + Send + 'static> {
    staging: StagingRing,
    entries: Vec<u64>,
    foreign: Vec<ForeignChunk>,
    compressed: bool,
    enable_pending: bool,
    seq: u64,
    started: Option<Instant>,
    guest_pages: u64,
    to_compress: Option<Tx<Work>>,
    compress_thread: Option<JoinHandle<()>>,
    writer_thread: Option<JoinHandle<Option<W>>>,
    shared: Arc<Mutex<Shared>>,
}

impl<W: Write + Send + 'static> Sender<W> {
    /// Starts a sender: writes the stream header to `out` and starts the
    /// compression and writer threads. Checkpoints start uncompressed
    /// (Format A) until one calls [`Sender::enable_compression`].
    pub fn new(out: W, codec: Codec, opts: &SenderOptions) -> Result<Sender<W>, EngineError> {
        let guest_pages = opts.guest_pages.min(PFN_LIMIT);
        // The writer stage hashes the pages for the digest.
        let batch = BatchCompressor::new(codec, &opts.compress)?;
        let pool = SegmentPool::new(opts.ring_pages);
        let staging = StagingRing::with_pool(opts.ring_pages, pool);
        let shared = Arc::new(Mutex::new(Shared {
            error: None,
            latencies: Latencies::new(),
            stats: SendStats::default(),
        }));
        let (to_compress, compress_rx) = bounded::<Work>(4);
        let (to_write, write_rx) = bounded::<Out>(4);
        let (chunk_back, chunk_pool) = bounded::<Chunk>(2);
        for _ in 0..2 {
            chunk_back.send(Chunk::new()).expect("room for two chunks");
        }
        let compress_thread = std::thread::Builder::new()
            .name("ckpt-compress".into())
            .spawn(move || compress_stage(batch, compress_rx, to_write, chunk_pool))
            .map_err(|e| EngineError::ThreadPool(e.to_string()))?;
        let header = StreamHeader { guest_pages };
        let shared_w = shared.clone();
        let writer_thread = std::thread::Builder::new()
            .name("ckpt-write".into())
            .spawn(move || write_stage(out, header, write_rx, chunk_back, shared_w))
            .map_err(|e| EngineError::ThreadPool(e.to_string()))?;
        Ok(Sender {
            staging,
            entries: Vec::new(),
            foreign: Vec::new(),
            compressed: false,
            enable_pending: false,
            seq: 0,
            started: None,
            guest_pages,
            to_compress: Some(to_compress),
            compress_thread: Some(compress_thread),
            writer_thread: Some(writer_thread),
            shared,
        })
    }

    fn check_error(&self) -> Result<(), EngineError> {
        let shared = self.shared.lock().expect("sender state");
        match &shared.error {
            Some(e) => Err(EngineError::Write(io::Error::new(e.kind(), e.to_string()))),
            None => Ok(()),
        }
    }

    fn send(&self, work: Work) -> Result<(), EngineError> {
        let tx = self.to_compress.as_ref().ok_or(EngineError::Finished)?;
        if tx.send(work).is_err() {
            self.check_error()?;
            return Err(EngineError::Finished);
        }
        Ok(())
    }

    /// Starts a checkpoint (the guest has just been paused).
    pub fn begin_checkpoint(&mut self) -> Result<(), EngineError> {
        if self.started.is_some() {
            return Err(EngineError::Sequence(
                "begin_checkpoint inside a checkpoint",
            ));
        }
        self.check_error()?;
        let started = Instant::now();
        self.started = Some(started);
        self.send(Work::Begin { seq: self.seq })
    }

    /// Adds one PFN entry in send order: `page` is its content when the type
    /// carries data (normal and page-table pages), `None` otherwise.
    pub fn page(&mut self, pfn: u64, ty: PageType, page: Option<&Page>) -> Result<(), EngineError> {
        if self.started.is_none() {
            return Err(EngineError::Sequence("page outside a checkpoint"));
        }
        crate::compress::check_pfn(pfn, self.guest_pages)?;
        match (ty.carries_data(), page) {
            (true, None) => return Err(EngineError::MissingPageData { pfn, ty }),
            (false, Some(_)) => return Err(EngineError::NoPageData { pfn, ty }),
            _ => {}
        }
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

    fn flush(&mut self) -> Result<(), EngineError> {
        let next = self.staging.sibling();
        let ring = std::mem::replace(&mut self.staging, next);
        let entries = std::mem::take(&mut self.entries);
        self.send(Work::Batch {
            entries,
            ring,
            compressed: self.compressed,
        })
    }

    /// Queues a toolstack chunk (type -1..=-11) for this checkpoint; it is
    /// written after the page data, before the end of the body.
    pub fn foreign_chunk(&mut self, id: i32, payload: &[u8]) -> Result<(), EngineError> {
        match foreign_payload_len(id) {
            Some(n) if n == payload.len() => {}
            _ => {
                return Err(EngineError::ForeignChunk {
                    id,
                    len: payload.len(),
                })
            }
        }
        self.foreign.push(ForeignChunk {
            id,
            payload: payload.to_vec(),
        });
        Ok(())
    }

    /// Sends ENABLE_COMPRESSION in this (uncompressed) checkpoint: the
    /// following checkpoints are compressed (Format B).
    pub fn enable_compression(&mut self) -> Result<(), EngineError> {
        if self.compressed || self.enable_pending {
            return Err(EngineError::Sequence("compression is already enabled"));
        }
        self.enable_pending = true;
        Ok(())
    }

    /// Ends the checkpoint: what is staged is compressed and written after
    /// this returns (the guest can resume).
    pub fn end_checkpoint(&mut self) -> Result<(), EngineError> {
        let started = self
            .started
            .take()
            .ok_or(EngineError::Sequence("end_checkpoint outside a checkpoint"))?;
        if !self.entries.is_empty() || !self.staging.is_empty() {
            self.flush()?;
        }
        let enable = std::mem::take(&mut self.enable_pending);
        let foreign = std::mem::take(&mut self.foreign);
        self.send(Work::End(CheckpointEnd {
            seq: self.seq,
            foreign,
            enable_compression: enable,
            started,
        }))?;
        let stage = started.elapsed();
        record(
            &mut self.shared.lock().expect("sender state").latencies.stage,
            stage,
        );
        self.seq += 1;
        if enable {
            self.compressed = true;
        }
        Ok(())
    }

    /// Waits until everything sent so far has been compressed and written
    /// (the pipeline is idle when this returns).
    pub fn sync(&mut self) -> Result<(), EngineError> {
        let (tx, rx) = bounded(1);
        self.send(Work::Sync(tx))?;
        rx.recv().map_err(|_| EngineError::Finished)?;
        self.check_error()
    }

    /// Waits until the pipeline is idle, then runs `f` on the compress
    /// thread with read access to the compressor (its delta cache, its
    /// codec) and returns what it returns. Benchmarks use it to read pages
    /// where, and on the core where, the compressor reads them.
    pub fn inspect<R, F>(&mut self, f: F) -> Result<R, EngineError>
    where
        R: Send + 'static,
        F: FnOnce(&BatchCompressor) -> R + Send + 'static,
    {
        self.sync()?;
        let (tx, rx) = bounded(1);
        self.send(Work::Inspect(Box::new(move |batch| {
            let _ = tx.send(f(batch));
        })))?;
        rx.recv().map_err(|_| EngineError::Finished)
    }

    /// Latency histograms so far.
    pub fn latencies(&self) -> Latencies {
        self.shared.lock().expect("sender state").latencies.clone()
    }

    /// Totals so far (of what the writer has written).
    pub fn stats(&self) -> SendStats {
        self.shared.lock().expect("sender state").stats.clone()
    }

    /// Writes the end of the stream, waits for everything to be written and
    /// returns the output.
    pub fn finish(mut self) -> Result<(W, SendStats, Latencies), EngineError> {
        if self.started.is_some() {
            return Err(EngineError::Sequence("finish inside a checkpoint"));
        }
        self.send(Work::Finish)?;
        let out = self.join();
        self.check_error()?;
        let shared = self.shared.lock().expect("sender state");
        let out = out.ok_or(EngineError::Finished)?;
        Ok((out, shared.stats.clone(), shared.latencies.clone()))
    }

    fn join(&mut self) -> Option<W> {
        self.to_compress = None;
        if let Some(t) = self.compress_thread.take() {
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

fn compress_stage(
    mut batch: BatchCompressor,
    rx: Receiver<Work>,
    tx: Tx<Out>,
    chunks: Receiver<Chunk>,
) {
    for work in rx {
        let out = match work {
            Work::Inspect(f) => {
                f(&batch);
                continue;
            }
            Work::Begin { seq } => Out::Begin { seq },
            Work::Batch {
                entries,
                ring,
                compressed,
            } => {
                if compressed && !ring.is_empty() {
                    let Ok(mut chunk) = chunks.recv() else { return };
                    let t = Instant::now();
                    batch.compress(&ring, &mut chunk);
                    let compress = t.elapsed();
                    // The writer hashes the staged pages for the digest,
                    // alongside the compression of the next batch, then
                    // gives the ring's segments back.
                    Out::Batch {
                        entries,
                        chunk: Some(Box::new(chunk)),
                        ring: Some(ring),
                        compress,
                    }
                } else {
                    Out::Batch {
                        entries,
                        chunk: None,
                        ring: Some(ring),
                        compress: Duration::ZERO,
                    }
                }
            }
            Work::End(end) => Out::End(end),
            Work::Sync(tx) => Out::Sync(tx),
            Work::Finish => Out::Finish,
        };
        if tx.send(out).is_err() {
            return;
        }
    }
}

struct StreamOut<W: Write> {
    w: W,
    written: u64,
}

impl<W: Write> Write for StreamOut<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

fn write_stage<W: Write>(
    out: W,
    header: StreamHeader,
    rx: Receiver<Out>,
    chunk_back: Tx<Chunk>,
    shared: Arc<Mutex<Shared>>,
) -> Option<W> {
    let mut w = StreamOut { w: out, written: 0 };
    let fail = |e: io::Error, shared: &Arc<Mutex<Shared>>| {
        let mut s = shared.lock().expect("sender state");
        if s.error.is_none() {
            s.error = Some(e);
        }
    };
    if let Err(e) = w.write_all(&header.to_bytes()) {
        fail(e, &shared);
    }
    let mut digest = Digest::new();
    let mut compress_time = Duration::ZERO;
    let mut write_time = Duration::ZERO;
    let mut checkpoints = 0u64;
    let mut failed = false;
    for msg in rx {
        let t = Instant::now();
        let result: io::Result<()> = (|| {
            if failed {
                return Ok(());
            }
            match &msg {
                Out::Begin { seq } => {
                    digest = Digest::new();
                    compress_time = Duration::ZERO;
                    write_time = Duration::ZERO;
                    w.write_all(&TAG_CHECKPOINT)?;
                    w.write_all(&0u32.to_le_bytes())?;
                    w.write_all(&seq.to_le_bytes())?;
                }
                Out::Batch {
                    entries,
                    chunk,
                    ring,
                    compress,
                } => {
                    compress_time += *compress;
                    let mut s = SendStats {
                        entries: entries.len() as u64,
                        ..Default::default()
                    };
                    write_pfn_batches(&mut w, entries)?;
                    match (chunk, ring) {
                        (Some(chunk), ring) => {
                            w.write_all(&CHUNK_COMPRESSED_DATA.to_le_bytes())?;
                            w.write_all(&(chunk.len() as u64).to_le_bytes())?;
                            let ring = ring.as_ref().expect("a chunk travels with its batch");
                            for piece in chunk.pieces(ring) {
                                w.write_all(piece)?;
                            }
                            for (i, e) in ring.entries().iter().enumerate() {
                                digest.add(e.pfn, ring.page(i));
                            }
                            s.pages = chunk.pages() as u64;
                            s.payload_bytes = chunk.len() as u64;
                            s.counts = *chunk.counts();
                        }
                        (None, Some(ring)) => {
                            // Format A: the batch's pages' data follows it.
                            for (i, e) in ring.entries().iter().enumerate() {
                                let page = ring.page(i);
                                w.write_all(page)?;
                                digest.add(e.pfn, page);
                            }
                            s.uncompressed = ring.len() as u64;
                            s.pages = s.uncompressed;
                            s.payload_bytes = (ring.len() * PAGE_SIZE) as u64;
                        }
                        (None, None) => {}
                    }
                    s.input_bytes = s.pages * PAGE_SIZE as u64;
                    let mut sh = shared.lock().expect("sender state");
                    let st = &mut sh.stats;
                    st.entries += s.entries;
                    st.pages += s.pages;
                    st.input_bytes += s.input_bytes;
                    st.payload_bytes += s.payload_bytes;
                    st.uncompressed += s.uncompressed;
                    st.counts.add(&s.counts);
                    st.compress_time += *compress;
                }
                Out::End(CheckpointEnd {
                    seq,
                    foreign,
                    enable_compression,
                    ..
                }) => {
                    for f in foreign {
                        write_chunk_type(&mut w, f.id)?;
                        w.write_all(&f.payload)?;
                    }
                    if *enable_compression {
                        write_chunk_type(&mut w, CHUNK_ENABLE_COMPRESSION)?;
                    }
                    write_chunk_type(&mut w, CHUNK_END)?;
                    let trailer = Trailer {
                        seq: *seq,
                        data_pages: digest.pages(),
                        digest: digest.finish(),
                    };
                    w.write_all(&trailer.to_bytes())?;
                    w.flush()?;
                    checkpoints = seq + 1;
                }
                Out::Sync(_) => {}
                Out::Finish => {
                    w.write_all(&TAG_END)?;
                    w.write_all(&0u32.to_le_bytes())?;
                    w.write_all(&checkpoints.to_le_bytes())?;
                    w.flush()?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            failed = true;
            fail(e, &shared);
        }
        write_time += t.elapsed();
        match msg {
            Out::Batch { chunk, ring, .. } => {
                if let Some(c) = chunk {
                    let _ = chunk_back.send(*c);
                }
                drop(ring);
            }
            Out::End(CheckpointEnd { started, .. }) => {
                let mut sh = shared.lock().expect("sender state");
                sh.stats.checkpoints += 1;
                sh.stats.output_bytes = w.written;
                record(&mut sh.latencies.compress, compress_time);
                record(&mut sh.latencies.write, write_time);
                record(&mut sh.latencies.checkpoint, started.elapsed());
            }
            Out::Finish => {
                shared.lock().expect("sender state").stats.output_bytes = w.written;
                return if failed { None } else { Some(w.w) };
            }
            Out::Sync(tx) => {
                let _ = tx.send(());
            }
            Out::Begin { .. } => {}
        }
    }
    None
}

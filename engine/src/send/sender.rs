//! The send pipeline: a Remus sender's checkpoints in, a checkpoint stream
//! (`docs/STREAM.md`, with the legacy body of `docs/FORMAT.md` §4) out.
//!
//! Three stages overlap across checkpoints, joined by crossbeam channels:
//! the caller stages pages (the guest-paused copy) into the staging ring's
//! segments; a compression thread compresses each staged batch on its
//! worker pool, hashing every page for the digest while it is hot (see
//! [`super::encode`]); a writer thread writes the PFN batches,
//! COMPRESSED_DATA chunks, toolstack chunks, end of body and trailer.
//! Staging checkpoint N+1 proceeds while N is compressed and written;
//! memory stays bounded by the ring's segment pool and two chunk buffers,
//! since a stage that runs ahead waits for them.
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
use super::encode::{BatchCompressor, Chunk, CompressOptions};
use super::ring::{SegmentPool, StagingRing};
use super::stats::{Latencies, SendStats};
use crate::page::{entry, PageType, PFN_LIMIT};
use crate::stream::{
    toolstack_payload_len, Digest, Limits, StreamHeader, StreamWriter, ToolstackChunk, MAX_BATCH,
};
use crate::SendError;
use ckpt_simd::{Codec, Page, MAX_ENCODED_LEN, PAGE_SIZE};
use crossbeam_channel::{bounded, Receiver, Sender as Tx};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
}

impl SenderOptions {
    /// The defaults for a guest of `guest_pages` pages: the original's
    /// 8192-page cache, a ring of 8196 pages, one thread, default limits.
    pub fn new(guest_pages: u64) -> SenderOptions {
        SenderOptions {
            compress: CompressOptions::default(),
            ring_pages: 8196,
            guest_pages,
            limits: Limits::default(),
            stream_id: None,
        }
    }
}

/// What closes a checkpoint's body, passed unchanged from the caller
/// through the compression stage to the writer.
struct CheckpointEnd {
    toolstack: Vec<ToolstackChunk>,
    enable_compression: bool,
    started: Instant,
}

enum Work {
    Begin {
        compressed: bool,
    },
    Batch {
        entries: Vec<u64>,
        ring: StagingRing,
        compressed: bool,
    },
    End(CheckpointEnd),
    Sync(Tx<()>),
    #[cfg(feature = "lab")]
    Inspect(Inspection),
    Finish,
}

/// A function run on the compress thread with the compressor at rest.
#[cfg(feature = "lab")]
type Inspection = Box<dyn FnOnce(&crate::lab::Inspect<'_>) + Send>;

enum Out {
    Begin {
        compressed: bool,
    },
    Batch {
        entries: Vec<u64>,
        /// Format B: the compressed chunk. Format A: none.
        chunk: Option<Box<Chunk>>,
        /// Format A: the pages' fingerprints.
        hashes: Vec<u128>,
        ring: StagingRing,
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
        let batch = BatchCompressor::new(codec, &opts.compress)?;
        let staging = StagingRing::with_pool(opts.ring_pages, SegmentPool::new(opts.ring_pages));
        let shared = Arc::new(Mutex::new(Shared {
            error: None,
            latencies: Latencies::default(),
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
            .map_err(|e| SendError::ThreadPool(e.to_string()))?;
        let header = StreamHeader {
            guest_pages,
            stream_id: opts
                .stream_id
                .unwrap_or_else(|| StreamHeader::new(guest_pages).stream_id),
        };
        let shared_w = shared.clone();
        let writer_thread = std::thread::Builder::new()
            .name("ckpt-write".into())
            .spawn(move || write_stage(out, header, write_rx, chunk_back, shared_w))
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
        // The most this page can cost the backup's buffer; the first page of
        // a COMPRESSED_DATA chunk also brings the chunk's bookkeeping.
        let cost = match (page.is_some(), self.compressed) {
            (false, _) => 0,
            (true, false) => PAGE_SIZE as u64,
            (true, true) if self.staging.is_empty() => {
                MAX_ENCODED_LEN as u64 + crate::stream::CHUNK_COST
            }
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
        let cost = payload.len() as u64 + crate::stream::TOOLSTACK_COST;
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
            #[cfg(feature = "lab")]
            Work::Inspect(f) => {
                f(&crate::lab::Inspect::new(&batch));
                continue;
            }
            Work::Begin { compressed } => Out::Begin { compressed },
            Work::Batch {
                entries,
                ring,
                compressed,
            } => {
                if compressed && !ring.is_empty() {
                    let Ok(mut chunk) = chunks.recv() else { return };
                    let t = Instant::now();
                    batch.compress(&ring, &mut chunk);
                    Out::Batch {
                        entries,
                        chunk: Some(Box::new(chunk)),
                        hashes: Vec::new(),
                        ring,
                        compress: t.elapsed(),
                    }
                } else {
                    let mut hashes = Vec::new();
                    batch.hash_pages(&ring, &mut hashes);
                    Out::Batch {
                        entries,
                        chunk: None,
                        hashes,
                        ring,
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

/// The writer's state for the checkpoint it is writing.
#[derive(Default)]
struct Writing {
    digest: Digest,
    compress: Duration,
    write: Duration,
    /// Format B: the body is compressed.
    compressed: bool,
    /// Stream offset of the frame.
    start: u64,
}

fn write_stage<W: Write>(
    out: W,
    header: StreamHeader,
    rx: Receiver<Out>,
    chunk_back: Tx<Chunk>,
    shared: Arc<Mutex<Shared>>,
) -> Option<W> {
    let fail = |e: io::Error| {
        let mut s = shared.lock().expect("sender state");
        if s.error.is_none() {
            s.error = Some(e);
        }
    };
    let mut w = match StreamWriter::new(out, &header) {
        Ok(w) => Some(w),
        Err(e) => {
            fail(e);
            None
        }
    };
    let mut cp = Writing::default();
    for msg in rx {
        let t = Instant::now();
        if let Some(writer) = w.as_mut() {
            if let Err(e) = write_one(writer, &msg, &mut cp, &shared) {
                fail(e);
                w = None;
            }
        }
        cp.write += t.elapsed();
        match msg {
            Out::Batch { chunk, .. } => {
                if let Some(c) = chunk {
                    let _ = chunk_back.send(*c);
                }
            }
            Out::End(CheckpointEnd { started, .. }) => {
                let mut sh = shared.lock().expect("sender state");
                if let Some(writer) = &w {
                    sh.stats.checkpoints += 1;
                    sh.stats.output_bytes = writer.written();
                }
                sh.latencies.compress.record(cp.compress);
                sh.latencies.write.record(cp.write);
                sh.latencies.checkpoint.record(started.elapsed());
            }
            Out::Finish => {
                let w = w.take()?;
                let written = w.written();
                return match w.finish() {
                    Ok(out) => {
                        let mut sh = shared.lock().expect("sender state");
                        sh.stats.output_bytes = written + crate::stream::END_LEN as u64;
                        Some(out)
                    }
                    Err(e) => {
                        fail(e);
                        None
                    }
                };
            }
            Out::Sync(tx) => {
                let _ = tx.send(());
            }
            Out::Begin { .. } => {}
        }
    }
    None
}

fn write_one<W: Write>(
    w: &mut StreamWriter<W>,
    msg: &Out,
    cp: &mut Writing,
    shared: &Mutex<Shared>,
) -> io::Result<()> {
    match msg {
        Out::Begin { compressed } => {
            *cp = Writing {
                compressed: *compressed,
                start: w.written(),
                ..Writing::default()
            };
            w.begin_checkpoint()?;
        }
        Out::Batch {
            entries,
            chunk,
            hashes,
            ring,
            compress,
        } => {
            cp.compress += *compress;
            let mut s = SendStats {
                entries: entries.len() as u64,
                pages: ring.len() as u64,
                input_bytes: (ring.len() * PAGE_SIZE) as u64,
                compress_time: *compress,
                ..Default::default()
            };
            let hashes = match chunk {
                Some(chunk) => {
                    w.pfn_batches(entries)?;
                    w.compressed_chunk(chunk.len() as u64, chunk.pieces(ring))?;
                    s.payload_bytes = chunk.len() as u64;
                    s.counts = *chunk.counts();
                    chunk.hashes()
                }
                None if ring.is_empty() => {
                    w.pfn_batches(entries)?;
                    &[][..]
                }
                None => {
                    // Format A: one batch of at most 1024 entries, its pages' data after it.
                    w.pfn_batch_with_data(entries, (0..ring.len()).map(|i| ring.page(i)))?;
                    s.uncompressed = ring.len() as u64;
                    s.payload_bytes = s.input_bytes;
                    hashes
                }
            };
            for (e, &h) in ring.entries().iter().zip(hashes) {
                cp.digest.add(e.pfn, h);
            }
            let mut sh = shared.lock().expect("sender state");
            let st = &mut sh.stats;
            st.entries += s.entries;
            st.pages += s.pages;
            st.input_bytes += s.input_bytes;
            st.payload_bytes += s.payload_bytes;
            st.uncompressed += s.uncompressed;
            st.counts.add(&s.counts);
            st.compress_time += s.compress_time;
        }
        Out::End(CheckpointEnd {
            toolstack,
            enable_compression,
            ..
        }) => {
            for t in toolstack {
                w.toolstack_chunk(t.id, &t.payload)?;
            }
            if *enable_compression {
                w.enable_compression()?;
            }
            w.end_checkpoint(cp.digest.pages(), cp.digest.finish())?;
            if !cp.compressed {
                shared
                    .lock()
                    .expect("sender state")
                    .stats
                    .uncompressed_output_bytes += w.written() - cp.start;
            }
        }
        Out::Sync(_) | Out::Finish => {}
    }
    Ok(())
}

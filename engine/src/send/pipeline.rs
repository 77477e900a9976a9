//! The two stages behind the [`Sender`](super::Sender) and the messages
//! between them: the compress stage turns each staged batch into a chunk on
//! its worker pool (or fingerprints an uncompressed one); the writer stage
//! writes PFN batches, chunks, toolstack chunks and trailers through a
//! [`StreamWriter`], folding each page's fingerprint into the checkpoint's
//! digest, and keeps the totals and latencies.

use super::encode::{BatchCompressor, Chunk};
use super::ring::StagingRing;
use super::sink::Sink;
use super::stats::{Latencies, SendStats};
use crate::stream::{Digest, ToolstackChunk};
use ckpt_simd::PAGE_SIZE;
use crossbeam_channel::{Receiver, Sender as Tx};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What closes a checkpoint's body, passed unchanged from the caller
/// through the compression stage to the writer.
pub(super) struct CheckpointEnd {
    pub(super) toolstack: Vec<ToolstackChunk>,
    pub(super) enable_compression: bool,
    pub(super) started: Instant,
    /// The cache's capacity and memory after the checkpoint (set by the
    /// compress stage).
    pub(super) cache: (usize, usize),
}

pub(super) enum Work {
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
pub(super) type Inspection = Box<dyn FnOnce(&crate::lab::Inspect<'_>) + Send>;

pub(super) enum Out {
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

pub(super) struct Shared {
    pub(super) error: Option<io::Error>,
    pub(super) latencies: Latencies,
    pub(super) stats: SendStats,
}

pub(super) fn compress_stage(
    mut batch: BatchCompressor,
    rx: Receiver<Work>,
    tx: Tx<Out>,
    chunks: Receiver<Chunk>,
    zstd: Option<i32>,
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
                    batch.compress(&ring, &mut chunk, zstd);
                    Out::Batch {
                        entries,
                        chunk: Some(Box::new(chunk)),
                        hashes: Vec::new(),
                        ring,
                        compress: t.elapsed(),
                    }
                } else {
                    let mut hashes = Vec::new();
                    if !compressed && batch.cache().seeding() {
                        batch.seed(&ring, &mut hashes);
                    } else {
                        batch.hash_pages(&ring, &mut hashes);
                    }
                    Out::Batch {
                        entries,
                        chunk: None,
                        hashes,
                        ring,
                        compress: Duration::ZERO,
                    }
                }
            }
            Work::End(end) => Out::End(CheckpointEnd {
                cache: batch.end_checkpoint(),
                ..end
            }),
            Work::Sync(tx) => Out::Sync(tx),
            Work::Finish => Out::Finish,
        };
        if tx.send(out).is_err() {
            return;
        }
    }
}

/// The zstd stage on a thread of its own: each compressed chunk becomes one
/// frame while the compression thread encodes the next batch.
pub(super) fn zstd_stage(rx: Receiver<Out>, tx: Tx<Out>, level: i32) {
    for mut out in rx {
        if let Out::Batch {
            chunk: Some(chunk),
            ring,
            ..
        } = &mut out
        {
            chunk.compress_whole(ring, level);
        }
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
    zstd: Duration,
    /// Format B: the body is compressed.
    compressed: bool,
    /// Stream offset of the frame.
    start: u64,
}

pub(super) fn write_stage<W: Write>(
    sink: io::Result<Sink<W>>,
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
    let mut w = match sink {
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
            Out::End(CheckpointEnd { started, cache, .. }) => {
                let mut sh = shared.lock().expect("sender state");
                if let Some(writer) = &w {
                    sh.stats.checkpoints += 1;
                    sh.stats.output_bytes = writer.written();
                }
                sh.stats.cache_pages = cache.0 as u64;
                sh.stats.cache_bytes = sh.stats.cache_bytes.max(cache.1 as u64);
                sh.latencies.compress.record(cp.compress);
                sh.latencies.write.record(cp.write);
                sh.latencies.zstd.record(cp.zstd);
                sh.latencies.checkpoint.record(started.elapsed());
            }
            Out::Finish => {
                let w = w.take()?;
                let written = w.written() + w.end_len();
                return match w.finish() {
                    Ok(out) => {
                        let mut sh = shared.lock().expect("sender state");
                        sh.stats.output_bytes = written;
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
    w: &mut Sink<W>,
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
                    let bytes = w.chunk(entries, chunk, ring)?;
                    s.payload_bytes = bytes.payload;
                    s.encoded_bytes = bytes.encoded;
                    s.zstd_time = chunk.zstd_time();
                    cp.zstd += chunk.zstd_time();
                    s.counts = *chunk.counts();
                    chunk.hashes()
                }
                None if ring.is_empty() => {
                    w.entries(entries, cp.compressed)?;
                    &[][..]
                }
                None => {
                    // Format A: one batch of at most 1024 entries, its pages' data after it.
                    w.raw_batch(entries, (0..ring.len()).map(|i| ring.page(i)))?;
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
            st.encoded_bytes += s.encoded_bytes;
            st.zstd_time += s.zstd_time;
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

//! `ckpt compress`, `ckpt restore` and `ckpt inspect`: stream files on disk.

use crate::demo::{send_checkpoint, GUEST_PAGES, SEQUENCE};
use crate::{Error, Result};
use ckpt_engine::config::ReceiverConfig;
use ckpt_engine::memory::{GuestMemory, ImageFile, SparseMemory};
use ckpt_engine::pipeline::{SendStats, Sender, SenderOptions};
use ckpt_engine::receiver::{CheckpointInfo, Event, Receiver};
use ckpt_engine::synth::Scenario;
use ckpt_engine::trace::TraceReader;
use ckpt_simd::Codec;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Compresses the built-in synthetic run into a stream file.
pub fn compress_builtin(out: &Path, codec: Codec, opts: &SenderOptions) -> Result<SendStats> {
    let file = BufWriter::with_capacity(1 << 20, File::create(out)?);
    let opts = SenderOptions {
        guest_pages: GUEST_PAGES,
        ..opts.clone()
    };
    let mut sender = Sender::new(file, codec, &opts)?;
    for cp in Scenario::new(GUEST_PAGES, 0xDE70, &SEQUENCE) {
        send_checkpoint(&mut sender, &cp)?;
    }
    let (mut file, stats, _) = sender.finish()?;
    file.flush()?;
    Ok(stats)
}

/// Compresses a recorded trace into a stream file: the first epoch (the
/// initial image) uncompressed with ENABLE_COMPRESSION, the rest compressed.
pub fn compress_trace(
    trace: &Path,
    out: &Path,
    codec: Codec,
    opts: &SenderOptions,
) -> Result<SendStats> {
    let terr =
        |e: ckpt_engine::trace::TraceError| Error::Other(format!("{}: {e}", trace.display()));
    // The guest size for the stream header: one past the highest PFN.
    let mut reader = TraceReader::open(trace).map_err(terr)?;
    while reader.next_epoch().map_err(terr)?.is_some() {}
    let opts = SenderOptions {
        guest_pages: reader.pages.max(1),
        ..opts.clone()
    };
    let file = BufWriter::with_capacity(1 << 20, File::create(out)?);
    let mut sender = Sender::new(file, codec, &opts)?;
    let mut reader = TraceReader::open(trace).map_err(terr)?;
    let mut first = true;
    while let Some(epoch) = reader.next_epoch().map_err(terr)? {
        sender.begin_checkpoint()?;
        for (i, &(pfn, ty)) in epoch.entries.iter().enumerate() {
            sender.page(pfn, ty, Some(&epoch.new[i].0))?;
        }
        if std::mem::take(&mut first) {
            sender.enable_compression()?;
        }
        sender.end_checkpoint()?;
    }
    let (mut file, stats, _) = sender.finish()?;
    file.flush()?;
    Ok(stats)
}

/// Outcome of applying a stream.
pub struct RestoreReport {
    /// Checkpoints applied.
    pub applied: Vec<CheckpointInfo>,
    /// Whether the stream ended with its end frame.
    pub complete: bool,
    /// The error that stopped it, if any (memory holds the last applied
    /// checkpoint).
    pub error: Option<Error>,
}

/// Applies a stream file to an image file, checkpoint by checkpoint, each
/// verified against its digest before it touches the image.
pub fn restore(
    stream: &Path,
    image: &Path,
    limits: ReceiverConfig,
    codec: Codec,
) -> Result<RestoreReport> {
    let mut rx = Receiver::new(File::open(stream)?, limits, codec)?;
    let mut memory = ImageFile::open(image, rx.guest_pages())?;
    apply_all(&mut rx, &mut memory, &mut |_| {})
}

fn apply_all<R: std::io::Read>(
    rx: &mut Receiver<R>,
    memory: &mut dyn GuestMemory,
    observe: &mut dyn FnMut(&Event),
) -> Result<RestoreReport> {
    let mut report = RestoreReport {
        applied: Vec::new(),
        complete: false,
        error: None,
    };
    loop {
        match rx.next_checkpoint_observed(memory, observe) {
            Ok(Some(info)) => report.applied.push(info),
            Ok(None) => {
                report.complete = true;
                break;
            }
            Err(e) => {
                report.error = Some(Error::Receive(e));
                break;
            }
        }
    }
    Ok(report)
}

/// Lists a stream's frames and chunks with their offsets and sizes,
/// verifying every checkpoint (applied to an in-memory guest).
pub fn inspect(
    stream: &Path,
    limits: ReceiverConfig,
    codec: Codec,
    out: &mut impl Write,
) -> Result<RestoreReport> {
    let mut rx = Receiver::new(File::open(stream)?, limits, codec)?;
    writeln!(out, "stream header: guest of {} pages", rx.guest_pages())?;
    let mut memory = SparseMemory::new(rx.guest_pages());
    let mut lines: Vec<String> = Vec::new();
    let report = apply_all(&mut rx, &mut memory, &mut |e| {
        lines.push(match e {
            Event::Checkpoint {
                offset,
                seq,
                compressed,
            } => format!(
                "{offset:>12}  checkpoint {seq} ({})",
                if *compressed {
                    "compressed, Format B"
                } else {
                    "uncompressed, Format A"
                }
            ),
            Event::Batch {
                offset,
                entries,
                data,
            } => {
                format!("{offset:>12}    PFN batch: {entries} entries, {data} with data")
            }
            Event::Compressed { offset, len, pages } => {
                format!("{offset:>12}    COMPRESSED_DATA: {len} bytes, {pages} pages")
            }
            Event::EnableCompression { offset } => format!("{offset:>12}    ENABLE_COMPRESSION"),
            Event::Foreign { offset, id } => format!("{offset:>12}    toolstack chunk {id}"),
            Event::Trailer { offset, trailer } => format!(
                "{offset:>12}    trailer: {} pages, digest {:032x} verified",
                trailer.data_pages, trailer.digest
            ),
            Event::End {
                offset,
                checkpoints,
            } => {
                format!("{offset:>12}  end of stream after {checkpoints} checkpoints")
            }
        })
    })?;
    for l in &lines {
        writeln!(out, "{l}")?;
    }
    for info in &report.applied {
        writeln!(
            out,
            "checkpoint {}: {} entries, {} pages ({} full, {} delta, {} empty), {} payload bytes, frame {} bytes",
            info.seq,
            info.entries,
            info.data_pages,
            info.full,
            info.delta,
            info.empty,
            info.payload_bytes,
            info.frame_bytes
        )?;
    }
    Ok(report)
}

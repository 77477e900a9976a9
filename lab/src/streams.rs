//! Stream files on disk: writing checkpoints from a trace or a synthetic
//! guest into one (`ckpt compress`), committing one to an image file
//! (`ckpt restore`), and listing one (`ckpt inspect`). Either wire format:
//! the sender's options choose what is written, a reader tells what it
//! reads by its first bytes (and can be told what to expect).

use crate::replay::{replay, Source};
use crate::LabError;
use ckpt_engine::stream::records::{record_name, RecordInfo};
use ckpt_engine::stream::Event;
use ckpt_engine::{
    CheckpointInfo, Codec, Format, GuestMemory, ImageFile, Limits, ReceiveError, Receiver,
    SendStats, Sender, SenderOptions, SparseMemory, StreamError,
};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes every checkpoint of `source` into the stream file `out`.
pub fn compress(
    source: &mut dyn Source,
    out: &Path,
    codec: Codec,
    opts: &SenderOptions,
) -> Result<SendStats, LabError> {
    let file = File::create(out).map_err(|e| LabError::file(out, e))?;
    let opts = SenderOptions {
        guest_pages: source.guest_pages(),
        ..opts.clone()
    };
    let mut sender = Sender::new(BufWriter::with_capacity(1 << 20, file), codec, &opts)?;
    replay(source, &mut sender, |_, _| Ok(()))?;
    let (mut file, stats, _) = sender.finish()?;
    file.flush().map_err(|e| LabError::file(out, e))?;
    Ok(stats)
}

/// Outcome of reading a stream to its end or to its first error. Nothing
/// is kept per checkpoint, so a stream of any length costs the same.
pub struct RestoreReport {
    /// Checkpoints committed.
    pub checkpoints: u64,
    /// The last checkpoint committed, if any (its toolstack chunks dropped).
    pub last: Option<CheckpointInfo>,
    /// Whether the stream ended with its end frame.
    pub complete: bool,
    /// The error that stopped it, if any (memory holds the last committed
    /// checkpoint).
    pub error: Option<ReceiveError>,
}

impl RestoreReport {
    fn new() -> RestoreReport {
        RestoreReport {
            checkpoints: 0,
            last: None,
            complete: false,
            error: None,
        }
    }

    fn committed(&mut self, info: CheckpointInfo) {
        self.checkpoints += 1;
        self.last = Some(CheckpointInfo {
            toolstack: Vec::new(),
            ..info
        });
    }
}

/// How big the image `ckpt restore` writes is: the backup decides, never
/// the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageSize {
    /// An existing image keeps its size; a new one gets the stream's guest
    /// size, which must be within the limits' `max_guest_pages`.
    Configured,
    /// The image has exactly this many pages (an existing one must already
    /// have them).
    Pages(u64),
}

/// Refuses a stream of another format than `expect`, when one is given.
fn check_format<R: std::io::Read>(
    rx: &Receiver<R>,
    stream: &Path,
    expect: Option<Format>,
) -> Result<(), LabError> {
    match expect {
        Some(f) if f != rx.format() => Err(LabError::Invalid(format!(
            "{}: a {} stream, not {f}",
            stream.display(),
            rx.format()
        ))),
        _ => Ok(()),
    }
}

/// Commits a stream file (of either format; `expect` refuses the other) to
/// an image file, checkpoint by checkpoint, each verified before it touches
/// the image; `each` hears of every committed checkpoint. A stream whose
/// guest is larger than the image (an existing one, or the size given) is
/// refused before anything is written, and a new image is created only once
/// the stream's header has been accepted.
pub fn restore(
    stream: &Path,
    image: &Path,
    size: ImageSize,
    limits: Limits,
    codec: Codec,
    expect: Option<Format>,
    each: &mut dyn FnMut(&CheckpointInfo) -> std::io::Result<()>,
) -> Result<RestoreReport, LabError> {
    // An existing image is opened (and checked) first: its size decides.
    let existing = match ImageFile::existing_pages(image).map_err(LabError::Io)? {
        Some(_) => Some(ImageFile::open_existing(image).map_err(LabError::Io)?),
        None => None,
    };
    let have = existing.as_ref().map(GuestMemory::pages);
    let pages = match (have, size) {
        (Some(have), ImageSize::Pages(want)) if have != want => {
            return Err(LabError::Invalid(format!(
                "{} holds {have} pages, not the {want} asked for",
                image.display()
            )))
        }
        (Some(n), _) | (None, ImageSize::Pages(n)) => Some(n),
        (None, ImageSize::Configured) => None,
    };
    // The receiver refuses a header claiming more than the image holds,
    // or, for an image still to be created, more than the limit.
    let limits = Limits {
        max_guest_pages: pages.unwrap_or(limits.max_guest_pages),
        ..limits
    };
    let file = File::open(stream).map_err(|e| LabError::file(stream, e))?;
    let mut rx = match (Receiver::new(file, limits, codec), have) {
        (Err(ReceiveError::Stream(StreamError::GuestTooLarge { guest_pages, .. })), Some(have)) => {
            return Err(LabError::Invalid(format!(
                "{} holds {have} pages; the stream is for a guest of {guest_pages}",
                image.display()
            )))
        }
        (rx, _) => rx?,
    };
    check_format(&rx, stream, expect)?;
    let mut memory = match (existing, pages) {
        (Some(m), _) => m,
        (None, Some(n)) => ImageFile::create(image, n).map_err(LabError::Io)?,
        (None, None) => ImageFile::create(image, rx.guest_pages()).map_err(LabError::Io)?,
    };
    let mut report = RestoreReport::new();
    loop {
        match rx.next_checkpoint(&mut memory) {
            Ok(Some(info)) => {
                each(&info)?;
                report.committed(info);
            }
            Ok(None) => {
                report.complete = true;
                break;
            }
            Err(e) => {
                report.error = Some(e);
                break;
            }
        }
    }
    Ok(report)
}

/// One line of `ckpt inspect` for an event of the stream.
pub fn event_line(e: &Event) -> String {
    match e {
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
        } => format!("{offset:>12}    PFN batch: {entries} entries, {data} with data"),
        Event::Compressed { offset, len } => {
            format!("{offset:>12}    COMPRESSED_DATA: {len} bytes")
        }
        Event::EnableCompression { offset } => format!("{offset:>12}    ENABLE_COMPRESSION"),
        Event::Toolstack { offset, id } => format!("{offset:>12}    toolstack chunk {id}"),
        Event::Trailer { offset, trailer } => format!(
            "{offset:>12}    trailer: {} pages, digest {:032x}",
            trailer.data_pages, trailer.digest
        ),
        Event::Heartbeat { offset, heartbeat } => format!(
            "{offset:>12}  heartbeat {} (before checkpoint {})",
            heartbeat.number, heartbeat.next_seq
        ),
        Event::End {
            offset,
            checkpoints,
        } => format!("{offset:>12}  end of stream after {checkpoints} checkpoints"),
        Event::Verified { offset, seq } => {
            format!("{offset:>12}    checkpoint {seq} verified: page digest matches")
        }
        Event::Record {
            offset,
            ty,
            len,
            info,
        } => {
            let what = match info {
                RecordInfo::PageData { entries, data } => {
                    format!(": {entries} entries, {data} pages")
                }
                RecordInfo::CompressedPageData {
                    entries,
                    data,
                    encoded_len,
                    zstd,
                    payload_len,
                } => {
                    if *zstd {
                        format!(": {entries} entries, {data} pages, {encoded_len} bytes of encodings in {payload_len} bytes of zstd")
                    } else {
                        format!(
                            ": {entries} entries, {data} pages, {encoded_len} bytes of encodings"
                        )
                    }
                }
                RecordInfo::Toolstack { id } => format!(": chunk {id}"),
                RecordInfo::Integrity(i) => format!(
                    ": checkpoint {}, {} pages, digest {:032x}, check verified",
                    i.seq, i.data_pages, i.digest
                ),
                RecordInfo::End { checkpoints } => {
                    format!(": end of stream after {checkpoints} checkpoints")
                }
                RecordInfo::Skipped => " (skipped)".into(),
                _ => String::new(),
            };
            let indent = if *ty == ckpt_engine::stream::records::REC_END {
                "  "
            } else {
                "    "
            };
            format!(
                "{offset:>12}{indent}{} [{ty:#010x}, {len} bytes]{what}",
                record_name(*ty)
            )
        }
        other => format!("{other:?}"),
    }
}

/// The line `ckpt inspect` opens with: the stream's format and header.
fn header_line<R: std::io::Read>(rx: &Receiver<R>) -> String {
    match rx.record_headers() {
        None => format!(
            "legacy stream (version 2): guest of {} pages, stream id {:032x}",
            rx.guest_pages(),
            rx.header().stream_id
        ),
        Some((domain, info)) => format!(
            "record stream (Xen v3, domain type {}, Xen {}.{}): guest of {} pages, stream id {:032x}, {}",
            domain.domain_type,
            domain.xen_major,
            domain.xen_minor,
            info.guest_pages,
            info.stream_id,
            match info.zstd_level {
                Some(l) => format!("zstd stage at level {l}"),
                None => "no zstd stage".into(),
            }
        ),
    }
}

/// Lists a stream's frames and chunks (or records) with their offsets and
/// sizes as they are read, verifying every checkpoint (committed to an in-memory guest).
/// Nothing is kept per checkpoint, so a stream of any length costs the
/// same memory.
pub fn inspect(
    stream: &Path,
    limits: Limits,
    codec: Codec,
    expect: Option<Format>,
    out: &mut dyn Write,
) -> Result<RestoreReport, LabError> {
    let file = File::open(stream).map_err(|e| LabError::file(stream, e))?;
    let mut rx = Receiver::new(file, limits, codec)?;
    check_format(&rx, stream, expect)?;
    writeln!(out, "{}", header_line(&rx))?;
    let mut memory = SparseMemory::new(rx.guest_pages());
    let mut report = RestoreReport::new();
    let mut write_error = None;
    loop {
        let mut observe = |e: &Event| {
            if write_error.is_none() {
                if let Err(err) = writeln!(out, "{}", event_line(e)) {
                    write_error = Some(err);
                }
            }
        };
        let r = rx.next_checkpoint_observed(&mut memory, &mut observe);
        if let Some(e) = write_error.take() {
            return Err(e.into());
        }
        match r {
            Ok(Some(info)) => {
                writeln!(
                    out,
                    "checkpoint {} verified: {} entries, {} pages ({} full, {} delta, {} empty), {} payload bytes, frame {} bytes",
                    info.seq, info.entries, info.data_pages, info.full, info.delta, info.empty,
                    info.payload_bytes, info.frame_bytes
                )?;
                report.committed(info);
            }
            Ok(None) => {
                report.complete = true;
                break;
            }
            Err(e) => {
                report.error = Some(e);
                break;
            }
        }
    }
    Ok(report)
}

//! `ckpt convert`: a stream in one wire format rewritten in another,
//! checkpoint for checkpoint.
//!
//! - legacy (`docs/STREAM.md`, Format A and B bodies) to records
//!   (`docs/RECORDS.md`) and back: the page encodings are carried as they
//!   are (through the zstd stage or out of it), so pages, digests and the
//!   stream's identity stay the same. A legacy body's PFN batches and
//!   COMPRESSED_DATA chunks are regrouped so that each compressed page
//!   record holds the entries that arrived with its chunk; a stream the
//!   sender wrote comes back byte for byte.
//! - either to a plain Xen stream (`--to xen`): image header, domain
//!   header, STATIC_DATA_END, then per checkpoint PAGE_DATA records of raw
//!   pages and CHECKPOINT, then END. Compressed pages are decoded against
//!   the memory the earlier checkpoints built (each checkpoint verified
//!   first, as a receiver does); toolstack chunks and the project's records
//!   have no place in it and are counted, not carried.

use crate::LabError;
use ckpt_engine::stream::records::{
    compress_frame, DomainHeader, RecordReader, RecordWriter, StreamInfo,
};
use ckpt_engine::stream::{Body, StreamError, StreamHeader, StreamReader, StreamWriter};
use ckpt_engine::{Codec, Format, GuestMemory, Limits, PageType, Receiver, SparseMemory};
use ckpt_simd::{Page, PAGE_SIZE};
use std::io::{self, Read, Write};

/// What a stream is converted into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The legacy stream.
    Legacy,
    /// The record stream, its page records through zstd at this level or
    /// (`None`) as they are.
    Records {
        /// zstd level of the stage.
        zstd_level: Option<i32>,
    },
    /// A plain Xen v3 stream: PAGE_DATA and CHECKPOINT only.
    Xen,
}

/// What a conversion did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertReport {
    /// The input's format.
    pub from: Format,
    /// Checkpoints converted.
    pub checkpoints: u64,
    /// Bytes written.
    pub output_bytes: u64,
    /// Toolstack chunks the target has no place for (a plain Xen stream).
    pub toolstack_dropped: u64,
}

/// Counts the bytes that pass.
struct Counted<W> {
    w: W,
    n: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.w.write(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

type Peeked<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// The input's reader, of the format its first bytes show.
enum Input<R: Read> {
    Legacy(StreamReader<Peeked<R>>),
    Records(RecordReader<Peeked<R>>),
}

impl<R: Read> Input<R> {
    fn open(mut r: R, limits: Limits) -> Result<Input<R>, LabError> {
        let mut first = Vec::with_capacity(8);
        (&mut r).take(8).read_to_end(&mut first)?;
        let records = ckpt_engine::stream::records::ImageHeader::is_marker(&first);
        let peeked = io::Cursor::new(first).chain(r);
        let stream = |e: StreamError| LabError::Receive(e.into());
        Ok(if records {
            Input::Records(RecordReader::new(peeked, limits).map_err(stream)?)
        } else {
            Input::Legacy(StreamReader::new(peeked, limits).map_err(stream)?)
        })
    }

    fn header(&self) -> StreamHeader {
        match self {
            Input::Legacy(r) => *r.header(),
            Input::Records(r) => *r.header(),
        }
    }

    fn read(&mut self, body: &mut Body) -> Result<bool, LabError> {
        let r = match self {
            Input::Legacy(r) => r.read_checkpoint(body, &mut |_| {}),
            Input::Records(r) => r.read_checkpoint(body, &mut |_| {}),
        };
        r.map_err(|e| LabError::Receive(e.into()))
    }
}

/// The output's writer.
enum Output<W: Write> {
    Legacy(StreamWriter<W>),
    Records(RecordWriter<W>, Option<i32>),
}

impl<W: Write> Output<W> {
    fn raw_batch<'p>(
        &mut self,
        entries: &[u64],
        pages: impl IntoIterator<Item = &'p Page>,
    ) -> io::Result<()> {
        match self {
            Output::Legacy(w) => w.pfn_batch_with_data(entries, pages),
            Output::Records(w, _) => w.page_data(entries, pages),
        }
    }

    /// Entries and the page encodings of their data-carrying ones.
    fn compressed(
        &mut self,
        entries: &[u64],
        encodings: &[u8],
        scratch: &mut Vec<u8>,
    ) -> io::Result<()> {
        match self {
            Output::Legacy(w) => {
                w.pfn_batches(entries)?;
                if !encodings.is_empty() {
                    w.compressed_chunk(encodings.len() as u64, [encodings])?;
                }
                Ok(())
            }
            Output::Records(w, level) => {
                let len = encodings.len() as u64;
                if let (Some(level), false) = (level, encodings.is_empty()) {
                    scratch.clear();
                    compress_frame(*level, encodings.len(), [encodings], scratch)?;
                    if (scratch.len() as u64) < len {
                        return w.compressed_page_data(
                            entries,
                            len,
                            true,
                            scratch.len() as u64,
                            [&scratch[..]],
                        );
                    }
                }
                w.compressed_page_data(entries, len, false, len, [encodings])
            }
        }
    }

    fn toolstack_chunk(&mut self, id: i32, payload: &[u8]) -> io::Result<()> {
        match self {
            Output::Legacy(w) => w.toolstack_chunk(id, payload),
            Output::Records(w, _) => w.toolstack_chunk(id, payload),
        }
    }

    fn enable_compression(&mut self) -> io::Result<()> {
        match self {
            Output::Legacy(w) => w.enable_compression(),
            Output::Records(w, _) => w.enable_compression(),
        }
    }

    fn end_checkpoint(&mut self, data_pages: u64, digest: u128) -> io::Result<()> {
        match self {
            Output::Legacy(w) => w.end_checkpoint(data_pages, digest),
            Output::Records(w, _) => w.end_checkpoint(data_pages, digest),
        }
    }

    fn begin_checkpoint(&mut self) -> io::Result<()> {
        match self {
            Output::Legacy(w) => w.begin_checkpoint(),
            Output::Records(w, _) => w.begin_checkpoint(),
        }
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Output::Legacy(w) => w.finish(),
            Output::Records(w, _) => w.finish(),
        }
    }
}

fn carries_data(entry: u64) -> bool {
    PageType::from_code((entry >> 28) as u8 & 0xF).is_some_and(|t| t.carries_data())
}

/// Converts the stream read from `input` into `target`, written to
/// `output`; returns the output and what was done. Every checkpoint is
/// checked as a receiver checks it (its frame or records, its page
/// encodings; for `Target::Xen` its digest too) before it is written.
pub fn convert<R: Read, W: Write>(
    input: R,
    output: W,
    target: Target,
    limits: Limits,
    codec: Codec,
) -> Result<(W, ConvertReport), LabError> {
    if target == Target::Xen {
        return to_xen(input, output, limits, codec);
    }
    let mut input = Input::open(input, limits)?;
    let header = input.header();
    let from = match input {
        Input::Legacy(_) => Format::Legacy,
        Input::Records(_) => Format::Records,
    };
    let counted = Counted { w: output, n: 0 };
    let mut out = match target {
        Target::Legacy => Output::Legacy(StreamWriter::new(counted, &header)?),
        Target::Records { zstd_level } => Output::Records(
            RecordWriter::new(
                counted,
                &StreamInfo {
                    guest_pages: header.guest_pages,
                    stream_id: header.stream_id,
                    zstd_level,
                },
            )?,
            zstd_level,
        ),
        Target::Xen => unreachable!("handled above"),
    };
    let mut body = Body::default();
    let mut scratch = Vec::new();
    let mut report = ConvertReport {
        from,
        ..ConvertReport::default()
    };
    while input.read(&mut body)? {
        convert_body(&body, &mut out, &mut scratch)?;
        report.checkpoints += 1;
    }
    let counted = out.finish()?;
    report.output_bytes = counted.n;
    Ok((counted.w, report))
}

/// Writes one checkpoint read from either format into `out`.
fn convert_body<W: Write>(
    body: &Body,
    out: &mut Output<W>,
    scratch: &mut Vec<u8>,
) -> Result<(), LabError> {
    let trailer = body
        .trailer
        .expect("a checkpoint read whole has its trailer");
    out.begin_checkpoint()?;
    // The page encodings' lengths, and the rules that pair them with the
    // entries: the same walk a receiver's verify pass makes.
    let mut lengths = Vec::with_capacity(body.data_pfns.len());
    body.walk_pages(|_, _, data| match data {
        ckpt_engine::stream::PageAt::Raw(_) => Ok(PAGE_SIZE),
        ckpt_engine::stream::PageAt::Encoded { input, offset } => {
            let k = lengths.len() as u64;
            let (_, n) = ckpt_simd::validate(input).map_err(|source| StreamError::BadPage {
                offset,
                page: k,
                source,
            })?;
            lengths.push(n);
            Ok(n)
        }
    })
    .map_err(|e| LabError::Receive(e.into()))?;
    if !body.compressed {
        // Format A: the batches as they came, each with its pages.
        let (mut next, mut first) = (0usize, 0usize);
        for &n in &body.batches {
            let group = &body.entries[first..first + n as usize];
            first += n as usize;
            let data = group.iter().filter(|&&e| carries_data(e)).count();
            let pages = body.payload[next * PAGE_SIZE..(next + data) * PAGE_SIZE]
                .chunks_exact(PAGE_SIZE)
                .map(|p| <&Page>::try_from(p).expect("a page"));
            out.raw_batch(group, pages)?;
            next += data;
        }
    } else {
        // Format B: each chunk with the entries that arrived before it,
        // through its last page's entry.
        let mut entry = 0usize; // entries written so far
        let mut page = 0usize; // pages written so far
        for chunk in &body.chunks {
            let (mut at, mut k) = (chunk.start, 0);
            while at < chunk.end {
                at += lengths[page + k];
                k += 1;
            }
            if k == 0 {
                continue;
            }
            // Through the entry of the chunk's last page ...
            let mut end = entry;
            let mut data = 0;
            while data < k {
                data += carries_data(body.entries[end]) as usize;
                end += 1;
            }
            // ... and the entries without data that arrived with it.
            while end < chunk.entries as usize && !carries_data(body.entries[end]) {
                end += 1;
            }
            out.compressed(
                &body.entries[entry..end],
                &body.payload[chunk.start..chunk.end],
                scratch,
            )?;
            entry = end;
            page += k;
        }
        if entry < body.entries.len() {
            out.compressed(&body.entries[entry..], &[], scratch)?;
        }
    }
    for t in &body.toolstack {
        out.toolstack_chunk(t.id, &t.payload)?;
    }
    if body.enables_compression {
        out.enable_compression()?;
    }
    out.end_checkpoint(trailer.data_pages, trailer.digest)?;
    Ok(())
}

/// The plain Xen export: each checkpoint verified and committed to memory
/// as a receiver would, then written whole as PAGE_DATA records.
fn to_xen<R: Read, W: Write>(
    input: R,
    output: W,
    limits: Limits,
    codec: Codec,
) -> Result<(W, ConvertReport), LabError> {
    let mut rx = Receiver::new(input, limits, codec)?;
    let mut memory = SparseMemory::new(rx.guest_pages());
    let mut out = RecordWriter::plain(Counted { w: output, n: 0 }, &DomainHeader::default())?;
    let mut report = ConvertReport {
        from: rx.format(),
        ..ConvertReport::default()
    };
    while let Some(info) = rx.next_checkpoint(&mut memory)? {
        for group in rx
            .entries()
            .chunks(ckpt_engine::stream::records::MAX_PAGE_DATA)
        {
            let pages = group
                .iter()
                .filter(|&&e| carries_data(e))
                .map(|&e| memory.page(e & ckpt_engine::page::PFN_MASK));
            out.page_data(group, pages)?;
        }
        out.end_checkpoint(info.data_pages, info.digest)?;
        report.toolstack_dropped += info.toolstack.len() as u64;
        report.checkpoints += 1;
    }
    let counted = out.finish()?;
    report.output_bytes = counted.n;
    Ok((counted.w, report))
}

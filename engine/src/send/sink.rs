//! The seam between the send pipeline and the wire: the writer stage drives
//! a [`Sink`], which writes either format with the same calls — the legacy
//! stream of `docs/STREAM.md` or the record stream of `docs/RECORDS.md`.
//! What goes in a checkpoint (entries, chunks, toolstack chunks) is the
//! pipeline's to decide; how it is framed is the sink's.

use super::encode::Chunk;
use super::ring::StagingRing;
use crate::stream::records::{RecordWriter, StreamInfo};
use crate::stream::{Format, StreamHeader, StreamWriter, END_LEN, HEADER_LEN};
use ckpt_simd::Page;
use std::io::{self, Write};

/// A stream being written, in either format.
pub(crate) enum Sink<W: Write> {
    Legacy(StreamWriter<W>),
    Records(RecordWriter<W>),
}

/// What one chunk cost on the wire.
pub(crate) struct ChunkBytes {
    /// Page-data bytes written (the zstd frames, or the encodings).
    pub(crate) payload: u64,
    /// Bytes of the encodings before the zstd stage.
    pub(crate) encoded: u64,
}

impl<W: Write> Sink<W> {
    /// Starts a stream in `format` (the zstd stage only for records).
    pub(crate) fn new(
        out: W,
        header: &StreamHeader,
        format: Format,
        zstd_level: Option<i32>,
    ) -> io::Result<Sink<W>> {
        Ok(match format {
            Format::Legacy => Sink::Legacy(StreamWriter::new(out, header)?),
            Format::Records => Sink::Records(RecordWriter::new(
                out,
                &StreamInfo {
                    guest_pages: header.guest_pages,
                    stream_id: header.stream_id,
                    zstd_level,
                },
            )?),
        })
    }

    /// Bytes a stream of `format` spends outside every checkpoint: its
    /// headers and its end.
    pub(crate) fn framing_bytes(format: Format) -> u64 {
        use crate::stream::records::{
            DOMAIN_HEADER_LEN, IMAGE_HEADER_LEN, RECORD_HEADER_LEN, STREAM_INFO_LEN,
        };
        match format {
            Format::Legacy => (HEADER_LEN + END_LEN) as u64,
            // Both headers, CKPT_STREAM_INFO, STATIC_DATA_END, END.
            Format::Records => {
                (IMAGE_HEADER_LEN + DOMAIN_HEADER_LEN + 3 * RECORD_HEADER_LEN + STREAM_INFO_LEN)
                    as u64
            }
        }
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        match self {
            Sink::Legacy(w) => w.written(),
            Sink::Records(w) => w.written(),
        }
    }

    pub(crate) fn begin_checkpoint(&mut self) -> io::Result<()> {
        match self {
            Sink::Legacy(w) => w.begin_checkpoint(),
            Sink::Records(w) => w.begin_checkpoint(),
        }
    }

    /// PFN entries none of which carries data, in a checkpoint that is
    /// `compressed` (Format B) or not.
    pub(crate) fn entries(&mut self, entries: &[u64], compressed: bool) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        match self {
            Sink::Legacy(w) => w.pfn_batches(entries),
            Sink::Records(w) if compressed => {
                w.compressed_page_data(entries, 0, false, 0, std::iter::empty())
            }
            Sink::Records(w) => w.page_data(entries, std::iter::empty()),
        }
    }

    /// A Format A batch of at most 1024 entries and its pages.
    pub(crate) fn raw_batch<'p>(
        &mut self,
        entries: &[u64],
        pages: impl IntoIterator<Item = &'p Page>,
    ) -> io::Result<()> {
        match self {
            Sink::Legacy(w) => w.pfn_batch_with_data(entries, pages),
            Sink::Records(w) => w.page_data(entries, pages),
        }
    }

    /// PFN entries and the compressed chunk of their pages (Format B). A
    /// record stream sends the chunk's zstd frames when it has them and
    /// they are smaller than the encodings.
    pub(crate) fn chunk(
        &mut self,
        entries: &[u64],
        chunk: &Chunk,
        ring: &StagingRing,
    ) -> io::Result<ChunkBytes> {
        let encoded = chunk.len() as u64;
        match self {
            Sink::Legacy(w) => {
                w.pfn_batches(entries)?;
                w.compressed_chunk(encoded, chunk.pieces(ring))?;
                Ok(ChunkBytes {
                    payload: encoded,
                    encoded,
                })
            }
            Sink::Records(w) => {
                let framed = chunk.frames_len() as u64;
                if !chunk.frames().is_empty() && framed < encoded {
                    let frames = chunk.frames().iter().map(Vec::as_slice);
                    w.compressed_page_data(entries, encoded, true, framed, frames)?;
                    Ok(ChunkBytes {
                        payload: framed,
                        encoded,
                    })
                } else {
                    w.compressed_page_data(entries, encoded, false, encoded, chunk.pieces(ring))?;
                    Ok(ChunkBytes {
                        payload: encoded,
                        encoded,
                    })
                }
            }
        }
    }

    pub(crate) fn toolstack_chunk(&mut self, id: i32, payload: &[u8]) -> io::Result<()> {
        match self {
            Sink::Legacy(w) => w.toolstack_chunk(id, payload),
            Sink::Records(w) => w.toolstack_chunk(id, payload),
        }
    }

    pub(crate) fn enable_compression(&mut self) -> io::Result<()> {
        match self {
            Sink::Legacy(w) => w.enable_compression(),
            Sink::Records(w) => w.enable_compression(),
        }
    }

    pub(crate) fn end_checkpoint(&mut self, data_pages: u64, digest: u128) -> io::Result<()> {
        match self {
            Sink::Legacy(w) => w.end_checkpoint(data_pages, digest),
            Sink::Records(w) => w.end_checkpoint(data_pages, digest),
        }
    }

    /// Writes the end of the stream and returns the output.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Sink::Legacy(w) => w.finish(),
            Sink::Records(w) => w.finish(),
        }
    }

    /// Bytes the end of the stream adds.
    pub(crate) fn end_len(&self) -> u64 {
        match self {
            Sink::Legacy(_) => END_LEN as u64,
            Sink::Records(_) => crate::stream::records::RECORD_HEADER_LEN as u64,
        }
    }
}

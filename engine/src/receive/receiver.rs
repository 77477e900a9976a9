//! The backup's receiver: reads a checkpoint stream from any [`Read`] —
//! the legacy stream (`docs/STREAM.md`) or the record stream
//! (`docs/RECORDS.md`), told apart by their first eight bytes — and commits
//! each checkpoint to [`GuestMemory`] only when the whole checkpoint has
//! arrived, every rule has been checked and its digest matches what
//! committing it would produce. Both readers fill the same [`Body`], so
//! verifying and committing is one code path.
//!
//! Each page encoding is walked twice at most: once to verify (decoded into
//! a scratch page, hashed, nothing written) and once to apply. A checkpoint
//! that fails leaves memory exactly as the last complete checkpoint left it.

use super::verified::PageRef;
use super::{Commit, GuestMemory, VerifiedCheckpoint};
use crate::stream::records::{DomainHeader, ImageHeader, RecordReader, StreamInfo};
use crate::stream::{
    page_fingerprint, Body, Digest, Event, Format, Limits, PageAt, StreamError, StreamHeader,
    StreamReader, ToolstackChunk,
};
use ckpt_simd::{Codec, DecodeError, Form, Page, FULL_ENCODED_LEN, PAGE_SIZE};
use std::io::{self, Read};
use thiserror::Error;

/// Why a checkpoint was not committed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The stream broke a rule of its format.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The stream is for a guest larger than the memory it is applied to.
    #[error("stream is for {claimed} pages but guest memory has {memory}")]
    GuestTooLarge {
        /// Pages the header claims.
        claimed: u64,
        /// Pages of the memory.
        memory: u64,
    },
    /// The pages would not reproduce the sender's checkpoint.
    #[error("checkpoint {seq} (trailer at offset {offset}): digest mismatch, the pages would not reproduce the sender's (sender {expected:032x}, received {computed:032x})")]
    DigestMismatch {
        /// Offset of the trailer.
        offset: u64,
        /// Checkpoint.
        seq: u64,
        /// The trailer's digest.
        expected: u128,
        /// The digest of what would be applied.
        computed: u128,
    },
    /// The memory could not commit the checkpoint.
    #[error("cannot commit checkpoint {seq} to guest memory: {source}")]
    Commit {
        /// Checkpoint.
        seq: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl From<ReceiveError> for io::Error {
    fn from(e: ReceiveError) -> io::Error {
        match e {
            ReceiveError::Stream(s) => s.into(),
            ReceiveError::Commit { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// A checkpoint that was received, verified and committed.
#[derive(Debug, Clone, Default)]
pub struct CheckpointInfo {
    /// Sequence number.
    pub seq: u64,
    /// Whether the body was compressed (Format B).
    pub compressed: bool,
    /// PFN entries.
    pub entries: u64,
    /// Entries that carried data (pages applied).
    pub data_pages: u64,
    /// Pages sent whole (FULL or Format A).
    pub full: u64,
    /// Pages unchanged (EMPTY).
    pub empty: u64,
    /// Pages sent as deltas.
    pub delta: u64,
    /// Bytes of page data received (encodings or raw pages).
    pub payload_bytes: u64,
    /// Bytes of the whole checkpoint frame.
    pub frame_bytes: u64,
    /// The checkpoint's page digest.
    pub digest: u128,
    /// Toolstack chunks, in order.
    pub toolstack: Vec<ToolstackChunk>,
}

/// The input with its first bytes, read to tell the format, put back.
type Peeked<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// The reader of the format the stream turned out to have.
enum Source<R> {
    Legacy(StreamReader<Peeked<R>>),
    Records(RecordReader<Peeked<R>>),
}

impl<R: Read> Source<R> {
    /// Reads the first eight bytes (fewer if the input ends), picks the
    /// reader they call for and lets it read the header from the start.
    fn open(mut reader: R, limits: Limits) -> Result<Source<R>, StreamError> {
        let mut first = [0u8; 8];
        let mut n = 0;
        while n < first.len() {
            match reader.read(&mut first[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(StreamError::Io {
                        offset: n as u64,
                        source,
                    })
                }
            }
        }
        let peeked = io::Cursor::new(first[..n].to_vec()).chain(reader);
        Ok(if ImageHeader::is_marker(&first[..n]) {
            Source::Records(RecordReader::new(peeked, limits)?)
        } else {
            Source::Legacy(StreamReader::new(peeked, limits)?)
        })
    }

    fn header(&self) -> &StreamHeader {
        match self {
            Source::Legacy(r) => r.header(),
            Source::Records(r) => r.header(),
        }
    }

    fn offset(&self) -> u64 {
        match self {
            Source::Legacy(r) => r.offset(),
            Source::Records(r) => r.offset(),
        }
    }

    fn read_checkpoint(
        &mut self,
        body: &mut Body,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<bool, StreamError> {
        match self {
            Source::Legacy(r) => r.read_checkpoint(body, observe),
            Source::Records(r) => r.read_checkpoint(body, observe),
        }
    }
}

/// Reads a checkpoint stream and commits verified checkpoints.
pub struct Receiver<R> {
    reader: Source<R>,
    codec: Codec,
    body: Body,
    pages: Vec<PageRef>,
    scratch: Box<Page>,
}

impl<R: Read> Receiver<R> {
    /// Reads and checks the stream's header (either format's).
    pub fn new(reader: R, limits: Limits, codec: Codec) -> Result<Self, ReceiveError> {
        Ok(Receiver {
            reader: Source::open(reader, limits)?,
            codec,
            body: Body::default(),
            pages: Vec::new(),
            scratch: Box::new([0u8; PAGE_SIZE]),
        })
    }

    /// The stream's header.
    pub fn header(&self) -> &StreamHeader {
        self.reader.header()
    }

    /// Pages of the guest the stream is for.
    pub fn guest_pages(&self) -> u64 {
        self.reader.header().guest_pages
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.reader.offset()
    }

    /// The stream's wire format.
    pub fn format(&self) -> Format {
        match self.reader {
            Source::Legacy(_) => Format::Legacy,
            Source::Records(_) => Format::Records,
        }
    }

    /// A record stream's domain header and CKPT_STREAM_INFO (its zstd
    /// stage among them); `None` for a legacy stream.
    pub fn record_headers(&self) -> Option<(&DomainHeader, &StreamInfo)> {
        match &self.reader {
            Source::Legacy(_) => None,
            Source::Records(r) => Some((r.domain(), r.info())),
        }
    }

    /// The PFN entries (type in bits 28..31, PFN in bits 0..27) of the
    /// checkpoint last read, in send order, until the next is read.
    pub fn entries(&self) -> &[u64] {
        &self.body.entries
    }

    /// Receives, verifies and commits the next checkpoint; `None` at the
    /// end of the stream.
    pub fn next_checkpoint(
        &mut self,
        memory: &mut dyn GuestMemory,
    ) -> Result<Option<CheckpointInfo>, ReceiveError> {
        self.next_checkpoint_observed(memory, &mut |_| {})
    }

    /// As [`Receiver::next_checkpoint`], reporting what it reads to
    /// `observe`.
    pub fn next_checkpoint_observed(
        &mut self,
        memory: &mut dyn GuestMemory,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<Option<CheckpointInfo>, ReceiveError> {
        let claimed = self.guest_pages();
        if memory.pages() < claimed {
            return Err(ReceiveError::GuestTooLarge {
                claimed,
                memory: memory.pages(),
            });
        }
        if !self.reader.read_checkpoint(&mut self.body, observe)? {
            return Ok(None);
        }
        let mut info = self.verify(memory)?;
        observe(&Event::Verified {
            offset: self.body.trailer_offset,
            seq: self.body.seq,
        });
        self.apply(memory, &mut info)?;
        Ok(Some(info))
    }

    /// The one verify pass: walks every page, decoding deltas into a
    /// scratch page, and compares the digest of what committing would
    /// produce with the trailer's. Writes nothing.
    fn verify(&mut self, memory: &dyn GuestMemory) -> Result<CheckpointInfo, ReceiveError> {
        let body = &self.body;
        let trailer = body.trailer.expect("a read checkpoint has its trailer");
        let payload_start = body.payload.as_ptr() as usize;
        let codec = self.codec;
        let scratch = &mut self.scratch;
        let pages = &mut self.pages;
        pages.clear();
        let mut digest = Digest::new();
        let mut info = CheckpointInfo {
            seq: body.seq,
            compressed: body.compressed,
            entries: body.entries.len() as u64,
            data_pages: body.data_pfns.len() as u64,
            payload_bytes: body.payload.len() as u64,
            frame_bytes: body.frame_len,
            digest: trailer.digest,
            ..Default::default()
        };
        body.walk_pages(|k, pfn, data| {
            let (input, offset) = match data {
                PageAt::Raw(page) => {
                    digest.add_page(&codec, pfn, page);
                    let at = page.as_ptr() as usize - payload_start;
                    pages.push(PageRef {
                        pfn,
                        at,
                        end: at + PAGE_SIZE,
                        form: Form::Full,
                    });
                    info.full += 1;
                    return Ok(PAGE_SIZE);
                }
                PageAt::Encoded { input, offset } => (input, offset),
            };
            let bad = |source| StreamError::BadPage {
                offset,
                page: k as u64,
                source,
            };
            let at = input.as_ptr() as usize - payload_start;
            let form = Form::of_first_byte(input[0]);
            let (hash, used) = match form {
                Form::Empty => {
                    info.empty += 1;
                    (page_fingerprint(&codec, memory.page(pfn)), 1)
                }
                Form::Full => {
                    let data =
                        input
                            .get(1..FULL_ENCODED_LEN)
                            .ok_or(bad(DecodeError::TruncatedFull {
                                available: input.len() - 1,
                            }))?;
                    info.full += 1;
                    let page: &Page = data.try_into().expect("PAGE_SIZE bytes");
                    (page_fingerprint(&codec, page), FULL_ENCODED_LEN)
                }
                Form::Delta => {
                    info.delta += 1;
                    scratch.copy_from_slice(memory.page(pfn));
                    let used = codec.decode(input, scratch).map_err(bad)?;
                    (page_fingerprint(&codec, scratch), used)
                }
            };
            // FULL is kept as its data, as a raw Format A page is; the
            // others as their encodings, whose length is now known.
            let at = if form == Form::Full { at + 1 } else { at };
            pages.push(PageRef {
                pfn,
                at,
                end: if form == Form::Full {
                    at + PAGE_SIZE
                } else {
                    at + used
                },
                form,
            });
            digest.add(pfn, hash);
            Ok(used)
        })?;
        let computed = digest.finish();
        if computed != trailer.digest {
            return Err(ReceiveError::DigestMismatch {
                offset: body.trailer_offset,
                seq: body.seq,
                expected: trailer.digest,
                computed,
            });
        }
        Ok(info)
    }

    /// Commits the verified checkpoint to memory in one call: the apply
    /// pass (or, for a memory that keeps encodings, the journal's).
    fn apply(
        &mut self,
        memory: &mut dyn GuestMemory,
        info: &mut CheckpointInfo,
    ) -> Result<(), ReceiveError> {
        let header = self.reader.header();
        let commit = Commit {
            stream_id: header.stream_id,
            guest_pages: header.guest_pages,
            seq: self.body.seq,
            digest: info.digest,
        };
        let failed = |source| ReceiveError::Commit {
            seq: commit.seq,
            source,
        };
        let checkpoint = VerifiedCheckpoint::new(
            commit,
            self.codec,
            &self.body.payload,
            &self.pages,
            &self.body.data_pfns,
            &self.body.batch_ends,
        );
        memory.commit_checkpoint(&checkpoint).map_err(failed)?;
        info.toolstack = std::mem::take(&mut self.body.toolstack);
        Ok(())
    }
}

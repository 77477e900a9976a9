//! The backup's side: reads a checkpoint stream (`docs/STREAM.md`, with the
//! legacy body of `FORMAT.md` §4) from any [`Read`] and applies each
//! checkpoint to [`GuestMemory`] only when the whole checkpoint has arrived,
//! every rule has been checked and its digest matches.
//!
//! The input is untrusted. Every length is checked against the configured
//! limits before anything is allocated, buffers grow only with bytes that
//! actually arrive, and each malformed input gets a [`ReceiveError`] naming
//! its offset and the rule it broke. A checkpoint that fails leaves memory
//! exactly as the last complete checkpoint left it.

use crate::config::ReceiverConfig;
use crate::memory::GuestMemory;
use crate::page::{PageType, PFN_LIMIT, PFN_MASK, TYPE_SHIFT};
use crate::stream::{
    foreign_payload_len, page_hash, Digest, ForeignChunk, StreamHeader, Trailer,
    CHUNK_COMPRESSED_DATA, CHUNK_ENABLE_COMPRESSION, CHUNK_END, HEADER_LEN, MAX_BATCH,
    STREAM_MAGIC, STREAM_VERSION, TAG_CHECKPOINT, TAG_END, TRAILER_LEN,
};
use ckpt_simd::{validate, Codec, DecodeError, Form, Page, PAGE_SIZE};
use std::io::{self, BufReader, Read};
use thiserror::Error;

/// Why a stream or checkpoint was rejected. Offsets count from the start of
/// the stream.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// Reading failed for a reason other than the end of the input.
    #[error("read failed at offset {offset}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// The input ended in the middle of something.
    #[error("stream truncated at offset {offset} while reading {context}")]
    Truncated {
        /// Where the input ended.
        offset: u64,
        /// What was being read.
        context: &'static str,
    },
    /// The stream header is not ours or not valid.
    #[error("bad stream header: {field}")]
    BadHeader {
        /// The field that is wrong.
        field: &'static str,
    },
    /// The stream is for a guest larger than the memory it is applied to.
    #[error("stream is for {claimed} pages but guest memory has {memory}")]
    GuestTooLarge {
        /// Pages the header claims.
        claimed: u64,
        /// Pages of the memory.
        memory: u64,
    },
    /// A frame tag that is neither a checkpoint nor the end.
    #[error("unknown frame tag {tag:02x?} at offset {offset}")]
    UnknownFrame {
        /// Where.
        offset: u64,
        /// The tag.
        tag: [u8; 4],
    },
    /// A checkpoint out of sequence.
    #[error("checkpoint at offset {offset} has sequence {found}, expected {expected}")]
    Sequence {
        /// Where.
        offset: u64,
        /// Expected sequence number.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// A PFN batch of more than 1024 entries.
    #[error("PFN batch of {count} entries at offset {offset} (at most 1024)")]
    BatchTooLarge {
        /// Where.
        offset: u64,
        /// Entries claimed.
        count: i32,
    },
    /// A PFN entry with an unknown page type or reserved bits set.
    #[error("PFN entry {entry:#018x} at offset {offset}: {reason}")]
    BadEntry {
        /// Where.
        offset: u64,
        /// The entry.
        entry: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A PFN at or past the guest's size.
    #[error("pfn {pfn:#x} at offset {offset} is outside the guest ({guest_pages} pages)")]
    PfnOutOfRange {
        /// Where.
        offset: u64,
        /// The PFN.
        pfn: u64,
        /// Guest pages.
        guest_pages: u64,
    },
    /// The same PFN twice in one checkpoint.
    #[error("pfn {pfn:#x} at offset {offset} appears twice in one checkpoint")]
    DuplicatePfn {
        /// Where.
        offset: u64,
        /// The PFN.
        pfn: u64,
    },
    /// More PFN entries than the configured limit.
    #[error("checkpoint exceeds {limit} PFN entries at offset {offset}")]
    TooManyEntries {
        /// Where.
        offset: u64,
        /// The limit.
        limit: u64,
    },
    /// A COMPRESSED_DATA chunk longer than the configured limit.
    #[error("compressed chunk of {len} bytes at offset {offset} exceeds {limit}")]
    ChunkTooLarge {
        /// Where.
        offset: u64,
        /// Claimed length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The checkpoint's buffered data would exceed the configured limit.
    #[error("checkpoint data exceeds {limit} bytes at offset {offset}")]
    CheckpointTooLarge {
        /// Where.
        offset: u64,
        /// The limit.
        limit: u64,
    },
    /// COMPRESSED_DATA before compression was enabled (Format A).
    #[error("compressed data at offset {offset} before ENABLE_COMPRESSION")]
    CompressedBeforeEnable {
        /// Where.
        offset: u64,
    },
    /// ENABLE_COMPRESSION while compression is already on.
    #[error("ENABLE_COMPRESSION at offset {offset} while compression is already enabled")]
    EnableTwice {
        /// Where.
        offset: u64,
    },
    /// More compressed pages than data-carrying PFN entries so far.
    #[error("compressed page {page} at offset {offset} has no PFN entry yet ({entries} data entries seen)")]
    PagesBeforeEntries {
        /// Where.
        offset: u64,
        /// Index of the page in the checkpoint.
        page: u64,
        /// Data-carrying entries seen.
        entries: u64,
    },
    /// A malformed page encoding (or one split across chunks).
    #[error("page {page} at offset {offset}: {source}")]
    BadPage {
        /// Where the encoding starts.
        offset: u64,
        /// Index of the page in the checkpoint.
        page: u64,
        /// The rule it broke.
        source: DecodeError,
    },
    /// End of body with fewer compressed pages than data entries.
    #[error(
        "body ends at offset {offset} with {pages} compressed pages for {entries} data entries"
    )]
    MissingPages {
        /// Where.
        offset: u64,
        /// Data-carrying entries.
        entries: u64,
        /// Pages received.
        pages: u64,
    },
    /// A chunk type the stream may not carry.
    #[error("unknown chunk type {ty} at offset {offset}")]
    UnknownChunk {
        /// Where.
        offset: u64,
        /// The type.
        ty: i32,
    },
    /// A toolstack chunk the engine does not carry (TMEM).
    #[error("unsupported chunk type {ty} at offset {offset}")]
    UnsupportedChunk {
        /// Where.
        offset: u64,
        /// The type.
        ty: i32,
    },
    /// A trailer or end frame that does not match its checkpoint.
    #[error("bad trailer at offset {offset}: {field}")]
    BadTrailer {
        /// Where.
        offset: u64,
        /// What does not match.
        field: &'static str,
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
    /// The memory could not be flushed after applying.
    #[error("cannot flush guest memory: {0}")]
    Flush(io::Error),
}

impl From<ReceiveError> for io::Error {
    fn from(e: ReceiveError) -> io::Error {
        match e {
            ReceiveError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// What the stream contained, reported to an observer as it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A checkpoint frame starts.
    Checkpoint {
        /// Offset of the frame tag.
        offset: u64,
        /// Sequence number.
        seq: u64,
        /// Whether its body is compressed (Format B).
        compressed: bool,
    },
    /// A PFN batch.
    Batch {
        /// Offset of the chunk type.
        offset: u64,
        /// Entries.
        entries: u32,
        /// Entries that carry data.
        data: u32,
    },
    /// A COMPRESSED_DATA chunk.
    Compressed {
        /// Offset of the chunk type.
        offset: u64,
        /// Payload bytes.
        len: u64,
        /// Pages it encodes.
        pages: u64,
    },
    /// ENABLE_COMPRESSION.
    EnableCompression {
        /// Offset of the chunk type.
        offset: u64,
    },
    /// A toolstack chunk.
    Foreign {
        /// Offset of the chunk type.
        offset: u64,
        /// Its type.
        id: i32,
    },
    /// The trailer, verified.
    Trailer {
        /// Offset of the trailer.
        offset: u64,
        /// Its contents.
        trailer: Trailer,
    },
    /// End of stream.
    End {
        /// Offset of the end frame.
        offset: u64,
        /// Checkpoints in the stream.
        checkpoints: u64,
    },
}

/// A checkpoint that was received, verified and applied.
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
    /// Toolstack chunks, in order.
    pub foreign: Vec<ForeignChunk>,
}

struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Counting<R> {
    fn exact(&mut self, buf: &mut [u8], context: &'static str) -> Result<(), ReceiveError> {
        let offset = self.pos;
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(ReceiveError::Truncated { offset, context })
            }
            Err(source) => Err(ReceiveError::Io { offset, source }),
        }
    }

    fn u32(&mut self, context: &'static str) -> Result<u32, ReceiveError> {
        let mut b = [0u8; 4];
        self.exact(&mut b, context)?;
        Ok(u32::from_le_bytes(b))
    }

    fn i32(&mut self, context: &'static str) -> Result<i32, ReceiveError> {
        Ok(self.u32(context)? as i32)
    }

    fn u64(&mut self, context: &'static str) -> Result<u64, ReceiveError> {
        let mut b = [0u8; 8];
        self.exact(&mut b, context)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Appends exactly `len` bytes to `buf`, growing it only as bytes arrive.
    fn append(
        &mut self,
        buf: &mut Vec<u8>,
        len: u64,
        context: &'static str,
    ) -> Result<(), ReceiveError> {
        let offset = self.pos;
        let before = buf.len();
        match (&mut self.inner).take(len).read_to_end(buf) {
            Ok(n) => {
                self.pos += n as u64;
                if (n as u64) < len {
                    buf.truncate(before);
                    return Err(ReceiveError::Truncated {
                        offset: self.pos,
                        context,
                    });
                }
                Ok(())
            }
            Err(source) => Err(ReceiveError::Io { offset, source }),
        }
    }
}

/// Where one page of the checkpoint is in the buffered payload.
#[derive(Clone, Copy)]
struct PageRef {
    pfn: u64,
    at: usize,
    /// Offset of the page's data or encoding in the stream.
    offset: u64,
    /// `None` for Format A raw data (4096 bytes, no marker).
    form: Option<Form>,
}

/// Reads a checkpoint stream and applies verified checkpoints.
pub struct Receiver<R> {
    r: Counting<BufReader<R>>,
    header: StreamHeader,
    limits: ReceiverConfig,
    codec: Codec,
    compressed: bool,
    next_seq: u64,
    ended: bool,
    entries: Vec<u64>,
    data_pfns: Vec<u64>,
    /// End (in `data_pfns`) of each PFN batch that carries data.
    batch_ends: Vec<usize>,
    payload: Vec<u8>,
    pages: Vec<PageRef>,
    seen: Vec<u64>,
    scratch: Box<Page>,
    trailer: Option<(u64, Trailer)>,
}

impl<R: Read> Receiver<R> {
    /// Reads and checks the stream header.
    pub fn new(reader: R, limits: ReceiverConfig, codec: Codec) -> Result<Self, ReceiveError> {
        let mut r = Counting {
            inner: BufReader::with_capacity(1 << 20, reader),
            pos: 0,
        };
        let mut b = [0u8; HEADER_LEN];
        r.exact(&mut b, "stream header")?;
        let field = |f| Err(ReceiveError::BadHeader { field: f });
        if &b[..8] != STREAM_MAGIC {
            return field("magic (not a ckpt stream)");
        }
        if u32::from_le_bytes(b[8..12].try_into().unwrap()) != STREAM_VERSION {
            return field("version");
        }
        if u32::from_le_bytes(b[12..16].try_into().unwrap()) != HEADER_LEN as u32 {
            return field("header length");
        }
        let guest_pages = u64::from_le_bytes(b[16..24].try_into().unwrap());
        if guest_pages == 0 || guest_pages > PFN_LIMIT {
            return field("guest pages");
        }
        if u32::from_le_bytes(b[24..28].try_into().unwrap()) != PAGE_SIZE as u32 {
            return field("page size");
        }
        if b[28..32] != [0; 4] {
            return field("reserved");
        }
        Ok(Receiver {
            r,
            header: StreamHeader { guest_pages },
            limits,
            codec,
            compressed: false,
            next_seq: 0,
            ended: false,
            entries: Vec::new(),
            data_pfns: Vec::new(),
            batch_ends: Vec::new(),
            payload: Vec::new(),
            pages: Vec::new(),
            seen: Vec::new(),
            scratch: Box::new([0u8; PAGE_SIZE]),
            trailer: None,
        })
    }

    /// Pages of the guest the stream is for.
    pub fn guest_pages(&self) -> u64 {
        self.header.guest_pages
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.r.pos
    }

    /// Receives, verifies and applies the next checkpoint; `None` at the end
    /// of the stream.
    pub fn next_checkpoint(
        &mut self,
        memory: &mut dyn GuestMemory,
    ) -> Result<Option<CheckpointInfo>, ReceiveError> {
        self.next_checkpoint_observed(memory, &mut |_| {})
    }

    /// As [`Receiver::next_checkpoint`], reporting what it parses to `observe`.
    pub fn next_checkpoint_observed(
        &mut self,
        memory: &mut dyn GuestMemory,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<Option<CheckpointInfo>, ReceiveError> {
        if self.ended {
            return Ok(None);
        }
        if memory.pages() < self.header.guest_pages {
            return Err(ReceiveError::GuestTooLarge {
                claimed: self.header.guest_pages,
                memory: memory.pages(),
            });
        }
        let start = self.r.pos;
        let mut tag = [0u8; 4];
        self.r.exact(&mut tag, "frame tag")?;
        if tag == TAG_END {
            if self.r.u32("end frame")? != 0 {
                return Err(ReceiveError::BadTrailer {
                    offset: start,
                    field: "end frame reserved field",
                });
            }
            let n = self.r.u64("end frame")?;
            if n != self.next_seq {
                return Err(ReceiveError::BadTrailer {
                    offset: start,
                    field: "end frame checkpoint count",
                });
            }
            self.ended = true;
            observe(&Event::End {
                offset: start,
                checkpoints: n,
            });
            return Ok(None);
        }
        if tag != TAG_CHECKPOINT {
            return Err(ReceiveError::UnknownFrame { offset: start, tag });
        }
        if self.r.u32("checkpoint frame")? != 0 {
            return Err(ReceiveError::BadTrailer {
                offset: start,
                field: "checkpoint frame reserved field",
            });
        }
        let seq = self.r.u64("checkpoint sequence")?;
        if seq != self.next_seq {
            return Err(ReceiveError::Sequence {
                offset: start,
                expected: self.next_seq,
                found: seq,
            });
        }
        observe(&Event::Checkpoint {
            offset: start,
            seq,
            compressed: self.compressed,
        });
        let result = self.read_body(seq, observe);
        // Clear the duplicate-PFN marks whatever happened.
        for &e in &self.entries {
            let pfn = e & PFN_MASK;
            self.seen[(pfn / 64) as usize] &= !(1 << (pfn % 64));
        }
        let (mut info, enable_next) = result?;
        let (offset, trailer) = self.trailer.take().expect("read_body sets the trailer");
        self.verify(seq, offset, &trailer, memory)?;
        observe(&Event::Trailer { offset, trailer });
        self.apply(memory, &mut info)?;
        info.frame_bytes = self.r.pos - start;
        self.next_seq += 1;
        if enable_next {
            self.compressed = true;
        }
        Ok(Some(info))
    }

    fn read_body(
        &mut self,
        seq: u64,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<(CheckpointInfo, bool), ReceiveError> {
        self.entries.clear();
        self.data_pfns.clear();
        self.batch_ends.clear();
        self.payload.clear();
        self.pages.clear();
        let words = self.header.guest_pages.div_ceil(64) as usize;
        if self.seen.len() < words {
            self.seen.resize(words, 0);
        }
        let mut info = CheckpointInfo {
            seq,
            compressed: self.compressed,
            ..Default::default()
        };
        let mut enable_next = false;
        let mut raw = Vec::with_capacity(MAX_BATCH * 8);
        loop {
            let offset = self.r.pos;
            let ty = self.r.i32("chunk type")?;
            match ty {
                CHUNK_END => break,
                n if n > 0 => {
                    if n as usize > MAX_BATCH {
                        return Err(ReceiveError::BatchTooLarge { offset, count: n });
                    }
                    let n = n as usize;
                    if (self.entries.len() + n) as u64 > self.limits.max_checkpoint_entries {
                        return Err(ReceiveError::TooManyEntries {
                            offset,
                            limit: self.limits.max_checkpoint_entries,
                        });
                    }
                    raw.resize(n * 8, 0);
                    self.r.exact(&mut raw, "PFN batch")?;
                    let mut data = 0u32;
                    for (i, b) in raw.chunks_exact(8).enumerate() {
                        let at = offset + 4 + 8 * i as u64;
                        let e = u64::from_le_bytes(b.try_into().unwrap());
                        let ty = self.check_entry(e, at)?;
                        self.entries.push(e);
                        if ty.carries_data() {
                            data += 1;
                            self.data_pfns.push(e & PFN_MASK);
                        }
                    }
                    if data > 0 {
                        self.batch_ends.push(self.data_pfns.len());
                    }
                    if !self.compressed {
                        // Format A: the batch's page data follows it.
                        for k in self.data_pfns.len() - data as usize..self.data_pfns.len() {
                            self.reserve(offset, PAGE_SIZE as u64)?;
                            let at = self.payload.len();
                            let page_offset = self.r.pos;
                            self.r
                                .append(&mut self.payload, PAGE_SIZE as u64, "page data")?;
                            self.pages.push(PageRef {
                                pfn: self.data_pfns[k],
                                at,
                                offset: page_offset,
                                form: None,
                            });
                        }
                    }
                    observe(&Event::Batch {
                        offset,
                        entries: n as u32,
                        data,
                    });
                }
                CHUNK_COMPRESSED_DATA => {
                    if !self.compressed {
                        return Err(ReceiveError::CompressedBeforeEnable { offset });
                    }
                    let len = self.r.u64("compressed chunk length")?;
                    if len > self.limits.max_chunk_bytes {
                        return Err(ReceiveError::ChunkTooLarge {
                            offset,
                            len,
                            limit: self.limits.max_chunk_bytes,
                        });
                    }
                    self.reserve(offset, len)?;
                    let start = self.payload.len();
                    let data_at = self.r.pos;
                    self.r.append(&mut self.payload, len, "compressed chunk")?;
                    let before = self.pages.len() as u64;
                    let mut at = start;
                    while at < self.payload.len() {
                        let page = self.pages.len() as u64;
                        let page_at = data_at + (at - start) as u64;
                        if page >= self.data_pfns.len() as u64 {
                            return Err(ReceiveError::PagesBeforeEntries {
                                offset: page_at,
                                page,
                                entries: self.data_pfns.len() as u64,
                            });
                        }
                        let (form, used) = validate(&self.payload[at..]).map_err(|source| {
                            ReceiveError::BadPage {
                                offset: page_at,
                                page,
                                source,
                            }
                        })?;
                        self.pages.push(PageRef {
                            pfn: self.data_pfns[page as usize],
                            at,
                            offset: page_at,
                            form: Some(form),
                        });
                        at += used;
                    }
                    observe(&Event::Compressed {
                        offset,
                        len,
                        pages: self.pages.len() as u64 - before,
                    });
                }
                CHUNK_ENABLE_COMPRESSION => {
                    if self.compressed || enable_next {
                        return Err(ReceiveError::EnableTwice { offset });
                    }
                    enable_next = true;
                    observe(&Event::EnableCompression { offset });
                }
                -6 | -5 => return Err(ReceiveError::UnsupportedChunk { offset, ty }),
                id => {
                    let len =
                        foreign_payload_len(id).ok_or(ReceiveError::UnknownChunk { offset, ty })?;
                    let mut payload = vec![0u8; len];
                    self.r.exact(&mut payload, "toolstack chunk")?;
                    info.foreign.push(ForeignChunk { id, payload });
                    observe(&Event::Foreign { offset, id });
                }
            }
        }
        let end = self.r.pos;
        if self.pages.len() != self.data_pfns.len() {
            return Err(ReceiveError::MissingPages {
                offset: end,
                entries: self.data_pfns.len() as u64,
                pages: self.pages.len() as u64,
            });
        }
        let offset = self.r.pos;
        let mut b = [0u8; TRAILER_LEN];
        self.r.exact(&mut b, "trailer")?;
        let trailer =
            Trailer::from_bytes(&b).map_err(|field| ReceiveError::BadTrailer { offset, field })?;
        if trailer.seq != seq {
            return Err(ReceiveError::BadTrailer {
                offset,
                field: "sequence differs from the frame's",
            });
        }
        if trailer.data_pages != self.data_pfns.len() as u64 {
            return Err(ReceiveError::BadTrailer {
                offset,
                field: "page count differs from the body's",
            });
        }
        info.entries = self.entries.len() as u64;
        info.data_pages = self.data_pfns.len() as u64;
        info.payload_bytes = self.payload.len() as u64;
        self.trailer = Some((offset, trailer));
        Ok((info, enable_next))
    }

    /// Checks one PFN entry and marks its PFN seen; returns its type.
    fn check_entry(&mut self, e: u64, offset: u64) -> Result<PageType, ReceiveError> {
        if e >> 32 != 0 {
            return Err(ReceiveError::BadEntry {
                offset,
                entry: e,
                reason: "bits 32..63 are set",
            });
        }
        let ty =
            PageType::from_code((e >> TYPE_SHIFT) as u8 & 0xF).ok_or(ReceiveError::BadEntry {
                offset,
                entry: e,
                reason: "unknown page type",
            })?;
        let pfn = e & PFN_MASK;
        if pfn >= self.header.guest_pages {
            return Err(ReceiveError::PfnOutOfRange {
                offset,
                pfn,
                guest_pages: self.header.guest_pages,
            });
        }
        let (w, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
        if self.seen[w] & bit != 0 {
            return Err(ReceiveError::DuplicatePfn { offset, pfn });
        }
        self.seen[w] |= bit;
        Ok(ty)
    }

    /// Checks that `len` more payload bytes stay within the checkpoint limit.
    fn reserve(&self, offset: u64, len: u64) -> Result<(), ReceiveError> {
        if self.payload.len() as u64 + len > self.limits.max_checkpoint_bytes {
            return Err(ReceiveError::CheckpointTooLarge {
                offset,
                limit: self.limits.max_checkpoint_bytes,
            });
        }
        Ok(())
    }

    /// Computes the digest of what applying would produce, touching nothing.
    fn verify(
        &mut self,
        seq: u64,
        offset: u64,
        trailer: &Trailer,
        memory: &dyn GuestMemory,
    ) -> Result<(), ReceiveError> {
        let mut digest = Digest::new();
        for (i, p) in self.pages.iter().enumerate() {
            let hash = match p.form {
                None => page_hash(self.payload[p.at..p.at + PAGE_SIZE].try_into().unwrap()),
                Some(Form::Full) => page_hash(
                    self.payload[p.at + 1..p.at + 1 + PAGE_SIZE]
                        .try_into()
                        .unwrap(),
                ),
                Some(Form::Empty) => page_hash(memory.page(p.pfn)),
                Some(Form::Delta) => {
                    self.scratch.copy_from_slice(memory.page(p.pfn));
                    self.codec
                        .decode(&self.payload[p.at..], &mut self.scratch)
                        .map_err(|source| ReceiveError::BadPage {
                            offset: p.offset,
                            page: i as u64,
                            source,
                        })?;
                    page_hash(&self.scratch)
                }
            };
            digest.add_hashed(p.pfn, hash);
        }
        let computed = digest.finish();
        if computed != trailer.digest {
            return Err(ReceiveError::DigestMismatch {
                offset,
                seq,
                expected: trailer.digest,
                computed,
            });
        }
        Ok(())
    }

    /// Applies the verified checkpoint to memory.
    fn apply(
        &mut self,
        memory: &mut dyn GuestMemory,
        info: &mut CheckpointInfo,
    ) -> Result<(), ReceiveError> {
        let mut batch_ends = self.batch_ends.iter();
        let mut batch_end = 0;
        for (i, p) in self.pages.iter().enumerate() {
            if i == batch_end {
                // Pages and data entries correspond one to one (checked).
                batch_end = *batch_ends.next().expect("every page is in a batch");
                memory.begin_batch(&self.data_pfns[i..batch_end]);
            }
            match p.form {
                None => {
                    info.full += 1;
                    memory
                        .page_mut(p.pfn)
                        .copy_from_slice(&self.payload[p.at..p.at + PAGE_SIZE]);
                }
                Some(Form::Full) => {
                    info.full += 1;
                    memory
                        .page_mut(p.pfn)
                        .copy_from_slice(&self.payload[p.at + 1..p.at + 1 + PAGE_SIZE]);
                }
                Some(Form::Empty) => info.empty += 1,
                Some(Form::Delta) => {
                    info.delta += 1;
                    // Validated when the chunk arrived; cannot fail here.
                    self.codec
                        .decode(&self.payload[p.at..], memory.page_mut(p.pfn))
                        .map_err(|source| ReceiveError::BadPage {
                            offset: p.offset,
                            page: i as u64,
                            source,
                        })?;
                }
            }
        }
        memory.flush().map_err(ReceiveError::Flush)
    }
}

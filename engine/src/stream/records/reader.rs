//! The incremental record stream reader (`docs/RECORDS.md`, "Reader
//! rules"): reads and checks the headers, then one checkpoint at a time
//! into a [`Body`], the same the legacy reader fills, with the same
//! [`Limits`] checked before anything is allocated and the same typed
//! errors, each with its offset. Buffers grow only with bytes that arrive
//! (and, for the zstd stage, with bytes zstd produces, at most what the
//! record states and the limits allow).

use super::{
    decompress_into, from_xen_entry, padding, record_name, DomainHeader, ImageHeader, Integrity,
    PagesHead, RecordError, RecordHeader, StreamInfo, DOMAIN_HEADER_LEN, IMAGE_HEADER_LEN,
    INTEGRITY_LEN, MAX_PAGE_DATA, PAGES_HEAD_LEN, PAGE_DATA_HEAD_LEN, RECORD_HEADER_LEN,
    REC_CHECKPOINT, REC_CKPT_COMPRESSED_PAGE_DATA, REC_CKPT_ENABLE_COMPRESSION, REC_CKPT_INTEGRITY,
    REC_CKPT_STREAM_INFO, REC_CKPT_TOOLSTACK, REC_END, REC_PAGE_DATA, REC_STATIC_DATA_END,
    REC_XEN_LAST, STAGE_NONE, STAGE_ZSTD, STREAM_INFO_LEN,
};
use crate::page::{PageType, PFN_MASK, TYPE_SHIFT};
use crate::stream::limits::{CHUNK_COST, TOOLSTACK_COST};
use crate::stream::{
    crc, toolstack_payload_len, Body, ChunkSpan, Event, Limits, StreamError, StreamHeader,
    ToolstackChunk, Trailer,
};
use ckpt_simd::{MAX_ENCODED_LEN, PAGE_SIZE};
use std::io::{self, BufReader, Read};

mod payload;

/// What one record held, reported to an observer as it is read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordInfo {
    /// PAGE_DATA.
    PageData {
        /// PFN entries.
        entries: u32,
        /// Entries followed by a page.
        data: u32,
    },
    /// CKPT_COMPRESSED_PAGE_DATA.
    CompressedPageData {
        /// PFN entries.
        entries: u32,
        /// Entries with a page encoding.
        data: u32,
        /// Bytes of the page encodings.
        encoded_len: u32,
        /// Whether the payload went through the zstd stage.
        zstd: bool,
        /// Bytes of the payload as sent.
        payload_len: u64,
    },
    /// CKPT_TOOLSTACK.
    Toolstack {
        /// The chunk's type.
        id: i32,
    },
    /// CKPT_ENABLE_COMPRESSION.
    EnableCompression,
    /// CKPT_INTEGRITY, its check verified (the digest is the receiver's).
    Integrity(Integrity),
    /// CHECKPOINT.
    Checkpoint,
    /// END.
    End {
        /// Checkpoints in the stream.
        checkpoints: u64,
    },
    /// An optional record this build does not know, skipped.
    Skipped,
}

/// Reads a record stream from any [`Read`].
pub struct RecordReader<R> {
    r: BufReader<R>,
    pos: u64,
    /// The current check: over the headers, then over the checkpoint so far.
    crc: u32,
    /// CKPT_STREAM_INFO's check, which every checkpoint's starts from.
    seed: u32,
    image: ImageHeader,
    domain: DomainHeader,
    info: StreamInfo,
    header: StreamHeader,
    limits: Limits,
    compressed: bool,
    next_seq: u64,
    ended: bool,
    /// PFNs seen in the current checkpoint, one bit each.
    seen: Vec<u64>,
    /// PFN entries as read, at most 1024 at a time.
    batch: Vec<u8>,
    /// A zstd payload as read.
    stage_in: Vec<u8>,
    /// A zstd payload decompressed.
    stage_out: Vec<u8>,
}

fn rec(e: RecordError) -> StreamError {
    StreamError::Record(e)
}

impl<R: Read> RecordReader<R> {
    /// Reads and checks the image header, the domain header,
    /// CKPT_STREAM_INFO (whose check covers all three) and STATIC_DATA_END.
    pub fn new(reader: R, limits: Limits) -> Result<Self, StreamError> {
        let info = StreamInfo {
            guest_pages: 1,
            stream_id: 0,
            zstd_level: None,
        };
        let mut s = RecordReader {
            r: BufReader::with_capacity(1 << 20, reader),
            pos: 0,
            crc: 0,
            seed: 0,
            image: ImageHeader::default(),
            domain: DomainHeader::default(),
            info,
            header: StreamHeader {
                guest_pages: 1,
                stream_id: 0,
            },
            limits,
            compressed: false,
            next_seq: 0,
            ended: false,
            seen: Vec::new(),
            batch: Vec::with_capacity(MAX_PAGE_DATA * 8),
            stage_in: Vec::new(),
            stage_out: Vec::new(),
        };
        let mut b = [0u8; IMAGE_HEADER_LEN];
        s.exact(&mut b, "image header")?;
        s.image = ImageHeader::from_bytes(&b).map_err(rec)?;
        let mut b = [0u8; DOMAIN_HEADER_LEN];
        s.exact(&mut b, "domain header")?;
        s.domain = DomainHeader::from_bytes(&b).map_err(rec)?;
        let offset = s.pos;
        let h = s.record_header()?;
        if h.ty != REC_CKPT_STREAM_INFO || h.len as usize != STREAM_INFO_LEN {
            return Err(rec(RecordError::Misplaced {
                offset,
                name: record_name(h.ty),
                rule:
                    "a ckpt record stream opens with CKPT_STREAM_INFO (40 bytes) after its headers",
            }));
        }
        let prefix = s.crc;
        let mut b = [0u8; STREAM_INFO_LEN];
        s.exact(&mut b, "CKPT_STREAM_INFO")?;
        let (info, seed) = StreamInfo::from_body(&b, prefix).map_err(rec)?;
        s.info = info;
        s.seed = seed;
        s.header = StreamHeader {
            guest_pages: info.guest_pages,
            stream_id: info.stream_id,
        };
        // Refused before anything is sized by it, as in the legacy reader.
        if info.guest_pages > s.limits.max_guest_pages {
            return Err(StreamError::GuestTooLarge {
                guest_pages: info.guest_pages,
                limit: s.limits.max_guest_pages,
            });
        }
        let offset = s.pos;
        let h = s.record_header()?;
        if h.ty != REC_STATIC_DATA_END || h.len != 0 {
            return Err(rec(RecordError::Misplaced {
                offset,
                name: record_name(h.ty),
                rule: "STATIC_DATA_END (empty) follows CKPT_STREAM_INFO",
            }));
        }
        s.crc = s.seed;
        Ok(s)
    }

    /// The image header.
    pub fn image(&self) -> &ImageHeader {
        &self.image
    }

    /// The domain header.
    pub fn domain(&self) -> &DomainHeader {
        &self.domain
    }

    /// CKPT_STREAM_INFO.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// The stream's guest size and identity, as a legacy stream's header
    /// gives them.
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Whether the next checkpoint is compressed (Format B).
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// Sequence number of the next checkpoint.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether END has been read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn exact(&mut self, buf: &mut [u8], context: &'static str) -> Result<(), StreamError> {
        let offset = self.pos;
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                self.crc = crc(self.crc, buf);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(StreamError::Truncated { offset, context })
            }
            Err(source) => Err(StreamError::Io { offset, source }),
        }
    }

    /// Appends exactly `len` bytes to `buf`, growing it only as bytes arrive.
    fn append(
        &mut self,
        buf: &mut Vec<u8>,
        len: u64,
        context: &'static str,
    ) -> Result<(), StreamError> {
        let offset = self.pos;
        let before = buf.len();
        match (&mut self.r).take(len).read_to_end(buf) {
            Ok(n) => {
                self.pos += n as u64;
                if (n as u64) < len {
                    buf.truncate(before);
                    return Err(StreamError::Truncated {
                        offset: self.pos,
                        context,
                    });
                }
                self.crc = crc(self.crc, &buf[before..]);
                Ok(())
            }
            Err(source) => Err(StreamError::Io { offset, source }),
        }
    }

    /// Reads `len` bytes into the check and nowhere else.
    fn skip(&mut self, mut len: u64, context: &'static str) -> Result<(), StreamError> {
        let mut buf = [0u8; 4096];
        while len > 0 {
            let n = len.min(buf.len() as u64) as usize;
            self.exact(&mut buf[..n], context)?;
            len -= n as u64;
        }
        Ok(())
    }

    fn record_header(&mut self) -> Result<RecordHeader, StreamError> {
        let mut b = [0u8; RECORD_HEADER_LEN];
        self.exact(&mut b, "record header")?;
        Ok(RecordHeader::from_bytes(&b))
    }

    /// Reads a body's padding, which must be zeros.
    fn padding(&mut self, h: RecordHeader, offset: u64) -> Result<(), StreamError> {
        let n = padding(h.len as u64);
        let mut b = [0u8; 8];
        self.exact(&mut b[..n], "record padding")?;
        if b[..n].iter().any(|&x| x != 0) {
            return Err(rec(RecordError::BadRecord {
                offset,
                ty: h.ty,
                field: "padding is not zero",
            }));
        }
        Ok(())
    }

    /// Reads the next checkpoint into `body`, reporting each record to
    /// `observe`. Returns `false`, with `body` untouched, at the end of the
    /// stream (END read, nothing after it). The page data is checked against
    /// the PFN entries by [`Body::walk_pages`], which the receiver runs as
    /// it verifies.
    pub fn read_checkpoint(
        &mut self,
        body: &mut Body,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<bool, StreamError> {
        if self.ended {
            return Ok(false);
        }
        let words = self.header.guest_pages.div_ceil(64) as usize;
        if self.seen.len() < words {
            self.seen.resize(words, 0);
        }
        let start = self.pos;
        let h = self.record_header()?;
        if h.ty == REC_END {
            return self.read_end(start, h, observe).map(|()| false);
        }
        body.clear();
        body.seq = self.next_seq;
        body.offset = start;
        body.compressed = self.compressed;
        observe(&Event::Checkpoint {
            offset: start,
            seq: self.next_seq,
            compressed: self.compressed,
        });
        let result = self.read_records(body, start, h, observe);
        // Clear the duplicate-PFN marks whatever happened.
        for &e in &body.entries {
            let pfn = e & PFN_MASK;
            self.seen[(pfn / 64) as usize] &= !(1 << (pfn % 64));
        }
        result?;
        Ok(true)
    }

    fn read_end(
        &mut self,
        offset: u64,
        h: RecordHeader,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<(), StreamError> {
        if h.len != 0 {
            return Err(rec(RecordError::BadRecord {
                offset,
                ty: h.ty,
                field: "END has a body",
            }));
        }
        let mut one = [0u8; 1];
        loop {
            match self.r.read(&mut one) {
                Ok(0) => break,
                Ok(_) => return Err(StreamError::TrailingBytes { offset: self.pos }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(StreamError::Io {
                        offset: self.pos,
                        source,
                    })
                }
            }
        }
        self.ended = true;
        observe(&Event::Record {
            offset,
            ty: h.ty,
            len: 0,
            info: RecordInfo::End {
                checkpoints: self.next_seq,
            },
        });
        Ok(())
    }

    /// Reads the records of one checkpoint, the first of which has header
    /// `h`, through its CHECKPOINT record.
    fn read_records(
        &mut self,
        body: &mut Body,
        start: u64,
        mut h: RecordHeader,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<(), StreamError> {
        let mut charged = 0u64;
        let mut offset = start;
        loop {
            let info =
                match h.ty {
                    REC_PAGE_DATA => self.page_data(body, h, offset, &mut charged)?,
                    REC_CKPT_COMPRESSED_PAGE_DATA => {
                        self.compressed_page_data(body, h, offset, &mut charged)?
                    }
                    REC_CKPT_TOOLSTACK => self.toolstack(body, h, offset, &mut charged)?,
                    REC_CKPT_ENABLE_COMPRESSION => {
                        self.empty(h, offset)?;
                        if self.compressed || body.enables_compression {
                            return Err(StreamError::EnableTwice { offset });
                        }
                        body.enables_compression = true;
                        RecordInfo::EnableCompression
                    }
                    REC_CKPT_INTEGRITY => return self.integrity(body, start, h, offset, observe),
                    REC_CHECKPOINT => {
                        return Err(misplaced(
                            offset,
                            h,
                            "CHECKPOINT without CKPT_INTEGRITY before it",
                        ))
                    }
                    REC_END => return Err(misplaced(
                        offset,
                        h,
                        "END inside a checkpoint (its CKPT_INTEGRITY and CHECKPOINT are missing)",
                    )),
                    REC_CKPT_STREAM_INFO | REC_STATIC_DATA_END => {
                        return Err(misplaced(
                            offset,
                            h,
                            "only once, at the start of the stream",
                        ))
                    }
                    ty if ty <= REC_XEN_LAST => {
                        return Err(rec(RecordError::UnsupportedRecord {
                            offset,
                            ty,
                            name: record_name(ty),
                        }))
                    }
                    ty if h.is_optional() => {
                        let len = h.len as u64;
                        if len > self.limits.max_chunk_bytes {
                            return Err(rec(RecordError::RecordTooLarge {
                                offset,
                                ty,
                                len,
                                limit: self.limits.max_chunk_bytes,
                            }));
                        }
                        self.charge(&mut charged, offset, len + CHUNK_COST)?;
                        self.skip(len, "optional record")?;
                        self.padding(h, offset)?;
                        RecordInfo::Skipped
                    }
                    ty => return Err(rec(RecordError::UnknownRecord { offset, ty })),
                };
            observe(&Event::Record {
                offset,
                ty: h.ty,
                len: h.len,
                info,
            });
            offset = self.pos;
            h = self.record_header()?;
        }
    }

    fn empty(&self, h: RecordHeader, offset: u64) -> Result<(), StreamError> {
        if h.len != 0 {
            return Err(rec(RecordError::BadRecord {
                offset,
                ty: h.ty,
                field: "the body must be empty",
            }));
        }
        Ok(())
    }

    /// CKPT_INTEGRITY, then CHECKPOINT: the checkpoint is complete.
    fn integrity(
        &mut self,
        body: &mut Body,
        start: u64,
        h: RecordHeader,
        offset: u64,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<(), StreamError> {
        if h.len as usize != INTEGRITY_LEN {
            return Err(rec(RecordError::BadRecord {
                offset,
                ty: h.ty,
                field: "CKPT_INTEGRITY's body is 40 bytes",
            }));
        }
        let chain = self.crc;
        let mut b = [0u8; INTEGRITY_LEN];
        self.exact(&mut b, "CKPT_INTEGRITY")?;
        let integrity = Integrity::from_body(&b, chain, offset).map_err(rec)?;
        if integrity.seq != self.next_seq {
            return Err(StreamError::Sequence {
                offset,
                expected: self.next_seq,
                found: integrity.seq,
            });
        }
        if integrity.data_pages != body.data_pfns.len() as u64 {
            return Err(rec(RecordError::BadRecord {
                offset,
                ty: h.ty,
                field: "data pages differ from the checkpoint's",
            }));
        }
        observe(&Event::Record {
            offset,
            ty: h.ty,
            len: h.len,
            info: RecordInfo::Integrity(integrity),
        });
        let at = self.pos;
        let c = self.record_header()?;
        if c.ty != REC_CHECKPOINT || c.len != 0 {
            return Err(misplaced(
                at,
                c,
                "CKPT_INTEGRITY must be followed by an empty CHECKPOINT",
            ));
        }
        observe(&Event::Record {
            offset: at,
            ty: c.ty,
            len: 0,
            info: RecordInfo::Checkpoint,
        });
        body.trailer = Some(Trailer {
            seq: integrity.seq,
            data_pages: integrity.data_pages,
            digest: integrity.digest,
        });
        body.trailer_offset = offset;
        body.frame_len = self.pos - start;
        self.crc = self.seed;
        self.next_seq += 1;
        if body.enables_compression {
            self.compressed = true;
        }
        Ok(())
    }
}

fn misplaced(offset: u64, h: RecordHeader, rule: &'static str) -> StreamError {
    rec(RecordError::Misplaced {
        offset,
        name: record_name(h.ty),
        rule,
    })
}

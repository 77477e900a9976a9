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

    /// Reads `count` PFN entries (Xen's layout), checks each and appends
    /// it (engine layout) to the body; returns how many carry data.
    fn pfns(&mut self, body: &mut Body, count: usize) -> Result<u32, StreamError> {
        let mut data = 0u32;
        let mut left = count;
        while left > 0 {
            let n = left.min(MAX_PAGE_DATA);
            let at = self.pos;
            let mut raw = std::mem::take(&mut self.batch);
            raw.resize(n * 8, 0);
            let read = self.exact(&mut raw, "PFN entries");
            let checked = read.and_then(|()| {
                for (i, b) in raw.chunks_exact(8).enumerate() {
                    let offset = at + 8 * i as u64;
                    let x = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                    let e = self.check_entry(x, offset)?;
                    body.entries.push(e);
                    if PageType::from_code((e >> TYPE_SHIFT) as u8 & 0xF)
                        .is_some_and(|t| t.carries_data())
                    {
                        data += 1;
                        body.data_pfns.push(e & PFN_MASK);
                    }
                }
                Ok(())
            });
            self.batch = raw;
            checked?;
            left -= n;
        }
        if data > 0 {
            // The record's PFN list is one batch for the memory's sake
            // (`GuestMemory::begin_batch`).
            body.batch_ends.push(body.data_pfns.len());
        }
        Ok(data)
    }

    fn entries_fit(&self, body: &Body, count: u64, offset: u64) -> Result<(), StreamError> {
        if body.entries.len() as u64 + count > self.limits.max_checkpoint_entries {
            return Err(StreamError::TooManyEntries {
                offset,
                limit: self.limits.max_checkpoint_entries,
            });
        }
        Ok(())
    }

    fn page_data(
        &mut self,
        body: &mut Body,
        h: RecordHeader,
        offset: u64,
        charged: &mut u64,
    ) -> Result<RecordInfo, StreamError> {
        if self.compressed {
            return Err(misplaced(
                offset,
                h,
                "PAGE_DATA after compression was enabled (pages come as CKPT_COMPRESSED_PAGE_DATA)",
            ));
        }
        let bad = |field| {
            rec(RecordError::BadRecord {
                offset,
                ty: h.ty,
                field,
            })
        };
        let len = h.len as u64;
        if len < PAGE_DATA_HEAD_LEN as u64 {
            return Err(bad("shorter than its head"));
        }
        let mut head = [0u8; PAGE_DATA_HEAD_LEN];
        self.exact(&mut head, "PAGE_DATA head")?;
        let count = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if head[4..] != [0; 4] {
            return Err(bad("reserved"));
        }
        if count == 0 {
            return Err(bad("count is 0"));
        }
        if count as usize > MAX_PAGE_DATA {
            return Err(StreamError::BatchTooLarge {
                offset,
                count: count.min(i32::MAX as u32) as i32,
            });
        }
        if len < PAGE_DATA_HEAD_LEN as u64 + 8 * count as u64 {
            return Err(bad("count does not fit the body"));
        }
        self.entries_fit(body, count as u64, offset)?;
        let data = self.pfns(body, count as usize)?;
        let pages = data as u64 * PAGE_SIZE as u64;
        if len != PAGE_DATA_HEAD_LEN as u64 + 8 * count as u64 + pages {
            return Err(bad(
                "body length is not its entries and one page per data entry",
            ));
        }
        self.charge(charged, offset, pages)?;
        self.append(&mut body.payload, pages, "page data")?;
        body.batches.push(count);
        Ok(RecordInfo::PageData {
            entries: count,
            data,
        })
    }

    fn compressed_page_data(
        &mut self,
        body: &mut Body,
        h: RecordHeader,
        offset: u64,
        charged: &mut u64,
    ) -> Result<RecordInfo, StreamError> {
        if !self.compressed {
            return Err(StreamError::CompressedBeforeEnable { offset });
        }
        let bad = |field| {
            rec(RecordError::BadRecord {
                offset,
                ty: h.ty,
                field,
            })
        };
        let len = h.len as u64;
        if len < PAGES_HEAD_LEN as u64 {
            return Err(bad("shorter than its head"));
        }
        let mut b = [0u8; PAGES_HEAD_LEN];
        self.exact(&mut b, "compressed page record head")?;
        let head = PagesHead::from_bytes(&b).map_err(bad)?;
        let zstd = match head.stage {
            STAGE_NONE => false,
            STAGE_ZSTD if self.info.zstd_level.is_some() => true,
            stage => return Err(rec(RecordError::StageNotNegotiated { offset, stage })),
        };
        let count = head.count as u64;
        if len - (PAGES_HEAD_LEN as u64) < 8 * count {
            return Err(bad("count does not fit the body"));
        }
        self.entries_fit(body, count, offset)?;
        let payload_len = len - PAGES_HEAD_LEN as u64 - 8 * count;
        let encoded_len = head.encoded_len as u64;
        let limit = self.limits.max_chunk_bytes;
        for n in [encoded_len, payload_len] {
            if n > limit {
                return Err(StreamError::ChunkTooLarge {
                    offset,
                    len: n,
                    limit,
                });
            }
        }
        let data = self.pfns(body, count as usize)? as u64;
        if data == 0 && (encoded_len != 0 || payload_len != 0) {
            return Err(bad("page data without a data-carrying entry"));
        }
        if data > 0 && !(data..=data * MAX_ENCODED_LEN as u64).contains(&encoded_len) {
            return Err(bad("encoded length impossible for its data entries"));
        }
        if !zstd && payload_len != encoded_len {
            return Err(bad("payload length differs from the encoded length"));
        }
        if zstd && payload_len == 0 {
            return Err(bad("empty zstd payload"));
        }
        self.charge(charged, offset, encoded_len + CHUNK_COST)?;
        let payload_at = self.pos;
        let start = body.payload.len();
        if zstd {
            let mut input = std::mem::take(&mut self.stage_in);
            input.clear();
            let read = self.append(&mut input, payload_len, "zstd payload");
            let r = read.and_then(|()| {
                decompress_into(
                    &input,
                    encoded_len as usize,
                    &mut self.stage_out,
                    &mut body.payload,
                    payload_at,
                )
                .map_err(rec)
            });
            self.stage_in = input;
            r?;
        } else {
            self.append(&mut body.payload, payload_len, "page encodings")?;
        }
        if data > 0 {
            body.chunks.push(ChunkSpan {
                offset: payload_at,
                start,
                end: body.payload.len(),
                data_entries: body.data_pfns.len() as u64,
                entries: body.entries.len() as u64,
                whole: true,
            });
        }
        self.padding(h, offset)?;
        Ok(RecordInfo::CompressedPageData {
            entries: head.count,
            data: data as u32,
            encoded_len: head.encoded_len,
            zstd,
            payload_len,
        })
    }

    fn toolstack(
        &mut self,
        body: &mut Body,
        h: RecordHeader,
        offset: u64,
        charged: &mut u64,
    ) -> Result<RecordInfo, StreamError> {
        let bad = |field| {
            rec(RecordError::BadRecord {
                offset,
                ty: h.ty,
                field,
            })
        };
        if (h.len as usize) < 8 {
            return Err(bad("shorter than its head"));
        }
        let mut head = [0u8; 8];
        self.exact(&mut head, "CKPT_TOOLSTACK head")?;
        let id = i32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if head[4..] != [0; 4] {
            return Err(bad("reserved"));
        }
        if id == -5 || id == -6 {
            return Err(StreamError::UnsupportedChunk { offset, ty: id });
        }
        let plen = match toolstack_payload_len(id) {
            Some(n) if id < 0 => n,
            _ => return Err(StreamError::UnknownChunk { offset, ty: id }),
        };
        if h.len as usize != 8 + plen {
            return Err(bad("body length is not its chunk's payload size"));
        }
        if body.toolstack.len() as u64 >= self.limits.max_toolstack_chunks {
            return Err(StreamError::TooManyToolstackChunks {
                offset,
                limit: self.limits.max_toolstack_chunks,
            });
        }
        self.charge(charged, offset, plen as u64 + TOOLSTACK_COST)?;
        let mut payload = vec![0u8; plen];
        self.exact(&mut payload, "toolstack payload")?;
        body.toolstack.push(ToolstackChunk { id, payload });
        self.padding(h, offset)?;
        Ok(RecordInfo::Toolstack { id })
    }

    /// Checks one PFN entry (Xen's layout) and marks its PFN seen; returns
    /// the entry in the engine's layout.
    fn check_entry(&mut self, x: u64, offset: u64) -> Result<u64, StreamError> {
        let e = from_xen_entry(x).map_err(|reason| StreamError::BadEntry {
            offset,
            entry: x,
            reason,
        })?;
        if PageType::from_code((e >> TYPE_SHIFT) as u8 & 0xF).is_none() {
            return Err(StreamError::BadEntry {
                offset,
                entry: x,
                reason: "unknown page type",
            });
        }
        let pfn = e & PFN_MASK;
        if pfn >= self.header.guest_pages {
            return Err(StreamError::PfnOutOfRange {
                offset,
                pfn,
                guest_pages: self.header.guest_pages,
            });
        }
        let (w, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
        if self.seen[w] & bit != 0 {
            return Err(StreamError::DuplicatePfn { offset, pfn });
        }
        self.seen[w] |= bit;
        Ok(e)
    }

    /// Charges `len` more buffered bytes to the checkpoint's limit.
    fn charge(&self, charged: &mut u64, offset: u64, len: u64) -> Result<(), StreamError> {
        *charged = charged.saturating_add(len);
        if *charged > self.limits.max_checkpoint_bytes {
            return Err(StreamError::CheckpointTooLarge {
                offset,
                limit: self.limits.max_checkpoint_bytes,
            });
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

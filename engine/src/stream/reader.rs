//! The incremental stream reader (`docs/STREAM.md`): reads the header, then
//! one checkpoint frame at a time into a [`Body`], checking every rule of
//! the framing and of the legacy body (`docs/FORMAT.md` §4) as the bytes
//! arrive, and every length against the [`Limits`] before it allocates.
//! Buffers grow only with bytes that actually arrive.

use super::frame::{TAG_CHECKPOINT, TAG_END};
use super::heartbeat::{Heartbeat, HEARTBEAT_LEN, TAG_HEARTBEAT};
use super::limits::{CHUNK_COST, TOOLSTACK_COST};
use super::{
    crc, toolstack_payload_len, Body, ChunkSpan, EndFrame, Limits, StreamError, StreamHeader,
    ToolstackChunk, Trailer, CHUNK_COMPRESSED_DATA, CHUNK_ENABLE_COMPRESSION, CHUNK_END, END_LEN,
    HEADER_LEN, MAX_BATCH, TRAILER_LEN,
};
use crate::page::{PageType, PFN_MASK, TYPE_SHIFT};
use ckpt_simd::PAGE_SIZE;
use std::io::{self, BufReader, Read};

/// What the stream contained, reported to an observer as it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    },
    /// ENABLE_COMPRESSION.
    EnableCompression {
        /// Offset of the chunk type.
        offset: u64,
    },
    /// A toolstack chunk.
    Toolstack {
        /// Offset of the chunk type.
        offset: u64,
        /// Its type.
        id: i32,
    },
    /// The checkpoint verified whole (its page digest matches), about to be
    /// committed; reported by the receiver.
    Verified {
        /// Offset of its trailer.
        offset: u64,
        /// Sequence number.
        seq: u64,
    },
    /// The trailer (its frame check verified; the digest is the receiver's).
    Trailer {
        /// Offset of the trailer.
        offset: u64,
        /// Its contents.
        trailer: Trailer,
    },
    /// A heartbeat between checkpoints (its check verified).
    Heartbeat {
        /// Offset of the frame tag.
        offset: u64,
        /// Its contents.
        heartbeat: Heartbeat,
    },
    /// End of stream.
    End {
        /// Offset of the end frame.
        offset: u64,
        /// Checkpoints in the stream.
        checkpoints: u64,
    },
    /// A record of a record stream (`docs/RECORDS.md`).
    Record {
        /// Offset of its header.
        offset: u64,
        /// Its type.
        ty: u32,
        /// Its body length (without padding).
        len: u32,
        /// What it held.
        info: super::records::RecordInfo,
    },
}

/// Reads a checkpoint stream from any [`Read`].
pub struct StreamReader<R> {
    r: BufReader<R>,
    pos: u64,
    /// Check of the current frame so far.
    crc: u32,
    header: StreamHeader,
    seed: u32,
    limits: Limits,
    compressed: bool,
    next_seq: u64,
    /// Number of the next heartbeat.
    next_heartbeat: u64,
    ended: bool,
    /// PFNs seen in the current checkpoint, one bit each.
    seen: Vec<u64>,
    batch: Vec<u8>,
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the stream header.
    pub fn new(reader: R, limits: Limits) -> Result<Self, StreamError> {
        let mut s = StreamReader {
            r: BufReader::with_capacity(1 << 20, reader),
            pos: 0,
            crc: 0,
            header: StreamHeader {
                guest_pages: 1,
                stream_id: 0,
            },
            seed: 0,
            limits,
            compressed: false,
            next_seq: 0,
            next_heartbeat: 0,
            ended: false,
            seen: Vec::new(),
            batch: Vec::with_capacity(MAX_BATCH * 8),
        };
        let mut b = [0u8; HEADER_LEN];
        s.exact(&mut b, "stream header")?;
        s.header = StreamHeader::from_bytes(&b)?;
        if s.header.guest_pages > s.limits.max_guest_pages {
            return Err(StreamError::GuestTooLarge {
                guest_pages: s.header.guest_pages,
                limit: s.limits.max_guest_pages,
            });
        }
        s.seed = s.header.check();
        Ok(s)
    }

    /// The stream's header.
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

    /// Whether the end frame has been read.
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

    fn i32(&mut self, context: &'static str) -> Result<i32, StreamError> {
        let mut b = [0u8; 4];
        self.exact(&mut b, context)?;
        Ok(i32::from_le_bytes(b))
    }

    fn u64(&mut self, context: &'static str) -> Result<u64, StreamError> {
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

    /// Reads the next checkpoint frame into `body`, reporting what it reads
    /// to `observe`; heartbeats before it are checked and reported too.
    /// Returns `false`, with `body` untouched, at the end of the stream
    /// (the end frame checked, nothing after it). The page data is checked
    /// against the PFN entries by [`Body::walk_pages`], which the receiver
    /// runs as it verifies.
    pub fn read_checkpoint(
        &mut self,
        body: &mut Body,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<bool, StreamError> {
        if self.ended {
            return Ok(false);
        }
        let (start, tag) = loop {
            let start = self.pos;
            self.crc = self.seed;
            let mut tag = [0u8; 4];
            self.exact(&mut tag, "frame tag")?;
            if tag != TAG_HEARTBEAT {
                break (start, tag);
            }
            self.read_heartbeat(start, tag, observe)?;
        };
        if tag == TAG_END {
            return self.read_end(start, tag, observe).map(|()| false);
        }
        if tag != TAG_CHECKPOINT {
            return Err(StreamError::UnknownFrame { offset: start, tag });
        }
        let mut head = [0u8; 12];
        self.exact(&mut head, "checkpoint frame")?;
        if head[..4] != [0; 4] {
            return Err(StreamError::BadFrame {
                offset: start,
                field: "checkpoint frame reserved field",
            });
        }
        let seq = u64::from_le_bytes(head[4..].try_into().expect("8 bytes"));
        if seq != self.next_seq {
            return Err(StreamError::Sequence {
                offset: start,
                expected: self.next_seq,
                found: seq,
            });
        }
        body.clear();
        body.seq = seq;
        body.offset = start;
        body.compressed = self.compressed;
        observe(&Event::Checkpoint {
            offset: start,
            seq,
            compressed: self.compressed,
        });
        let result = self.read_body(body, observe);
        // Clear the duplicate-PFN marks whatever happened.
        for &e in &body.entries {
            let pfn = e & PFN_MASK;
            self.seen[(pfn / 64) as usize] &= !(1 << (pfn % 64));
        }
        result?;
        let offset = self.pos;
        let frame_crc = self.crc;
        let mut b = [0u8; TRAILER_LEN];
        self.exact(&mut b, "trailer")?;
        let trailer = Trailer::from_bytes(&b, frame_crc)
            .map_err(|field| StreamError::BadFrame { offset, field })?;
        if trailer.seq != seq {
            return Err(StreamError::BadFrame {
                offset,
                field: "trailer sequence differs from the frame's",
            });
        }
        if trailer.data_pages != body.data_pfns.len() as u64 {
            return Err(StreamError::BadFrame {
                offset,
                field: "trailer page count differs from the body's",
            });
        }
        observe(&Event::Trailer { offset, trailer });
        body.trailer = Some(trailer);
        body.trailer_offset = offset;
        body.frame_len = self.pos - start;
        self.next_seq += 1;
        if body.enables_compression {
            self.compressed = true;
        }
        Ok(true)
    }

    fn read_heartbeat(
        &mut self,
        start: u64,
        tag: [u8; 4],
        observe: &mut dyn FnMut(&Event),
    ) -> Result<(), StreamError> {
        let mut b = [0u8; HEARTBEAT_LEN];
        b[..4].copy_from_slice(&tag);
        self.exact(&mut b[4..], "heartbeat frame")?;
        let bad = |field| StreamError::BadFrame {
            offset: start,
            field,
        };
        let heartbeat = Heartbeat::from_bytes(&b, self.seed).map_err(bad)?;
        if heartbeat.next_seq != self.next_seq {
            return Err(bad("heartbeat sequence differs from the stream's"));
        }
        if heartbeat.number != self.next_heartbeat {
            return Err(bad("heartbeat number out of order"));
        }
        self.next_heartbeat += 1;
        observe(&Event::Heartbeat {
            offset: start,
            heartbeat,
        });
        Ok(())
    }

    fn read_end(
        &mut self,
        start: u64,
        tag: [u8; 4],
        observe: &mut dyn FnMut(&Event),
    ) -> Result<(), StreamError> {
        let mut b = [0u8; END_LEN];
        b[..4].copy_from_slice(&tag);
        self.exact(&mut b[4..], "end frame")?;
        let end = EndFrame::from_bytes(&b, self.seed).map_err(|field| StreamError::BadFrame {
            offset: start,
            field,
        })?;
        if end.checkpoints != self.next_seq {
            return Err(StreamError::BadFrame {
                offset: start,
                field: "end frame checkpoint count",
            });
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
        observe(&Event::End {
            offset: start,
            checkpoints: end.checkpoints,
        });
        Ok(())
    }

    fn read_body(
        &mut self,
        body: &mut Body,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<(), StreamError> {
        let words = self.header.guest_pages.div_ceil(64) as usize;
        if self.seen.len() < words {
            self.seen.resize(words, 0);
        }
        let mut charged = 0u64;
        loop {
            let offset = self.pos;
            let ty = self.i32("chunk type")?;
            match ty {
                CHUNK_END => return Ok(()),
                n if n > 0 => self.read_batch(body, offset, n, &mut charged, observe)?,
                CHUNK_COMPRESSED_DATA => {
                    if !self.compressed {
                        return Err(StreamError::CompressedBeforeEnable { offset });
                    }
                    let len = self.u64("compressed chunk length")?;
                    if len > self.limits.max_chunk_bytes {
                        return Err(StreamError::ChunkTooLarge {
                            offset,
                            len,
                            limit: self.limits.max_chunk_bytes,
                        });
                    }
                    self.charge(&mut charged, offset, len + CHUNK_COST)?;
                    let start = body.payload.len();
                    let data_at = self.pos;
                    self.append(&mut body.payload, len, "compressed chunk")?;
                    body.chunks.push(ChunkSpan {
                        offset: data_at,
                        start,
                        end: body.payload.len(),
                        data_entries: body.data_pfns.len() as u64,
                        entries: body.entries.len() as u64,
                        whole: false,
                    });
                    observe(&Event::Compressed { offset, len });
                }
                CHUNK_ENABLE_COMPRESSION => {
                    if self.compressed || body.enables_compression {
                        return Err(StreamError::EnableTwice { offset });
                    }
                    body.enables_compression = true;
                    observe(&Event::EnableCompression { offset });
                }
                -6 | -5 => return Err(StreamError::UnsupportedChunk { offset, ty }),
                id => {
                    let len = toolstack_payload_len(id)
                        .ok_or(StreamError::UnknownChunk { offset, ty })?;
                    if body.toolstack.len() as u64 >= self.limits.max_toolstack_chunks {
                        return Err(StreamError::TooManyToolstackChunks {
                            offset,
                            limit: self.limits.max_toolstack_chunks,
                        });
                    }
                    self.charge(&mut charged, offset, len as u64 + TOOLSTACK_COST)?;
                    let mut payload = vec![0u8; len];
                    self.exact(&mut payload, "toolstack chunk")?;
                    body.toolstack.push(ToolstackChunk { id, payload });
                    observe(&Event::Toolstack { offset, id });
                }
            }
        }
    }

    fn read_batch(
        &mut self,
        body: &mut Body,
        offset: u64,
        n: i32,
        charged: &mut u64,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<(), StreamError> {
        if n as usize > MAX_BATCH {
            return Err(StreamError::BatchTooLarge { offset, count: n });
        }
        let n = n as usize;
        if (body.entries.len() + n) as u64 > self.limits.max_checkpoint_entries {
            return Err(StreamError::TooManyEntries {
                offset,
                limit: self.limits.max_checkpoint_entries,
            });
        }
        let mut raw = std::mem::take(&mut self.batch);
        raw.resize(n * 8, 0);
        let read = self.exact(&mut raw, "PFN batch");
        let mut data = 0u32;
        let checked = read.and_then(|()| {
            for (i, b) in raw.chunks_exact(8).enumerate() {
                let at = offset + 4 + 8 * i as u64;
                let e = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                let ty = self.check_entry(e, at)?;
                body.entries.push(e);
                if ty.carries_data() {
                    data += 1;
                    body.data_pfns.push(e & PFN_MASK);
                }
            }
            Ok(())
        });
        self.batch = raw;
        checked?;
        if data > 0 {
            body.batch_ends.push(body.data_pfns.len());
        }
        if !self.compressed {
            // Format A: the batch's page data follows it.
            body.batches.push(n as u32);
            let len = data as u64 * PAGE_SIZE as u64;
            self.charge(charged, offset, len)?;
            self.append(&mut body.payload, len, "page data")?;
        }
        observe(&Event::Batch {
            offset,
            entries: n as u32,
            data,
        });
        Ok(())
    }

    /// Checks one PFN entry and marks its PFN seen; returns its type.
    fn check_entry(&mut self, e: u64, offset: u64) -> Result<PageType, StreamError> {
        if e >> 32 != 0 {
            return Err(StreamError::BadEntry {
                offset,
                entry: e,
                reason: "bits 32..63 are set",
            });
        }
        let ty =
            PageType::from_code((e >> TYPE_SHIFT) as u8 & 0xF).ok_or(StreamError::BadEntry {
                offset,
                entry: e,
                reason: "unknown page type",
            })?;
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
        Ok(ty)
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

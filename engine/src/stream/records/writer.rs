//! The record stream writer (`docs/RECORDS.md`): the headers, then per
//! checkpoint its page records, toolstack records and integrity record,
//! each checkpoint closed by CHECKPOINT, the stream by END. It keeps the
//! checkpoint's check over every byte it writes.
//!
//! A plain writer ([`RecordWriter::plain`]) writes what Xen's own tools
//! read: the two headers, STATIC_DATA_END, PAGE_DATA, CHECKPOINT and END,
//! none of the project's records.

use super::{
    padding, to_xen_entry, DomainHeader, ImageHeader, Integrity, PagesHead, RecordHeader,
    StreamInfo, MAX_PAGE_DATA, REC_CHECKPOINT, REC_CKPT_COMPRESSED_PAGE_DATA,
    REC_CKPT_ENABLE_COMPRESSION, REC_CKPT_INTEGRITY, REC_CKPT_STREAM_INFO, REC_CKPT_TOOLSTACK,
    REC_END, REC_PAGE_DATA, REC_STATIC_DATA_END, STAGE_NONE,
};
use crate::page::{PageType, TYPE_SHIFT};
use crate::stream::crc;
use ckpt_simd::{Page, PAGE_SIZE};
use std::io::{self, Write};

/// PFN entries converted per write, so the scratch buffer stays small.
const ENTRIES_PER_WRITE: usize = 1024;

/// Writes a record stream to any [`Write`].
pub struct RecordWriter<W: Write> {
    w: W,
    written: u64,
    /// The check every checkpoint starts from (CKPT_STREAM_INFO's).
    seed: u32,
    /// The current checkpoint's check so far.
    crc: u32,
    checkpoints: u64,
    /// Without the project's records (Xen's tools read it).
    plain: bool,
    scratch: Vec<u8>,
}

fn not_plain(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a plain Xen stream cannot carry {what}"),
    )
}

fn too_long() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "record body longer than 2^32 - 1 bytes",
    )
}

/// Whether a legacy-layout entry carries page data.
fn carries_data(entry: u64) -> bool {
    PageType::from_code((entry >> TYPE_SHIFT) as u8 & 0xF).is_some_and(|t| t.carries_data())
}

impl<W: Write> RecordWriter<W> {
    /// Writes the image header, the domain header, CKPT_STREAM_INFO and
    /// STATIC_DATA_END.
    pub fn new(w: W, info: &StreamInfo) -> io::Result<Self> {
        let mut s = RecordWriter {
            w,
            written: 0,
            seed: 0,
            crc: 0,
            checkpoints: 0,
            plain: false,
            scratch: Vec::with_capacity(ENTRIES_PER_WRITE * 8),
        };
        s.put(&ImageHeader::default().to_bytes())?;
        s.put(&DomainHeader::default().to_bytes())?;
        s.put(
            &RecordHeader {
                ty: REC_CKPT_STREAM_INFO,
                len: super::STREAM_INFO_LEN as u32,
            }
            .to_bytes(),
        )?;
        let body = info.body(s.crc);
        s.put(&body)?;
        s.seed = u32::from_le_bytes(body[32..36].try_into().expect("4 bytes"));
        s.crc = s.seed;
        s.static_data_end()?;
        Ok(s)
    }

    /// A plain Xen v3 stream: the image header, the domain header and
    /// STATIC_DATA_END; then only PAGE_DATA, CHECKPOINT and END.
    pub fn plain(w: W, domain: &DomainHeader) -> io::Result<Self> {
        let mut s = RecordWriter {
            w,
            written: 0,
            seed: 0,
            crc: 0,
            checkpoints: 0,
            plain: true,
            scratch: Vec::with_capacity(ENTRIES_PER_WRITE * 8),
        };
        s.put(&ImageHeader::default().to_bytes())?;
        s.put(&domain.to_bytes())?;
        s.static_data_end()?;
        Ok(s)
    }

    fn static_data_end(&mut self) -> io::Result<()> {
        let b = RecordHeader {
            ty: REC_STATIC_DATA_END,
            len: 0,
        }
        .to_bytes();
        // Fixed bytes, outside every check: any change to them is another
        // record, which the reader refuses here.
        self.w.write_all(&b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checkpoints completed so far.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.w
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.crc = crc(self.crc, b);
        self.written += b.len() as u64;
        Ok(())
    }

    fn header(&mut self, ty: u32, len: u64) -> io::Result<()> {
        let len = u32::try_from(len).map_err(|_| too_long())?;
        self.put(&RecordHeader { ty, len }.to_bytes())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        self.put(&[0u8; 8][..padding(len)])
    }

    fn entries(&mut self, entries: &[u64]) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.scratch);
        let mut r = Ok(());
        for part in entries.chunks(ENTRIES_PER_WRITE) {
            buf.clear();
            for &e in part {
                buf.extend_from_slice(&to_xen_entry(e).to_le_bytes());
            }
            r = self.put(&buf);
            if r.is_err() {
                break;
            }
        }
        self.scratch = buf;
        r
    }

    /// Opens a checkpoint. A record stream marks only a checkpoint's end,
    /// so this writes nothing; it is here to mirror the legacy writer.
    pub fn begin_checkpoint(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Writes PFN entries (engine layout) as PAGE_DATA records of at most
    /// 1024 entries, each followed by the data of its data-carrying
    /// entries, taken in order from `pages` (Format A).
    pub fn page_data<'p>(
        &mut self,
        entries: &[u64],
        pages: impl IntoIterator<Item = &'p Page>,
    ) -> io::Result<()> {
        let mut pages = pages.into_iter();
        for batch in entries.chunks(MAX_PAGE_DATA) {
            let data = batch.iter().filter(|&&e| carries_data(e)).count();
            let len = 8 + 8 * batch.len() as u64 + (data * PAGE_SIZE) as u64;
            self.header(REC_PAGE_DATA, len)?;
            let mut head = [0u8; 8];
            head[..4].copy_from_slice(&(batch.len() as u32).to_le_bytes());
            self.put(&head)?;
            self.entries(batch)?;
            for _ in 0..data {
                let p = pages.next().expect("one page per data-carrying entry");
                self.put(p)?;
            }
        }
        assert!(pages.next().is_none(), "no page without its entry");
        Ok(())
    }

    /// Writes one CKPT_COMPRESSED_PAGE_DATA record: `entries` (engine
    /// layout, at least one), then the page encodings of its data-carrying
    /// entries (`encoded_len` bytes), given in `payload` as they are
    /// (`zstd: false`) or as zstd frames (`zstd: true`, `payload_len`
    /// bytes, which must have been negotiated in CKPT_STREAM_INFO).
    pub fn compressed_page_data<'p>(
        &mut self,
        entries: &[u64],
        encoded_len: u64,
        zstd: bool,
        payload_len: u64,
        payload: impl IntoIterator<Item = &'p [u8]>,
    ) -> io::Result<()> {
        if self.plain {
            return Err(not_plain("compressed page data"));
        }
        assert!(
            !entries.is_empty(),
            "a page record holds at least one entry"
        );
        assert!(zstd || payload_len == encoded_len);
        let head = PagesHead {
            count: u32::try_from(entries.len()).map_err(|_| too_long())?,
            stage: if zstd { super::STAGE_ZSTD } else { STAGE_NONE },
            encoded_len: u32::try_from(encoded_len).map_err(|_| too_long())?,
        };
        let len = super::PAGES_HEAD_LEN as u64 + 8 * entries.len() as u64 + payload_len;
        self.header(REC_CKPT_COMPRESSED_PAGE_DATA, len)?;
        self.put(&head.to_bytes())?;
        self.entries(entries)?;
        let mut n = 0u64;
        for p in payload {
            self.put(p)?;
            n += p.len() as u64;
        }
        assert_eq!(n, payload_len, "the payload's pieces add up to its length");
        self.pad(len)
    }

    /// Writes a CKPT_TOOLSTACK record: the chunk's type, then its payload.
    pub fn toolstack_chunk(&mut self, id: i32, payload: &[u8]) -> io::Result<()> {
        if self.plain {
            return Err(not_plain("toolstack chunks"));
        }
        let len = 8 + payload.len() as u64;
        self.header(REC_CKPT_TOOLSTACK, len)?;
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&id.to_le_bytes());
        self.put(&head)?;
        self.put(payload)?;
        self.pad(len)
    }

    /// Writes CKPT_ENABLE_COMPRESSION.
    pub fn enable_compression(&mut self) -> io::Result<()> {
        if self.plain {
            return Err(not_plain("ENABLE_COMPRESSION"));
        }
        self.header(REC_CKPT_ENABLE_COMPRESSION, 0)
    }

    /// Closes the checkpoint: CKPT_INTEGRITY with its check over every
    /// byte of the checkpoint's records (not in a plain stream), then
    /// CHECKPOINT; flushes.
    pub fn end_checkpoint(&mut self, data_pages: u64, digest: u128) -> io::Result<()> {
        if !self.plain {
            self.header(REC_CKPT_INTEGRITY, super::INTEGRITY_LEN as u64)?;
            let body = Integrity {
                seq: self.checkpoints,
                data_pages,
                digest,
            }
            .body(self.crc);
            self.put(&body)?;
        }
        self.header(REC_CHECKPOINT, 0)?;
        self.crc = self.seed;
        self.checkpoints += 1;
        self.w.flush()
    }

    /// Writes END, flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(REC_END, 0)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

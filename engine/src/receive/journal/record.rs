//! The journal's records (`docs/REPLICATION.md`, "Journal record"): one
//! per checkpoint, its header, its page entries (each PFN with its page
//! encoding of `docs/FORMAT.md` §1, in body order), the PFNs it zeroes and
//! a commit record whose CRC-32C covers every byte before it. Writing one,
//! and reading one back for recovery, where the journal is a file like any
//! other: every length is checked against the guest before it is used, and
//! every encoding is checked before any is applied.

use super::{u128_at, u32_at, u64_at, RecordFault};
use crate::receive::{PageEncoding, VerifiedCheckpoint};
use crate::Commit;
use ckpt_simd::{validate, EMPTY_MARKER, FULL_MARKER, PAGE_SIZE, WORDS_PER_PAGE};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

const RECORD_MAGIC: &[u8; 8] = b"CKPTJENC";
/// The magic of the earlier format's records (whole pages).
const WHOLE_PAGES_MAGIC: &[u8; 8] = b"CKPTJRNL";
const COMMIT_MAGIC: &[u8; 8] = b"CKPTCMIT";
/// Bytes of a record's header.
pub(super) const RECORD_HEAD_LEN: usize = 96;
/// Bytes before each page entry's encoding: the PFN and the length.
pub(super) const ENTRY_HEAD_LEN: usize = 12;
/// Bytes of a commit record.
pub(super) const COMMIT_LEN: usize = 24;
/// The longest encoding a decoder accepts: 1024 one-word COPY runs (the
/// canonical encoder never writes more than `ckpt_simd::MAX_ENCODED_LEN`,
/// but a stream may carry any valid encoding).
pub(super) const MAX_ENCODING_LEN: usize = WORDS_PER_PAGE + PAGE_SIZE;
/// Bytes gathered before they go to the file.
const WRITE_BUFFER: usize = 1 << 20;

/// A record's header.
#[derive(Clone, Copy, Debug)]
pub(super) struct RecordHead {
    pub(super) generation: u64,
    /// Page entries.
    pub(super) pages: u64,
    /// PFNs zeroed.
    pub(super) zeroed: u64,
    /// Bytes of the entries' encodings, their entry heads not included.
    pub(super) encoded: u64,
    pub(super) commit: Commit,
}

impl RecordHead {
    fn to_bytes(self) -> [u8; RECORD_HEAD_LEN] {
        let mut b = [0u8; RECORD_HEAD_LEN];
        b[..8].copy_from_slice(RECORD_MAGIC);
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.commit.guest_pages.to_le_bytes());
        b[24..32].copy_from_slice(&self.pages.to_le_bytes());
        b[32..40].copy_from_slice(&self.zeroed.to_le_bytes());
        b[40..48].copy_from_slice(&self.encoded.to_le_bytes());
        b[48..64].copy_from_slice(&self.commit.stream_id.to_le_bytes());
        b[64..72].copy_from_slice(&self.commit.seq.to_le_bytes());
        b[72..88].copy_from_slice(&self.commit.digest.to_le_bytes());
        let check = crc32c::crc32c(&b[..88]);
        b[88..92].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Bytes of the whole record, commit record included, when its counts
    /// fit a guest of `guest_pages` pages.
    pub(super) fn len(&self, guest_pages: u64) -> Option<u64> {
        let fits = self.commit.guest_pages == guest_pages
            && self.pages <= guest_pages
            && self.zeroed <= guest_pages
            && self.encoded >= self.pages
            && self.encoded <= self.pages * MAX_ENCODING_LEN as u64;
        fits.then(|| {
            (RECORD_HEAD_LEN + COMMIT_LEN) as u64
                + self.pages * ENTRY_HEAD_LEN as u64
                + self.encoded
                + self.zeroed * 8
        })
    }

    fn entries_at(at: u64) -> u64 {
        at + RECORD_HEAD_LEN as u64
    }

    fn zeroed_at(&self, at: u64) -> u64 {
        RecordHead::entries_at(at) + self.pages * ENTRY_HEAD_LEN as u64 + self.encoded
    }
}

/// What starts at an offset of the journal.
pub(super) enum Head {
    /// A record's header, its own check passed.
    Record(RecordHead),
    /// A header of the earlier format (whole pages) whose check passed:
    /// its generation, and its length when its counts are sane.
    WholePages { generation: u64, len: Option<u64> },
    /// Anything else: the end of the records.
    End,
}

/// Reads what starts at `at` (`file_len` bytes in the journal).
pub(super) fn read_head(r: &mut BufReader<&File>, at: u64, file_len: u64) -> io::Result<Head> {
    if file_len - at < RECORD_HEAD_LEN as u64 {
        // The earlier format's header is 88 bytes: a shorter journal still
        // holds none of its records whole, and none of this format's.
        return Ok(Head::End);
    }
    r.seek(SeekFrom::Start(at))?;
    let mut b = [0u8; RECORD_HEAD_LEN];
    r.read_exact(&mut b)?;
    if &b[..8] == WHOLE_PAGES_MAGIC {
        // Its layout: counts at 24 and 32, CRC-32C of 0..80 at 80.
        if u32_at(&b, 80) != crc32c::crc32c(&b[..80]) {
            return Ok(Head::End);
        }
        let (pages, zeroed) = (u64_at(&b, 24), u64_at(&b, 32));
        let len = (pages <= crate::page::PFN_LIMIT && zeroed <= crate::page::PFN_LIMIT)
            .then(|| 88 + pages * (8 + PAGE_SIZE as u64) + zeroed * 8 + COMMIT_LEN as u64);
        return Ok(Head::WholePages {
            generation: u64_at(&b, 8),
            len,
        });
    }
    if &b[..8] != RECORD_MAGIC || u32_at(&b, 88) != crc32c::crc32c(&b[..88]) || u32_at(&b, 92) != 0
    {
        return Ok(Head::End);
    }
    Ok(Head::Record(RecordHead {
        generation: u64_at(&b, 8),
        pages: u64_at(&b, 24),
        zeroed: u64_at(&b, 32),
        encoded: u64_at(&b, 40),
        commit: Commit {
            stream_id: u128_at(&b, 48),
            guest_pages: u64_at(&b, 16),
            seq: u64_at(&b, 64),
            digest: u128_at(&b, 72),
        },
    }))
}

fn commit_bytes(generation: u64, crc_so_far: u32) -> [u8; COMMIT_LEN] {
    let mut b = [0u8; COMMIT_LEN];
    b[..8].copy_from_slice(COMMIT_MAGIC);
    b[8..16].copy_from_slice(&generation.to_le_bytes());
    let check = crc32c::crc32c_append(crc_so_far, &b[..16]);
    b[16..20].copy_from_slice(&check.to_le_bytes());
    b
}

/// Writes a record at an offset of the journal through a buffer, keeping
/// the CRC-32C of every byte written.
struct RecordWriter<'a> {
    file: &'a File,
    at: u64,
    buf: &'a mut Vec<u8>,
    crc: u32,
    len: u64,
}

impl RecordWriter<'_> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.len += b.len() as u64;
        self.buf.extend_from_slice(b);
        if self.buf.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let start = self.at + self.len - self.buf.len() as u64;
        self.file.write_all_at(self.buf, start)?;
        self.buf.clear();
        Ok(())
    }
}

/// Writes the record of `checkpoint` (with `head`, which counts it) and the
/// PFNs it zeroes at `at`, then its commit record: one sync after both, or
/// (`strict`) one before the commit record and one after. Returns the
/// record's length and the syncs made. `buf` is scratch kept between calls.
pub(super) fn write(
    journal: &File,
    buf: &mut Vec<u8>,
    at: u64,
    head: &RecordHead,
    checkpoint: &VerifiedCheckpoint<'_>,
    zeroed: &[u64],
    strict: bool,
) -> io::Result<(u64, u64)> {
    buf.clear();
    let mut w = RecordWriter {
        file: journal,
        at,
        buf,
        crc: 0,
        len: 0,
    };
    w.put(&head.to_bytes())?;
    for (pfn, page) in checkpoint.pages() {
        let mut e = [0u8; ENTRY_HEAD_LEN];
        e[..8].copy_from_slice(&pfn.to_le_bytes());
        e[8..].copy_from_slice(&(page.encoded_len() as u32).to_le_bytes());
        w.put(&e)?;
        match page {
            PageEncoding::Empty => w.put(&[EMPTY_MARKER])?,
            PageEncoding::Full(p) => {
                w.put(&[FULL_MARKER])?;
                w.put(p)?;
            }
            PageEncoding::Delta(d) => w.put(d)?,
        }
    }
    for z in zeroed {
        w.put(&z.to_le_bytes())?;
    }
    let mut syncs = 0;
    if strict {
        w.flush()?;
        journal.sync_data()?;
        syncs += 1;
    }
    w.put(&commit_bytes(head.generation, w.crc))?;
    w.flush()?;
    journal.sync_data()?;
    Ok((w.len, syncs + 1))
}

/// Whether the record at `at` (whole in the file) ends with a commit
/// record whose CRC matches every byte before it.
pub(super) fn committed(r: &mut BufReader<&File>, at: u64, head: &RecordHead) -> io::Result<bool> {
    let body = head.zeroed_at(at) + head.zeroed * 8 - at;
    r.seek(SeekFrom::Start(at))?;
    let mut crc = 0;
    let mut left = body;
    let mut chunk = vec![0u8; 1 << 16];
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        r.read_exact(&mut chunk[..n])?;
        crc = crc32c::crc32c_append(crc, &chunk[..n]);
        left -= n as u64;
    }
    let mut c = [0u8; COMMIT_LEN];
    r.read_exact(&mut c)?;
    Ok(c == commit_bytes(head.generation, crc))
}

/// Why a record could not be read back.
pub(super) enum ReadError {
    Io(io::Error),
    Fault { offset: u64, fault: RecordFault },
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

/// Calls `f` with each page entry of the record at `at`, in order: its PFN
/// (in the guest) and its encoding (exactly one valid encoding). Stops at
/// the first entry that is not so, or when `f` fails.
pub(super) fn for_each_entry(
    r: &mut BufReader<&File>,
    at: u64,
    head: &RecordHead,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), RecordFault>,
) -> Result<(), ReadError> {
    let guest_pages = head.commit.guest_pages;
    let mut offset = RecordHead::entries_at(at);
    r.seek(SeekFrom::Start(offset))?;
    let mut enc = [0u8; MAX_ENCODING_LEN];
    let mut encoded = 0u64;
    for _ in 0..head.pages {
        let fault = |fault| ReadError::Fault { offset, fault };
        let mut e = [0u8; ENTRY_HEAD_LEN];
        r.read_exact(&mut e)?;
        let pfn = u64_at(&e, 0);
        let len = u32_at(&e, 8) as u64;
        if pfn >= guest_pages {
            return Err(fault(RecordFault::PfnOutsideGuest { pfn, guest_pages }));
        }
        let max = (MAX_ENCODING_LEN as u64).min(head.encoded - encoded);
        if len == 0 || len > max {
            return Err(fault(RecordFault::EncodingLength { len, max }));
        }
        let enc = &mut enc[..len as usize];
        r.read_exact(enc)?;
        match validate(enc) {
            Err(source) => return Err(fault(RecordFault::Encoding { source })),
            Ok((_, used)) if used as u64 != len => {
                return Err(fault(RecordFault::EncodingShort {
                    len,
                    used: used as u64,
                }))
            }
            Ok(_) => {}
        }
        f(pfn, enc).map_err(fault)?;
        encoded += len;
        offset += ENTRY_HEAD_LEN as u64 + len;
    }
    if encoded != head.encoded {
        return Err(ReadError::Fault {
            offset,
            fault: RecordFault::EncodedBytes {
                expected: head.encoded,
                found: encoded,
            },
        });
    }
    Ok(())
}

/// Calls `f` with each PFN the record at `at` zeroes (each in the guest).
pub(super) fn for_each_zeroed(
    r: &mut BufReader<&File>,
    at: u64,
    head: &RecordHead,
    mut f: impl FnMut(u64),
) -> Result<(), ReadError> {
    let guest_pages = head.commit.guest_pages;
    let mut offset = head.zeroed_at(at);
    r.seek(SeekFrom::Start(offset))?;
    for _ in 0..head.zeroed {
        let mut z = [0u8; 8];
        r.read_exact(&mut z)?;
        let pfn = u64::from_le_bytes(z);
        if pfn >= guest_pages {
            return Err(ReadError::Fault {
                offset,
                fault: RecordFault::PfnOutsideGuest { pfn, guest_pages },
            });
        }
        f(pfn);
        offset += 8;
    }
    Ok(())
}

//! Reader for the golden test vectors (`CKPTVEC1`, described in
//! `tests/vectors/README.md`): inputs and the exact bytes the original
//! implementation emitted for them, read one checkpoint at a time so that
//! large files never sit in memory whole.

use ckpt_simd::{Page, PAGE_SIZE};
use std::io::{self, Read};

/// File magic.
pub const MAGIC: &[u8; 8] = b"CKPTVEC1";
/// Bound on records per checkpoint, far above any vector's.
const MAX_RECORDS: u32 = 1 << 22;
/// Bound on one output's length: the original's 64 MiB output buffer.
const MAX_OUTPUT: u64 = 64 << 20;

/// One input page of a vector checkpoint.
pub struct Record {
    /// Guest PFN.
    pub pfn: u64,
    /// Sent raw (page-table page).
    pub raw: bool,
    /// Content the sender holds.
    pub page: Box<Page>,
}

/// One checkpoint: its inputs and the outputs the original emitted.
pub struct VecCheckpoint {
    /// Input pages in send order.
    pub records: Vec<Record>,
    /// Compressed outputs, each one COMPRESSED_DATA payload.
    pub outputs: Vec<Vec<u8>>,
}

/// Streams the checkpoints of one vector file.
pub struct VectorReader<R> {
    inner: R,
    remaining: u32,
    /// Checkpoints the header announced.
    pub checkpoints: u32,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

impl<R: Read> VectorReader<R> {
    /// Checks the magic and reads the checkpoint count.
    pub fn new(mut inner: R) -> io::Result<Self> {
        let mut magic = [0u8; 8];
        inner.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid(format!("not a vector file (magic {magic:02x?})")));
        }
        let checkpoints = read_u32(&mut inner)?;
        Ok(VectorReader {
            inner,
            remaining: checkpoints,
            checkpoints,
        })
    }

    /// The next checkpoint, or `None` after the last.
    pub fn next_checkpoint(&mut self) -> io::Result<Option<VecCheckpoint>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let r = &mut self.inner;
        let n = read_u32(r)?;
        if n > MAX_RECORDS {
            return Err(invalid(format!("{n} records in one checkpoint")));
        }
        let mut records = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let pfn = read_u64(r)?;
            let mut raw = [0u8; 1];
            r.read_exact(&mut raw)?;
            let mut page = Box::new([0u8; PAGE_SIZE]);
            r.read_exact(&mut page[..])?;
            records.push(Record {
                pfn,
                raw: raw[0] != 0,
                page,
            });
        }
        let k = read_u32(r)?;
        if k > n.max(1) {
            return Err(invalid(format!("{k} outputs for {n} records")));
        }
        let mut outputs = Vec::with_capacity(k as usize);
        for _ in 0..k {
            let len = read_u64(r)?;
            if len > MAX_OUTPUT {
                return Err(invalid(format!("output of {len} bytes")));
            }
            let mut out = Vec::new();
            r.by_ref().take(len).read_to_end(&mut out)?;
            if out.len() as u64 != len {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            outputs.push(out);
        }
        Ok(Some(VecCheckpoint { records, outputs }))
    }
}

//! Reader for the golden test vectors (`CKPTVEC1`, described in
//! `tests/vectors/README.md`): inputs and the exact bytes the original
//! implementation emitted for them, read one checkpoint at a time so that
//! large files never sit in memory whole.
//!
//! A vector file is input like any other: every count and length it holds
//! is checked against [`VectorLimits`] before it is used, buffers grow only
//! with bytes that arrive, and after the last checkpoint the reader reads
//! on to the end of the input, so that a compressed file's zstd frame
//! checksum is verified before the file's checkpoints can pass.

use ckpt_simd::{Page, PAGE_SIZE};
use std::io::{self, Read};
use thiserror::Error;

/// File magic.
pub const MAGIC: &[u8; 8] = b"CKPTVEC1";

/// What one vector file may make its reader hold. The defaults are about
/// twice what the bundled vectors need (at most 9,000 records and 34 MB of
/// outputs in a checkpoint, 10,500 distinct pages in a file): 64 MiB of
/// records and 72 MiB of outputs per checkpoint, 128 MiB of pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorLimits {
    /// Most records (input pages) in one checkpoint.
    pub max_records: u32,
    /// Most bytes of all outputs of one checkpoint together.
    pub max_output_bytes: u64,
    /// Most distinct PFNs in a file: a replay keeps the last content of
    /// each (enforced by [`crate::conformance::run_case`]).
    pub max_pages: u64,
}

impl Default for VectorLimits {
    fn default() -> Self {
        VectorLimits {
            max_records: 1 << 14,
            // Every record's worst-case encoding (4105 bytes) fits.
            max_output_bytes: 72 << 20,
            max_pages: 1 << 15,
        }
    }
}

/// A vector file that cannot be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VectorError {
    /// Reading failed: the file ended early, or its zstd frame is damaged
    /// (a checksum mismatch included).
    #[error("read failed in checkpoint {checkpoint}: {source}")]
    Io {
        /// Checkpoint being read (1-based; 0 for the header).
        checkpoint: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the magic.
    #[error("not a vector file (magic {magic:02x?})")]
    NotAVector {
        /// The first eight bytes.
        magic: [u8; 8],
    },
    /// A count or length beyond the limits.
    #[error("checkpoint {checkpoint}: {what} {found} exceeds the limit {limit}")]
    OverLimit {
        /// Checkpoint (1-based).
        checkpoint: u32,
        /// What was counted.
        what: &'static str,
        /// What the file claims.
        found: u64,
        /// The limit.
        limit: u64,
    },
    /// More outputs than a checkpoint of that many records can have.
    #[error("checkpoint {checkpoint}: {outputs} outputs for {records} records")]
    TooManyOutputs {
        /// Checkpoint (1-based).
        checkpoint: u32,
        /// Outputs claimed.
        outputs: u32,
        /// Records.
        records: u32,
    },
    /// Bytes after the last checkpoint.
    #[error("data after checkpoint {checkpoints}, the last the header announced")]
    TrailingData {
        /// Checkpoints announced.
        checkpoints: u32,
    },
}

impl From<VectorError> for io::Error {
    fn from(e: VectorError) -> io::Error {
        match e {
            VectorError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

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
    limits: VectorLimits,
    remaining: u32,
    ended: bool,
    /// Checkpoints the header announced.
    pub checkpoints: u32,
}

impl<R: Read> VectorReader<R> {
    /// Checks the magic and reads the checkpoint count, with the default
    /// limits.
    pub fn new(inner: R) -> Result<Self, VectorError> {
        VectorReader::with_limits(inner, VectorLimits::default())
    }

    /// Checks the magic and reads the checkpoint count.
    pub fn with_limits(mut inner: R, limits: VectorLimits) -> Result<Self, VectorError> {
        let io = |source| VectorError::Io {
            checkpoint: 0,
            source,
        };
        let mut magic = [0u8; 8];
        inner.read_exact(&mut magic).map_err(io)?;
        if &magic != MAGIC {
            return Err(VectorError::NotAVector { magic });
        }
        let mut b = [0u8; 4];
        inner.read_exact(&mut b).map_err(io)?;
        let checkpoints = u32::from_le_bytes(b);
        Ok(VectorReader {
            inner,
            limits,
            remaining: checkpoints,
            ended: false,
            checkpoints,
        })
    }

    /// The next checkpoint, or `None` after the last, once the input has
    /// been read to its end (and a zstd frame's checksum verified).
    pub fn next_checkpoint(&mut self) -> Result<Option<VecCheckpoint>, VectorError> {
        if self.ended {
            return Ok(None);
        }
        let index = self.checkpoints - self.remaining + 1;
        let io = |source| VectorError::Io {
            checkpoint: index,
            source,
        };
        if self.remaining == 0 {
            let mut one = [0u8; 1];
            loop {
                match self.inner.read(&mut one) {
                    Ok(0) => break,
                    Ok(_) => {
                        return Err(VectorError::TrailingData {
                            checkpoints: self.checkpoints,
                        })
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io(e)),
                }
            }
            self.ended = true;
            return Ok(None);
        }
        self.remaining -= 1;
        let limits = self.limits;
        let over = |what, found: u64, limit: u64| VectorError::OverLimit {
            checkpoint: index,
            what,
            found,
            limit,
        };
        let r = &mut self.inner;
        let n = read_u32(r).map_err(io)?;
        if n > limits.max_records {
            return Err(over("records", n as u64, limits.max_records as u64));
        }
        // Grown record by record: the count is only a claim until they arrive.
        let mut records = Vec::new();
        for _ in 0..n {
            let pfn = read_u64(r).map_err(io)?;
            let mut raw = [0u8; 1];
            r.read_exact(&mut raw).map_err(io)?;
            let mut page = Box::new([0u8; PAGE_SIZE]);
            r.read_exact(&mut page[..]).map_err(io)?;
            records.push(Record {
                pfn,
                raw: raw[0] != 0,
                page,
            });
        }
        let k = read_u32(r).map_err(io)?;
        if k > n.max(1) {
            return Err(VectorError::TooManyOutputs {
                checkpoint: index,
                outputs: k,
                records: n,
            });
        }
        let mut outputs = Vec::new();
        let mut total = 0u64;
        for _ in 0..k {
            let len = read_u64(r).map_err(io)?;
            total = total.saturating_add(len);
            if total > limits.max_output_bytes {
                return Err(over("output bytes", total, limits.max_output_bytes));
            }
            let mut out = Vec::new();
            r.by_ref().take(len).read_to_end(&mut out).map_err(io)?;
            if out.len() as u64 != len {
                return Err(io(io::ErrorKind::UnexpectedEof.into()));
            }
            outputs.push(out);
        }
        Ok(Some(VecCheckpoint { records, outputs }))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(checkpoints: u32, body: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&checkpoints.to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn reader(b: &[u8]) -> VectorReader<&[u8]> {
        VectorReader::with_limits(
            b,
            VectorLimits {
                max_records: 4,
                max_output_bytes: 100,
                max_pages: 4,
            },
        )
        .unwrap()
    }

    #[test]
    fn counts_and_lengths_are_checked_before_use() {
        // 5 records claimed, none sent.
        let b = file(1, &5u32.to_le_bytes());
        let e = reader(&b).next_checkpoint().err().unwrap();
        assert!(
            matches!(
                e,
                VectorError::OverLimit {
                    what: "records",
                    found: 5,
                    limit: 4,
                    ..
                }
            ),
            "{e}"
        );
        // Two outputs of 60 bytes claimed: the second passes the limit.
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&60u64.to_le_bytes());
        body.extend_from_slice(&[0; 60]);
        let b = file(1, &body);
        assert!(reader(&b).next_checkpoint().unwrap().is_some());
        let mut body = 1u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8 + 1 + PAGE_SIZE]);
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&101u64.to_le_bytes());
        let b = file(1, &body);
        let e = reader(&b).next_checkpoint().err().unwrap();
        assert!(
            matches!(
                e,
                VectorError::OverLimit {
                    what: "output bytes",
                    found: 101,
                    ..
                }
            ),
            "{e}"
        );
        // Two outputs for one record.
        let mut body = 1u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8 + 1 + PAGE_SIZE]);
        body.extend_from_slice(&2u32.to_le_bytes());
        let b = file(1, &body);
        let e = reader(&b).next_checkpoint().err().unwrap();
        assert!(matches!(
            e,
            VectorError::TooManyOutputs {
                outputs: 2,
                records: 1,
                ..
            }
        ));
        // A record cut short.
        let mut body = 1u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 100]);
        let b = file(1, &body);
        let e = reader(&b).next_checkpoint().err().unwrap();
        assert!(matches!(e, VectorError::Io { checkpoint: 1, .. }), "{e}");
    }

    #[test]
    fn the_end_is_read_to_the_end() {
        let empty = [0u32.to_le_bytes(), 0u32.to_le_bytes()].concat();
        let b = file(1, &empty);
        let mut r = reader(&b);
        assert!(r.next_checkpoint().unwrap().is_some());
        assert!(r.next_checkpoint().unwrap().is_none());
        assert!(r.next_checkpoint().unwrap().is_none());
        let mut longer = b.clone();
        longer.push(0);
        let mut r = reader(&longer);
        assert!(r.next_checkpoint().unwrap().is_some());
        assert!(matches!(
            r.next_checkpoint(),
            Err(VectorError::TrailingData { checkpoints: 1 })
        ));
        assert!(matches!(
            VectorReader::new(&b"CKPTVEC2\0\0\0\0"[..]),
            Err(VectorError::NotAVector { .. })
        ));
    }

    #[test]
    fn a_damaged_zstd_frame_is_an_error_even_after_the_last_checkpoint() {
        let empty = [0u32.to_le_bytes(), 0u32.to_le_bytes()].concat();
        let raw = file(1, &empty);
        let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        z.include_checksum(true).unwrap();
        std::io::Write::write_all(&mut z, &raw).unwrap();
        let good = z.finish().unwrap();
        let read_all = |b: &[u8]| -> Result<u32, VectorError> {
            let dec = zstd::stream::read::Decoder::new(b).map_err(|source| VectorError::Io {
                checkpoint: 0,
                source,
            })?;
            let mut r = VectorReader::new(dec)?;
            let mut n = 0;
            while r.next_checkpoint()?.is_some() {
                n += 1;
            }
            Ok(n)
        };
        assert_eq!(read_all(&good).unwrap(), 1);
        // The last four bytes of the frame are its checksum.
        let mut bad = good.clone();
        let at = bad.len() - 2;
        bad[at] ^= 1;
        assert!(read_all(&bad).is_err());
    }
}

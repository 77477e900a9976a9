//! The zstd stage of a compressed page record (`docs/RECORDS.md`,
//! "CKPT_COMPRESSED_PAGE_DATA"): the record's page encodings as one or more
//! zstd frames, compressed from the pieces the encoder left them in and
//! decompressed into a buffer no larger than the record says.
//!
//! Each thread keeps one compression and one decompression context, so a
//! frame costs no allocation after a thread's first.

use super::RecordError;
use std::cell::RefCell;
use std::io;
use zstd::zstd_safe::{self, zstd_sys::ZSTD_EndDirective, CCtx, DCtx, InBuffer, OutBuffer};

thread_local! {
    static CCTX: RefCell<Option<(i32, CCtx<'static>)>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

fn zstd_err(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

/// Appends one zstd frame at `level` holding the `len` bytes given in
/// `pieces` to `out`.
pub fn compress_frame<'a>(
    level: i32,
    len: usize,
    pieces: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    CCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let mut cctx = CCtx::try_create().ok_or_else(|| io::Error::other("zstd: no memory"))?;
            cctx.set_parameter(zstd_safe::CParameter::CompressionLevel(level))
                .map_err(zstd_err)?;
            *slot = Some((level, cctx));
        }
        let (_, cctx) = slot.as_mut().expect("set above");
        cctx.reset(zstd_safe::ResetDirective::SessionOnly)
            .map_err(zstd_err)?;
        cctx.set_pledged_src_size(Some(len as u64))
            .map_err(zstd_err)?;
        let start = out.len();
        // The bound of one frame of `len` bytes: no output step can run out.
        out.reserve(zstd_safe::compress_bound(len));
        let mut output = OutBuffer::around_pos(out, start);
        for piece in pieces {
            let mut input = InBuffer::around(piece);
            while input.pos() < piece.len() {
                cctx.compress_stream2(&mut output, &mut input, ZSTD_EndDirective::ZSTD_e_continue)
                    .map_err(zstd_err)?;
            }
        }
        let mut empty = InBuffer::around(&[]);
        while cctx
            .compress_stream2(&mut output, &mut empty, ZSTD_EndDirective::ZSTD_e_end)
            .map_err(zstd_err)?
            != 0
        {}
        Ok(())
    })
}

/// Decompresses a record's zstd payload (one or more frames), which must
/// give exactly `expected` bytes, and appends them to `out`. `scratch`
/// holds them in between: it is reserved to `expected` bytes, which the
/// caller has checked against its limits, zstd writes no further than its
/// capacity (which only earlier records, under the same limits, may have
/// made larger), and only the bytes zstd writes are touched. `offset` is
/// the payload's, for errors.
pub fn decompress_into(
    payload: &[u8],
    expected: usize,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    offset: u64,
) -> Result<(), RecordError> {
    scratch.clear();
    scratch.reserve(expected);
    let found = DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(DCtx::try_create().ok_or(RecordError::Decompress {
                offset,
                reason: "no memory for a decompression context",
            })?);
        }
        let dctx = slot.as_mut().expect("set above");
        dctx.decompress(scratch, payload)
            .map_err(|code| RecordError::Decompress {
                offset,
                reason: zstd_safe::get_error_name(code),
            })
    })?;
    if found != expected {
        return Err(RecordError::StageLength {
            offset,
            expected: expected as u64,
            found: found as u64,
        });
    }
    out.extend_from_slice(scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_from_pieces_round_trip_and_lengths_are_exact() {
        let a: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let b = vec![7u8; 3000];
        let mut framed = Vec::new();
        compress_frame(1, a.len() + b.len(), [&a[..], &b[..]], &mut framed).unwrap();
        let one = framed.len();
        // A second frame after the first: the payload is their concatenation.
        compress_frame(-5, b.len(), [&b[..]], &mut framed).unwrap();
        assert!(framed.len() > one);
        let (mut scratch, mut out) = (Vec::new(), vec![1u8, 2]);
        let total = a.len() + 2 * b.len();
        decompress_into(&framed, total, &mut scratch, &mut out, 0).unwrap();
        let mut want = vec![1u8, 2];
        want.extend_from_slice(&a);
        want.extend_from_slice(&b);
        want.extend_from_slice(&b);
        assert_eq!(out, want);
        // One byte fewer allowed than the frames hold: refused, whether
        // zstd runs out of room or finds it too long, and nothing appended.
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        assert!(matches!(
            decompress_into(&framed, total - 1, &mut fresh, &mut out, 9),
            Err(RecordError::Decompress { offset: 9, .. }
                | RecordError::StageLength { offset: 9, .. })
        ));
        assert!(out.is_empty());
        // One byte more expected than the frames hold.
        assert!(matches!(
            decompress_into(&framed, total + 1, &mut scratch, &mut out, 9),
            Err(RecordError::StageLength { found, .. }) if found == total as u64
        ));
        // Garbage.
        assert!(decompress_into(&[1, 2, 3, 4, 5], 10, &mut scratch, &mut out, 0).is_err());
    }
}

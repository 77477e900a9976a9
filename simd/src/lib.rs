//! Page codec for Remus-style checkpoint compression.
//!
//! One page (4096 bytes) is encoded against its *reference copy* (the bytes the
//! receiver already holds) as one of three forms, specified in `docs/FORMAT.md`
//! section 1 ("Page encoding"):
//!
//! | form  | bytes                  | meaning                               |
//! |-------|------------------------|---------------------------------------|
//! | EMPTY | `0x00`                 | the page equals its reference copy    |
//! | FULL  | `0x80` + 4096 bytes    | the whole page, no reference used     |
//! | DELTA | markers (see below)    | only the changed 4-byte words         |
//!
//! A DELTA marker is one byte: bit 7 is the kind (0 = COPY, 1 = SKIP), bits
//! 0..6 the run length in words (1..=127). COPY is followed by the new bytes of
//! those words. Markers always cover exactly 1024 words.
//!
//! The crate holds the scalar reference ([`scalar`]), one generic algorithm
//! instantiated per instruction set (SSE2, AVX2, AVX-512BW, NEON), and the
//! run-time dispatch that picks among them ([`Codec`], [`Kernel`]).
//! Every kernel produces bytes identical to the scalar reference.
#![deny(missing_docs)]

mod dispatch;
mod error;
mod fingerprint;
mod generic;
pub mod scalar;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

pub use dispatch::{Codec, Kernel, KernelUnavailable, UnknownKernel};
pub use error::{DecodeError, EncodeError};
pub use fingerprint::FingerprintKey;

/// Bytes in a guest page.
pub const PAGE_SIZE: usize = 4096;
/// Bytes in a word, the delta granularity.
pub const WORD_SIZE: usize = 4;
/// Words in a page.
pub const WORDS_PER_PAGE: usize = PAGE_SIZE / WORD_SIZE;
/// Longest run one marker can describe, in words.
pub const MAX_RUN: usize = 127;
/// First byte of an EMPTY page encoding (page equals its reference).
pub const EMPTY_MARKER: u8 = 0x00;
/// First byte of a FULL page encoding (4096 bytes follow).
pub const FULL_MARKER: u8 = 0x80;
/// Bit 7 of a DELTA marker: set for SKIP, clear for COPY.
pub const SKIP_FLAG: u8 = 0x80;
/// Size of a FULL page encoding.
pub const FULL_ENCODED_LEN: usize = 1 + PAGE_SIZE;
/// Largest DELTA encoding: every word changed, 8 markers of 127 words and
/// one of 8 words. The canonical encoder does not fall back to FULL here.
pub const MAX_DELTA_LEN: usize = PAGE_SIZE + WORDS_PER_PAGE.div_ceil(MAX_RUN);
/// Largest encoding of any form: an output buffer this long never fails.
pub const MAX_ENCODED_LEN: usize = MAX_DELTA_LEN;

/// A guest page.
pub type Page = [u8; PAGE_SIZE];

/// Which 4-byte words of a page differ from its reference (bit `w` of the
/// 1024): the encoder's first pass, kept apart so that a caller can run it
/// over several pages in a row, which lets the memory system fetch their
/// cold references together, before encoding each
/// ([`Codec::change_map`], [`Codec::encode_changes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeMap(pub(crate) [u64; WORDS_PER_PAGE / 64]);

impl Default for ChangeMap {
    fn default() -> ChangeMap {
        ChangeMap([0; WORDS_PER_PAGE / 64])
    }
}

/// Which of the three forms a page encoding takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    /// `0x00`: unchanged.
    Empty,
    /// `0x80` followed by the whole page.
    Full,
    /// Run markers with the changed words.
    Delta,
}

impl Form {
    /// The form of an encoding, from its first byte.
    pub fn of_first_byte(byte: u8) -> Form {
        match byte {
            EMPTY_MARKER => Form::Empty,
            FULL_MARKER => Form::Full,
            _ => Form::Delta,
        }
    }
}

/// Encodes `page` as FULL into `out`; returns the bytes written (4097).
pub fn encode_full(page: &Page, out: &mut [u8]) -> Result<usize, EncodeError> {
    let capacity = out.len();
    let dst = out
        .get_mut(..FULL_ENCODED_LEN)
        .ok_or(EncodeError::OutputTooSmall { capacity })?;
    dst[0] = FULL_MARKER;
    dst[1..].copy_from_slice(page);
    Ok(FULL_ENCODED_LEN)
}

/// Checks one page encoding at the start of `input` without applying it.
///
/// Returns its form and its length in bytes. Accepts exactly what the decoders
/// accept (it is the same walk, with nothing written), so a chunk can be
/// validated whole before any page is written.
pub fn validate(input: &[u8]) -> Result<(Form, usize), DecodeError> {
    walk(input, &mut Validate)
}

/// Where a walk over one page encoding sends what it finds: the FULL page's
/// data, or each COPY run's new bytes with the byte offset in the page they
/// belong at. SKIP runs need no action. The walk has checked every bound
/// before it calls the sink: `data` lies inside the input, and
/// `at + data.len() <= PAGE_SIZE`.
pub(crate) trait Sink {
    /// A FULL page: `data` is its 4096 bytes.
    fn full(&mut self, data: &[u8; PAGE_SIZE]);
    /// A COPY run: `data` (a whole number of words) goes at byte `at`.
    fn copy(&mut self, at: usize, data: &[u8]);
}

/// The sink that writes nothing: validation.
struct Validate;

impl Sink for Validate {
    #[inline(always)]
    fn full(&mut self, _: &[u8; PAGE_SIZE]) {}
    #[inline(always)]
    fn copy(&mut self, _: usize, _: &[u8]) {}
}

/// The one reader of the page encoding (`docs/FORMAT.md` §1): walks the
/// encoding at the start of `input`, checks every rule, hands each piece of
/// data to `sink`, and returns the form and the bytes used. Validation and
/// every decoder are this walk over different sinks.
#[inline(always)]
pub(crate) fn walk<S: Sink>(input: &[u8], sink: &mut S) -> Result<(Form, usize), DecodeError> {
    match *input.first().ok_or(DecodeError::Empty)? {
        EMPTY_MARKER => Ok((Form::Empty, 1)),
        FULL_MARKER => {
            let data = input
                .get(1..1 + PAGE_SIZE)
                .ok_or(DecodeError::TruncatedFull {
                    available: input.len() - 1,
                })?;
            sink.full(data.try_into().expect("the range is PAGE_SIZE long"));
            Ok((Form::Full, FULL_ENCODED_LEN))
        }
        _ => {
            let mut at = 0usize;
            let mut covered = 0usize;
            while covered < WORDS_PER_PAGE {
                let marker = *input.get(at).ok_or(DecodeError::TruncatedMarkers {
                    offset: at,
                    covered_words: covered,
                })?;
                let words = (marker & !SKIP_FLAG) as usize;
                if words == 0 {
                    return Err(DecodeError::ZeroLengthRun { offset: at });
                }
                if covered + words > WORDS_PER_PAGE {
                    return Err(DecodeError::RunPastPageEnd {
                        offset: at,
                        word: covered,
                        run_words: words,
                    });
                }
                at += 1;
                if marker & SKIP_FLAG == 0 {
                    let bytes = words * WORD_SIZE;
                    let data = input.get(at..at + bytes).ok_or(DecodeError::TruncatedRun {
                        offset: at,
                        needed: bytes,
                        available: input.len().saturating_sub(at),
                    })?;
                    sink.copy(covered * WORD_SIZE, data);
                    at += bytes;
                }
                covered += words;
            }
            Ok((Form::Delta, at))
        }
    }
}

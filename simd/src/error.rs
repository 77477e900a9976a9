//! Typed errors of the page codec.

use thiserror::Error;

/// Why a page could not be encoded. The reference copy is left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer cannot hold the encoding. [`crate::MAX_ENCODED_LEN`]
    /// bytes always suffice.
    #[error("output buffer of {capacity} bytes is too small for the page encoding")]
    OutputTooSmall {
        /// Length of the buffer that was given.
        capacity: usize,
    },
}

/// Why a page encoding was rejected. Offsets count from the start of the
/// encoding. A decoder never reads or writes out of bounds, whatever the input;
/// on error the target page may hold part of the update, so callers that need
/// all-or-nothing run [`crate::validate`] first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No byte at all where a page encoding should start.
    #[error("empty input: no page encoding")]
    Empty,
    /// A FULL marker followed by fewer than 4096 bytes.
    #[error("FULL page truncated: {available} of 4096 bytes present")]
    TruncatedFull {
        /// Bytes present after the marker.
        available: usize,
    },
    /// A marker with length 0 inside a DELTA (only `0x00`/`0x80` as the first
    /// byte have meaning, as EMPTY and FULL).
    #[error("zero-length run marker at offset {offset}")]
    ZeroLengthRun {
        /// Offset of the marker.
        offset: usize,
    },
    /// A run that would end past word 1024.
    #[error(
        "run of {run_words} words at offset {offset} starts at word {word} and passes the page end"
    )]
    RunPastPageEnd {
        /// Offset of the marker.
        offset: usize,
        /// Word of the page where the run starts.
        word: usize,
        /// Length of the run in words.
        run_words: usize,
    },
    /// A COPY marker whose data is cut short.
    #[error("copy run at offset {offset} needs {needed} bytes, {available} present")]
    TruncatedRun {
        /// Offset of the run's data.
        offset: usize,
        /// Bytes the run needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// Input ended before the markers covered the page.
    #[error("input ends at offset {offset} with only {covered_words} of 1024 words covered")]
    TruncatedMarkers {
        /// Offset where a marker was expected.
        offset: usize,
        /// Words covered so far.
        covered_words: usize,
    },
}

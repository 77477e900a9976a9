//! Which wire format a stream uses, and the zstd stage a record stream may
//! pass its page encodings through (`docs/STREAM.md` for the legacy
//! format, `docs/RECORDS.md` for the record stream).

use std::fmt;
use std::str::FromStr;

/// A stream's wire format. A receiver tells them apart by their first
/// eight bytes; a sender is told which to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// ckpt's stream version 2: a header and frames around the legacy
    /// save-stream body (`docs/STREAM.md`).
    #[default]
    Legacy,
    /// Xen's migration stream version 3 with the project's records
    /// (`docs/RECORDS.md`).
    Records,
}

impl Format {
    /// The format's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Legacy => "legacy",
            Format::Records => "records",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "legacy" => Ok(Format::Legacy),
            "records" => Ok(Format::Records),
            other => Err(format!(
                "unknown stream format {other:?} (legacy or records)"
            )),
        }
    }
}

/// The zstd level a record stream's stage uses unless told otherwise.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// The levels the zstd stage accepts: zstd's own range (negative levels
/// trade ratio for speed).
pub fn zstd_levels() -> std::ops::RangeInclusive<i32> {
    zstd::zstd_safe::min_c_level()..=zstd::zstd_safe::max_c_level()
}

/// The zstd stage over a record stream's page encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZstdStage {
    /// zstd's level: negative levels are faster, higher ones smaller.
    pub level: i32,
    /// Where on the sender the stage runs.
    pub placement: ZstdPlacement,
}

impl Default for ZstdStage {
    fn default() -> Self {
        ZstdStage {
            level: DEFAULT_ZSTD_LEVEL,
            placement: ZstdPlacement::default(),
        }
    }
}

/// Where the sender runs the zstd stage. Both write the same format: a
/// compressed page record's payload is one or more zstd frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ZstdPlacement {
    /// In the encode segments, on the encoder's worker pool: each segment
    /// compresses its own encodings, while they are in cache, into a frame
    /// of its own (with more than one thread, a record carries several).
    #[default]
    Segments,
    /// On a thread of its own between encoding and writing: one frame per
    /// record, compressed while the next batch is encoded.
    Thread,
}

impl ZstdPlacement {
    /// The placement's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ZstdPlacement::Segments => "segments",
            ZstdPlacement::Thread => "thread",
        }
    }
}

impl FromStr for ZstdPlacement {
    type Err = String;

    fn from_str(s: &str) -> Result<ZstdPlacement, String> {
        match s {
            "segments" => Ok(ZstdPlacement::Segments),
            "thread" => Ok(ZstdPlacement::Thread),
            other => Err(format!(
                "unknown zstd placement {other:?} (segments or thread)"
            )),
        }
    }
}

//! The wire-format flags that `compress`, `bench`, `restore`, `inspect`
//! and `convert` share: `--format legacy|records`, `--zstd-level N|off`
//! and `--zstd-placement segments|thread`.

use crate::config::FlagSet;
pub use crate::config::{parse_zstd_level, ZstdLevel};
use ckpt_engine::{Format, ZstdPlacement};

/// Flags choosing the stream a sender writes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FormatArgs {
    /// Wire format: legacy (ckpt stream v2 around the Remus body) or
    /// records (Xen migration stream v3 with ckpt's records).
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// zstd stage over a record stream's page encodings: a level
    /// (negative: faster) or "off" (default: the config's, 1).
    #[arg(long, value_parser = parse_zstd_level, allow_hyphen_values = true)]
    pub zstd_level: Option<ZstdLevel>,
    /// Where the sender runs the zstd stage: in the encode segments (one
    /// frame per segment) or on a thread of its own (one frame per record).
    #[arg(long, value_parser = parse_placement)]
    pub zstd_placement: Option<ZstdPlacement>,
}

/// Parses a format name for clap.
pub fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

fn parse_placement(s: &str) -> Result<ZstdPlacement, String> {
    s.parse()
}

impl FormatArgs {
    /// The keys these flags set ([stream]). A zstd flag with a legacy
    /// stream in force is refused by [`super::Context::with_flags`]: the
    /// legacy stream has no stage.
    pub fn flags(&self, f: &mut FlagSet) {
        f.opt("stream.format", "--format", self.format.map(Format::name));
        f.opt("stream.zstd_level", "--zstd-level", self.zstd_level);
        f.opt(
            "stream.zstd_placement",
            "--zstd-placement",
            self.zstd_placement.map(ZstdPlacement::name),
        );
    }
}

/// Flags a reader checks a stream against: it tells the format by its
/// first bytes, and refuses one that is not what was asked for.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ExpectArgs {
    /// Refuse a stream of the other wire format (legacy or records).
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// Refuse a record stream whose zstd stage is not at this level ("off":
    /// without a stage).
    #[arg(long, value_parser = parse_zstd_level, allow_hyphen_values = true)]
    pub zstd_level: Option<ZstdLevel>,
}

impl ExpectArgs {
    /// The format to expect: `--zstd-level` implies records.
    pub fn format(&self) -> Option<Format> {
        self.format.or(self.zstd_level.map(|_| Format::Records))
    }

    /// Whether a stream with this zstd stage is what was asked for.
    pub fn check_level(&self, stage: Option<i32>) -> Result<(), String> {
        match self.zstd_level {
            Some(want) if want.level() != stage => Err(format!(
                "the stream's zstd stage is {}, not {}",
                stage.map_or("off".into(), |l| format!("level {l}")),
                want.level().map_or("off".into(), |l| format!("level {l}")),
            )),
            _ => Ok(()),
        }
    }
}

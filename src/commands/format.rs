//! The wire-format flags that `compress`, `bench`, `restore`, `inspect`
//! and `convert` share: `--format legacy|records`, `--zstd-level N|off`
//! and `--zstd-placement segments|thread`.

use super::Usage;
use ckpt_engine::{Format, SenderOptions, ZstdPlacement, ZstdStage, DEFAULT_ZSTD_LEVEL};

/// A zstd level, or no stage at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZstdLevel {
    /// No zstd stage: the page encodings as they are.
    Off,
    /// zstd at this level (negative levels are faster).
    Level(i32),
}

/// Parses `off` or a zstd level for clap.
pub fn parse_zstd_level(s: &str) -> Result<ZstdLevel, String> {
    if s == "off" {
        return Ok(ZstdLevel::Off);
    }
    let level: i32 = s
        .parse()
        .map_err(|_| format!("{s:?} is neither a zstd level nor \"off\""))?;
    let levels = ckpt_engine::stream::zstd_levels();
    if !levels.contains(&level) {
        return Err(format!(
            "zstd level {level} is outside {}..={}",
            levels.start(),
            levels.end()
        ));
    }
    Ok(ZstdLevel::Level(level))
}

impl ZstdLevel {
    /// The level, or `None` without the stage.
    pub fn level(self) -> Option<i32> {
        match self {
            ZstdLevel::Off => None,
            ZstdLevel::Level(l) => Some(l),
        }
    }
}

/// Flags choosing the stream a sender writes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FormatArgs {
    /// Wire format: legacy (ckpt stream v2 around the Remus body) or
    /// records (Xen migration stream v3 with ckpt's records).
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// zstd stage over a record stream's page encodings: a level
    /// (negative: faster) or "off"; default 1 with --format records.
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
    /// Sets the sender's format and stage. A zstd flag without
    /// `--format records` is a usage error: the legacy stream has no stage.
    pub fn apply(&self, opts: &mut SenderOptions) -> Result<(), Usage> {
        let format = self.format.unwrap_or_default();
        if format == Format::Legacy && (self.zstd_level.is_some() || self.zstd_placement.is_some())
        {
            return Err(Usage(
                "--zstd-level and --zstd-placement need --format records (the legacy stream has no zstd stage)".into(),
            ));
        }
        opts.format = format;
        opts.zstd = match (format, self.zstd_level) {
            (Format::Legacy, _) | (Format::Records, Some(ZstdLevel::Off)) => None,
            (Format::Records, level) => Some(ZstdStage {
                level: level
                    .and_then(ZstdLevel::level)
                    .unwrap_or(DEFAULT_ZSTD_LEVEL),
                placement: self.zstd_placement.unwrap_or_default(),
            }),
        };
        Ok(())
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

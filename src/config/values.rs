//! Values that are written as a number or a word (`cache_pages = "auto"`,
//! `zstd_level = "off"`), and the engine's enums written by name.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// The delta cache's size: a number of pages, or sized adaptively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "NumberOrWord", into = "NumberOrWord")]
pub enum CacheSize {
    /// A fixed number of pages.
    Pages(usize),
    /// Sized to the working set within the budget.
    Auto,
}

/// How a number-or-word value is written in TOML.
#[derive(Serialize)]
#[serde(untagged)]
enum NumberOrWord {
    Number(i64),
    Word(String),
}

impl<'de> Deserialize<'de> for NumberOrWord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NumberOrWord;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a word (\"auto\", \"off\")")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NumberOrWord, E> {
                Ok(NumberOrWord::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NumberOrWord, E> {
                i64::try_from(v)
                    .map(NumberOrWord::Number)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NumberOrWord, E> {
                Ok(NumberOrWord::Word(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl TryFrom<NumberOrWord> for CacheSize {
    type Error = String;

    fn try_from(r: NumberOrWord) -> Result<Self, String> {
        match r {
            // Zero and negatives are kept for the range check to name.
            NumberOrWord::Number(n) if n >= 0 => Ok(CacheSize::Pages(n as usize)),
            NumberOrWord::Number(n) => Err(format!("cache size {n} is not a number of pages")),
            NumberOrWord::Word(w) if w.eq_ignore_ascii_case("auto") => Ok(CacheSize::Auto),
            NumberOrWord::Word(w) => Err(format!(
                "cache size {w:?} is neither a number of pages nor \"auto\""
            )),
        }
    }
}

impl From<CacheSize> for NumberOrWord {
    fn from(s: CacheSize) -> Self {
        match s {
            CacheSize::Pages(n) => NumberOrWord::Number(n as i64),
            CacheSize::Auto => NumberOrWord::Word("auto".into()),
        }
    }
}

impl FromStr for CacheSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(CacheSize::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(CacheSize::Pages(n)),
            _ => Err(format!(
                "cache size {s:?} is neither a positive number of pages nor \"auto\""
            )),
        }
    }
}

impl std::fmt::Display for CacheSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheSize::Pages(n) => write!(f, "{n}"),
            CacheSize::Auto => f.write_str("auto"),
        }
    }
}

/// A zstd level, or no stage at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "NumberOrWord", into = "NumberOrWord")]
pub enum ZstdLevel {
    /// No zstd stage: the page encodings as they are.
    Off,
    /// zstd at this level (negative levels are faster).
    Level(i32),
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

impl TryFrom<NumberOrWord> for ZstdLevel {
    type Error = String;

    fn try_from(r: NumberOrWord) -> Result<Self, String> {
        match r {
            NumberOrWord::Number(n) => i32::try_from(n)
                .map(ZstdLevel::Level)
                .map_err(|_| format!("zstd level {n} is outside {:?}", zstd_range())),
            NumberOrWord::Word(w) if w == "off" => Ok(ZstdLevel::Off),
            NumberOrWord::Word(w) => Err(format!("{w:?} is neither a zstd level nor \"off\"")),
        }
    }
}

impl From<ZstdLevel> for NumberOrWord {
    fn from(l: ZstdLevel) -> Self {
        match l {
            ZstdLevel::Off => NumberOrWord::Word("off".into()),
            ZstdLevel::Level(n) => NumberOrWord::Number(n.into()),
        }
    }
}

fn zstd_range() -> std::ops::RangeInclusive<i32> {
    ckpt_engine::stream::zstd_levels()
}

/// Parses `off` or a zstd level for clap.
pub fn parse_zstd_level(s: &str) -> Result<ZstdLevel, String> {
    if s == "off" {
        return Ok(ZstdLevel::Off);
    }
    let level: i32 = s
        .parse()
        .map_err(|_| format!("{s:?} is neither a zstd level nor \"off\""))?;
    let levels = zstd_range();
    if !levels.contains(&level) {
        return Err(format!(
            "zstd level {level} is outside {}..={}",
            levels.start(),
            levels.end()
        ));
    }
    Ok(ZstdLevel::Level(level))
}

impl std::fmt::Display for ZstdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ZstdLevel::Off => f.write_str("off"),
            ZstdLevel::Level(n) => write!(f, "{n}"),
        }
    }
}

/// How the backup's image makes commits durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityMode {
    /// Write-ahead journal: data, fsync, commit record, fsync, apply; the
    /// image synced and the journal retired before the next commit.
    Journal,
    /// Journal with one fsync per checkpoint, retired every 64 MiB.
    Grouped,
    /// No journal, pages written in place (not crash-consistent; for
    /// measuring the journal's cost).
    InPlace,
}

impl DurabilityMode {
    /// The name in configuration files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DurabilityMode::Journal => "journal",
            DurabilityMode::Grouped => "grouped",
            DurabilityMode::InPlace => "in-place",
        }
    }
}

/// An engine enum that has a name on the command line.
pub trait Named: Sized + FromStr {
    /// The name.
    fn name_of(&self) -> &'static str;
}

impl Named for ckpt_engine::CachePolicy {
    fn name_of(&self) -> &'static str {
        self.name()
    }
}

impl Named for ckpt_engine::Format {
    fn name_of(&self) -> &'static str {
        self.name()
    }
}

impl Named for ckpt_engine::ZstdPlacement {
    fn name_of(&self) -> &'static str {
        self.name()
    }
}

/// Serde by name for the engine's enums (`#[serde(with = "by_name")]`).
pub mod by_name {
    use super::Named;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Named, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.name_of())
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: Named,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

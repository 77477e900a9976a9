//! The tool's settings, read from a TOML file (see `ckpt.example.toml`).
//! Unknown keys are errors, so a misspelt setting never goes unnoticed.

use ckpt_engine::{CachePolicy, Limits, SuperpagePolicy};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::str::FromStr;
use thiserror::Error;

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Sender-side settings.
    pub engine: EngineConfig,
    /// Receiver-side limits and memory.
    pub receiver: ReceiverConfig,
    /// Recorder settings.
    pub record: RecordConfig,
}

/// Sender-side settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Page kernel: "auto" (best this CPU runs) or a kernel name.
    pub kernel: String,
    /// Worker threads for compression; 0 means one per core.
    pub threads: usize,
    /// Delta cache capacity in pages (the original: 8192, 32 MiB), or
    /// "auto": sized after each checkpoint to the guest's re-dirtied
    /// working set within `cache_budget_mib`.
    pub cache_pages: CacheSize,
    /// Which pages the delta cache keeps: "lru" (the original's), "s3fifo"
    /// or "lirs".
    #[serde(with = "policy_name")]
    pub cache_policy: CachePolicy,
    /// Memory the adaptive cache may use, in MiB: copies, bookkeeping and
    /// ghost entries.
    pub cache_budget_mib: u64,
    /// Seed the cache with the pages of the uncompressed first checkpoint.
    pub seed_cache: bool,
    /// Staging ring capacity in pages.
    pub ring_pages: usize,
    /// Pin each compression thread to its own core.
    pub pin_threads: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kernel: "auto".into(),
            threads: 0,
            cache_pages: CacheSize::Pages(8192),
            cache_policy: CachePolicy::Lru,
            cache_budget_mib: 512,
            seed_cache: true,
            ring_pages: 8196,
            pin_threads: true,
        }
    }
}

/// The delta cache's size: a number of pages, or sized adaptively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "CacheSizeRepr", into = "CacheSizeRepr")]
pub enum CacheSize {
    /// A fixed number of pages.
    Pages(usize),
    /// Sized to the working set within the budget.
    Auto,
}

/// How a cache size is written in TOML: an integer or "auto".
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum CacheSizeRepr {
    Pages(usize),
    Word(String),
}

impl TryFrom<CacheSizeRepr> for CacheSize {
    type Error = String;

    fn try_from(r: CacheSizeRepr) -> Result<Self, String> {
        match r {
            CacheSizeRepr::Pages(n) => Ok(CacheSize::Pages(n)),
            CacheSizeRepr::Word(w) => w.parse(),
        }
    }
}

impl From<CacheSize> for CacheSizeRepr {
    fn from(s: CacheSize) -> Self {
        match s {
            CacheSize::Pages(n) => CacheSizeRepr::Pages(n),
            CacheSize::Auto => CacheSizeRepr::Word("auto".into()),
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

/// A cache policy written by name.
mod policy_name {
    use ckpt_engine::CachePolicy;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &CachePolicy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CachePolicy, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The backup's limits on untrusted input (see `ckpt_engine::Limits`) and
/// how its guest memory is backed.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// Largest COMPRESSED_DATA payload accepted, in bytes.
    pub max_chunk_bytes: u64,
    /// Largest checkpoint accepted, in bytes buffered.
    pub max_checkpoint_bytes: u64,
    /// Most PFN entries accepted in one checkpoint.
    pub max_checkpoint_entries: u64,
    /// Most toolstack chunks accepted in one checkpoint.
    pub max_toolstack_chunks: u64,
    /// How a backup held in memory backs each 2 MiB extent.
    pub superpages: SuperpagePolicy,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        let l = Limits::default();
        ReceiverConfig {
            max_chunk_bytes: l.max_chunk_bytes,
            max_checkpoint_bytes: l.max_checkpoint_bytes,
            max_checkpoint_entries: l.max_checkpoint_entries,
            max_toolstack_chunks: l.max_toolstack_chunks,
            superpages: SuperpagePolicy::default(),
        }
    }
}

impl ReceiverConfig {
    /// The limits the engine's reader enforces.
    pub fn limits(&self) -> Limits {
        Limits {
            max_chunk_bytes: self.max_chunk_bytes,
            max_checkpoint_bytes: self.max_checkpoint_bytes,
            max_checkpoint_entries: self.max_checkpoint_entries,
            max_toolstack_chunks: self.max_toolstack_chunks,
        }
    }
}

/// Recorder settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Run time of the target between pauses, in milliseconds.
    pub epoch_ms: u64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig { epoch_ms: 25 }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with its line and column.
        #[source]
        source: toml::de::Error,
    },
}

impl Config {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }
}

/// The one meaning of a thread count of 0, on the command line and in the
/// config: one thread per core.
pub fn resolve_threads(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse("[engine]\ncache_pages = 100\nkernel = \"avx2\"\n").unwrap();
        assert_eq!(c.engine.cache_pages, CacheSize::Pages(100));
        assert_eq!(c.engine.ring_pages, 8196);
        assert_eq!(c.engine.kernel, "avx2");
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::parse("[engine]\ncache_page = 1\n").unwrap_err();
        assert!(e.to_string().contains("cache_page"), "{e}");
    }
}

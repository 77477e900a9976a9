//! The tool's settings, read from a TOML file (see `ckpt.example.toml`).
//! Unknown keys are errors, so a misspelt setting never goes unnoticed.

use ckpt_engine::{Limits, SuperpagePolicy};
use serde::{Deserialize, Serialize};
use std::path::Path;
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
    /// Delta cache capacity in pages (the original: 8192, 32 MiB).
    pub cache_pages: usize,
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
            cache_pages: 8192,
            ring_pages: 8196,
            pin_threads: true,
        }
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
        assert_eq!(c.engine.cache_pages, 100);
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

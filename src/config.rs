//! The tool's settings, read from a TOML file (see `ckpt.example.toml`).
//! Unknown keys are errors, so a misspelt setting never goes unnoticed, and
//! every number is checked against a range derived from the format, this
//! machine's memory and cores, so that a wrong value is an error naming the
//! key, the value and the range, never a panic, an abort or a hang. A file
//! larger than [`MAX_CONFIG_BYTES`] is refused before it is read.

use ckpt_engine::page::PFN_LIMIT;
use ckpt_engine::{CachePolicy, Limits, SuperpagePolicy, MAX_CACHE_PAGES, PAGE_SIZE};
use serde::{Deserialize, Serialize};
use std::io::Read;
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
    /// Largest guest a stream may claim, in pages; a larger one is refused
    /// at its header, before anything is allocated or created.
    pub max_guest_pages: u64,
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
            max_guest_pages: l.max_guest_pages,
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
            max_guest_pages: self.max_guest_pages,
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

/// Largest configuration file read (the example is 1 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A configuration file that could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
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
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("config {path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// The file is not valid TOML for this schema, or a value is out of
    /// its range.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with its line or its key.
        message: String,
    },
}

/// A number outside the range its key allows.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{key} = {value} is outside {min}..={max}{why}")]
pub struct OutOfRange {
    /// The key, with its table (`engine.threads`) or the flag (`--threads`).
    pub key: String,
    /// The value given.
    pub value: u128,
    /// Smallest allowed.
    pub min: u64,
    /// Largest allowed.
    pub max: u64,
    /// Where the bound comes from, if not from the format.
    pub why: &'static str,
}

/// Checks `value` of `key` against `min..=max`.
fn in_range(
    key: &str,
    value: impl Into<u128>,
    min: u64,
    max: u64,
    why: &'static str,
) -> Result<(), OutOfRange> {
    let value = value.into();
    if (min as u128..=max as u128).contains(&value) {
        return Ok(());
    }
    Err(OutOfRange {
        key: key.into(),
        value,
        min,
        max,
        why,
    })
}

/// Bytes of memory of this machine (MemTotal), if known.
fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Pages of memory of this machine; without /proc, the format's bound.
fn host_pages() -> u64 {
    host_memory_bytes().map_or(PFN_LIMIT, |b| b / PAGE_SIZE as u64)
}

/// Cores this process may run on.
fn cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// Most compression threads: four per core (0 means one per core).
pub fn max_threads() -> u64 {
    4 * cores()
}

/// Parses a working set in MiB for clap (`kernels --mib`): 1 to half this
/// machine's memory, at most 64 GiB.
pub fn parse_working_set_mib(s: &str) -> Result<u64, String> {
    let v: u64 = s.parse().map_err(|e| format!("{e}"))?;
    let half = (host_pages() * PAGE_SIZE as u64 / 2) >> 20;
    in_range(
        "--mib",
        v,
        1,
        half.clamp(1, 65536),
        " (half this machine's memory)",
    )
    .map_err(|e| e.to_string())?;
    Ok(v)
}

/// Parses `--threads` for clap: 0 (one per core) to [`max_threads`].
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let v: u64 = s.parse().map_err(|e| format!("{e}"))?;
    in_range("--threads", v, 0, max_threads(), " (four per core)").map_err(|e| e.to_string())?;
    Ok(v as usize)
}

impl Config {
    /// Reads and parses a configuration file of at most
    /// [`MAX_CONFIG_BYTES`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        if file.metadata().map_err(io)?.is_dir() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is a directory",
            )));
        }
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.display().to_string(),
                limit: MAX_CONFIG_BYTES,
            });
        }
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses configuration text and checks every value's range.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// Checks every number against its range.
    pub fn check(&self) -> Result<(), OutOfRange> {
        let (e, r) = (&self.engine, &self.receiver);
        let host = host_pages();
        in_range(
            "engine.threads",
            e.threads as u64,
            0,
            max_threads(),
            " (four per core)",
        )?;
        // An adaptive cache is bounded by its budget instead.
        if let CacheSize::Pages(n) = e.cache_pages {
            in_range(
                "engine.cache_pages",
                n as u64,
                1,
                (MAX_CACHE_PAGES as u64).min(host / 2),
                " (half this machine's memory)",
            )?;
        }
        in_range(
            "engine.cache_budget_mib",
            e.cache_budget_mib,
            1,
            (host / 2) >> 8,
            " (half this machine's memory)",
        )?;
        in_range(
            "engine.ring_pages",
            e.ring_pages as u64,
            1,
            (1 << 20u64).min(host / 4),
            " (a quarter of this machine's memory, at most 2^20)",
        )?;
        in_range("record.epoch_ms", self.record.epoch_ms, 1, 60_000, "")?;
        in_range(
            "receiver.max_guest_pages",
            r.max_guest_pages,
            1,
            PFN_LIMIT,
            "",
        )?;
        in_range(
            "receiver.max_checkpoint_bytes",
            r.max_checkpoint_bytes,
            PAGE_SIZE as u64,
            host.saturating_mul(PAGE_SIZE as u64),
            " (this machine's memory)",
        )?;
        in_range(
            "receiver.max_chunk_bytes",
            r.max_chunk_bytes,
            1,
            host.saturating_mul(PAGE_SIZE as u64),
            " (this machine's memory)",
        )?;
        in_range(
            "receiver.max_checkpoint_entries",
            r.max_checkpoint_entries,
            1,
            PFN_LIMIT,
            "",
        )?;
        in_range(
            "receiver.max_toolstack_chunks",
            r.max_toolstack_chunks,
            0,
            1 << 20,
            "",
        )?;
        Ok(())
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
    fn out_of_range_values_name_the_key_the_value_and_the_range() {
        for (text, key) in [
            (
                "[engine]\ncache_pages = 5000000000",
                "engine.cache_pages = 5000000000",
            ),
            (
                "[engine]\ncache_pages = 0",
                "engine.cache_pages = 0 is outside 1..=",
            ),
            (
                "[engine]\nring_pages = 4294967296000",
                "engine.ring_pages = 4294967296000",
            ),
            ("[engine]\nring_pages = 0", "engine.ring_pages = 0"),
            (
                "[engine]\ncache_budget_mib = 0",
                "engine.cache_budget_mib = 0 is outside 1..=",
            ),
            (
                "[engine]\nthreads = 100000",
                "engine.threads = 100000 is outside 0..=",
            ),
            (
                "[record]\nepoch_ms = 18446744073709551615",
                "record.epoch_ms = 18446744073709551615 is outside 1..=60000",
            ),
            ("[record]\nepoch_ms = 0", "record.epoch_ms = 0"),
            (
                "[receiver]\nmax_guest_pages = 1099511627776",
                "receiver.max_guest_pages = 1099511627776 is outside 1..=268435456",
            ),
            (
                "[receiver]\nmax_chunk_bytes = 0",
                "receiver.max_chunk_bytes = 0 is outside 1..=",
            ),
            (
                "[receiver]\nmax_checkpoint_bytes = 4095",
                "receiver.max_checkpoint_bytes = 4095 is outside 4096..=",
            ),
            (
                "[receiver]\nmax_checkpoint_entries = 0",
                "receiver.max_checkpoint_entries = 0",
            ),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
        // A negative number or one past u64 is TOML's or serde's to refuse.
        assert!(Config::parse("[engine]\nthreads = -1").is_err());
        assert!(Config::parse("[record]\nepoch_ms = 18446744073709551616").is_err());
        assert_eq!(parse_threads("0"), Ok(0));
        assert_eq!(parse_working_set_mib("1"), Ok(1));
        assert!(parse_working_set_mib("0")
            .unwrap_err()
            .contains("--mib = 0"));
        assert!(parse_working_set_mib("65537").is_err());
        assert!(parse_threads(&(max_threads() + 1).to_string())
            .unwrap_err()
            .contains("--threads"));
    }

    #[test]
    fn a_file_over_the_cap_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, "#".repeat(MAX_CONFIG_BYTES as usize + 1)).unwrap();
        assert!(matches!(
            Config::load(&big),
            Err(ConfigError::TooLarge { .. })
        ));
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "#".repeat(MAX_CONFIG_BYTES as usize)).unwrap();
        assert_eq!(Config::load(&ok).unwrap(), Config::default());
        assert!(matches!(
            Config::load(dir.path()),
            Err(ConfigError::Io { .. })
        ));
        #[cfg(target_os = "linux")]
        assert!(matches!(
            Config::load(Path::new("/dev/zero")),
            Err(ConfigError::TooLarge { .. })
        ));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::parse("[engine]\ncache_page = 1\n").unwrap_err();
        assert!(e.to_string().contains("cache_page"), "{e}");
    }
}

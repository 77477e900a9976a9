//! The tool's settings: one schema ([`Config`]) holding every knob of the
//! engine and the tool, layered from the built-in defaults, a TOML file,
//! `CKPT_<SECTION>_<KEY>` environment variables and command-line flags
//! ([`layers`]), with the origin of every value kept for `ckpt config
//! show`. Unknown keys and wrong types are errors naming the key and where
//! it came from; every number is checked against a range derived from the
//! formats (docs/FORMAT.md, docs/STREAM.md), this machine's memory and cores
//! ([`check`]), so that a wrong value is an error naming the key, the value
//! and the range, never a panic, an abort or a hang.

mod check;
pub mod layers;
mod values;

pub use check::{
    parse_threads, parse_working_set_mib, resolve_threads, OutOfRange, ACK_TIMEOUT_MS, EPOCH_MS,
    FAILOVER_TIMEOUT_MS, HEARTBEAT_MS, RECONNECT_MS, WINDOW,
};
#[cfg(test)]
use layers::MAX_CONFIG_BYTES;
pub use layers::{ConfigError, FlagSet, Layers, Origin};
pub use values::{parse_zstd_level, CacheSize, DurabilityMode, ZstdLevel};

use ckpt_engine::{
    CachePolicy, Format, Limits, SuperpagePolicy, ZstdPlacement, DEFAULT_ZSTD_LEVEL,
};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Sender-side settings.
    pub engine: EngineConfig,
    /// The stream a sender writes.
    pub stream: StreamConfig,
    /// Receiver-side limits and memory.
    pub receiver: ReceiverConfig,
    /// Primary and backup (`ckpt send`, `ckpt recv`).
    pub replication: ReplicationConfig,
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
    /// Pin each compression thread to its own core.
    pub pin_threads: bool,
    /// Staging ring capacity in pages.
    pub ring_pages: usize,
    /// Delta cache capacity in pages (the original: 8192, 32 MiB), or
    /// "auto": sized after each checkpoint to the guest's re-dirtied
    /// working set within `cache_budget_mib`.
    pub cache_pages: CacheSize,
    /// Which pages the delta cache keeps: "lru" (the original's), "s3fifo"
    /// or "lirs".
    #[serde(with = "values::by_name")]
    pub cache_policy: CachePolicy,
    /// Memory the adaptive cache may use, in MiB: copies, bookkeeping and
    /// ghost entries.
    pub cache_budget_mib: u64,
    /// Seed the cache with the pages of the uncompressed first checkpoint.
    pub seed_cache: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kernel: "auto".into(),
            threads: 0,
            pin_threads: true,
            ring_pages: 8196,
            cache_pages: CacheSize::Pages(8192),
            cache_policy: CachePolicy::Lru,
            cache_budget_mib: 512,
            seed_cache: true,
        }
    }
}

/// The stream a sender writes (docs/STREAM.md, docs/RECORDS.md).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// "legacy" (ckpt stream v2 around the Remus body) or "records" (Xen
    /// migration stream v3 with ckpt's records).
    #[serde(with = "values::by_name")]
    pub format: Format,
    /// The zstd stage over a record stream's page encodings: a level or
    /// "off". The legacy stream has no stage and ignores it.
    pub zstd_level: ZstdLevel,
    /// Where the sender runs the zstd stage: "segments" or "thread".
    #[serde(with = "values::by_name")]
    pub zstd_placement: ZstdPlacement,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            format: Format::Legacy,
            zstd_level: ZstdLevel::Level(DEFAULT_ZSTD_LEVEL),
            zstd_placement: ZstdPlacement::Segments,
        }
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

/// The primary's and the backup's tunables (`ckpt send`, `ckpt recv`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Most checkpoints the primary keeps unacknowledged at once.
    pub window: u64,
    /// The primary sends a heartbeat after this many ms with nothing sent.
    pub heartbeat_ms: u64,
    /// The primary declares the backup lost when a checkpoint or heartbeat
    /// goes unanswered this many ms.
    pub ack_timeout_ms: u64,
    /// The primary keeps trying to reconnect this many ms before giving up.
    pub reconnect_ms: u64,
    /// The backup declares the primary lost (failover) after this many ms
    /// without a checkpoint or a heartbeat.
    pub failover_timeout_ms: u64,
    /// How the backup's image makes commits durable.
    pub durability: DurabilityMode,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            window: 1,
            heartbeat_ms: 100,
            ack_timeout_ms: 2000,
            reconnect_ms: 10_000,
            failover_timeout_ms: 2000,
            durability: DurabilityMode::Journal,
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

/// Every section and key of the schema, in the order `config show` lists
/// them.
pub const KEYS: &[(&str, &[&str])] = &[
    (
        "engine",
        &[
            "kernel",
            "threads",
            "pin_threads",
            "ring_pages",
            "cache_pages",
            "cache_policy",
            "cache_budget_mib",
            "seed_cache",
        ],
    ),
    ("stream", &["format", "zstd_level", "zstd_placement"]),
    (
        "receiver",
        &[
            "max_guest_pages",
            "max_chunk_bytes",
            "max_checkpoint_bytes",
            "max_checkpoint_entries",
            "max_toolstack_chunks",
            "superpages",
        ],
    ),
    (
        "replication",
        &[
            "window",
            "heartbeat_ms",
            "ack_timeout_ms",
            "reconnect_ms",
            "failover_timeout_ms",
            "durability",
        ],
    ),
    ("record", &["epoch_ms"]),
];

impl Config {
    /// Parses configuration text alone (over the defaults, without the
    /// environment) and checks every value's range.
    pub fn parse(text: &str) -> Result<Config, String> {
        Layers::from_text(text, "text")
            .and_then(|l| l.extract())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;

//! The range of every number in the configuration, from the formats
//! (docs/FORMAT.md, docs/STREAM.md), this machine's memory and its cores.

use super::{CacheSize, Config, ZstdLevel};
use ckpt_engine::page::PFN_LIMIT;
use ckpt_engine::{MAX_CACHE_PAGES, PAGE_SIZE};
use thiserror::Error;

/// `replication.window` (and `send --window`): checkpoints in flight.
pub const WINDOW: (u64, u64) = (1, 1024);
/// `replication.heartbeat_ms` (and `send --heartbeat-ms`).
pub const HEARTBEAT_MS: (u64, u64) = (1, 600_000);
/// `replication.ack_timeout_ms` (and `send --timeout-ms`).
pub const ACK_TIMEOUT_MS: (u64, u64) = (10, 3_600_000);
/// `replication.reconnect_ms` (and `send --reconnect-ms`).
pub const RECONNECT_MS: (u64, u64) = (0, 86_400_000);
/// `replication.failover_timeout_ms` (and `recv --timeout-ms`).
pub const FAILOVER_TIMEOUT_MS: (u64, u64) = (10, 3_600_000);
/// `record.epoch_ms` (and `--epoch-ms`).
pub const EPOCH_MS: (u64, u64) = (1, 60_000);

/// A number outside the range its key allows.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{key} = {value} is outside {min}..={max}{why}")]
pub struct OutOfRange {
    /// The key, with its table (`engine.threads`) or the flag (`--threads`).
    pub key: String,
    /// The value given.
    pub value: i128,
    /// Smallest allowed.
    pub min: i64,
    /// Largest allowed.
    pub max: u64,
    /// Where the bound comes from, if not from the format.
    pub why: &'static str,
}

/// Checks `value` of `key` against `min..=max`.
fn in_range(
    key: &str,
    value: impl Into<i128>,
    min: i64,
    max: u64,
    why: &'static str,
) -> Result<(), OutOfRange> {
    let value = value.into();
    if (min as i128..=max as i128).contains(&value) {
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

fn in_pair(key: &str, value: u64, (min, max): (u64, u64)) -> Result<(), OutOfRange> {
    in_range(key, value, min as i64, max, "")
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

/// The one meaning of a thread count of 0, on the command line and in the
/// config: one thread per core.
pub fn resolve_threads(n: usize) -> usize {
    match n {
        0 => cores() as usize,
        n => n,
    }
}

impl Config {
    /// Checks every number against its range.
    pub fn check(&self) -> Result<(), OutOfRange> {
        let (e, r, p) = (&self.engine, &self.receiver, &self.replication);
        let host = host_pages();
        let memory = host.saturating_mul(PAGE_SIZE as u64);
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
        if let ZstdLevel::Level(l) = self.stream.zstd_level {
            let levels = ckpt_engine::stream::zstd_levels();
            in_range(
                "stream.zstd_level",
                l,
                (*levels.start()).into(),
                (*levels.end()).max(0) as u64,
                " (zstd's levels), or \"off\"",
            )?;
        }
        in_pair("record.epoch_ms", self.record.epoch_ms, EPOCH_MS)?;
        in_pair("replication.window", p.window, WINDOW)?;
        in_pair("replication.heartbeat_ms", p.heartbeat_ms, HEARTBEAT_MS)?;
        in_pair(
            "replication.ack_timeout_ms",
            p.ack_timeout_ms,
            ACK_TIMEOUT_MS,
        )?;
        in_pair("replication.reconnect_ms", p.reconnect_ms, RECONNECT_MS)?;
        in_pair(
            "replication.failover_timeout_ms",
            p.failover_timeout_ms,
            FAILOVER_TIMEOUT_MS,
        )?;
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
            PAGE_SIZE as i64,
            memory,
            " (this machine's memory)",
        )?;
        in_range(
            "receiver.max_chunk_bytes",
            r.max_chunk_bytes,
            1,
            memory,
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

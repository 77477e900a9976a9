//! The subcommands: each parses its own arguments, calls the engine or the
//! lab, and prints. Shared here: the configuration in force, how a kernel
//! and the sender's options are chosen from it and the flags, and how an
//! error becomes a message and an exit status; [`output`] holds how
//! every command writes (checked standard output, JSON, progress,
//! percentiles, goals).
//!
//! The convention every command follows:
//! - exit status 0 on success, 1 when the job failed (a stream rejected, a
//!   verification or a `--check` goal failed, a file or process unusable),
//!   2 for bad usage ([`Usage`], and clap's own errors);
//! - an error names the file or process and the operation, its causes after
//!   it (anyhow context);
//! - results go to standard output through [`output::Out`] (a closed pipe
//!   ends quietly, a full device is an error), progress and notes to
//!   standard error;
//! - a command that measures or reports takes `--json` and then prints
//!   exactly one JSON document.

pub mod bench;
pub mod conformance;
pub mod convert;
pub mod demo;
pub mod format;
pub mod kernels;
pub mod output;
pub mod pipeline;
#[cfg(target_os = "linux")]
pub mod record;
#[cfg(unix)]
pub mod recv;
pub mod send;
pub mod streams;

use crate::config::{resolve_threads, CacheSize, Config};
use anyhow::Context as _;
use ckpt_engine::{CachePolicy, Codec, CompressOptions, Kernel, SenderOptions};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// A mistake in how the tool was called: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The settings every subcommand starts from.
pub struct Context {
    /// The configuration in force.
    pub config: Config,
    /// No progress indicators (`--quiet`).
    pub quiet: bool,
}

impl Context {
    /// Reads the configuration file, if one is named.
    pub fn load(path: Option<&Path>, quiet: bool) -> anyhow::Result<Context> {
        let config = match path {
            Some(p) => {
                let c = Config::load(p).map_err(|e| {
                    let cause =
                        std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
                    Usage(format!("{e}{cause}"))
                })?;
                check_ranges(&c)
                    .map_err(|e| Usage(format!("invalid config {}: {e}", p.display())))?;
                c
            }
            None => Config::default(),
        };
        Ok(Context { config, quiet })
    }

    /// A progress indicator on standard error ([`output::progress`]).
    pub fn progress(&self, len: Option<u64>, what: &str) -> indicatif::ProgressBar {
        output::progress(self.quiet, len, what)
    }

    /// The codec a run uses: the kernel forced by name (flag first, then
    /// the config), or the best this CPU supports. Forcing a kernel the CPU
    /// lacks is an error, never a silent fallback.
    pub fn codec(&self, flag: Option<Kernel>) -> anyhow::Result<Codec> {
        let kernel = match flag {
            Some(k) => k,
            None if self.config.engine.kernel.eq_ignore_ascii_case("auto") => {
                return Ok(Codec::best())
            }
            None => self
                .config
                .engine
                .kernel
                .parse()
                .map_err(|e: ckpt_simd::UnknownKernel| Usage(format!("config: {e}")))?,
        };
        Codec::new(kernel).map_err(|e| Usage(e.to_string()).into())
    }

    /// Compression threads: the flag, else the config; 0 means one per core.
    pub fn threads(&self, flag: Option<usize>) -> usize {
        resolve_threads(flag.unwrap_or(self.config.engine.threads))
    }

    /// The sender's options for a guest of `guest_pages` pages (the
    /// delta cache as the config says; see [`Context::apply_cache`]).
    pub fn sender_options(&self, tuning: &Tuning, guest_pages: u64) -> SenderOptions {
        let e = &self.config.engine;
        let (cache_pages, cache_budget) = cache_size(e.cache_pages, e.cache_budget_mib);
        SenderOptions {
            compress: CompressOptions {
                cache_pages,
                cache_policy: e.cache_policy,
                cache_budget,
                seed_cache: e.seed_cache,
                threads: self.threads(tuning.threads()),
                pin_threads: e.pin_threads,
            },
            ring_pages: e.ring_pages,
            limits: self.config.receiver.limits(),
            ..SenderOptions::new(guest_pages)
        }
    }

    /// The delta-cache flags over the config's settings.
    pub fn apply_cache(&self, opts: &mut CompressOptions, args: &CacheArgs) -> anyhow::Result<()> {
        let e = &self.config.engine;
        let size = args.cache_pages.unwrap_or(e.cache_pages);
        if let (Some(_), CacheSize::Pages(_)) = (args.cache_budget_mib, size) {
            return Err(Usage(
                "--cache-budget-mib bounds the adaptive size: give --cache-pages auto".into(),
            )
            .into());
        }
        let mib = args.cache_budget_mib.unwrap_or(e.cache_budget_mib);
        (opts.cache_pages, opts.cache_budget) = cache_size(size, mib);
        if let Some(p) = args.cache_policy {
            opts.cache_policy = p;
        }
        if args.no_cache_seed {
            opts.seed_cache = false;
        }
        Ok(())
    }
}

/// The redis trace, carried inside the executable so that an installed
/// `ckpt` (or one whose source tree is gone) still runs `demo` and `bench`.
/// The other bundled traces stay files: together they would add some 25 MB.
const REDIS_TRACE: &[u8] = include_bytes!("../../traces/redis.trace");

/// The bundled traces: those of the first folder of
/// [`ckpt_lab::trace_dirs`] that has any, else the redis trace built in
/// (with a note on standard error saying where it looked).
pub fn bundled_traces() -> anyhow::Result<Vec<std::path::PathBuf>> {
    let found = ckpt_lab::bundled_traces();
    if !found.is_empty() {
        return Ok(found);
    }
    let searched: Vec<String> = ckpt_lab::trace_dirs()
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let _ = writeln!(
        std::io::stderr(),
        "ckpt: no folder of bundled traces found (searched {}; set CKPT_TRACES to one); using the redis trace built into ckpt",
        searched.join(", ")
    );
    Ok(vec![embedded_redis()?])
}

/// The bundled redis trace: the file if a folder of bundled traces has it,
/// else the copy built into the executable.
pub fn redis_trace() -> anyhow::Result<std::path::PathBuf> {
    match ckpt_lab::bundled_traces()
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "redis.trace"))
    {
        Some(p) => Ok(p),
        None => embedded_redis(),
    }
}

fn embedded_redis() -> anyhow::Result<std::path::PathBuf> {
    ckpt_lab::embedded_trace("redis.trace", REDIS_TRACE)
        .context("cannot write the built-in redis trace to a temporary file")
}

/// The ranges of the configuration's numbers: a value outside is refused
/// with the range, never used.
pub fn check_ranges(c: &Config) -> Result<(), String> {
    let e = &c.engine;
    // An adaptive cache's size is bounded by its budget instead.
    let cache_pages = match e.cache_pages {
        CacheSize::Pages(n) => n as u64,
        CacheSize::Auto => 1,
    };
    let checks: [(&str, u64, std::ops::RangeInclusive<u64>); 5] = [
        ("engine.threads", e.threads as u64, 0..=MAX_THREADS as u64),
        ("engine.cache_pages", cache_pages, 1..=1 << 24),
        ("engine.cache_budget_mib", e.cache_budget_mib, 1..=1 << 20),
        ("engine.ring_pages", e.ring_pages as u64, 1..=1 << 24),
        ("record.epoch_ms", c.record.epoch_ms, 1..=60_000),
    ];
    for (key, value, range) in checks {
        if !range.contains(&value) {
            return Err(format!(
                "{key} = {value} is out of range ({}..={})",
                range.start(),
                range.end()
            ));
        }
    }
    Ok(())
}

/// Where an adaptive cache starts when it is not seeded: the original's size.
const AUTO_START_PAGES: usize = 8192;

/// `CompressOptions::cache_pages` and `cache_budget` for a size setting.
fn cache_size(size: CacheSize, budget_mib: u64) -> (usize, Option<u64>) {
    match size {
        CacheSize::Pages(n) => (n, None),
        CacheSize::Auto => (AUTO_START_PAGES, Some(budget_mib.saturating_mul(1 << 20))),
    }
}

/// The delta-cache flags, shared by every command that sends.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CacheArgs {
    /// Delta-cache policy, overriding the config
    #[arg(long, value_name = "NAME", value_parser = policy_parser())]
    pub cache_policy: Option<CachePolicy>,
    /// Delta-cache size in pages, or "auto": resized after each checkpoint
    /// to the guest's re-dirtied working set, within --cache-budget-mib
    #[arg(long, value_name = "N|auto")]
    pub cache_pages: Option<CacheSize>,
    /// Memory the adaptive cache may use, in MiB (page copies, bookkeeping
    /// and ghost entries; the config's default is 512)
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub cache_budget_mib: Option<u64>,
    /// Leave the cache empty until the first compressed checkpoint, instead
    /// of seeding it with the uncompressed first checkpoint's pages
    #[arg(long)]
    pub no_cache_seed: bool,
}

fn policy_parser() -> impl clap::builder::TypedValueParser<Value = CachePolicy> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(CachePolicy::NAMES)
        .map(|s| s.parse::<CachePolicy>().unwrap_or_default())
}

/// Flags that tune the engine for one run, over the config.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Tuning {
    /// Page kernel, overriding the config.
    #[arg(long, value_parser = kernel_parser())]
    pub kernel: Option<Kernel>,
    /// Compression threads, overriding the config (0: one per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_THREADS as u64))]
    pub threads: Option<u64>,
}

impl Tuning {
    /// The thread count asked for, if any.
    pub fn threads(&self) -> Option<usize> {
        self.threads.map(|n| n as usize)
    }
}

/// Parses a superpage policy for clap, listing the names on error.
pub fn parse_superpages(s: &str) -> Result<ckpt_engine::SuperpagePolicy, String> {
    s.parse()
        .map_err(|e: ckpt_engine::extent::UnknownPolicy| e.to_string())
}

/// Most compression threads a flag accepts.
pub const MAX_THREADS: usize = 1024;

/// Parses a kernel name for clap; `--help` and errors list the names.
pub fn kernel_parser() -> impl clap::builder::TypedValueParser<Value = Kernel> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Kernel::ALL.map(|k| k.name()))
        .try_map(|s| s.parse::<Kernel>())
}

/// Whether an error comes from writing to a pipe whose reader has gone
/// (`ckpt inspect s | head`): not a failure of the job.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let pipe = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(pipe)
            // The lab's I/O errors are transparent: their io::Error is not
            // a link of the chain of its own.
            || matches!(c.downcast_ref::<ckpt_lab::LabError>(), Some(ckpt_lab::LabError::Io(io)) if pipe(io))
    })
}

/// One latency distribution on one line, with its sample count
/// ([`output::quantiles`] over an engine histogram).
pub fn latency_row(name: &str, l: &ckpt_engine::Latency) -> String {
    output::quantiles(
        name,
        &ckpt_lab::figures::Quantiles::of_latency(l),
        "checkpoints",
    )
}

/// The message of an error and its causes, each cause that only repeats
/// what is already said left out (a file error inside a context that
/// already names the file, say).
pub fn error_message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg += ": ";
        }
        msg += &text;
    }
    msg
}

/// Prints an error with its causes and picks the exit status: 2 for bad
/// usage, 1 for a job that failed; a closed output pipe ends quietly.
pub fn report_error(e: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    // Standard error may be closed or full too: never panic over it.
    let _ = writeln!(std::io::stderr(), "ckpt: {}", error_message(e));
    if e.downcast_ref::<Usage>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_in_range_and_nonsense_is_not() {
        let example = Config::parse(include_str!("../../ckpt.example.toml")).unwrap();
        assert_eq!(example, Config::default());
        assert_eq!(check_ranges(&example), Ok(()));
        for (text, says) in [
            (
                "[engine]\ncache_pages = 0\n",
                "engine.cache_pages = 0 is out of range (1..=16777216)",
            ),
            (
                "[engine]\nthreads = 5000\n",
                "engine.threads = 5000 is out of range (0..=1024)",
            ),
            (
                "[engine]\nring_pages = 0\n",
                "engine.ring_pages = 0 is out of range",
            ),
            (
                "[record]\nepoch_ms = 0\n",
                "record.epoch_ms = 0 is out of range (1..=60000)",
            ),
        ] {
            let c = Config::parse(text).unwrap();
            let e = check_ranges(&c).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn an_error_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(ckpt_lab::LabError::file(Path::new("/x/y"), io))
            .context("cannot inspect stream /x/y");
        assert_eq!(
            error_message(&e),
            "cannot inspect stream /x/y: No such file"
        );
    }
}

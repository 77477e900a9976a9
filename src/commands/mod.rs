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
pub mod settings;
pub mod streams;
pub mod tune;

use crate::config::{resolve_threads, CacheSize, Config, FlagSet, Layers};
use anyhow::Context as _;
use ckpt_engine::{CachePolicy, Codec, CompressOptions, Format, Kernel, SenderOptions, ZstdStage};
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
    /// Where each of its values came from.
    pub layers: Layers,
    /// No progress indicators (`--quiet`).
    pub quiet: bool,
}

fn config_usage(e: crate::config::ConfigError) -> anyhow::Error {
    let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
    Usage(format!("{e}{cause}")).into()
}

impl Context {
    /// The defaults, the configuration file (`path`, else the default
    /// locations) and the environment.
    pub fn load(path: Option<&Path>, quiet: bool) -> anyhow::Result<Context> {
        let layers = Layers::load(path).map_err(config_usage)?;
        let config = layers.extract().map_err(config_usage)?;
        Ok(Context {
            config,
            layers,
            quiet,
        })
    }

    /// This context with a command's flags over it: the same path, and so
    /// the same checks and the same provenance, as every other layer.
    pub fn with_flags(&self, flags: &FlagSet) -> anyhow::Result<Context> {
        let layers = self.layers.with_flags(flags);
        let config = layers.extract().map_err(config_usage)?;
        if flags.has("engine.cache_budget_mib")
            && matches!(config.engine.cache_pages, CacheSize::Pages(_))
        {
            return Err(Usage(
                "--cache-budget-mib bounds the adaptive size: give --cache-pages auto".into(),
            )
            .into());
        }
        if (flags.has("stream.zstd_level") || flags.has("stream.zstd_placement"))
            && config.stream.format == Format::Legacy
        {
            return Err(Usage(
                "--zstd-level and --zstd-placement need --format records (the legacy stream has no zstd stage)".into(),
            )
            .into());
        }
        Ok(Context {
            config,
            layers,
            quiet: self.quiet,
        })
    }

    /// A progress indicator on standard error ([`output::progress`]).
    pub fn progress(&self, len: Option<u64>, what: &str) -> indicatif::ProgressBar {
        output::progress(self.quiet, len, what)
    }

    /// The codec a run uses: the kernel the configuration forces by name,
    /// or the best this CPU supports. Forcing a kernel the CPU lacks is an
    /// error, never a silent fallback.
    pub fn codec(&self) -> anyhow::Result<Codec> {
        let name = &self.config.engine.kernel;
        if name.eq_ignore_ascii_case("auto") {
            return Ok(Codec::best());
        }
        let kernel: Kernel = name.parse().map_err(|e: ckpt_simd::UnknownKernel| {
            Usage(format!(
                "engine.kernel (from {}): {e}",
                self.layers.origin("engine.kernel")
            ))
        })?;
        Codec::new(kernel).map_err(|e| Usage(e.to_string()).into())
    }

    /// This context with a command's `--kernel` over it.
    pub fn with_kernel(&self, kernel: Option<Kernel>) -> anyhow::Result<Context> {
        let mut flags = FlagSet::default();
        flags.opt("engine.kernel", "--kernel", kernel.map(Kernel::name));
        self.with_flags(&flags)
    }

    /// Compression threads; 0 in the configuration means one per core.
    pub fn threads(&self) -> usize {
        resolve_threads(self.config.engine.threads)
    }

    /// The sender's options for a guest of `guest_pages` pages: the
    /// engine's settings, the receiver's limits, a legacy stream.
    pub fn sender_options(&self, guest_pages: u64) -> SenderOptions {
        sender_options(&self.config, guest_pages)
    }

    /// The sender's options with the configured stream format and zstd
    /// stage (for the commands that write a stream file).
    pub fn stream_sender_options(&self, guest_pages: u64) -> SenderOptions {
        let s = &self.config.stream;
        let mut opts = self.sender_options(guest_pages);
        opts.format = s.format;
        opts.zstd = match s.format {
            Format::Legacy => None,
            Format::Records => s.zstd_level.level().map(|level| ZstdStage {
                level,
                placement: s.zstd_placement,
            }),
        };
        opts
    }
}

/// The sender's options a configuration gives for a guest of
/// `guest_pages` pages: the engine's settings, the receiver's limits, a
/// legacy stream.
pub fn sender_options(config: &Config, guest_pages: u64) -> SenderOptions {
    let e = &config.engine;
    let (cache_pages, cache_budget) = cache_size(e.cache_pages, e.cache_budget_mib);
    SenderOptions {
        compress: CompressOptions {
            cache_pages,
            cache_policy: e.cache_policy,
            cache_budget,
            seed_cache: e.seed_cache,
            threads: resolve_threads(e.threads),
            pin_threads: e.pin_threads,
        },
        ring_pages: e.ring_pages,
        limits: config.receiver.limits(),
        ..SenderOptions::new(guest_pages)
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

impl CacheArgs {
    /// The keys these flags set.
    pub fn flags(&self, f: &mut FlagSet) {
        f.opt(
            "engine.cache_policy",
            "--cache-policy",
            self.cache_policy.map(CachePolicy::name),
        );
        f.opt("engine.cache_pages", "--cache-pages", self.cache_pages);
        f.opt(
            "engine.cache_budget_mib",
            "--cache-budget-mib",
            self.cache_budget_mib,
        );
        if self.no_cache_seed {
            f.set("engine.seed_cache", "--no-cache-seed", false);
        }
    }
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
    #[arg(long, value_parser = crate::config::parse_threads)]
    pub threads: Option<usize>,
}

impl Tuning {
    /// The keys these flags set.
    pub fn flags(&self, f: &mut FlagSet) {
        f.opt("engine.kernel", "--kernel", self.kernel.map(Kernel::name));
        f.opt("engine.threads", "--threads", self.threads);
    }

    /// This context with these flags over it.
    pub fn apply(&self, ctx: &Context) -> anyhow::Result<Context> {
        let mut f = FlagSet::default();
        self.flags(&mut f);
        ctx.with_flags(&f)
    }
}

/// Parses a superpage policy for clap, listing the names on error.
pub fn parse_superpages(s: &str) -> Result<ckpt_engine::SuperpagePolicy, String> {
    s.parse()
        .map_err(|e: ckpt_engine::extent::UnknownPolicy| e.to_string())
}

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
    fn the_example_config_is_the_default() {
        let example = Config::parse(include_str!("../../ckpt.example.toml")).unwrap();
        assert_eq!(example, Config::default());
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

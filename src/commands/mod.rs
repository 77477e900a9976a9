//! The subcommands: each parses its own arguments, calls the engine or the
//! lab, and prints. Shared here: the configuration in force, how a kernel
//! and the sender's options are chosen from it and the flags, and how an
//! error becomes a message and an exit status.

pub mod bench;
pub mod conformance;
pub mod demo;
pub mod kernels;
pub mod pipeline;
#[cfg(target_os = "linux")]
pub mod record;
pub mod streams;

use crate::config::{resolve_threads, CacheSize, Config};
use ckpt_engine::{CachePolicy, Codec, CompressOptions, Kernel, Latency, SenderOptions};
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
}

impl Context {
    /// Reads the configuration file, if one is named.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Context> {
        let config = match path {
            Some(p) => Config::load(p).map_err(|e| Usage(e.to_string()))?,
            None => Config::default(),
        };
        Ok(Context { config })
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
                threads: self.threads(tuning.threads),
                pin_threads: e.pin_threads,
            },
            ring_pages: e.ring_pages,
            guest_pages,
            limits: self.config.receiver.clone(),
            stream_id: None,
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
    #[arg(long, value_name = "MIB")]
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
    #[arg(long, value_parser = parse_kernel)]
    pub kernel: Option<Kernel>,
    /// Compression threads, overriding the config (0: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Parses a kernel name for clap, listing the names on error.
pub fn parse_kernel(s: &str) -> Result<Kernel, String> {
    s.parse::<Kernel>().map_err(|e| e.to_string())
}

/// Prints one latency distribution's percentiles with its sample count.
pub fn latency_row(name: &str, l: &Latency) -> String {
    let ms = |q| l.quantile(q).as_secs_f64() * 1e3;
    format!(
        "  {name:<10} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  ({} checkpoints)",
        ms(0.5),
        ms(0.99),
        l.max().as_secs_f64() * 1e3,
        l.count()
    )
}

/// Prints an error with its causes and picks the exit status: 2 for bad
/// usage, 1 for a job that failed; a closed output pipe ends quietly.
pub fn report_error(e: &anyhow::Error) -> ExitCode {
    let broken_pipe = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    eprintln!("ckpt: {e:#}");
    if e.downcast_ref::<Usage>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

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

use crate::config::{resolve_threads, Config};
use ckpt_engine::{Codec, CompressOptions, Kernel, Latency, SenderOptions};
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

    /// The sender's options for a guest of `guest_pages` pages.
    pub fn sender_options(&self, tuning: &Tuning, guest_pages: u64) -> SenderOptions {
        let e = &self.config.engine;
        SenderOptions {
            compress: CompressOptions {
                cache_pages: e.cache_pages,
                threads: self.threads(tuning.threads),
                pin_threads: e.pin_threads,
            },
            ring_pages: e.ring_pages,
            guest_pages,
            limits: self.config.receiver.clone(),
            stream_id: None,
        }
    }
}

/// Flags that tune the engine for one run, over the config.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Tuning {
    /// Page kernel, overriding the config.
    #[arg(long, value_parser = parse_kernel)]
    pub kernel: Option<Kernel>,
    /// Compression threads, overriding the config (0: one per core).
    #[arg(long, value_parser = crate::config::parse_threads)]
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

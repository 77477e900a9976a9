//! `ckpt`: compresses VM checkpoints for Remus-style replication.

use ckpt::{conformance, demo, kernels, select_codec, Error, Result};
use ckpt_engine::config::Config;
use ckpt_engine::CompressOptions;
use ckpt_simd::{Codec, Kernel};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Compresses VM checkpoints for high-availability replication"
)]
struct Cli {
    /// Configuration file (default: $CKPT_CONFIG, else built-in defaults).
    #[arg(long, global = true, env = "CKPT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone, Default)]
struct Tuning {
    /// Page kernel by name (scalar, sse2, avx2, avx512, neon), overriding the config.
    #[arg(long)]
    kernel: Option<String>,
    /// Compression threads, overriding the config.
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Compress, decode and verify a built-in sequence of checkpoints.
    Demo {
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Replay golden vectors and check every output byte for byte.
    Conformance {
        /// Folder holding *.vec / *.vec.zst files.
        dir: PathBuf,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// List the page kernels; with --bench, measure them against the memory floor.
    Kernels {
        /// Measure encode/decode throughput of every supported kernel.
        #[arg(long)]
        bench: bool,
        /// Print the measurement as JSON.
        #[arg(long)]
        json: bool,
        /// Working set in MiB (both pages of every pair).
        #[arg(long, default_value_t = 64)]
        mib: usize,
        /// Repetitions per figure (the median is reported).
        #[arg(long, default_value_t = 9)]
        reps: usize,
        /// Densities to measure, in percent of words changed.
        #[arg(long, value_delimiter = ',', default_values_t = kernels::DENSITIES)]
        density: Vec<u32>,
        /// Measure only this kernel (default: every supported kernel).
        #[arg(long)]
        kernel: Option<String>,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

fn options(config: &Config, tuning: &Tuning) -> CompressOptions {
    CompressOptions {
        cache_pages: config.engine.cache_pages,
        threads: tuning.threads.unwrap_or_else(|| config.threads()),
        hash_pages: config.engine.digest,
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = load_config(cli.config.as_ref())?;
    match cli.command {
        Command::Demo { tuning } => {
            let codec = select_codec(tuning.kernel.as_deref(), &config)?;
            let opts = options(&config, &tuning);
            let r = demo::run(codec, &opts, config.engine.ring_pages)?;
            let mb = |b: u64| b as f64 / (1 << 20) as f64;
            println!("kernel {} on {} thread(s)", codec.kernel(), opts.threads);
            println!(
                "{} checkpoints, {} pages: {:.1} MiB in, {:.1} MiB out (ratio {:.2})",
                r.checkpoints,
                r.pages,
                mb(r.input_bytes),
                mb(r.output_bytes),
                r.input_bytes as f64 / r.output_bytes.max(1) as f64
            );
            println!(
                "pages sent: {} FULL (cache miss), {} FULL (raw), {} EMPTY, {} DELTA",
                r.counts.full_miss, r.counts.full_raw, r.counts.empty, r.counts.delta
            );
            let gbps =
                |d: std::time::Duration| r.input_bytes as f64 / d.as_secs_f64().max(1e-9) / 1e9;
            println!(
                "stage {:.1} ms, compress {:.1} ms ({:.2} GB/s), decode {:.1} ms ({:.2} GB/s)",
                r.stage.as_secs_f64() * 1e3,
                r.compress.as_secs_f64() * 1e3,
                gbps(r.compress),
                r.decode.as_secs_f64() * 1e3,
                gbps(r.decode)
            );
            println!(
                "verified: {}",
                if r.verified {
                    "every page matches"
                } else {
                    "MISMATCH"
                }
            );
            Ok(if r.verified {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Conformance { dir, tuning } => {
            let codec = select_codec(tuning.kernel.as_deref(), &config)?;
            let threads = tuning.threads.unwrap_or(1);
            let files = conformance::vector_files(&dir)?;
            if files.is_empty() {
                return Err(Error::Other(format!(
                    "no *.vec or *.vec.zst files in {}",
                    dir.display()
                )));
            }
            let (mut passed, mut failed) = (0, 0);
            for f in &files {
                let r = conformance::run_case(f, codec, threads)?;
                match &r.failure {
                    None => {
                        passed += 1;
                        println!(
                            "PASS {}: {} checkpoints, {} pages, {} bytes identical",
                            r.name, r.checkpoints, r.pages, r.bytes
                        );
                    }
                    Some(why) => {
                        failed += 1;
                        println!("FAIL {}: {why}", r.name);
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Kernels {
            bench,
            json,
            mib,
            reps,
            density,
            kernel,
        } => {
            if !bench {
                let best = Kernel::best();
                for k in Kernel::ALL {
                    let status = if k.is_available() {
                        "supported"
                    } else {
                        "not supported"
                    };
                    let pick = if k == best { "  <- dispatch" } else { "" };
                    println!("{:<8} {status}{pick}", k.name());
                }
                return Ok(ExitCode::SUCCESS);
            }
            let codecs = match kernel {
                Some(name) => vec![Codec::new(name.parse::<Kernel>()?)?],
                None => kernels::supported(),
            };
            let result = kernels::bench(mib.max(1), reps.max(1), &density, &codecs, |s| {
                eprintln!("measuring {s}")
            });
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result)
                        .map_err(|e| Error::Other(e.to_string()))?
                );
            } else {
                println!(
                    "GB/s of page bytes, median of {} runs, {} MiB working set; (x) = ratio to the floor",
                    result.repetitions, result.working_set_mib
                );
                print!("{}", kernels::table(&result));
                println!("dispatch: {}", result.dispatch);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ckpt: {e}");
            ExitCode::from(2)
        }
    }
}

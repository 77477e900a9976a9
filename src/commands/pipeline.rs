//! `ckpt bench-pipeline`: thread scaling, staging cost and peak memory.

use super::Context;
use ckpt_engine::{Codec, Kernel};
use ckpt_lab::pipeline_bench;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ckpt bench-pipeline`.
#[derive(clap::Args)]
pub struct Args {
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// Repetitions per timing (medians are reported).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=1000))]
    reps: u64,
    /// Page kernel, overriding the config.
    #[arg(long, value_parser = super::parse_kernel)]
    kernel: Option<Kernel>,
}

/// Arguments of the hidden `rss-part` command.
#[derive(clap::Args)]
pub struct PartArgs {
    /// sender, receiver or hostile.
    part: String,
    /// Stream file.
    #[arg(long)]
    stream: PathBuf,
    /// Image file.
    #[arg(long)]
    image: PathBuf,
    /// Page kernel.
    #[arg(long, value_parser = super::parse_kernel)]
    kernel: Kernel,
}

/// Measures and prints.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let codec = ctx.codec(args.kernel)?;
    let reps = args.reps as usize;
    let exe = std::env::current_exe()?;
    // The memory parts run in child processes with this configuration.
    let mut config = tempfile::NamedTempFile::new()?;
    config.write_all(toml::to_string(&ctx.config)?.as_bytes())?;
    let f = pipeline_bench::measure(codec, reps, &exe, config.path(), |s| {
        eprintln!("measuring {s}")
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&f)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("kernel {}, medians of {reps}", f.kernel);
    println!(
        "compress 8196 pages: 1 thread {:.2} ms, 2 threads {:.2} ms, speedup {:.2}x",
        f.compress_1_thread_ms, f.compress_2_threads_ms, f.speedup
    );
    println!(
        "memory floor over the same batch: speedup {:.2}x on 2 threads",
        f.floor_speedup
    );
    println!(
        "stage 8196 pages: {:.2} ms, memcpy {:.2} ms, ratio {:.2}",
        f.stage_ms, f.memcpy_ms, f.stage_ratio
    );
    println!(
        "sender peak RSS {:.1} MiB, budget {:.1} MiB (ring + cache + 2 chunks + 32 MiB)",
        mib(f.sender_peak_rss),
        mib(f.sender_budget)
    );
    println!(
        "receiver peak RSS {:.1} MiB, budget {:.1} MiB (image + largest checkpoint {:.1} MiB + 32 MiB)",
        mib(f.receiver_peak_rss),
        mib(f.receiver_budget),
        mib(f.receiver_largest_checkpoint)
    );
    println!(
        "receiver peak RSS on a stream claiming a {:.0} MiB chunk: {:.1} MiB",
        mib(ctx.config.receiver.max_chunk_bytes),
        mib(f.hostile_peak_rss)
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs one memory part in this process, with the configured receiver
/// limits, and prints its figures.
pub fn part(ctx: &Context, args: PartArgs) -> anyhow::Result<ExitCode> {
    let codec = Codec::new(args.kernel)?;
    let limits = &ctx.config.receiver;
    match args.part.as_str() {
        "sender" => println!(
            "{}",
            pipeline_bench::rss_sender(codec, 2, &args.stream, limits)?
        ),
        "receiver" => {
            let (peak, largest) =
                pipeline_bench::rss_receiver(codec, &args.stream, &args.image, limits)?;
            println!("{peak} {largest}");
        }
        "hostile" => println!(
            "{}",
            pipeline_bench::rss_hostile(codec, &args.image, limits)?
        ),
        other => anyhow::bail!("unknown part {other}"),
    }
    let _ = std::fs::remove_file(&args.image);
    Ok(ExitCode::SUCCESS)
}

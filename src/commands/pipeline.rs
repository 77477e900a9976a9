//! `ckpt bench-pipeline`: thread scaling, staging cost and peak memory.

use super::output::{self, mib, Out};
use super::Context;
use anyhow::Context as _;
use ckpt_engine::{Codec, Kernel};
use ckpt_lab::figures::Goal;
use ckpt_lab::pipeline_bench::{self, PipelineFigures};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ckpt bench-pipeline`.
#[derive(clap::Args)]
pub struct Args {
    /// Print the figures and their goals as one JSON document.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when a goal is not met.
    #[arg(long)]
    check: bool,
    /// Repetitions per timing (medians are reported).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=1000))]
    reps: u64,
    /// Page kernel, overriding the config.
    #[arg(long, value_parser = super::kernel_parser())]
    kernel: Option<Kernel>,
}

/// The memory parts, each run in a child process of its own.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Part {
    /// A sender writing the benchmark stream.
    Sender,
    /// A receiver reading it into an image file.
    Receiver,
    /// A receiver fed a stream that claims a 64 MiB chunk.
    Hostile,
}

/// Arguments of the hidden `rss-part` command.
#[derive(clap::Args)]
pub struct PartArgs {
    /// The part to run.
    #[arg(value_enum)]
    part: Part,
    /// Stream file.
    #[arg(long)]
    stream: PathBuf,
    /// Image file.
    #[arg(long)]
    image: PathBuf,
    /// Page kernel.
    #[arg(long, value_parser = super::kernel_parser())]
    kernel: Kernel,
}

/// The `--json` document.
#[derive(Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    figures: &'a PipelineFigures,
    goals: &'a [Goal],
}

/// Measures and prints.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let ctx = &ctx.with_kernel(args.kernel)?;
    let codec = ctx.codec()?;
    let reps = args.reps as usize;
    let exe =
        std::env::current_exe().context("cannot find this executable to run the memory parts")?;
    // The memory parts run in child processes with this configuration.
    let mut config = tempfile::NamedTempFile::new()?;
    config.write_all(toml::to_string(&ctx.config)?.as_bytes())?;
    let bar = ctx.progress(Some(3), "bench-pipeline");
    let mut steps = 0;
    let f = pipeline_bench::measure(codec, reps, &exe, config.path(), |s| {
        if steps > 0 {
            bar.inc(1);
        }
        steps += 1;
        bar.set_message(format!("measuring {s}"));
    })
    .context("cannot measure the pipeline")?;
    bar.finish_and_clear();
    let goals = f.goals();
    let code = if args.check && goals.iter().any(|g| !g.met) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    let mut out = Out::new();
    if args.json {
        output::json(
            &mut out,
            &Document {
                figures: &f,
                goals: &goals,
            },
        )?;
        return Ok(code);
    }
    writeln!(out, "kernel {}, medians of {reps}", f.kernel)?;
    writeln!(
        out,
        "compress 8196 pages: 1 thread {:.2} ms, 2 threads {:.2} ms, speedup {:.2}x",
        f.compress_1_thread_ms, f.compress_2_threads_ms, f.speedup
    )?;
    writeln!(
        out,
        "memory floor over the same batch: speedup {:.2}x on 2 threads",
        f.floor_speedup
    )?;
    writeln!(
        out,
        "stage 8196 pages: {:.2} ms, memcpy {:.2} ms, ratio {:.2}",
        f.stage_ms, f.memcpy_ms, f.stage_ratio
    )?;
    writeln!(
        out,
        "sender peak RSS {:.1} MiB, budget {:.1} MiB (ring + cache + 2 chunks + 32 MiB)",
        mib(f.sender_peak_rss),
        mib(f.sender_budget)
    )?;
    writeln!(
        out,
        "receiver peak RSS {:.1} MiB, budget {:.1} MiB (image + largest checkpoint {:.1} MiB + 32 MiB)",
        mib(f.receiver_peak_rss),
        mib(f.receiver_budget),
        mib(f.receiver_largest_checkpoint)
    )?;
    writeln!(
        out,
        "receiver peak RSS on a stream claiming a {:.0} MiB chunk: {:.1} MiB",
        mib(ctx.config.receiver.max_chunk_bytes),
        mib(f.hostile_peak_rss)
    )?;
    writeln!(out, "goals:")?;
    for g in &goals {
        writeln!(out, "{}", output::goal_line(g))?;
    }
    Ok(code)
}

/// Runs one memory part in this process, with the configured receiver
/// limits, and prints its figures.
pub fn part(ctx: &Context, args: PartArgs) -> anyhow::Result<ExitCode> {
    let codec = Codec::new(args.kernel)?;
    let limits = &ctx.config.receiver.limits();
    let mut out = Out::new();
    match args.part {
        Part::Sender => writeln!(
            out,
            "{}",
            pipeline_bench::rss_sender(codec, 2, &args.stream, limits)?
        )?,
        Part::Receiver => {
            let (peak, largest) =
                pipeline_bench::rss_receiver(codec, &args.stream, &args.image, limits)?;
            writeln!(out, "{peak} {largest}")?;
        }
        Part::Hostile => writeln!(
            out,
            "{}",
            pipeline_bench::rss_hostile(codec, &args.image, limits)?
        )?,
    }
    let _ = std::fs::remove_file(&args.image);
    Ok(ExitCode::SUCCESS)
}

//! `ckpt demo`: the README's first command.

use super::{Context, Tuning, Usage};
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ckpt demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace to replicate (default: the bundled redis trace).
    #[arg(long)]
    trace: Option<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
}

/// Runs the demo and prints what a user wants to see first.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let codec = ctx.codec(args.tuning.kernel)?;
    let trace = match args.trace {
        Some(t) => t,
        None => ckpt_lab::bundled_traces()
            .into_iter()
            .find(|p| p.to_string_lossy().contains("redis"))
            .ok_or_else(|| {
                Usage(format!(
                    "no bundled trace found (searched {}); set CKPT_TRACES or give --trace",
                    ckpt_lab::trace_dirs()
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
    };
    let opts = ctx.sender_options(&args.tuning, 1);
    let r = ckpt_lab::demo::run(&trace, codec, &opts)
        .with_context(|| format!("replicating {}", trace.display()))?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let s = &r.sent;
    println!(
        "{} replicated primary -> backup over loopback TCP: kernel {}, {} compression thread(s)",
        trace.display(),
        codec.kernel(),
        opts.compress.threads
    );
    let later_in = (s.pages - s.uncompressed) * 4096;
    let later_out = s.output_bytes - s.uncompressed_output_bytes;
    println!(
        "{} checkpoints after the initial image ({} pages): {:.1} MiB of pages sent as {:.1} MiB ({:.1}x fewer bytes)",
        s.checkpoints.saturating_sub(1),
        s.pages - s.uncompressed,
        mib(later_in),
        mib(later_out),
        later_in as f64 / later_out.max(1) as f64
    );
    println!(
        "initial image: {} pages, {:.1} MiB uncompressed",
        s.uncompressed,
        mib(s.uncompressed_output_bytes)
    );
    println!(
        "pages: {} FULL (cache miss), {} FULL (page tables), {} EMPTY, {} DELTA",
        s.counts.full_miss, s.counts.full_raw, s.counts.empty, s.counts.delta
    );
    println!("latency per checkpoint:");
    println!("{}", super::latency_row("stage", &r.latencies.stage));
    println!(
        "{}",
        super::latency_row("checkpoint", &r.latencies.checkpoint)
    );
    println!(
        "backup committed {} checkpoints in {:.1} ms; wall {:.1} ms",
        r.committed,
        r.receive.as_secs_f64() * 1e3,
        r.wall.as_secs_f64() * 1e3
    );
    println!(
        "verified: {}",
        if r.verified {
            "every page of the backup equals the trace's"
        } else {
            "MISMATCH"
        }
    );
    Ok(if r.verified && r.committed == s.checkpoints {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

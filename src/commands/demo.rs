//! `ckpt demo`: the README's first command.

use super::output::{self, size, Out};
use super::{Context, Tuning};
use anyhow::Context as _;
use ckpt_lab::figures::{Quantiles, Ratios};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ckpt demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace to replicate (default: the bundled redis trace).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Print the figures as one JSON document.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tuning: Tuning,
}

/// The `--json` document.
#[derive(Serialize)]
struct Document {
    trace: String,
    kernel: String,
    threads: usize,
    checkpoints: u64,
    initial_image_pages: u64,
    pages: u64,
    full_miss_pages: u64,
    full_raw_pages: u64,
    empty_pages: u64,
    delta_pages: u64,
    ratios: Ratios,
    stage_ms: Quantiles,
    checkpoint_ms: Quantiles,
    committed: u64,
    receive_ms: f64,
    wall_ms: f64,
    verified: bool,
}

/// Runs the demo and prints what a user wants to see first.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let codec = ctx.codec(args.tuning.kernel)?;
    let trace = match args.trace {
        Some(t) => t,
        None => super::redis_trace()?,
    };
    let opts = ctx.sender_options(&args.tuning, 1);
    let bar = ctx.progress(None, "demo");
    bar.set_message(format!("replicating {}", trace.display()));
    let r = ckpt_lab::demo::run(&trace, codec, &opts)
        .with_context(|| format!("cannot replicate {}", trace.display()))?;
    bar.finish_and_clear();
    let s = &r.sent;
    let ratios = Ratios::of_stream(s);
    let ok = r.verified && r.committed == s.checkpoints;
    let code = if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    let mut out = Out::new();
    if args.json {
        output::json(
            &mut out,
            &Document {
                trace: trace.display().to_string(),
                kernel: codec.kernel().name().into(),
                threads: opts.compress.threads,
                checkpoints: s.checkpoints,
                initial_image_pages: s.uncompressed,
                pages: s.pages,
                full_miss_pages: s.counts.full_miss,
                full_raw_pages: s.counts.full_raw,
                empty_pages: s.counts.empty,
                delta_pages: s.counts.delta,
                ratios,
                stage_ms: Quantiles::of_latency(&r.latencies.stage),
                checkpoint_ms: Quantiles::of_latency(&r.latencies.checkpoint),
                committed: r.committed,
                receive_ms: r.receive.as_secs_f64() * 1e3,
                wall_ms: r.wall.as_secs_f64() * 1e3,
                verified: r.verified,
            },
        )?;
        return Ok(code);
    }
    writeln!(
        out,
        "{} replicated primary -> backup over loopback TCP: kernel {}, {} compression thread(s)",
        trace.display(),
        codec.kernel(),
        opts.compress.threads
    )?;
    writeln!(
        out,
        "{} checkpoints after the initial image ({} pages): {} of pages sent as {}: ratio {:.2}",
        s.checkpoints.saturating_sub(1),
        s.pages - s.uncompressed,
        size(ratios.checkpoint_input_bytes),
        size(ratios.checkpoint_output_bytes),
        ratios.ratio
    )?;
    writeln!(
        out,
        "with the initial image ({} pages, sent uncompressed): {} of pages sent as {}: ratio {:.2}",
        s.uncompressed,
        size(ratios.total_input_bytes),
        size(ratios.total_output_bytes),
        ratios.ratio_with_initial_image
    )?;
    writeln!(
        out,
        "pages after the initial image: {} FULL (cache miss), {} FULL (page tables), {} EMPTY, {} DELTA",
        s.counts.full_miss, s.counts.full_raw, s.counts.empty, s.counts.delta
    )?;
    writeln!(out, "latency per checkpoint, the initial image included:")?;
    for (name, l) in [
        ("stage", &r.latencies.stage),
        ("checkpoint", &r.latencies.checkpoint),
    ] {
        writeln!(out, "{}", super::latency_row(name, l))?;
    }
    writeln!(
        out,
        "backup committed {} checkpoints in {:.1} ms; wall {:.1} ms",
        r.committed,
        r.receive.as_secs_f64() * 1e3,
        r.wall.as_secs_f64() * 1e3
    )?;
    writeln!(
        out,
        "verified: {}",
        if r.verified {
            "every page of the backup equals the trace's"
        } else {
            "MISMATCH"
        }
    )?;
    Ok(code)
}

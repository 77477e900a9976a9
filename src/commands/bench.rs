//! `ckpt bench`: bundled or given traces through the sender and receiver.

use super::format::FormatArgs;
use super::output::{self, gbps, mib, size, Out};
use super::{CacheArgs, Context, Tuning};
use anyhow::Context as _;
use ckpt_lab::bench::BenchReport;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ckpt bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace to replay (default: the bundled redis trace; see --all).
    #[arg(long, conflicts_with = "all")]
    trace: Option<PathBuf>,
    /// Replay every bundled trace.
    #[arg(long)]
    all: bool,
    /// Print one JSON document: {"traces": [one object per trace]}, each
    /// with a per-checkpoint "series".
    #[arg(long)]
    json: bool,
    /// How the backup's memory is backed (default: the config's).
    #[arg(long, value_parser = super::parse_superpages)]
    superpages: Option<ckpt_engine::SuperpagePolicy>,
    #[command(flatten)]
    tuning: Tuning,
    #[command(flatten)]
    format: FormatArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

/// The `--json` document.
#[derive(Serialize)]
struct Document<'a> {
    traces: &'a [BenchReport],
}

/// Runs the bench and prints each trace's figures.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let codec = ctx.codec(args.tuning.kernel)?;
    let mut opts = ctx.sender_options(&args.tuning, 1);
    args.format.apply(&mut opts)?;
    ctx.apply_cache(&mut opts.compress, &args.cache)?;
    let traces = match (args.trace, args.all) {
        (Some(t), _) => vec![t],
        (None, true) => super::bundled_traces()?,
        (None, false) => vec![super::redis_trace()?],
    };
    let mut out = Out::new();
    let bar = ctx.progress(Some(traces.len() as u64), "bench");
    let mut reports = Vec::new();
    for t in &traces {
        bar.set_message(t.display().to_string());
        let superpages = args.superpages.unwrap_or(ctx.config.receiver.superpages);
        let r = ckpt_lab::bench::run(t, codec, &opts, superpages)
            .with_context(|| format!("cannot benchmark {}", t.display()))?;
        bar.inc(1);
        if !args.json {
            bar.suspend(|| print(&mut out, &r))?;
        }
        reports.push(r);
    }
    bar.finish_and_clear();
    if args.json {
        output::json(&mut out, &Document { traces: &reports })?;
    }
    Ok(if reports.iter().all(|r| r.verified) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print(out: &mut Out, r: &BenchReport) -> anyhow::Result<()> {
    writeln!(
        out,
        "{} ({}), kernel {}, {} thread(s), {} stream",
        r.trace, r.workload, r.kernel, r.threads, r.format
    )?;
    writeln!(
        out,
        "  {} checkpoints after the initial image: {} pages, {} of pages sent as {}: ratio {:.2}",
        r.checkpoints,
        r.pages,
        size(r.input_bytes),
        size(r.output_bytes),
        r.ratio
    )?;
    writeln!(
        out,
        "  with the initial image ({} pages, sent uncompressed): {} of stream, ratio {:.2}",
        r.initial_image_pages,
        size(r.stream_bytes),
        r.ratio_with_initial_image
    )?;
    let vs = |a: Option<f64>, b: Option<f64>| match a.zip(b) {
        Some((a, b)) => format!("{:.2}x", a / b),
        None => "n/a".into(),
    };
    writeln!(
        out,
        "  encode {} in {:.1} ms; the floor (reading both pages where the encoder reads them) {}; encode / floor {}",
        gbps(r.encode_gbps),
        r.encode_ms,
        gbps(r.floor_gbps),
        vs(r.encode_gbps, r.floor_gbps),
    )?;
    writeln!(
        out,
        "  the floor over contiguous copies of the same pages {}; encode / that {}",
        gbps(r.floor_copies_gbps),
        vs(r.encode_gbps, r.floor_copies_gbps)
    )?;
    writeln!(
        out,
        "  decode (receiver: parse, verify, apply) {} in {:.1} ms",
        gbps(r.decode_gbps),
        r.decode_ms
    )?;
    writeln!(
        out,
        "  dirty pages per checkpoint: median {}, most {}; {:.1}% of words changed in re-dirtied pages, {:.0} runs per page",
        r.dirty_pages_p50,
        r.dirty_pages_max,
        100.0 * r.words_changed_share,
        r.runs_per_page
    )?;
    writeln!(
        out,
        "  pages: {:.1}% FULL on cache miss, {:.1}% delta, {:.1}% unchanged",
        100.0 * r.full_miss_share,
        100.0 * r.delta_share,
        100.0 * r.empty_share
    )?;
    writeln!(
        out,
        "  cache: {}{}, hit rate {:.1}%, {} at most; pages per checkpoint {}",
        r.cache_policy,
        if r.cache_seeded { ", seeded" } else { "" },
        100.0 * r.hit_rate,
        size(r.cache_bytes),
        pages_list(&r.cache_pages)
    )?;
    writeln!(out, "  latency per checkpoint after the initial image:")?;
    for (name, q) in [
        ("stage", &r.stage_ms),
        ("compress", &r.compress_ms),
        ("checkpoint", &r.checkpoint_ms),
    ] {
        writeln!(out, "  {}", output::quantiles(name, q, "checkpoints"))?;
    }
    writeln!(
        out,
        "  verified: {}; peak RSS {:.1} MiB ({})",
        if r.verified {
            "every checkpoint equals the trace's"
        } else {
            "MISMATCH"
        },
        mib(r.peak_rss_bytes),
        if r.peak_rss_scope == "trace" {
            "while this trace ran"
        } else {
            "of the whole process: this system did not let it be reset"
        }
    )?;
    if let (Some(level), Some(b)) = (r.zstd_level, &r.without_stage) {
        writeln!(
            out,
            "  zstd stage at level {level} ({}): page encodings {} sent as {} ({:.1}% fewer bytes), {:.2} us per page (the encoder: {:.2} us)",
            r.zstd_placement.as_deref().unwrap_or("?"),
            size(r.encoded_bytes),
            size(r.payload_bytes),
            100.0 * (1.0 - r.payload_bytes as f64 / r.encoded_bytes.max(1) as f64),
            r.zstd_us_per_page,
            r.compress_us_per_page
        )?;
        writeln!(
            out,
            "  without the stage (same run, in turns): {} out, ratio {:.2}",
            size(b.output_bytes),
            b.ratio
        )?;
        writeln!(
            out,
            "  {}",
            output::quantiles(
                "checkpoint without the stage",
                &b.checkpoint_ms,
                "checkpoints"
            )
        )?;
    }
    if let Some(sp) = &r.superpages {
        writeln!(
            out,
            "  backup memory ({}): {} extents of 2 MiB ({} broken), {} pages of 4 KiB; {} of the fully written extents on huge pages",
            sp.superpage_policy,
            sp.extents_2m,
            sp.extents_broken,
            sp.pages_4k,
            sp.huge_extent_share
                .map_or("unknown".into(), |x| format!("{:.0}%", 100.0 * x))
        )?;
    }
    Ok(())
}

/// The sizes per checkpoint, runs of one size written once with a count.
fn pages_list(pages: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < pages.len() {
        let run = pages[i..].iter().take_while(|&&p| p == pages[i]).count();
        out.push(match run {
            1 => pages[i].to_string(),
            n => format!("{} x{n}", pages[i]),
        });
        i += run;
    }
    out.join(", ")
}

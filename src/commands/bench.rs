//! `ckpt bench`: bundled or given traces through the sender and receiver.

use super::{CacheArgs, Context, Tuning, Usage};
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ckpt bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace to replay (default: the bundled redis trace; see --all).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Replay every bundled trace.
    #[arg(long)]
    all: bool,
    /// Print one JSON object per trace.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tuning: Tuning,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Runs the bench and prints each trace's figures.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let codec = ctx.codec(args.tuning.kernel)?;
    let mut opts = ctx.sender_options(&args.tuning, 1);
    ctx.apply_cache(&mut opts.compress, &args.cache)?;
    let traces = match (args.trace, args.all) {
        (Some(t), _) => vec![t],
        (None, true) => ckpt_lab::bundled_traces(),
        (None, false) => ckpt_lab::bundled_traces()
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("redis"))
            .take(1)
            .collect(),
    };
    if traces.is_empty() {
        return Err(Usage("no bundled trace found; set CKPT_TRACES or give --trace".into()).into());
    }
    let mut ok = true;
    for t in traces {
        let r = ckpt_lab::bench::run(&t, codec, &opts)
            .with_context(|| format!("benchmarking {}", t.display()))?;
        ok &= r.verified;
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
            continue;
        }
        println!(
            "{} ({}), kernel {}, {} thread(s)",
            r.trace, r.workload, r.kernel, r.threads
        );
        println!(
            "  {} checkpoints, {} pages, {:.1} MiB in, {:.1} MiB out, ratio {:.2}",
            r.checkpoints,
            r.pages,
            r.input_bytes as f64 / (1 << 20) as f64,
            r.output_bytes as f64 / (1 << 20) as f64,
            r.ratio
        );
        println!(
            "  encode {:.2} GB/s ({:.2}x the floor of {:.2} GB/s), decode {:.2} GB/s, {:.0} pages/s",
            r.encode_gbps, r.encode_vs_floor, r.floor_gbps, r.decode_gbps, r.pages_per_s
        );
        println!(
            "  floor over contiguous copies of the same pages {:.2} GB/s (encode {:.2}x that)",
            r.floor_copies_gbps,
            r.encode_gbps / r.floor_copies_gbps
        );
        println!(
            "  dirty pages per checkpoint p50 {} p99 {}; {:.1}% of words changed in re-dirtied pages, {:.0} runs per page",
            r.dirty_pages_p50,
            r.dirty_pages_p99,
            100.0 * r.words_changed_share,
            r.runs_per_page
        );
        println!(
            "  pages: {:.1}% FULL on cache miss, {:.1}% delta, {:.1}% unchanged",
            100.0 * r.full_miss_share,
            100.0 * r.delta_share,
            100.0 * r.empty_share
        );
        println!(
            "  cache: {}{}, hit rate {:.1}%, {:.1} MiB at most; pages per checkpoint {}",
            r.cache_policy,
            if r.cache_seeded { ", seeded" } else { "" },
            100.0 * r.hit_rate,
            r.cache_bytes as f64 / (1 << 20) as f64,
            pages_list(&r.cache_pages)
        );
        for (name, p) in [
            ("stage", r.stage_ms),
            ("compress", r.compress_ms),
            ("checkpoint", r.checkpoint_ms),
        ] {
            println!(
                "  {name:<10} p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms",
                p.p50, p.p99, p.p999
            );
        }
        println!(
            "  verified: {}; peak RSS {:.1} MiB",
            r.verified,
            r.peak_rss_bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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

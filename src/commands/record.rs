//! `ckpt record`: a live process into a trace.

use super::{Context, Usage};
use anyhow::Context as _;
use ckpt_lab::record::EpochStats;
use ckpt_lab::record_session::{record, RecordArgs};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `ckpt record`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Target run time between pauses, in ms (default: config, 25).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    epoch_ms: Option<u64>,
    /// Stop after this many epochs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    epochs: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// Attach to this process instead of starting a command.
    #[arg(long)]
    pid: Option<i32>,
    /// Also stop and record the target's descendants.
    #[arg(long)]
    children: bool,
    /// Workload name stored in the trace.
    #[arg(long, default_value = "unnamed")]
    name: String,
    /// Command to start and record.
    #[arg(last = true)]
    command: Vec<String>,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(format!("{s} is not a number of seconds in (0, 86400]"));
    }
    Ok(v)
}

/// Records and prints the pause figures.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let codec = ctx.codec(None)?;
    if args.epochs.is_none() && args.seconds.is_none() && args.pid.is_some() {
        return Err(Usage("give --epochs or --seconds when attaching".into()).into());
    }
    let rec = RecordArgs {
        output: args.output.clone(),
        epoch: Duration::from_millis(args.epoch_ms.unwrap_or(ctx.config.record.epoch_ms).max(1)),
        epochs: args.epochs,
        duration: args.seconds.map(Duration::from_secs_f64),
        children: args.children,
        pid: args.pid,
        command: args.command,
        name: args.name,
    };
    let bar = if std::io::stderr().is_terminal() {
        let b = match rec.epochs {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new(rec.duration.map_or(0, |d| d.as_secs())),
        };
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let by_epochs = rec.epochs.is_some();
    let r = record(&rec, codec, &mut |stats: &EpochStats, elapsed| {
        bar.set_message(format!(
            "pause {:.1} ms, {} dirty pages, {:.0} MiB scanned",
            stats.pause.as_secs_f64() * 1e3,
            stats.dirty_pages,
            stats.scanned_bytes as f64 / (1 << 20) as f64
        ));
        if by_epochs {
            bar.inc(1)
        } else {
            bar.set_position(elapsed.as_secs())
        }
    })
    .with_context(|| format!("recording into {}", args.output.display()))?;
    bar.finish_and_clear();
    let (p50, p99) = r.pause_ms();
    let first = r.epochs.first().copied().unwrap_or_default();
    let later = r.epochs.len().saturating_sub(1);
    let scanned: f64 = r
        .epochs
        .iter()
        .skip(1)
        .map(|e| e.scanned_bytes as f64)
        .sum::<f64>()
        / (later.max(1) as f64 * (1 << 20) as f64);
    println!(
        "{}: {} epochs; initial image {} pages (pause {:.1} ms)",
        args.output.display(),
        r.epochs.len(),
        first.dirty_pages,
        first.pause.as_secs_f64() * 1e3
    );
    println!(
        "pause per epoch p50 {p50:.2} ms, p99 {p99:.2} ms over {later} epochs; {scanned:.1} MiB scanned per epoch; {:.3} ms per MiB scanned",
        r.ms_per_mib()
    );
    let n = later.max(1) as f64;
    let avg = |f: fn(&EpochStats) -> Duration| {
        r.epochs
            .iter()
            .skip(1)
            .map(|e| f(e).as_secs_f64())
            .sum::<f64>()
            * 1e3
            / n
    };
    println!(
        "mean pause split: stop {:.2} ms, enumerate {:.2} ms, read+compare {:.2} ms \
         (of which {:.2} ms of scan-thread time inside process_vm_readv)",
        avg(|e| e.stop_wait),
        avg(|e| e.enumerate),
        avg(|e| e.compare),
        avg(|e| e.read_calls)
    );
    Ok(ExitCode::SUCCESS)
}

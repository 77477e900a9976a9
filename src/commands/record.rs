//! `ckpt record`: a live process into a trace.

use super::output::{self, Out};
use super::{Context, Usage};
use crate::config::EPOCH_MS;
use anyhow::Context as _;
use ckpt_lab::figures::Quantiles;
use ckpt_lab::record::EpochStats;
use ckpt_lab::record_session::{record, RecordArgs};
use serde::Serialize;
use std::io::Write;
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
    #[arg(long, value_parser = super::send::range(EPOCH_MS))]
    epoch_ms: Option<u64>,
    /// Stop after this many epochs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    epochs: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// Attach to this process instead of starting a command.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pid: Option<i32>,
    /// Also stop and record the target's descendants.
    #[arg(long)]
    children: bool,
    /// Workload name stored in the trace.
    #[arg(long, default_value = "unnamed")]
    name: String,
    /// Print the figures as one JSON document.
    #[arg(long)]
    json: bool,
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

/// The `--json` document.
#[derive(Serialize)]
struct Document {
    output: String,
    /// Epochs recorded, the initial image included.
    epochs: usize,
    initial_image_pages: u64,
    initial_image_pause_ms: f64,
    /// Pause per epoch after the initial image.
    pause_ms: Quantiles,
    scanned_mib_per_epoch: f64,
    ms_per_mib_scanned: f64,
    dirty_pages_per_epoch: Vec<u64>,
    /// The signal that ended the recording early, if one did.
    stopped_by: Option<&'static str>,
}

/// Records and prints the pause figures.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let mut flags = crate::config::FlagSet::default();
    flags.opt("record.epoch_ms", "--epoch-ms", args.epoch_ms);
    let ctx = &ctx.with_flags(&flags)?;
    let codec = ctx.codec()?;
    if args.epochs.is_none() && args.seconds.is_none() && args.pid.is_some() {
        return Err(Usage("give --epochs or --seconds when attaching".into()).into());
    }
    if args.pid.is_some() && !args.command.is_empty() {
        return Err(Usage("give either --pid or a command after --, not both".into()).into());
    }
    if args.pid.is_none() && args.command.is_empty() {
        return Err(Usage("give --pid PID or a command after --".into()).into());
    }
    let rec = RecordArgs {
        output: args.output.clone(),
        epoch: Duration::from_millis(ctx.config.record.epoch_ms),
        epochs: args.epochs,
        duration: args.seconds.map(Duration::from_secs_f64),
        children: args.children,
        pid: args.pid,
        command: args.command,
        name: args.name,
    };
    let bar = match (rec.epochs, rec.duration) {
        (Some(n), _) => ctx.progress(Some(n), "record"),
        (None, Some(d)) => ctx.progress(Some(d.as_secs().max(1)), "record"),
        (None, None) => ctx.progress(None, "record"),
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
    .with_context(|| match rec.pid {
        Some(pid) => format!("cannot record process {pid} into {}", args.output.display()),
        None => format!("cannot record into {}", args.output.display()),
    })?;
    bar.finish_and_clear();
    if let Some(sig) = r.stopped_by {
        let _ = writeln!(
            std::io::stderr(),
            "ckpt: {sig} received: recording stopped after {} epoch(s); the target was resumed and the trace holds them",
            r.epochs.len()
        );
    }
    let first = r.epochs.first().copied().unwrap_or_default();
    let later = &r.epochs[r.epochs.len().min(1)..];
    let pause = Quantiles::of_ms(
        &later
            .iter()
            .map(|e| e.pause.as_secs_f64() * 1e3)
            .collect::<Vec<_>>(),
    );
    let scanned = later.iter().map(|e| e.scanned_bytes).sum::<u64>() as f64
        / (later.len().max(1) as f64 * (1 << 20) as f64);
    let mut out = Out::new();
    if args.json {
        output::json(
            &mut out,
            &Document {
                output: args.output.display().to_string(),
                epochs: r.epochs.len(),
                initial_image_pages: first.dirty_pages,
                initial_image_pause_ms: first.pause.as_secs_f64() * 1e3,
                pause_ms: pause,
                scanned_mib_per_epoch: scanned,
                ms_per_mib_scanned: r.ms_per_mib(),
                dirty_pages_per_epoch: r.epochs.iter().map(|e| e.dirty_pages).collect(),
                stopped_by: r.stopped_by,
            },
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{}: {} epochs; initial image {} pages (pause {:.1} ms)",
        args.output.display(),
        r.epochs.len(),
        first.dirty_pages,
        first.pause.as_secs_f64() * 1e3
    )?;
    if later.is_empty() {
        writeln!(out, "no epoch after the initial image: no pause figures")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "pause per epoch after the initial image:\n{}",
        output::quantiles("pause", &pause, "epochs")
    )?;
    writeln!(
        out,
        "{scanned:.1} MiB scanned per epoch; {:.3} ms of pause per MiB scanned",
        r.ms_per_mib()
    )?;
    let n = later.len() as f64;
    let avg = |f: fn(&EpochStats) -> Duration| {
        later.iter().map(|e| f(e).as_secs_f64()).sum::<f64>() * 1e3 / n
    };
    writeln!(
        out,
        "mean pause split: stop {:.2} ms, enumerate {:.2} ms, read+compare {:.2} ms \
         (of which {:.2} ms of scan-thread time inside process_vm_readv)",
        avg(|e| e.stop_wait),
        avg(|e| e.enumerate),
        avg(|e| e.compare),
        avg(|e| e.read_calls)
    )?;
    Ok(ExitCode::SUCCESS)
}

//! `ckpt send`: the primary. Replicates a trace (paced at its epoch) or a
//! live process to a backup, and prints latencies, acknowledgements and
//! bytes on the wire.

use super::{Context, Tuning, Usage};
use crate::config::{FlagSet, ACK_TIMEOUT_MS, EPOCH_MS, HEARTBEAT_MS, RECONNECT_MS, WINDOW};
use anyhow::Context as _;
use ckpt_engine::replicate::{Primary, PrimaryOptions, PrimaryReport};
use ckpt_engine::{Codec, Commit, Latency};
use ckpt_lab::replay::{Source, TraceSource};
use ckpt_lab::replicate::{drive, DriveOptions, DriveReport};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `ckpt send`.
#[derive(clap::Args)]
pub struct Args {
    /// The backup's address (host:port).
    #[arg(long)]
    to: String,
    /// Trace to replicate, paced at its recorded epoch.
    #[arg(long, conflicts_with_all = ["pid", "command"])]
    trace: Option<PathBuf>,
    /// Replay the trace without pacing: each checkpoint as soon as the
    /// window allows.
    #[arg(long, requires = "trace")]
    as_fast_as_possible: bool,
    /// Checkpoint this running process instead.
    #[arg(long)]
    pid: Option<i32>,
    /// Also stop and checkpoint the process's descendants.
    #[arg(long)]
    children: bool,
    /// A live process's run time between checkpoints, in ms (default:
    /// the config's record.epoch_ms, 25).
    #[arg(long, value_parser = range(EPOCH_MS))]
    epoch_ms: Option<u64>,
    /// A live process's guest size in MiB: its pages are numbered in the
    /// order they are first seen, below this.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    guest_mib: u64,
    /// Stop after this many checkpoints.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u64::MAX))]
    checkpoints: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_parser = parse_seconds)]
    seconds: Option<f64>,
    #[command(flatten)]
    replication: PrimaryArgs,
    #[command(flatten)]
    tuning: Tuning,
    /// Command to start and checkpoint.
    #[arg(last = true)]
    command: Vec<String>,
}

/// The primary's tunables ([replication]), shared with `config show`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PrimaryArgs {
    /// Most checkpoints unacknowledged at once (default: the config's
    /// replication.window, 1).
    #[arg(long, value_parser = range(WINDOW))]
    window: Option<u64>,
    /// Send a heartbeat after this many ms with nothing sent (default:
    /// replication.heartbeat_ms, 100).
    #[arg(long, value_parser = range(HEARTBEAT_MS))]
    heartbeat_ms: Option<u64>,
    /// The backup is lost when a checkpoint or heartbeat goes unanswered
    /// this many ms (default: replication.ack_timeout_ms, 2000).
    #[arg(long, alias = "ack-timeout-ms", value_parser = range(ACK_TIMEOUT_MS))]
    timeout_ms: Option<u64>,
    /// Keep trying to reconnect for this many ms before giving up
    /// (default: replication.reconnect_ms, 10000).
    #[arg(long, value_parser = range(RECONNECT_MS))]
    reconnect_ms: Option<u64>,
}

impl PrimaryArgs {
    /// The keys these flags set.
    pub fn flags(&self, f: &mut FlagSet) {
        f.opt("replication.window", "--window", self.window);
        f.opt(
            "replication.heartbeat_ms",
            "--heartbeat-ms",
            self.heartbeat_ms,
        );
        f.opt(
            "replication.ack_timeout_ms",
            "--timeout-ms",
            self.timeout_ms,
        );
        f.opt(
            "replication.reconnect_ms",
            "--reconnect-ms",
            self.reconnect_ms,
        );
    }
}

/// A clap parser for a number within a configuration range.
pub fn range((min, max): (u64, u64)) -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(min..=max)
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(format!("{s} is not a number of seconds in (0, 86400]"));
    }
    Ok(v)
}

/// "checkpoint N of stream X (digest D)", or "no checkpoint".
pub fn holds_text(holds: Option<Commit>) -> String {
    match holds {
        Some(c) => format!(
            "checkpoint {} of stream {:032x} (digest {:032x})",
            c.seq, c.stream_id, c.digest
        ),
        None => "no checkpoint".into(),
    }
}

/// One latency distribution on one line, in the form every command uses
/// ([`super::output::quantiles`]: the percentiles its sample count supports,
/// and the count).
pub fn latency_line(name: &str, l: &Latency) -> String {
    super::output::quantiles(
        name,
        &ckpt_lab::figures::Quantiles::of_latency(l),
        "samples",
    )
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Prints what a primary did: checkpoints, bytes on the wire against raw
/// page bytes, latencies.
pub fn print_report(r: &PrimaryReport) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    println!(
        "checkpoints: {} sent, {} acknowledged, {} lost; {} connection(s); {:.1} checkpoints/s",
        r.checkpoints,
        r.acknowledged,
        r.lost,
        r.connections,
        r.acknowledged as f64 / secs
    );
    let s = &r.sent;
    let heartbeat_bytes = r.wire_out.saturating_sub(s.output_bytes);
    println!(
        "pages: {} ({:.1} MiB raw) -> {:.1} MiB on the wire ({:.1}x fewer bytes): stream {} bytes (page data {}, framing {}) + heartbeats {} bytes ({}); back: {} bytes of acknowledgements and replies",
        s.pages,
        mib(s.input_bytes),
        mib(r.wire_out + r.wire_in),
        s.input_bytes as f64 / (r.wire_out + r.wire_in).max(1) as f64,
        s.output_bytes,
        s.payload_bytes,
        s.output_bytes - s.payload_bytes,
        heartbeat_bytes,
        r.heartbeats,
        r.wire_in
    );
    println!("latency per checkpoint:");
    let l = &r.latencies;
    println!("{}", latency_line("pause", &l.pause));
    println!("{}", latency_line("compress", &l.compress));
    println!("{}", latency_line("send", &l.send));
    println!("{}", latency_line("ack", &l.ack));
    println!("{}", latency_line("sent-to-ack", &l.sent_to_ack));
    for b in &r.breaks {
        println!("connection ended: {b}");
    }
}

fn primary_options(ctx: &Context, guest_pages: u64) -> PrimaryOptions {
    let r = &ctx.config.replication;
    PrimaryOptions {
        sender: ctx.sender_options(guest_pages),
        window: r.window as usize,
        heartbeat: Duration::from_millis(r.heartbeat_ms),
        timeout: Duration::from_millis(r.ack_timeout_ms),
        reconnect_for: Duration::from_millis(r.reconnect_ms),
        lineage: None,
    }
}

fn replicate<S: Source + ?Sized>(
    ctx: &Context,
    args: &Args,
    codec: Codec,
    source: &mut S,
    pace: Option<Duration>,
) -> anyhow::Result<DriveReport> {
    let opts = primary_options(ctx, source.guest_pages());
    let primary = Primary::connect(args.to.as_str(), codec, opts)
        .with_context(|| format!("connecting to {}", args.to))?;
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(s) = args.seconds {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(s));
            stop.store(true, Ordering::SeqCst);
        });
    }
    let drive_opts = DriveOptions {
        pace,
        max_checkpoints: args.checkpoints,
        stop: Some(stop),
    };
    let mut full = 0;
    let report = drive(source, primary, &drive_opts, |sent, _| {
        if sent.kind == ckpt_engine::replicate::CheckpointKind::Full {
            full += 1;
            if full > 1 {
                println!(
                    "reconnected: a new stream starts with a full checkpoint ({} pages)",
                    sent.data_pages
                );
            }
        }
    })?;
    Ok(report)
}

/// Runs the primary.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let mut flags = FlagSet::default();
    args.tuning.flags(&mut flags);
    args.replication.flags(&mut flags);
    flags.opt("record.epoch_ms", "--epoch-ms", args.epoch_ms);
    let ctx = &ctx.with_flags(&flags)?;
    let codec = ctx.codec()?;
    let threads = ctx.threads();
    let report = if let Some(trace) = &args.trace {
        let mut source = TraceSource::open(trace)?;
        let epoch = source.epoch();
        let pace = if args.as_fast_as_possible {
            None
        } else {
            epoch
        };
        println!(
            "replicating {} to {}: kernel {}, {} compression thread(s), window {}, {}",
            trace.display(),
            args.to,
            codec.kernel(),
            threads,
            ctx.config.replication.window,
            match pace {
                Some(p) => format!(
                    "paced at the trace's epoch, {:.1} ms",
                    p.as_secs_f64() * 1e3
                ),
                None => "as fast as possible".into(),
            }
        );
        replicate(ctx, &args, codec, &mut source, pace)?
    } else {
        live(ctx, &args, codec, threads)?
    };
    print_report(&report.primary);
    if args.trace.is_none() {
        // The process's own pause: stopped, scanned, resumed.
        println!("{}", latency_line("capture", &report.capture));
    }
    if report.late > 0 {
        println!(
            "{} checkpoints started more than an epoch late, waiting for an acknowledgement",
            report.late
        );
    }
    let r = &report.primary;
    match r.last_acknowledged {
        Some((stream, seq, digest)) if r.in_sync => {
            println!(
                "the backup holds the last checkpoint: {seq} of stream {stream:032x} (digest {digest:032x})"
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("ckpt: the backup does not hold the last checkpoint");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(target_os = "linux")]
fn live(ctx: &Context, args: &Args, codec: Codec, threads: usize) -> anyhow::Result<DriveReport> {
    use ckpt_lab::record_session::Target;
    use ckpt_lab::replicate::LiveSource;
    let target = match (args.pid, args.command.is_empty()) {
        (Some(pid), true) => {
            if args.checkpoints.is_none() && args.seconds.is_none() {
                return Err(Usage("give --checkpoints or --seconds with --pid".into()).into());
            }
            Target::attach(pid)?
        }
        (None, false) => Target::start(&args.command)?,
        (Some(_), false) => {
            return Err(Usage("give either --pid or a command after --, not both".into()).into())
        }
        (None, true) => {
            return Err(Usage("give --trace, --pid or a command after --".into()).into())
        }
    };
    let epoch = Duration::from_millis(ctx.config.record.epoch_ms);
    let guest_pages = args.guest_mib * 256;
    println!(
        "replicating process {} to {}: kernel {}, {} compression thread(s), window {}, epoch {} ms, guest {} MiB",
        target.pid(),
        args.to,
        codec.kernel(),
        threads,
        ctx.config.replication.window,
        epoch.as_millis(),
        args.guest_mib
    );
    let mut source = LiveSource::new(target, args.children, epoch, guest_pages, codec);
    replicate(ctx, args, codec, &mut source, Some(epoch))
}

#[cfg(not(target_os = "linux"))]
fn live(_: &Context, _: &Args, _: Codec, _: usize) -> anyhow::Result<DriveReport> {
    Err(Usage("checkpointing a live process needs Linux; give --trace".into()).into())
}

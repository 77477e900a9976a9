//! `ckpt demo`: the README's first command. A bundled trace replicated
//! primary to backup over loopback through `ckpt send`'s and `ckpt
//! recv`'s code, verified against the trace.

use super::{Context, Tuning, Usage};
use anyhow::Context as _;
use ckpt_engine::Durability;
use ckpt_lab::demo::{BackupMemory, DemoOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the demo's backup commits.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum BackupArg {
    /// An image file with a write-ahead journal (as `ckpt recv`).
    Journal,
    /// An image file, one fsync per checkpoint, journal retired every 64 MiB.
    Grouped,
    /// An image file written in place (not crash-consistent).
    InPlace,
    /// Memory only.
    Memory,
}

/// Arguments of `ckpt demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace to replicate (default: the bundled redis trace).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Where the backup commits.
    #[arg(long, value_enum, default_value = "journal")]
    backup: BackupArg,
    /// Checkpoint as fast as the backup acknowledges instead of at the
    /// trace's epoch.
    #[arg(long)]
    as_fast_as_possible: bool,
    /// Most checkpoints unacknowledged at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    window: u64,
    #[command(flatten)]
    tuning: Tuning,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
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
    let memory = match args.backup {
        BackupArg::Journal => BackupMemory::Image(Durability::Journal),
        BackupArg::Grouped => BackupMemory::Image(Durability::Grouped {
            retire_bytes: 64 << 20,
        }),
        BackupArg::InPlace => BackupMemory::Image(Durability::InPlace),
        BackupArg::Memory => BackupMemory::Memory,
    };
    let opts = DemoOptions {
        sender: ctx.sender_options(&args.tuning, 1),
        paced: !args.as_fast_as_possible,
        window: args.window as usize,
        memory,
    };
    let r = ckpt_lab::demo::run(&trace, codec, &opts)
        .with_context(|| format!("replicating {}", trace.display()))?;
    let p = &r.drive.primary;
    let s = &p.sent;
    println!(
        "{} replicated primary -> backup over loopback TCP: kernel {}, {} compression thread(s), window {}",
        trace.display(),
        codec.kernel(),
        opts.sender.compress.threads,
        opts.window
    );
    match (r.epoch, opts.paced) {
        (Some(e), true) => println!(
            "paced at the trace's epoch, {:.1} ms; backup: {}",
            e.as_secs_f64() * 1e3,
            backup_text(args.backup)
        ),
        _ => println!("as fast as possible; backup: {}", backup_text(args.backup)),
    }
    println!(
        "{} checkpoints, {} acknowledged, {:.1} per second; {} pages ({:.1} MiB) of a {}-page guest",
        p.checkpoints,
        p.acknowledged,
        p.acknowledged as f64 / p.elapsed.as_secs_f64().max(1e-9),
        s.pages,
        mib(s.input_bytes),
        r.guest_pages
    );
    let wire = p.wire_out + p.wire_in;
    println!(
        "on the wire: {:.1} MiB for {:.1} MiB of pages ({:.1}x fewer bytes); after the initial image: {:.1} MiB for {:.1} MiB ({:.1}x)",
        mib(wire),
        mib(s.input_bytes),
        s.input_bytes as f64 / wire.max(1) as f64,
        mib(wire - s.uncompressed_output_bytes),
        mib(s.input_bytes - s.uncompressed * 4096),
        (s.input_bytes - s.uncompressed * 4096) as f64
            / (wire - s.uncompressed_output_bytes).max(1) as f64
    );
    println!(
        "  stream {} bytes (page data {}, framing {}), heartbeats {} bytes, acknowledgements {} bytes",
        s.output_bytes,
        s.payload_bytes,
        s.output_bytes - s.payload_bytes,
        p.wire_out.saturating_sub(s.output_bytes),
        p.wire_in
    );
    // The bytes on the wire are exactly the stream, the heartbeats and the
    // back channel's messages.
    let exact = p.wire_out == s.output_bytes + 32 * p.heartbeats
        && p.wire_in == 40 * (p.acknowledged + p.heartbeat_replies);
    println!(
        "  = stream + {} heartbeats x 32 + ({} acknowledgements + {} heartbeat replies) x 40: {}",
        p.heartbeats,
        p.acknowledged,
        p.heartbeat_replies,
        if exact { "exact" } else { "MISMATCH" }
    );
    println!(
        "pages: {} FULL (cache miss), {} FULL (page tables), {} EMPTY, {} DELTA, {} uncompressed (initial image)",
        s.counts.full_miss, s.counts.full_raw, s.counts.empty, s.counts.delta, s.uncompressed
    );
    println!("latency per checkpoint:");
    println!("{}", super::latency_row("pause", &p.latencies.pause));
    println!("{}", super::latency_row("ack", &p.latencies.ack));
    println!("{}", super::latency_row("backup", &r.backup));
    if let Some(c) = r.commit.as_ref().filter(|c| c.commits > 0) {
        println!(
            "backup commit: {:.1} KiB journal and {:.1} fsyncs per checkpoint",
            c.journal_bytes as f64 / c.commits as f64 / 1024.0,
            c.syncs as f64 / c.commits as f64
        );
        println!("{}", super::latency_row("commit", &c.commit));
        println!("{}", super::send::latency_line("retire", &c.settle));
    }
    if r.drive.late > 0 {
        println!(
            "{} checkpoints started more than an epoch late, waiting for an acknowledgement",
            r.drive.late
        );
    }
    let holds = r.holds;
    println!(
        "backup committed {} checkpoints and holds {}; wall {:.1} ms",
        r.committed,
        super::send::holds_text(holds),
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
    Ok(
        if r.verified && exact && p.in_sync && r.committed == p.acknowledged {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

fn backup_text(b: BackupArg) -> &'static str {
    match b {
        BackupArg::Journal => "an image file with a write-ahead journal",
        BackupArg::Grouped => "an image file, one fsync per checkpoint",
        BackupArg::InPlace => "an image file written in place",
        BackupArg::Memory => "memory",
    }
}

//! `ckpt demo`: the README's first command. A bundled trace replicated
//! primary to backup over loopback through `ckpt send`'s and `ckpt
//! recv`'s code, verified against the trace.

use super::output::{self, Out};
use super::{Context, Tuning};
use crate::config::WINDOW;
use anyhow::Context as _;
use ckpt_engine::Durability;
use ckpt_lab::demo::{BackupMemory, DemoOptions};
use ckpt_lab::figures::Quantiles;
use serde::Serialize;
use std::io::Write;
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
    /// Most checkpoints unacknowledged at once (default: the config's
    /// replication.window, 1).
    #[arg(long, value_parser = super::send::range(WINDOW))]
    window: Option<u64>,
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
    window: usize,
    paced: bool,
    backup: &'static str,
    checkpoints: u64,
    acknowledged: u64,
    pages: u64,
    page_bytes: u64,
    wire_bytes_out: u64,
    wire_bytes_in: u64,
    stream_bytes: u64,
    wire_exact: bool,
    ratio_on_the_wire: f64,
    pause_ms: Quantiles,
    ack_ms: Quantiles,
    committed: u64,
    verified: bool,
    /// The image's commit costs (an image file only).
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<CommitDocument>,
}

/// Per checkpoint on an image file.
#[derive(Serialize)]
struct CommitDocument {
    journal_bytes_per_checkpoint: f64,
    syncs_per_checkpoint: f64,
    commit_ms: Quantiles,
    journal_ms: Quantiles,
    apply_ms: Quantiles,
    retire_ms: Quantiles,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Runs the demo and prints what a user wants to see first.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let mut flags = crate::config::FlagSet::default();
    args.tuning.flags(&mut flags);
    flags.opt("replication.window", "--window", args.window);
    let ctx = &ctx.with_flags(&flags)?;
    let codec = ctx.codec()?;
    let trace = match args.trace {
        Some(t) => t,
        None => super::redis_trace()?,
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
        sender: ctx.sender_options(1),
        paced: !args.as_fast_as_possible,
        window: ctx.config.replication.window as usize,
        memory,
    };
    let bar = ctx.progress(None, "demo");
    bar.set_message(format!("replicating {}", trace.display()));
    let r = ckpt_lab::demo::run(&trace, codec, &opts)
        .with_context(|| format!("cannot replicate {}", trace.display()))?;
    bar.finish_and_clear();
    let p = &r.drive.primary;
    let s = &p.sent;
    // The bytes on the wire are exactly the stream, the heartbeats and the
    // back channel's messages.
    let exact = p.wire_out == s.output_bytes + 32 * p.heartbeats
        && p.wire_in == 40 * (p.acknowledged + p.heartbeat_replies);
    let code = if r.verified && exact && p.in_sync && r.committed == p.acknowledged {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    let mut out = Out::new();
    if args.json {
        let wire = p.wire_out + p.wire_in;
        output::json(
            &mut out,
            &Document {
                trace: trace.display().to_string(),
                kernel: codec.kernel().name().into(),
                threads: opts.sender.compress.threads,
                window: opts.window,
                paced: opts.paced,
                backup: backup_text(args.backup),
                checkpoints: p.checkpoints,
                acknowledged: p.acknowledged,
                pages: s.pages,
                page_bytes: s.input_bytes,
                wire_bytes_out: p.wire_out,
                wire_bytes_in: p.wire_in,
                stream_bytes: s.output_bytes,
                wire_exact: exact,
                ratio_on_the_wire: s.input_bytes as f64 / wire.max(1) as f64,
                pause_ms: Quantiles::of_latency(&p.latencies.pause),
                ack_ms: Quantiles::of_latency(&p.latencies.ack),
                committed: r.committed,
                verified: r.verified,
                commit: r
                    .commit
                    .as_ref()
                    .filter(|c| c.commits > 0)
                    .map(|c| CommitDocument {
                        journal_bytes_per_checkpoint: c.journal_bytes as f64 / c.commits as f64,
                        syncs_per_checkpoint: c.syncs as f64 / c.commits as f64,
                        commit_ms: Quantiles::of_latency(&c.commit),
                        journal_ms: Quantiles::of_latency(&c.journal),
                        apply_ms: Quantiles::of_latency(&c.apply),
                        retire_ms: Quantiles::of_latency(&c.settle),
                    }),
            },
        )?;
        return Ok(code);
    }
    writeln!(out, "{} replicated primary -> backup over loopback TCP: kernel {}, {} compression thread(s), window {}",
        trace.display(),
        codec.kernel(),
        opts.sender.compress.threads,
        opts.window
    )?;
    match (r.epoch, opts.paced) {
        (Some(e), true) => writeln!(
            out,
            "paced at the trace's epoch, {:.1} ms; backup: {}",
            e.as_secs_f64() * 1e3,
            backup_text(args.backup)
        )?,
        _ => writeln!(
            out,
            "as fast as possible; backup: {}",
            backup_text(args.backup)
        )?,
    }
    writeln!(out, "{} checkpoints, {} acknowledged, {:.1} per second; {} pages ({:.1} MiB) of a {}-page guest",
        p.checkpoints,
        p.acknowledged,
        p.acknowledged as f64 / p.elapsed.as_secs_f64().max(1e-9),
        s.pages,
        mib(s.input_bytes),
        r.guest_pages
    )?;
    let wire = p.wire_out + p.wire_in;
    writeln!(out, "on the wire: {:.1} MiB for {:.1} MiB of pages ({:.1}x fewer bytes); after the initial image: {:.1} MiB for {:.1} MiB ({:.1}x)",
        mib(wire),
        mib(s.input_bytes),
        s.input_bytes as f64 / wire.max(1) as f64,
        mib(wire - s.uncompressed_output_bytes),
        mib(s.input_bytes - s.uncompressed * 4096),
        (s.input_bytes - s.uncompressed * 4096) as f64
            / (wire - s.uncompressed_output_bytes).max(1) as f64
    )?;
    writeln!(out, "  stream {} bytes (page data {}, framing {}), heartbeats {} bytes, acknowledgements {} bytes",
        s.output_bytes,
        s.payload_bytes,
        s.output_bytes - s.payload_bytes,
        p.wire_out.saturating_sub(s.output_bytes),
        p.wire_in
    )?;
    writeln!(
        out,
        "  = stream + {} heartbeats x 32 + ({} acknowledgements + {} heartbeat replies) x 40: {}",
        p.heartbeats,
        p.acknowledged,
        p.heartbeat_replies,
        if exact { "exact" } else { "MISMATCH" }
    )?;
    writeln!(out, "pages: {} FULL (cache miss), {} FULL (page tables), {} EMPTY, {} DELTA, {} uncompressed (initial image)",
        s.counts.full_miss, s.counts.full_raw, s.counts.empty, s.counts.delta, s.uncompressed
    )?;
    writeln!(out, "latency per checkpoint:")?;
    writeln!(out, "{}", super::latency_row("pause", &p.latencies.pause))?;
    writeln!(out, "{}", super::latency_row("ack", &p.latencies.ack))?;
    writeln!(out, "{}", super::latency_row("backup", &r.backup))?;
    if let Some(c) = r.commit.as_ref().filter(|c| c.commits > 0) {
        writeln!(
            out,
            "backup commit: {:.1} KiB journal and {:.1} fsyncs per checkpoint",
            c.journal_bytes as f64 / c.commits as f64 / 1024.0,
            c.syncs as f64 / c.commits as f64
        )?;
        writeln!(out, "{}", super::latency_row("commit", &c.commit))?;
        if c.journal.count() > 0 {
            writeln!(out, "{}", super::latency_row("  journal", &c.journal))?;
        }
        writeln!(out, "{}", super::latency_row("  apply", &c.apply))?;
        writeln!(out, "{}", super::send::latency_line("retire", &c.settle))?;
    }
    if r.drive.late > 0 {
        writeln!(
            out,
            "{} checkpoints started more than an epoch late, waiting for an acknowledgement",
            r.drive.late
        )?;
    }
    let holds = r.holds;
    writeln!(
        out,
        "backup committed {} checkpoints and holds {}; wall {:.1} ms",
        r.committed,
        super::send::holds_text(holds),
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

fn backup_text(b: BackupArg) -> &'static str {
    match b {
        BackupArg::Journal => "an image file with a write-ahead journal",
        BackupArg::Grouped => "an image file, one fsync per checkpoint",
        BackupArg::InPlace => "an image file written in place",
        BackupArg::Memory => "memory",
    }
}

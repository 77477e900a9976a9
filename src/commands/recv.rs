//! `ckpt recv`: the backup. Listens for a primary, commits each checkpoint
//! to a crash-consistent image file and acknowledges it; says which
//! checkpoint the image holds when the stream ends or the primary is lost.

use super::send::{holds_text, latency_line};
use super::{Context, Usage};
use crate::config::{DurabilityMode, FlagSet, FAILOVER_TIMEOUT_MS};
use anyhow::Context as _;
use ckpt_engine::replicate::{Backup, BackupEnd, BackupEvent, BackupOptions};
use ckpt_engine::{Durability, DurableImage, GuestMemory, Kernel, Recovery, Replica};
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status when the primary was lost (failover): the image holds the
/// checkpoint printed last.
pub const EXIT_PRIMARY_LOST: u8 = 3;

/// Arguments of `ckpt recv`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (host:port).
    #[arg(long)]
    listen: String,
    /// Guest image file; PATH.state and PATH.journal sit beside it. Made
    /// for the first stream when there is none.
    #[arg(long)]
    image: PathBuf,
    #[command(flatten)]
    backup: BackupArgs,
    /// Wait at most this many ms for the first connection (default: for ever).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    first_within_ms: Option<u64>,
    /// Start over: accept a stream from another primary than the one whose
    /// checkpoint the image holds (its first checkpoint replaces the image).
    #[arg(long)]
    new: bool,
    /// Print every checkpoint committed.
    #[arg(long)]
    verbose: bool,
    /// Page kernel, overriding the config.
    #[arg(long, value_parser = super::kernel_parser())]
    kernel: Option<Kernel>,
}

/// The backup's tunables ([replication]), shared with `config show`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct BackupArgs {
    /// Declare the primary lost after this many ms without a checkpoint or
    /// a heartbeat (default: the config's replication.failover_timeout_ms,
    /// 2000).
    #[arg(long, alias = "failover-timeout-ms", value_parser = super::send::range(FAILOVER_TIMEOUT_MS))]
    timeout_ms: Option<u64>,
    /// How commits reach the disk (default: replication.durability,
    /// journal).
    #[arg(long, value_enum)]
    durability: Option<DurabilityMode>,
}

impl BackupArgs {
    /// The keys these flags set.
    pub fn flags(&self, f: &mut FlagSet) {
        f.opt(
            "replication.failover_timeout_ms",
            "--timeout-ms",
            self.timeout_ms,
        );
        f.opt(
            "replication.durability",
            "--durability",
            self.durability.map(DurabilityMode::name),
        );
    }
}

fn recovery_text(r: &Recovery) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(last) = r.replayed.last() {
        parts.push(format!(
            "applied {} committed checkpoint(s) from the journal again ({} pages), the last checkpoint {} of stream {:032x}, whose digest the image's {} pages of it match",
            r.replayed.len(),
            r.replayed_pages,
            last.seq,
            last.stream_id,
            r.digest_pages
        ));
    }
    if let Some(d) = r.discarded {
        parts.push(format!(
            "dropped uncommitted checkpoint {} of stream {:032x} ({} journal bytes)",
            d.seq, d.stream_id, d.bytes
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Runs the backup.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let mut flags = FlagSet::default();
    flags.opt("engine.kernel", "--kernel", args.kernel.map(Kernel::name));
    args.backup.flags(&mut flags);
    let ctx = &ctx.with_flags(&flags)?;
    let codec = ctx.codec()?;
    let durability = match ctx.config.replication.durability {
        DurabilityMode::Journal => Durability::Journal,
        DurabilityMode::Grouped => Durability::Grouped {
            retire_bytes: 64 << 20,
        },
        DurabilityMode::InPlace => Durability::InPlace,
    };
    let image = if DurableImage::exists(&args.image) {
        let (image, recovery) = DurableImage::open(&args.image, durability)
            .with_context(|| format!("opening {}", args.image.display()))?;
        if let Some(r) = recovery_text(&recovery) {
            println!("image {}: recovered: {r}", args.image.display());
        }
        println!(
            "image {}: {} pages, holds {}",
            args.image.display(),
            image.pages(),
            holds_text(image.holds())
        );
        Some(image)
    } else if args.image.exists() {
        return Err(Usage(format!(
            "{} exists but is not a ckpt image (no {}.state): move it away or choose another path",
            args.image.display(),
            args.image.display()
        ))
        .into());
    } else {
        println!(
            "image {}: none yet, made for the first stream",
            args.image.display()
        );
        None
    };
    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    println!("listening on {}", listener.local_addr()?);
    let _ = std::io::stdout().flush();
    let path = args.image.clone();
    let create = Box::new(move |pages| {
        DurableImage::create(&path, pages, durability).map_err(std::io::Error::other)
    });
    let opts = BackupOptions {
        limits: ctx.config.receiver.limits(),
        timeout: Duration::from_millis(ctx.config.replication.failover_timeout_ms),
        first_within: args.first_within_ms.map(Duration::from_millis),
        start_over: args.new,
    };
    let mut backup = Backup::new(listener, codec, opts, image, create);
    let verbose = args.verbose;
    let (mut committed, mut heartbeats) = (0u64, 0u64);
    let result = backup.run(&mut |e| {
        match e {
            BackupEvent::Connected {
                peer,
                header,
                reconnect,
            } => println!(
                "primary {peer} connected: stream {:032x}, guest {} pages{}",
                header.stream_id,
                header.guest_pages,
                if *reconnect { " (the image's primary again)" } else { "" }
            ),
            BackupEvent::Refused { peer, reason } => println!("refused {peer}: {reason}"),
            BackupEvent::Committed {
                stream_id,
                info,
                took,
            } => {
                committed += 1;
                if verbose {
                    println!(
                        "committed checkpoint {} of stream {stream_id:032x}: {} pages, {} bytes, {:.3} ms",
                        info.seq,
                        info.data_pages,
                        info.frame_bytes,
                        took.as_secs_f64() * 1e3
                    );
                }
            }
            BackupEvent::Heartbeat { .. } => heartbeats += 1,
            BackupEvent::Disconnected { reason, holds } => {
                println!("connection lost: {reason}; the image holds {}", holds_text(*holds))
            }
            _ => {}
        }
        let _ = std::io::stdout().flush();
    });
    let stats = backup.image().map(|m| m.stats().clone());
    if let Some(m) = backup.image_mut() {
        m.sync_all()
            .with_context(|| format!("syncing {}", args.image.display()))?;
    }
    let end = result.context("the backup stopped")?;
    println!("{committed} checkpoints committed, {heartbeats} heartbeats answered");
    if let Some(s) = stats.filter(|s| s.commits > 0) {
        println!(
            "commit: {:.1} KiB journal per checkpoint, {:.1} fsyncs per checkpoint",
            s.journal_bytes as f64 / s.commits as f64 / 1024.0,
            s.syncs as f64 / s.commits as f64
        );
        println!("{}", latency_line("commit", &s.commit));
        println!("{}", latency_line("retire", &s.settle));
    }
    match end {
        BackupEnd::Ended { holds } => {
            println!(
                "the primary ended the stream; the image holds {}",
                holds_text(holds)
            );
            Ok(ExitCode::SUCCESS)
        }
        BackupEnd::PrimaryLost { holds, silent } => {
            println!(
                "primary lost: nothing for {:.0} ms; failover: the image holds {}",
                silent.as_secs_f64() * 1e3,
                holds_text(holds)
            );
            eprintln!("ckpt: primary lost; the image holds {}", holds_text(holds));
            Ok(ExitCode::from(EXIT_PRIMARY_LOST))
        }
    }
}

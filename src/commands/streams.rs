//! `ckpt compress`, `ckpt restore` and `ckpt inspect`: stream files.

use super::format::{ExpectArgs, FormatArgs};
use super::output::{self, Out};
use super::{Context, Tuning};
use anyhow::Context as _;
use ckpt_engine::{CheckpointInfo, Kernel};
use ckpt_lab::figures::Ratios;
use ckpt_lab::replay::{Checkpoint, Source, TraceSource};
use ckpt_lab::streams::RestoreReport;
use ckpt_lab::synth::{Scenario, BUILTIN_SEQUENCE};
use ckpt_lab::LabError;
use indicatif::ProgressBar;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ckpt compress`.
#[derive(clap::Args)]
pub struct CompressArgs {
    /// Stream file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Trace to compress (default: a built-in synthetic guest).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Print the figures as one JSON document.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tuning: Tuning,
    #[command(flatten)]
    format: FormatArgs,
    #[command(flatten)]
    cache: super::CacheArgs,
}

/// Arguments of `ckpt restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Stream file to read.
    stream: PathBuf,
    /// Raw guest image (created or grown to the guest's size).
    #[arg(long)]
    image: PathBuf,
    /// Page kernel, overriding the config.
    #[arg(long, value_parser = super::kernel_parser())]
    kernel: Option<Kernel>,
    /// Print the outcome as one JSON document.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    expect: ExpectArgs,
}

/// Arguments of `ckpt inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// Stream file to read.
    stream: PathBuf,
    /// Print a summary (every checkpoint, the outcome) as one JSON document
    /// instead of the chunk listing.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    expect: ExpectArgs,
}

/// Refuses a stream whose zstd stage is not the one asked for; reads only
/// the stream's headers.
fn check_stage(ctx: &Context, stream: &std::path::Path, expect: &ExpectArgs) -> anyhow::Result<()> {
    if expect.zstd_level.is_none() {
        return Ok(());
    }
    let file = std::fs::File::open(stream)
        .with_context(|| format!("cannot open stream {}", stream.display()))?;
    let rx = ckpt_engine::Receiver::new(
        file,
        ctx.config.receiver.limits(),
        ckpt_engine::Codec::best(),
    )
    .with_context(|| format!("cannot read stream {}", stream.display()))?;
    let stage = rx.record_headers().and_then(|(_, info)| info.zstd_level);
    expect
        .check_level(stage)
        .map_err(|e| anyhow::anyhow!("{}: {e}", stream.display()))
}

/// A source that moves a progress indicator on with each checkpoint.
struct Counted<'a> {
    inner: Box<dyn Source + 'a>,
    bar: ProgressBar,
}

impl Source for Counted<'_> {
    fn guest_pages(&self) -> u64 {
        self.inner.guest_pages()
    }

    fn next_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError> {
        let cp = self.inner.next_checkpoint()?;
        if cp.is_some() {
            self.bar.inc(1);
        }
        Ok(cp)
    }
}

/// The `--json` document of `compress`.
#[derive(Serialize)]
struct Compressed {
    output: String,
    checkpoints: u64,
    pages: u64,
    initial_image_pages: u64,
    ratios: Ratios,
}

/// Writes a stream file.
pub fn compress(ctx: &Context, args: CompressArgs) -> anyhow::Result<ExitCode> {
    let codec = ctx.codec(args.tuning.kernel)?;
    let mut opts = ctx.sender_options(&args.tuning, 1);
    args.format.apply(&mut opts)?;
    ctx.apply_cache(&mut opts.compress, &args.cache)?;
    let (inner, len): (Box<dyn Source>, _) = match &args.trace {
        Some(t) => (
            Box::new(
                TraceSource::open(t)
                    .with_context(|| format!("cannot open trace {}", t.display()))?,
            ),
            None,
        ),
        None => (
            Box::new(Scenario::builtin()),
            Some(BUILTIN_SEQUENCE.len() as u64 + 1),
        ),
    };
    let bar = ctx.progress(len, "compress");
    bar.set_message("checkpoints");
    let mut source = Counted {
        inner,
        bar: bar.clone(),
    };
    let s = ckpt_lab::streams::compress(&mut source, &args.output, codec, &opts)
        .with_context(|| format!("cannot write stream {}", args.output.display()))?;
    bar.finish_and_clear();
    let r = Ratios::of_stream(&s);
    let mut out = Out::new();
    if args.json {
        output::json(
            &mut out,
            &Compressed {
                output: args.output.display().to_string(),
                checkpoints: s.checkpoints,
                pages: s.pages,
                initial_image_pages: s.uncompressed,
                ratios: r,
            },
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{}: {} checkpoints, {} pages, {} bytes",
        args.output.display(),
        s.checkpoints,
        s.pages,
        s.output_bytes
    )?;
    writeln!(
        out,
        "after the initial image: {} bytes of pages -> {} bytes: ratio {:.2}",
        r.checkpoint_input_bytes, r.checkpoint_output_bytes, r.ratio
    )?;
    writeln!(
        out,
        "with the initial image ({} pages, sent uncompressed): {} bytes of pages -> {} bytes: ratio {:.2}",
        s.uncompressed, r.total_input_bytes, r.total_output_bytes, r.ratio_with_initial_image
    )?;
    if let Some(z) = opts.zstd {
        writeln!(
            out,
            "zstd stage at level {} ({}): {} bytes of page encodings sent as {} bytes",
            z.level,
            z.placement.name(),
            s.encoded_bytes,
            s.payload_bytes - s.uncompressed * 4096
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One committed checkpoint, as `--json` shows it.
#[derive(Serialize)]
struct Committed {
    seq: u64,
    compressed: bool,
    entries: u64,
    data_pages: u64,
    full: u64,
    delta: u64,
    empty: u64,
    payload_bytes: u64,
    frame_bytes: u64,
}

impl From<&CheckpointInfo> for Committed {
    fn from(i: &CheckpointInfo) -> Committed {
        Committed {
            seq: i.seq,
            compressed: i.compressed,
            entries: i.entries,
            data_pages: i.data_pages,
            full: i.full,
            delta: i.delta,
            empty: i.empty,
            payload_bytes: i.payload_bytes,
            frame_bytes: i.frame_bytes,
        }
    }
}

/// The `--json` document of `restore` and `inspect`.
#[derive(Serialize)]
struct Outcome {
    stream: String,
    /// Every checkpoint verified and committed, in order.
    committed: Vec<Committed>,
    /// The stream ended with its end frame.
    complete: bool,
    /// Why reading stopped early, if it did.
    error: Option<String>,
}

impl Outcome {
    fn of(stream: &std::path::Path, r: &RestoreReport) -> Outcome {
        Outcome {
            stream: stream.display().to_string(),
            committed: r.committed.iter().map(Committed::from).collect(),
            complete: r.complete,
            error: r.error.as_ref().map(|e| e.to_string()),
        }
    }
}

fn finish(stream: &std::path::Path, r: &RestoreReport, holder: &str) -> anyhow::Result<ExitCode> {
    let mut out = Out::new();
    match (&r.error, r.complete) {
        (None, true) => {
            writeln!(
                out,
                "stream complete: {} checkpoints verified",
                r.committed.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        (Some(e), _) => {
            let held = match r.committed.last() {
                Some(info) => format!("{holder} checkpoint {}, the last complete one", info.seq),
                None => format!("{holder} no checkpoint of this stream"),
            };
            let _ = writeln!(
                std::io::stderr(),
                "ckpt: stream {} rejected: {e}\n{held}",
                stream.display()
            );
            Ok(ExitCode::FAILURE)
        }
        (None, false) => {
            let _ = writeln!(
                std::io::stderr(),
                "ckpt: stream {} ended before its end frame",
                stream.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn status(r: &RestoreReport) -> ExitCode {
    if r.error.is_none() && r.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Commits a stream file to an image.
pub fn restore(ctx: &Context, args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let codec = ctx.codec(args.kernel)?;
    check_stage(ctx, &args.stream, &args.expect)?;
    let r = ckpt_lab::streams::restore(
        &args.stream,
        &args.image,
        ctx.config.receiver.limits(),
        codec,
        args.expect.format(),
    )
    .with_context(|| {
        format!(
            "cannot restore stream {} to image {}",
            args.stream.display(),
            args.image.display()
        )
    })?;
    let mut out = Out::new();
    if args.json {
        output::json(&mut out, &Outcome::of(&args.stream, &r))?;
        return Ok(status(&r));
    }
    for info in &r.committed {
        writeln!(
            out,
            "checkpoint {} verified and committed: {} pages ({} full, {} delta, {} empty)",
            info.seq, info.data_pages, info.full, info.delta, info.empty
        )?;
    }
    finish(&args.stream, &r, &format!("{} holds", args.image.display()))
}

/// Lists a stream.
pub fn inspect(ctx: &Context, args: InspectArgs) -> anyhow::Result<ExitCode> {
    check_stage(ctx, &args.stream, &args.expect)?;
    let mut out = Out::new();
    let mut sink = std::io::sink();
    let listing: &mut dyn Write = if args.json { &mut sink } else { &mut out };
    let r = ckpt_lab::streams::inspect(
        &args.stream,
        ctx.config.receiver.limits(),
        ckpt_engine::Codec::best(),
        args.expect.format(),
        listing,
    )
    .with_context(|| format!("cannot inspect stream {}", args.stream.display()))?;
    if args.json {
        output::json(&mut out, &Outcome::of(&args.stream, &r))?;
        return Ok(status(&r));
    }
    finish(&args.stream, &r, "a receiver would hold")
}

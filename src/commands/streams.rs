//! `ckpt compress`, `ckpt restore` and `ckpt inspect`: stream files.

use super::{Context, Tuning};
use anyhow::Context as _;
use ckpt_engine::Kernel;
use ckpt_lab::replay::{Source, TraceSource};
use ckpt_lab::streams::{ImageSize, RestoreReport};
use ckpt_lab::synth::Scenario;
use ckpt_lab::trace::TraceLimits;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Guest size of the built-in synthetic run, in pages (128 MiB).
const SYNTH_GUEST_PAGES: u64 = 32 * 1024;
/// Its dirty-set sizes after the initial image: ordinary checkpoints, one
/// that overflows the staging ring, and an empty one.
const SYNTH_SEQUENCE: [usize; 12] = [
    800, 1500, 300, 2600, 9000, 1200, 0, 700, 2000, 450, 3000, 6000,
];

/// Arguments of `ckpt compress`.
#[derive(clap::Args)]
pub struct CompressArgs {
    /// Stream file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Trace to compress (default: a built-in synthetic guest).
    #[arg(long)]
    trace: Option<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
}

/// Arguments of `ckpt restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Stream file to read.
    stream: PathBuf,
    /// Raw guest image. An existing image keeps its size; a new one is
    /// created with --guest-pages pages, or else the stream's guest size if
    /// it is within [receiver] max_guest_pages. A stream for a larger guest
    /// is refused.
    #[arg(long)]
    image: PathBuf,
    /// Pages of the image (an existing image must have exactly these).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 28))]
    guest_pages: Option<u64>,
    /// Page kernel, overriding the config.
    #[arg(long, value_parser = super::parse_kernel)]
    kernel: Option<Kernel>,
}

/// Arguments of `ckpt inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// Stream file to read.
    stream: PathBuf,
}

/// Writes a stream file.
pub fn compress(ctx: &Context, args: CompressArgs) -> anyhow::Result<ExitCode> {
    let codec = ctx.codec(args.tuning.kernel)?;
    let opts = ctx.sender_options(&args.tuning, 1);
    let mut source: Box<dyn Source> = match &args.trace {
        Some(t) => Box::new(TraceSource::open_with_limits(
            t,
            TraceLimits::for_receiver(&ctx.config.receiver),
        )?),
        None => Box::new(Scenario::new(SYNTH_GUEST_PAGES, 0xDE70, &SYNTH_SEQUENCE)),
    };
    let s = ckpt_lab::streams::compress(source.as_mut(), &args.output, codec, &opts)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let later_in = (s.pages - s.uncompressed) * 4096;
    let later_out = s.output_bytes - s.uncompressed_output_bytes;
    println!(
        "{}: {} checkpoints, {} pages, {} bytes",
        args.output.display(),
        s.checkpoints,
        s.pages,
        s.output_bytes
    );
    println!(
        "after the initial image: {} bytes of pages -> {} bytes ({:.2}x fewer); initial image {} bytes",
        later_in,
        later_out,
        later_in as f64 / later_out.max(1) as f64,
        s.uncompressed_output_bytes
    );
    Ok(ExitCode::SUCCESS)
}

fn finish(r: &RestoreReport, holder: &str) -> ExitCode {
    match (&r.error, r.complete) {
        (None, true) => {
            println!("stream complete: {} checkpoints verified", r.checkpoints);
            ExitCode::SUCCESS
        }
        (Some(e), _) => {
            eprintln!("ckpt: {e}");
            match &r.last {
                Some(info) => eprintln!("{holder} checkpoint {}, the last complete one", info.seq),
                None => eprintln!("{holder} no checkpoint of this stream"),
            }
            ExitCode::FAILURE
        }
        (None, false) => ExitCode::FAILURE,
    }
}

/// Commits a stream file to an image.
pub fn restore(ctx: &Context, args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let codec = ctx.codec(args.kernel)?;
    let size = args
        .guest_pages
        .map_or(ImageSize::Configured, ImageSize::Pages);
    let mut out = std::io::stdout().lock();
    let r = ckpt_lab::streams::restore(
        &args.stream,
        &args.image,
        size,
        ctx.config.receiver.clone(),
        codec,
        &mut |info| {
            writeln!(
                out,
                "checkpoint {} verified and committed: {} pages ({} full, {} delta, {} empty)",
                info.seq, info.data_pages, info.full, info.delta, info.empty
            )
        },
    )?;
    Ok(finish(&r, &format!("{} holds", args.image.display())))
}

/// Lists a stream.
pub fn inspect(ctx: &Context, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let r = ckpt_lab::streams::inspect(
        &args.stream,
        ctx.config.receiver.clone(),
        ckpt_engine::Codec::best(),
        &mut std::io::stdout().lock(),
    )?;
    Ok(finish(&r, "a receiver would hold"))
}

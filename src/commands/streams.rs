//! `ckpt compress`, `ckpt restore` and `ckpt inspect`: stream files.

use super::{CacheArgs, Context, Tuning};
use anyhow::Context as _;
use ckpt_engine::Kernel;
use ckpt_lab::replay::{Source, TraceSource};
use ckpt_lab::streams::RestoreReport;
use ckpt_lab::synth::Scenario;
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
    #[command(flatten)]
    cache: CacheArgs,
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
    let mut opts = ctx.sender_options(&args.tuning, 1);
    ctx.apply_cache(&mut opts.compress, &args.cache)?;
    let mut source: Box<dyn Source> = match &args.trace {
        Some(t) => Box::new(TraceSource::open(t)?),
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
            println!(
                "stream complete: {} checkpoints verified",
                r.committed.len()
            );
            ExitCode::SUCCESS
        }
        (Some(e), _) => {
            eprintln!("ckpt: {e}");
            match r.committed.last() {
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
    let r = ckpt_lab::streams::restore(
        &args.stream,
        &args.image,
        ctx.config.receiver.clone(),
        codec,
    )?;
    for info in &r.committed {
        println!(
            "checkpoint {} verified and committed: {} pages ({} full, {} delta, {} empty)",
            info.seq, info.data_pages, info.full, info.delta, info.empty
        );
    }
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

//! `ckpt convert`: a stream file rewritten in another wire format.

use super::format::{parse_zstd_level, ZstdLevel};
use super::{Context, Usage};
use anyhow::Context as _;
use ckpt_lab::convert::Target;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ckpt convert`.
#[derive(clap::Args)]
pub struct Args {
    /// Stream file to read (either format).
    input: PathBuf,
    /// Stream file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Format to write: records, legacy, or xen (a plain Xen v3 stream of
    /// PAGE_DATA and CHECKPOINT records, which Xen's own tools read).
    #[arg(long, value_parser = ["records", "legacy", "xen"])]
    to: String,
    /// zstd stage of --to records: a level or "off" (default 1).
    #[arg(long, value_parser = parse_zstd_level, allow_hyphen_values = true)]
    zstd_level: Option<ZstdLevel>,
}

/// Converts a stream file.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let target = match (args.to.as_str(), args.zstd_level) {
        ("records", level) => Target::Records {
            zstd_level: match level {
                None => Some(ckpt_engine::DEFAULT_ZSTD_LEVEL),
                Some(l) => l.level(),
            },
        },
        (_, Some(_)) => {
            return Err(Usage("--zstd-level applies to --to records only".into()).into())
        }
        ("legacy", None) => Target::Legacy,
        _ => Target::Xen,
    };
    let input =
        File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let output = File::create(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let (out, r) = ckpt_lab::convert::convert(
        BufReader::with_capacity(1 << 20, input),
        BufWriter::with_capacity(1 << 20, output),
        target,
        ctx.config.receiver.limits(),
        ckpt_engine::Codec::best(),
    )
    .with_context(|| format!("converting {}", args.input.display()))?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|mut f| f.flush())
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{} ({} stream) -> {} ({}): {} checkpoints, {} bytes",
        args.input.display(),
        r.from,
        args.output.display(),
        args.to,
        r.checkpoints,
        r.output_bytes
    );
    if r.toolstack_dropped > 0 {
        println!(
            "{} toolstack chunks not carried (a plain Xen stream has no record for them)",
            r.toolstack_dropped
        );
    }
    Ok(ExitCode::SUCCESS)
}

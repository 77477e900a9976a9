//! `ckpt conformance`: the golden vectors, byte for byte.

use super::{Context, Tuning, Usage};
use anyhow::Context as _;
use ckpt_lab::conformance::{run_case, vector_files};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ckpt conformance`.
#[derive(clap::Args)]
pub struct Args {
    /// Folder holding *.vec / *.vec.zst files.
    dir: PathBuf,
    #[command(flatten)]
    tuning: Tuning,
}

/// Replays every vector file and prints PASS or FAIL for each.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let codec = ctx.codec(args.tuning.kernel)?;
    let threads = ctx.threads(args.tuning.threads);
    let files =
        vector_files(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?;
    if files.is_empty() {
        return Err(Usage(format!(
            "no *.vec or *.vec.zst files in {}",
            args.dir.display()
        ))
        .into());
    }
    let (mut passed, mut failed) = (0, 0);
    for f in &files {
        let r = run_case(f, codec, threads).with_context(|| format!("reading {}", f.display()))?;
        match &r.failure {
            None => {
                passed += 1;
                println!(
                    "PASS {}: {} checkpoints, {} pages, {} bytes identical",
                    r.name, r.checkpoints, r.pages, r.bytes
                );
            }
            Some(why) => {
                failed += 1;
                println!("FAIL {}: {why}", r.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

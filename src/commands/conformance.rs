//! `ckpt conformance`: the golden vectors, byte for byte.

use super::output::{self, Out};
use super::{Context, Tuning, Usage};
use anyhow::Context as _;
use ckpt_lab::conformance::{run_case, vector_files};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ckpt conformance`.
#[derive(clap::Args)]
pub struct Args {
    /// Folder holding *.vec / *.vec.zst files.
    dir: PathBuf,
    /// Print every case's outcome as one JSON document.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tuning: Tuning,
}

/// One vector file's outcome, as `--json` shows it.
#[derive(Serialize)]
struct Case {
    name: String,
    passed: bool,
    checkpoints: usize,
    pages: u64,
    bytes: u64,
    failure: Option<String>,
}

/// The `--json` document.
#[derive(Serialize)]
struct Document {
    kernel: String,
    threads: usize,
    passed: usize,
    failed: usize,
    cases: Vec<Case>,
}

/// Replays every vector file and prints PASS or FAIL for each.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let ctx = &args.tuning.apply(ctx)?;
    let codec = ctx.codec()?;
    let threads = ctx.threads();
    let files = vector_files(&args.dir)
        .with_context(|| format!("cannot list vector folder {}", args.dir.display()))?;
    if files.is_empty() {
        return Err(Usage(format!(
            "no *.vec or *.vec.zst files in {}",
            args.dir.display()
        ))
        .into());
    }
    let mut out = Out::new();
    let bar = ctx.progress(Some(files.len() as u64), "conformance");
    let mut cases = Vec::new();
    for f in &files {
        bar.set_message(f.display().to_string());
        let r = run_case(f, codec, threads)
            .with_context(|| format!("cannot replay vector file {}", f.display()))?;
        bar.inc(1);
        if !args.json {
            bar.suspend(|| match &r.failure {
                None => writeln!(
                    out,
                    "PASS {}: {} checkpoints, {} pages, {} bytes identical",
                    r.name, r.checkpoints, r.pages, r.bytes
                ),
                Some(why) => writeln!(out, "FAIL {}: {why}", r.name),
            })?;
        }
        cases.push(Case {
            passed: r.failure.is_none(),
            name: r.name,
            checkpoints: r.checkpoints,
            pages: r.pages,
            bytes: r.bytes,
            failure: r.failure,
        });
    }
    bar.finish_and_clear();
    let passed = cases.iter().filter(|c| c.passed).count();
    let failed = cases.len() - passed;
    if args.json {
        output::json(
            &mut out,
            &Document {
                kernel: codec.kernel().name().into(),
                threads,
                passed,
                failed,
                cases,
            },
        )?;
    } else {
        writeln!(out, "{passed} passed, {failed} failed")?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

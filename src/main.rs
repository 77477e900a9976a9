//! `ckpt`: compresses VM checkpoints for Remus-style replication.
//!
//! This file parses the command line and hands each subcommand to its
//! module under `commands/`, which calls the engine or the lab and prints.
//! Exit status: 0 success, 1 the job failed (a stream rejected, a
//! verification or a checked goal failed, a file or process unusable, a
//! backup that does not hold the last checkpoint), 2 bad usage, 3 `recv`
//! lost its primary (failover). `commands` states the rest of the
//! convention every subcommand follows.

mod commands;
mod config;

use clap::{Parser, Subcommand};
use commands::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Compresses VM checkpoints for high-availability replication"
)]
struct Cli {
    /// Configuration file (default: $CKPT_CONFIG, else the first of
    /// $XDG_CONFIG_HOME/ckpt/ckpt.toml (~/.config/ckpt/ckpt.toml) and
    /// /etc/ckpt/ckpt.toml that exists, else built-in defaults). Keys are
    /// also set by CKPT_<SECTION>_<KEY> variables, over the file.
    #[arg(long, global = true, env = "CKPT_CONFIG")]
    config: Option<PathBuf>,
    /// No progress indicators on standard error (they are shown only on a
    /// terminal anyway).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replicate a bundled trace primary to backup over loopback TCP, verified.
    Demo(commands::demo::Args),
    /// Write a trace (or the built-in synthetic guest) as a stream file.
    Compress(commands::streams::CompressArgs),
    /// Commit a stream file to a guest image file, verifying each checkpoint.
    Restore(commands::streams::RestoreArgs),
    /// List a stream's chunks with offsets and sizes, verifying every checkpoint.
    Inspect(commands::streams::InspectArgs),
    /// Rewrite a stream file in another wire format (records, legacy, xen).
    Convert(commands::convert::Args),
    /// Record a live process's dirty pages into a trace, epoch by epoch.
    Record(commands::record::Args),
    /// Replicate a trace or a live process to a backup (`ckpt recv`).
    Send(commands::send::Args),
    /// Be the backup: commit a primary's checkpoints to an image file.
    #[cfg(unix)]
    Recv(commands::recv::Args),
    /// Replay traces through the sender and the receiver, verified and measured.
    Bench(commands::bench::Args),
    /// Measure the send pipeline: thread scaling, staging cost, peak memory.
    BenchPipeline(commands::pipeline::Args),
    /// One part of the memory measurement, run as a child process.
    #[command(hide = true)]
    RssPart(commands::pipeline::PartArgs),
    /// Replay golden vectors and check every output byte for byte.
    Conformance(commands::conformance::Args),
    /// List the page kernels; with --bench, measure them against the memory floor.
    Kernels(commands::kernels::Args),
    /// Measure kernels, threads, pinning, ring and cache settings on this
    /// host and write the best as a configuration file.
    Tune(commands::tune::Args),
    /// The settings in force and where each came from.
    #[command(subcommand)]
    Config(commands::settings::Command),
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Context::load(cli.config.as_deref(), cli.quiet)?;
    match cli.command {
        Command::Demo(a) => commands::demo::run(&ctx, a),
        Command::Compress(a) => commands::streams::compress(&ctx, a),
        Command::Restore(a) => commands::streams::restore(&ctx, a),
        Command::Inspect(a) => commands::streams::inspect(&ctx, a),
        Command::Convert(a) => commands::convert::run(&ctx, a),
        Command::Record(a) => commands::record::run(&ctx, a),
        Command::Send(a) => commands::send::run(&ctx, a),
        #[cfg(unix)]
        Command::Recv(a) => commands::recv::run(&ctx, a),
        Command::Bench(a) => commands::bench::run(&ctx, a),
        Command::BenchPipeline(a) => commands::pipeline::run(&ctx, a),
        Command::RssPart(a) => commands::pipeline::part(&ctx, a),
        Command::Conformance(a) => commands::conformance::run(&ctx, a),
        Command::Kernels(a) => commands::kernels::run(&ctx, a),
        Command::Tune(a) => commands::tune::run(&ctx, a),
        Command::Config(c) => commands::settings::run(&ctx, c),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are "errors" that print to stdout and exit
        // 0; clap's own exit statuses are the convention's (2 for usage).
        // A closed pipe must not panic here either.
        Err(e) => {
            return match e.print() {
                Err(io) if io.kind() != std::io::ErrorKind::BrokenPipe => {
                    commands::report_error(&anyhow::Error::new(io).context("cannot write help"))
                }
                _ => ExitCode::from(e.exit_code().clamp(0, 255) as u8),
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => commands::report_error(&e),
    }
}

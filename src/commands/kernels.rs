//! `ckpt kernels`: the page kernels, and their speed against the floor.

use super::{Context, Usage};
use ckpt_engine::{Codec, Kernel};
use ckpt_lab::kernels;
use std::process::ExitCode;

/// Arguments of `ckpt kernels`.
#[derive(clap::Args)]
pub struct Args {
    /// Measure encode/decode throughput of every supported kernel.
    #[arg(long)]
    bench: bool,
    /// Print the measurement as JSON (with --bench).
    #[arg(long, requires = "bench")]
    json: bool,
    /// Working set in MiB (both pages of every pair).
    #[arg(long, default_value_t = 64, value_parser = crate::config::parse_working_set_mib)]
    mib: u64,
    /// Repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u64).range(1..=1000))]
    reps: u64,
    /// Densities to measure, in percent of words changed (0..=100).
    #[arg(long, value_delimiter = ',', default_values_t = kernels::DENSITIES,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    density: Vec<u32>,
    /// Measure only this kernel (default: every supported kernel).
    #[arg(long, value_parser = super::parse_kernel)]
    kernel: Option<Kernel>,
    /// Change words one by one instead of in clustered runs.
    #[arg(long)]
    scattered: bool,
}

/// Lists or measures the kernels.
pub fn run(_ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    // A kernel this CPU lacks is an error here as everywhere, listing or not.
    let forced = match args.kernel {
        Some(k) => Some(Codec::new(k).map_err(|e| Usage(e.to_string()))?),
        None => None,
    };
    if !args.bench {
        let best = Kernel::best();
        for k in Kernel::ALL {
            let status = if k.is_available() {
                "supported"
            } else {
                "not supported"
            };
            let pick = if k == best { "  <- dispatch" } else { "" };
            println!("{:<8} {status}{pick}", k.name());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let codecs = match forced {
        Some(c) => vec![c],
        None => kernels::supported(),
    };
    let result = kernels::bench(
        args.mib as usize,
        args.reps as usize,
        &args.density,
        &codecs,
        !args.scattered,
        |s| eprintln!("measuring {s}"),
    );
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "GB/s of page bytes, median of {} runs, {} MiB working set; (x) = ratio to the floor",
            result.repetitions, result.working_set_mib
        );
        print!("{}", kernels::table(&result));
        println!("dispatch: {}", result.dispatch);
    }
    Ok(ExitCode::SUCCESS)
}

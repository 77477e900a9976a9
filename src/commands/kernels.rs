//! `ckpt kernels`: the page kernels, and their speed against the floor.

use super::output::{self, Out};
use super::{Context, Usage};
use ckpt_engine::{Codec, Kernel};
use ckpt_lab::figures::Goal;
use ckpt_lab::kernels::{self, KernelBench};
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;

/// Arguments of `ckpt kernels`.
#[derive(clap::Args)]
pub struct Args {
    /// Measure encode/decode throughput of every supported kernel.
    #[arg(long)]
    bench: bool,
    /// Print one JSON document (the list, or with --bench the measurement
    /// and its goals).
    #[arg(long)]
    json: bool,
    /// With --bench: exit with status 1 when a goal is not met.
    #[arg(long, requires = "bench")]
    check: bool,
    /// Working set in MiB (both pages of every pair).
    #[arg(long, default_value_t = 64, requires = "bench",
          value_parser = crate::config::parse_working_set_mib)]
    mib: u64,
    /// Repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 9, requires = "bench",
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    reps: u64,
    /// Densities to measure, in percent of words changed (0..=100).
    #[arg(long, value_delimiter = ',', default_values_t = kernels::DENSITIES, requires = "bench",
          value_parser = clap::value_parser!(u32).range(0..=100))]
    density: Vec<u32>,
    /// Measure only this kernel (default: every supported kernel).
    #[arg(long, value_parser = super::kernel_parser(), requires = "bench")]
    kernel: Option<Kernel>,
    /// Change words one by one instead of in clustered runs.
    #[arg(long, requires = "bench")]
    scattered: bool,
}

/// One kernel in the list.
#[derive(Serialize)]
struct Listed {
    name: &'static str,
    supported: bool,
    dispatch: bool,
}

/// The `--bench --json` document.
#[derive(Serialize)]
struct Measured<'a> {
    #[serde(flatten)]
    bench: &'a KernelBench,
    goals: &'a [Goal],
}

/// Lists or measures the kernels.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let mut out = Out::new();
    // A kernel this CPU lacks is an error here as everywhere, listing or not.
    let forced = match args.kernel {
        Some(k) => Some(Codec::new(k).map_err(|e| Usage(e.to_string()))?),
        None => None,
    };
    if !args.bench {
        let best = Kernel::best();
        let list: Vec<Listed> = Kernel::ALL
            .iter()
            .map(|&k| Listed {
                name: k.name(),
                supported: k.is_available(),
                dispatch: k == best,
            })
            .collect();
        if args.json {
            output::json(&mut out, &list)?;
            return Ok(ExitCode::SUCCESS);
        }
        for k in &list {
            let status = if k.supported {
                "supported"
            } else {
                "not supported"
            };
            let pick = if k.dispatch { "  <- dispatch" } else { "" };
            writeln!(out, "{:<8} {status}{pick}", k.name)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let codecs = match forced {
        Some(c) => vec![c],
        None => kernels::supported(),
    };
    let bar = ctx.progress(Some(args.density.len() as u64), "kernels");
    let mut started = false;
    let result = kernels::bench(
        args.mib as usize,
        args.reps as usize,
        &args.density,
        &codecs,
        !args.scattered,
        |s| {
            if std::mem::replace(&mut started, true) {
                bar.inc(1);
            }
            bar.set_message(format!("measuring {s}"));
        },
    );
    bar.finish_and_clear();
    let goals = result.goals();
    if args.json {
        output::json(
            &mut out,
            &Measured {
                bench: &result,
                goals: &goals,
            },
        )?;
    } else {
        writeln!(
            out,
            "GB/s of page bytes, median of {} runs, {} MiB working set; (x) = throughput against the floor",
            result.repetitions, result.working_set_mib
        )?;
        writeln!(
            out,
            "(a pass under {} ms shows its time in µs instead of a rate)",
            ckpt_lab::figures::MIN_RATE_TIME.as_millis()
        )?;
        write!(out, "{}", kernels::table(&result))?;
        writeln!(out, "dispatch: {}", result.dispatch)?;
        if !goals.is_empty() {
            writeln!(out, "goals:")?;
            for g in &goals {
                writeln!(out, "{}", output::goal_line(g))?;
            }
        }
    }
    Ok(if args.check && goals.iter().any(|g| !g.met) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

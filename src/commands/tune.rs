//! `ckpt tune`: measures the engine's settings on this host (kernels,
//! thread counts, pinning, ring and cache sizes, cache policy) on traces,
//! and writes the best as a configuration file, each value with the
//! figures behind it. One setting is varied at a time, starting from the
//! configuration in force; candidates take turns within each repetition
//! (`ckpt_lab::tune::compare`) so that all see the same machine. A
//! candidate replaces the one in force only when it is better by more than
//! the run-to-run spread, and never slower beyond it on any trace.

use super::{sender_options, Context, Usage};
use crate::config::{CacheSize, Config, EngineConfig};
use anyhow::Context as _;
use ckpt_engine::{CachePolicy, Codec, Kernel};
use ckpt_lab::tune::{compare, trial, Candidate, Score, Workload};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Arguments of `ckpt tune`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace to measure on; repeat for several (default: the bundled ones).
    #[arg(long)]
    trace: Vec<PathBuf>,
    /// Configuration file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Runs of each setting on each trace (medians are compared); lowered
    /// to fit --budget-s, never below 3.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(3..=101))]
    reps: u64,
    /// Pages of each trace held and replayed (its initial image and the
    /// checkpoints after it, about this many pages).
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u64).range(64..=1 << 22))]
    max_pages: u64,
    /// Time to aim for, in seconds: the repetitions, then the pages per
    /// trace, are lowered to fit.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    budget_s: u64,
}

/// One setting of the engine under test.
struct Setting {
    /// The value as written in the file ("auto", 2, true, "lirs").
    value: String,
    /// What to call it in the comment ("auto (avx2)").
    label: String,
    engine: EngineConfig,
}

/// How a stage chooses.
#[derive(Clone, Copy, PartialEq)]
enum Criterion {
    /// Compress throughput.
    Speed,
    /// Stream bytes, at a throughput no worse beyond noise.
    Bytes,
}

/// One key varied over its candidates.
struct Stage {
    criterion: Criterion,
    candidates: Vec<Setting>,
}

fn codec(kernel: &str) -> anyhow::Result<Codec> {
    if kernel.eq_ignore_ascii_case("auto") {
        return Ok(Codec::best());
    }
    let k: Kernel = kernel.parse().map_err(|e| Usage(format!("{e}")))?;
    Ok(Codec::new(k).map_err(|e| Usage(e.to_string()))?)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The candidates of one key, the one in force first.
fn stage(key: &'static str, base: &EngineConfig) -> Stage {
    let with = |f: &dyn Fn(&mut EngineConfig)| {
        let mut e = base.clone();
        f(&mut e);
        e
    };
    let (criterion, candidates): (Criterion, Vec<Setting>) = match key {
        "kernel" => {
            let best = Codec::best().kernel();
            let mut v = vec![Setting {
                value: format!("{:?}", base.kernel),
                label: if base.kernel.eq_ignore_ascii_case("auto") {
                    format!("auto ({best})")
                } else {
                    base.kernel.clone()
                },
                engine: base.clone(),
            }];
            for k in Kernel::ALL.iter().rev().filter(|k| k.is_available()) {
                if base.kernel.eq_ignore_ascii_case(k.name())
                    || (base.kernel.eq_ignore_ascii_case("auto") && *k == best)
                {
                    continue;
                }
                v.push(Setting {
                    value: format!("{:?}", k.name()),
                    label: k.name().into(),
                    engine: with(&|e| e.kernel = k.name().into()),
                });
            }
            (Criterion::Speed, v)
        }
        "threads" => {
            let current = crate::config::resolve_threads(base.threads);
            let mut v = vec![Setting {
                value: base.threads.to_string(),
                label: if base.threads == 0 {
                    format!("0 (one per core: {current})")
                } else {
                    current.to_string()
                },
                engine: base.clone(),
            }];
            for n in (1..=cores()).filter(|&n| n != current) {
                v.push(Setting {
                    value: n.to_string(),
                    label: n.to_string(),
                    engine: with(&|e| e.threads = n),
                });
            }
            (Criterion::Speed, v)
        }
        "pin_threads" => (
            Criterion::Speed,
            [base.pin_threads, !base.pin_threads]
                .into_iter()
                .map(|p| Setting {
                    value: p.to_string(),
                    label: p.to_string(),
                    engine: with(&|e| e.pin_threads = p),
                })
                .collect(),
        ),
        "ring_pages" => (
            Criterion::Speed,
            std::iter::once(base.ring_pages)
                .chain(
                    [2048, 4096, 8196]
                        .into_iter()
                        .filter(|&n| n != base.ring_pages),
                )
                .map(|n| Setting {
                    value: n.to_string(),
                    label: n.to_string(),
                    engine: with(&|e| e.ring_pages = n),
                })
                .collect(),
        ),
        "cache_pages" => {
            let sizes = [
                CacheSize::Pages(4096),
                CacheSize::Pages(8192),
                CacheSize::Pages(32768),
                CacheSize::Auto,
            ];
            (
                Criterion::Bytes,
                std::iter::once(base.cache_pages)
                    .chain(sizes.into_iter().filter(|&s| s != base.cache_pages))
                    .map(|s| Setting {
                        value: match s {
                            CacheSize::Auto => "\"auto\"".into(),
                            CacheSize::Pages(n) => n.to_string(),
                        },
                        label: s.to_string(),
                        engine: with(&|e| e.cache_pages = s),
                    })
                    .collect(),
            )
        }
        "cache_policy" => (
            Criterion::Bytes,
            std::iter::once(base.cache_policy)
                .chain(
                    CachePolicy::ALL
                        .into_iter()
                        .filter(|&p| p != base.cache_policy),
                )
                .map(|p| Setting {
                    value: format!("{:?}", p.name()),
                    label: p.name().into(),
                    engine: with(&|e| e.cache_policy = p),
                })
                .collect(),
        ),
        _ => unreachable!("no stage for {key}"),
    };
    Stage {
        criterion,
        candidates,
    }
}

/// The keys measured, in order: each stage starts from the choices before.
const KEYS: [&str; 6] = [
    "kernel",
    "threads",
    "pin_threads",
    "ring_pages",
    "cache_pages",
    "cache_policy",
];

/// One candidate's figures over every workload.
struct Figures {
    /// Geometric mean of the per-trace median throughputs, GB/s.
    gbps: f64,
    /// Per trace: median throughput and spread.
    per_trace: Vec<(f64, f64)>,
    /// Per trace: the throughput of each run, in the order run.
    runs: Vec<Vec<f64>>,
    /// Stream bytes over every trace.
    bytes: u64,
}

fn figures(scores: &[Score], workloads: usize, k: usize) -> Figures {
    let mine = &scores[k * workloads..(k + 1) * workloads];
    let per_trace: Vec<(f64, f64)> = mine.iter().map(|s| (s.gbps, s.spread)).collect();
    Figures {
        gbps: geomean(per_trace.iter().map(|(g, _)| *g)),
        per_trace,
        runs: mine.iter().map(|s| s.runs_gbps.clone()).collect(),
        bytes: mine.iter().map(|s| s.output_bytes).sum(),
    }
}

fn geomean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x.max(1e-12).ln(), n + 1));
    (sum / n.max(1) as f64).exp()
}

/// How `c` compares with `inc`, run against the run taken beside it (so
/// that a machine that slows down for a while slows both): per trace, the
/// median ratio of throughputs and half the range of the ratios.
fn paired(c: &Figures, inc: &Figures) -> Vec<(f64, f64)> {
    c.runs
        .iter()
        .zip(&inc.runs)
        .map(|(a, b)| {
            let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y.max(1e-12)).collect();
            r.sort_by(f64::total_cmp);
            let median = r.get(r.len() / 2).copied().unwrap_or(1.0);
            let half_range = (r.last().unwrap_or(&1.0) - r.first().unwrap_or(&1.0)) / 2.0;
            (median, half_range)
        })
        .collect()
}

/// Whether `c` is slower than `inc` beyond the spread on no trace.
fn not_slower(c: &Figures, inc: &Figures) -> bool {
    paired(c, inc).iter().all(|&(r, noise)| r >= 1.0 - noise)
}

/// Whether `c` is faster than `inc` beyond the spread over the traces and
/// slower on none; its gain if so.
fn faster(c: &Figures, inc: &Figures) -> Option<f64> {
    let p = paired(c, inc);
    let gain = geomean(p.iter().map(|(r, _)| *r));
    let noise = p.iter().map(|(_, n)| n).sum::<f64>() / p.len().max(1) as f64;
    (gain > 1.0 + noise && not_slower(c, inc)).then_some(gain)
}

/// The candidate chosen (index), by the stage's criterion.
fn choose(criterion: Criterion, f: &[Figures]) -> usize {
    let inc = &f[0];
    let mut best = (0, 1.0);
    for (k, c) in f.iter().enumerate().skip(1) {
        match criterion {
            Criterion::Speed => {
                if let Some(gain) = faster(c, inc).filter(|&g| g > best.1) {
                    best = (k, gain);
                }
            }
            // Bytes do not vary from run to run: 1% fewer is a real gain.
            Criterion::Bytes => {
                if (c.bytes as f64) < inc.bytes as f64 * 0.99
                    && c.bytes < f[best.0].bytes
                    && not_slower(c, inc)
                {
                    best = (k, 1.0);
                }
            }
        }
    }
    best.0
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// The comment beside a chosen value.
fn comment(st: &Stage, f: &[Figures], chosen: usize) -> String {
    let mut order: Vec<usize> = (0..f.len()).collect();
    order.sort_by_key(|&k| k != chosen);
    let parts: Vec<String> = order
        .iter()
        .map(|&k| {
            let c = &f[k];
            let spread =
                c.per_trace.iter().map(|(_, s)| s).sum::<f64>() / c.per_trace.len().max(1) as f64;
            match st.criterion {
                Criterion::Speed => format!(
                    "{}: {:.2} GB/s ±{:.0}%",
                    st.candidates[k].label,
                    c.gbps,
                    100.0 * spread
                ),
                Criterion::Bytes => format!(
                    "{}: {:.1} MiB, {:.2} GB/s",
                    st.candidates[k].label,
                    mib(c.bytes),
                    c.gbps
                ),
            }
        })
        .collect();
    let why = match (chosen, st.criterion) {
        (0, Criterion::Speed) => "kept: no other faster beyond the spread",
        (0, Criterion::Bytes) => "kept: no other 1% smaller and no slower",
        _ => "chosen",
    };
    format!("{} ({why})", parts.join("; "))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.into())
}

fn candidate(config: &Config, e: &EngineConfig, label: &str) -> anyhow::Result<Candidate> {
    let mut c = config.clone();
    c.engine = e.clone();
    Ok(Candidate {
        label: label.into(),
        codec: codec(&e.kernel)?,
        opts: sender_options(&c, 1),
    })
}

fn load(traces: &[PathBuf], max_pages: usize) -> anyhow::Result<Vec<Workload>> {
    traces
        .iter()
        .map(|t| {
            let w = Workload::load(t, max_pages)
                .with_context(|| format!("cannot load trace {}", t.display()))?;
            if w.later_pages() == 0 {
                return Err(Usage(format!(
                    "trace {} has no checkpoint after its initial image to measure",
                    t.display()
                ))
                .into());
            }
            Ok(w)
        })
        .collect()
}

/// Measures and writes the configuration.
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let traces = if args.trace.is_empty() {
        super::bundled_traces()?
    } else {
        args.trace.clone()
    };
    let base = ctx.config.clone();
    let stages_at_start: usize = KEYS
        .iter()
        .map(|k| stage(k, &base.engine).candidates.len())
        .sum();
    let mut max_pages = args.max_pages as usize;
    let mut workloads = load(&traces, max_pages)?;
    // Calibration: one run of every trace with the settings in force.
    let first = candidate(&base, &base.engine, "calibration")?;
    let t = Instant::now();
    for w in &workloads {
        trial(w, first.codec, &first.opts)?;
    }
    let per_round = t.elapsed();
    let budget = Duration::from_secs(args.budget_s);
    let estimate =
        |reps: u64, scale: f64| per_round.mul_f64(scale * (stages_at_start as u64 * reps) as f64);
    let mut reps = args.reps;
    while reps > 3 && estimate(reps, 1.0) > budget {
        reps -= 1;
    }
    if estimate(reps, 1.0) > budget {
        let scale = budget.as_secs_f64() / estimate(reps, 1.0).as_secs_f64();
        max_pages = ((max_pages as f64 * scale) as usize).max(64);
        workloads = load(&traces, max_pages)?;
    }
    let pages: u64 = workloads.iter().map(|w| w.later_pages()).sum();
    let total = estimate(reps, max_pages as f64 / args.max_pages as f64);
    let names: Vec<&str> = workloads.iter().map(|w| w.name.as_str()).collect();
    eprintln!(
        "ckpt tune: {} settings x {} trace(s) ({}) x {} runs, {} pages per round: about {:.0} s (one round took {:.2} s)",
        stages_at_start,
        workloads.len(),
        names.join(", "),
        reps,
        pages,
        total.as_secs_f64().max(1.0),
        per_round.as_secs_f64()
    );
    let bar = ctx.progress(
        Some((stages_at_start * workloads.len()) as u64 * reps),
        "tune",
    );
    let started = Instant::now();
    let mut engine = base.engine.clone();
    let mut lines: Vec<(String, String, String)> = Vec::new();
    for key in KEYS {
        let st = stage(key, &engine);
        bar.set_message(key);
        let cands = st
            .candidates
            .iter()
            .map(|s| candidate(&base, &s.engine, &s.label))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let scores = compare(&workloads, &cands, reps as usize, || bar.inc(1))?;
        let figs: Vec<Figures> = (0..cands.len())
            .map(|k| figures(&scores, workloads.len(), k))
            .collect();
        let chosen = choose(st.criterion, &figs);
        lines.push((
            key.to_string(),
            st.candidates[chosen].value.clone(),
            comment(&st, &figs, chosen),
        ));
        engine = st.candidates[chosen].engine.clone();
    }
    bar.finish_and_clear();
    let mut text = String::new();
    writeln!(
        text,
        "# ckpt configuration measured by `ckpt tune` on this host: {}, {} core(s).",
        cpu_model(),
        cores()
    )?;
    writeln!(
        text,
        "# Traces: {} (about {} pages each); median of {} runs per setting, settings in turns.",
        names.join(", "),
        max_pages,
        reps
    )?;
    writeln!(
        text,
        "# GB/s: page bytes over compress time of the checkpoints after the initial image,"
    )?;
    writeln!(
        text,
        "# geometric mean over the traces, ± the run-to-run spread. A setting replaces the"
    )?;
    writeln!(
        text,
        "# one in force only when faster beyond the spread of its runs against the runs"
    )?;
    writeln!(
        text,
        "# taken beside them, and slower on no trace; cache settings by stream bytes (1%\n# fewer at least, no slower). Keys not listed keep their defaults."
    )?;
    writeln!(text, "\n[engine]")?;
    for (key, value, why) in &lines {
        writeln!(text, "{key} = {value}  # {why}")?;
    }
    // What is written must be what `--config` accepts.
    Config::parse(&text).map_err(|e| anyhow::anyhow!("the tuned configuration is invalid: {e}"))?;
    std::fs::write(&args.output, &text)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let mut out = super::output::Out::new();
    write!(out, "{text}")?;
    eprintln!(
        "ckpt tune: wrote {} in {:.0} s",
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

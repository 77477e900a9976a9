//! Measuring settings against each other on this host, for `ckpt tune`:
//! the first checkpoints of each trace held in memory, sent through a
//! [`Sender`] into a sink once per candidate setting, candidates taking turns
//! so that all see the same machine, and medians compared.

use crate::replay::{send_checkpoint, Checkpoint, Source, TraceSource};
use crate::LabError;
use ckpt_engine::{Codec, Sender, SenderOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// The first checkpoints of one trace, held in memory.
pub struct Workload {
    /// The trace's file name without its extension.
    pub name: String,
    /// Pages of the guest.
    pub guest_pages: u64,
    /// The initial image and the checkpoints after it.
    pub checkpoints: Vec<Checkpoint>,
}

impl Workload {
    /// Loads the initial image and then checkpoints of `path` until about
    /// `max_pages` pages are held.
    pub fn load(path: &Path, max_pages: usize) -> Result<Workload, LabError> {
        let mut source = TraceSource::open(path)?;
        let mut checkpoints = Vec::new();
        let mut pages = 0;
        while let Some(cp) = source.next_checkpoint()? {
            if pages + cp.pages.len() > max_pages && checkpoints.len() > 1 {
                break;
            }
            pages += cp.pages.len();
            checkpoints.push(Checkpoint {
                previous: None,
                ..cp
            });
        }
        Ok(Workload {
            name: path
                .file_stem()
                .map_or_else(|| "?".into(), |s| s.to_string_lossy().into_owned()),
            guest_pages: source.guest_pages(),
            checkpoints,
        })
    }

    /// Pages in the checkpoints after the initial image.
    pub fn later_pages(&self) -> u64 {
        self.checkpoints
            .iter()
            .skip(1)
            .map(|c| c.pages.len() as u64)
            .sum()
    }
}

/// What one run of a workload under one setting measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Trial {
    /// Time the compress stage spent on the checkpoints after the initial
    /// image.
    pub compress: Duration,
    /// Slowest checkpoint, from its start to its trailer written.
    pub checkpoint_max: Duration,
    /// Stream bytes of the checkpoints after the initial image.
    pub output_bytes: u64,
}

/// Sends `w` through a sender set up by `opts`, into a sink, waiting for
/// the pipeline after each checkpoint so that the replay itself never
/// competes with the compress stage.
pub fn trial(w: &Workload, codec: Codec, opts: &SenderOptions) -> Result<Trial, LabError> {
    let opts = SenderOptions {
        guest_pages: w.guest_pages,
        ..opts.clone()
    };
    let mut sender = Sender::new(std::io::sink(), codec, &opts)?;
    let mut initial = Duration::ZERO;
    for (k, cp) in w.checkpoints.iter().enumerate() {
        send_checkpoint(&mut sender, cp)?;
        sender.sync()?;
        if k == 0 {
            initial = sender.stats().compress_time;
        }
    }
    let (_, stats, lat) = sender.finish()?;
    Ok(Trial {
        compress: stats.compress_time.saturating_sub(initial),
        checkpoint_max: lat.checkpoint.max(),
        output_bytes: stats.output_bytes - stats.uncompressed_output_bytes,
    })
}

/// A setting to measure.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// What to call it in reports.
    pub label: String,
    /// The kernel.
    pub codec: Codec,
    /// The sender's options (the guest size is the workload's).
    pub opts: SenderOptions,
}

/// The medians of one candidate on one workload.
#[derive(Clone, Debug)]
pub struct Score {
    /// The candidate's label.
    pub label: String,
    /// The workload's name.
    pub workload: String,
    /// Median compress throughput, GB/s of page bytes.
    pub gbps: f64,
    /// Run-to-run spread of the throughput: half the range between the
    /// fastest and the slowest run, over the median.
    pub spread: f64,
    /// Throughput of every run, GB/s, in the order run (repetition by
    /// repetition, so that two candidates' runs of one index were taken
    /// side by side).
    pub runs_gbps: Vec<f64>,
    /// Median of the slowest checkpoint per run.
    pub checkpoint_max: Duration,
    /// Stream bytes (the same in every run).
    pub output_bytes: u64,
    /// Runs behind the medians.
    pub runs: usize,
}

/// Runs every candidate `reps` times on every workload, candidates taking
/// turns within each repetition, and returns the medians, candidate by
/// candidate in the order given, workloads in order within each. `step`
/// is called after every trial.
pub fn compare(
    workloads: &[Workload],
    candidates: &[Candidate],
    reps: usize,
    mut step: impl FnMut(),
) -> Result<Vec<Score>, LabError> {
    let mut runs = vec![vec![Vec::<Trial>::new(); workloads.len()]; candidates.len()];
    for _ in 0..reps.max(1) {
        for (wi, w) in workloads.iter().enumerate() {
            for (ci, c) in candidates.iter().enumerate() {
                runs[ci][wi].push(trial(w, c.codec, &c.opts)?);
                step();
            }
        }
    }
    let mut scores = Vec::new();
    for (ci, c) in candidates.iter().enumerate() {
        for (wi, w) in workloads.iter().enumerate() {
            let trials = &runs[ci][wi];
            let bytes = (w.later_pages() * ckpt_engine::PAGE_SIZE as u64) as f64;
            let mut gbps: Vec<f64> = trials
                .iter()
                .map(|t| bytes / t.compress.as_secs_f64().max(1e-9) / 1e9)
                .collect();
            let runs_gbps = gbps.clone();
            let mut worst: Vec<Duration> = trials.iter().map(|t| t.checkpoint_max).collect();
            gbps.sort_by(f64::total_cmp);
            worst.sort();
            scores.push(Score {
                label: c.label.clone(),
                workload: w.name.clone(),
                gbps: gbps[gbps.len() / 2],
                runs_gbps,
                spread: (gbps[gbps.len() - 1] - gbps[0]) / 2.0 / gbps[gbps.len() / 2].max(1e-12),
                checkpoint_max: worst[worst.len() / 2],
                output_bytes: trials[0].output_bytes,
                runs: trials.len(),
            });
        }
    }
    Ok(scores)
}

/// How long [`compare`] will take, from one timed trial of each workload
/// with the first candidate.
pub fn estimate(
    workloads: &[Workload],
    candidates: &[Candidate],
    reps: usize,
) -> Result<Duration, LabError> {
    let Some(first) = candidates.first() else {
        return Ok(Duration::ZERO);
    };
    let t = Instant::now();
    for w in workloads {
        trial(w, first.codec, &first.opts)?;
    }
    Ok(t.elapsed() * (candidates.len() * reps.max(1)) as u32)
}

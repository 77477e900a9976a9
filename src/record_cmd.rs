//! `ckpt record`: checkpoints a live process into a trace file.

use crate::{Error, Result};
use ckpt_engine::record::{EpochStats, Recorder};
use ckpt_engine::trace::TraceWriter;
use ckpt_simd::Codec;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// What to record and for how long.
pub struct RecordArgs {
    /// Trace file to write.
    pub output: PathBuf,
    /// Target run time between pauses.
    pub epoch: Duration,
    /// Stop after this many epochs.
    pub epochs: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Include the target's descendants (stopped together).
    pub children: bool,
    /// Attach to this process instead of starting one.
    pub pid: Option<i32>,
    /// Command to start (when no pid).
    pub command: Vec<String>,
    /// Workload name stored in the trace.
    pub name: String,
    /// Show a progress bar.
    pub progress: bool,
}

/// What a recording measured.
pub struct RecordReport {
    /// Per-epoch figures, the first (initial image) included.
    pub epochs: Vec<EpochStats>,
}

impl RecordReport {
    /// Pause percentiles in ms over the epochs after the first: (p50, p99).
    pub fn pause_ms(&self) -> (f64, f64) {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        for e in self.epochs.iter().skip(1) {
            let _ = h.record(e.pause.as_micros() as u64);
        }
        (
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
        )
    }

    /// Pause per MiB scanned, in ms, over the epochs after the first.
    pub fn ms_per_mib(&self) -> f64 {
        let (mut t, mut b) = (0.0, 0.0);
        for e in self.epochs.iter().skip(1) {
            t += e.pause.as_secs_f64() * 1e3;
            b += e.scanned_bytes as f64 / (1 << 20) as f64;
        }
        if b > 0.0 {
            t / b
        } else {
            0.0
        }
    }
}

struct Target {
    pid: i32,
    child: Option<Child>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // The whole tree: a compiler driver's own children would
            // otherwise run on after it.
            for p in ckpt_engine::record::process_tree(self.pid, true) {
                let p = nix::unistd::Pid::from_raw(p);
                let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGCONT);
                let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

/// Records until the epochs or duration are reached or the target exits.
pub fn record(args: &RecordArgs, codec: Codec) -> Result<RecordReport> {
    let target = match args.pid {
        Some(pid) => Target { pid, child: None },
        None => {
            let (cmd, rest) = args
                .command
                .split_first()
                .ok_or_else(|| Error::Other("give a command after -- or --pid".into()))?;
            let child = Command::new(cmd).args(rest).spawn()?;
            Target {
                pid: child.id() as i32,
                child: Some(child),
            }
        }
    };
    let meta = serde_json::json!({
        "workload": args.name,
        "command": if args.command.is_empty() { format!("pid {}", target.pid) } else { args.command.join(" ") },
        "epoch_ms": args.epoch.as_secs_f64() * 1e3,
        "children": args.children,
        "recorded_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "compare_kernel": codec.kernel().name(),
    });
    let writer = TraceWriter::create(&args.output, &meta.to_string(), codec)
        .map_err(|e| Error::Other(e.to_string()))?;
    let mut recorder = Recorder::new(writer, codec, 2);
    let bar = if args.progress {
        let b = match args.epochs {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new(args.duration.map_or(0, |d| d.as_secs())),
        };
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut report = RecordReport { epochs: Vec::new() };
    loop {
        if args.epochs.is_some_and(|n| report.epochs.len() as u64 >= n)
            || args.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        std::thread::sleep(args.epoch);
        match recorder
            .epoch(target.pid, args.children, args.epoch)
            .map_err(|e| Error::Other(e.to_string()))?
        {
            Some(stats) => {
                bar.set_message(format!(
                    "pause {:.1} ms, {} dirty pages, {:.0} MiB scanned",
                    stats.pause.as_secs_f64() * 1e3,
                    stats.dirty_pages,
                    stats.scanned_bytes as f64 / (1 << 20) as f64
                ));
                report.epochs.push(stats);
                match args.epochs {
                    Some(_) => bar.inc(1),
                    None => bar.set_position(started.elapsed().as_secs()),
                }
            }
            None => break, // the target exited
        }
    }
    bar.finish_and_clear();
    drop(target);
    recorder.finish().map_err(|e| Error::Other(e.to_string()))?;
    Ok(report)
}

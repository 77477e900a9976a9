//! A whole recording (`ckpt record`): starts or attaches to the target,
//! checkpoints it epoch by epoch into a trace file until a stop rule holds,
//! and ends the target it started.

use crate::record::{EpochStats, Recorder};
use crate::trace::TraceWriter;
use crate::LabError;
use ckpt_simd::Codec;
use hdrhistogram::Histogram;
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
            for p in crate::record::process_tree(self.pid, true) {
                let p = nix::unistd::Pid::from_raw(p);
                let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGCONT);
                let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

/// Records until the epochs or duration are reached or the target exits,
/// telling `progress` about each epoch with the time since the start.
pub fn record(
    args: &RecordArgs,
    codec: Codec,
    progress: &mut dyn FnMut(&EpochStats, Duration),
) -> Result<RecordReport, LabError> {
    let target = match args.pid {
        Some(pid) => {
            crate::record::check_target(pid)?;
            Target { pid, child: None }
        }
        None => {
            let (cmd, rest) = args
                .command
                .split_first()
                .ok_or_else(|| LabError::Invalid("give a command after -- or --pid".into()))?;
            let child = Command::new(cmd)
                .args(rest)
                .spawn()
                .map_err(|e| LabError::file(std::path::Path::new(cmd), e))?;
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
        .map_err(|e| LabError::trace(&args.output, e))?;
    let mut recorder = Recorder::new(writer, codec, 2);
    let started = Instant::now();
    let mut report = RecordReport { epochs: Vec::new() };
    loop {
        if args.epochs.is_some_and(|n| report.epochs.len() as u64 >= n)
            || args.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        std::thread::sleep(args.epoch);
        match recorder.epoch(target.pid, args.children, args.epoch)? {
            Some(stats) => {
                progress(&stats, started.elapsed());
                report.epochs.push(stats);
            }
            None => break, // the target exited
        }
    }
    drop(target);
    recorder.finish()?;
    Ok(report)
}

//! A whole recording (`ckpt record`): starts or attaches to the target,
//! checkpoints it epoch by epoch into a trace file until a stop rule holds,
//! and ends the target it started.
//!
//! A recording never leaves its target stopped and always leaves a readable
//! trace: SIGINT, SIGTERM and SIGHUP only ask the loop to stop (a pause in
//! progress completes and resumes the target first), and on an error the
//! target is resumed and the epochs completed so far are finished into the
//! trace before the error is returned. (SIGKILL cannot be caught: a
//! recorder killed that way inside a pause leaves its target stopped.)

use crate::record::{check_target, EpochStats, RecordError, Recorder};
use crate::trace::TraceWriter;
use crate::LabError;
use ckpt_simd::Codec;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
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
    /// The signal that ended the recording early, if one did.
    pub stopped_by: Option<&'static str>,
}

/// Signals that end a recording early, with their names.
const STOP_SIGNALS: [(i32, &str); 3] =
    [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP")];

/// Catches SIGINT, SIGTERM and SIGHUP while it lives: each only sets a
/// flag, which a loop that stops processes (the recorder's, a sender's from
/// a live process) reads between steps, so that a pause in progress always
/// completes and resumes its processes. Once it is dropped the signals have
/// their default action (termination) again.
pub struct StopSignals {
    caught: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
}

impl StopSignals {
    /// Starts catching the signals.
    pub fn catch() -> Result<StopSignals, LabError> {
        let caught = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        for (sig, _) in STOP_SIGNALS {
            signal_hook::flag::register_conditional_default(sig, done.clone())?;
            signal_hook::flag::register_usize(sig, caught.clone(), sig as usize)?;
        }
        Ok(StopSignals { caught, done })
    }

    /// The name of the stop signal caught, if any.
    pub fn caught(&self) -> Option<&'static str> {
        let sig = self.caught.load(Ordering::SeqCst) as i32;
        STOP_SIGNALS.iter().find(|s| s.0 == sig).map(|s| s.1)
    }

    /// Sleeps for `d`, or less if a stop signal arrives.
    pub fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while self.caught().is_none() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(5)));
        }
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

impl RecordReport {
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

/// The process a recording or a replication checkpoints: one it started
/// (ended with its descendants when dropped) or one it attached to.
pub struct Target {
    pid: i32,
    child: Option<Child>,
}

impl Target {
    /// Starts `command` (program and arguments).
    pub fn start(command: &[String]) -> Result<Target, LabError> {
        let (cmd, rest) = command
            .split_first()
            .ok_or_else(|| LabError::Invalid("give a command after -- or --pid".into()))?;
        let child = Command::new(cmd)
            .args(rest)
            .spawn()
            .map_err(|source| RecordError::Spawn {
                command: cmd.clone(),
                source,
            })?;
        Ok(Target {
            pid: child.id() as i32,
            child: Some(child),
        })
    }

    /// Attaches to a running process, which is left running; refuses one
    /// that does not exist or cannot be recorded ([`check_target`]).
    pub fn attach(pid: i32) -> Result<Target, LabError> {
        check_target(pid)?;
        Ok(Target { pid, child: None })
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }
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

/// Records until the epochs or duration are reached, the target exits or
/// a stop signal arrives, telling `progress` about each epoch with the time
/// since the start. On an error the epochs completed are finished into the
/// trace (which stays readable) and the error is returned.
pub fn record(
    args: &RecordArgs,
    codec: Codec,
    progress: &mut dyn FnMut(&EpochStats, Duration),
) -> Result<RecordReport, LabError> {
    // Caught before any process is stopped, so that no signal can end this
    // process between a stop and the matching resume.
    let signals = StopSignals::catch()?;
    let target = match args.pid {
        Some(pid) => Target::attach(pid)?,
        None => Target::start(&args.command)?,
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
    let mut report = RecordReport {
        epochs: Vec::new(),
        stopped_by: None,
    };
    let outcome = loop {
        if args.epochs.is_some_and(|n| report.epochs.len() as u64 >= n)
            || args.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break Ok(());
        }
        signals.sleep(args.epoch);
        if let Some(name) = signals.caught() {
            report.stopped_by = Some(name);
            break Ok(());
        }
        match recorder.epoch(target.pid, args.children, args.epoch) {
            Ok(Some(stats)) => {
                progress(&stats, started.elapsed());
                report.epochs.push(stats);
            }
            Ok(None) => break Ok(()), // the target exited
            Err(e) => break Err(e),
        }
    };
    drop(target);
    let finished = recorder.finish();
    match (outcome, finished) {
        (Ok(()), Ok(())) => {
            report.stopped_by = report.stopped_by.or(signals.caught());
            Ok(report)
        }
        (Err(e), Ok(())) => Err(LabError::Stopped {
            epochs: report.epochs.len(),
            source: Box::new(e.into()),
        }),
        (_, Err(e)) => Err(e.into()),
    }
}

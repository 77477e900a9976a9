//! `ckpt record` never harms its target: the recorder is sent SIGINT,
//! SIGTERM or SIGHUP at many moments, some of them while its target is
//! stopped for a pause, and every time the target must be running
//! afterwards (not in state T) and the trace must read to its end.
#![cfg(target_os = "linux")]

use ckpt_lab::trace::TraceReader;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CKPT: &str = env!("CARGO_BIN_EXE_ckpt");

/// The state letter of `pid` (R, S, T, ...), or None once it is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// A process that keeps writing a little memory, killed when dropped.
struct Target(Child);

impl Target {
    fn start() -> Target {
        Target(
            Command::new("sh")
                .args(["-c", "i=0; while :; do i=$((i+1)); done"])
                .spawn()
                .expect("sh runs"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Reads every epoch of a trace; returns how many there were.
fn read_all(path: &Path) -> usize {
    let mut r = TraceReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut n = 0;
    while r
        .next_epoch()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .is_some()
    {
        n += 1;
    }
    n
}

fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("the recorder did not end within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_recorder_stopped_by_a_signal_resumes_its_target_and_finishes_its_trace() {
    let dir = std::env::temp_dir().join(format!("ckpt-signals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = Target::start();
    let pid = target.pid();
    let signals = ["INT", "TERM", "HUP"];
    let (mut in_pause, mut with_epochs) = (0, 0);
    for round in 0..36u64 {
        let trace = dir.join(format!("{round}.trace"));
        let mut rec = Command::new(CKPT)
            .args(["record", "--quiet", "--seconds", "60", "--epoch-ms", "5"])
            .arg("--pid")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&trace)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let sig = signals[round as usize % 3];
        if round % 2 == 0 {
            // Inside a pause: wait until the target is stopped, then signal.
            let t = Instant::now();
            while state(pid) != Some('T') {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "the recorder never paused its target"
                );
            }
            signal(rec.id(), sig);
            in_pause += 1;
        } else {
            // At another moment: from before the first epoch to well
            // into the recording.
            std::thread::sleep(Duration::from_millis(round * 7 % 120));
            signal(rec.id(), sig);
        }
        let status = wait(&mut rec, Duration::from_secs(10));
        let mut err = String::new();
        std::io::Read::read_to_string(rec.stderr.as_mut().unwrap(), &mut err).unwrap();
        if !status.success() {
            // Only a signal that came before the recorder caught signals
            // (while it was starting) may end it, and then it had stopped
            // nothing and written nothing.
            use std::os::unix::process::ExitStatusExt;
            assert!(
                status.signal().is_some() && !trace.exists() && round % 2 == 1,
                "round {round} (SIG{sig}): {status}: {err}"
            );
        }
        if round % 2 == 0 {
            assert!(
                err.contains(&format!("SIG{sig} received")),
                "round {round}: the recorder did not see SIG{sig}: {err}"
            );
        }
        // The target runs on: give the kernel a moment to deliver a
        // SIGCONT sent just before the recorder exited, then look.
        let t = Instant::now();
        while state(pid) == Some('T') && t.elapsed() < Duration::from_millis(200) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let s = state(pid);
        assert!(
            matches!(s, Some('R' | 'S')),
            "round {round} (SIG{sig}): target left in state {s:?}"
        );
        if trace.exists() && read_all(&trace) > 0 {
            with_epochs += 1;
        }
        let _ = std::fs::remove_file(&trace);
    }
    assert_eq!(in_pause, 18);
    assert!(with_epochs >= 18, "{with_epochs} traces held an epoch");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pid_that_cannot_be_recorded_is_named_and_nothing_is_written() {
    let dir = std::env::temp_dir().join(format!("ckpt-nopid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("t.trace");
    // A pid above the kernel's largest (4194304) never exists.
    let out = Command::new(CKPT)
        .args(["record", "--epochs", "2", "--pid", "5000000", "-o"])
        .arg(&trace)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("process 5000000 does not exist"), "{err}");
    assert!(!trace.exists(), "a trace was written for no process");

    let out = Command::new(CKPT)
        .args(["record", "--epochs", "2", "-o"])
        .arg(&trace)
        .args(["--", "/nonexistent/program"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start /nonexistent/program"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stopped_process_is_refused_and_left_as_it_was() {
    let dir = std::env::temp_dir().join(format!("ckpt-stopped-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = Target::start();
    signal(target.pid(), "STOP");
    let t = Instant::now();
    while state(target.pid()) != Some('T') {
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    let out = Command::new(CKPT)
        .args([
            "record",
            "--epochs",
            "2",
            "--pid",
            &target.pid().to_string(),
            "-o",
        ])
        .arg(dir.join("t.trace"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stopped already"), "{err}");
    assert_eq!(state(target.pid()), Some('T'), "the recorder resumed it");
    let _ = std::fs::remove_dir_all(&dir);
}

//! The processes of a cut: which ones a pause stops (the target and, on
//! request, its descendants), which ones the recorder refuses to stop, and
//! the guard that resumes every stopped process however a pause ends.

use super::*;

/// The parent of `pid`, from /proc (`None` for the root or a process gone).
pub(super) fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and, when `children`, every descendant.
pub fn process_tree(pid: i32, children: bool) -> Vec<i32> {
    let mut pids = vec![pid];
    if !children {
        return pids;
    }
    let mut parent: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
                // The command name may hold spaces; fields resume after ')'.
                if let Some(rest) = stat.rsplit_once(')').map(|x| x.1) {
                    if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok())
                    {
                        parent.push((p, ppid));
                    }
                }
            }
        }
    }
    let mut i = 0;
    while i < pids.len() {
        let p = pids[i];
        pids.extend(parent.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        i += 1;
    }
    pids
}

/// Refuses a pid the recorder must never stop: one that is not a process
/// id (0 and negative ids name process groups), the recorder itself, and
/// its ancestors (stopping one would leave the recorder waiting on a
/// stopped parent, or stop it with its group). Cheap: checked every epoch.
pub(super) fn refuse_unstoppable(pid: i32) -> Result<(), RecordError> {
    let not = |reason: &str| RecordError::NotRecordable {
        pid,
        reason: reason.into(),
    };
    if pid <= 0 {
        return Err(not("process ids are positive"));
    }
    if pid as u32 == std::process::id() {
        return Err(not("it is this recorder"));
    }
    // The chain ends at pid 1 (or 0 above the root of a PID namespace).
    let mut p = std::process::id() as i32;
    for _ in 0..4096 {
        match parent_of(p) {
            Some(parent) if parent == pid => return Err(not("it is an ancestor of this recorder")),
            Some(parent) if parent > 0 => p = parent,
            _ => break,
        }
    }
    Ok(())
}

/// Checks that `pid` can be recorded before anything is written: it may be
/// stopped ([`refuse_unstoppable`]), it exists, is not already stopped (the
/// recorder resumes what it stops, and would resume it too), and this
/// process may signal it and read its memory.
pub fn check_target(pid: i32) -> Result<(), RecordError> {
    let not = |reason: &str| RecordError::NotRecordable {
        pid,
        reason: reason.into(),
    };
    refuse_unstoppable(pid)?;
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RecordError::NoProcess(pid))
        }
        Err(e) => return Err(proc_err(&format!("/proc/{pid}/stat"), e)),
    };
    match state_of(&stat).as_deref() {
        Some("T" | "t") => return Err(not("it is stopped already; resume it first")),
        Some("Z" | "X") => return Err(not("it has exited")),
        _ => {}
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => {}
        Err(nix::Error::ESRCH) => return Err(RecordError::NoProcess(pid)),
        Err(nix::Error::EPERM) => return Err(not("not permitted to signal it")),
        Err(source) => return Err(RecordError::Signal { pid, source }),
    }
    // Reading its page map takes the same permission as reading its memory.
    let path = format!("/proc/{pid}/pagemap");
    File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => not("not permitted to read its memory"),
        _ => proc_err(&path, e),
    })?;
    Ok(())
}

/// The state letter of a `/proc/PID/stat` line.
pub(super) fn state_of(stat: &str) -> Option<String> {
    // The command name may hold spaces and parentheses; fields resume after
    // the last ')'.
    stat.rsplit_once(')')
        .and_then(|x| x.1.split_whitespace().next().map(String::from))
}

/// Processes stopped with SIGSTOP, resumed with SIGCONT when this is
/// dropped: on every way out of a pause (return, error or panic).
pub(super) struct Paused<'a> {
    pub(super) pids: &'a [i32],
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        for &p in self.pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGCONT);
        }
    }
}

/// True when every thread of `pid` is stopped (or the process is gone).
pub(super) fn stopped(pid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    dir.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|x| x.1.split_whitespace().next().map(String::from))
            })
            .is_none_or(|state| matches!(state.as_str(), "T" | "t" | "Z" | "X"))
    })
}

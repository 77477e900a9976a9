//! The recorder: checkpoints a live Linux process the way a Remus primary
//! checkpoints a guest, and writes what changed to a trace
//! ([`crate::trace`]).
//!
//! Every epoch the target (and, on request, its descendants, so that
//! processes sharing memory are cut consistently) runs for the epoch's
//! length, is stopped with SIGSTOP, has the pages of its writable mappings
//! compared with the copy recorded last time, and is resumed with SIGCONT.
//! This kernel has no soft-dirty bits, so pages are compared by content:
//! `/proc/PID/pagemap` skips pages that were never faulted in, the rest is
//! read with large batched `process_vm_readv` calls on two threads and
//! compared with the page kernels. Pages of shared mappings are keyed by
//! their file and offset, so memory shared by several processes is recorded
//! once. Changed pages are written to the trace after the target resumes.

use crate::page::PageType;
use crate::trace::{PageStore, TraceError, TraceWriter};
use ckpt_simd::{Codec, Page, PAGE_SIZE};
use nix::sys::signal::{kill, Signal};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why recording stopped with an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The trace could not be written.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A /proc file could not be read.
    #[error("cannot read {path}: {source}")]
    Proc {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The target did not stop in time.
    #[error("process {0} did not stop within a second")]
    NotStopped(i32),
    /// Signalling the target failed.
    #[error("cannot signal process {pid}: {source}")]
    Signal {
        /// The process.
        pid: i32,
        /// Why.
        source: nix::Error,
    },
}

/// Per-epoch figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct EpochStats {
    /// How long the target was stopped.
    pub pause: Duration,
    /// Bytes of memory scanned (read and compared).
    pub scanned_bytes: u64,
    /// Pages that changed and were recorded.
    pub dirty_pages: u64,
    /// Processes stopped.
    pub processes: usize,
    /// Part of the pause spent waiting for every thread to stop.
    pub stop_wait: Duration,
    /// Part spent reading mappings and page maps.
    pub enumerate: Duration,
    /// Part spent reading and comparing pages.
    pub compare: Duration,
}

/// A writable mapping of one process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Region {
    start: u64,
    end: u64,
    shared: bool,
    offset: u64,
    dev: String,
    inode: u64,
}

fn proc_err(path: &str, source: std::io::Error) -> RecordError {
    RecordError::Proc {
        path: path.into(),
        source,
    }
}

fn writable_regions(pid: i32) -> Result<Vec<Region>, RecordError> {
    let path = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&path).map_err(|e| proc_err(&path, e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let name = f.next().unwrap_or("");
        if perms.as_bytes().get(1) != Some(&b'w') || name.starts_with("[v") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        out.push(Region {
            start,
            end,
            shared: perms.as_bytes().get(3) == Some(&b's'),
            offset: u64::from_str_radix(offset, 16).unwrap_or(0),
            dev: dev.into(),
            inode: inode.parse().unwrap_or(0),
        });
    }
    Ok(out)
}

/// `pid` and, when `children`, every descendant.
fn process_tree(pid: i32, children: bool) -> Vec<i32> {
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

/// True when every thread of `pid` is stopped (or the process is gone).
fn stopped(pid: i32) -> bool {
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

/// Where a page's bytes are: one run of pages of one process.
struct Run {
    pid: i32,
    addr: u64,
    pfns: Vec<u32>,
}

/// Records a process tree into a trace.
pub struct Recorder {
    writer: TraceWriter<BufWriter<File>>,
    codec: Codec,
    keys: HashMap<(u8, u64, u64, u64), u32>,
    region_pfns: HashMap<(i32, Region), std::sync::Arc<[u32]>>,
    seen: Vec<bool>,
    threads: usize,
    /// Per scan thread: changed pages of the last epoch (kept across
    /// epochs so that their memory is reused, not faulted in anew).
    found: Vec<Found>,
}

/// Changed pages one scan thread found. Pages are read straight into
/// `pages` and the changed ones compacted in place; `pages` keeps its
/// high-water length across epochs, `len` is what this epoch found.
#[derive(Default)]
struct Found {
    pfns: Vec<u32>,
    pages: Vec<crate::page::PageBuf>,
    len: usize,
}

impl Found {
    fn clear(&mut self) {
        self.pfns.clear();
        self.len = 0;
    }

    /// Room for `n` more pages past what was found, to read into.
    fn room(&mut self, n: usize) -> &mut [crate::page::PageBuf] {
        if self.pages.len() < self.len + n {
            self.pages
                .resize(self.len + n, crate::page::PageBuf([0; PAGE_SIZE]));
        }
        &mut self.pages[self.len..self.len + n]
    }
}

const BATCH_PAGES: usize = 64;

impl Recorder {
    /// A recorder writing to `writer`, comparing with `codec`'s kernel.
    pub fn new(writer: TraceWriter<BufWriter<File>>, codec: Codec, threads: usize) -> Recorder {
        Recorder {
            writer,
            codec,
            keys: HashMap::new(),
            region_pfns: HashMap::new(),
            seen: Vec::new(),
            threads: threads.max(1),
            found: Vec::new(),
        }
    }

    fn pfn_for(&mut self, key: (u8, u64, u64, u64)) -> u32 {
        let next = self.keys.len() as u32;
        *self.keys.entry(key).or_insert(next)
    }

    /// PFNs of every page of a region, stable across epochs.
    fn pfns(&mut self, pid: i32, r: &Region) -> std::sync::Arc<[u32]> {
        if let Some(v) = self.region_pfns.get(&(pid, r.clone())) {
            return v.clone();
        }
        let v: Vec<u32> = (r.start..r.end)
            .step_by(PAGE_SIZE)
            .map(|a| {
                if r.shared {
                    let dev = r
                        .dev
                        .bytes()
                        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
                    self.pfn_for((1, dev, r.inode, r.offset + (a - r.start)))
                } else {
                    self.pfn_for((0, pid as u64, a, 0))
                }
            })
            .collect();
        let v: std::sync::Arc<[u32]> = v.into();
        self.region_pfns.insert((pid, r.clone()), v.clone());
        v
    }

    /// Runs of pages worth reading: present now, or recorded before. A
    /// shared mapping already taken from another process of this epoch
    /// (same file, offset and length) is skipped whole.
    fn runs(
        &mut self,
        pid: i32,
        shared_seen: &mut std::collections::HashSet<(String, u64, u64, u64)>,
    ) -> Result<Vec<Run>, RecordError> {
        let mut regions = writable_regions(pid)?;
        regions.retain(|r| {
            !r.shared || shared_seen.insert((r.dev.clone(), r.inode, r.offset, r.end - r.start))
        });
        let path = format!("/proc/{pid}/pagemap");
        let pagemap = File::open(&path).map_err(|e| proc_err(&path, e))?;
        let mut runs = Vec::new();
        let mut raw = Vec::new();
        for r in &regions {
            let pfns = self.pfns(pid, r);
            let n = pfns.len();
            raw.resize(n * 8, 0);
            if pagemap
                .read_exact_at(&mut raw, r.start / PAGE_SIZE as u64 * 8)
                .is_err()
            {
                continue;
            }
            let mut cur: Option<Run> = None;
            for (i, &pfn) in pfns.iter().enumerate() {
                let present =
                    u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap()) >> 63 == 1;
                let wanted = present || self.seen.get(pfn as usize).copied().unwrap_or(false);
                let addr = r.start + (i * PAGE_SIZE) as u64;
                match (&mut cur, wanted) {
                    (Some(run), true) if run.pfns.len() < BATCH_PAGES => run.pfns.push(pfn),
                    (_, true) => {
                        runs.extend(cur.take());
                        cur = Some(Run {
                            pid,
                            addr,
                            pfns: vec![pfn],
                        });
                    }
                    (_, false) => runs.extend(cur.take()),
                }
            }
            runs.extend(cur);
        }
        Ok(runs)
    }

    /// One epoch: stop, scan, resume, write. Returns `None` once the target
    /// has exited.
    pub fn epoch(
        &mut self,
        root: i32,
        children: bool,
        run: Duration,
    ) -> Result<Option<EpochStats>, RecordError> {
        let pids = process_tree(root, children);
        let t = Instant::now();
        for &p in &pids {
            match kill(Pid::from_raw(p), Signal::SIGSTOP) {
                Ok(()) => {}
                Err(nix::Error::ESRCH) if p == root => return Ok(None),
                Err(nix::Error::ESRCH) => {}
                Err(source) => return Err(RecordError::Signal { pid: p, source }),
            }
        }
        let result = self.scan(&pids, t);
        for &p in &pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGCONT);
        }
        let pause = t.elapsed();
        let mut stats = match result {
            Ok(Some(x)) => x,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e),
        };
        stats.pause = pause;
        // Written while the target runs again.
        let mut pages: Vec<(u64, PageType, &Page)> = self
            .found
            .iter()
            .flat_map(|f| f.pfns.iter().zip(f.pages[..f.len].iter()))
            .map(|(&pfn, p)| (pfn as u64, PageType::Normal, &p.0))
            .collect();
        pages.sort_unstable_by_key(|p| p.0);
        self.writer
            .epoch(&pages, pause.as_nanos() as u64, run.as_nanos() as u64)?;
        for &(pfn, _, _) in &pages {
            if self.seen.len() <= pfn as usize {
                self.seen.resize(pfn as usize + 1, false);
            }
            self.seen[pfn as usize] = true;
        }
        Ok(Some(stats))
    }

    fn scan(&mut self, pids: &[i32], started: Instant) -> Result<Option<EpochStats>, RecordError> {
        for &p in pids {
            while !stopped(p) {
                if started.elapsed() > Duration::from_secs(1) {
                    return Err(RecordError::NotStopped(p));
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let stop_wait = started.elapsed();
        let t_enum = Instant::now();
        let mut runs = Vec::new();
        let mut shared_seen = std::collections::HashSet::new();
        for &p in pids {
            match self.runs(p, &mut shared_seen) {
                Ok(r) => runs.extend(r),
                Err(_) if p != pids[0] => {} // a child that exited
                Err(_) => return Ok(None),
            }
        }
        // Shared pages appear once per process mapping them: scan each once.
        if pids.len() > 1 {
            let mut taken = std::collections::HashSet::new();
            for r in runs.iter_mut() {
                r.pfns.retain(|&pfn| taken.insert(pfn));
            }
            runs.retain(|r| !r.pfns.is_empty());
        }
        let total: usize = runs.iter().map(|r| r.pfns.len()).sum();
        let per_thread = total.div_ceil(self.threads).max(1);
        let mut parts: Vec<Vec<&Run>> = vec![Vec::new()];
        let mut count = 0;
        for r in &runs {
            if count >= per_thread {
                parts.push(Vec::new());
                count = 0;
            }
            count += r.pfns.len();
            parts.last_mut().unwrap().push(r);
        }
        let enumerate = t_enum.elapsed();
        let t_cmp = Instant::now();
        let shadow = self.writer.reference();
        let codec = self.codec;
        if self.found.len() < parts.len() {
            self.found.resize_with(parts.len(), Found::default);
        }
        self.found.iter_mut().for_each(Found::clear);
        std::thread::scope(|s| {
            for (part, found) in parts.iter().zip(self.found.iter_mut()) {
                s.spawn(move || scan_part(part, shadow, codec, found));
            }
        });
        let dirty = self.found.iter().map(|f| f.pfns.len() as u64).sum();
        Ok(Some(EpochStats {
            pause: Duration::ZERO,
            scanned_bytes: (total * PAGE_SIZE) as u64,
            dirty_pages: dirty,
            processes: pids.len(),
            stop_wait,
            enumerate,
            compare: t_cmp.elapsed(),
        }))
    }

    /// Ends the trace.
    pub fn finish(self) -> Result<(), RecordError> {
        self.writer.finish()?;
        Ok(())
    }
}

static ZERO: Page = [0u8; PAGE_SIZE];

/// Most remote ranges in one `process_vm_readv` call (the kernel's IOV_MAX).
const MAX_IOV: usize = 1024;

/// Reads runs of pages, many runs per system call, and keeps in `found`
/// those that differ from the shadow (a page never recorded counts as zero).
fn scan_part(runs: &[&Run], shadow: &PageStore, codec: Codec, found: &mut Found) {
    let mut batch: Vec<&Run> = Vec::with_capacity(MAX_IOV);
    let mut pages = 0;
    for &run in runs {
        if !batch.is_empty()
            && (pages + run.pfns.len() > BATCH_PAGES
                || batch.len() == MAX_IOV
                || batch[0].pid != run.pid)
        {
            read_batch(&batch, shadow, codec, found);
            batch.clear();
            pages = 0;
        }
        batch.push(run);
        pages += run.pfns.len();
    }
    read_batch(&batch, shadow, codec, found);
}

/// One `process_vm_readv` for a batch of runs of one process, straight
/// into `found`, then the comparison, keeping changed pages in place. A
/// range that went away mid-read ends the call early; the runs after it
/// are read one by one.
fn read_batch(batch: &[&Run], shadow: &PageStore, codec: Codec, found: &mut Found) {
    let Some(first) = batch.first() else { return };
    let remote: Vec<RemoteIoVec> = batch
        .iter()
        .map(|r| RemoteIoVec {
            base: r.addr as usize,
            len: r.pfns.len() * PAGE_SIZE,
        })
        .collect();
    let total: usize = batch.iter().map(|r| r.pfns.len()).sum();
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(found.room(total));
    let got = process_vm_readv(
        Pid::from_raw(first.pid),
        &mut [IoSliceMut::new(bytes)],
        &remote,
    )
    .map_or(0, |n| n / PAGE_SIZE);
    let base = found.len;
    let mut kept = 0;
    let pfns = batch.iter().flat_map(|r| r.pfns.iter().copied());
    for (i, pfn) in pfns.enumerate().take(got) {
        let old = shadow.get(pfn as u64).unwrap_or(&ZERO);
        if !codec.pages_equal(&found.pages[base + i].0, old) {
            if kept != i {
                found.pages[base + kept] = found.pages[base + i];
            }
            found.pfns.push(pfn);
            kept += 1;
        }
    }
    found.len += kept;
    if got < total && batch.len() > 1 {
        let mut skip = got;
        for r in batch {
            let n = r.pfns.len();
            if skip >= n {
                skip -= n;
                continue;
            }
            skip = 0;
            read_batch(&[*r], shadow, codec, found);
        }
    }
}

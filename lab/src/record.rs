//! The recorder: checkpoints a live Linux process the way a Remus primary
//! checkpoints a guest, and writes what changed to a trace
//! ([`crate::trace`]).
//!
//! Every epoch the target (and, on request, its descendants, so that
//! processes sharing memory are cut consistently) runs for the epoch's
//! length and is stopped with SIGSTOP. The pages of its writable mappings
//! are compared with the copy recorded last time, and it is resumed with
//! SIGCONT. This kernel has no soft-dirty bits, so pages are compared by
//! content:
//! - mappings come from the `PROCMAP_QUERY` ioctl, or `/proc/PID/maps`;
//! - `/proc/PID/pagemap` skips pages never faulted in (for a shared mapping,
//!   in any of the processes that map it);
//! - two threads read the rest, taking chunks of mappings as they become
//!   free, with large batched `process_vm_readv` calls straight into a
//!   reused arena;
//! - each page's keyed 128-bit fingerprint (the SIMD kernels') is compared
//!   with the one recorded last, so the pause reads only the target's
//!   memory, never the recorder's copies.
//!
//! Pages of shared mappings are keyed by their file and offset, so memory
//! shared by several processes is recorded once. Changed pages are written
//! to the trace after the target resumes. Every process a pause stopped is
//! resumed however the pause ends (done, an error, a panic); a target is
//! checked before anything is written ([`check_target`]).

use crate::trace::{TraceError, TraceWriter};
use ckpt_engine::PageType;
use ckpt_simd::{Codec, FingerprintKey, Page, PAGE_SIZE};
use nix::sys::signal::{kill, Signal};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
use rustc_hash::FxHashMap as HashMap;
use std::fs::File;
use std::io::{BufWriter, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use thiserror::Error;

mod maps;
mod process;
mod scan;

use maps::{writable_regions, Region};
pub use process::{check_target, process_tree};
use process::{refuse_unstoppable, stopped, Paused};
use scan::{chunk_groups, group_pieces, scan_groups, Prints};

/// Why recording stopped with an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The trace could not be written.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A /proc file could not be read.
    #[error("cannot read {path}")]
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
    #[error("cannot signal process {pid}")]
    Signal {
        /// The process.
        pid: i32,
        /// Why.
        source: nix::Error,
    },
    /// No process has this id.
    #[error("process {0} does not exist")]
    NoProcess(i32),
    /// The process exists but this recorder may not stop or read it.
    #[error("process {pid} cannot be recorded: {reason}")]
    NotRecordable {
        /// The process.
        pid: i32,
        /// Why, in words.
        reason: String,
    },
    /// The command to record could not be started.
    #[error("cannot start {command}")]
    Spawn {
        /// The program.
        command: String,
        /// Why.
        source: std::io::Error,
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
    /// Of that, the scan threads' time inside `process_vm_readv`, summed
    /// over threads.
    pub read_calls: Duration,
}

fn proc_err(path: &str, source: std::io::Error) -> RecordError {
    RecordError::Proc {
        path: path.into(),
        source,
    }
}

/// A stretch of one writable mapping, the unit the scan threads share.
struct Piece {
    pid: i32,
    pagemap: std::sync::Arc<File>,
    /// Address of the piece's first page.
    start: u64,
    /// PFNs of the whole mapping; the piece is `first..first + len`.
    pfns: std::sync::Arc<[u32]>,
    first: usize,
    len: usize,
    /// The same pages as mapped by other processes of the cut (a shared
    /// mapping): their page maps, and the piece's address there. A page
    /// is read if any of the processes has it present.
    aliases: Vec<(std::sync::Arc<File>, u64)>,
}

/// Pages per [`Piece`]: one `process_vm_readv` batch at most.
const PIECE_PAGES: usize = BATCH_PAGES;

/// Pieces of one process at most this many pages apart share a read of the
/// page map (the gap's entries are read and ignored)...
const MAP_GAP_PAGES: u64 = 64;
/// ...as long as the read covers at most this many pages.
const MAP_SPAN_PAGES: u64 = 1024;

/// Mapped pages per chunk of work a scan thread takes.
const CHUNK_PAGES: usize = 1024;

/// Where a page's bytes are: one run of pages of one process.
struct Run {
    pid: i32,
    addr: u64,
    pfns: Vec<u32>,
}

/// Where a recorder's epochs go: a trace file, or a replicating primary.
pub trait EpochSink {
    /// One epoch's changed pages in PFN order, and the target's pause and
    /// run times.
    fn epoch(
        &mut self,
        pages: &[(u64, PageType, &Page)],
        pause_ns: u64,
        run_ns: u64,
    ) -> Result<(), RecordError>;
}

impl<W: std::io::Write + std::io::Seek> EpochSink for TraceWriter<W> {
    fn epoch(
        &mut self,
        pages: &[(u64, PageType, &Page)],
        pause_ns: u64,
        run_ns: u64,
    ) -> Result<(), RecordError> {
        Ok(TraceWriter::epoch(self, pages, pause_ns, run_ns)?)
    }
}

/// Records a process tree into a trace (or another [`EpochSink`]).
pub struct Recorder<S: EpochSink = TraceWriter<BufWriter<File>>> {
    writer: S,
    codec: Codec,
    /// Fingerprint of every page as last recorded, by PFN (a page never
    /// recorded counts as zero): the scan compares these, not the copies,
    /// so it reads only the target's memory.
    prints: Vec<u128>,
    key: FingerprintKey,
    zero_print: u128,
    keys: HashMap<(u8, u64, u64, u64), u32>,
    region_pfns: HashMap<(i32, Region), std::sync::Arc<[u32]>>,
    seen: Vec<bool>,
    threads: usize,
    /// Per scan thread: changed pages of the last epoch (kept across
    /// epochs so that their memory is reused, not faulted in anew).
    found: Vec<Found>,
}

/// Changed pages one scan thread found. Pages are read straight into free
/// slots of `pages`, blocks of [`BLOCK_PAGES`] pages that never move once
/// allocated; a changed page keeps its slot, an unchanged one gives it back
/// for the next read, so no page is copied and unchanged pages keep
/// reusing the same, cached, slots. The blocks are kept across epochs and
/// grown, faulted in, between pauses ([`Found::reserve`]), so that a pause
/// neither faults memory in nor moves an arena to grow it.
#[derive(Default)]
struct Found {
    pfns: Vec<u32>,
    prints: Vec<u128>,
    /// The slot each found page was read into.
    slots: Vec<u32>,
    pages: Vec<Box<[ckpt_engine::PageBuf]>>,
    /// Slots to read into.
    free: Vec<u32>,
    /// Slots of the batch being read.
    batch: Vec<u32>,
    /// Time spent inside `process_vm_readv` this epoch.
    read: Duration,
    /// Pages read this epoch.
    scanned: u64,
}

impl Found {
    fn clear(&mut self) {
        self.pfns.clear();
        self.prints.clear();
        self.slots.clear();
        self.free.clear();
        self.free
            .extend((0..(self.pages.len() * BLOCK_PAGES) as u32).rev());
        self.read = Duration::ZERO;
        self.scanned = 0;
    }

    /// Takes `n` free slots, in ascending order, into `self.batch`.
    fn take_slots(&mut self, n: usize) {
        while self.free.len() < n {
            let first = (self.pages.len() * BLOCK_PAGES) as u32;
            self.pages.push(ckpt_engine::PageBuf::arena(BLOCK_PAGES));
            self.free.extend((first..first + BLOCK_PAGES as u32).rev());
        }
        self.batch.clear();
        let at = self.free.len() - n;
        self.batch.extend(self.free.drain(at..));
        self.batch.sort_unstable();
    }

    fn slot(&self, slot: u32) -> &Page {
        let s = slot as usize;
        &self.pages[s / BLOCK_PAGES][s % BLOCK_PAGES].0
    }

    /// The `k`th page found this epoch.
    fn page(&self, k: usize) -> &Page {
        self.slot(self.slots[k])
    }

    /// Makes room, faulted in, for twice as many pages as this epoch found
    /// and at least [`SPARE_PAGES`] more, so that the next pause rarely
    /// allocates: a page fault costs more than reading the page.
    fn reserve(&mut self) {
        let len = self.slots.len();
        let want = (2 * len).max(len + SPARE_PAGES).div_ceil(BLOCK_PAGES);
        while self.pages.len() < want {
            let mut block = ckpt_engine::PageBuf::arena(BLOCK_PAGES);
            for page in block.iter_mut() {
                page.0[0] = 1; // fault each page in now, not in a pause
            }
            self.pages.push(block);
        }
    }
}

const BATCH_PAGES: usize = 256;

/// Pages per block of a [`Found`] arena.
const BLOCK_PAGES: usize = 256;

/// Pages a [`Found`] arena keeps ready beyond the last epoch's (8 MiB).
const SPARE_PAGES: usize = 2048;

impl<S: EpochSink> Recorder<S> {
    /// A recorder writing to `writer`, comparing with `codec`'s kernel.
    pub fn new(writer: S, codec: Codec, threads: usize) -> Recorder<S> {
        let key = FingerprintKey::random();
        let zero_print = codec.fingerprint(&ZERO, &key);
        Recorder {
            writer,
            codec,
            prints: Vec::new(),
            key,
            zero_print,
            keys: HashMap::default(),
            region_pfns: HashMap::default(),
            seen: Vec::new(),
            threads: threads.max(1),
            found: Vec::new(),
        }
    }

    fn pfn_for(&mut self, key: (u8, u64, u64, u64)) -> u32 {
        let next = self.keys.len() as u32;
        *self.keys.entry(key).or_insert(next)
    }

    /// PFNs of every page of a region (at least; the list may run past its
    /// end), stable across epochs. The list is kept per mapping start, so
    /// a heap that grows only gets PFNs for its new pages.
    fn pfns(&mut self, pid: i32, r: &Region) -> std::sync::Arc<[u32]> {
        let key = (
            pid,
            Region {
                end: r.start,
                ..r.clone()
            },
        );
        let pages = ((r.end - r.start) / PAGE_SIZE as u64) as usize;
        let known = match self.region_pfns.get(&key) {
            Some(v) if v.len() >= pages => return v.clone(),
            Some(v) => v.to_vec(),
            None => Vec::new(),
        };
        let dev = r.dev;
        let mut v = known;
        for i in v.len()..pages {
            let at = (i * PAGE_SIZE) as u64;
            let pfn = if r.shared {
                self.pfn_for((1, dev, r.inode, r.offset + at))
            } else {
                self.pfn_for((0, pid as u64, r.start + at, 0))
            };
            v.push(pfn);
        }
        let v: std::sync::Arc<[u32]> = v.into();
        self.region_pfns.insert(key, v.clone());
        v
    }

    /// The writable mappings of `pid` as pieces of at most [`PIECE_PAGES`]
    /// pages, for the scan threads to share. A shared mapping already taken
    /// from another process of this epoch (same file, offset and length) is
    /// read through that process; this one's page map joins its pieces as
    /// an alias, since a shared page may be present in one process's page
    /// tables and not in another's.
    fn pieces(
        &mut self,
        pid: i32,
        shared_seen: &mut HashMap<(u64, u64, u64, u64), usize>,
        out: &mut Vec<Piece>,
    ) -> Result<(), RecordError> {
        let regions = writable_regions(pid)?;
        let path = format!("/proc/{pid}/pagemap");
        let pagemap = std::sync::Arc::new(File::open(&path).map_err(|e| proc_err(&path, e))?);
        for r in &regions {
            let pages = ((r.end - r.start) / PAGE_SIZE as u64) as usize;
            if r.shared {
                let key = (r.dev, r.inode, r.offset, r.end - r.start);
                if let Some(&at) = shared_seen.get(&key) {
                    // Read once, through the first process that maps it.
                    for (k, piece) in out[at..]
                        .iter_mut()
                        .take(pages.div_ceil(PIECE_PAGES))
                        .enumerate()
                    {
                        let start = r.start + (k * PIECE_PAGES * PAGE_SIZE) as u64;
                        piece.aliases.push((pagemap.clone(), start));
                    }
                    continue;
                }
                shared_seen.insert(key, out.len());
            }
            let pfns = self.pfns(pid, r);
            for first in (0..pages).step_by(PIECE_PAGES) {
                out.push(Piece {
                    pid,
                    pagemap: pagemap.clone(),
                    start: r.start + (first * PAGE_SIZE) as u64,
                    pfns: pfns.clone(),
                    first,
                    len: PIECE_PAGES.min(pages - first),
                    aliases: Vec::new(),
                });
            }
        }
        Ok(())
    }

    /// One epoch: stop, scan, resume, write. Returns `None` once the target
    /// has exited.
    pub fn epoch(
        &mut self,
        root: i32,
        children: bool,
        run: Duration,
    ) -> Result<Option<EpochStats>, RecordError> {
        refuse_unstoppable(root)?;
        let pids = process_tree(root, children);
        let t = Instant::now();
        let result = {
            // Resumes every process of the list, however this block ends.
            let _paused = Paused { pids: &pids };
            let mut stopped = Ok(());
            for &p in &pids {
                match kill(Pid::from_raw(p), Signal::SIGSTOP) {
                    Ok(()) => {}
                    Err(nix::Error::ESRCH) if p == root => return Ok(None),
                    Err(nix::Error::ESRCH) => {}
                    Err(source) => {
                        stopped = Err(RecordError::Signal { pid: p, source });
                        break;
                    }
                }
            }
            stopped.and_then(|()| self.scan(&pids, t))
        };
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
            .flat_map(|f| {
                f.pfns
                    .iter()
                    .enumerate()
                    .map(move |(k, &pfn)| (pfn, f.page(k)))
            })
            .map(|(pfn, p)| (pfn as u64, PageType::Normal, p))
            .collect();
        pages.sort_unstable_by_key(|p| p.0);
        // Two processes mapping overlapping (not identical) stretches of a
        // shared file read the same page twice, at the same cut.
        pages.dedup_by_key(|p| p.0);
        self.writer
            .epoch(&pages, pause.as_nanos() as u64, run.as_nanos() as u64)?;
        for &(pfn, _, _) in &pages {
            if self.seen.len() <= pfn as usize {
                self.seen.resize(pfn as usize + 1, false);
            }
            self.seen[pfn as usize] = true;
        }
        for f in self.found.iter_mut() {
            f.reserve();
        }
        for f in &self.found {
            for (&pfn, &print) in f.pfns.iter().zip(&f.prints) {
                if self.prints.len() <= pfn as usize {
                    self.prints.resize(pfn as usize + 1, self.zero_print);
                }
                self.prints[pfn as usize] = print;
            }
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
        let mut pieces = Vec::new();
        let mut shared_seen = HashMap::default();
        for &p in pids {
            match self.pieces(p, &mut shared_seen, &mut pieces) {
                Ok(()) => {}
                Err(_) if p != pids[0] => {} // a child that exited
                Err(_) => return Ok(None),
            }
        }
        let enumerate = t_enum.elapsed();
        let t_cmp = Instant::now();
        let prints = Prints {
            known: &self.prints,
            zero: self.zero_print,
            key: &self.key,
            codec: self.codec,
        };
        let seen = &self.seen[..];
        let threads = self.threads.min(pieces.len()).max(1);
        if self.found.len() < threads {
            self.found.resize_with(threads, Found::default);
        }
        self.found.iter_mut().for_each(Found::clear);
        // Nearby pieces of one process (a library's data and bss, say) form
        // a group whose page map is read at once. Groups are taken in
        // chunks by whichever thread is free, this one included, so that a
        // thread that starts late (a woken core) or meets more changed
        // pages does not hold the others up.
        let chunks = chunk_groups(&pieces, group_pieces(&pieces));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (pieces, chunks, next) = (&pieces, &chunks, &next);
        let (here, others) = self.found[..threads].split_at_mut(1);
        std::thread::scope(|s| {
            for found in others.iter_mut() {
                s.spawn(move || scan_groups(pieces, chunks, next, seen, prints, found));
            }
            scan_groups(pieces, chunks, next, seen, prints, &mut here[0]);
        });
        let total: u64 = self.found.iter().map(|f| f.scanned).sum();
        let dirty = self.found.iter().map(|f| f.pfns.len() as u64).sum();
        Ok(Some(EpochStats {
            pause: Duration::ZERO,
            scanned_bytes: total * PAGE_SIZE as u64,
            dirty_pages: dirty,
            processes: pids.len(),
            stop_wait,
            enumerate,
            compare: t_cmp.elapsed(),
            read_calls: self.found.iter().map(|f| f.read).sum(),
        }))
    }

    /// Forgets what was recorded: the next epoch holds every non-zero
    /// page, as the first did (a replicating primary's full checkpoint).
    pub fn restart(&mut self) {
        self.prints.clear();
    }

    /// The sink.
    pub fn sink(&mut self) -> &mut S {
        &mut self.writer
    }
}

impl Recorder<TraceWriter<BufWriter<File>>> {
    /// Ends the trace.
    pub fn finish(self) -> Result<(), RecordError> {
        self.writer.finish()?;
        Ok(())
    }
}

static ZERO: Page = [0u8; PAGE_SIZE];

#[cfg(test)]
mod tests {
    use super::maps::{writable_regions_by_query, writable_regions_from_text};
    use super::process::parent_of;
    use super::*;

    #[test]
    fn the_recorder_refuses_itself_its_ancestors_and_process_groups() {
        let me = std::process::id() as i32;
        let parent = parent_of(me).expect("a parent");
        for pid in [me, parent, 0, -1, -me] {
            assert!(
                matches!(check_target(pid), Err(RecordError::NotRecordable { .. })),
                "pid {pid}"
            );
        }
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let checked = check_target(child.id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        assert!(checked.is_ok(), "{checked:?}");
    }

    #[test]
    fn the_maps_query_and_the_maps_text_agree() {
        let pid = std::process::id() as i32;
        let Some(first) = writable_regions_by_query(pid) else {
            eprintln!("PROCMAP_QUERY: SKIPPED (this kernel lacks it)");
            return;
        };
        // Other test threads may map memory meanwhile: retry a few times.
        let mut query = first.unwrap();
        for _ in 0..5 {
            let text = writable_regions_from_text(pid).unwrap();
            if text == query {
                assert!(!text.is_empty());
                return;
            }
            query = writable_regions_by_query(pid).unwrap().unwrap();
        }
        panic!("the two views of the writable mappings differ");
    }
}

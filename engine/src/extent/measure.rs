//! Restore and read speed of each [`SuperpagePolicy`]: a stream held in
//! memory (a trace replayed through the [`Sender`], or a synthetic guest)
//! restored into an [`ExtentMemory`] by the [`Receiver`], checked page by
//! page against the guest it must reproduce, then read at random and in
//! sequence as the restored guest would.

use super::backing::ThpCounters;
use super::{ExtentMemory, SuperpagePolicy, SuperpageReport};
use crate::config::ReceiverConfig;
use crate::memory::{GuestMemory, SparseMemory};
use crate::page::PageType;
use crate::pipeline::{Sender, SenderOptions};
use crate::receiver::{Event, ReceiveError, Receiver};
use crate::synth::{Rng, Scenario, SyntheticGuest};
use crate::trace::{TraceError, TraceReader};
use crate::EngineError;
use ckpt_simd::{Codec, PAGE_SIZE};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

/// Why a measurement could not be made.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MeasureError {
    /// The trace could not be read.
    #[error("trace: {0}")]
    Trace(#[from] TraceError),
    /// Sending failed.
    #[error("send: {0}")]
    Send(#[from] EngineError),
    /// Receiving failed.
    #[error("receive: {0}")]
    Receive(#[from] ReceiveError),
    /// The memory could not be set up or read back.
    #[error("memory: {0}")]
    Io(#[from] std::io::Error),
    /// The restored memory differs from the guest.
    #[error("pfn {pfn:#x} differs from the guest after the restore")]
    Mismatch {
        /// The first page that differs.
        pfn: u64,
    },
}

/// A stream to restore, held in memory, and what it must restore to.
pub struct Workload {
    /// What it is.
    pub name: String,
    /// Pages of the guest.
    pub guest_pages: u64,
    /// The stream.
    pub stream: Vec<u8>,
    /// XXH3-64 of each page of the guest after the last checkpoint.
    hashes: Vec<u64>,
}

/// The order in which a synthetic image's first checkpoint sends its pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageOrder {
    /// Ascending PFNs.
    Ascending,
    /// A random permutation.
    Shuffled,
}

fn hashes(pages: u64, page: impl Fn(u64) -> u64) -> Vec<u64> {
    (0..pages).map(page).collect()
}

fn sender(codec: Codec, opts: &SenderOptions, pages: u64) -> Result<Sender<Vec<u8>>, MeasureError> {
    let opts = SenderOptions {
        guest_pages: pages,
        ..opts.clone()
    };
    Ok(Sender::new(Vec::new(), codec, &opts)?)
}

impl Workload {
    /// A recorded trace replayed as `ckpt bench` replays it: the first
    /// epoch uncompressed, ending with ENABLE_COMPRESSION, then one
    /// compressed checkpoint per epoch.
    pub fn trace(
        path: &Path,
        codec: Codec,
        opts: &SenderOptions,
    ) -> Result<Workload, MeasureError> {
        let mut reader = TraceReader::open(path)?;
        while reader.next_epoch()?.is_some() {}
        let pages = reader.pages.max(1);
        let mut tx = sender(codec, opts, pages)?;
        let mut reader = TraceReader::open(path)?;
        let mut first = true;
        while let Some(epoch) = reader.next_epoch()? {
            tx.begin_checkpoint()?;
            for (i, &(pfn, ty)) in epoch.entries.iter().enumerate() {
                tx.page(pfn, ty, Some(&epoch.new[i].0))?;
            }
            if first {
                tx.enable_compression()?;
                first = false;
            }
            tx.end_checkpoint()?;
        }
        let (stream, _, _) = tx.finish()?;
        let store = reader.memory();
        let zero = xxh3_64(&[0u8; PAGE_SIZE]);
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into(),
        );
        Ok(Workload {
            name,
            guest_pages: pages,
            stream,
            hashes: hashes(pages, |p| store.get(p).map_or(zero, |pg| xxh3_64(pg))),
        })
    }

    /// The synthetic scenario of [`Scenario`]: the whole guest uncompressed
    /// (the pages its first dirty pass chose, ascending, then the rest,
    /// ascending), then compressed checkpoints of `sizes` dirty pages.
    pub fn scenario(
        name: &str,
        pages: u64,
        seed: u64,
        sizes: &[usize],
        codec: Codec,
        opts: &SenderOptions,
    ) -> Result<Workload, MeasureError> {
        let mut tx = sender(codec, opts, pages)?;
        let mut scenario = Scenario::new(pages, seed, sizes);
        for cp in scenario.by_ref() {
            tx.begin_checkpoint()?;
            for (pfn, ty, page) in &cp.pages {
                tx.page(*pfn, *ty, page.as_deref())?;
            }
            for (id, payload) in &cp.foreign {
                tx.foreign_chunk(*id, payload)?;
            }
            if cp.enable_compression {
                tx.enable_compression()?;
            }
            tx.end_checkpoint()?;
        }
        let (stream, _, _) = tx.finish()?;
        let guest = scenario.guest();
        Ok(Workload {
            name: name.into(),
            guest_pages: pages,
            stream,
            hashes: hashes(pages, |p| xxh3_64(guest.page(p))),
        })
    }

    /// A synthetic guest of `pages` pages sent whole in `order`,
    /// uncompressed, then as compressed checkpoints of `later` dirty pages
    /// each (ascending, as a dirty-bitmap scan sends them).
    pub fn image(
        pages: u64,
        order: ImageOrder,
        seed: u64,
        later: &[usize],
        codec: Codec,
        opts: &SenderOptions,
    ) -> Result<Workload, MeasureError> {
        let mut guest = SyntheticGuest::new(pages, seed);
        guest.checkpoint(pages as usize);
        let mut pfns: Vec<u64> = (0..pages).collect();
        if order == ImageOrder::Shuffled {
            let mut rng = Rng::new(seed ^ 0x5EED);
            for i in (1..pfns.len()).rev() {
                pfns.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let mut tx = sender(codec, opts, pages)?;
        tx.begin_checkpoint()?;
        for &pfn in &pfns {
            tx.page(pfn, PageType::Normal, Some(guest.page(pfn)))?;
        }
        tx.enable_compression()?;
        tx.end_checkpoint()?;
        for &n in later {
            let dirty = guest.checkpoint(n);
            tx.begin_checkpoint()?;
            for d in &dirty {
                tx.page(d.pfn, d.ty, Some(guest.page(d.pfn)))?;
            }
            tx.end_checkpoint()?;
        }
        let (stream, _, _) = tx.finish()?;
        let name = format!(
            "synthetic {} MiB, {}",
            (pages * PAGE_SIZE as u64) >> 20,
            match order {
                ImageOrder::Ascending => "in order",
                ImageOrder::Shuffled => "shuffled",
            }
        );
        Ok(Workload {
            name,
            guest_pages: pages,
            stream,
            hashes: hashes(pages, |p| xxh3_64(guest.page(p))),
        })
    }

    /// Whether `memory` holds the guest, page for page; the first page
    /// that differs otherwise.
    pub fn check(&self, memory: &dyn GuestMemory) -> Result<(), MeasureError> {
        match (0..self.guest_pages).find(|&p| xxh3_64(memory.page(p)) != self.hashes[p as usize]) {
            Some(pfn) => Err(MeasureError::Mismatch { pfn }),
            None => Ok(()),
        }
    }

    fn limits(&self) -> ReceiverConfig {
        let d = ReceiverConfig::default();
        ReceiverConfig {
            max_checkpoint_bytes: d
                .max_checkpoint_bytes
                .max(self.guest_pages * (PAGE_SIZE as u64 + 16)),
            max_checkpoint_entries: d.max_checkpoint_entries.max(self.guest_pages),
            ..d
        }
    }
}

/// Time on this thread's CPU clock (user and system time, page faults
/// included, time spent descheduled not), and on the wall clock: on a
/// shared machine the first is the steadier.
#[derive(Clone, Copy)]
struct Clock {
    wall: Instant,
    cpu: Duration,
}

fn thread_cpu() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

impl Clock {
    fn now() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    /// (CPU, wall) milliseconds since `self`.
    fn ms(&self) -> (f64, f64) {
        (
            (thread_cpu().saturating_sub(self.cpu)).as_secs_f64() * 1e3,
            self.wall.elapsed().as_secs_f64() * 1e3,
        )
    }
}

/// Restore times of one run, in milliseconds of this thread's CPU time
/// unless named wall.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RestoreTimes {
    /// The first checkpoint (the whole guest): parse, verify, apply.
    pub first_ms: f64,
    /// Of which applying it to memory (after its digest matched).
    pub first_apply_ms: f64,
    /// Applying it, wall clock.
    pub first_apply_wall_ms: f64,
    /// The first checkpoint, wall clock.
    pub first_wall_ms: f64,
    /// All later checkpoints together.
    pub later_ms: f64,
    /// Of which applying them.
    pub later_apply_ms: f64,
    /// All later checkpoints together, wall clock.
    pub later_wall_ms: f64,
    /// Later checkpoints.
    pub later: u64,
}

/// Restores `w` into `memory`, timing each checkpoint (parse, verify and
/// apply, and apply alone: from its verified trailer to its return), and
/// checks the result against the guest.
pub fn restore(
    w: &Workload,
    memory: &mut dyn GuestMemory,
    codec: Codec,
) -> Result<RestoreTimes, MeasureError> {
    let mut rx = Receiver::new(&w.stream[..], w.limits(), codec)?;
    let mut times = RestoreTimes::default();
    loop {
        let start = Clock::now();
        let mut verified = None;
        let got = rx.next_checkpoint_observed(memory, &mut |e| {
            if matches!(e, Event::Trailer { .. }) {
                verified = Some(Clock::now());
            }
        })?;
        let (cpu, wall) = start.ms();
        let Some(info) = got else { break };
        let (apply, apply_wall) = verified.map_or((0.0, 0.0), |v| v.ms());
        if info.seq == 0 {
            (times.first_ms, times.first_apply_ms, times.first_wall_ms) = (cpu, apply, wall);
            times.first_apply_wall_ms = apply_wall;
        } else {
            times.later_ms += cpu;
            times.later_apply_ms += apply;
            times.later_wall_ms += wall;
            times.later += 1;
        }
    }
    w.check(memory)?;
    Ok(times)
}

/// How much reading to do after a restore.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ReadPlan {
    /// Independent random 8-byte reads.
    pub random: usize,
    /// Dependent random 8-byte reads (each address depends on the value
    /// read before it).
    pub chase: usize,
    /// Sequential passes over the written pages.
    pub scans: usize,
}

/// Read speed of the restored memory, over the pages written (thread CPU
/// time).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ReadFigures {
    /// Bytes the reads span (the pages written).
    pub span_bytes: u64,
    /// Nanoseconds per independent random 8-byte read.
    pub random_ns: f64,
    /// Nanoseconds per dependent random 8-byte read.
    pub chase_ns: f64,
    /// Sequential scan, GB/s.
    pub scan_gbps: f64,
}

fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Reads the pages `memory` was written, at random (addresses drawn from
/// `seed`) and in sequence, timed on this thread's CPU clock. When
/// every page was written the reads address the guest directly; otherwise
/// they pick a page from the list of those written (the same small extra
/// load under every policy), so that no read lands on a hole, which reads
/// as the kernel's one zero page under some policies and as memory under
/// others.
pub fn read_speed(memory: &ExtentMemory, plan: &ReadPlan, seed: u64) -> ReadFigures {
    let bytes = memory.bytes();
    let pages = memory.pages();
    let written: Vec<u32> = (0..pages)
        .filter(|&p| memory.is_written(p))
        .map(|p| p as u32)
        .collect();
    if written.is_empty() {
        return ReadFigures::default();
    }
    let all = written.len() as u64 == pages;
    let n = written.len() as u64;
    let addr = |r: u64| -> usize {
        let page = if all {
            r % n
        } else {
            written[(r % n) as usize] as u64
        };
        page as usize * PAGE_SIZE + ((r >> 40) as usize % (PAGE_SIZE / 8)) * 8
    };
    // Runs of consecutive written pages, for the scans.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &p in &written {
        match runs.last_mut() {
            Some((s, len)) if *s + *len == p as usize => *len += 1,
            _ => runs.push((p as usize, 1)),
        }
    }
    let scan = || {
        let mut sum = 0u64;
        for &(s, len) in &runs {
            let r: &[u8] = &bytes[s * PAGE_SIZE..(s + len) * PAGE_SIZE];
            for c in r.chunks_exact(64) {
                for k in 0..8 {
                    sum = sum.wrapping_add(word(c, k * 8));
                }
            }
        }
        sum
    };
    // One untimed pass so that no timed read takes a page fault.
    let mut sink = scan();
    let t = Clock::now();
    for _ in 0..plan.scans {
        sink ^= std::hint::black_box(scan());
    }
    let scan_ms = t.ms().0;

    let mut rng = Rng::new(0x5EAD ^ seed);
    let t = Clock::now();
    for _ in 0..plan.random {
        sink = sink.wrapping_add(word(bytes, addr(rng.next_u64())));
    }
    let random_ms = t.ms().0;

    let mut state = seed;
    let mut v = 0u64;
    let t = Clock::now();
    for _ in 0..plan.chase {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        v = word(bytes, addr(mix(state ^ (v & 1))));
    }
    let chase_ms = t.ms().0;
    std::hint::black_box((sink, v));
    let per = |ms: f64, k: usize| ms * 1e6 / k.max(1) as f64;
    ReadFigures {
        span_bytes: n * PAGE_SIZE as u64,
        random_ns: per(random_ms, plan.random),
        chase_ns: per(chase_ms, plan.chase),
        scan_gbps: (n as f64 * PAGE_SIZE as f64 * plan.scans as f64) / (scan_ms * 1e6).max(1e-3),
    }
}

/// One restore of one workload under one policy.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyRun {
    /// Restore times.
    pub times: RestoreTimes,
    /// What the memory did and the kernel gave.
    pub report: SuperpageReport,
    /// The kernel's THP events during the restore (machine-wide).
    pub thp_events: ThpCounters,
}

/// Restores `w` once under `policy`; gives the memory for reading.
pub fn run_policy(
    w: &Workload,
    policy: SuperpagePolicy,
    codec: Codec,
) -> Result<(PolicyRun, ExtentMemory), MeasureError> {
    let before = ThpCounters::read()?;
    let mut memory = ExtentMemory::new(w.guest_pages, policy)?;
    let times = restore(w, &mut memory, codec)?;
    let thp_events = ThpCounters::read()?.since(&before);
    let report = memory.report()?;
    Ok((
        PolicyRun {
            times,
            report,
            thp_events,
        },
        memory,
    ))
}

/// Medians over the runs of one policy on one workload.
#[derive(Clone, Debug, Serialize)]
pub struct PolicySummary {
    /// The workload.
    pub workload: String,
    /// Pages of its guest.
    pub guest_pages: u64,
    /// The policy.
    pub policy: SuperpagePolicy,
    /// Restores the medians are over.
    pub runs: usize,
    /// The last run's counts (the decisions are the same in every run;
    /// what the kernel gave may differ).
    pub report: SuperpageReport,
    /// The lowest of the runs' shares of full extents really huge.
    pub huge_extent_share_min: Option<f64>,
    /// Median restore times.
    pub times: RestoreTimes,
    /// Median read figures over every read pass.
    pub reads: ReadFigures,
    /// Read passes the read medians are over.
    pub read_passes: usize,
    /// THP events of all runs together (machine-wide, during restores).
    pub thp_events: ThpCounters,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Restores `w` once under each policy, the policies taking turns in an
/// order rotated each round, `reps` rounds, each restore after `settle`
/// (time for the kernel to hand memory freed by the last run back to a
/// hypervisor that takes it, so that every restore starts alike); after
/// each round's restores,
/// while every policy's memory is held, reads them in turn `passes` times
/// (so that a change in the machine's load falls on every policy alike).
/// Gives the medians per policy.
pub fn measure(
    w: &Workload,
    policies: &[SuperpagePolicy],
    reps: usize,
    passes: usize,
    settle: Duration,
    codec: Codec,
    plan: &ReadPlan,
) -> Result<Vec<PolicySummary>, MeasureError> {
    let k = policies.len();
    let mut runs: Vec<Vec<PolicyRun>> = vec![Vec::new(); k];
    let mut reads: Vec<Vec<ReadFigures>> = vec![Vec::new(); k];
    for round in 0..reps {
        let mut held: Vec<Option<ExtentMemory>> = (0..k).map(|_| None).collect();
        for j in 0..k {
            let i = (j + round) % k;
            std::thread::sleep(settle);
            let (run, memory) = run_policy(w, policies[i], codec)?;
            runs[i].push(run);
            held[i] = Some(memory);
        }
        for pass in 0..passes {
            for j in 0..k {
                let i = (j + round + pass) % k;
                let memory = held[i].as_ref().expect("restored above");
                reads[i].push(read_speed(memory, plan, (round * passes + pass) as u64));
            }
        }
    }
    Ok(policies
        .iter()
        .zip(runs.into_iter().zip(reads))
        .map(|(&policy, (r, rd))| {
            let t = |f: fn(&RestoreTimes) -> f64| median(r.iter().map(|x| f(&x.times)).collect());
            let m = |f: fn(&ReadFigures) -> f64| median(rd.iter().map(f).collect());
            let last = r.last().expect("reps >= 1");
            let shares: Vec<f64> = r
                .iter()
                .filter_map(|x| x.report.huge_extent_share)
                .collect();
            PolicySummary {
                workload: w.name.clone(),
                guest_pages: w.guest_pages,
                policy,
                runs: r.len(),
                report: last.report.clone(),
                huge_extent_share_min: shares.iter().copied().reduce(f64::min),
                times: RestoreTimes {
                    first_ms: t(|x| x.first_ms),
                    first_apply_ms: t(|x| x.first_apply_ms),
                    first_apply_wall_ms: t(|x| x.first_apply_wall_ms),
                    first_wall_ms: t(|x| x.first_wall_ms),
                    later_ms: t(|x| x.later_ms),
                    later_apply_ms: t(|x| x.later_apply_ms),
                    later_wall_ms: t(|x| x.later_wall_ms),
                    later: last.times.later,
                },
                reads: ReadFigures {
                    span_bytes: rd.first().map_or(0, |x| x.span_bytes),
                    random_ns: m(|x| x.random_ns),
                    chase_ns: m(|x| x.chase_ns),
                    scan_gbps: m(|x| x.scan_gbps),
                },
                read_passes: rd.len(),
                thp_events: r
                    .iter()
                    .fold(ThpCounters::default(), |a, x| a.plus(&x.thp_events)),
            }
        })
        .collect())
}

/// Restores `w` into a [`SparseMemory`] (a map of boxed pages), the
/// receiver's in-memory guest before extents, `reps` times, each after
/// `settle`: median times.
pub fn sparse_baseline(
    w: &Workload,
    reps: usize,
    settle: Duration,
    codec: Codec,
) -> Result<RestoreTimes, MeasureError> {
    let mut all = Vec::new();
    for _ in 0..reps {
        std::thread::sleep(settle);
        let mut memory = SparseMemory::new(w.guest_pages);
        all.push(restore(w, &mut memory, codec)?);
    }
    let t = |f: fn(&RestoreTimes) -> f64| median(all.iter().map(f).collect());
    Ok(RestoreTimes {
        first_ms: t(|x| x.first_ms),
        first_apply_ms: t(|x| x.first_apply_ms),
        first_apply_wall_ms: t(|x| x.first_apply_wall_ms),
        first_wall_ms: t(|x| x.first_wall_ms),
        later_ms: t(|x| x.later_ms),
        later_apply_ms: t(|x| x.later_apply_ms),
        later_wall_ms: t(|x| x.later_wall_ms),
        later: all.first().map_or(0, |x| x.later),
    })
}

/// First-touch cost alone: a fresh [`ExtentMemory`] of `pages` pages under
/// `policy`, every page named in ascending batches of 1024 and written
/// once; (CPU, wall) milliseconds.
pub fn first_touch(pages: u64, policy: SuperpagePolicy) -> Result<(f64, f64), MeasureError> {
    let mut memory = ExtentMemory::new(pages, policy)?;
    let page = [0x5Au8; PAGE_SIZE];
    let all: Vec<u64> = (0..pages).collect();
    let t = Clock::now();
    for batch in all.chunks(1024) {
        memory.begin_batch(batch);
        for &p in batch {
            *memory.page_mut(p) = page;
        }
    }
    Ok(t.ms())
}

//! [`ExtentMemory`]: the backup's in-memory guest, populated on first touch
//! by 2 MiB extent through a [`Planner`].

use super::backing::{smaps_totals, PageMap};
use super::plan::{Action, ExtentState, Planner};
use super::{SuperpagePolicy, SuperpageReport, EXTENT_BYTES, EXTENT_PAGES};
use crate::memory::GuestMemory;
use crate::page::PFN_LIMIT;
use ckpt_simd::{Page, PAGE_SIZE};
use memmap2::{Advice, MmapMut, MmapOptions, UncheckedAdvice};
use std::io;
use std::time::{Duration, Instant};

static ZERO: Page = [0u8; PAGE_SIZE];

/// Guest memory in one anonymous mapping, reserved 2 MiB-aligned without
/// committing swap (`MAP_NORESERVE`); the kernel allocates each page on
/// its first write. Extents the policy makes huge are advised
/// `MADV_HUGEPAGE`, so that their first write faults in one transparent
/// huge page; the rest of the mapping is `MADV_NOHUGEPAGE`, so it gets
/// 4 KiB pages whatever the host's THP mode, and khugepaged leaves it be.
///
/// Breaking an extent copies its written pages aside, marks the extent
/// `MADV_NOHUGEPAGE`, drops the huge page (`MADV_DONTNEED`) and writes the
/// pages back, each faulting in its own 4 KiB page. Advice alone would
/// not do: `MADV_NOHUGEPAGE` leaves an existing huge page in place, and
/// splitting only its mapping leaves the 2 MiB allocation whole.
///
/// The receiver names each batch's PFNs before writing them
/// ([`GuestMemory::begin_batch`]); a write no batch named is planned as a
/// batch of its own. A failed `madvise` is counted, never fatal: the
/// contents never depend on advice.
pub struct ExtentMemory {
    map: MmapMut,
    /// Offset in `map` of the guest's first byte, 2 MiB-aligned in memory.
    base: usize,
    pages: u64,
    planner: Planner,
    /// One bit per page: written at least once.
    written: Vec<u64>,
    /// One bit per page: named by the last batch.
    named: Vec<u64>,
    last_batch: Vec<u64>,
    actions: Vec<Action>,
    scratch: Vec<u8>,
    extents_2m: u64,
    pages_4k: u64,
    extents_broken: u64,
    pages_written: u64,
    advice_failures: u64,
    break_time: Duration,
}

fn bit(bits: &[u64], i: u64) -> bool {
    bits[(i / 64) as usize] & 1 << (i % 64) != 0
}

impl ExtentMemory {
    /// A guest of `pages` zero pages (1 ..= 2^28), allocating by `policy`.
    pub fn new(pages: u64, policy: SuperpagePolicy) -> io::Result<ExtentMemory> {
        if pages == 0 || pages > PFN_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("guest of {pages} pages (1 ..= 2^28)"),
            ));
        }
        let len = pages.div_ceil(EXTENT_PAGES) as usize * EXTENT_BYTES;
        // One extent more than needed, so a 2 MiB-aligned window fits; the
        // slack is never touched and costs nothing.
        let map = MmapOptions::new()
            .len(len + EXTENT_BYTES)
            .no_reserve_swap()
            .map_anon()?;
        let base = (EXTENT_BYTES - map.as_ptr() as usize % EXTENT_BYTES) % EXTENT_BYTES;
        let mut m = ExtentMemory {
            map,
            base,
            pages,
            planner: Planner::new(policy, pages),
            written: vec![0; pages.div_ceil(64) as usize],
            named: vec![0; pages.div_ceil(64) as usize],
            last_batch: Vec::new(),
            actions: Vec::new(),
            scratch: Vec::new(),
            extents_2m: 0,
            pages_4k: 0,
            extents_broken: 0,
            pages_written: 0,
            advice_failures: 0,
            break_time: Duration::ZERO,
        };
        let whole = m.map.len();
        m.advise(Advice::NoHugePage, 0, whole);
        Ok(m)
    }

    /// The policy.
    pub fn policy(&self) -> SuperpagePolicy {
        self.planner.policy()
    }

    /// Where extent `extent` stands in the policy's decisions.
    pub fn extent_state(&self, extent: u64) -> ExtentState {
        self.planner.state(extent)
    }

    /// The guest's memory as one slice, as the guest would see it. Reading
    /// a page never written maps the kernel's zero page there.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.base..self.base + self.pages as usize * PAGE_SIZE]
    }

    /// Address of the guest's first byte (2 MiB-aligned).
    pub fn address(&self) -> usize {
        self.bytes().as_ptr() as usize
    }

    /// Whether the kernel backs extent `extent` with one huge page, read
    /// from its page map and page flags; `None` where those cannot be read.
    pub fn extent_is_huge(&self, extent: u64) -> io::Result<Option<bool>> {
        if (extent + 1) * EXTENT_PAGES > self.pages {
            return Ok(Some(false));
        }
        PageMap::open()?.is_huge(self.address() + extent as usize * EXTENT_BYTES)
    }

    fn advise(&mut self, advice: Advice, offset: usize, len: usize) {
        if self.map.advise_range(advice, offset, len).is_err() {
            self.advice_failures += 1;
        }
    }

    /// Whether page `pfn` was ever written.
    pub fn is_written(&self, pfn: u64) -> bool {
        bit(&self.written, pfn)
    }

    fn written(&self, pfn: u64) -> bool {
        bit(&self.written, pfn)
    }

    fn run_actions(&mut self) {
        let actions = std::mem::take(&mut self.actions);
        for &a in &actions {
            match a {
                Action::Huge(e) => {
                    self.extents_2m += 1;
                    self.advise(
                        Advice::HugePage,
                        self.base + e as usize * EXTENT_BYTES,
                        EXTENT_BYTES,
                    );
                }
                // The mapping is MADV_NOHUGEPAGE from the start.
                Action::Small(_) => {}
                Action::Break(e) => self.break_extent(e),
            }
        }
        self.actions = actions;
        self.actions.clear();
    }

    /// Moves extent `e` from its huge page to 4 KiB pages, keeping every
    /// page written so far.
    fn break_extent(&mut self, e: u64) {
        let t = Instant::now();
        self.extents_broken += 1;
        let first = e * EXTENT_PAGES;
        let at = self.base + e as usize * EXTENT_BYTES;
        self.scratch.resize(EXTENT_BYTES, 0);
        let kept: Vec<usize> = (0..EXTENT_PAGES as usize)
            .filter(|&i| self.written(first + i as u64))
            .collect();
        for &i in &kept {
            let r = i * PAGE_SIZE..(i + 1) * PAGE_SIZE;
            self.scratch[r.clone()].copy_from_slice(&self.map[at + r.start..at + r.end]);
        }
        self.advise(Advice::NoHugePage, at, EXTENT_BYTES);
        // SAFETY: `&mut self` guarantees no reference into the mapping is
        // alive; the range lies inside the mapping, which is private and
        // anonymous, so MADV_DONTNEED only frees its pages (later reads see
        // zeros). Every written page was copied aside above and is restored
        // below, so the guest's contents are unchanged when this returns.
        let dropped = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, at, EXTENT_BYTES)
        };
        if dropped.is_err() {
            // The pages are still there and hold what they held; writing
            // them back changes nothing.
            self.advice_failures += 1;
        }
        for &i in &kept {
            let r = i * PAGE_SIZE..(i + 1) * PAGE_SIZE;
            self.map[at + r.start..at + r.end].copy_from_slice(&self.scratch[r]);
        }
        self.pages_4k += kept.len() as u64;
        self.break_time += t.elapsed();
    }

    /// The counts and what the kernel really did, read now.
    pub fn report(&self) -> io::Result<SuperpageReport> {
        let pm = PageMap::open()?;
        let start = self.address();
        let resident = pm.resident(start, self.pages as usize)?;
        let (_, anon_huge) = smaps_totals(
            self.map.as_ptr() as usize,
            self.map.as_ptr() as usize + self.map.len(),
        )?;
        let whole = self.pages / EXTENT_PAGES;
        let (mut full, mut full_huge, mut huge, mut in_huge) =
            (0u64, Some(0u64), Some(0u64), Some(0u64));
        for e in 0..whole {
            if self.planner.state(e) == ExtentState::Untouched {
                continue;
            }
            let w =
                &self.written[(e * EXTENT_PAGES / 64) as usize..][..(EXTENT_PAGES / 64) as usize];
            let is_full = w.iter().all(|&x| x == u64::MAX);
            let count: u64 = w.iter().map(|x| x.count_ones() as u64).sum();
            full += is_full as u64;
            match pm.is_huge(start + e as usize * EXTENT_BYTES)? {
                Some(h) => {
                    huge = huge.map(|n| n + h as u64);
                    full_huge = full_huge.map(|n| n + (h && is_full) as u64);
                    in_huge = in_huge.map(|n| n + if h { count } else { 0 });
                }
                None => (huge, full_huge, in_huge) = (None, None, None),
            }
        }
        Ok(SuperpageReport {
            superpage_policy: self.policy(),
            extents_2m: self.extents_2m,
            pages_4k: self.pages_4k,
            extents_broken: self.extents_broken,
            huge_extent_share: match (full_huge, full) {
                (Some(h), f) if f > 0 => Some(h as f64 / f as f64),
                _ => None,
            },
            extents_full: full,
            extents_full_huge: full_huge,
            extents_huge: huge,
            pages_in_huge: in_huge,
            pages_written: self.pages_written,
            resident_bytes: resident * PAGE_SIZE as u64,
            anon_huge_bytes: anon_huge,
            break_ms: self.break_time.as_secs_f64() * 1e3,
            advice_failures: self.advice_failures,
        })
    }
}

impl GuestMemory for ExtentMemory {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn page(&self, pfn: u64) -> &Page {
        // A page never written is not read through the mapping: that would
        // map the zero page there, and a later write would then fault in a
        // 4 KiB page even inside an extent meant to be huge.
        if !self.written(pfn) {
            return &ZERO;
        }
        let at = self.base + pfn as usize * PAGE_SIZE;
        self.map[at..at + PAGE_SIZE].try_into().unwrap()
    }

    fn page_mut(&mut self, pfn: u64) -> &mut Page {
        assert!(pfn < self.pages, "pfn checked by the caller");
        if !bit(&self.named, pfn) {
            self.planner.plan(&[pfn], &mut self.actions);
            self.run_actions();
        }
        if !self.written(pfn) {
            self.written[(pfn / 64) as usize] |= 1 << (pfn % 64);
            self.pages_written += 1;
            if self.planner.state(pfn / EXTENT_PAGES) == ExtentState::Small {
                self.pages_4k += 1;
            }
        }
        let at = self.base + pfn as usize * PAGE_SIZE;
        (&mut self.map[at..at + PAGE_SIZE]).try_into().unwrap()
    }

    fn begin_batch(&mut self, pfns: &[u64]) {
        for &p in &self.last_batch {
            self.named[(p / 64) as usize] &= !(1 << (p % 64));
        }
        self.last_batch.clear();
        for &p in pfns {
            if p < self.pages {
                self.named[(p / 64) as usize] |= 1 << (p % 64);
                self.last_batch.push(p);
            }
        }
        let batch = std::mem::take(&mut self.last_batch);
        self.planner.plan(&batch, &mut self.actions);
        self.last_batch = batch;
        self.run_actions();
    }
}

//! What the kernel really gave a mapping, read back rather than trusted:
//! `/proc/self/pagemap` (present pages and, with `CAP_SYS_ADMIN`, their
//! frame numbers), `/proc/kpageflags` (whether a frame belongs to a
//! transparent huge page; root only), `/proc/self/smaps` (the
//! `AnonHugePages` the kernel maps with a 2 MiB entry) and the kernel's
//! THP event counters in `/proc/vmstat`.

use super::EXTENT_PAGES;
use serde::Serialize;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::FileExt;

const PM_PRESENT: u64 = 1 << 63;
const PM_PFN_MASK: u64 = (1 << 55) - 1;
const KPF_COMPOUND_HEAD: u64 = 1 << 15;
const KPF_COMPOUND_TAIL: u64 = 1 << 16;
const KPF_THP: u64 = 1 << 22;

/// Reads `n` consecutive 8-byte entries of a `/proc` table from index `at`.
fn read_entries(file: &File, at: u64, n: usize) -> io::Result<Vec<u64>> {
    let mut buf = vec![0u8; n * 8];
    file.read_exact_at(&mut buf, at * 8)?;
    Ok(buf
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

/// Reader of this process's page map and the kernel's page flags.
pub struct PageMap {
    pagemap: File,
    kpageflags: Option<File>,
}

impl PageMap {
    /// Opens `/proc/self/pagemap`, and `/proc/kpageflags` where readable.
    pub fn open() -> io::Result<PageMap> {
        Ok(PageMap {
            pagemap: File::open("/proc/self/pagemap")?,
            kpageflags: File::open("/proc/kpageflags").ok(),
        })
    }

    /// Page-map entries of the `n` pages from virtual address `addr`.
    pub fn entries(&self, addr: usize, n: usize) -> io::Result<Vec<u64>> {
        read_entries(&self.pagemap, (addr / 4096) as u64, n)
    }

    /// Pages of the `n` from `addr` that are resident.
    pub fn resident(&self, addr: usize, n: usize) -> io::Result<u64> {
        let mut count = 0;
        for k in (0..n).step_by(1 << 16) {
            let m = (n - k).min(1 << 16);
            let e = self.entries(addr + k * 4096, m)?;
            count += e.iter().filter(|&&x| x & PM_PRESENT != 0).count() as u64;
        }
        Ok(count)
    }

    /// Whether the 2 MiB at `addr` (aligned) is one transparent huge page:
    /// every page present, frames contiguous from a 2 MiB-aligned head,
    /// the head flagged as a THP head and the others as its tails. `None`
    /// when frame numbers or flags cannot be read (not root).
    pub fn is_huge(&self, addr: usize) -> io::Result<Option<bool>> {
        let n = EXTENT_PAGES as usize;
        let e = self.entries(addr, n)?;
        if e.iter().any(|&x| x & PM_PRESENT == 0) {
            return Ok(Some(false));
        }
        let head = e[0] & PM_PFN_MASK;
        let Some(kpf) = &self.kpageflags else {
            return Ok(None);
        };
        if head == 0 {
            return Ok(None); // frame numbers hidden from this process
        }
        if head & (EXTENT_PAGES - 1) != 0
            || e.iter()
                .enumerate()
                .any(|(i, &x)| x & PM_PFN_MASK != head + i as u64)
        {
            return Ok(Some(false));
        }
        let flags = read_entries(kpf, head, n)?;
        let head_ok = flags[0] & (KPF_THP | KPF_COMPOUND_HEAD) == KPF_THP | KPF_COMPOUND_HEAD;
        let tails_ok = flags[1..]
            .iter()
            .all(|&f| f & (KPF_THP | KPF_COMPOUND_TAIL) == KPF_THP | KPF_COMPOUND_TAIL);
        Ok(Some(head_ok && tails_ok))
    }
}

/// `Rss` and `AnonHugePages` in bytes, summed over the mappings of
/// `/proc/self/smaps` that overlap `[start, end)`.
pub fn smaps_totals(start: usize, end: usize) -> io::Result<(u64, u64)> {
    let f = BufReader::new(File::open("/proc/self/smaps")?);
    let (mut rss, mut huge, mut inside) = (0u64, 0u64, false);
    for line in f.lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a < end && b > start;
                continue;
            }
        }
        if !inside {
            continue;
        }
        let kb = || {
            words
                .clone()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match first {
            "Rss:" => rss += kb() * 1024,
            "AnonHugePages:" => huge += kb() * 1024,
            _ => {}
        }
    }
    Ok((rss, huge))
}

/// The kernel's THP event counters (`/proc/vmstat`), machine-wide.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ThpCounters {
    /// Huge pages allocated at a page fault.
    pub thp_fault_alloc: u64,
    /// Faults that wanted a huge page and fell back to 4 KiB.
    pub thp_fault_fallback: u64,
    /// 2 MiB mappings split into 4 KiB entries.
    pub thp_split_pmd: u64,
    /// Huge pages split into 4 KiB pages.
    pub thp_split_page: u64,
    /// Huge pages khugepaged assembled from 4 KiB pages.
    pub thp_collapse_alloc: u64,
}

impl ThpCounters {
    /// Reads the counters now.
    pub fn read() -> io::Result<ThpCounters> {
        let mut c = ThpCounters::default();
        for line in BufReader::new(File::open("/proc/vmstat")?).lines() {
            let line = line?;
            let Some((k, v)) = line.split_once(' ') else {
                continue;
            };
            let v: u64 = v.trim().parse().unwrap_or(0);
            match k {
                "thp_fault_alloc" => c.thp_fault_alloc = v,
                "thp_fault_fallback" => c.thp_fault_fallback = v,
                "thp_split_pmd" => c.thp_split_pmd = v,
                "thp_split_page" => c.thp_split_page = v,
                "thp_collapse_alloc" => c.thp_collapse_alloc = v,
                _ => {}
            }
        }
        Ok(c)
    }

    /// The sum of two sets of events.
    pub fn plus(&self, other: &ThpCounters) -> ThpCounters {
        ThpCounters {
            thp_fault_alloc: self.thp_fault_alloc + other.thp_fault_alloc,
            thp_fault_fallback: self.thp_fault_fallback + other.thp_fault_fallback,
            thp_split_pmd: self.thp_split_pmd + other.thp_split_pmd,
            thp_split_page: self.thp_split_page + other.thp_split_page,
            thp_collapse_alloc: self.thp_collapse_alloc + other.thp_collapse_alloc,
        }
    }

    /// Events since `earlier`.
    pub fn since(&self, earlier: &ThpCounters) -> ThpCounters {
        ThpCounters {
            thp_fault_alloc: self.thp_fault_alloc.wrapping_sub(earlier.thp_fault_alloc),
            thp_fault_fallback: self
                .thp_fault_fallback
                .wrapping_sub(earlier.thp_fault_fallback),
            thp_split_pmd: self.thp_split_pmd.wrapping_sub(earlier.thp_split_pmd),
            thp_split_page: self.thp_split_page.wrapping_sub(earlier.thp_split_page),
            thp_collapse_alloc: self
                .thp_collapse_alloc
                .wrapping_sub(earlier.thp_collapse_alloc),
        }
    }
}

/// The host's THP settings (the selected value of each file), for reports.
#[derive(Clone, Debug, Serialize)]
pub struct ThpSettings {
    /// `/sys/kernel/mm/transparent_hugepage/enabled`.
    pub enabled: String,
    /// `/sys/kernel/mm/transparent_hugepage/defrag`.
    pub defrag: String,
    /// `HugePages_Total` of `/proc/meminfo`: hugetlbfs pages reserved.
    pub hugetlb_pages: u64,
    /// Whether `/proc/kpageflags` is readable (per-extent evidence).
    pub kpageflags: bool,
}

impl ThpSettings {
    /// Reads the settings; a file that cannot be read gives `"?"`.
    pub fn read() -> ThpSettings {
        let selected = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| {
                    let a = s.find('[')?;
                    let b = s[a..].find(']')?;
                    Some(s[a + 1..a + b].to_string())
                })
                .unwrap_or_else(|| "?".into())
        };
        let hugetlb_pages = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("HugePages_Total:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
        ThpSettings {
            enabled: selected("/sys/kernel/mm/transparent_hugepage/enabled"),
            defrag: selected("/sys/kernel/mm/transparent_hugepage/defrag"),
            hugetlb_pages,
            kpageflags: File::open("/proc/kpageflags").is_ok(),
        }
    }
}

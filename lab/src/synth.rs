//! Deterministic synthetic guests: page contents in the styles real memory
//! shows (zeros, text, small-integer tables, page-table-like entries,
//! repeating records) and dirty sets with clustered word changes at chosen
//! densities. Used by the kernel benchmarks, the stream tests and `ckpt compress` without a trace; recorded
//! traces of real programs are the benchmark of record.

use crate::replay::{full_from, Checkpoint, Source};
use crate::LabError;
use ckpt_engine::{PageBuf, PageType};
use ckpt_simd::{Page, PAGE_SIZE, WORDS_PER_PAGE};

/// splitmix64, a small deterministic generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

const TEXT: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: backup.example\r\nUser-Agent: replay\r\n\
Accept: */*\r\n\r\n2026-11-21T10:00:00Z INFO checkpoint committed seq=1042 pages=811 \
the quick brown fox jumps over the lazy dog; SELECT id, name FROM accounts WHERE \
balance > 100 ORDER BY id; {\"key\":\"value\",\"count\":17,\"ok\":true}\n";

fn put_word(page: &mut Page, w: usize, v: u32) {
    page[w * 4..w * 4 + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_word(page: &Page, w: usize) -> u32 {
    u32::from_le_bytes(page[w * 4..w * 4 + 4].try_into().unwrap())
}

/// Fills `page` with fresh content in one of the styles.
pub fn fill_page(rng: &mut Rng, page: &mut Page) {
    match rng.below(6) {
        0 => page.fill(0),
        1 => {
            let start = rng.below(TEXT.len() as u64) as usize;
            for (i, b) in page.iter_mut().enumerate() {
                *b = TEXT[(start + i) % TEXT.len()];
            }
        }
        2 => {
            let base = rng.below(1000) as u32;
            for w in 0..WORDS_PER_PAGE {
                put_word(page, w, base + (w as u32 % 97) * 3);
            }
        }
        3 => {
            let frame = rng.below(1 << 24);
            for (i, c) in page.chunks_exact_mut(8).enumerate() {
                let pte = if i % 5 == 4 {
                    0
                } else {
                    ((frame + i as u64) << 12) | 0x67
                };
                c.copy_from_slice(&pte.to_le_bytes());
            }
        }
        4 => {
            let rec: [u8; 16] = std::array::from_fn(|_| rng.below(256) as u8);
            for c in page.chunks_exact_mut(16) {
                c.copy_from_slice(&rec);
            }
        }
        _ => {
            for c in page.chunks_exact_mut(8) {
                let v = rng.below(1 << 16);
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    for _ in 0..rng.below(4) {
        let w = rng.below(WORDS_PER_PAGE as u64) as usize;
        put_word(page, w, rng.next_u64() as u32);
    }
}

/// Changes round(`density` * 1024) distinct words of `page`, in runs of
/// 1..=16 words when `clustered`, else one by one. Every changed word gets
/// a value different from its old one. Returns the words changed.
pub fn mutate(rng: &mut Rng, page: &mut Page, density: f64, clustered: bool) -> usize {
    let target = (density * WORDS_PER_PAGE as f64).round() as usize;
    if target >= WORDS_PER_PAGE {
        let k = (rng.next_u64() as u32) | 1;
        for w in 0..WORDS_PER_PAGE {
            put_word(page, w, get_word(page, w) ^ k);
        }
        return WORDS_PER_PAGE;
    }
    let mut done = [false; WORDS_PER_PAGE];
    let mut n = 0;
    while n < target {
        let start = rng.below(WORDS_PER_PAGE as u64) as usize;
        let len = if clustered {
            1 + rng.below(16) as usize
        } else {
            1
        };
        for (w, seen) in done.iter_mut().enumerate().skip(start).take(len) {
            if n == target || *seen {
                continue;
            }
            *seen = true;
            n += 1;
            let old = get_word(page, w);
            let new = match rng.below(4) {
                0 => old.wrapping_add(1),
                1 => rng.below(1000) as u32,
                2 => 0,
                _ => rng.next_u64() as u32,
            };
            put_word(page, w, if new == old { old ^ 0x8000_0001 } else { new });
        }
    }
    n
}

/// One dirty page of a synthetic checkpoint.
pub struct DirtyPage {
    /// Guest PFN.
    pub pfn: u64,
    /// Page type (2% are page tables, sent raw).
    pub ty: PageType,
}

/// A guest whose memory changes checkpoint by checkpoint.
pub struct SyntheticGuest {
    rng: Rng,
    memory: Box<[PageBuf]>,
    seen: Vec<bool>,
    hot: u64,
}

/// Densities (fraction of words changed) drawn for re-dirtied pages, with
/// their weights: mostly small edits, a tail of rewrites.
const DENSITIES: [(f64, u32); 7] = [
    (0.0, 20),
    (0.001, 10),
    (0.01, 25),
    (0.05, 20),
    (0.25, 12),
    (0.5, 7),
    (1.0, 6),
];

impl SyntheticGuest {
    /// A guest of `pages` pages, all zero, never sent.
    pub fn new(pages: u64, seed: u64) -> SyntheticGuest {
        SyntheticGuest {
            rng: Rng::new(seed),
            memory: PageBuf::arena(pages as usize),
            seen: vec![false; pages as usize],
            hot: (pages / 8).max(1),
        }
    }

    /// Guest size in pages.
    pub fn pages(&self) -> u64 {
        self.memory.len() as u64
    }

    /// The current content of `pfn`.
    pub fn page(&self, pfn: u64) -> &Page {
        &self.memory[pfn as usize].0
    }

    /// Dirties about `n` distinct pages (70% from a hot set) and returns
    /// them in send order: ascending PFN, as a dirty-bitmap scan gives.
    pub fn checkpoint(&mut self, n: usize) -> Vec<DirtyPage> {
        let total = self.pages();
        let mut chosen = vec![false; total as usize];
        let mut pfns = Vec::with_capacity(n);
        let mut tries = 0;
        while pfns.len() < n.min(total as usize) && tries < 20 * n {
            tries += 1;
            let pfn = if self.rng.chance(0.7) {
                self.rng.below(self.hot)
            } else {
                self.rng.below(total)
            };
            if !chosen[pfn as usize] {
                chosen[pfn as usize] = true;
                pfns.push(pfn);
            }
        }
        pfns.sort_unstable();
        let total_weight: u32 = DENSITIES.iter().map(|d| d.1).sum();
        pfns.into_iter()
            .map(|pfn| {
                let page = &mut self.memory[pfn as usize].0;
                if !self.seen[pfn as usize] {
                    self.seen[pfn as usize] = true;
                    fill_page(&mut self.rng, page);
                } else {
                    let mut pick = self.rng.below(total_weight as u64) as u32;
                    let density = DENSITIES
                        .iter()
                        .find(|d| {
                            if pick < d.1 {
                                true
                            } else {
                                pick -= d.1;
                                false
                            }
                        })
                        .map_or(0.0, |d| d.0);
                    mutate(&mut self.rng, page, density, true);
                }
                let ty = if self.rng.chance(0.02) {
                    PageType::PageTable {
                        level: 1,
                        pinned: false,
                    }
                } else {
                    PageType::Normal
                };
                DirtyPage { pfn, ty }
            })
            .collect()
    }
}

/// A (reference, new) page pair in which `density` of the words differ in
/// clustered runs, for kernel benchmarks.
pub fn page_pair(rng: &mut Rng, density: f64) -> (Box<Page>, Box<Page>) {
    let mut reference = Box::new([0u8; PAGE_SIZE]);
    fill_page(rng, &mut reference);
    let mut new = reference.clone();
    mutate(rng, &mut new, density, true);
    (reference, new)
}

/// Guest size of the built-in synthetic run, in pages (128 MiB).
pub const BUILTIN_GUEST_PAGES: u64 = 32 * 1024;
/// Dirty-set sizes of the built-in run after its initial image: ordinary
/// checkpoints, one that overflows the staging ring, and an empty one.
pub const BUILTIN_SEQUENCE: [usize; 12] = [
    800, 1500, 300, 2600, 9000, 1200, 0, 700, 2000, 450, 3000, 6000,
];
/// Seed of the built-in run.
pub const BUILTIN_SEED: u64 = 0xDE70;

/// A scripted run of a synthetic guest: first the whole memory uncompressed
/// (Format A, ending with ENABLE_COMPRESSION, as a live migration's last
/// iteration), then compressed checkpoints of the given dirty-set sizes, with
/// raw page-table pages, entries without data (XTAB, XALLOC, BROKEN) and the
/// toolstack's own chunks mixed in.
pub struct Scenario {
    guest: SyntheticGuest,
    sizes: std::vec::IntoIter<usize>,
    first: bool,
    rng: Rng,
}

impl Scenario {
    /// A scenario for a guest of `pages` pages.
    pub fn new(pages: u64, seed: u64, sizes: &[usize]) -> Scenario {
        Scenario {
            guest: SyntheticGuest::new(pages, seed),
            sizes: Vec::from(sizes).into_iter(),
            first: true,
            rng: Rng::new(seed ^ 0xA5A5),
        }
    }

    /// The built-in run: [`BUILTIN_GUEST_PAGES`], [`BUILTIN_SEQUENCE`].
    pub fn builtin() -> Scenario {
        Scenario::new(BUILTIN_GUEST_PAGES, BUILTIN_SEED, &BUILTIN_SEQUENCE)
    }

    /// The guest's current memory.
    pub fn guest(&self) -> &SyntheticGuest {
        &self.guest
    }

    /// Whether the first checkpoint (the whole memory) has been taken.
    pub fn started(&self) -> bool {
        !self.first
    }
}

/// Collects entries with and without data into a checkpoint.
#[derive(Default)]
struct Builder {
    entries: Vec<(u64, PageType)>,
    pages: Vec<PageBuf>,
}

impl Builder {
    fn push(&mut self, pfn: u64, ty: PageType, page: Option<&Page>) {
        self.entries.push((pfn, ty));
        if let Some(p) = page {
            self.pages.push(PageBuf(*p));
        }
    }

    fn build(self, toolstack: Vec<(i32, Vec<u8>)>, enable_compression: bool) -> Checkpoint {
        Checkpoint {
            entries: self.entries,
            pages: self.pages.into_boxed_slice(),
            previous: None,
            toolstack,
            enable_compression,
        }
    }
}

impl Iterator for Scenario {
    type Item = Checkpoint;

    fn next(&mut self) -> Option<Checkpoint> {
        let total = self.guest.pages();
        if self.first {
            self.first = false;
            let dirty = self.guest.checkpoint(total as usize);
            let mut b = Builder::default();
            for d in &dirty {
                b.push(d.pfn, PageType::Normal, Some(self.guest.page(d.pfn)));
            }
            // Pages the first pass left untouched are sent as they are (zero).
            let mut sent = vec![false; total as usize];
            dirty.iter().for_each(|d| sent[d.pfn as usize] = true);
            for pfn in (0..total).filter(|&p| !sent[p as usize]) {
                b.push(pfn, PageType::Normal, Some(self.guest.page(pfn)));
            }
            let tsc = [
                1u8, 0, 0, 0, 0x10, 0x27, 0, 0, 0, 0, 0, 0, 0xC4, 0x09, 0, 0, 1, 0, 0, 0,
            ];
            return Some(b.build(vec![(-7, tsc.to_vec())], true));
        }
        let n = self.sizes.next()?;
        let dirty = self.guest.checkpoint(n);
        let mut in_set = std::collections::HashSet::new();
        let mut order: Vec<(u64, PageType, bool)> = Vec::with_capacity(dirty.len() + 4);
        for d in &dirty {
            in_set.insert(d.pfn);
            order.push((d.pfn, d.ty, true));
        }
        // A few entries without data, at PFNs not sent with data.
        for ty in [PageType::XTab, PageType::XAlloc, PageType::Broken] {
            let pfn = self.rng.below(total);
            if !dirty.is_empty() && in_set.insert(pfn) {
                let at = self.rng.below(order.len() as u64 + 1) as usize;
                order.insert(at, (pfn, ty, false));
            }
        }
        let mut b = Builder::default();
        for (pfn, ty, data) in order {
            b.push(pfn, ty, data.then(|| self.guest.page(pfn)));
        }
        let toolstack = if self.rng.chance(0.5) {
            vec![
                (-9, Vec::new()),
                (-3, vec![0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]),
            ]
        } else {
            Vec::new()
        };
        Some(b.build(toolstack, false))
    }
}

impl Source for Scenario {
    fn guest_pages(&self) -> u64 {
        self.guest().pages()
    }

    fn next_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError> {
        Ok(self.next())
    }

    fn full_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError> {
        if !self.started() {
            return Ok(self.next());
        }
        let guest = self.guest();
        Ok(Some(full_from(guest.pages(), |p| Some(guest.page(p)))))
    }
}

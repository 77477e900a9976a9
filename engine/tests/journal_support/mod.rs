//! What the journal tests share: real checkpoints written by a `Sender`
//! and committed by a `Receiver`, the files a simulated crash leaves, and
//! the record layout of `docs/REPLICATION.md`, "Journal record", read
//! back byte by byte.

pub use ckpt_engine::{
    journal_path, state_path, CheckpointInfo, Codec, Commit, Durability, DurableImage, GuestMemory,
    ImageError, Limits, PageType, ReceiveError, Receiver, RecordFault, Replica, Sender,
    SenderOptions,
};
pub use ckpt_simd::{Page, PAGE_SIZE};
pub use std::path::{Path, PathBuf};

pub const GUEST: u64 = 64;
/// The record layout of `docs/REPLICATION.md`, "Journal record".
pub const HEAD: usize = 96;
pub const ENTRY_HEAD: usize = 12;
pub const COMMIT: usize = 24;
pub const ZERO: Page = [0u8; PAGE_SIZE];

pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("ckpt-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    pub fn image(&self) -> PathBuf {
        self.0.join("guest.img")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn page(seed: u64) -> Page {
    let mut p = [0u8; PAGE_SIZE];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for c in p.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    p
}

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How a page changes in a checkpoint.
#[derive(Clone, Copy)]
pub enum Change {
    /// Three words rewritten: a DELTA once the sender holds the page.
    Words(u64),
    /// Sent as it is: EMPTY once the sender holds the page.
    Same,
    /// Rewritten and sent as a page-table page: always FULL.
    Raw(u64),
}

/// A stream and the guest's whole memory after each of its checkpoints.
pub struct Run {
    pub stream_id: u128,
    pub stream: Vec<u8>,
    pub states: Vec<Vec<Page>>,
}

/// Checkpoint 0 carries every non-zero page of `initial` (uncompressed, as
/// a primary's first checkpoint is), the others the changes listed.
pub fn run(stream_id: u128, initial: &[(u64, u64)], checkpoints: &[&[(u64, Change)]]) -> Run {
    let opts = SenderOptions {
        stream_id: Some(stream_id),
        ..SenderOptions::new(GUEST)
    };
    let mut sender = Sender::new(Vec::new(), Codec::best(), &opts).unwrap();
    let mut memory = vec![ZERO; GUEST as usize];
    for &(pfn, seed) in initial {
        memory[pfn as usize] = page(seed);
    }
    let mut states = Vec::new();
    sender.begin_checkpoint().unwrap();
    for pfn in 0..GUEST {
        if memory[pfn as usize] != ZERO {
            sender
                .page(pfn, PageType::Normal, Some(&memory[pfn as usize]))
                .unwrap();
        }
    }
    sender.enable_compression().unwrap();
    sender.end_checkpoint().unwrap();
    states.push(memory.clone());
    for changes in checkpoints {
        sender.begin_checkpoint().unwrap();
        for &(pfn, change) in changes.iter() {
            let p = &mut memory[pfn as usize];
            let ty = match change {
                Change::Words(seed) => {
                    for k in 0..3u64 {
                        let w = ((seed * 7 + k * 331) % 1024) as usize * 4;
                        p[w] ^= (seed as u8) | 1;
                    }
                    PageType::Normal
                }
                Change::Same => PageType::Normal,
                Change::Raw(seed) => {
                    *p = page(seed);
                    PageType::PageTable {
                        level: 1,
                        pinned: false,
                    }
                }
            };
            sender.page(pfn, ty, Some(p)).unwrap();
        }
        sender.end_checkpoint().unwrap();
        states.push(memory.clone());
    }
    let (stream, _, _) = sender.finish().unwrap();
    Run {
        stream_id,
        stream,
        states,
    }
}

impl Run {
    pub fn commit(&self, info: &CheckpointInfo) -> Commit {
        Commit {
            stream_id: self.stream_id,
            guest_pages: GUEST,
            seq: info.seq,
            digest: info.digest,
        }
    }

    pub fn receiver(&self) -> Receiver<&[u8]> {
        Receiver::new(&self.stream[..], Limits::default(), Codec::best()).unwrap()
    }
}

pub fn next(rx: &mut Receiver<&[u8]>, img: &mut DurableImage) -> CheckpointInfo {
    rx.next_checkpoint(img).unwrap().expect("a checkpoint")
}

pub fn check(img: &DurableImage, want: &[Page], what: &str) {
    for pfn in 0..GUEST {
        assert!(
            img.page(pfn) == &want[pfn as usize],
            "{what}: pfn {pfn} differs"
        );
    }
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// The files as a crash left them.
pub struct Crash {
    /// The image as it was synced before the commit.
    pub old_image: Vec<u8>,
    /// The image with the commit applied.
    pub new_image: Vec<u8>,
    pub state: Vec<u8>,
    pub journal: Vec<u8>,
    /// The journal file before the commit.
    pub earlier: Vec<u8>,
    /// The journal file after it: the record, then what is left of
    /// `earlier` past its end.
    pub whole: Vec<u8>,
    /// The checkpoint committed (not retired) before the crash.
    pub info: CheckpointInfo,
}

impl Crash {
    /// Puts the files in the crash's state, with `image` and `journal`.
    pub fn restore(&self, dir: &Dir, image: &[u8], journal: &[u8]) {
        std::fs::write(dir.image(), image).unwrap();
        std::fs::write(state_path(&dir.image()), &self.state).unwrap();
        std::fs::write(journal_path(&dir.image()), journal).unwrap();
    }
}

/// Commits the run's checkpoints before `at` (each settled, then the
/// image synced), commits checkpoint `at`, and "crashes" before settling.
pub fn crashed_commit(dir: &Dir, run: &Run, at: usize, durability: Durability) -> Crash {
    let mut img = DurableImage::create(&dir.image(), GUEST, durability).unwrap();
    let mut rx = run.receiver();
    for _ in 0..at {
        next(&mut rx, &mut img);
        img.settle().unwrap();
    }
    img.sync_all().unwrap();
    let old_image = read(&dir.image());
    let state = read(&state_path(&dir.image()));
    let earlier = read(&journal_path(&dir.image()));
    let info = next(&mut rx, &mut img);
    drop(img); // no settle: the journal holds checkpoint `at`, not retired
    let mut journal = read(&journal_path(&dir.image()));
    // The record was written over the start of the journal: what follows
    // it is what earlier, longer records left (tested on its own below).
    let (_, zeroed_at) = entries(&journal);
    let zeroed = u64_at(&journal, 32) as usize;
    let whole = journal.clone();
    journal.truncate(zeroed_at + 8 * zeroed + COMMIT);
    Crash {
        earlier,
        whole,
        old_image,
        new_image: read(&dir.image()),
        state,
        journal,
        info,
    }
}

/// One page entry of a journal record.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// Offset of its head (PFN, length).
    pub at: usize,
    pub pfn: u64,
    pub len: usize,
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The page entries of the record at the start of `journal`, checked
/// against the documented layout, and the offset of its zeroed PFNs.
pub fn entries(journal: &[u8]) -> (Vec<Entry>, usize) {
    assert_eq!(&journal[..8], b"CKPTJENC");
    let (pages, encoded) = (u64_at(journal, 24), u64_at(journal, 40));
    let mut at = HEAD;
    let mut v = Vec::new();
    for _ in 0..pages {
        let len = u32::from_le_bytes(journal[at + 8..at + 12].try_into().unwrap()) as usize;
        v.push(Entry {
            at,
            pfn: u64_at(journal, at),
            len,
        });
        at += ENTRY_HEAD + len;
    }
    assert_eq!(at - HEAD - ENTRY_HEAD * v.len(), encoded as usize);
    (v, at)
}

/// The three checkpoints most tests crash in: checkpoint 1 gives the
/// sender its references, checkpoint 2 is DELTAs and EMPTYs only (a small
/// record), checkpoint 3 has FULL pages among its DELTAs.
pub fn three_checkpoints(stream_id: u128) -> Run {
    let initial: Vec<(u64, u64)> = (0..GUEST)
        .filter(|p| p % 3 != 0)
        .map(|p| (p, p + 100))
        .collect();
    run(
        stream_id,
        &initial,
        &[
            &[
                (1, Change::Words(1)),
                (2, Change::Words(2)),
                (4, Change::Words(3)),
                (5, Change::Same),
                (7, Change::Same),
                (8, Change::Same),
            ],
            &[
                (2, Change::Words(4)),
                (1, Change::Same),
                (4, Change::Words(5)),
                (5, Change::Words(6)),
                (7, Change::Words(7)),
                (8, Change::Words(8)),
            ],
            &[
                (1, Change::Words(9)),
                (40, Change::Raw(10)),
                (4, Change::Same),
                (41, Change::Raw(11)),
                (2, Change::Words(12)),
            ],
        ],
    )
}

/// Each word of the image from `a` or `b`, at random.
pub fn tear(a: &[u8], b: &[u8], rng: &mut Rng) -> Vec<u8> {
    a.chunks_exact(4)
        .zip(b.chunks_exact(4))
        .flat_map(|(x, y)| if rng.below(2) == 0 { x } else { y })
        .copied()
        .collect()
}

/// Rewrites the commit record of the record at the start of `j` so that
/// it checks again.
pub fn recommit(j: &mut [u8]) {
    let c = j.len() - COMMIT;
    let crc = crc32c::crc32c(&j[..c + 16]);
    j[c + 16..c + 20].copy_from_slice(&crc.to_le_bytes());
}

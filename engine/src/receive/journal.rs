//! A crash-consistent guest image file for a backup (`docs/REPLICATION.md`,
//! "The backup's image"): each checkpoint is committed through a
//! write-ahead journal, so that a backup killed at any instant comes back
//! holding exactly one complete checkpoint.
//!
//! Three files sit together: the image (`PATH`, page `p` at offset
//! `p * 4096`), its state (`PATH.state`: guest size and the checkpoint the
//! image holds, in two alternating slots) and the journal
//! (`PATH.journal`). A commit, once the receiver has verified the
//! checkpoint ([`GuestMemory::begin_commit`] .. [`GuestMemory::end_commit`]):
//!
//! 1. the pages, staged in memory, are written to the journal with a
//!    record header; fsync;
//! 2. the commit record (a CRC-32C over the whole record) is written;
//!    fsync. The checkpoint is now committed: the acknowledgement may leave;
//! 3. the pages are copied into the image;
//! 4. later, in [`Replica::settle`], before the next commit: the image is
//!    synced and the state slot rewritten (the journal is retired).
//!
//! Opening an image recovers it: a committed journal record not yet
//! retired is applied again (pages are whole, so applying twice is
//! harmless), an uncommitted one is dropped, and [`Recovery`] says which.
//! [`Durability::Grouped`] writes each record with one fsync (the commit
//! record's CRC covers every byte before it) and retires the journal only
//! every so many bytes; [`Durability::InPlace`] has no journal at all and
//! exists to measure what the journal costs.

use super::memory::ImageFile;
use super::{Commit, GuestMemory, Replica};
use crate::page::{PageBuf, PFN_LIMIT};
use crate::send::Latency;
use ckpt_simd::{Page, PAGE_SIZE};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;

const STATE_MAGIC: &[u8; 8] = b"CKPTIMGS";
const STATE_VERSION: u32 = 1;
/// Bytes of one state record.
pub const STATE_LEN: usize = 80;
/// Distance between the two state slots (each in its own block).
const STATE_SLOT: u64 = 4096;
const RECORD_MAGIC: &[u8; 8] = b"CKPTJRNL";
/// Bytes of a journal record's header.
pub const RECORD_HEAD_LEN: usize = 88;
/// Bytes of one journal page entry: the PFN, then the page.
pub const RECORD_PAGE_LEN: usize = 8 + PAGE_SIZE;
const COMMIT_MAGIC: &[u8; 8] = b"CKPTCMIT";
/// Bytes of a commit record.
pub const COMMIT_LEN: usize = 24;
/// Pages per block of the staging arena.
const BLOCK: usize = 256;

/// How a [`DurableImage`] makes a commit durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Write-ahead journal in the strict order: journal data, fsync,
    /// commit record, fsync, apply; image fsync and retire in
    /// [`Replica::settle`], before the next commit. Four syncs per
    /// checkpoint, two before the acknowledgement.
    Journal,
    /// Write-ahead journal with one fsync per checkpoint (data and commit
    /// record together: the record's CRC tells a torn record from a whole
    /// one), records appended, and the image synced and the journal
    /// retired once it holds `retire_bytes`. Recovery applies every record
    /// since the last retirement, in order.
    Grouped {
        /// Journal bytes after which it is retired.
        retire_bytes: u64,
    },
    /// No journal: pages are written straight into the image and synced.
    /// A crash in the middle of a commit leaves a torn image; this exists
    /// to measure what the journal costs.
    InPlace,
}

/// Why an image could not be opened, created or recovered.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The image has no state file: it is not an image this engine made.
    #[error("{path} exists but is not a ckpt image (no {path}.state); move it away or choose another path")]
    NotAnImage {
        /// The image.
        path: PathBuf,
    },
    /// There is no image at the path.
    #[error("{path}: no image (no {path}.state)")]
    Missing {
        /// The image.
        path: PathBuf,
    },
    /// An image already exists at the path.
    #[error("{path}: an image already exists")]
    Exists {
        /// The image.
        path: PathBuf,
    },
    /// The state or the image is damaged beyond what recovery repairs.
    #[error("{path}: damaged image: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A guest size outside 1..=2^28 pages.
    #[error("a guest of {pages} pages is outside 1..=2^28")]
    GuestSize {
        /// Pages asked for.
        pages: u64,
    },
}

/// An uncommitted checkpoint found in the journal and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discarded {
    /// Its stream.
    pub stream_id: u128,
    /// Its sequence number.
    pub seq: u64,
    /// Journal bytes dropped.
    pub bytes: u64,
}

/// What opening an image did to recover it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Committed checkpoints the journal held that were applied to the
    /// image again, oldest first.
    pub replayed: Vec<Commit>,
    /// Pages written by those.
    pub replayed_pages: u64,
    /// An uncommitted checkpoint that was dropped.
    pub discarded: Option<Discarded>,
}

impl Recovery {
    /// Whether the image was left clean (nothing to replay or drop).
    pub fn clean(&self) -> bool {
        self.replayed.is_empty() && self.discarded.is_none()
    }
}

/// What committing has cost so far.
#[derive(Clone, Debug, Default)]
pub struct CommitStats {
    /// Checkpoints committed.
    pub commits: u64,
    /// Pages written.
    pub pages: u64,
    /// Pages zeroed (checkpoint 0 of a new stream over an older one).
    pub zeroed: u64,
    /// Bytes written to the journal.
    pub journal_bytes: u64,
    /// fsync calls (journal, image and state).
    pub syncs: u64,
    /// Per checkpoint, from `begin_commit` until `end_commit` returns: the
    /// receiver's apply pass, the journal and its syncs.
    pub commit: Latency,
    /// Per retirement: syncing the image and writing the state.
    pub settle: Latency,
}

/// The pages of the commit in progress.
#[derive(Default)]
struct Staging {
    blocks: Vec<Box<[PageBuf]>>,
    /// PFN -> slot.
    slot_of: HashMap<u64, u32>,
    /// PFNs in the order they were first written.
    pfns: Vec<u64>,
}

impl Staging {
    fn clear(&mut self) {
        // Keep room for a checkpoint like the last one, no more.
        let used = self.pfns.len().div_ceil(BLOCK);
        self.blocks.truncate(used.max(4));
        self.slot_of.clear();
        self.pfns.clear();
    }

    fn slot(&self, s: u32) -> &Page {
        &self.blocks[s as usize / BLOCK][s as usize % BLOCK].0
    }

    fn slot_mut(&mut self, s: u32) -> &mut Page {
        &mut self.blocks[s as usize / BLOCK][s as usize % BLOCK].0
    }

    /// The slot of `pfn`, taken on first use and filled by `init`.
    fn take(&mut self, pfn: u64, init: &Page) -> &mut Page {
        let s = match self.slot_of.get(&pfn) {
            Some(&s) => s,
            None => {
                let s = self.pfns.len() as u32;
                if s as usize / BLOCK >= self.blocks.len() {
                    self.blocks.push(PageBuf::arena(BLOCK));
                }
                self.slot_of.insert(pfn, s);
                self.pfns.push(pfn);
                self.slot_mut(s).copy_from_slice(init);
                s
            }
        };
        self.slot_mut(s)
    }
}

/// A guest image file committed through a write-ahead journal.
pub struct DurableImage {
    path: PathBuf,
    image: ImageFile,
    state_file: File,
    journal: File,
    durability: Durability,
    guest_pages: u64,
    holds: Option<Commit>,
    /// Generation of `holds`: one more per commit, across streams.
    generation: u64,
    /// The state record on disk is of `generation`.
    retired: bool,
    /// Journal bytes since its last retirement.
    journal_len: u64,
    /// The image is all zero (made by `create`, nothing committed yet).
    known_zero: bool,
    staging: Staging,
    started: Option<Instant>,
    stats: CommitStats,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// The state file of the image at `path`.
pub fn state_path(path: &Path) -> PathBuf {
    with_suffix(path, ".state")
}

/// The journal of the image at `path`.
pub fn journal_path(path: &Path) -> PathBuf {
    with_suffix(path, ".journal")
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u128_at(b: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(b[at..at + 16].try_into().expect("16 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// One state record: `docs/REPLICATION.md`, "State file".
fn state_bytes(generation: u64, guest_pages: u64, holds: Option<&Commit>) -> [u8; STATE_LEN] {
    let mut b = [0u8; STATE_LEN];
    b[..8].copy_from_slice(STATE_MAGIC);
    b[8..12].copy_from_slice(&STATE_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(holds.is_some() as u32).to_le_bytes());
    b[16..24].copy_from_slice(&generation.to_le_bytes());
    b[24..32].copy_from_slice(&guest_pages.to_le_bytes());
    if let Some(c) = holds {
        b[32..48].copy_from_slice(&c.stream_id.to_le_bytes());
        b[48..56].copy_from_slice(&c.seq.to_le_bytes());
        b[56..72].copy_from_slice(&c.digest.to_le_bytes());
    }
    let check = crc32c::crc32c(&b[..72]);
    b[72..76].copy_from_slice(&check.to_le_bytes());
    b
}

/// (generation, guest pages, what the image holds), or `None` for a slot
/// that is not a whole, valid record.
fn parse_state(b: &[u8]) -> Option<(u64, u64, Option<Commit>)> {
    if b.len() < STATE_LEN
        || &b[..8] != STATE_MAGIC
        || u32_at(b, 72) != crc32c::crc32c(&b[..72])
        || u32_at(b, 8) != STATE_VERSION
        || u32_at(b, 12) > 1
        || u32_at(b, 76) != 0
    {
        return None;
    }
    let guest_pages = u64_at(b, 24);
    if guest_pages == 0 || guest_pages > PFN_LIMIT {
        return None;
    }
    let holds = (u32_at(b, 12) == 1).then(|| Commit {
        stream_id: u128_at(b, 32),
        guest_pages,
        seq: u64_at(b, 48),
        digest: u128_at(b, 56),
    });
    Some((u64_at(b, 16), guest_pages, holds))
}

/// A journal record's header, parsed.
struct RecordHead {
    generation: u64,
    pages: u64,
    zeroed: u64,
    commit: Commit,
}

impl RecordHead {
    fn to_bytes(&self) -> [u8; RECORD_HEAD_LEN] {
        let mut b = [0u8; RECORD_HEAD_LEN];
        b[..8].copy_from_slice(RECORD_MAGIC);
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.commit.guest_pages.to_le_bytes());
        b[24..32].copy_from_slice(&self.pages.to_le_bytes());
        b[32..40].copy_from_slice(&self.zeroed.to_le_bytes());
        b[40..56].copy_from_slice(&self.commit.stream_id.to_le_bytes());
        b[56..64].copy_from_slice(&self.commit.seq.to_le_bytes());
        b[64..80].copy_from_slice(&self.commit.digest.to_le_bytes());
        let check = crc32c::crc32c(&b[..80]);
        b[80..84].copy_from_slice(&check.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8; RECORD_HEAD_LEN]) -> Option<RecordHead> {
        if &b[..8] != RECORD_MAGIC
            || u32_at(b, 80) != crc32c::crc32c(&b[..80])
            || u32_at(b, 84) != 0
        {
            return None;
        }
        Some(RecordHead {
            generation: u64_at(b, 8),
            pages: u64_at(b, 24),
            zeroed: u64_at(b, 32),
            commit: Commit {
                stream_id: u128_at(b, 40),
                guest_pages: u64_at(b, 16),
                seq: u64_at(b, 56),
                digest: u128_at(b, 64),
            },
        })
    }

    /// Bytes of the whole record, commit record included.
    fn len(&self) -> u64 {
        RECORD_HEAD_LEN as u64
            + self.pages * RECORD_PAGE_LEN as u64
            + self.zeroed * 8
            + COMMIT_LEN as u64
    }
}

fn commit_bytes(generation: u64, crc_so_far: u32) -> [u8; COMMIT_LEN] {
    let mut b = [0u8; COMMIT_LEN];
    b[..8].copy_from_slice(COMMIT_MAGIC);
    b[8..16].copy_from_slice(&generation.to_le_bytes());
    let check = crc32c::crc32c_append(crc_so_far, &b[..16]);
    b[16..20].copy_from_slice(&check.to_le_bytes());
    b
}

/// A buffered writer that keeps the CRC-32C of what it wrote.
struct CrcWriter<'a> {
    w: BufWriter<&'a File>,
    crc: u32,
    len: u64,
}

impl CrcWriter<'_> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.len += b.len() as u64;
        self.w.write_all(b)
    }
}

impl DurableImage {
    /// Whether an image (its state file) exists at `path`.
    pub fn exists(path: &Path) -> bool {
        state_path(path).exists()
    }

    /// Creates an image of `guest_pages` zero pages at `path`, holding no
    /// checkpoint. Refuses to replace anything already there.
    pub fn create(
        path: &Path,
        guest_pages: u64,
        durability: Durability,
    ) -> Result<DurableImage, ImageError> {
        if guest_pages == 0 || guest_pages > PFN_LIMIT {
            return Err(ImageError::GuestSize { pages: guest_pages });
        }
        let state = state_path(path);
        if state.exists() {
            return Err(ImageError::Exists {
                path: path.to_path_buf(),
            });
        }
        if path.exists() {
            return Err(ImageError::NotAnImage {
                path: path.to_path_buf(),
            });
        }
        // The state first: an image whose creation was cut short is then
        // one that holds nothing, which `open` finishes creating.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&state)
            .map_err(io_err(&state))?;
        f.write_all_at(&state_bytes(0, guest_pages, None), 0)
            .and_then(|()| f.sync_all())
            .and_then(|()| sync_dir(&state))
            .map_err(io_err(&state))?;
        drop(f);
        let (image, _) = DurableImage::open(path, durability)?;
        Ok(image)
    }

    /// Opens the image at `path`, recovering it from its journal.
    pub fn open(
        path: &Path,
        durability: Durability,
    ) -> Result<(DurableImage, Recovery), ImageError> {
        let state = state_path(path);
        if !state.exists() {
            return Err(if path.exists() {
                ImageError::NotAnImage {
                    path: path.to_path_buf(),
                }
            } else {
                ImageError::Missing {
                    path: path.to_path_buf(),
                }
            });
        }
        let state_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&state)
            .map_err(io_err(&state))?;
        let mut slots = [[0u8; STATE_LEN]; 2];
        for (k, slot) in slots.iter_mut().enumerate() {
            let mut got = 0;
            while got < STATE_LEN {
                match state_file.read_at(&mut slot[got..], k as u64 * STATE_SLOT + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_err(&state)(e)),
                }
            }
        }
        let (generation, guest_pages, holds) = slots
            .iter()
            .filter_map(|s| parse_state(s))
            .max_by_key(|s| s.0)
            .ok_or_else(|| ImageError::Damaged {
                path: state.clone(),
                reason: "neither state slot holds a valid record".into(),
            })?;
        let len = guest_pages * PAGE_SIZE as u64;
        let have = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let mut known_zero = false;
        if have < len {
            if holds.is_some() || generation != 0 {
                return Err(ImageError::Damaged {
                    path: path.to_path_buf(),
                    reason: format!("the image has {have} bytes, its guest needs {len}"),
                });
            }
            // Creation was cut short: finish it.
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io_err(path))?;
            f.set_len(len)
                .and_then(|()| f.sync_all())
                .and_then(|()| sync_dir(path))
                .map_err(io_err(path))?;
            known_zero = have == 0;
        }
        let image = ImageFile::open(path, guest_pages).map_err(io_err(path))?;
        let jpath = journal_path(path);
        let journal = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&jpath)
            .map_err(io_err(&jpath))?;
        let mut img = DurableImage {
            path: path.to_path_buf(),
            image,
            state_file,
            journal,
            durability,
            guest_pages,
            holds,
            generation,
            retired: true,
            journal_len: 0,
            known_zero,
            staging: Staging::default(),
            started: None,
            stats: CommitStats::default(),
        };
        let recovery = img.recover()?;
        Ok((img, recovery))
    }

    /// The image file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How commits are made durable.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// What committing has cost so far.
    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// Syncs the image and retires the journal now, whatever the
    /// durability's schedule (a clean shutdown).
    pub fn sync_all(&mut self) -> io::Result<()> {
        if !self.retired {
            self.retire()?;
        }
        Ok(())
    }

    /// Applies every committed record of the journal not yet retired, in
    /// order, and drops what follows.
    fn recover(&mut self) -> Result<Recovery, ImageError> {
        let jpath = journal_path(&self.path);
        let err = io_err(&jpath);
        let file_len = self.journal.metadata().map_err(&err)?.len();
        let mut rec = Recovery::default();
        let mut r = BufReader::with_capacity(1 << 20, &self.journal);
        let mut at = 0u64;
        while at < file_len {
            r.seek(SeekFrom::Start(at)).map_err(&err)?;
            let mut hb = [0u8; RECORD_HEAD_LEN];
            if file_len - at < RECORD_HEAD_LEN as u64 || r.read_exact(&mut hb).is_err() {
                break;
            }
            let Some(head) = RecordHead::from_bytes(&hb) else {
                break;
            };
            if head.commit.guest_pages != self.guest_pages
                || head.pages > self.guest_pages
                || head.zeroed > self.guest_pages
            {
                break;
            }
            let whole = head.len() <= file_len - at;
            if head.generation <= self.generation && whole {
                // Retired already: its pages are in the synced image.
                at += head.len();
                continue;
            }
            if head.generation != self.generation + 1 {
                break;
            }
            if !whole {
                rec.discarded = Some(Discarded {
                    stream_id: head.commit.stream_id,
                    seq: head.commit.seq,
                    bytes: file_len - at,
                });
                break;
            }
            // Pass 1: is it committed, and is every PFN in the guest?
            let mut crc = crc32c::crc32c(&hb);
            let mut entry = vec![0u8; RECORD_PAGE_LEN];
            let mut sound = true;
            for _ in 0..head.pages {
                r.read_exact(&mut entry).map_err(&err)?;
                crc = crc32c::crc32c_append(crc, &entry);
                sound &= u64_at(&entry, 0) < self.guest_pages;
            }
            let mut z = [0u8; 8];
            for _ in 0..head.zeroed {
                r.read_exact(&mut z).map_err(&err)?;
                crc = crc32c::crc32c_append(crc, &z);
                sound &= u64::from_le_bytes(z) < self.guest_pages;
            }
            let mut cb = [0u8; COMMIT_LEN];
            r.read_exact(&mut cb).map_err(&err)?;
            if !sound || cb != commit_bytes(head.generation, crc) {
                rec.discarded = Some(Discarded {
                    stream_id: head.commit.stream_id,
                    seq: head.commit.seq,
                    bytes: file_len - at,
                });
                break;
            }
            // Pass 2: apply.
            r.seek(SeekFrom::Start(at + RECORD_HEAD_LEN as u64))
                .map_err(&err)?;
            for _ in 0..head.pages {
                r.read_exact(&mut entry).map_err(&err)?;
                let pfn = u64_at(&entry, 0);
                self.image.page_mut(pfn).copy_from_slice(&entry[8..]);
            }
            for _ in 0..head.zeroed {
                r.read_exact(&mut z).map_err(&err)?;
                self.image.page_mut(u64::from_le_bytes(z)).fill(0);
            }
            rec.replayed.push(head.commit);
            rec.replayed_pages += head.pages + head.zeroed;
            self.generation = head.generation;
            self.holds = Some(head.commit);
            self.known_zero = false;
            self.retired = false;
            at += head.len();
        }
        drop(r);
        if !self.retired {
            self.retire().map_err(io_err(&self.path))?;
        }
        if file_len > 0 {
            self.journal
                .set_len(0)
                .and_then(|()| self.journal.sync_all())
                .map_err(&err)?;
        }
        Ok(rec)
    }

    /// Syncs the image, then records its state: the journal's records up
    /// to `generation` are no longer needed.
    fn retire(&mut self) -> io::Result<()> {
        let t = Instant::now();
        self.image.sync()?;
        let b = state_bytes(self.generation, self.guest_pages, self.holds.as_ref());
        self.state_file
            .write_all_at(&b, (self.generation % 2) * STATE_SLOT)?;
        self.state_file.sync_data()?;
        self.stats.syncs += 2;
        self.retired = true;
        self.journal_len = 0;
        self.stats.settle.record(t.elapsed());
        Ok(())
    }

    /// PFNs outside the staged set whose page in the image is not zero.
    fn nonzero_unstaged(&self) -> Vec<u64> {
        static ZERO: Page = [0u8; PAGE_SIZE];
        (0..self.guest_pages)
            .filter(|p| !self.staging.slot_of.contains_key(p) && self.image.page(*p) != &ZERO)
            .collect()
    }

    /// Writes the staged pages and `zeroed` as a journal record at `at`,
    /// with the syncs of the durability; returns its length.
    fn write_record(
        &mut self,
        at: u64,
        generation: u64,
        commit: &Commit,
        zeroed: &[u64],
    ) -> io::Result<u64> {
        let strict = self.durability == Durability::Journal;
        let head = RecordHead {
            generation,
            pages: self.staging.pfns.len() as u64,
            zeroed: zeroed.len() as u64,
            commit: *commit,
        };
        let mut file = &self.journal;
        file.seek(SeekFrom::Start(at))?;
        let mut w = CrcWriter {
            w: BufWriter::with_capacity(1 << 20, file),
            crc: 0,
            len: 0,
        };
        w.put(&head.to_bytes())?;
        for (k, &pfn) in self.staging.pfns.iter().enumerate() {
            w.put(&pfn.to_le_bytes())?;
            w.put(self.staging.slot(k as u32))?;
        }
        for z in zeroed {
            w.put(&z.to_le_bytes())?;
        }
        if strict {
            w.w.flush()?;
            self.journal.sync_data()?;
            self.stats.syncs += 1;
        }
        let c = commit_bytes(generation, w.crc);
        w.put(&c)?;
        w.w.flush()?;
        let len = w.len;
        drop(w);
        self.journal.sync_data()?;
        self.stats.syncs += 1;
        Ok(len)
    }
}

impl GuestMemory for DurableImage {
    fn pages(&self) -> u64 {
        self.guest_pages
    }

    fn page(&self, pfn: u64) -> &Page {
        if self.durability != Durability::InPlace {
            if let Some(&s) = self.staging.slot_of.get(&pfn) {
                return self.staging.slot(s);
            }
        }
        self.image.page(pfn)
    }

    fn page_mut(&mut self, pfn: u64) -> &mut Page {
        assert!(pfn < self.guest_pages, "pfn checked by the caller");
        if self.durability == Durability::InPlace {
            if let std::collections::hash_map::Entry::Vacant(e) = self.staging.slot_of.entry(pfn) {
                e.insert(0);
                self.staging.pfns.push(pfn);
            }
            return self.image.page_mut(pfn);
        }
        let current = self.image.page(pfn);
        self.staging.take(pfn, current)
    }

    fn begin_commit(&mut self, commit: &Commit) -> io::Result<()> {
        if commit.guest_pages != self.guest_pages {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a checkpoint of a {}-page guest cannot go to an image of {} pages",
                    commit.guest_pages, self.guest_pages
                ),
            ));
        }
        if self.durability == Durability::Journal && !self.retired {
            self.retire()?;
        }
        self.staging.clear();
        self.started = Some(Instant::now());
        Ok(())
    }

    fn end_commit(&mut self, commit: &Commit) -> io::Result<()> {
        // Checkpoint 0 of a stream describes the whole guest.
        let zeroed = if commit.seq == 0 && !self.known_zero {
            self.nonzero_unstaged()
        } else {
            Vec::new()
        };
        let generation = self.generation + 1;
        if self.durability == Durability::InPlace {
            for &z in &zeroed {
                self.image.page_mut(z).fill(0);
            }
            self.generation = generation;
            self.holds = Some(*commit);
            self.retire()?;
        } else {
            let at = match self.durability {
                Durability::Grouped { .. } => self.journal_len,
                _ => 0,
            };
            let len = self.write_record(at, generation, commit, &zeroed)?;
            // Committed: the pages may now reach the image.
            for (k, &pfn) in self.staging.pfns.iter().enumerate() {
                self.image
                    .page_mut(pfn)
                    .copy_from_slice(self.staging.slot(k as u32));
            }
            for &z in &zeroed {
                self.image.page_mut(z).fill(0);
            }
            self.generation = generation;
            self.holds = Some(*commit);
            self.retired = false;
            self.journal_len = at + len;
            self.stats.journal_bytes += len;
        }
        self.known_zero = false;
        self.stats.commits += 1;
        self.stats.pages += self.staging.pfns.len() as u64;
        self.stats.zeroed += zeroed.len() as u64;
        if let Some(t) = self.started.take() {
            self.stats.commit.record(t.elapsed());
        }
        self.staging.slot_of.clear();
        Ok(())
    }
}

impl Replica for DurableImage {
    fn holds(&self) -> Option<Commit> {
        self.holds
    }

    fn settle(&mut self) -> io::Result<()> {
        match self.durability {
            Durability::Journal if !self.retired => self.retire(),
            Durability::Grouped { retire_bytes }
                if !self.retired && self.journal_len >= retire_bytes =>
            {
                self.retire()
            }
            _ => Ok(()),
        }
    }
}

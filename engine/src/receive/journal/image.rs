//! [`DurableImage`]: the image file, committed through the journal in the
//! order of `docs/REPLICATION.md`, "Commit order", and recovered from it
//! on open.

use super::record::{self, Head, ReadError, RecordHead};
use super::state::State;
use super::{
    io_err, journal_path, state_path, CommitStats, Discarded, Durability, ImageError, Recovery,
};
use crate::page::PFN_LIMIT;
use crate::receive::memory::ImageFile;
use crate::receive::{Commit, GuestMemory, Replica, VerifiedCheckpoint};
use crate::stream::Digest;
use ckpt_simd::{Codec, Page, PAGE_SIZE};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A guest image file committed through a write-ahead journal of page
/// encodings.
///
/// It commits a verified checkpoint whole
/// ([`GuestMemory::commit_checkpoint`], which the [`crate::Receiver`]
/// calls); it has no page-by-page commit: [`GuestMemory::begin_commit`]
/// refuses, so [`GuestMemory::page_mut`] is never called.
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
    /// The record being written, gathered before it goes to the journal.
    buf: Vec<u8>,
    /// Decodes the journal and fingerprints pages on recovery.
    codec: Codec,
    stats: CommitStats,
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
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
        let first = State {
            generation: 0,
            guest_pages,
            holds: None,
        };
        first
            .write(&f)
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
        let State {
            generation,
            guest_pages,
            holds,
        } = State::read(&state_file)
            .map_err(io_err(&state))?
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
            buf: Vec::new(),
            codec: Codec::best(),
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
    /// order, checks the digest of what the last one produced, and drops
    /// what follows.
    fn recover(&mut self) -> Result<Recovery, ImageError> {
        let jpath = journal_path(&self.path);
        let err = io_err(&jpath);
        let file_len = self.journal.metadata().map_err(&err)?.len();
        let mut rec = Recovery::default();
        let mut r = BufReader::with_capacity(1 << 20, &self.journal);
        // The PFNs of the last record applied, in order: its digest's.
        let mut pfns = Vec::new();
        let mut at = 0u64;
        while at < file_len {
            let head = match record::read_head(&mut r, at, file_len).map_err(&err)? {
                Head::Record(h) => h,
                Head::WholePages { generation, len } => {
                    if generation > self.generation {
                        return Err(ImageError::BadRecord {
                            path: jpath.clone(),
                            record: at,
                            offset: at,
                            fault: super::RecordFault::WholePages,
                        });
                    }
                    // Retired already: skip it when it is whole.
                    match len.filter(|&l| l <= file_len - at) {
                        Some(l) => {
                            at += l;
                            continue;
                        }
                        None => break,
                    }
                }
                Head::End => break,
            };
            let Some(len) = head.len(self.guest_pages) else {
                break;
            };
            let whole = len <= file_len - at;
            if head.generation <= self.generation && whole {
                // Retired already: its pages are in the synced image.
                at += len;
                continue;
            }
            if head.generation > self.generation + 1 {
                // A record is written only once the state of the one
                // before it is durable (or its record precedes it here):
                // the state's newest slot was lost, and the image may
                // hold more than the older slot says.
                return Err(ImageError::Damaged {
                    path: state_path(&self.path),
                    reason: format!(
                        "the journal holds checkpoint generation {}, the state only {}",
                        head.generation, self.generation
                    ),
                });
            }
            if head.generation != self.generation + 1 {
                break;
            }
            if !whole || !record::committed(&mut r, at, &head).map_err(&err)? {
                rec.discarded = Some(Discarded {
                    stream_id: head.commit.stream_id,
                    seq: head.commit.seq,
                    bytes: file_len - at,
                });
                break;
            }
            let bad = |e| match e {
                ReadError::Io(e) => err(e),
                ReadError::Fault { offset, fault } => ImageError::BadRecord {
                    path: jpath.clone(),
                    record: at,
                    offset,
                    fault,
                },
            };
            // Committed: check every entry before applying any.
            record::for_each_entry(&mut r, at, &head, |_, _| Ok(())).map_err(bad)?;
            record::for_each_zeroed(&mut r, at, &head, |_| {}).map_err(bad)?;
            pfns.clear();
            let (image, codec) = (&mut self.image, self.codec);
            record::for_each_entry(&mut r, at, &head, |pfn, encoding| {
                pfns.push(pfn);
                codec
                    .decode(encoding, image.page_mut(pfn))
                    .map(|_| ())
                    .map_err(|source| super::RecordFault::Encoding { source })
            })
            .map_err(bad)?;
            record::for_each_zeroed(&mut r, at, &head, |pfn| image.page_mut(pfn).fill(0))
                .map_err(bad)?;
            rec.replayed.push(head.commit);
            rec.replayed_pages += head.pages + head.zeroed;
            self.generation = head.generation;
            self.holds = Some(head.commit);
            self.known_zero = false;
            self.retired = false;
            at += len;
        }
        drop(r);
        if let Some(last) = rec.replayed.last() {
            // Earlier records' pages were rebuilt by the same rules; the
            // last one's digest covers every page it carried.
            let mut digest = Digest::new();
            for &pfn in &pfns {
                digest.add_page(&self.codec, pfn, self.image.page(pfn));
            }
            let computed = digest.finish();
            if computed != last.digest {
                return Err(ImageError::DigestMismatch {
                    path: self.path.clone(),
                    seq: last.seq,
                    expected: last.digest,
                    computed,
                });
            }
            rec.digest_pages = pfns.len() as u64;
        }
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
        State {
            generation: self.generation,
            guest_pages: self.guest_pages,
            holds: self.holds,
        }
        .write(&self.state_file)?;
        self.stats.syncs += 2;
        self.retired = true;
        self.journal_len = 0;
        self.stats.settle.record(t.elapsed());
        Ok(())
    }

    /// PFNs outside `carried` whose page in the image is not zero.
    fn nonzero_outside(&self, carried: &[u64]) -> Vec<u64> {
        static ZERO: Page = [0u8; PAGE_SIZE];
        let mut bits = vec![0u64; self.guest_pages.div_ceil(64) as usize];
        for &p in carried {
            bits[(p / 64) as usize] |= 1 << (p % 64);
        }
        (0..self.guest_pages)
            .filter(|&p| bits[(p / 64) as usize] & (1 << (p % 64)) == 0)
            .filter(|&p| self.image.page(p) != &ZERO)
            .collect()
    }

    /// Writes the checkpoint's pages and zeroes `zeroed` in the image.
    fn apply(&mut self, checkpoint: &VerifiedCheckpoint<'_>, zeroed: &[u64]) -> io::Result<()> {
        let codec = checkpoint.codec();
        for (pfn, page) in checkpoint.pages() {
            page.apply(codec, self.image.page_mut(pfn))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        for &z in zeroed {
            self.image.page_mut(z).fill(0);
        }
        Ok(())
    }
}

fn page_by_page() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a DurableImage commits whole verified checkpoints (GuestMemory::commit_checkpoint), not page by page",
    )
}

impl GuestMemory for DurableImage {
    fn pages(&self) -> u64 {
        self.guest_pages
    }

    fn page(&self, pfn: u64) -> &Page {
        self.image.page(pfn)
    }

    fn page_mut(&mut self, _pfn: u64) -> &mut Page {
        // Only called between begin_commit and end_commit, and
        // begin_commit always refuses.
        panic!("{}", page_by_page())
    }

    fn begin_commit(&mut self, _commit: &Commit) -> io::Result<()> {
        Err(page_by_page())
    }

    fn end_commit(&mut self, _commit: &Commit) -> io::Result<()> {
        Err(page_by_page())
    }

    fn commit_checkpoint(&mut self, checkpoint: &VerifiedCheckpoint<'_>) -> io::Result<()> {
        let commit = *checkpoint.commit();
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
        let started = Instant::now();
        // Checkpoint 0 of a stream describes the whole guest.
        let zeroed = if commit.seq == 0 && !self.known_zero {
            self.nonzero_outside(checkpoint.pfns())
        } else {
            Vec::new()
        };
        let generation = self.generation + 1;
        if self.durability == Durability::InPlace {
            let t = Instant::now();
            self.apply(checkpoint, &zeroed)?;
            self.stats.apply.record(t.elapsed());
            self.generation = generation;
            self.holds = Some(commit);
            self.retire()?;
        } else {
            let at = match self.durability {
                Durability::Grouped { .. } => self.journal_len,
                _ => 0,
            };
            let head = RecordHead {
                generation,
                pages: checkpoint.len() as u64,
                zeroed: zeroed.len() as u64,
                encoded: checkpoint.encoded_bytes(),
                commit,
            };
            let strict = self.durability == Durability::Journal;
            let (len, syncs) = record::write(
                &self.journal,
                &mut self.buf,
                at,
                &head,
                checkpoint,
                &zeroed,
                strict,
            )?;
            // Committed: what the image holds from here on, whatever
            // happens to the apply.
            self.stats.journal.record(started.elapsed());
            self.stats.syncs += syncs;
            self.stats.journal_bytes += len;
            self.generation = generation;
            self.holds = Some(commit);
            self.retired = false;
            self.journal_len = at + len;
            let t = Instant::now();
            self.apply(checkpoint, &zeroed)?;
            self.stats.apply.record(t.elapsed());
        }
        self.known_zero = false;
        self.stats.commits += 1;
        self.stats.pages += checkpoint.len() as u64;
        self.stats.zeroed += zeroed.len() as u64;
        self.stats.commit.record(started.elapsed());
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

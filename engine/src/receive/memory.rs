//! Guest memory on the backup: where a receiver commits checkpoints.
//!
//! [`SparseMemory`] keeps only pages ever written (unwritten pages read as
//! zeros); [`ImageFile`] maps a raw image file (page `p` at offset
//! `p * 4096`) into memory. A memory sees each verified checkpoint as one
//! commit, [`GuestMemory::commit_checkpoint`]: by default
//! [`GuestMemory::begin_commit`], its pages decoded straight into
//! [`GuestMemory::page_mut`], [`GuestMemory::end_commit`]; a memory that
//! wants the page encodings themselves (a journal) takes them whole.

use super::VerifiedCheckpoint;
use crate::page::PageBuf;
use ckpt_simd::{Page, PAGE_SIZE};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// A checkpoint being committed: which stream and checkpoint the memory
/// will hold once the commit ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The stream's identity (its header's id).
    pub stream_id: u128,
    /// Pages of the stream's guest.
    pub guest_pages: u64,
    /// The checkpoint's sequence number.
    pub seq: u64,
    /// The checkpoint's page digest.
    pub digest: u128,
}

/// Memory a receiver commits checkpoints to.
pub trait GuestMemory {
    /// Pages of the guest; PFNs at or past it are rejected before any access.
    fn pages(&self) -> u64;
    /// The page at `pfn` (< `pages()`).
    fn page(&self, pfn: u64) -> &Page;
    /// The page at `pfn` (< `pages()`), for writing; only called between
    /// [`GuestMemory::begin_commit`] and [`GuestMemory::end_commit`].
    fn page_mut(&mut self, pfn: u64) -> &mut Page;
    /// The PFNs of the next PFN batch (`docs/FORMAT.md` §4) that carry
    /// data, in stream order, given before any of them is written. Memory
    /// that allocates by 2 MiB extent uses it to see which extents a batch
    /// fills in order; other memory ignores it.
    fn begin_batch(&mut self, _pfns: &[u64]) {}
    /// A verified checkpoint is about to be written.
    fn begin_commit(&mut self, _commit: &Commit) -> io::Result<()> {
        Ok(())
    }
    /// Every page of the checkpoint has been written: make it the one the
    /// memory holds (durably, where that means anything).
    fn end_commit(&mut self, _commit: &Commit) -> io::Result<()> {
        Ok(())
    }
    /// Commits a verified checkpoint: the receiver's one call per
    /// checkpoint. The default writes it page by page
    /// ([`VerifiedCheckpoint::write_pages`]); a memory that keeps the
    /// encodings (a journal) implements it instead, and then need not
    /// support the page-by-page calls.
    fn commit_checkpoint(&mut self, checkpoint: &VerifiedCheckpoint<'_>) -> io::Result<()> {
        checkpoint.write_pages(self)
    }
}

/// In-memory guest memory that stores only pages ever written.
///
/// As a [`crate::Replica`], it follows the rule of `docs/REPLICATION.md`
/// that checkpoint 0 of a stream describes the whole guest: committing it
/// drops every page the earlier stream left.
pub struct SparseMemory {
    pages: u64,
    map: HashMap<u64, Box<PageBuf>>,
    /// The checkpoint last committed.
    pub(super) holds: Option<Commit>,
}

const ZERO: Page = [0u8; PAGE_SIZE];

impl SparseMemory {
    /// A guest of `pages` zero pages.
    pub fn new(pages: u64) -> SparseMemory {
        SparseMemory {
            pages,
            map: HashMap::new(),
            holds: None,
        }
    }

    /// Pages that hold storage (ever written).
    pub fn resident(&self) -> usize {
        self.map.len()
    }
}

impl GuestMemory for SparseMemory {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn page(&self, pfn: u64) -> &Page {
        self.map.get(&pfn).map_or(&ZERO, |p| &p.0)
    }

    fn page_mut(&mut self, pfn: u64) -> &mut Page {
        assert!(pfn < self.pages, "pfn checked by the caller");
        &mut self
            .map
            .entry(pfn)
            .or_insert_with(|| Box::new(PageBuf([0; PAGE_SIZE])))
            .0
    }

    fn begin_commit(&mut self, commit: &Commit) -> io::Result<()> {
        if commit.seq == 0 {
            // A stream's first checkpoint describes the whole guest.
            self.map.clear();
        }
        Ok(())
    }

    fn end_commit(&mut self, commit: &Commit) -> io::Result<()> {
        self.holds = Some(*commit);
        Ok(())
    }
}

/// A raw guest image file, memory-mapped: page `p` at offset `p * 4096`.
///
/// Every block of the file is allocated on disk when it is opened (before
/// it is mapped), so that a full disk is an I/O error naming the file there
/// and then, never a SIGBUS when a commit writes to a page that has no
/// block yet. On copy-on-write file systems (btrfs, ZFS) an allocated block
/// does not guarantee room for its rewrite; see SECURITY.md.
pub struct ImageFile {
    map: memmap2::MmapMut,
    pages: u64,
    path: std::path::PathBuf,
    /// Whether a page was written since the last flush.
    dirty: bool,
}

/// An I/O error that names the image file.
fn image_error(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl ImageFile {
    /// Opens (creating if needed) an image of `pages` pages, growing the file
    /// to that size; existing contents are kept. The caller decides the size
    /// (the backup's own configuration, never a stream's claim).
    pub fn open(path: &Path, pages: u64) -> io::Result<ImageFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| image_error(path, e))?;
        ImageFile::map(file, path, pages)
    }

    /// Creates a new image of `pages` zero pages; an existing file is an
    /// error.
    pub fn create(path: &Path, pages: u64) -> io::Result<ImageFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| image_error(path, e))?;
        ImageFile::map(file, path, pages).inspect_err(|_| drop(std::fs::remove_file(path)))
    }

    /// Opens an existing image at its own size, which must be a whole
    /// number of pages.
    pub fn open_existing(path: &Path) -> io::Result<ImageFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| image_error(path, e))?;
        let len = file.metadata().map_err(|e| image_error(path, e))?.len();
        if len == 0 || len % PAGE_SIZE as u64 != 0 {
            return Err(image_error(
                path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("an image of {len} bytes is not a whole number of pages"),
                ),
            ));
        }
        ImageFile::map(file, path, len / PAGE_SIZE as u64)
    }

    /// The size of the image at `path` in pages, if it exists.
    pub fn existing_pages(path: &Path) -> io::Result<Option<u64>> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(Some(m.len() / PAGE_SIZE as u64)),
            Ok(_) => Err(image_error(
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(image_error(path, e)),
        }
    }

    fn map(file: File, path: &Path, pages: u64) -> io::Result<ImageFile> {
        let invalid =
            |msg: &str| image_error(path, io::Error::new(io::ErrorKind::InvalidInput, msg));
        if pages == 0 || pages > crate::page::PFN_LIMIT {
            return Err(invalid("an image holds 1 to 2^28 pages"));
        }
        let len = pages * PAGE_SIZE as u64;
        if file.metadata().map_err(|e| image_error(path, e))?.len() < len {
            file.set_len(len).map_err(|e| image_error(path, e))?;
        }
        allocate(&file, len).map_err(|e| image_error(path, e))?;
        // SAFETY: the mapping is of a file this process opened for writing,
        // at least `len` bytes long, with every block allocated; the
        // project's contract (README, SECURITY.md) is that nothing else
        // modifies or truncates the image while a restore runs. Every access
        // goes through bounds-checked slices of the mapping.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(len as usize)
                .map_mut(&file)
                .map_err(|e| image_error(path, e))?
        };
        Ok(ImageFile {
            map,
            pages,
            path: path.to_path_buf(),
            dirty: false,
        })
    }
}

/// Allocates every block of the file's first `len` bytes (holes only;
/// existing data is kept).
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn allocate(file: &File, len: u64) -> io::Result<()> {
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    nix::fcntl::posix_fallocate(file, 0, len).map_err(io::Error::from)
}

/// Without `posix_fallocate`, the file stays sparse: a full disk may end a
/// restore with SIGBUS (SECURITY.md).
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn allocate(_file: &File, _len: u64) -> io::Result<()> {
    Ok(())
}

impl GuestMemory for ImageFile {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn page(&self, pfn: u64) -> &Page {
        let at = pfn as usize * PAGE_SIZE;
        self.map[at..at + PAGE_SIZE]
            .try_into()
            .expect("a page of the mapping")
    }

    fn page_mut(&mut self, pfn: u64) -> &mut Page {
        self.dirty = true;
        let at = pfn as usize * PAGE_SIZE;
        (&mut self.map[at..at + PAGE_SIZE])
            .try_into()
            .expect("a page of the mapping")
    }

    fn end_commit(&mut self, _commit: &Commit) -> io::Result<()> {
        // A checkpoint that wrote nothing has nothing to make durable.
        if std::mem::take(&mut self.dirty) {
            self.map.flush().map_err(|e| image_error(&self.path, e))?;
        }
        Ok(())
    }
}

impl ImageFile {
    /// Writes the mapping's changed pages to the file and waits for them.
    pub(super) fn sync(&self) -> io::Result<()> {
        self.map.flush()
    }
}

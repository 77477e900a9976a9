//! The native C API: a sender that writes a checkpoint stream
//! (`docs/STREAM.md`) to a file descriptor through the engine's send
//! pipeline, and a receiver that reads one from a file descriptor and
//! applies each checkpoint, after verifying it whole (`docs/STREAM.md`,
//! "Receiver rules"), to memory the caller provides or to memory of its own.
//!
//! Both take a duplicate of the caller's descriptor: the caller keeps its
//! own and closes it when it likes. Functions return `CKPT_OK` or a negative
//! `CKPT_ERR_*` code; `ckpt_last_error` gives the message.

use crate::{
    guard, set_error, CKPT_ERR_INTERNAL, CKPT_ERR_INVALID, CKPT_ERR_IO, CKPT_ERR_ORDER,
    CKPT_ERR_PAGE, CKPT_ERR_STREAM, CKPT_ERR_TRUNCATED, CKPT_OK,
};
use ckpt_engine::stream::StreamError;
use ckpt_engine::{
    CompressOptions, GuestMemory, Limits, PageType, ReceiveError, Receiver, SendError, Sender,
    SenderOptions, SparseMemory,
};
use ckpt_simd::{Codec, Page, PAGE_SIZE};
use std::ffi::{c_int, c_uint, c_void};
use std::fs::File;
use std::io::BufWriter;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::NonNull;

/// Page type of an ordinary page (delta-compressed against the cache).
pub const CKPT_PAGE_NORMAL: u32 = 0x0;
/// Page type of a level-1 page table (levels 2..4 are 0x2..0x4); sent
/// whole, never cached.
pub const CKPT_PAGE_L1TAB: u32 = 0x1;
/// Added to a page-table type (0x1..0x4) when the table is pinned.
pub const CKPT_PAGE_PINNED: u32 = 0x8;
/// Page type of a broken page: an entry without data.
pub const CKPT_PAGE_BROKEN: u32 = 0xD;
/// Page type of a page to allocate only: an entry without data.
pub const CKPT_PAGE_XALLOC: u32 = 0xE;
/// Page type of an invalid page: an entry without data.
pub const CKPT_PAGE_XTAB: u32 = 0xF;

/// Duplicates `fd` into a `File` of our own.
///
/// # Safety
/// `fd` is an open descriptor for the duration of this call.
unsafe fn dup_fd(fd: c_int) -> Result<File, std::io::Error> {
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(9)); // EBADF
    }
    // SAFETY: by the contract `fd` is open while we duplicate it; the
    // duplicate is ours alone.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd as RawFd) };
    Ok(File::from(borrowed.try_clone_to_owned()?))
}

fn engine_status(e: &SendError) -> c_int {
    match e {
        SendError::PfnOutOfRange { .. }
        | SendError::DuplicatePfn { .. }
        | SendError::NoPageData { .. }
        | SendError::MissingPageData { .. }
        | SendError::Limit { .. } => CKPT_ERR_PAGE,
        SendError::Sequence(_) | SendError::Finished => CKPT_ERR_ORDER,
        SendError::Write(_) => CKPT_ERR_IO,
        _ => CKPT_ERR_INTERNAL,
    }
}

fn receive_status(e: &ReceiveError) -> c_int {
    match e {
        ReceiveError::Stream(StreamError::Io { .. }) | ReceiveError::Commit { .. } => CKPT_ERR_IO,
        ReceiveError::Stream(StreamError::Truncated { .. }) => CKPT_ERR_TRUNCATED,
        _ => CKPT_ERR_STREAM,
    }
}

/// Where a sender is in its stream.
#[derive(Default)]
struct Progress {
    /// Checkpoints ended so far.
    ended: u64,
    /// A checkpoint is open.
    open: bool,
}

/// A stream sender (opaque).
#[allow(non_camel_case_types)]
pub struct ckpt_sender {
    inner: Option<Sender<BufWriter<File>>>,
    progress: Progress,
    /// Set once a call failed: every later call fails with CKPT_ERR_ORDER.
    failed: bool,
}

/// Starts a sender writing a checkpoint stream for a guest of `guest_pages`
/// pages (at most 2^28) to a duplicate of `fd`; the stream header is written
/// at once. `threads` is the number of compression threads (0: one per
/// core). The first checkpoint is sent whole (uncompressed, as Remus sends
/// its first); every later one is delta-compressed against an 8192-page
/// cache. Returns NULL on failure (see `ckpt_last_error`).
///
/// A writer to a pipe or socket whose reader may go away should ignore
/// SIGPIPE, as for any write.
///
/// # Safety
/// `fd` is an open descriptor for the duration of this call.
#[no_mangle]
pub unsafe extern "C" fn ckpt_sender_new(
    fd: c_int,
    guest_pages: u64,
    threads: c_uint,
) -> *mut ckpt_sender {
    guard(std::ptr::null_mut(), || {
        if guest_pages == 0 || guest_pages > ckpt_engine::page::PFN_LIMIT {
            set_error(format!(
                "ckpt_sender_new: guest of {guest_pages} pages (1 to 2^28)"
            ));
            return std::ptr::null_mut();
        }
        // SAFETY: passed on from this function's contract.
        let file = match unsafe { dup_fd(fd) } {
            Ok(f) => f,
            Err(e) => {
                set_error(format!("ckpt_sender_new: descriptor {fd}: {e}"));
                return std::ptr::null_mut();
            }
        };
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        let opts = SenderOptions {
            compress: CompressOptions {
                cache_pages: 8192,
                threads,
                pin_threads: false,
                ..CompressOptions::default()
            },
            ring_pages: 8192,
            ..SenderOptions::new(guest_pages)
        };
        let out = BufWriter::with_capacity(1 << 20, file);
        match Sender::new(out, Codec::best(), &opts) {
            Ok(s) => Box::into_raw(Box::new(ckpt_sender {
                inner: Some(s),
                progress: Progress::default(),
                failed: false,
            })),
            Err(e) => {
                set_error(format!("ckpt_sender_new: {e}"));
                std::ptr::null_mut()
            }
        }
    })
}

/// Runs `f` on a live sender, turning its error into a status and stopping
/// the sender after one.
///
/// # Safety
/// `s` is NULL or a live sender used by no other call at the same time.
unsafe fn with_sender(
    s: *mut ckpt_sender,
    what: &str,
    f: impl FnOnce(&mut Sender<BufWriter<File>>, &mut Progress) -> Result<(), SendError>,
) -> c_int {
    // SAFETY: by the contract, a non-NULL `s` is a live sender only this
    // call uses.
    let Some(s) = (unsafe { s.as_mut() }) else {
        set_error(format!("{what}: NULL sender"));
        return CKPT_ERR_INVALID;
    };
    if s.failed {
        set_error(format!("{what}: the sender stopped after an earlier error"));
        return CKPT_ERR_ORDER;
    }
    let Some(inner) = s.inner.as_mut() else {
        set_error(format!("{what}: the sender has finished"));
        return CKPT_ERR_ORDER;
    };
    let progress = &mut s.progress;
    // A panic leaves the pipeline's state unknown: it ends the stream.
    let status = guard(CKPT_ERR_INTERNAL, || match f(inner, progress) {
        Ok(()) => CKPT_OK,
        Err(e) => {
            set_error(format!("{what}: {e}"));
            engine_status(&e)
        }
    });
    // A bad argument or a call out of order is refused before anything
    // changes; a write error or a lost thread ends the stream.
    s.failed = matches!(status, CKPT_ERR_IO | CKPT_ERR_INTERNAL);
    status
}

/// Begins a checkpoint (the guest has just been paused).
///
/// # Safety
/// `s` is NULL or a live sender used by no other call at the same time.
#[no_mangle]
pub unsafe extern "C" fn ckpt_sender_begin_checkpoint(s: *mut ckpt_sender) -> c_int {
    // SAFETY: passed on from this function's contract.
    unsafe {
        with_sender(s, "ckpt_sender_begin_checkpoint", |tx, at| {
            tx.begin_checkpoint()?;
            at.open = true;
            Ok(())
        })
    }
}

/// Adds one page of the current checkpoint, in send order: `page_type` is a
/// `CKPT_PAGE_*` value; `page` is its 4096 bytes for normal and page-table
/// pages (copied before the call returns) and NULL for the types without
/// data. A PFN may appear once per checkpoint. `CKPT_ERR_PAGE` for a PFN out
/// of range or page data that does not match the type (the page is not
/// added and the sender goes on); `CKPT_ERR_INVALID` for a type with no
/// meaning.
///
/// # Safety
/// `s` is NULL or a live sender used by no other call at the same time;
/// `page` is NULL or points to 4096 readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ckpt_sender_add_page(
    s: *mut ckpt_sender,
    pfn: u64,
    page_type: u32,
    page: *const c_void,
) -> c_int {
    let Some(ty) = u8::try_from(page_type).ok().and_then(PageType::from_code) else {
        set_error(format!(
            "ckpt_sender_add_page: page type {page_type:#x} has no meaning"
        ));
        return CKPT_ERR_INVALID;
    };
    // SAFETY: by the contract a non-NULL `page` points to 4096 readable
    // bytes; Page has alignment 1.
    let page = unsafe { (page as *const Page).as_ref() };
    // SAFETY: passed on from this function's contract.
    unsafe { with_sender(s, "ckpt_sender_add_page", |tx, _| tx.page(pfn, ty, page)) }
}

/// Ends the current checkpoint. It is compressed and written after this
/// returns, while the guest runs; `ckpt_sender_sync` waits for that.
///
/// # Safety
/// `s` is NULL or a live sender used by no other call at the same time.
#[no_mangle]
pub unsafe extern "C" fn ckpt_sender_end_checkpoint(s: *mut ckpt_sender) -> c_int {
    // SAFETY: passed on from this function's contract.
    unsafe {
        with_sender(s, "ckpt_sender_end_checkpoint", |tx, at| {
            if !at.open {
                return Err(SendError::Sequence("end_checkpoint outside a checkpoint"));
            }
            if at.ended == 0 {
                // Remus sends its first checkpoint whole and switches the
                // receiver to compressed checkpoints with it.
                tx.enable_compression()?;
            }
            tx.end_checkpoint()?;
            at.open = false;
            at.ended += 1;
            Ok(())
        })
    }
}

/// Waits until every checkpoint ended so far is compressed and written to
/// the descriptor (a Remus primary then waits for the backup's
/// acknowledgement before releasing the guest's network output).
///
/// # Safety
/// `s` is NULL or a live sender used by no other call at the same time.
#[no_mangle]
pub unsafe extern "C" fn ckpt_sender_sync(s: *mut ckpt_sender) -> c_int {
    // SAFETY: passed on from this function's contract.
    unsafe { with_sender(s, "ckpt_sender_sync", |tx, _| tx.sync()) }
}

/// Writes the end of the stream, waits until everything is written, closes
/// the sender's duplicate of the descriptor and frees the sender (also on
/// error). A checkpoint still open is an error: nothing more is written.
///
/// # Safety
/// `s` is NULL or a live sender used by no other call at the same time; it
/// is freed by this call.
#[no_mangle]
pub unsafe extern "C" fn ckpt_sender_finish(s: *mut ckpt_sender) -> c_int {
    if s.is_null() {
        set_error("ckpt_sender_finish: NULL sender");
        return CKPT_ERR_INVALID;
    }
    // SAFETY: by the contract `s` came from ckpt_sender_new and is freed only
    // here or in ckpt_sender_free, once.
    let mut s = unsafe { Box::from_raw(s) };
    guard(CKPT_ERR_INTERNAL, move || {
        let Some(inner) = s.inner.take() else {
            set_error("ckpt_sender_finish: the sender has finished");
            return CKPT_ERR_ORDER;
        };
        if s.failed {
            set_error("ckpt_sender_finish: the sender stopped after an earlier error");
            return CKPT_ERR_ORDER;
        }
        match inner.finish() {
            Ok((out, _, _)) => match out.into_inner() {
                Ok(_file) => CKPT_OK,
                Err(e) => {
                    set_error(format!("ckpt_sender_finish: {}", e.error()));
                    CKPT_ERR_IO
                }
            },
            Err(e) => {
                set_error(format!("ckpt_sender_finish: {e}"));
                engine_status(&e)
            }
        }
    })
}

/// Frees a sender without ending the stream (a receiver sees it cut off
/// after the last checkpoint written). NULL is ignored.
///
/// # Safety
/// `s` is NULL or a live sender used by no other call at the same time; it
/// is freed by this call.
#[no_mangle]
pub unsafe extern "C" fn ckpt_sender_free(s: *mut ckpt_sender) {
    if s.is_null() {
        return;
    }
    // SAFETY: as in ckpt_sender_finish.
    let s = unsafe { Box::from_raw(s) };
    guard((), move || drop(s))
}

/// Memory the caller lent the receiver: `pages` pages at `base`.
struct CallerMemory {
    base: NonNull<u8>,
    pages: u64,
}

impl GuestMemory for CallerMemory {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn page(&self, pfn: u64) -> &Page {
        assert!(pfn < self.pages, "pfn checked by the receiver");
        // SAFETY: ckpt_receiver_new's contract: `base` points to `pages`
        // pages that only the receiver touches while a call runs; pfn is
        // inside, and Page has alignment 1.
        unsafe { &*(self.base.as_ptr().add(pfn as usize * PAGE_SIZE) as *const Page) }
    }

    fn page_mut(&mut self, pfn: u64) -> &mut Page {
        assert!(pfn < self.pages, "pfn checked by the receiver");
        // SAFETY: as in `page`; `&mut self` makes this the only reference.
        unsafe { &mut *(self.base.as_ptr().add(pfn as usize * PAGE_SIZE) as *mut Page) }
    }
}

enum Memory {
    Caller(CallerMemory),
    Own(SparseMemory),
}

impl Memory {
    fn get(&mut self) -> &mut dyn GuestMemory {
        match self {
            Memory::Caller(m) => m,
            Memory::Own(m) => m,
        }
    }
}

/// A stream receiver (opaque).
#[allow(non_camel_case_types)]
pub struct ckpt_receiver {
    rx: Receiver<File>,
    memory: Memory,
    /// Set once a call failed: every later call fails with CKPT_ERR_ORDER.
    failed: bool,
}

/// What one applied checkpoint held.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ckpt_checkpoint_info {
    /// Sequence number (0 for the first checkpoint of the stream).
    pub seq: u64,
    /// PFN entries.
    pub entries: u64,
    /// Pages written to memory (entries that carry data).
    pub data_pages: u64,
    /// Pages that came whole.
    pub full_pages: u64,
    /// Pages that had not changed.
    pub empty_pages: u64,
    /// Pages that came as deltas.
    pub delta_pages: u64,
    /// Bytes of the checkpoint in the stream, framing included.
    pub frame_bytes: u64,
    /// 1 when the checkpoint was compressed, else 0.
    pub compressed: c_int,
}

/// Starts a receiver on a duplicate of `fd` and reads the stream header
/// (blocking until it arrives). With `memory` non-NULL, checkpoints are
/// applied to the caller's `memory_pages` pages there (page `p` at byte
/// `p * 4096`), which must cover the guest the stream is for; with `memory`
/// NULL, the receiver keeps the guest's memory itself (`memory_pages` is not
/// used) and `ckpt_receiver_read_page` reads it. Returns NULL on failure
/// (see `ckpt_last_error`).
///
/// # Safety
/// `fd` is an open descriptor for the duration of this call. A non-NULL
/// `memory` points to `memory_pages * 4096` readable and writable bytes that
/// stay valid until `ckpt_receiver_free` and that nothing else reads or
/// writes while a call on this receiver runs.
#[no_mangle]
pub unsafe extern "C" fn ckpt_receiver_new(
    fd: c_int,
    memory: *mut c_void,
    memory_pages: u64,
) -> *mut ckpt_receiver {
    guard(std::ptr::null_mut(), || {
        // SAFETY: passed on from this function's contract.
        let file = match unsafe { dup_fd(fd) } {
            Ok(f) => f,
            Err(e) => {
                set_error(format!("ckpt_receiver_new: descriptor {fd}: {e}"));
                return std::ptr::null_mut();
            }
        };
        let rx = match Receiver::new(file, Limits::default(), Codec::best()) {
            Ok(rx) => rx,
            Err(e) => {
                set_error(format!("ckpt_receiver_new: {e}"));
                return std::ptr::null_mut();
            }
        };
        let guest = rx.guest_pages();
        let memory = match NonNull::new(memory as *mut u8) {
            None => Memory::Own(SparseMemory::new(guest)),
            Some(base) => {
                let fits = memory_pages
                    .checked_mul(PAGE_SIZE as u64)
                    .is_some_and(|b| b <= isize::MAX as u64);
                if memory_pages < guest || !fits {
                    set_error(format!(
                        "ckpt_receiver_new: the stream is for {guest} pages, memory has {memory_pages}"
                    ));
                    return std::ptr::null_mut();
                }
                Memory::Caller(CallerMemory {
                    base,
                    pages: memory_pages,
                })
            }
        };
        Box::into_raw(Box::new(ckpt_receiver {
            rx,
            memory,
            failed: false,
        }))
    })
}

/// Pages of the guest the stream is for; 0 for NULL.
///
/// # Safety
/// `r` is NULL or a live receiver used by no other call at the same time.
#[no_mangle]
pub unsafe extern "C" fn ckpt_receiver_guest_pages(r: *const ckpt_receiver) -> u64 {
    // SAFETY: by the contract a non-NULL `r` is a live receiver.
    unsafe { r.as_ref() }.map_or(0, |r| r.rx.guest_pages())
}

/// Receives the next checkpoint, verifies it whole and applies it to the
/// guest's memory. Returns 1 when a checkpoint was applied (`*info`, when
/// not NULL, describes it), 0 at the end of the stream, or a negative
/// `CKPT_ERR_*`; after an error memory holds the last checkpoint applied,
/// untouched, and the receiver takes no further checkpoints.
///
/// # Safety
/// `r` is NULL or a live receiver used by no other call at the same time;
/// `info` is NULL or points to a writable `ckpt_checkpoint_info`.
#[no_mangle]
pub unsafe extern "C" fn ckpt_receiver_next(
    r: *mut ckpt_receiver,
    info: *mut ckpt_checkpoint_info,
) -> c_int {
    // SAFETY: by the contract, a non-NULL `r` is a live receiver only this
    // call uses and a non-NULL `info` is writable.
    let (Some(r), info) = (unsafe { r.as_mut() }, unsafe { info.as_mut() }) else {
        set_error("ckpt_receiver_next: NULL receiver");
        return CKPT_ERR_INVALID;
    };
    guard(CKPT_ERR_INTERNAL, || {
        if r.failed {
            set_error("ckpt_receiver_next: the receiver stopped after an earlier error");
            return CKPT_ERR_ORDER;
        }
        match r.rx.next_checkpoint(r.memory.get()) {
            Ok(Some(cp)) => {
                if let Some(info) = info {
                    *info = ckpt_checkpoint_info {
                        seq: cp.seq,
                        entries: cp.entries,
                        data_pages: cp.data_pages,
                        full_pages: cp.full,
                        empty_pages: cp.empty,
                        delta_pages: cp.delta,
                        frame_bytes: cp.frame_bytes,
                        compressed: cp.compressed as c_int,
                    };
                }
                1
            }
            Ok(None) => 0,
            Err(e) => {
                r.failed = true;
                set_error(format!("ckpt_receiver_next: {e}"));
                receive_status(&e)
            }
        }
    })
}

/// Copies the page the guest's memory holds at `pfn` into the 4096 bytes at
/// `dest` (zeros for a page never written). `CKPT_ERR_PAGE` when `pfn` is
/// outside the guest.
///
/// # Safety
/// `r` is NULL or a live receiver used by no other call at the same time;
/// `dest` is NULL or points to 4096 writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ckpt_receiver_read_page(
    r: *mut ckpt_receiver,
    pfn: u64,
    dest: *mut c_void,
) -> c_int {
    // SAFETY: by the contract, non-NULL pointers are a live receiver only
    // this call uses and 4096 writable bytes (Page has alignment 1).
    let (Some(r), Some(dest)) = (unsafe { r.as_mut() }, unsafe {
        (dest as *mut Page).as_mut()
    }) else {
        set_error("ckpt_receiver_read_page: NULL receiver or destination");
        return CKPT_ERR_INVALID;
    };
    guard(CKPT_ERR_INTERNAL, || {
        if pfn >= r.rx.guest_pages() {
            set_error(format!(
                "ckpt_receiver_read_page: pfn {pfn:#x} is outside the guest ({} pages)",
                r.rx.guest_pages()
            ));
            return CKPT_ERR_PAGE;
        }
        dest.copy_from_slice(r.memory.get().page(pfn));
        CKPT_OK
    })
}

/// Frees a receiver and closes its duplicate of the descriptor. NULL is
/// ignored.
///
/// # Safety
/// `r` is NULL or a live receiver used by no other call at the same time;
/// it is freed by this call.
#[no_mangle]
pub unsafe extern "C" fn ckpt_receiver_free(r: *mut ckpt_receiver) {
    if r.is_null() {
        return;
    }
    // SAFETY: `r` came from ckpt_receiver_new and is freed only here, once.
    let r = unsafe { Box::from_raw(r) };
    guard((), move || drop(r))
}

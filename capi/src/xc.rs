//! The drop-in for libxc's checkpoint compression (`xc_compression_*`), with
//! the original's symbols, argument types and return values: the page
//! encoding of `FORMAT.md` §1, the 8192-page LRU delta cache of §2 and the
//! 8192-page staging buffer of §3, byte for byte the original's output.
//!
//! How it sits on the engine: pages are staged into the engine's
//! [`Compressor`]; the first `xc_compression_compress_pages` after staging
//! (or the `add_page` that fills the staging buffer) compresses the whole
//! staged batch at once, which makes every cache decision for the batch up
//! front, and keeps its encodings. Each `compress_pages` call then copies
//! whole page encodings into the caller's buffer. So a full output buffer
//! can never leave a cache slot claimed for a page that was not sent, the
//! original's defect (§2), and no page is ever split across two buffers.
//!
//! Departures from the original, all on inputs Xen's sender never produced:
//! `pfn == p2m_size` is rejected (the original let it through); NULL
//! pointers give an error value instead of a crash; pages added while
//! earlier encodings are still being handed out queue behind them instead of
//! overrunning the staging buffer; and `xc_compression_reset_pagebuf` with
//! pages not yet handed out also empties the delta cache (the engine has
//! already counted them as sent), so the next pages go FULL.

use crate::{guard, set_error};
use ckpt_engine::{ChunkView, CompressOptions, Compressor, PageType};
use ckpt_simd::{validate, Codec, Page, FULL_MARKER, MAX_ENCODED_LEN, PAGE_SIZE};
use std::ffi::{c_char, c_int, c_ulong};
use std::marker::PhantomData;

/// Pages in the original's delta cache (32 MiB).
pub const CKPT_XC_CACHE_PAGES: usize = 8192;
/// Pages in the original's staging buffer: `xc_compression_add_page`
/// returns -1 when it holds this many.
pub const CKPT_XC_STAGING_PAGES: usize = 8192;
/// Room an output buffer needs for a page sent as a delta (every word
/// changed: 4096 bytes and 9 run markers). A page whose cached copy exists is
/// placed only while this much room is left, and a FULL page only while
/// 4097 bytes are, as the original did; a buffer of at least this many bytes
/// always takes at least one page.
pub const CKPT_XC_WORST_PAGE_BYTES: usize = 4105;
/// Room an output buffer needs for a page sent FULL (marker and page).
pub const CKPT_XC_FULL_PAGE_BYTES: usize = 4097;

const _: () = assert!(CKPT_XC_WORST_PAGE_BYTES == MAX_ENCODED_LEN);
const _: () = assert!(CKPT_XC_FULL_PAGE_BYTES == ckpt_simd::FULL_ENCODED_LEN);

/// libxc's interface handle (`struct xc_interface_core`). Opaque: the
/// drop-in never looks at it, and NULL is accepted wherever it is taken.
#[allow(non_camel_case_types)]
pub struct xc_interface_core {
    _opaque: [u8; 0],
    _not_send: PhantomData<*mut u8>,
}

/// libxc's name for a pointer to its interface handle's type.
#[allow(non_camel_case_types)]
pub type xc_interface = xc_interface_core;

/// A guest page frame number (`unsigned long`, as on x86).
#[allow(non_camel_case_types)]
pub type xen_pfn_t = c_ulong;

/// A compression context (libxc's `struct compression_ctx`): the delta cache,
/// the staged pages and the encodings not yet handed out.
#[allow(non_camel_case_types)]
pub struct compression_ctx {
    compressor: Compressor,
    p2m_size: u64,
    /// Pages staged into the compressor since it last compressed.
    staged: usize,
    /// Encodings of compressed pages, in staging order.
    encoded: Vec<u8>,
    /// End offset in `encoded` of each page's encoding.
    ends: Vec<usize>,
    /// Pages of `ends` already handed out.
    handed: usize,
}

/// libxc's name for a compression context.
#[allow(non_camel_case_types)]
pub type comp_ctx = compression_ctx;

/// `unsigned long` as u64: the same type on LP64 targets, a widening on
/// others.
#[allow(clippy::useless_conversion)]
fn ulong(v: c_ulong) -> u64 {
    u64::from(v)
}

fn new_compressor(p2m_size: u64) -> Result<Compressor, ckpt_engine::SendError> {
    let opts = CompressOptions {
        cache_pages: CKPT_XC_CACHE_PAGES,
        threads: 1,
        pin_threads: false,
        // The original's LRU, nothing seeded: its bytes exactly.
        seed_cache: false,
        ..CompressOptions::default()
    };
    Compressor::new(Codec::best(), &opts, CKPT_XC_STAGING_PAGES, p2m_size)
}

impl compression_ctx {
    /// Appends a compressed batch's encodings to those still to hand out.
    fn take_chunk(
        encoded: &mut Vec<u8>,
        ends: &mut Vec<usize>,
        handed: &mut usize,
        view: ChunkView<'_>,
    ) {
        if *handed == ends.len() {
            encoded.clear();
            ends.clear();
            *handed = 0;
        }
        let mut at = encoded.len();
        encoded.reserve(view.len());
        for piece in view.pieces() {
            encoded.extend_from_slice(piece);
        }
        while at < encoded.len() {
            let (_, len) = validate(&encoded[at..])
                .expect("the engine's chunks hold whole, well-formed page encodings");
            at += len;
            ends.push(at);
        }
    }

    fn add(&mut self, page: &Page, pfn: u64, raw: bool) -> c_int {
        if pfn >= self.p2m_size {
            set_error(format!(
                "pfn {pfn:#x} is outside the guest ({} pages)",
                self.p2m_size
            ));
            return -2;
        }
        let ty = if raw {
            PageType::PageTable {
                level: 1,
                pinned: false,
            }
        } else {
            PageType::Normal
        };
        match self.compressor.stage(pfn, ty, page) {
            Ok(None) => {
                self.staged += 1;
                0
            }
            Ok(Some(view)) => {
                self.staged = 0;
                Self::take_chunk(&mut self.encoded, &mut self.ends, &mut self.handed, view);
                -1
            }
            Err(e) => {
                // The engine's only refusal here is a PFN past its 2^28 limit.
                set_error(e);
                -2
            }
        }
    }

    fn compress(&mut self, out: *mut u8, room: c_ulong, len_out: Option<&mut c_ulong>) -> c_int {
        if self.staged > 0 {
            self.staged = 0;
            if let Some(view) = self.compressor.finish() {
                Self::take_chunk(&mut self.encoded, &mut self.ends, &mut self.handed, view);
            }
        }
        if self.handed == self.ends.len() {
            self.encoded.clear();
            self.ends.clear();
            self.handed = 0;
            return 0;
        }
        let mut start = match self.handed {
            0 => 0,
            i => self.ends[i - 1],
        };
        let mut pos: c_ulong = 0;
        while self.handed < self.ends.len() {
            let end = self.ends[self.handed];
            let enc = &self.encoded[start..end];
            let need = if enc[0] == FULL_MARKER {
                CKPT_XC_FULL_PAGE_BYTES
            } else {
                CKPT_XC_WORST_PAGE_BYTES
            } as c_ulong;
            if room.saturating_sub(pos) < need {
                break;
            }
            // SAFETY: the caller guarantees `out` points to `room` writable
            // bytes (xc_compression_compress_pages' contract); pos + enc.len()
            // <= pos + need <= room, and `encoded` is ours, so the regions
            // cannot overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(enc.as_ptr(), out.add(pos as usize), enc.len());
            }
            pos += enc.len() as c_ulong;
            start = end;
            self.handed += 1;
        }
        if let Some(len) = len_out {
            *len = pos;
        }
        if self.handed == self.ends.len() {
            1
        } else {
            -1
        }
    }

    fn reset(&mut self) {
        if self.staged > 0 || self.handed < self.ends.len() {
            // The engine has decided (or will decide) cache slots for pages
            // the receiver will now never get; only an empty cache is then
            // certain to match the receiver's pages.
            match new_compressor(self.p2m_size) {
                Ok(c) => self.compressor = c,
                Err(e) => set_error(e),
            }
        }
        self.staged = 0;
        self.encoded.clear();
        self.ends.clear();
        self.handed = 0;
    }
}

/// Creates a compression context for a guest of `p2m_size` pages: an
/// 8192-page delta cache and an 8192-page staging buffer. Returns NULL on
/// failure (see `ckpt_last_error`). `xch` is not used and may be NULL.
///
/// # Safety
/// None beyond the C signature: `xch` is never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn xc_compression_create_context(
    xch: *mut xc_interface,
    p2m_size: c_ulong,
) -> *mut comp_ctx {
    let _ = xch;
    guard(std::ptr::null_mut(), || {
        match new_compressor(ulong(p2m_size)) {
            Ok(compressor) => Box::into_raw(Box::new(compression_ctx {
                compressor,
                p2m_size: ulong(p2m_size),
                staged: 0,
                encoded: Vec::new(),
                ends: Vec::new(),
                handed: 0,
            })),
            Err(e) => {
                set_error(e);
                std::ptr::null_mut()
            }
        }
    })
}

/// Frees a context made by `xc_compression_create_context`; NULL is ignored.
///
/// # Safety
/// `ctx` is NULL or a context from `xc_compression_create_context` not yet
/// freed, and no other call is using it.
#[no_mangle]
pub unsafe extern "C" fn xc_compression_free_context(xch: *mut xc_interface, ctx: *mut comp_ctx) {
    let _ = xch;
    if ctx.is_null() {
        return;
    }
    guard((), || {
        // SAFETY: by the contract, `ctx` came from Box::into_raw in
        // xc_compression_create_context and is freed only here, once.
        drop(unsafe { Box::from_raw(ctx) });
    })
}

/// Stages a copy of the 4096-byte `page` for PFN `pfn`; `israw` non-zero
/// marks a page-table page, sent whole and never cached.
///
/// Returns 0 when the page is staged; -1 when it is staged and the staging
/// buffer is now full (call `xc_compression_compress_pages` until it returns
/// 0 before adding more); -2 when `pfn >= p2m_size` (nothing is staged) or
/// `ctx` or `page` is NULL.
///
/// # Safety
/// `ctx` is NULL or a live context used by no other call at the same time;
/// `page` is NULL or points to 4096 readable bytes.
#[no_mangle]
pub unsafe extern "C" fn xc_compression_add_page(
    xch: *mut xc_interface,
    ctx: *mut comp_ctx,
    page: *mut c_char,
    pfn: xen_pfn_t,
    israw: c_int,
) -> c_int {
    let _ = xch;
    if ctx.is_null() || page.is_null() {
        set_error("xc_compression_add_page: NULL context or page");
        return -2;
    }
    guard(-2, || {
        // SAFETY: by the contract, `ctx` is a live context that only this
        // call uses, and `page` points to 4096 readable bytes; Page has
        // alignment 1.
        let (ctx, page) = unsafe { (&mut *ctx, &*(page as *const Page)) };
        ctx.add(page, ulong(pfn), israw != 0)
    })
}

/// Encodes staged pages, in staging order, into `compbuf` (`compbuf_size`
/// bytes), whole page encodings only.
///
/// Returns 1 when it placed pages and everything staged is now encoded; -1
/// when it placed what fits and pages remain (write `compbuf` out and call
/// again); 0 when nothing is left, which also empties the staging buffer.
/// On 1 and -1, `*compbuf_len` (when not NULL) is set to the bytes placed;
/// on 0 it is left alone. A page is placed only while 4105 bytes of room are
/// left (4097 for a page sent FULL), as the original did, so a buffer of at
/// least 4105 bytes always makes progress; a smaller one may return -1 with
/// nothing placed. -2 (not in the original) when `ctx` or `compbuf` is NULL.
///
/// # Safety
/// `ctx` is NULL or a live context used by no other call at the same time;
/// `compbuf` is NULL or points to `compbuf_size` writable bytes;
/// `compbuf_len` is NULL or points to a writable `unsigned long`.
#[no_mangle]
pub unsafe extern "C" fn xc_compression_compress_pages(
    xch: *mut xc_interface,
    ctx: *mut comp_ctx,
    compbuf: *mut c_char,
    compbuf_size: c_ulong,
    compbuf_len: *mut c_ulong,
) -> c_int {
    let _ = xch;
    if ctx.is_null() || compbuf.is_null() {
        set_error("xc_compression_compress_pages: NULL context or buffer");
        if !compbuf_len.is_null() {
            // SAFETY: a non-NULL `compbuf_len` points to a writable
            // unsigned long (the contract).
            unsafe { *compbuf_len = 0 };
        }
        return -2;
    }
    guard(-2, || {
        // SAFETY: by the contract, `ctx` is a live context that only this
        // call uses and a non-NULL `compbuf_len` is writable.
        let (ctx, len) = unsafe { (&mut *ctx, compbuf_len.as_mut()) };
        ctx.compress(compbuf as *mut u8, compbuf_size, len)
    })
}

/// Empties the staging buffer. Xen's sender never needs it (a 0 from
/// `xc_compression_compress_pages` already does it); pages staged and not yet
/// handed out are dropped, and then the delta cache is emptied too, since
/// the receiver will not get them. NULL is ignored.
///
/// # Safety
/// `ctx` is NULL or a live context used by no other call at the same time.
#[no_mangle]
pub unsafe extern "C" fn xc_compression_reset_pagebuf(xch: *mut xc_interface, ctx: *mut comp_ctx) {
    let _ = xch;
    if ctx.is_null() {
        return;
    }
    guard((), || {
        // SAFETY: by the contract, `ctx` is a live context only this call uses.
        unsafe { &mut *ctx }.reset();
    })
}

/// Applies the one page encoding at `compbuf[*compbuf_pos]` to the 4096-byte
/// `destpage` and advances `*compbuf_pos` past it.
///
/// Returns 0, or -1 when the encoding is malformed or runs past
/// `compbuf_size`, when `*compbuf_pos >= compbuf_size`, or when a pointer is
/// NULL. On -1, neither `destpage` nor `*compbuf_pos` is changed (the
/// original could leave part of a page written), and nothing at or past
/// `compbuf[compbuf_size]` is read.
///
/// # Safety
/// `compbuf` is NULL or points to `compbuf_size` readable bytes;
/// `compbuf_pos` is NULL or points to a readable and writable `unsigned
/// long`; `destpage` is NULL or points to 4096 writable bytes that do not
/// overlap `compbuf`.
#[no_mangle]
pub unsafe extern "C" fn xc_compression_uncompress_page(
    xch: *mut xc_interface,
    compbuf: *mut c_char,
    compbuf_size: c_ulong,
    compbuf_pos: *mut c_ulong,
    destpage: *mut c_char,
) -> c_int {
    let _ = xch;
    if compbuf.is_null() || compbuf_pos.is_null() || destpage.is_null() {
        set_error("xc_compression_uncompress_page: NULL buffer, position or page");
        return -1;
    }
    guard(-1, || {
        // SAFETY: by the contract `compbuf_pos` is a valid unsigned long.
        let pos = unsafe { *compbuf_pos };
        let size = compbuf_size;
        if pos >= size {
            set_error(format!(
                "xc_compression_uncompress_page: position {pos} is not inside the {size}-byte buffer"
            ));
            return -1;
        }
        // One page encoding is at most MAX_ENCODED_LEN bytes: never look
        // further than that, nor past the buffer's end.
        let window = (size - pos).min(MAX_ENCODED_LEN as c_ulong) as usize;
        // SAFETY: by the contract `compbuf` holds `size` readable bytes, and
        // pos + window <= size; the page (4096 bytes, alignment 1) is
        // writable and does not overlap it.
        let (input, page) = unsafe {
            (
                std::slice::from_raw_parts((compbuf as *const u8).add(pos as usize), window),
                &mut *(destpage as *mut Page),
            )
        };
        if let Err(e) = validate(input) {
            set_error(format!(
                "xc_compression_uncompress_page: bad page encoding at {pos}: {e}"
            ));
            return -1;
        }
        match Codec::best().decode(input, page) {
            Ok(used) => {
                debug_assert!(used <= window && used > 0 && used <= PAGE_SIZE + 9);
                // SAFETY: as above, `compbuf_pos` is a valid unsigned long.
                unsafe { *compbuf_pos = pos + used as c_ulong };
                0
            }
            Err(e) => {
                set_error(format!(
                    "xc_compression_uncompress_page: bad page encoding at {pos}: {e}"
                ));
                -1
            }
        }
    })
}

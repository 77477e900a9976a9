//! The page algorithm, written once over [`Isa`], the one primitive that
//! differs per instruction set: which words of a 64-byte block differ.
//!
//! Encoding runs in three passes over data that stays in L1:
//! 1. compare the pages block by block into a 1024-bit change bitmap;
//! 2. walk the bitmap's runs with bit scans, emitting markers and copying
//!    changed words, every write checked against the output's capacity;
//! 3. only after the encoding fits, copy the changed blocks into the
//!    reference, so a failed encode leaves the reference untouched.
//!
//! Every function here is `#[inline(always)]`: the per-ISA entry points carry
//! `#[target_feature]`, and inlining compiles these bodies (including the
//! fixed-size copies, which become vector moves) with those features.

use crate::{
    walk, DecodeError, EncodeError, Page, Sink, EMPTY_MARKER, MAX_DELTA_LEN, MAX_RUN, PAGE_SIZE,
    SKIP_FLAG, WORDS_PER_PAGE, WORD_SIZE,
};
use core::ptr;

/// Bytes per comparison block.
pub(crate) const BLOCK: usize = 64;
/// Blocks per page.
const BLOCKS: usize = PAGE_SIZE / BLOCK;
/// Words covered by one u64 of the change bitmap.
const WORDS_PER_BITMAP_WORD: usize = 64;

/// The per-instruction-set primitive.
pub(crate) trait Isa {
    /// Bit `i` is set when 4-byte word `i` of the 64-byte blocks at `a` and
    /// `b` differ.
    ///
    /// # Safety
    /// `a` and `b` must be valid for reads of 64 bytes, and the CPU must
    /// support the instruction set of the implementation.
    unsafe fn block_diff(a: *const u8, b: *const u8) -> u16;
}

/// Change bitmap: bit `w` set when word `w` differs.
pub(crate) type Bitmap = [u64; WORDS_PER_PAGE / WORDS_PER_BITMAP_WORD];

#[inline(always)]
unsafe fn change_bitmap<I: Isa>(new: &Page, reference: &Page) -> Bitmap {
    let mut bits = [0u64; WORDS_PER_PAGE / WORDS_PER_BITMAP_WORD];
    let (n, r) = (new.as_ptr(), reference.as_ptr());
    for (q, slot) in bits.iter_mut().enumerate() {
        let base = q * 4 * BLOCK;
        // SAFETY: base + 4 * BLOCK <= PAGE_SIZE, so each 64-byte block read
        // lies inside both pages; the caller guarantees the ISA.
        let m = unsafe {
            (I::block_diff(n.add(base), r.add(base)) as u64)
                | (I::block_diff(n.add(base + BLOCK), r.add(base + BLOCK)) as u64) << 16
                | (I::block_diff(n.add(base + 2 * BLOCK), r.add(base + 2 * BLOCK)) as u64) << 32
                | (I::block_diff(n.add(base + 3 * BLOCK), r.add(base + 3 * BLOCK)) as u64) << 48
        };
        *slot = m;
    }
    bits
}

/// First word at or after `start` whose changed-bit is not `changed`, or 1024.
#[inline(always)]
fn run_end(bits: &Bitmap, start: usize, changed: bool) -> usize {
    let flip = if changed { !0u64 } else { 0 };
    let mut q = start / WORDS_PER_BITMAP_WORD;
    let mut w = (bits[q] ^ flip) & (!0u64 << (start % WORDS_PER_BITMAP_WORD));
    loop {
        if w != 0 {
            return q * WORDS_PER_BITMAP_WORD + w.trailing_zeros() as usize;
        }
        q += 1;
        if q == bits.len() {
            return WORDS_PER_PAGE;
        }
        w = bits[q] ^ flip;
    }
}

/// Copies `len` bytes (a multiple of 4, at least 4) with fixed-size,
/// possibly overlapping moves that never touch a byte outside either range.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, and the
/// two ranges must not overlap.
#[inline(always)]
pub(crate) unsafe fn copy_words(dst: *mut u8, src: *const u8, len: usize) {
    debug_assert!(len >= WORD_SIZE && len.is_multiple_of(WORD_SIZE));
    // SAFETY (every block below): each move covers [k, k + N) with
    // 0 <= k and k + N <= len, inside both ranges by the caller's contract.
    unsafe {
        if len >= 64 {
            let mut k = 0;
            while k + 64 <= len {
                ptr::copy_nonoverlapping(src.add(k), dst.add(k), 64);
                k += 64;
            }
            if k < len {
                ptr::copy_nonoverlapping(src.add(len - 64), dst.add(len - 64), 64);
            }
        } else if len >= 32 {
            ptr::copy_nonoverlapping(src, dst, 32);
            ptr::copy_nonoverlapping(src.add(len - 32), dst.add(len - 32), 32);
        } else if len >= 16 {
            ptr::copy_nonoverlapping(src, dst, 16);
            ptr::copy_nonoverlapping(src.add(len - 16), dst.add(len - 16), 16);
        } else if len >= 8 {
            ptr::copy_nonoverlapping(src, dst, 8);
            ptr::copy_nonoverlapping(src.add(len - 8), dst.add(len - 8), 8);
        } else {
            ptr::copy_nonoverlapping(src, dst, 4);
        }
    }
}

/// Copies `len` bytes (a multiple of 4, at least 4) rounded up to whole
/// 64-byte moves, to `dst` and, when given, to `dst2` at the same time.
///
/// # Safety
/// `src` must be valid for reads and `dst`/`dst2` for writes of
/// `len.next_multiple_of(64)` bytes; no range may overlap another.
#[inline(always)]
unsafe fn copy_rounded(dst: *mut u8, dst2: Option<*mut u8>, src: *const u8, len: usize) {
    // SAFETY (whole body): every 64-byte move at offset k has
    // k + 64 <= len.next_multiple_of(64), in bounds by the contract.
    #[inline(always)]
    unsafe fn move64(dst: *mut u8, dst2: Option<*mut u8>, src: *const u8, k: usize) {
        unsafe {
            let v = ptr::read_unaligned(src.add(k) as *const [u8; 64]);
            ptr::write_unaligned(dst.add(k) as *mut [u8; 64], v);
            if let Some(d2) = dst2 {
                ptr::write_unaligned(d2.add(k) as *mut [u8; 64], v);
            }
        }
    }
    // Straight-line moves for the common short runs: a loop here is turned
    // into a libc memcpy call per run, which costs more than the copy.
    unsafe {
        move64(dst, dst2, src, 0);
        if len > 64 {
            move64(dst, dst2, src, 64);
            let mut k = 128;
            while k < len {
                move64(dst, dst2, src, k);
                k += 64;
            }
        }
    }
}

/// Emits the DELTA markers for `bits`. Returns the length, or `None` when
/// `out` is too small. Bytes of `out` past the returned length may have been
/// overwritten (runs are copied in whole 64-byte moves when room allows);
/// nothing past `out`'s end is ever written.
///
/// With `UPDATE` the changed words are also written into `reference` as they
/// are copied; the caller sets it only when `out` cannot be too small, so a
/// failed encode never leaves the reference half updated.
#[inline(always)]
fn emit_delta<const UPDATE: bool>(
    bits: &Bitmap,
    new: &Page,
    reference: &mut Page,
    out: &mut [u8],
) -> Option<usize> {
    let cap = out.len();
    let dst = out.as_mut_ptr();
    let src = new.as_ptr();
    let refp = reference.as_mut_ptr();
    let mut o = 0usize;
    let mut pos = 0usize;
    let mut changed = bits[0] & 1 != 0;
    while pos < WORDS_PER_PAGE {
        let end = run_end(bits, pos, changed);
        while pos < end {
            let piece = (end - pos).min(MAX_RUN);
            if changed {
                let bytes = piece * WORD_SIZE;
                let at = pos * WORD_SIZE;
                let rounded = bytes.next_multiple_of(64);
                if cap - o > rounded && at + rounded <= PAGE_SIZE {
                    // SAFETY: o + 1 + rounded <= cap and at + rounded <=
                    // PAGE_SIZE were checked above; out, new and reference
                    // are distinct borrows.
                    unsafe {
                        *dst.add(o) = piece as u8;
                        let r = if UPDATE { Some(refp.add(at)) } else { None };
                        copy_rounded(dst.add(o + 1), r, src.add(at), bytes);
                    }
                } else {
                    if cap - o < 1 + bytes {
                        return None;
                    }
                    // SAFETY: o + 1 + bytes <= cap was checked above and
                    // at + bytes <= PAGE_SIZE because end <= 1024.
                    unsafe {
                        *dst.add(o) = piece as u8;
                        copy_words(dst.add(o + 1), src.add(at), bytes);
                        if UPDATE {
                            copy_words(refp.add(at), src.add(at), bytes);
                        }
                    }
                }
                o += 1 + bytes;
            } else {
                if o == cap {
                    return None;
                }
                // SAFETY: o < cap was checked above.
                unsafe { *dst.add(o) = SKIP_FLAG | piece as u8 };
                o += 1;
            }
            pos += piece;
        }
        changed = !changed;
    }
    Some(o)
}

/// Runs in a page with this many runs or more take [`emit_dense`].
const DENSE_RUNS: u32 = 100;

/// Number of runs in the page (flips of the change bit, plus one).
#[inline(always)]
fn count_runs(bits: &Bitmap) -> u32 {
    let mut carry = bits[0] & 1;
    let mut flips = 0;
    for &w in bits {
        flips += (w ^ ((w << 1) | carry)).count_ones();
        carry = w >> 63;
    }
    flips + 1
}

/// Emits one run at `o`; returns the new output offset.
///
/// # Safety
/// `dst` must be valid for writes up to `o + 1 + 64` and for the run's
/// markers and data; `start + len <= 1024`.
#[inline(always)]
unsafe fn emit_run(
    dst: *mut u8,
    src: *const u8,
    o: usize,
    start: usize,
    len: usize,
    copy: usize,
) -> usize {
    let at = start * WORD_SIZE;
    // SKIP runs need no data, so any SKIP run a marker can hold and any
    // COPY run of up to 8 words takes the same branch-free path: marker,
    // one 32-byte move (from a clamped address for SKIP runs near the page
    // end, whose data is not used), advance by what the run really uses.
    let fast = (copy * len <= 8) & (len <= MAX_RUN) & ((copy == 0) | (at + 32 <= PAGE_SIZE));
    if fast {
        // SAFETY: o + 33 is within dst by contract; the read is clamped
        // into the page.
        unsafe {
            *dst.add(o) = (((copy ^ 1) << 7) | len) as u8;
            let v = ptr::read_unaligned(src.add(at.min(PAGE_SIZE - 32)) as *const [u8; 32]);
            ptr::write_unaligned(dst.add(o + 1) as *mut [u8; 32], v);
        }
        return o + 1 + copy * WORD_SIZE * len;
    }
    if copy == 1 && len <= 16 && at + 64 <= PAGE_SIZE {
        // SAFETY: o + 65 is within dst by contract; at + 64 <= PAGE_SIZE.
        unsafe {
            *dst.add(o) = len as u8;
            let v = ptr::read_unaligned(src.add(at) as *const [u8; 64]);
            ptr::write_unaligned(dst.add(o + 1) as *mut [u8; 64], v);
        }
        return o + 1 + WORD_SIZE * len;
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { emit_run_slow(dst, src, o, at, len, copy) }
}

/// The general case of [`emit_run`]: long runs, cut into 127-word pieces.
/// Kept out of line so that the short-run loop keeps its values in
/// registers.
///
/// # Safety
/// As [`emit_run`]; `at` is the run's byte offset in the page.
#[cold]
#[inline(never)]
unsafe fn emit_run_slow(
    dst: *mut u8,
    src: *const u8,
    mut o: usize,
    mut at: usize,
    len: usize,
    copy: usize,
) -> usize {
    let mut left = len;
    while left > 0 {
        let piece = left.min(MAX_RUN);
        let bytes = piece * WORD_SIZE;
        // SAFETY: the run's markers and data are within dst by contract, and
        // at + bytes <= PAGE_SIZE because the run ends by word 1024.
        unsafe {
            if copy == 1 {
                *dst.add(o) = piece as u8;
                copy_words(dst.add(o + 1), src.add(at), bytes);
                o += 1 + bytes;
            } else {
                *dst.add(o) = SKIP_FLAG | piece as u8;
                o += 1;
            }
        }
        at += bytes;
        left -= piece;
    }
    o
}

/// Emission for pages with many short runs (scattered changes): walks the
/// flips of the change bitmap and emits each run without branching on its
/// kind. Needs `out.len() >= MAX_DELTA_LEN + 64`.
#[inline(always)]
fn emit_dense(bits: &Bitmap, new: &Page, out: &mut [u8]) -> usize {
    assert!(out.len() >= MAX_DELTA_LEN + 64);
    let dst = out.as_mut_ptr();
    let src = new.as_ptr();
    let mut o = 0;
    let mut start = 0;
    let mut copy = (bits[0] & 1) as usize;
    let mut carry = bits[0] & 1;
    for (q, &w) in bits.iter().enumerate() {
        let mut t = w ^ ((w << 1) | carry);
        carry = w >> 63;
        while t != 0 {
            let p = q * WORDS_PER_BITMAP_WORD + t.trailing_zeros() as usize;
            t &= t - 1;
            // SAFETY: every run's encoding ends by MAX_DELTA_LEN, so each
            // write (at most 64 bytes past a marker) stays below
            // MAX_DELTA_LEN + 64 <= out.len(); p <= 1024.
            o = unsafe { emit_run(dst, src, o, start, p - start, copy) };
            start = p;
            copy ^= 1;
        }
    }
    // SAFETY: as above, for the last run.
    unsafe { emit_run(dst, src, o, start, WORDS_PER_PAGE - start, copy) }
}

/// Copies every 64-byte block with a changed word from `new` to `reference`.
#[inline(always)]
fn update_blocks(bits: &Bitmap, new: &Page, reference: &mut Page) {
    for (q, &w) in bits.iter().enumerate() {
        for k in 0..4 {
            if (w >> (16 * k)) & 0xFFFF != 0 {
                let at = (q * 4 + k) * BLOCK;
                reference[at..at + BLOCK].copy_from_slice(&new[at..at + BLOCK]);
            }
        }
    }
}

/// The canonical encoder (same contract as [`crate::scalar::encode`]).
///
/// # Safety
/// The CPU must support `I`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn encode<I: Isa>(
    new: &Page,
    reference: &mut Page,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    // SAFETY: forwarded from the caller.
    let bits = unsafe { change_bitmap::<I>(new, reference) };
    encode_changes(&bits, new, reference, out)
}

/// The first pass and the fingerprint of `new` in one loop: while a block's
/// compare waits for the cold reference, the multiplies of the fingerprint
/// run on the block of `new` already loaded.
///
/// # Safety
/// The CPU must support `I`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn change_map_fingerprint<I: Isa>(
    new: &Page,
    reference: &Page,
    key: &crate::FingerprintKey,
) -> (crate::ChangeMap, u128) {
    let mut bits = [0u64; WORDS_PER_PAGE / WORDS_PER_BITMAP_WORD];
    let mut nh = crate::fingerprint::Nh::default();
    let (n, r) = (new.as_ptr(), reference.as_ptr());
    for (q, slot) in bits.iter_mut().enumerate() {
        let mut m = 0u64;
        for j in 0..4 {
            let blk = q * 4 + j;
            let at = blk * BLOCK;
            // SAFETY: at + BLOCK <= PAGE_SIZE, so the block lies inside both
            // pages; the caller guarantees the ISA.
            m |= (unsafe { I::block_diff(n.add(at), r.add(at)) } as u64) << (16 * j);
            nh.block(blk, &new[at..at + BLOCK], key);
        }
        *slot = m;
    }
    (crate::ChangeMap(bits), nh.finish())
}

/// The first pass alone: which words of `new` differ from `reference`.
///
/// # Safety
/// The CPU must support `I`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn change_map<I: Isa>(new: &Page, reference: &Page) -> crate::ChangeMap {
    // SAFETY: forwarded from the caller.
    crate::ChangeMap(unsafe { change_bitmap::<I>(new, reference) })
}

/// The encoder's second and third passes, from the change bitmap of `new`
/// against `reference`. Any bitmap gives a well-formed encoding within
/// the output's bounds; only the right one gives the right encoding.
#[inline(always)]
pub(crate) fn encode_changes(
    bits: &Bitmap,
    new: &Page,
    reference: &mut Page,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let too_small = EncodeError::OutputTooSmall {
        capacity: out.len(),
    };
    if bits.iter().all(|&w| w == 0) {
        *out.first_mut().ok_or(too_small)? = EMPTY_MARKER;
        return Ok(1);
    }
    if out.len() >= MAX_DELTA_LEN + 64 && count_runs(bits) >= DENSE_RUNS {
        let len = emit_dense(bits, new, out);
        update_blocks(bits, new, reference);
        return Ok(len);
    }
    if out.len() >= MAX_DELTA_LEN {
        // Cannot fail: update the reference while copying.
        return emit_delta::<true>(bits, new, reference, out).ok_or(too_small);
    }
    let len = emit_delta::<false>(bits, new, reference, out).ok_or(too_small)?;
    update_blocks(bits, new, reference);
    Ok(len)
}

/// The decoder (same contract as [`crate::scalar::decode`]): the shared
/// walk over a sink that copies with the fixed-size moves of [`copy_words`].
#[inline(always)]
pub(crate) fn decode(input: &[u8], page: &mut Page) -> Result<usize, DecodeError> {
    struct Apply<'p>(&'p mut Page);
    impl Sink for Apply<'_> {
        #[inline(always)]
        fn full(&mut self, data: &[u8; PAGE_SIZE]) {
            self.0.copy_from_slice(data);
        }
        #[inline(always)]
        fn copy(&mut self, at: usize, data: &[u8]) {
            debug_assert!(at + data.len() <= PAGE_SIZE);
            // SAFETY: the walk guarantees at + data.len() <= PAGE_SIZE and
            // that data is a non-empty whole number of words inside the
            // input; page and input are distinct borrows.
            unsafe { copy_words(self.0.as_mut_ptr().add(at), data.as_ptr(), data.len()) }
        }
    }
    walk(input, &mut Apply(page)).map(|(_, used)| used)
}

/// True when the two pages are identical. Stops at the first differing block.
///
/// # Safety
/// The CPU must support `I`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn pages_equal<I: Isa>(a: &Page, b: &Page) -> bool {
    (0..BLOCKS).all(|k| {
        // SAFETY: k * BLOCK + BLOCK <= PAGE_SIZE; ISA forwarded from caller.
        unsafe { I::block_diff(a.as_ptr().add(k * BLOCK), b.as_ptr().add(k * BLOCK)) == 0 }
    })
}

/// The memory floor: reads every byte of both pages with the ISA's widest
/// loads and folds them into a value the optimiser cannot drop, with no
/// bitmap, branch or store.
///
/// # Safety
/// The CPU must support `I`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn read_floor<I: Isa>(a: &Page, b: &Page) -> u64 {
    let mut acc = 0u16;
    for k in 0..BLOCKS {
        // SAFETY: k * BLOCK + BLOCK <= PAGE_SIZE; ISA forwarded from caller.
        acc |= unsafe { I::block_diff(a.as_ptr().add(k * BLOCK), b.as_ptr().add(k * BLOCK)) };
    }
    acc as u64
}

/// Instantiates the generic algorithm for one ISA as four entry points with
/// `#[target_feature]`, so the inlined bodies compile with those features.
macro_rules! entry_points {
    ($isa:ty, $feature:tt) => {
        /// Encoder entry point.
        ///
        /// # Safety
        /// The CPU must support the features named in `target_feature`.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn encode(
            new: &$crate::Page,
            reference: &mut $crate::Page,
            out: &mut [u8],
        ) -> Result<usize, $crate::EncodeError> {
            // SAFETY: this function's own contract.
            unsafe { $crate::generic::encode::<$isa>(new, reference, out) }
        }

        /// Decoder entry point.
        ///
        /// # Safety
        /// The CPU must support the features named in `target_feature`.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn decode(
            input: &[u8],
            page: &mut $crate::Page,
        ) -> Result<usize, $crate::DecodeError> {
            $crate::generic::decode(input, page)
        }

        /// Change-map entry point (the encoder's first pass).
        ///
        /// # Safety
        /// The CPU must support the features named in `target_feature`.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn change_map(
            new: &$crate::Page,
            reference: &$crate::Page,
        ) -> $crate::ChangeMap {
            // SAFETY: this function's own contract.
            unsafe { $crate::generic::change_map::<$isa>(new, reference) }
        }

        /// Entry point of the encoder's later passes.
        ///
        /// # Safety
        /// The CPU must support the features named in `target_feature`.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn encode_changes(
            map: &$crate::ChangeMap,
            new: &$crate::Page,
            reference: &mut $crate::Page,
            out: &mut [u8],
        ) -> Result<usize, $crate::EncodeError> {
            $crate::generic::encode_changes(&map.0, new, reference, out)
        }

        /// Page equality entry point.
        ///
        /// # Safety
        /// The CPU must support the features named in `target_feature`.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn pages_equal(a: &$crate::Page, b: &$crate::Page) -> bool {
            // SAFETY: this function's own contract.
            unsafe { $crate::generic::pages_equal::<$isa>(a, b) }
        }

        /// Memory floor entry point.
        ///
        /// # Safety
        /// The CPU must support the features named in `target_feature`.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn read_floor(a: &$crate::Page, b: &$crate::Page) -> u64 {
            // SAFETY: this function's own contract.
            unsafe { $crate::generic::read_floor::<$isa>(a, b) }
        }
    };
}
pub(crate) use entry_points;

/// The fused first pass and fingerprint for kernels without a loop of their
/// own: the generic one compiled with the kernel's features.
macro_rules! generic_change_map_fingerprint {
    ($isa:ty, $feature:tt) => {
        /// Entry point of the first pass fused with the fingerprint of `new`.
        ///
        /// # Safety
        /// The CPU must support the features named in `target_feature`.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn change_map_fingerprint(
            new: &$crate::Page,
            reference: &$crate::Page,
            key: &$crate::FingerprintKey,
        ) -> ($crate::ChangeMap, u128) {
            // SAFETY: this function's own contract.
            unsafe { $crate::generic::change_map_fingerprint::<$isa>(new, reference, key) }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use generic_change_map_fingerprint;

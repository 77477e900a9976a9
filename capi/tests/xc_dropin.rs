//! The drop-in's edges, called from Rust through the same `extern "C"`
//! functions C calls: the PFN bound, NULL handles, malformed encodings,
//! output buffers of every size, buffers too small for a page, reset with
//! pages pending, and pages added while encodings are handed out.

use ckpt::ckpt_last_error;
use ckpt::xc::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::ffi::{c_char, c_ulong, CStr};
use std::ptr::{null_mut, NonNull};

const PAGE: usize = 4096;
type Page = [u8; PAGE];

fn last_error() -> String {
    // SAFETY: ckpt_last_error returns a NUL-terminated string owned by the
    // library, valid until the next call on this thread.
    unsafe { CStr::from_ptr(ckpt_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A context and safe wrappers over the calls on it.
struct Ctx(NonNull<comp_ctx>);

impl Ctx {
    fn new(p2m_size: u64) -> Ctx {
        // SAFETY: xch may be NULL.
        let p = unsafe { xc_compression_create_context(null_mut(), p2m_size as c_ulong) };
        Ctx(NonNull::new(p).expect("context"))
    }

    fn add(&mut self, page: &Page, pfn: u64, raw: bool) -> i32 {
        // SAFETY: a live context; the page is 4096 readable bytes (the
        // function only reads through its `char *`).
        unsafe {
            xc_compression_add_page(
                null_mut(),
                self.0.as_ptr(),
                page.as_ptr() as *mut c_char,
                pfn as c_ulong,
                raw as i32,
            )
        }
    }

    /// One compress_pages call into `buf`: (return value, bytes placed).
    fn compress(&mut self, buf: &mut [u8]) -> (i32, Option<usize>) {
        let mut len: c_ulong = c_ulong::MAX;
        // SAFETY: a live context; `buf` is writable for its length.
        let rc = unsafe {
            xc_compression_compress_pages(
                null_mut(),
                self.0.as_ptr(),
                buf.as_mut_ptr() as *mut c_char,
                buf.len() as c_ulong,
                &mut len,
            )
        };
        (rc, (len != c_ulong::MAX).then_some(len as usize))
    }

    /// Xen's write_compressed loop: every buffer until 0.
    fn drain(&mut self, size: usize) -> Vec<(i32, Vec<u8>)> {
        let mut buf = vec![0u8; size];
        let mut out = Vec::new();
        loop {
            match self.compress(&mut buf) {
                (0, len) => {
                    assert_eq!(len, None, "*compbuf_len is left alone on 0");
                    return out;
                }
                (rc, Some(len)) => {
                    assert!(rc == 1 || rc == -1, "compress_pages returned {rc}");
                    assert!(len > 0, "a buffer of {size} bytes made no progress");
                    out.push((rc, buf[..len].to_vec()));
                }
                (rc, None) => panic!("compress_pages returned {rc} without a length"),
            }
        }
    }

    fn reset(&mut self) {
        // SAFETY: a live context.
        unsafe { xc_compression_reset_pagebuf(null_mut(), self.0.as_ptr()) }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the context is live and freed once.
        unsafe { xc_compression_free_context(null_mut(), self.0.as_ptr()) }
    }
}

/// One uncompress_page call: (return value, position after).
fn uncompress(buf: &[u8], size: usize, pos: usize, page: &mut Page) -> (i32, usize) {
    assert!(size <= buf.len());
    let mut p = pos as c_ulong;
    // SAFETY: `buf` holds at least `size` readable bytes (the function only
    // reads through its `char *`); `page` is 4096 writable bytes apart from it.
    let rc = unsafe {
        xc_compression_uncompress_page(
            null_mut(),
            buf.as_ptr() as *mut c_char,
            size as c_ulong,
            &mut p,
            page.as_mut_ptr() as *mut c_char,
        )
    };
    (rc, p as usize)
}

/// The receiver: applies one buffer's pages, in order, to `memory`.
fn apply(buf: &[u8], pfns: &mut impl Iterator<Item = u64>, memory: &mut HashMap<u64, Box<Page>>) {
    let mut pos = 0;
    while pos < buf.len() {
        let pfn = pfns.next().expect("a page for every encoding");
        let page = memory.entry(pfn).or_insert_with(|| Box::new([0; PAGE]));
        let (rc, next) = uncompress(buf, buf.len(), pos, page);
        assert_eq!(rc, 0, "page {pfn:#x} at {pos}: {}", last_error());
        pos = next;
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Checkpoints of (pfn, raw, page): a first full send, then dirty sets with
/// a few changed words per page, whole rewrites, unchanged pages, raw pages
/// and PFNs sent twice in one checkpoint.
fn scenario(
    seed: u64,
    guest: u64,
    checkpoints: usize,
    per: u64,
) -> Vec<Vec<(u64, bool, Box<Page>)>> {
    let mut rng = Rng(seed | 1);
    let mut mem: HashMap<u64, Box<Page>> = HashMap::new();
    let mut out = Vec::new();
    for c in 0..checkpoints {
        let mut cp = Vec::new();
        let n = if c == 0 { guest } else { 1 + rng.below(per) };
        for i in 0..n {
            let pfn = if c == 0 { i } else { rng.below(guest) };
            let page = mem.entry(pfn).or_insert_with(|| Box::new([0; PAGE]));
            match rng.below(8) {
                0 => page.iter_mut().for_each(|b| *b = rng.next() as u8),
                1 => {}
                _ => {
                    for _ in 0..1 + rng.below(40) {
                        let w = rng.below(1024) as usize * 4;
                        page[w..w + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
                    }
                }
            }
            cp.push((pfn, rng.below(20) == 0, page.clone()));
        }
        out.push(cp);
    }
    out
}

/// Runs `cps` through a fresh context with buffers of `size` bytes; returns
/// each batch's buffers with their return values, after checking that the
/// receiver decodes every page.
fn run(cps: &[Vec<(u64, bool, Box<Page>)>], size: usize) -> Vec<Vec<(i32, Vec<u8>)>> {
    let mut ctx = Ctx::new(1 << 20);
    let mut memory = HashMap::new();
    let mut batches = Vec::new();
    for cp in cps {
        let mut pfns = cp.iter().map(|(pfn, _, _)| *pfn);
        let mut emit = |ctx: &mut Ctx, batches: &mut Vec<_>, memory: &mut HashMap<_, _>| {
            let bufs = ctx.drain(size);
            for (_, b) in &bufs {
                apply(b, &mut pfns, memory);
            }
            if !bufs.is_empty() {
                batches.push(bufs);
            }
        };
        for (pfn, raw, page) in cp {
            match ctx.add(page, *pfn, *raw) {
                0 => {}
                -1 => emit(&mut ctx, &mut batches, &mut memory),
                rc => panic!("add_page returned {rc}"),
            }
        }
        emit(&mut ctx, &mut batches, &mut memory);
        ctx.reset();
        let last: HashMap<u64, &Page> = cp.iter().map(|(pfn, _, page)| (*pfn, &**page)).collect();
        for (pfn, page) in last {
            assert_eq!(
                &memory[&pfn][..],
                &page[..],
                "pfn {pfn:#x} after the checkpoint"
            );
        }
    }
    batches
}

fn concat(batch: &[(i32, Vec<u8>)]) -> Vec<u8> {
    batch.iter().flat_map(|(_, b)| b.iter().copied()).collect()
}

/// Room the original needed for the encoding at the start of `enc`.
fn need(enc: &[u8]) -> usize {
    if enc[0] == 0x80 {
        CKPT_XC_FULL_PAGE_BYTES
    } else {
        CKPT_XC_WORST_PAGE_BYTES
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any buffer of at least one page's worst case gives the bytes of a
    /// roomy one, cut only between pages and only where the next page's
    /// worst case no longer fits, and the receiver decodes every page.
    #[test]
    fn every_buffer_size_gives_the_roomy_bytes(size in 4105usize..150_000, seed in any::<u64>()) {
        let cps = scenario(seed, 600, 4, 400);
        let roomy = run(&cps, 64 << 20);
        let small = run(&cps, size);
        prop_assert_eq!(roomy.len(), small.len());
        for (r, s) in roomy.iter().zip(&small) {
            prop_assert_eq!(r.len(), 1, "a roomy buffer takes a batch whole");
            prop_assert_eq!(&r[0].1, &concat(s));
            for (i, (rc, buf)) in s.iter().enumerate() {
                // Each page was placed with its worst case's room left.
                let mut at = 0;
                while at < buf.len() {
                    prop_assert!(size - at >= need(&buf[at..]), "placed without room");
                    at += ckpt_simd::validate(&buf[at..]).expect("whole encodings").1;
                }
                let last = i + 1 == s.len();
                prop_assert_eq!(*rc, if last { 1 } else { -1 });
                if !last {
                    let next = &s[i + 1].1;
                    prop_assert!(size - buf.len() < need(next), "cut with room for the next page");
                }
            }
        }
    }
}

#[test]
fn the_staging_buffer_fills_at_8192_pages() {
    let cps = scenario(7, 9000, 2, 1);
    let batches = run(&cps, 64 << 20);
    // 9000 pages: one full batch of 8192 and the rest; then one page.
    assert_eq!(batches.len(), 3);
    let mut ctx = Ctx::new(20_000);
    let page = [7u8; PAGE];
    for pfn in 0..CKPT_XC_STAGING_PAGES as u64 - 1 {
        assert_eq!(ctx.add(&page, pfn, false), 0);
    }
    assert_eq!(ctx.add(&page, 9999, false), -1, "the 8192nd page fills it");
}

#[test]
fn pfn_bound_is_exclusive() {
    let mut ctx = Ctx::new(100);
    let page = [1u8; PAGE];
    assert_eq!(ctx.add(&page, 99, false), 0);
    assert_eq!(
        ctx.add(&page, 100, false),
        -2,
        "pfn == p2m_size is out of range"
    );
    assert!(
        last_error().contains("outside the guest"),
        "{}",
        last_error()
    );
    assert_eq!(ctx.add(&page, 100, true), -2);
    assert_eq!(ctx.add(&page, u64::MAX, false), -2);
    // Only pfn 99 was staged.
    let bufs = ctx.drain(64 << 10);
    assert_eq!(bufs.len(), 1);
    assert_eq!(bufs[0].1.len(), CKPT_XC_FULL_PAGE_BYTES);
    // The stream's PFN field has 28 bits: a larger guest still stops there.
    let mut big = Ctx::new(1 << 30);
    assert_eq!(big.add(&page, (1 << 28) - 1, false), 0);
    assert_eq!(big.add(&page, 1 << 28, false), -2);
}

#[test]
fn null_handles_give_the_error_value() {
    let mut page = [0u8; PAGE];
    let mut buf = vec![0u8; 8192];
    let mut len: c_ulong = 77;
    let mut pos: c_ulong = 0;
    let ctx = Ctx::new(10);
    // SAFETY: every pointer is NULL or valid; NULLs are what is tested.
    unsafe {
        xc_compression_free_context(null_mut(), null_mut());
        xc_compression_reset_pagebuf(null_mut(), null_mut());
        let p = page.as_mut_ptr() as *mut c_char;
        let b = buf.as_mut_ptr() as *mut c_char;
        assert_eq!(xc_compression_add_page(null_mut(), null_mut(), p, 0, 0), -2);
        assert_eq!(
            xc_compression_add_page(null_mut(), ctx.0.as_ptr(), null_mut(), 0, 0),
            -2
        );
        assert!(last_error().contains("NULL"), "{}", last_error());
        assert_eq!(
            xc_compression_compress_pages(null_mut(), null_mut(), b, 8192, &mut len),
            -2
        );
        assert_eq!(len, 0);
        len = 77;
        assert_eq!(
            xc_compression_compress_pages(null_mut(), ctx.0.as_ptr(), null_mut(), 8192, &mut len),
            -2
        );
        assert_eq!(len, 0);
        assert_eq!(
            xc_compression_compress_pages(null_mut(), ctx.0.as_ptr(), b, 8192, null_mut()),
            0,
            "a NULL length is allowed, as in the original"
        );
        assert_eq!(
            xc_compression_uncompress_page(null_mut(), null_mut(), 1, &mut pos, p),
            -1
        );
        assert_eq!(
            xc_compression_uncompress_page(null_mut(), b, 1, null_mut(), p),
            -1
        );
        assert_eq!(
            xc_compression_uncompress_page(null_mut(), b, 1, &mut pos, null_mut()),
            -1
        );
    }
    assert_eq!(pos, 0);
}

/// A page encoding whose first `cut` bytes are malformed on their own but
/// which is a valid encoding when read further: a decoder that reads past
/// `compbuf_size` would accept it.
struct Malformed {
    what: &'static str,
    bytes: Vec<u8>,
    cut: usize,
}

fn malformed_cases() -> Vec<Malformed> {
    let mut full = vec![0x80u8];
    full.extend((0..PAGE).map(|i| i as u8));
    // Eight COPY runs of 127 words and one of 8: every word.
    let mut copy_all = Vec::new();
    for _ in 0..8 {
        copy_all.push(127u8);
        copy_all.extend(std::iter::repeat_n(0x5a, 508));
    }
    copy_all.push(8);
    copy_all.extend(std::iter::repeat_n(0x5a, 32));
    let copy_all_2 = copy_all.clone();
    let skips = [0xffu8; 8]
        .iter()
        .copied()
        .chain([0x88])
        .collect::<Vec<u8>>();
    vec![
        Malformed {
            what: "FULL page cut short",
            cut: 1 + 4095,
            bytes: full.clone(),
        },
        Malformed {
            what: "FULL marker alone",
            cut: 1,
            bytes: full,
        },
        Malformed {
            what: "copy run's data cut short",
            cut: 1 + 100,
            bytes: copy_all.clone(),
        },
        Malformed {
            what: "markers end before word 1024",
            cut: 8,
            bytes: skips,
        },
        Malformed {
            what: "last copy run cut by one byte",
            cut: copy_all.len() - 1,
            bytes: copy_all,
        },
        Malformed {
            what: "copy marker without its data",
            cut: 1,
            bytes: copy_all_2,
        },
    ]
}

#[test]
fn malformed_input_is_refused_without_reading_past_compbuf_size() {
    for case in malformed_cases() {
        for prefix in [0usize, 3] {
            // Junk before the encoding, so that *compbuf_pos is not 0.
            let mut buf = vec![0xeeu8; prefix];
            buf.extend(&case.bytes);
            let mut page = [0xaau8; PAGE];
            let (rc, pos) = uncompress(&buf, prefix + case.cut, prefix, &mut page);
            assert_eq!(rc, -1, "{}: accepted when cut at {}", case.what, case.cut);
            assert_eq!(pos, prefix, "{}: position moved", case.what);
            assert!(
                page.iter().all(|&b| b == 0xaa),
                "{}: page written",
                case.what
            );
            // The whole encoding decodes: only the bound refused it.
            let (rc, pos) = uncompress(&buf, buf.len(), prefix, &mut page);
            assert_eq!(rc, 0, "{}: the whole encoding is valid", case.what);
            assert_eq!(pos, buf.len());
        }
    }
    // Encodings that are wrong whatever follows.
    let mut page = [0xaau8; PAGE];
    let wrong: [(&str, Vec<u8>); 4] = [
        ("zero-length copy run", vec![0x01, 1, 2, 3, 4, 0x00, 0xff]),
        ("zero-length skip run", vec![0x81, 0x80, 0xff]),
        (
            "skip past word 1024",
            [0xffu8; 8].iter().copied().chain([0x89]).collect(),
        ),
        ("copy past word 1024", {
            let mut v = vec![0xffu8; 8];
            v.push(9);
            v.extend([0u8; 36]);
            v
        }),
    ];
    for (what, bytes) in wrong {
        let (rc, pos) = uncompress(&bytes, bytes.len(), 0, &mut page);
        assert_eq!((rc, pos), (-1, 0), "{what}");
        assert!(page.iter().all(|&b| b == 0xaa), "{what}: page written");
        assert!(
            last_error().contains("bad page encoding"),
            "{}",
            last_error()
        );
    }
    // A position at or past the end.
    let buf = [0u8; 4];
    assert_eq!(uncompress(&buf, 4, 4, &mut page).0, -1);
    assert_eq!(uncompress(&buf, 4, 9, &mut page).0, -1);
    assert_eq!(uncompress(&buf, 0, 0, &mut page).0, -1);
    // And EMPTY at the very last byte is fine.
    assert_eq!(uncompress(&buf, 4, 3, &mut page), (0, 4));
}

#[test]
fn a_buffer_smaller_than_a_page_takes_no_page_it_cannot_hold() {
    let mut ctx = Ctx::new(10);
    let mut page = [3u8; PAGE];
    assert_eq!(ctx.add(&page, 1, false), 0);
    assert_eq!(ctx.drain(64 << 10).len(), 1);
    ctx.reset();
    // Now cached: the next send of pfn 1 is a delta, which needs 4105 bytes
    // of room even though it encodes in a few.
    page[100] = 9;
    assert_eq!(ctx.add(&page, 1, false), 0);
    let mut small = vec![0u8; CKPT_XC_WORST_PAGE_BYTES - 1];
    assert_eq!(ctx.compress(&mut small), (-1, Some(0)));
    assert_eq!(ctx.compress(&mut small), (-1, Some(0)), "still pending");
    let mut enough = vec![0u8; CKPT_XC_WORST_PAGE_BYTES];
    let (rc, len) = ctx.compress(&mut enough);
    assert_eq!(rc, 1);
    let len = len.expect("a length");
    assert!(len < 20, "a one-word delta, {len} bytes");
    assert_eq!(ctx.compress(&mut enough), (0, None));
    // A FULL page needs only 4097.
    assert_eq!(ctx.add(&page, 2, false), 0);
    let mut full_room = vec![0u8; CKPT_XC_FULL_PAGE_BYTES];
    assert_eq!(
        ctx.compress(&mut full_room),
        (1, Some(CKPT_XC_FULL_PAGE_BYTES))
    );
}

#[test]
fn reset_with_pages_pending_keeps_the_receiver_in_step() {
    let cps = scenario(11, 64, 1, 1);
    let mut ctx = Ctx::new(64);
    let mut memory = HashMap::new();
    for (pfn, raw, page) in &cps[0] {
        assert_eq!(ctx.add(page, *pfn, *raw), 0);
    }
    apply(
        &concat(&ctx.drain(64 << 20)),
        &mut cps[0].iter().map(|c| c.0),
        &mut memory,
    );
    ctx.reset();
    // Every page changes; one buffer of one page goes out, then a reset
    // drops the rest.
    let changed: Vec<(u64, Box<Page>)> = cps[0]
        .iter()
        .map(|(pfn, _, page)| {
            let mut p = page.clone();
            p[8] ^= 0xff;
            (*pfn, p)
        })
        .collect();
    for (pfn, page) in &changed {
        assert_eq!(ctx.add(page, *pfn, false), 0);
    }
    let mut one = vec![0u8; CKPT_XC_WORST_PAGE_BYTES];
    let (rc, len) = ctx.compress(&mut one);
    assert_eq!(rc, -1);
    apply(
        &one[..len.expect("a length")],
        &mut changed.iter().map(|c| c.0),
        &mut memory,
    );
    ctx.reset();
    // The next checkpoint sends them all again: the receiver must end up
    // with every page, though it never got the dropped ones.
    for (pfn, page) in &changed {
        assert_eq!(ctx.add(page, *pfn, false), 0);
    }
    apply(
        &concat(&ctx.drain(64 << 20)),
        &mut changed.iter().map(|c| c.0),
        &mut memory,
    );
    for (pfn, page) in &changed {
        assert_eq!(&memory[pfn][..], &page[..], "pfn {pfn:#x}");
    }
}

#[test]
fn pages_added_while_encodings_are_handed_out_queue_behind_them() {
    let cps = scenario(5, 40, 2, 30);
    let mut ctx = Ctx::new(40);
    let mut memory = HashMap::new();
    let all: Vec<&(u64, bool, Box<Page>)> = cps.iter().flatten().collect();
    let (first, second) = all.split_at(cps[0].len() + 3);
    let mut order = all.iter().map(|c| c.0);
    for (pfn, raw, page) in first {
        assert_eq!(ctx.add(page, *pfn, *raw), 0);
    }
    let mut small = vec![0u8; 3 * CKPT_XC_WORST_PAGE_BYTES];
    let (rc, len) = ctx.compress(&mut small);
    assert_eq!(rc, -1);
    apply(&small[..len.expect("a length")], &mut order, &mut memory);
    for (pfn, raw, page) in second {
        assert_eq!(ctx.add(page, *pfn, *raw), 0);
    }
    for (_, buf) in ctx.drain(small.len()) {
        apply(&buf, &mut order, &mut memory);
    }
    assert_eq!(order.next(), None, "every page came out");
    let mut last: HashMap<u64, &Page> = HashMap::new();
    for (pfn, _, page) in &all {
        last.insert(*pfn, page);
    }
    for (pfn, page) in last {
        assert_eq!(&memory[&pfn][..], &page[..], "pfn {pfn:#x}");
    }
}

//! The scan of one pause: the target's page maps read in groups, the pages
//! present read with batched `process_vm_readv` calls straight into the
//! arena, each page fingerprinted and compared with the one recorded last,
//! on the scan threads that share the chunks of work.

use super::*;

/// Most remote ranges in one `process_vm_readv` call (the kernel's IOV_MAX).
pub(super) const MAX_IOV: usize = 1024;

/// What the scan compares with: the fingerprints of the pages as last
/// recorded.
#[derive(Clone, Copy)]
pub(super) struct Prints<'a> {
    pub(super) known: &'a [u128],
    pub(super) zero: u128,
    pub(super) key: &'a FingerprintKey,
    pub(super) codec: Codec,
}

/// Reads the page map of each piece, then its pages worth reading (present
/// now, or recorded before) in runs, many runs per system call, and keeps
/// in `found` those whose fingerprint differs from the one last recorded (a
/// page never recorded counts as zero).
pub(super) fn group_pieces(pieces: &[Piece]) -> Vec<std::ops::Range<usize>> {
    let page_of = |p: &Piece| p.start / PAGE_SIZE as u64;
    let mut groups = Vec::new();
    let mut i = 0;
    while i < pieces.len() {
        let first = &pieces[i];
        let mut end = page_of(first) + first.len as u64;
        let mut j = i + 1;
        while j < pieces.len()
            && same_aliases(first, &pieces[j])
            && pieces[j].pid == first.pid
            && page_of(&pieces[j]) >= end
            && page_of(&pieces[j]) - end <= MAP_GAP_PAGES
            && page_of(&pieces[j]) + pieces[j].len as u64 - page_of(first) <= MAP_SPAN_PAGES
        {
            end = page_of(&pieces[j]) + pieces[j].len as u64;
            j += 1;
        }
        groups.push(i..j);
        i = j;
    }
    groups
}

/// Whether `b`'s aliases are `a`'s, at the same distance: one read of each
/// alias's page map then covers both pieces.
pub(super) fn same_aliases(a: &Piece, b: &Piece) -> bool {
    a.aliases.len() == b.aliases.len()
        && a.aliases
            .iter()
            .zip(&b.aliases)
            .all(|((fa, sa), (fb, sb))| {
                std::sync::Arc::ptr_eq(fa, fb)
                    && sb.wrapping_sub(*sa) == b.start.wrapping_sub(a.start)
            })
}

/// Reads one page-map entry per page from `file`, starting at page `page`.
pub(super) fn read_pagemap(file: &File, page: u64, raw: &mut Vec<u8>, pages: usize) -> bool {
    raw.resize(pages * 8, 0);
    file.read_exact_at(raw, page * 8).is_ok()
}

/// Reads the page maps of the groups of pieces, then their pages worth
/// reading (present now in any process mapping them, or recorded before)
/// in runs, many runs per system call, and keeps in `found` those whose
/// fingerprint differs from the one last recorded (a page never recorded
/// counts as zero).
/// Consecutive groups joined into chunks of about [`CHUNK_PAGES`] mapped
/// pages (and at most [`MAX_IOV`] groups), the unit the threads take.
pub(super) fn chunk_groups(
    pieces: &[Piece],
    groups: Vec<std::ops::Range<usize>>,
) -> Vec<Vec<std::ops::Range<usize>>> {
    let mut chunks = Vec::new();
    let mut cur = Vec::new();
    let mut pages = 0;
    for g in groups {
        pages += pieces[g.clone()].iter().map(|p| p.len).sum::<usize>();
        cur.push(g);
        if pages >= CHUNK_PAGES || cur.len() == MAX_IOV {
            chunks.push(std::mem::take(&mut cur));
            pages = 0;
        }
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    chunks
}

pub(super) fn scan_groups(
    pieces: &[Piece],
    chunks: &[Vec<std::ops::Range<usize>>],
    next: &std::sync::atomic::AtomicUsize,
    seen: &[bool],
    prints: Prints<'_>,
    found: &mut Found,
) {
    while let Some(chunk) = chunks.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
        scan_chunk(pieces, chunk, seen, prints, found);
    }
}

pub(super) fn scan_chunk(
    pieces: &[Piece],
    groups: &[std::ops::Range<usize>],
    seen: &[bool],
    prints: Prints<'_>,
    found: &mut Found,
) {
    let page_of = |p: &Piece| p.start / PAGE_SIZE as u64;
    let (mut raw, mut alias_raw) = (Vec::new(), Vec::new());
    // First every page map, then the reads: runs of many small mappings of
    // one process share a system call.
    let mut runs: Vec<Run> = Vec::new();
    for group in groups {
        let group = &pieces[group.clone()];
        let (first, last) = (&group[0], &group[group.len() - 1]);
        let span = (page_of(last) + last.len as u64 - page_of(first)) as usize;
        if !read_pagemap(&first.pagemap, page_of(first), &mut raw, span) {
            continue;
        }
        // A page recorded before is read anyway: other processes' page maps
        // matter only while some page is neither present here nor known.
        let unknown = |raw: &[u8]| {
            group.iter().any(|piece| {
                let at = (page_of(piece) - page_of(first)) as usize;
                piece.pfns[piece.first..piece.first + piece.len]
                    .iter()
                    .enumerate()
                    .any(|(k, &pfn)| {
                        raw[(at + k) * 8 + 7] & 0x80 == 0
                            && !seen.get(pfn as usize).copied().unwrap_or(false)
                    })
            })
        };
        for (file, start) in &first.aliases {
            if !unknown(&raw) {
                break;
            }
            if read_pagemap(file, start / PAGE_SIZE as u64, &mut alias_raw, span) {
                for (a, b) in raw.chunks_exact_mut(8).zip(alias_raw.chunks_exact(8)) {
                    a[7] |= b[7] & 0x80; // the present bit, bit 63
                }
            }
        }
        for piece in group {
            let at = (page_of(piece) - page_of(first)) as usize;
            let mut cur: Option<Run> = None;
            let pfns = &piece.pfns[piece.first..piece.first + piece.len];
            for (k, &pfn) in pfns.iter().enumerate() {
                let wanted = raw[(at + k) * 8 + 7] & 0x80 != 0
                    || seen.get(pfn as usize).copied().unwrap_or(false);
                let addr = piece.start + (k * PAGE_SIZE) as u64;
                match (&mut cur, wanted) {
                    (Some(run), true) => run.pfns.push(pfn),
                    (_, true) => {
                        runs.extend(cur.take());
                        cur = Some(Run {
                            pid: piece.pid,
                            addr,
                            pfns: vec![pfn],
                        });
                    }
                    (_, false) => runs.extend(cur.take()),
                }
            }
            runs.extend(cur);
        }
    }
    found.scanned += runs.iter().map(|r| r.pfns.len() as u64).sum::<u64>();
    let mut batch: Vec<&Run> = Vec::with_capacity(MAX_IOV);
    let mut pages = 0;
    for run in &runs {
        if !batch.is_empty()
            && (pages + run.pfns.len() > BATCH_PAGES
                || batch.len() == MAX_IOV
                || batch[0].pid != run.pid)
        {
            read_batch(&batch, prints, found);
            batch.clear();
            pages = 0;
        }
        batch.push(run);
        pages += run.pfns.len();
    }
    read_batch(&batch, prints, found);
}

/// One `process_vm_readv` for a batch of runs of one process, straight
/// into `found`, then the comparison, keeping changed pages in place. A
/// range that went away mid-read ends the call early; the runs after it
/// are read one by one.
pub(super) fn read_batch(batch: &[&Run], prints: Prints<'_>, found: &mut Found) {
    let Some(first) = batch.first() else { return };
    let remote: Vec<RemoteIoVec> = batch
        .iter()
        .map(|r| RemoteIoVec {
            base: r.addr as usize,
            len: r.pfns.len() * PAGE_SIZE,
        })
        .collect();
    let total: usize = batch.iter().map(|r| r.pfns.len()).sum();
    found.take_slots(total);
    let t = Instant::now();
    let got = {
        // One local buffer per slot, in the batch's (ascending) order.
        let mut local: Vec<IoSliceMut<'_>> = Vec::with_capacity(total);
        let mut want = found.batch.iter().copied().peekable();
        let skip = found.batch.first().map_or(0, |&s| s as usize / BLOCK_PAGES);
        for (b, block) in found.pages.iter_mut().enumerate().skip(skip) {
            let end = ((b + 1) * BLOCK_PAGES) as u32;
            if want.peek().is_none_or(|&s| s >= end) {
                continue;
            }
            let base = (b * BLOCK_PAGES) as u32;
            for (i, page) in block.iter_mut().enumerate() {
                if want.peek() == Some(&(base + i as u32)) {
                    want.next();
                    local.push(IoSliceMut::new(&mut page.0));
                }
            }
        }
        process_vm_readv(Pid::from_raw(first.pid), &mut local, &remote).map_or(0, |n| n / PAGE_SIZE)
    };
    found.read += t.elapsed();
    let pfns = batch.iter().flat_map(|r| r.pfns.iter().copied());
    for (i, pfn) in pfns.enumerate() {
        let slot = found.batch[i];
        if i >= got {
            found.free.push(slot);
            continue;
        }
        let print = prints.codec.fingerprint(found.slot(slot), prints.key);
        let old = prints
            .known
            .get(pfn as usize)
            .copied()
            .unwrap_or(prints.zero);
        if print != old {
            found.pfns.push(pfn);
            found.prints.push(print);
            found.slots.push(slot);
        } else {
            found.free.push(slot);
        }
    }
    if got < total && batch.len() > 1 {
        let mut skip = got;
        for r in batch {
            let n = r.pfns.len();
            if skip >= n {
                skip -= n;
                continue;
            }
            skip = 0;
            read_batch(&[*r], prints, found);
        }
    }
}

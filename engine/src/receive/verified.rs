//! A verified checkpoint as the receiver hands it to memory in one call
//! ([`GuestMemory::commit_checkpoint`]): its commit and, for every
//! data-carrying entry in body order, the page's encoding (`docs/FORMAT.md`
//! §1: EMPTY, FULL or DELTA; a Format A page counts as FULL).
//!
//! Every encoding has been checked and the digest of what applying them
//! produces has matched the trailer's before such a value exists, so
//! applying one cannot fail. Applying an encoding writes absolute bytes
//! only (FULL the page, COPY runs their words; EMPTY and SKIP nothing),
//! and a checkpoint lists each PFN at most once: applying a checkpoint
//! again over a page that was torn half way through applying it gives the
//! same page, which is what lets a journal keep the encodings instead of
//! the pages.

use super::{Commit, GuestMemory};
use ckpt_simd::{Codec, DecodeError, Form, Page, FULL_ENCODED_LEN};
use std::io;

/// Where one verified page's data is in the body's payload.
#[derive(Clone, Copy)]
pub(super) struct PageRef {
    pub(super) pfn: u64,
    /// Offset of the page's data (FULL, raw) or of its encoding (DELTA).
    pub(super) at: usize,
    /// End of that data or encoding (exactly: verification measured it).
    pub(super) end: usize,
    pub(super) form: Form,
}

/// One page of a verified checkpoint, in the form it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageEncoding<'a> {
    /// EMPTY: the page equals what the memory holds.
    Empty,
    /// FULL, or a Format A page: the page's new contents.
    Full(&'a Page),
    /// DELTA: exactly one encoding's bytes, markers and data.
    Delta(&'a [u8]),
}

impl PageEncoding<'_> {
    /// Its length as a `docs/FORMAT.md` §1 encoding (FULL with its marker).
    pub fn encoded_len(&self) -> usize {
        match self {
            PageEncoding::Empty => 1,
            PageEncoding::Full(_) => FULL_ENCODED_LEN,
            PageEncoding::Delta(e) => e.len(),
        }
    }

    /// Applies it to `page`. A verified encoding never fails.
    pub fn apply(&self, codec: &Codec, page: &mut Page) -> Result<(), DecodeError> {
        match self {
            PageEncoding::Empty => {}
            PageEncoding::Full(p) => page.copy_from_slice(&p[..]),
            PageEncoding::Delta(e) => {
                codec.decode(e, page)?;
            }
        }
        Ok(())
    }
}

/// A checkpoint that passed every check, ready to commit.
pub struct VerifiedCheckpoint<'a> {
    commit: Commit,
    codec: Codec,
    payload: &'a [u8],
    pages: &'a [PageRef],
    pfns: &'a [u64],
    batch_ends: &'a [usize],
}

impl<'a> VerifiedCheckpoint<'a> {
    pub(super) fn new(
        commit: Commit,
        codec: Codec,
        payload: &'a [u8],
        pages: &'a [PageRef],
        pfns: &'a [u64],
        batch_ends: &'a [usize],
    ) -> VerifiedCheckpoint<'a> {
        debug_assert_eq!(pages.len(), pfns.len());
        debug_assert_eq!(batch_ends.last().copied().unwrap_or(0), pages.len());
        VerifiedCheckpoint {
            commit,
            codec,
            payload,
            pages,
            pfns,
            batch_ends,
        }
    }

    /// What the memory holds once the checkpoint is committed.
    pub fn commit(&self) -> &Commit {
        &self.commit
    }

    /// The codec the receiver verified it with.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Pages (data-carrying entries), one per PFN of [`Self::pfns`].
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether it carries no page.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The PFNs of its pages, in body order (the order of its digest).
    pub fn pfns(&self) -> &'a [u64] {
        self.pfns
    }

    /// Where each PFN batch that carries data ends, as an index into
    /// [`Self::pfns`].
    pub fn batch_ends(&self) -> &'a [usize] {
        self.batch_ends
    }

    /// Page `k`'s encoding.
    pub fn page(&self, k: usize) -> PageEncoding<'a> {
        let p = &self.pages[k];
        let data = &self.payload[p.at..p.end];
        match p.form {
            Form::Empty => PageEncoding::Empty,
            Form::Full => PageEncoding::Full(data.try_into().expect("verified: PAGE_SIZE bytes")),
            Form::Delta => PageEncoding::Delta(data),
        }
    }

    /// Every page with its PFN, in body order.
    pub fn pages(&self) -> impl ExactSizeIterator<Item = (u64, PageEncoding<'a>)> + '_ {
        (0..self.pages.len()).map(|k| (self.pages[k].pfn, self.page(k)))
    }

    /// Bytes of its pages as `docs/FORMAT.md` §1 encodings.
    pub fn encoded_bytes(&self) -> u64 {
        self.pages().map(|(_, e)| e.encoded_len() as u64).sum()
    }

    /// The page-by-page commit: [`GuestMemory::begin_commit`], each batch
    /// named ([`GuestMemory::begin_batch`]) and its pages decoded straight
    /// into [`GuestMemory::page_mut`], [`GuestMemory::end_commit`].
    pub fn write_pages<M: GuestMemory + ?Sized>(&self, memory: &mut M) -> io::Result<()> {
        memory.begin_commit(&self.commit)?;
        let mut start = 0;
        for &end in self.batch_ends {
            memory.begin_batch(&self.pfns[start..end]);
            for k in start..end {
                self.page(k)
                    .apply(&self.codec, memory.page_mut(self.pfns[k]))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            start = end;
        }
        memory.end_commit(&self.commit)
    }
}

//! The scalar reference: the canonical encoder and decoder written as plainly
//! as possible. Every other kernel is tested against these two functions.

use crate::{
    walk, DecodeError, EncodeError, Page, Sink, EMPTY_MARKER, MAX_RUN, PAGE_SIZE, SKIP_FLAG,
    WORDS_PER_PAGE, WORD_SIZE,
};

fn word(page: &Page, i: usize) -> [u8; WORD_SIZE] {
    let at = i * WORD_SIZE;
    [page[at], page[at + 1], page[at + 2], page[at + 3]]
}

/// Encodes `new` against `reference` into `out` and returns the bytes written.
///
/// Emits EMPTY when no word differs, else maximal runs of changed (COPY) and
/// equal (SKIP) words, each cut greedily into pieces of at most 127 words,
/// trailing SKIP included. On success `reference` equals `new`; on error it is
/// unchanged and nothing past `out`'s end was written.
pub fn encode(new: &Page, reference: &mut Page, out: &mut [u8]) -> Result<usize, EncodeError> {
    let too_small = EncodeError::OutputTooSmall {
        capacity: out.len(),
    };
    if new == reference {
        *out.first_mut().ok_or(too_small)? = EMPTY_MARKER;
        return Ok(1);
    }
    let mut o = 0;
    let mut i = 0;
    while i < WORDS_PER_PAGE {
        let changed = word(new, i) != word(reference, i);
        let mut j = i + 1;
        while j < WORDS_PER_PAGE
            && j - i < MAX_RUN
            && (word(new, j) != word(reference, j)) == changed
        {
            j += 1;
        }
        let len = j - i;
        if changed {
            let data = &new[i * WORD_SIZE..j * WORD_SIZE];
            let dst = out.get_mut(o..o + 1 + data.len()).ok_or(too_small)?;
            dst[0] = len as u8;
            dst[1..].copy_from_slice(data);
            o += 1 + data.len();
        } else {
            *out.get_mut(o).ok_or(too_small)? = SKIP_FLAG | len as u8;
            o += 1;
        }
        i = j;
    }
    reference.copy_from_slice(new);
    Ok(o)
}

/// Applies the page encoding at the start of `input` to `page` and returns
/// the input bytes it used.
pub fn decode(input: &[u8], page: &mut Page) -> Result<usize, DecodeError> {
    struct Apply<'p>(&'p mut Page);
    impl Sink for Apply<'_> {
        fn full(&mut self, data: &[u8; PAGE_SIZE]) {
            self.0.copy_from_slice(data);
        }
        fn copy(&mut self, at: usize, data: &[u8]) {
            self.0[at..at + data.len()].copy_from_slice(data);
        }
    }
    walk(input, &mut Apply(page)).map(|(_, used)| used)
}

/// Which words of `new` differ from `reference`, word by word.
pub fn change_map(new: &Page, reference: &Page) -> crate::ChangeMap {
    let mut map = crate::ChangeMap::default();
    for (w, (a, b)) in new
        .chunks_exact(4)
        .zip(reference.chunks_exact(4))
        .enumerate()
    {
        if a != b {
            map.0[w / 64] |= 1 << (w % 64);
        }
    }
    map
}

/// [`encode`] from a change map: the generic emitters, compiled without
/// any instruction-set features.
pub fn encode_changes(
    map: &crate::ChangeMap,
    new: &Page,
    reference: &mut Page,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    crate::generic::encode_changes(&map.0, new, reference, out)
}

/// [`change_map`] and the fingerprint of `new` ([`crate::Codec::fingerprint`]).
pub fn change_map_fingerprint(
    new: &Page,
    reference: &Page,
    key: &crate::FingerprintKey,
) -> (crate::ChangeMap, u128) {
    (
        change_map(new, reference),
        crate::fingerprint::fingerprint(new, key),
    )
}

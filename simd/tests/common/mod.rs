//! Cases shared by the kernel tests and the single-threaded NEON harness:
//! every kernel must produce the scalar reference's bytes on each of them.
#![allow(dead_code)]

use ckpt_simd::{scalar, Codec, Page, MAX_ENCODED_LEN, PAGE_SIZE, WORDS_PER_PAGE};

/// splitmix64: deterministic case generation without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub fn zero_page() -> Box<Page> {
    Box::new([0u8; PAGE_SIZE])
}

pub fn random_page(rng: &mut Rng) -> Box<Page> {
    let mut p = zero_page();
    for c in p.chunks_exact_mut(8) {
        c.copy_from_slice(&rng.next().to_le_bytes());
    }
    p
}

/// Flips word `w` of `page` to a different value.
pub fn change_word(page: &mut Page, w: usize, rng: &mut Rng) {
    let at = w * 4;
    let old = u32::from_le_bytes(page[at..at + 4].try_into().unwrap());
    let mut new = rng.next() as u32;
    if new == old {
        new = old ^ 1;
    }
    page[at..at + 4].copy_from_slice(&new.to_le_bytes());
}

/// A reference page and a new page that differs from it in exactly the words
/// for which `changed(w)` is true.
pub fn pair_with(rng: &mut Rng, changed: impl Fn(usize) -> bool) -> (Box<Page>, Box<Page>) {
    let reference = random_page(rng);
    let mut new = reference.clone();
    for w in 0..WORDS_PER_PAGE {
        if changed(w) {
            change_word(&mut new, w, rng);
        }
    }
    (reference, new)
}

/// Run and gap lengths at the marker boundaries.
pub const EDGE_LENGTHS: [usize; 8] = [1, 2, 126, 127, 128, 254, 255, 256];

/// Named (reference, new) pairs: boundary patterns, single words everywhere,
/// periodic patterns, and random pages at every density, scattered and
/// clustered.
pub fn cases() -> Vec<(String, Box<Page>, Box<Page>)> {
    let mut rng = Rng(0xC0FFEE);
    let mut out = Vec::new();
    for &len in &EDGE_LENGTHS {
        for (where_, start) in [("start", 0), ("middle", 300), ("end", WORDS_PER_PAGE - len)] {
            let (r, n) = pair_with(&mut rng, |w| w >= start && w < start + len);
            out.push((format!("run {len} at {where_}"), r, n));
            // The complement: a gap of `len` equal words in a changed page.
            let (r, n) = pair_with(&mut rng, |w| !(w >= start && w < start + len));
            out.push((format!("gap {len} at {where_}"), r, n));
        }
        for &gap in &EDGE_LENGTHS {
            let (r, n) = pair_with(&mut rng, |w| {
                let period = len + gap;
                w % period < len
            });
            out.push((format!("periodic {len} on / {gap} off"), r, n));
        }
    }
    for w in 0..WORDS_PER_PAGE {
        let (r, n) = pair_with(&mut rng, |x| x == w);
        out.push((format!("single word {w}"), r, n));
    }
    let (r, n) = pair_with(&mut rng, |_| false);
    out.push(("unchanged".into(), r, n));
    let (r, n) = pair_with(&mut rng, |_| true);
    out.push(("all changed".into(), r, n));
    for &density in &[0.001, 0.01, 0.05, 0.25, 0.5, 0.9, 1.0] {
        for round in 0..24 {
            let target = (density * WORDS_PER_PAGE as f64).round() as usize;
            let mut set = vec![false; WORDS_PER_PAGE];
            let clustered = round % 2 == 1;
            let mut marked = 0;
            while marked < target {
                let start = rng.below(WORDS_PER_PAGE);
                let len = if clustered { 1 + rng.below(16) } else { 1 };
                for bit in set.iter_mut().skip(start).take(len) {
                    if !*bit && marked < target {
                        *bit = true;
                        marked += 1;
                    }
                }
            }
            let (r, n) = pair_with(&mut rng, |w| set[w]);
            let kind = if clustered { "clustered" } else { "scattered" };
            out.push((format!("{kind} {density} #{round}"), r, n));
        }
    }
    out
}

/// Checks one kernel against the scalar reference on one case; returns the
/// failures found (empty when the kernel agrees).
pub fn check_case(codec: &Codec, name: &str, reference: &Page, new: &Page) -> Vec<String> {
    let mut failures = Vec::new();
    let k = codec.kernel();
    let mut ref_s = Box::new(*reference);
    let mut out_s = vec![0u8; MAX_ENCODED_LEN];
    let n_s = scalar::encode(new, &mut ref_s, &mut out_s).expect("scalar fits");
    out_s.truncate(n_s);

    let mut ref_k = Box::new(*reference);
    let mut out_k = vec![0xFFu8; MAX_ENCODED_LEN];
    match codec.encode(new, &mut ref_k, &mut out_k) {
        Ok(n) if out_k[..n] == out_s[..] && *ref_k == *new => {}
        Ok(n) => failures.push(format!("{k} {name}: encode gave {n} bytes, scalar {n_s}")),
        Err(e) => failures.push(format!("{k} {name}: encode failed: {e}")),
    }

    // A roomy buffer (the run-dense path needs slack past the worst case)
    // gives the same bytes; a guard past it survives.
    let mut ref_k = Box::new(*reference);
    let mut roomy = vec![0x5Au8; MAX_ENCODED_LEN + 256];
    match codec.encode(new, &mut ref_k, &mut roomy[..MAX_ENCODED_LEN + 128]) {
        Ok(n)
            if roomy[..n] == out_s[..]
                && *ref_k == *new
                && roomy[MAX_ENCODED_LEN + 128..].iter().all(|&b| b == 0x5A) => {}
        other => failures.push(format!("{k} {name}: roomy buffer gave {other:?}")),
    }

    // Exactly enough room succeeds; one byte less fails and leaves the
    // reference untouched. A guard byte past the buffer must survive.
    let mut ref_k = Box::new(*reference);
    let mut buf = vec![0xA5u8; n_s + 1];
    let (exact, guard) = buf.split_at_mut(n_s);
    if codec.encode(new, &mut ref_k, exact).ok() != Some(n_s)
        || exact != &out_s[..]
        || *ref_k != *new
    {
        failures.push(format!("{k} {name}: exact-size buffer failed"));
    }
    if guard != [0xA5] {
        failures.push(format!("{k} {name}: wrote past an exact-size buffer"));
    }
    let mut ref_k = Box::new(*reference);
    let mut buf = vec![0xA5u8; n_s];
    let (short, guard) = buf.split_at_mut(n_s - 1);
    if codec.encode(new, &mut ref_k, short).is_ok() {
        failures.push(format!("{k} {name}: buffer one byte short accepted"));
    }
    if *ref_k != *reference {
        failures.push(format!("{k} {name}: failed encode changed the reference"));
    }
    if guard != [0xA5] {
        failures.push(format!("{k} {name}: wrote past a short buffer"));
    }

    // Decoding the scalar bytes onto the old page gives the new page, with
    // the same length as the scalar decoder reports.
    let mut page_k = Box::new(*reference);
    match codec.decode(&out_s, &mut page_k) {
        Ok(used) if used == n_s && *page_k == *new => {}
        Ok(used) => failures.push(format!(
            "{k} {name}: decode used {used} of {n_s} or wrong page"
        )),
        Err(e) => failures.push(format!("{k} {name}: decode failed: {e}")),
    }
    // Every truncation of the encoding is rejected, like the scalar decoder.
    if n_s > 1 {
        for cut in [0, 1, n_s / 2, n_s - 1] {
            let mut p1 = Box::new(*reference);
            let mut p2 = Box::new(*reference);
            let a = scalar::decode(&out_s[..cut], &mut p1);
            let b = codec.decode(&out_s[..cut], &mut p2);
            if a != b || a.is_ok() {
                failures.push(format!("{k} {name}: truncation at {cut}: {a:?} vs {b:?}"));
            }
        }
    }
    if codec.pages_equal(reference, new) != (reference == new) {
        failures.push(format!("{k} {name}: pages_equal wrong"));
    }
    failures
}

/// Runs every case against one kernel; returns (checked, failures).
pub fn check_kernel(codec: &Codec) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let cases = cases();
    let scalar = Codec::new(ckpt_simd::Kernel::Scalar).expect("scalar");
    let key = ckpt_simd::FingerprintKey::from_seed(0x5EED);
    for (name, r, n) in &cases {
        failures.extend(check_case(codec, name, r, n));
        for (which, page) in [("reference", r), ("new", n)] {
            let (got, want) = (
                codec.fingerprint(page, &key),
                scalar.fingerprint(page, &key),
            );
            if got != want {
                failures.push(format!(
                    "{name}: fingerprint of {which} {got:#x}, scalar {want:#x}"
                ));
            }
        }
        // The two halves of the encoder give the encoder's bytes.
        let map = codec.change_map(n, r);
        if map != scalar::change_map(n, r) {
            failures.push(format!("{name}: change map differs from scalar"));
        }
        let fused = codec.change_map_fingerprint(n, r, &key);
        if fused != (map, scalar.fingerprint(n, &key)) {
            failures.push(format!(
                "{name}: fused change map and fingerprint differ from the two apart"
            ));
        }
        let (mut r1, mut r2) = (r.clone(), r.clone());
        let (mut o1, mut o2) = (
            vec![0u8; MAX_ENCODED_LEN + 64],
            vec![0u8; MAX_ENCODED_LEN + 64],
        );
        let a = scalar::encode(n, &mut r1, &mut o1).map(|k| o1[..k].to_vec());
        let b = codec
            .encode_changes(&map, n, &mut r2, &mut o2)
            .map(|k| o2[..k].to_vec());
        if a != b || r1 != r2 {
            failures.push(format!(
                "{name}: change map + encode_changes differs from encode"
            ));
        }
        let (fr, fnew) = (codec.fingerprint(r, &key), codec.fingerprint(n, &key));
        if (r[..] == n[..]) != (fr == fnew) {
            failures.push(format!(
                "{name}: pages equal {}, fingerprints equal {}",
                r[..] == n[..],
                fr == fnew
            ));
        }
    }
    (cases.len(), failures)
}

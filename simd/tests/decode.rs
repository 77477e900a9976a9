//! The decoder faces the network: every malformed page encoding gets its own
//! typed error from every kernel, and no input makes it panic.

mod common;

use ckpt_simd::{scalar, validate, Codec, DecodeError, Form, Kernel, Page, MAX_ENCODED_LEN};
use proptest::prelude::*;

fn codecs() -> Vec<Codec> {
    Kernel::ALL
        .iter()
        .filter_map(|&k| Codec::new(k).ok())
        .collect()
}

fn copy_run(words: u8) -> Vec<u8> {
    let mut v = vec![words];
    v.extend(std::iter::repeat_n(0xAB, 4 * words as usize));
    v
}

#[test]
fn malformed_encodings_get_distinct_typed_errors() {
    let full_skips = [0xFFu8; 8]; // 8 x 127 = 1016 words skipped
    let table: Vec<(&str, Vec<u8>, DecodeError)> = vec![
        ("empty input", vec![], DecodeError::Empty),
        (
            "FULL with no data",
            vec![0x80],
            DecodeError::TruncatedFull { available: 0 },
        ),
        (
            "FULL one byte short",
            [vec![0x80], vec![7; 4095]].concat(),
            DecodeError::TruncatedFull { available: 4095 },
        ),
        (
            "zero-length copy inside delta",
            vec![0x81, 0x00],
            DecodeError::ZeroLengthRun { offset: 1 },
        ),
        (
            "zero-length skip inside delta",
            vec![0x81, 0x80],
            DecodeError::ZeroLengthRun { offset: 1 },
        ),
        (
            "skip past page end",
            [&full_skips[..], &[0x89]].concat(),
            DecodeError::RunPastPageEnd {
                offset: 8,
                word: 1016,
                run_words: 9,
            },
        ),
        (
            "copy past page end",
            [&full_skips[..], &[0x09]].concat(),
            DecodeError::RunPastPageEnd {
                offset: 8,
                word: 1016,
                run_words: 9,
            },
        ),
        (
            "truncated copy run",
            vec![0x02, 1, 2, 3, 4, 5],
            DecodeError::TruncatedRun {
                offset: 1,
                needed: 8,
                available: 5,
            },
        ),
        (
            "markers end before the page is covered",
            vec![0xFF, 0xFF],
            DecodeError::TruncatedMarkers {
                offset: 2,
                covered_words: 254,
            },
        ),
        (
            "copy run then nothing",
            copy_run(3),
            DecodeError::TruncatedMarkers {
                offset: 13,
                covered_words: 3,
            },
        ),
        (
            "eight skips, no final run",
            full_skips.to_vec(),
            DecodeError::TruncatedMarkers {
                offset: 8,
                covered_words: 1016,
            },
        ),
    ];
    for (name, input, expected) in &table {
        assert_eq!(validate(input).err(), Some(*expected), "validate: {name}");
        let mut page = [0u8; 4096];
        assert_eq!(
            scalar::decode(input, &mut page).err(),
            Some(*expected),
            "scalar: {name}"
        );
        for codec in codecs() {
            let mut page = [0u8; 4096];
            assert_eq!(
                codec.decode(input, &mut page).err(),
                Some(*expected),
                "{}: {name}",
                codec.kernel()
            );
        }
    }
    // Each row exercises a different rule: the error variants are distinct.
    let kinds: std::collections::HashSet<_> = table
        .iter()
        .map(|(_, _, e)| std::mem::discriminant(e))
        .collect();
    assert_eq!(kinds.len(), 6);
}

#[test]
fn well_formed_edge_encodings_decode() {
    // Word 0 changed: 01 <4 bytes> FF x8 87 (FORMAT.md's example, 14 bytes).
    let mut input = vec![0x01, 9, 9, 9, 9];
    input.extend([0xFF; 8]);
    input.push(0x87);
    assert_eq!(validate(&input), Ok((Form::Delta, 14)));
    // Trailing bytes after a complete encoding are not consumed.
    input.extend([1, 2, 3]);
    for codec in codecs() {
        let mut page = [0u8; 4096];
        assert_eq!(codec.decode(&input, &mut page), Ok(14));
        assert_eq!(&page[..4], &[9, 9, 9, 9]);
        assert!(page[4..].iter().all(|&b| b == 0));
    }
}

fn arb_pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    // density in 0..=100 %, scattered (cluster 1) or clustered (1..=16).
    (
        any::<u64>(),
        0u32..=100,
        prop_oneof![Just(1usize), 1usize..=16],
    )
        .prop_map(|(seed, pct, cluster)| {
            let mut rng = common::Rng(seed);
            let reference = common::random_page(&mut rng);
            let mut new = reference.clone();
            let target = (pct as usize * 1024) / 100;
            let mut changed = vec![false; 1024];
            let mut n = 0;
            while n < target {
                let s = rng.below(1024);
                for (w, done) in changed.iter_mut().enumerate().skip(s).take(cluster) {
                    if !*done && n < target {
                        *done = true;
                        n += 1;
                        common::change_word(&mut new, w, &mut rng);
                    }
                }
            }
            (reference.to_vec(), new.to_vec())
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..5000), fill in any::<u8>()) {
        let v = validate(&input);
        let mut reference = [fill; 4096];
        let s = scalar::decode(&input, &mut reference);
        prop_assert_eq!(v.map(|(_, n)| n), s);
        for codec in codecs() {
            let mut page = [fill; 4096];
            let k = codec.decode(&input, &mut page);
            prop_assert_eq!(k, s);
            if s.is_ok() {
                prop_assert_eq!(&page[..], &reference[..]);
            }
        }
    }

    #[test]
    fn marker_soup_never_panics(input in proptest::collection::vec(prop_oneof![Just(0x7Fu8), Just(0xFFu8), 1u8..=0x7F, 0x81u8..=0xFF, any::<u8>()], 1..600)) {
        let s = scalar::decode(&input, &mut [0u8; 4096]);
        for codec in codecs() {
            prop_assert_eq!(codec.decode(&input, &mut [0u8; 4096]), s);
        }
    }

    #[test]
    fn encode_then_decode_round_trips((reference, new) in arb_pair()) {
        let reference: Box<Page> = reference.try_into().unwrap();
        let new: Box<Page> = new.try_into().unwrap();
        for codec in codecs() {
            let mut cached = reference.clone();
            let mut out = vec![0u8; MAX_ENCODED_LEN];
            let n = codec.encode(&new, &mut cached, &mut out).unwrap();
            prop_assert_eq!(&cached[..], &new[..]);
            let mut receiver = reference.clone();
            prop_assert_eq!(codec.decode(&out[..n], &mut receiver), Ok(n));
            prop_assert_eq!(&receiver[..], &new[..]);
            prop_assert_eq!(validate(&out[..n]).map(|(_, len)| len), Ok(n));
        }
    }
}

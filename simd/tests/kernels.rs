//! Every kernel this CPU supports against the scalar reference. Kernels the
//! CPU lacks are reported as skipped by name, never counted as passed.

mod common;

use ckpt_simd::{Codec, Kernel};

#[test]
fn every_supported_kernel_matches_the_scalar_reference() {
    let mut checked = 0;
    for kernel in Kernel::ALL {
        match Codec::new(kernel) {
            Ok(codec) => {
                let (cases, failures) = common::check_kernel(&codec);
                assert!(
                    failures.is_empty(),
                    "{} failures, first: {:#?}",
                    failures.len(),
                    &failures[..failures.len().min(10)]
                );
                eprintln!("kernel {kernel}: {cases} cases agree with scalar");
                checked += 1;
            }
            Err(e) => eprintln!("kernel {kernel}: SKIPPED ({e})"),
        }
    }
    assert!(checked >= 1);
}

#[test]
fn forcing_a_missing_kernel_is_an_error() {
    for kernel in Kernel::ALL {
        assert_eq!(Codec::new(kernel).is_ok(), kernel.is_available());
    }
    assert!("avx9".parse::<Kernel>().is_err());
    assert_eq!("AVX2".parse::<Kernel>().unwrap(), Kernel::Avx2);
    assert!(Kernel::best().is_available());
    assert_eq!(Codec::best().kernel(), Kernel::best());
}

#[test]
fn every_single_bit_flip_changes_the_fingerprint() {
    let mut rng = common::Rng(0xF1A9);
    for kernel in Kernel::ALL {
        let Ok(codec) = Codec::new(kernel) else {
            continue;
        };
        for seed in [1u64, 2, 3] {
            let key = ckpt_simd::FingerprintKey::from_seed(seed);
            for base in [common::zero_page(), common::random_page(&mut rng)] {
                let h = codec.fingerprint(&base, &key);
                let mut page = base.clone();
                for bit in 0..page.len() * 8 {
                    page[bit / 8] ^= 1 << (bit % 8);
                    assert_ne!(codec.fingerprint(&page, &key), h, "{kernel}: bit {bit}");
                    page[bit / 8] ^= 1 << (bit % 8);
                }
                assert_eq!(codec.fingerprint(&page, &key), h);
            }
        }
    }
}

#[test]
fn fingerprint_keys_differ_per_draw() {
    let page = common::zero_page();
    let codec = Codec::best();
    let (a, b) = (
        ckpt_simd::FingerprintKey::random(),
        ckpt_simd::FingerprintKey::random(),
    );
    assert_ne!(codec.fingerprint(&page, &a), codec.fingerprint(&page, &b));
}

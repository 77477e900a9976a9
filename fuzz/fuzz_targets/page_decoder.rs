//! Every decoder on arbitrary bytes: the same result as the scalar
//! reference, into a zeroed page and into one pre-filled with 0xFF alike.
#![no_main]

use ckpt_simd::{scalar, validate, Codec, Kernel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reference = [0u8; 4096];
    let expected = scalar::decode(data, &mut reference);
    assert_eq!(validate(data).map(|(_, n)| n), expected);
    for kernel in Kernel::ALL {
        let Ok(codec) = Codec::new(kernel) else { continue };
        let mut zero = [0u8; 4096];
        let mut ones = [0xFFu8; 4096];
        assert_eq!(codec.decode(data, &mut zero), expected);
        assert_eq!(codec.decode(data, &mut ones), expected);
        if expected.is_ok() {
            assert_eq!(zero, reference);
            // Bytes the encoding covers agree whatever the page held before.
            if data.first() == Some(&0x80) {
                assert_eq!(ones, reference);
            }
        }
    }
});

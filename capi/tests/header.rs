//! `include/ckpt.h` is generated from `src/` by cbindgen with `cbindgen.toml`
//! and checked in; this test regenerates it and fails when the checked-in
//! copy differs. `CKPT_BLESS=1 cargo test -p ckpt-capi --test header`
//! rewrites it.

use std::path::Path;

#[test]
fn checked_in_header_matches_the_sources() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen parses src/");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = dir.join("include/ckpt.h");
    let current = std::fs::read(&path).unwrap_or_default();
    if fresh == current {
        return;
    }
    if std::env::var_os("CKPT_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("include/ckpt.h is writable");
        return;
    }
    panic!(
        "include/ckpt.h is stale: regenerate it with \
         `CKPT_BLESS=1 cargo test -p ckpt-capi --test header` and commit it"
    );
}

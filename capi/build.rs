//! Passes the target triple to the tests, which compile the C programs in
//! tests/c and examples/ with the cc crate and need it to pick the compiler.

fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=CKPT_CAPI_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}

//! Plain `fn main` harness (no test threads): qemu-user hangs on programs that
//! start a second thread, so the NEON kernel is checked under emulation here.
//! On any CPU it checks every kernel that CPU supports against the scalar
//! reference and prints `N passed, M failed`.

mod common;

use ckpt_simd::{Codec, Kernel};

fn main() {
    let (mut passed, mut failed) = (0usize, 0usize);
    for kernel in Kernel::ALL {
        let Ok(codec) = Codec::new(kernel) else {
            println!("kernel {kernel}: skipped (not supported by this CPU)");
            continue;
        };
        let (cases, failures) = common::check_kernel(&codec);
        for f in failures.iter().take(20) {
            println!("FAIL {f}");
        }
        failed += failures.len();
        passed += cases.saturating_sub(failures.len());
        println!(
            "kernel {kernel}: {cases} cases, {} failures",
            failures.len()
        );
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

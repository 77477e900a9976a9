use ckpt::conformance;
use ckpt_simd::Codec;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = PathBuf::from(std::env::args().nth(2).unwrap());
    let threads: usize = std::env::args().nth(3).map(|s| s.parse().unwrap()).unwrap_or(1);
    let mut failed = 0;
    let files = conformance::vector_files(&dir).unwrap();
    for f in &files {
        let t = std::time::Instant::now();
        let r = conformance::run_case(f, Codec::best(), threads).unwrap();
        println!("{:?} {:?}", r, t.elapsed());
        if r.failure.is_some() { failed += 1; }
    }
    println!("{} passed, {failed} failed", files.len() - failed);
    ExitCode::SUCCESS
}

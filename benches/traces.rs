//! Criterion: the full send pipeline (stage, compress on one thread, write)
//! over the bundled traces. Each iteration sends the same checkpoints into a
//! fresh sender writing to a sink; `ckpt bench --all` reports the same runs
//! with the floor, latencies and the receiver (results/bench.md).

use ckpt_engine::{Codec, CompressOptions, Sender, SenderOptions, PAGE_SIZE};
use ckpt_lab::bundled_traces;
use ckpt_lab::replay::{send_checkpoint, Checkpoint, Source, TraceSource};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Pages kept in memory per trace for the benchmark.
const MAX_PAGES: usize = 40_000;

/// The first checkpoints of a trace, up to about `MAX_PAGES` pages.
fn load(path: &std::path::Path) -> (Vec<Checkpoint>, u64) {
    let mut source = TraceSource::open(path).expect("bundled trace");
    let mut checkpoints = Vec::new();
    let mut pages = 0;
    while let Some(cp) = source.next_checkpoint().expect("valid trace") {
        if pages + cp.entries.len() > MAX_PAGES && !checkpoints.is_empty() {
            break;
        }
        pages += cp.entries.len();
        checkpoints.push(cp);
    }
    (checkpoints, source.guest_pages())
}

fn traces(c: &mut Criterion) {
    for path in bundled_traces() {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let (checkpoints, guest) = load(&path);
        let pages: usize = checkpoints.iter().skip(1).map(|c| c.entries.len()).sum();
        let mut group = c.benchmark_group(format!("trace/{name}"));
        group.throughput(Throughput::Bytes((pages * PAGE_SIZE) as u64));
        group.sample_size(10);
        group.bench_function("send", |b| {
            b.iter(|| {
                let opts = SenderOptions {
                    compress: CompressOptions {
                        cache_pages: 8192,
                        threads: 1,
                        pin_threads: true,
                        ..CompressOptions::default()
                    },
                    ..SenderOptions::new(guest)
                };
                let mut s = Sender::new(std::io::sink(), Codec::best(), &opts).unwrap();
                for cp in &checkpoints {
                    send_checkpoint(&mut s, cp).unwrap();
                }
                s.finish().unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, traces);
criterion_main!(benches);

//! Criterion: the full send pipeline (stage, compress on one thread, write)
//! over the bundled traces. Each iteration sends the same checkpoints into a
//! fresh sender writing to a sink; `ckpt bench --all` reports the same runs
//! with the floor, latencies and the receiver (results/bench.md).

use ckpt::bundled_traces;
use ckpt_engine::pipeline::{Sender, SenderOptions};
use ckpt_engine::trace::TraceReader;
use ckpt_engine::{CompressOptions, PageBuf, PageType};
use ckpt_simd::{Codec, PAGE_SIZE};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Pages kept in memory per trace for the benchmark.
const MAX_PAGES: usize = 40_000;

type Epoch = (Vec<(u64, PageType)>, Box<[PageBuf]>);

fn load(path: &std::path::Path) -> (Vec<Epoch>, u64) {
    let mut r = TraceReader::open(path).expect("bundled trace");
    let mut epochs = Vec::new();
    let mut pages = 0;
    while let Some(e) = r.next_epoch().expect("valid trace") {
        if pages + e.entries.len() > MAX_PAGES && !epochs.is_empty() {
            break;
        }
        pages += e.entries.len();
        epochs.push((e.entries, e.new));
    }
    let guest = epochs
        .iter()
        .flat_map(|(e, _)| e.iter().map(|x| x.0 + 1))
        .max()
        .unwrap_or(1);
    (epochs, guest)
}

fn traces(c: &mut Criterion) {
    for path in bundled_traces() {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let (epochs, guest) = load(&path);
        let pages: usize = epochs.iter().skip(1).map(|(e, _)| e.len()).sum();
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
                    },
                    ring_pages: 8196,
                    guest_pages: guest,
                };
                let mut s = Sender::new(std::io::sink(), Codec::best(), &opts).unwrap();
                for (k, (entries, new)) in epochs.iter().enumerate() {
                    s.begin_checkpoint().unwrap();
                    for (i, &(pfn, ty)) in entries.iter().enumerate() {
                        s.page(pfn, ty, Some(&new[i].0)).unwrap();
                    }
                    if k == 0 {
                        s.enable_compression().unwrap();
                    }
                    s.end_checkpoint().unwrap();
                }
                s.finish().unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, traces);
criterion_main!(benches);

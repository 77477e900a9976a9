//! Criterion: every supported page kernel, encode and decode, at 0/1/5/25/100%
//! of words changed, next to the memory floor (both pages read, nothing
//! else). `ckpt kernels --bench` measures the same matrix in one run with
//! interleaved repetitions; results/kernels.md holds its latest table.

use ckpt_lab::kernels::{supported, WorkingSet, DENSITIES};
use ckpt_simd::{Codec, PAGE_SIZE};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

/// 32 MiB of page pairs (both pages counted).
const PAIRS: usize = (32 << 20) / (2 * PAGE_SIZE);

fn kernels(c: &mut Criterion) {
    for density in DENSITIES {
        let mut group = c.benchmark_group(format!("kernels/{density}%"));
        group.throughput(Throughput::Bytes((PAIRS * PAGE_SIZE) as u64));
        group.sample_size(10);
        let mut ws = WorkingSet::new(PAIRS, density, 0x5EED);
        let best = Codec::best();
        group.bench_function("floor", |b| b.iter(|| black_box(ws.floor_pass(best))));
        for codec in supported() {
            let mut to_b = true;
            group.bench_function(BenchmarkId::new("encode", codec.kernel()), |b| {
                b.iter(|| {
                    let n = ws.encode_pass(codec, to_b);
                    to_b = !to_b;
                    black_box(n)
                })
            });
            let len = ws.encode_pass(codec, to_b);
            group.bench_function(BenchmarkId::new("decode", codec.kernel()), |b| {
                b.iter(|| ws.decode_pass(codec, len))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);

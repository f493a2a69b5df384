//! Micro-benchmarks of the engine's hot primitives (`cargo bench -p coffer-engine`):
//! the keyed chunker, keyed hashing, compression, the pack writer (a whole
//! chunk → hash → compress → encrypt pass) and index lookups, so that a regression
//! in any of them is visible on its own.

use std::hint::black_box;

use coffer_engine::{RepoParams, primitives::Primitives};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// 8 MiB: half pseudo-random, half text, in 64 KiB runs (like bench/run's datasets).
fn data() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(8 << 20);
    let text = b"coffer backup vault chunk index restore key 0123456789\n".repeat(1200);
    while out.len() < 8 << 20 {
        if (out.len() >> 16) % 2 == 0 {
            for _ in 0..(64 << 10) / 8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.extend_from_slice(&x.to_le_bytes());
            }
        } else {
            out.extend_from_slice(&text[..64 << 10]);
        }
    }
    out
}

fn primitives(c: &mut Criterion) {
    let d = data();
    let p = Primitives::new(RepoParams::default());
    let mut g = c.benchmark_group("primitives");
    g.throughput(Throughput::Bytes(d.len() as u64));
    g.sample_size(10);
    g.bench_function("chunker", |b| b.iter(|| p.chunk(black_box(&d))));
    g.bench_function("keyed_hash", |b| b.iter(|| p.hash(black_box(&d))));
    g.bench_function("compress", |b| b.iter(|| p.compress(black_box(&d))));
    g.bench_function("pack_writer_full_pass", |b| {
        b.iter(|| p.backup_pass(black_box(&d)))
    });
    g.finish();
    // A large file's chunking in the backup: block by block, as each worker does it
    // (one core); a stream's: read into blocks, scanned ahead on all cores.
    let large = d.repeat(8);
    let mut g = c.benchmark_group("large_file");
    g.throughput(Throughput::Bytes(large.len() as u64));
    g.sample_size(10);
    g.bench_function("chunker_in_blocks", |b| {
        b.iter(|| p.chunk_in_blocks(black_box(&large)))
    });
    g.bench_function("stream_chunker", |b| {
        b.iter(|| p.chunk_stream(black_box(&large)))
    });
    g.finish();
}

fn index(c: &mut Criterion) {
    let n = 1_000_000;
    let probe = coffer_engine::primitives::synthetic_index(n);
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("lookup_1000_of_1M", |b| {
        b.iter(|| {
            (0..1000u64)
                .filter(|k| probe(black_box(k * 997 % n as u64)))
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, primitives, index);
criterion_main!(benches);

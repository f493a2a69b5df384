//! Micro-benchmarks of the crypto layer (`cargo bench -p coffer-crypto`): AES-256-GCM
//! sealing and opening of a 64 KiB blob (the default chunk size) in place, keyed BLAKE3
//! chunk ids, the HKDF derivation each pack and metadata object pays once, and a DEK
//! wrap/unwrap under the platform key — so that a regression in any of them shows on
//! its own, apart from the engine's pipeline (`cargo bench -p coffer-engine`).

use std::hint::black_box;

use coffer_crypto::{
    AeadKey, ChunkIdKey, DataKey, PlatformKey, SecretKey, WrappedKey, aead, kdf, labels,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BLOB: usize = 64 << 10;

fn blob() -> Vec<u8> {
    (0..BLOB).map(|i| (i * 31 % 251) as u8).collect()
}

fn aead_and_hash(c: &mut Criterion) {
    let dek = DataKey::generate().expect("system RNG");
    let key = AeadKey::new(&kdf::derive(dek.secret(), labels::PACK, &[7u8; 16]));
    let ids = ChunkIdKey::derive(&dek);
    let data = blob();
    let aad = [0u8; 53];
    let mut g = c.benchmark_group("crypto_64KiB");
    g.throughput(Throughput::Bytes(BLOB as u64));
    let mut buf = Vec::with_capacity(BLOB + aead::TAG_LEN);
    g.bench_function("aes256gcm_seal", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&data);
            key.seal_in_place(aead::counter_nonce(24), &aad, &mut buf);
        })
    });
    let mut sealed = data.clone();
    key.seal_in_place(aead::counter_nonce(24), &aad, &mut sealed);
    g.bench_function("aes256gcm_open", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&sealed);
            key.open_in_place(aead::counter_nonce(24), &aad, &mut buf)
                .expect("authentic");
        })
    });
    g.bench_function("blake3_keyed_chunk_id", |b| {
        b.iter(|| ids.id(black_box(&data)))
    });
    g.finish();
}

fn keys(c: &mut Criterion) {
    let dek = DataKey::generate().expect("system RNG");
    let pmk = PlatformKey::new(
        "coffer:pmk:bench/1".into(),
        &SecretKey::generate().expect("system RNG"),
    );
    let record =
        WrappedKey::seal(&pmk, &dek, "vault", "2026-11-28T00:00:00Z".into()).expect("wrap");
    let mut g = c.benchmark_group("keys");
    g.bench_function("hkdf_pack_key", |b| {
        b.iter(|| kdf::derive(dek.secret(), labels::PACK, black_box(&[9u8; 16])))
    });
    g.bench_function("pmk_wrap_dek", |b| {
        b.iter(|| {
            WrappedKey::seal(&pmk, &dek, "vault", "2026-11-28T00:00:00Z".into()).expect("wrap")
        })
    });
    g.bench_function("pmk_unwrap_dek", |b| {
        b.iter(|| record.open(&pmk).expect("unwrap"))
    });
    g.finish();
}

criterion_group!(benches, aead_and_hash, keys);
criterion_main!(benches);

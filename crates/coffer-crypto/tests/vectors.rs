//! Format test vectors for the crypto layer, committed in `tests/vectors.json`.
//!
//! Every derivation label, the keyed chunk-id hash, AES-256-GCM with associated
//! data, and unwrapping a platform-key-wrapped DEK must give exactly these bytes:
//! a change here is a change of the on-disk format. Regenerate (only for a new
//! format version) with `COFFER_REGEN_VECTORS=1 cargo test -p coffer-crypto --test vectors`.

use std::collections::BTreeMap;

use base64::Engine as _;
use coffer_crypto::{
    AeadKey, ChunkIdKey, DataKey, PlatformKey, SecretKey, WrappedKey, aead, kdf, labels,
    wrap::{KekDescriptor, KekKind, PMK_ALGORITHM, WRAPPED_KEY_VERSION},
};
use serde_json::{Value, json};

const DEK: [u8; 32] = [0x11; 32];
const PMK: [u8; 32] = [0x22; 32];

fn compute() -> BTreeMap<String, Value> {
    let dek = DataKey::from_secret(SecretKey::from_bytes(DEK));
    let mut v = BTreeMap::new();
    let salt = [0xA5u8; 16];
    for (name, label) in [
        ("chunk-id", labels::CHUNK_ID),
        ("chunker", labels::CHUNKER),
        ("pack", labels::PACK),
        ("meta", labels::META),
        ("pmk-wrap", labels::PMK_WRAP),
        ("master-seal", labels::MASTER_SEAL),
    ] {
        v.insert(
            format!("hkdf/{name}/no-salt"),
            json!(hex::encode(kdf::derive(dek.secret(), label, &[]).expose())),
        );
        v.insert(
            format!("hkdf/{name}/salt-a5"),
            json!(hex::encode(
                kdf::derive(dek.secret(), label, &salt).expose()
            )),
        );
    }
    let idk = ChunkIdKey::derive(&dek);
    v.insert("chunk-id/empty".into(), json!(idk.id(b"").to_hex()));
    v.insert(
        "chunk-id/hello".into(),
        json!(idk.id(b"hello coffer").to_hex()),
    );
    let k = AeadKey::new(&kdf::derive(dek.secret(), labels::PACK, &salt));
    let mut buf = b"attack at dawn".to_vec();
    k.seal_in_place(aead::counter_nonce(24), b"associated", &mut buf);
    v.insert(
        "aead/pack-salt-a5/nonce-24/aad-associated".into(),
        json!(hex::encode(&buf)),
    );
    v
}

/// A PMK-wrapped DEK made once; unwrapping it must keep working forever.
fn fixed_wrapped() -> WrappedKey {
    serde_json::from_value(json!({
        "formatVersion": WRAPPED_KEY_VERSION,
        "vaultId": "00000000-0000-0000-0000-000000000001",
        "kek": {"kind": "PlatformManaged", "keyId": "coffer:pmk:test/1", "algorithm": PMK_ALGORITHM},
        "wrappedKey": include_str!("pmk_wrapped.b64").trim(),
        "created": "2026-11-28T00:00:00Z"
    }))
    .unwrap()
}

#[test]
fn vectors_match() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
    let got = compute();
    if std::env::var_os("COFFER_REGEN_VECTORS").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        let pmk = PlatformKey::new("coffer:pmk:test/1".into(), &SecretKey::from_bytes(PMK));
        let dek = DataKey::from_secret(SecretKey::from_bytes(DEK));
        let w = WrappedKey::seal(
            &pmk,
            &dek,
            "00000000-0000-0000-0000-000000000001",
            String::new(),
        )
        .unwrap();
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pmk_wrapped.b64"),
            w.wrapped_key + "\n",
        )
        .unwrap();
        return;
    }
    let want: BTreeMap<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(got, want);
}

#[test]
fn fixed_pmk_wrapped_dek_unwraps() {
    let pmk = PlatformKey::new("coffer:pmk:test/1".into(), &SecretKey::from_bytes(PMK));
    let w = fixed_wrapped();
    assert_eq!(
        w.kek,
        KekDescriptor {
            kind: KekKind::PlatformManaged,
            key_id: "coffer:pmk:test/1".into(),
            algorithm: PMK_ALGORITHM.into()
        }
    );
    assert_eq!(w.open(&pmk).unwrap().secret().expose(), &DEK);
    // Any flipped bit in the wrapped key is refused.
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&w.wrapped_key)
        .unwrap();
    for i in 0..raw.len() {
        let mut r = raw.clone();
        r[i] ^= 1;
        let mut bad = w.clone();
        bad.wrapped_key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r);
        assert!(bad.open(&pmk).is_err(), "bit flip at {i}");
    }
}

//! The HKDF `info` labels: one versioned constant per purpose, each used for
//! exactly one thing. Changing a label changes the on-disk format (see `docs/format.md`).

/// Key of the keyed BLAKE3 hash that names chunks (chunk ids).
pub const CHUNK_ID: &[u8] = b"coffer/v1/chunk-id";
/// Seed of the secret gear table of the content-defined chunker.
pub const CHUNKER: &[u8] = b"coffer/v1/chunker";
/// Per-pack AEAD subkeys; the HKDF salt is the pack's random 128-bit id.
pub const PACK: &[u8] = b"coffer/v1/pack";
/// Per-object AEAD subkeys of metadata objects (index, recovery-point manifests,
/// vault config); the HKDF salt is the object's random 128-bit id.
pub const META: &[u8] = b"coffer/v1/meta";
/// Platform-managed key wrapping of a DEK (AES-256-GCM key wrap).
pub const PMK_WRAP: &[u8] = b"coffer/v1/pmk-wrap";
/// Sealing of instance secrets (the platform key, software key-vault keys) under the
/// instance master key.
pub const MASTER_SEAL: &[u8] = b"coffer/v1/master-seal";
/// Per-object keys of the infrastructure-encryption layer (a second, independent AES-256
/// layer over every stored object); the HKDF salt is the object's random 128-bit salt.
pub const INFRA: &[u8] = b"coffer/v1/infra";

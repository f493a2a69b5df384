//! Keyed BLAKE3 chunk identifiers. The key is derived from the DEK, so a chunk id
//! reveals nothing about the content to anyone without the DEK (no "do you hold
//! this known file?" test against storage).

use std::fmt;

use crate::{kdf, labels, secret::DataKey};

/// The 256-bit identifier of a chunk: keyed BLAKE3 of its plaintext.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The keyed-hash key for chunk ids.
#[derive(Clone)]
pub struct ChunkIdKey([u8; 32]);

impl fmt::Debug for ChunkIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkIdKey(<redacted>)")
    }
}

impl Drop for ChunkIdKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl ChunkIdKey {
    /// Derives the chunk-id key from a vault's DEK.
    pub fn derive(dek: &DataKey) -> Self {
        let k = kdf::derive(dek.secret(), labels::CHUNK_ID, &[]);
        Self(*k.expose())
    }

    /// The id of `data`.
    pub fn id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.0, data).as_bytes())
    }
}

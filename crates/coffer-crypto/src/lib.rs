//! Coffer's cryptographic layer: the only crate that touches key material directly.
//!
//! * [`secret`]: zeroizing key types with redacted `Debug` ([`SecretKey`], [`DataKey`]).
//! * [`kdf`]: HKDF-SHA256 derivation under the versioned labels of [`labels`].
//! * [`aead`]: AES-256-GCM sealing with mandatory associated data.
//! * [`hash`]: keyed BLAKE3 chunk identifiers ([`ChunkId`]).
//! * [`wrap`]: the [`KeyWrapper`] trait that protects a vault's DEK, its
//!   platform-managed implementation, and the self-describing [`WrappedKey`] record.
//!
//! Everything here is built on `aws-lc-rs` and `blake3`; nothing is hand-rolled.

pub mod aead;
pub mod hash;
pub mod kdf;
pub mod labels;
pub mod secret;
pub mod wrap;

pub use aead::AeadKey;
pub use hash::{ChunkId, ChunkIdKey};
pub use secret::{DataKey, SecretBytes, SecretKey};
pub use wrap::{KekDescriptor, KeyWrapper, PlatformKey, WrappedKey};

/// Errors of the crypto layer. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Authentication of a ciphertext failed: wrong key, wrong context, or damaged bytes.
    #[error(
        "authentication failed: the data is damaged or was sealed under a different key or context"
    )]
    Authentication,
    /// A wrapped key or sealed blob is malformed.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The wrapping key cannot unwrap this record (different key id or algorithm).
    #[error("wrong key: {0}")]
    WrongKey(String),
    /// The system random number generator failed.
    #[error("random number generator failure")]
    Random,
}

/// Fills `buf` with cryptographically secure random bytes.
pub fn random_fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| CryptoError::Random)
}

/// Returns `N` cryptographically secure random bytes.
pub fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    random_fill(&mut out)?;
    Ok(out)
}

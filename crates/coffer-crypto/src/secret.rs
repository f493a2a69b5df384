//! Secret key types. Every type here zeroizes on drop, has a redacted `Debug`,
//! and deliberately implements neither `Display` nor `Serialize`.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::CryptoError;

/// A 256-bit secret key (master key, platform key, subkey, ...).
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// Wraps existing key bytes. The caller's copy should itself be zeroizing.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Takes key bytes from a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::Malformed("key length"))?;
        Ok(Self(arr))
    }

    /// A fresh random key from the system CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = Self([0u8; 32]);
        crate::random_fill(&mut k.0)?;
        Ok(k)
    }

    /// The raw key bytes. Keep the borrow short; never log or persist them unsealed.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A backup vault's AES-256 data encryption key (DEK). All per-purpose keys of a
/// vault are derived from it (see [`crate::labels`]); it is only ever stored wrapped.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(SecretKey);

impl DataKey {
    /// A fresh random DEK.
    pub fn generate() -> Result<Self, CryptoError> {
        SecretKey::generate().map(Self)
    }

    /// Wraps existing key material (e.g. just unwrapped from a [`crate::WrappedKey`]).
    pub fn from_secret(key: SecretKey) -> Self {
        Self(key)
    }

    /// The underlying secret, for derivation and wrapping only.
    pub fn secret(&self) -> &SecretKey {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Variable-length secret bytes (e.g. an unsealed private key), zeroized on drop.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are zeroized when this value drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = SecretKey::from_bytes([0xAB; 32]);
        let d = format!(
            "{k:?} {:?} {:?}",
            DataKey::from_secret(k.clone()),
            SecretBytes::new(vec![0xAB; 4])
        );
        assert!(!d.to_lowercase().contains("ab"), "{d}");
        assert!(d.contains("redacted"));
    }
}

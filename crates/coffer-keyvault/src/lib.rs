//! Coffer's key vault key store: the key material of software-protected key vault
//! keys and the Key Vault cryptographic operations on it.
//!
//! Trust boundary: this crate and `coffer-crypto` are the only code that sees a
//! private key in the clear. A [`PrivateKey`] holds PKCS#8 DER in a zeroizing
//! buffer, has a redacted `Debug`, and leaves this crate only sealed
//! ([`PrivateKey::seal`], AES-256-GCM under the instance master key via
//! `coffer_crypto::wrap::seal_with_master`, bound to the key version's identity).
//! Public halves are exported as a JSON Web Key ([`JsonWebKey`]) or PEM.
//!
//! All private-key operations (RSA-OAEP decryption, RSA and ECDSA signatures) go
//! through aws-lc-rs, whose RSA private operations are constant-time (blinded);
//! nothing here is hand-rolled. `RSA1_5` is refused on purpose. HSM-protected keys
//! ([`hsm`]) never leave their PKCS#11 token.

mod alg;
pub mod hsm;
mod key;
mod pem;

pub use alg::{EncryptionAlgorithm, SignatureAlgorithm};
pub use key::{Curve, JsonWebKey, KEY_CACHE_TTL, KeyType, PrivateKey};

/// Key store failures. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// A parameter is invalid for this key (size, curve, algorithm, encoding).
    #[error("{0}")]
    BadParameter(String),
    /// The operation failed cryptographically (e.g. a ciphertext that does not decrypt).
    #[error("{0}")]
    Crypto(String),
    /// The PKCS#11 token failed or is unreachable.
    #[error("{0}")]
    Hsm(String),
}

/// Result alias of this crate.
pub type Result<T, E = KvError> = std::result::Result<T, E>;

/// base64url without padding, as Key Vault writes binary values.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Parses base64url (padding optional).
pub fn from_b64url(s: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim().trim_end_matches('='))
        .map_err(|_| KvError::BadParameter("the value is not valid base64url".into()))
}

//! Envelope encryption: what wraps a vault's DEK.
//!
//! The storage engine only ever sees a [`DataKey`]; it never knows what wrapped it.
//! A [`KeyWrapper`] is a key-encryption key (KEK): the platform-managed key here,
//! a customer-managed key-vault key elsewhere. A [`WrappedKey`] is the
//! self-describing record (format version, KEK kind, full key id with version,
//! algorithm, ciphertext) kept both in the catalog and next to the vault's data, so
//! that the storage plus the KEK suffice to recover a vault.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{
    CryptoError,
    aead::AeadKey,
    kdf, labels,
    secret::{DataKey, SecretKey},
};

/// Current version of the [`WrappedKey`] record.
pub const WRAPPED_KEY_VERSION: u32 = 1;

/// What kind of key encryption key protects a DEK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KekKind {
    /// The instance's platform-managed key (PMK).
    PlatformManaged,
    /// A customer-managed key in a key vault or managed HSM (CMK).
    CustomerManaged,
}

/// Describes a KEK: enough to find it again and to know how it wrapped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KekDescriptor {
    /// PMK or CMK.
    pub kind: KekKind,
    /// Full key identifier including its version (a key-vault `kid` for CMK).
    pub key_id: String,
    /// Wrapping algorithm, in JOSE/Key Vault naming (`A256GCMKW-COFFER`, `RSA-OAEP-256`, `RSA-OAEP`).
    pub algorithm: String,
}

/// Why a KEK could not wrap or unwrap. `Unavailable` carries a stable code so the
/// control plane can surface key-vault failures (permission lost, key disabled, ...).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WrapError {
    /// Cryptographic failure (authentication, malformed record).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The KEK could not be used (access denied, key disabled, vault unreachable, ...).
    #[error("{message}")]
    Unavailable {
        /// Stable error code (e.g. a `UserErrorCMK...` code).
        code: &'static str,
        /// Human-readable message, free of key material.
        message: String,
    },
}

/// A key-encryption key able to wrap and unwrap DEKs.
///
/// `context` binds a wrapped DEK to its vault where the algorithm supports
/// associated data (AES-GCM); RSA-OAEP implementations ignore it, and the binding
/// then comes from the record's `vaultId` being checked by the caller.
///
/// Not required to be `Send`/`Sync`: a customer-managed key's wrapper calls the key
/// vault through the control plane's (single-threaded) catalog connection.
pub trait KeyWrapper {
    /// Which key and algorithm this wrapper uses.
    fn describe(&self) -> KekDescriptor;
    /// Wraps `dek`.
    fn wrap(&self, dek: &DataKey, context: &[u8]) -> Result<Vec<u8>, WrapError>;
    /// Unwraps a DEK produced by [`KeyWrapper::wrap`] with the same key.
    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey, WrapError>;
}

/// The serialised, self-describing wrapped DEK. Contains no secret in the clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrappedKey {
    /// Record format version ([`WRAPPED_KEY_VERSION`]).
    pub format_version: u32,
    /// The backup vault's immutable id; also the wrapping context.
    pub vault_id: String,
    /// The KEK that produced `wrapped_key`.
    pub kek: KekDescriptor,
    /// The wrapped DEK, base64url without padding.
    pub wrapped_key: String,
    /// When this record was made (RFC 3339).
    pub created: String,
}

impl WrappedKey {
    /// Wraps `dek` for vault `vault_id` under `kek`.
    pub fn seal(
        kek: &dyn KeyWrapper,
        dek: &DataKey,
        vault_id: &str,
        created: String,
    ) -> Result<Self, WrapError> {
        let wrapped = kek.wrap(dek, vault_id.as_bytes())?;
        Ok(Self {
            format_version: WRAPPED_KEY_VERSION,
            vault_id: vault_id.to_owned(),
            kek: kek.describe(),
            wrapped_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(wrapped),
            created,
        })
    }

    /// Unwraps the DEK with `kek`, which must be the key this record names.
    pub fn open(&self, kek: &dyn KeyWrapper) -> Result<DataKey, WrapError> {
        if self.format_version != WRAPPED_KEY_VERSION {
            return Err(CryptoError::Malformed("wrapped key version").into());
        }
        let want = kek.describe();
        if want.kind != self.kek.kind || want.key_id != self.kek.key_id {
            return Err(CryptoError::WrongKey(format!(
                "the DEK is wrapped by {}, not {}",
                self.kek.key_id, want.key_id
            ))
            .into());
        }
        let wrapped = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&self.wrapped_key)
            .map_err(|_| CryptoError::Malformed("wrapped key encoding"))?;
        kek.unwrap(&wrapped, self.vault_id.as_bytes())
    }

    /// JSON form, as stored in the catalog and in the vault's `keys/` objects.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("WrappedKey serialises")
    }

    /// Parses the JSON form.
    pub fn from_json(s: &[u8]) -> Result<Self, CryptoError> {
        serde_json::from_slice(s).map_err(|_| CryptoError::Malformed("wrapped key record"))
    }
}

/// The instance's platform-managed key: a random AES-256 key, sealed at rest under
/// the instance master key, that wraps DEKs with AES-256-GCM under a per-wrap subkey
/// HKDF(PMK, `coffer/v1/pmk-wrap`, salt = random 128 bits) and a random 96-bit nonce;
/// associated data = label ‖ key id ‖ vault id. Output: salt ‖ nonce ‖ ciphertext ‖ tag.
pub struct PlatformKey {
    key_id: String,
    key: SecretKey,
}

impl std::fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Algorithm name recorded for platform-key wraps.
pub const PMK_ALGORITHM: &str = "A256GCM-COFFER";

impl PlatformKey {
    /// A platform key with identifier `key_id` (e.g. `coffer:pmk:{instance}/{version}`).
    pub fn new(key_id: String, key: &SecretKey) -> Self {
        Self {
            key_id,
            key: key.clone(),
        }
    }

    fn aad(&self, context: &[u8]) -> Vec<u8> {
        let mut aad =
            Vec::with_capacity(labels::PMK_WRAP.len() + self.key_id.len() + context.len() + 2);
        aad.extend_from_slice(labels::PMK_WRAP);
        aad.push(0);
        aad.extend_from_slice(self.key_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(context);
        aad
    }
}

impl KeyWrapper for PlatformKey {
    fn describe(&self) -> KekDescriptor {
        KekDescriptor {
            kind: KekKind::PlatformManaged,
            key_id: self.key_id.clone(),
            algorithm: PMK_ALGORITHM.into(),
        }
    }

    fn wrap(&self, dek: &DataKey, context: &[u8]) -> Result<Vec<u8>, WrapError> {
        let salt: [u8; 16] = crate::random_array()?;
        let aead = AeadKey::new(&kdf::derive(&self.key, labels::PMK_WRAP, &salt));
        let mut out = salt.to_vec();
        out.extend_from_slice(&aead.seal_random(&self.aad(context), dek.secret().expose())?);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey, WrapError> {
        if wrapped.len() < 16 {
            return Err(CryptoError::Malformed("wrapped key").into());
        }
        let (salt, sealed) = wrapped.split_at(16);
        let aead = AeadKey::new(&kdf::derive(&self.key, labels::PMK_WRAP, salt));
        let plain = zeroize::Zeroizing::new(aead.open_random(&self.aad(context), sealed)?);
        Ok(DataKey::from_secret(SecretKey::from_slice(&plain)?))
    }
}

/// Seals an instance secret (e.g. the platform key) under the instance master key.
/// Output: `nonce ‖ ciphertext ‖ tag`; `purpose` is bound as associated data.
pub fn seal_with_master(
    master: &SecretKey,
    purpose: &str,
    secret: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let k = kdf::derive(master, labels::MASTER_SEAL, purpose.as_bytes());
    AeadKey::new(&k).seal_random(purpose.as_bytes(), secret)
}

/// Opens what [`seal_with_master`] sealed for the same `purpose`.
pub fn open_with_master(
    master: &SecretKey,
    purpose: &str,
    sealed: &[u8],
) -> Result<crate::SecretBytes, CryptoError> {
    let k = kdf::derive(master, labels::MASTER_SEAL, purpose.as_bytes());
    AeadKey::new(&k)
        .open_random(purpose.as_bytes(), sealed)
        .map(crate::SecretBytes::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmk_round_trip_and_binding() {
        let pmk = PlatformKey::new("coffer:pmk:test/1".into(), &SecretKey::from_bytes([7; 32]));
        let dek = DataKey::generate().unwrap();
        let rec = WrappedKey::seal(&pmk, &dek, "vault-a", "2026-01-01T00:00:00Z".into()).unwrap();
        assert_eq!(rec.open(&pmk).unwrap(), dek);
        // Replaying the record for another vault fails authentication.
        let mut other = rec.clone();
        other.vault_id = "vault-b".into();
        assert!(other.open(&pmk).is_err());
        // Another platform key is refused before any crypto.
        let pmk2 = PlatformKey::new("coffer:pmk:test/2".into(), &SecretKey::from_bytes([7; 32]));
        assert!(matches!(
            rec.open(&pmk2),
            Err(WrapError::Crypto(CryptoError::WrongKey(_)))
        ));
        assert!(!rec.to_json().contains(&hex::encode(dek.secret().expose())));
    }

    #[test]
    fn master_seal_binds_purpose() {
        let m = SecretKey::from_bytes([1; 32]);
        let s = seal_with_master(&m, "pmk", b"secret").unwrap();
        assert_eq!(open_with_master(&m, "pmk", &s).unwrap().expose(), b"secret");
        assert!(open_with_master(&m, "other", &s).is_err());
        assert!(open_with_master(&SecretKey::from_bytes([2; 32]), "pmk", &s).is_err());
    }
}

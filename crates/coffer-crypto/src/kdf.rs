//! HKDF-SHA256 (RFC 5869) key derivation via aws-lc-rs.

use aws_lc_rs::hkdf;

use crate::secret::SecretKey;

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// Derives a 256-bit subkey: HKDF-SHA256(ikm = `key`, salt = `salt`, info = `label`).
pub fn derive(key: &SecretKey, label: &[u8], salt: &[u8]) -> SecretKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(key.expose());
    let info = [label];
    let okm = prk
        .expand(&info, Len32)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let mut out = [0u8; 32];
    okm.fill(&mut out)
        .expect("buffer length matches requested length");
    let key = SecretKey::from_bytes(out);
    zeroize::Zeroize::zeroize(&mut out);
    key
}

//! AES-256-GCM with mandatory associated data, via aws-lc-rs.
//!
//! Nonce discipline is the caller's: [`AeadKey::seal_in_place`] takes an explicit
//! 96-bit nonce for keys that are derived per pack or per object (where a counter
//! or offset is unique by construction), and [`AeadKey::seal_random`] prefixes a
//! random nonce for long-lived keys that seal few objects.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::{CryptoError, secret::SecretKey};

/// Length of the GCM authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Length of a GCM nonce.
pub const NONCE_BYTES: usize = NONCE_LEN;

/// An AES-256-GCM key ready for use.
pub struct AeadKey(LessSafeKey);

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

impl AeadKey {
    /// Prepares `key` for AES-256-GCM.
    pub fn new(key: &SecretKey) -> Self {
        let unbound =
            UnboundKey::new(&AES_256_GCM, key.expose()).expect("32-byte key is valid for AES-256");
        Self(LessSafeKey::new(unbound))
    }

    /// Encrypts `buf` in place and appends the tag. `nonce` must never repeat under this key.
    pub fn seal_in_place(&self, nonce: [u8; NONCE_BYTES], aad: &[u8], buf: &mut Vec<u8>) {
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .expect("AES-GCM sealing cannot fail for in-memory buffers below 64 GiB");
    }

    /// Encrypts `buf[..buf.len() - TAG_LEN]` in place and writes its tag into the last
    /// [`TAG_LEN`] bytes (sealing a blob where it lies in a pack buffer). `nonce` must
    /// never repeat under this key.
    ///
    /// # Panics
    /// If `buf` is shorter than a tag.
    pub fn seal_in_slice(&self, nonce: [u8; NONCE_BYTES], aad: &[u8], buf: &mut [u8]) {
        let (plain, tag_out) = buf.split_at_mut(buf.len() - TAG_LEN);
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), plain)
            .expect("AES-GCM sealing cannot fail for in-memory buffers below 64 GiB");
        tag_out.copy_from_slice(tag.as_ref());
    }

    /// Seals the plaintext `head ‖ body` into `out`, which must be exactly
    /// `head.len() + body.len() + TAG_LEN` bytes: the same ciphertext and tag as
    /// [`AeadKey::seal_in_place`] of the concatenation, without copying `body` first
    /// (an incompressible chunk goes from the read buffer into the pack encrypted).
    /// `nonce` must never repeat under this key.
    ///
    /// # Panics
    /// If `out` has another length.
    pub fn seal_concat_into(
        &self,
        nonce: [u8; NONCE_BYTES],
        aad: &[u8],
        head: &[u8],
        body: &[u8],
        out: &mut [u8],
    ) {
        assert_eq!(
            out.len(),
            head.len() + body.len() + TAG_LEN,
            "sealed length"
        );
        let (head_out, body_out) = out.split_at_mut(head.len());
        self.0
            .seal_out_of_place_scatter(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                head,
                head_out,
                body,
                body_out,
            )
            .expect("AES-GCM sealing cannot fail for in-memory buffers below 64 GiB");
    }

    /// Decrypts `buf` (ciphertext ‖ tag) in place and truncates it to the plaintext.
    pub fn open_in_place(
        &self,
        nonce: [u8; NONCE_BYTES],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let len = self
            .0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map_err(|_| CryptoError::Authentication)?
            .len();
        buf.truncate(len);
        Ok(())
    }

    /// Seals `plaintext` under a fresh random nonce: output is `nonce ‖ ciphertext ‖ tag`.
    pub fn seal_random(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce: [u8; NONCE_BYTES] = crate::random_array()?;
        let mut buf = Vec::with_capacity(NONCE_BYTES + plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(nonce, aad, &mut buf);
        let mut out = Vec::with_capacity(NONCE_BYTES + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens the output of [`AeadKey::seal_random`].
    pub fn open_random(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_BYTES + TAG_LEN {
            return Err(CryptoError::Malformed("sealed object"));
        }
        let (nonce, ct) = sealed.split_at(NONCE_BYTES);
        let mut buf = ct.to_vec();
        self.open_in_place(
            nonce.try_into().expect("split at nonce length"),
            aad,
            &mut buf,
        )?;
        Ok(buf)
    }
}

/// Builds a 96-bit nonce from a 64-bit counter (big-endian in the last 8 bytes).
pub fn counter_nonce(counter: u64) -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AeadKey {
        AeadKey::new(&SecretKey::from_slice(&[7u8; 32]).unwrap())
    }

    /// The slice and scatter forms produce exactly what sealing the whole plaintext in
    /// place does (packs written either way read alike), and open back.
    #[test]
    fn slice_and_concat_seal_like_in_place() {
        let k = key();
        let nonce = counter_nonce(4096);
        for body_len in [0usize, 1, 15, 16, 17, 4095, 70_000] {
            let body: Vec<u8> = (0..body_len).map(|i| (i * 31 % 251) as u8).collect();
            let mut plain = vec![1u8];
            plain.extend_from_slice(&body);
            let mut whole = plain.clone();
            k.seal_in_place(nonce, b"aad", &mut whole);

            let mut slice = plain.clone();
            slice.resize(plain.len() + TAG_LEN, 0xee);
            k.seal_in_slice(nonce, b"aad", &mut slice);
            assert_eq!(slice, whole, "slice, body {body_len}");

            let mut out = vec![0xee; plain.len() + TAG_LEN];
            k.seal_concat_into(nonce, b"aad", &[1u8], &body, &mut out);
            assert_eq!(out, whole, "concat, body {body_len}");

            k.open_in_place(nonce, b"aad", &mut out).unwrap();
            assert_eq!(out, plain);
            let mut other = whole.clone();
            assert!(k.open_in_place(nonce, b"other", &mut other).is_err());
        }
    }
}

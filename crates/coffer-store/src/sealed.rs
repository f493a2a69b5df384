//! [`SealedStore`]: infrastructure encryption, a second and independent AES-256-GCM
//! layer over every object of another store, under a platform-managed key that has
//! nothing to do with the vault's DEK.
//!
//! Object layout: `"CFIE" ‖ version (1) ‖ 3 zero bytes ‖ salt (16)`, then the plaintext in
//! segments of 64 KiB, each sealed with HKDF(infra key, `coffer/v1/infra`, salt), nonce =
//! segment number, associated data = object name ‖ segment number ‖ final flag. There is
//! always at least one segment (possibly empty) and the last one is flagged, so truncation,
//! reordering, or moving an object to another name fails authentication; range reads
//! decrypt only the segments they touch.

use std::sync::Arc;

use coffer_crypto::{AeadKey, SecretKey, aead, kdf, labels};

use crate::{ObjectKey, ObjectMeta, ObjectStore, StoreError};

const MAGIC: &[u8; 4] = b"CFIE";
const HEADER: u64 = 24;
const SEG: u64 = 64 * 1024;
const TAG: u64 = aead::TAG_LEN as u64;

/// A store that seals every object of an inner store under an infrastructure key.
pub struct SealedStore {
    inner: Arc<dyn ObjectStore>,
    key: SecretKey,
}

impl std::fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Number of segments of a plaintext of `len` bytes.
fn segments(len: u64) -> u64 {
    len.div_ceil(SEG).max(1)
}

/// Plaintext length of a sealed object of `total` bytes.
fn plain_len(total: u64) -> Option<u64> {
    let body = total.checked_sub(HEADER)?;
    let n = body.div_ceil(SEG + TAG).max(1);
    body.checked_sub(n * TAG)
}

impl SealedStore {
    /// Wraps `inner`; `key` is the vault's infrastructure key.
    pub fn new(inner: Arc<dyn ObjectStore>, key: SecretKey) -> Self {
        Self { inner, key }
    }

    fn aead(&self, salt: &[u8]) -> AeadKey {
        AeadKey::new(&kdf::derive(&self.key, labels::INFRA, salt))
    }

    fn aad(key: &ObjectKey, seg: u64, last: bool) -> Vec<u8> {
        let mut aad = key.as_str().as_bytes().to_vec();
        aad.extend_from_slice(&seg.to_be_bytes());
        aad.push(u8::from(last));
        aad
    }

    fn corrupt(key: &ObjectKey, reason: &'static str) -> StoreError {
        StoreError::Corrupt {
            key: key.clone(),
            reason,
        }
    }

    fn salt(&self, key: &ObjectKey, header: &[u8]) -> Result<[u8; 16], StoreError> {
        if header.len() < HEADER as usize
            || &header[..4] != MAGIC
            || header[4] != 1
            || header[5..8] != [0, 0, 0]
        {
            return Err(Self::corrupt(key, "bad infrastructure-encryption header"));
        }
        Ok(header[8..24].try_into().expect("16 bytes"))
    }

    /// Decrypts segments `first..` from `ct` (which starts at segment `first`).
    fn open_segments(
        &self,
        key: &ObjectKey,
        salt: &[u8],
        first: u64,
        total_segments: u64,
        ct: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let aead = self.aead(salt);
        let mut out = Vec::with_capacity(ct.len());
        for (i, seg) in ct.chunks((SEG + TAG) as usize).enumerate() {
            let n = first + i as u64;
            let mut buf = seg.to_vec();
            aead.open_in_place(
                aead::counter_nonce(n),
                &Self::aad(key, n, n + 1 == total_segments),
                &mut buf,
            )
            .map_err(|_| {
                Self::corrupt(key, "infrastructure-encryption layer fails authentication")
            })?;
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }
}

impl ObjectStore for SealedStore {
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), StoreError> {
        let salt: [u8; 16] = coffer_crypto::random_array().map_err(|_| {
            StoreError::io(
                key.to_string(),
                std::io::Error::other("random number generator failure"),
            )
        })?;
        let aead = self.aead(&salt);
        let n = segments(data.len() as u64);
        let mut out = Vec::with_capacity(HEADER as usize + data.len() + (n * TAG) as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[1, 0, 0, 0]);
        out.extend_from_slice(&salt);
        for i in 0..n {
            let start = (i * SEG) as usize;
            let end = ((i + 1) * SEG).min(data.len() as u64) as usize;
            let mut buf = data[start.min(end)..end].to_vec();
            aead.seal_in_place(
                aead::counter_nonce(i),
                &Self::aad(key, i, i + 1 == n),
                &mut buf,
            );
            out.extend_from_slice(&buf);
        }
        self.inner.put(key, &out)
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StoreError> {
        let raw = self.inner.get(key)?;
        let salt = self.salt(key, &raw)?;
        let plain =
            plain_len(raw.len() as u64).ok_or_else(|| Self::corrupt(key, "truncated object"))?;
        self.open_segments(key, &salt, 0, segments(plain), &raw[HEADER as usize..])
    }

    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let size = self
            .size(key)?
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        StoreError::check_range(key, offset, len, size)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let total_segments = segments(size);
        let (first, last) = (offset / SEG, (offset + len - 1) / SEG);
        let header = self.inner.get_range(key, 0, HEADER)?;
        let salt = self.salt(key, &header)?;
        let start = HEADER + first * (SEG + TAG);
        let end = (HEADER + (last + 1) * (SEG + TAG)).min(HEADER + size + total_segments * TAG);
        let ct = self.inner.get_range(key, start, end - start)?;
        let plain = self.open_segments(key, &salt, first, total_segments, &ct)?;
        let skip = (offset - first * SEG) as usize;
        Ok(plain[skip..skip + len as usize].to_vec())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(self
            .inner
            .list(prefix)?
            .into_iter()
            .map(|m| ObjectMeta {
                size: plain_len(m.size).unwrap_or(0),
                key: m.key,
            })
            .collect())
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.inner.delete(key)
    }

    fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        match self.inner.size(key)? {
            None => Ok(None),
            Some(total) => plain_len(total)
                .map(Some)
                .ok_or_else(|| Self::corrupt(key, "truncated object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;

    #[test]
    fn round_trip_ranges_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalStore::open(dir.path()).unwrap());
        let s = SealedStore::new(local.clone(), SecretKey::from_bytes([9; 32]));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for len in [0usize, 1, 65_535, 65_536, 65_537, 300_000] {
            let k = ObjectKey::new(format!("data/x{len}")).unwrap();
            s.put(&k, &data[..len]).unwrap();
            assert_eq!(s.get(&k).unwrap(), &data[..len]);
            assert_eq!(s.size(&k).unwrap(), Some(len as u64));
            if len >= 1064 {
                let probe = &data[1000..1064];
                assert!(!local.get(&k).unwrap().windows(64).any(|w| w == probe));
            }
            for (off, l) in [
                (0u64, 1u64),
                (65_530, 20),
                (100, 70_000),
                (len as u64 / 2, len as u64 / 2),
            ] {
                if off + l <= len as u64 {
                    assert_eq!(
                        s.get_range(&k, off, l).unwrap(),
                        &data[off as usize..(off + l) as usize]
                    );
                }
                // The default read_once: up to the buffer's length or the object's end.
                let mut buf = vec![0u8; l as usize + 100];
                let got = s.read_once(&k, off, &mut buf).unwrap();
                let want = &data[(off as usize).min(len)..(off as usize + buf.len()).min(len)];
                assert_eq!(&buf[..got], want);
            }
        }
        assert_eq!(
            s.list("data/")
                .unwrap()
                .iter()
                .find(|m| m.key.as_str() == "data/x300000")
                .unwrap()
                .size,
            300_000
        );
        // Any flipped byte, a truncation, a rename or another key: refused.
        let k = ObjectKey::new("data/x300000").unwrap();
        let raw = local.get(&k).unwrap();
        for i in [0usize, 5, 10, 30, 70_000, raw.len() - 1] {
            let mut b = raw.clone();
            b[i] ^= 1;
            local.put(&k, &b).unwrap();
            assert!(s.get(&k).is_err(), "flip at {i}");
        }
        local.put(&k, &raw[..raw.len() - 16 - 100]).unwrap();
        assert!(s.get(&k).is_err(), "truncation");
        let other = ObjectKey::new("data/moved").unwrap();
        local.put(&other, &raw).unwrap();
        assert!(s.get(&other).is_err(), "moved object");
        local.put(&k, &raw).unwrap();
        assert!(
            SealedStore::new(local, SecretKey::from_bytes([8; 32]))
                .get(&k)
                .is_err()
        );
    }
}

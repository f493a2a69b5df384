//! Object storage for a vault's encrypted data.
//!
//! The storage engine talks to storage only through [`ObjectStore`]: a flat
//! namespace of immutable objects addressed by [`ObjectKey`]s such as
//! `data/3f/3f9a...`. Everything stored is already encrypted by the engine; a store
//! never sees plaintext. [`LocalStore`] keeps objects in a directory with atomic,
//! fsynced writes; S3 or Azure Blob (through `object_store`) fit the same trait.

mod local;
mod sealed;

pub use local::{CRASH_AFTER_WRITES_ENV, LocalStore};
pub use sealed::SealedStore;

use std::fmt;

/// Alignment of buffers, offsets and lengths for [`ObjectStore::read_once`] to bypass
/// the cache (covers 512-byte and 4 KiB logical blocks).
pub const DIRECT_IO_ALIGN: usize = 4096;

/// The name of an object: `/`-separated segments of `[a-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates and builds a key. Segments are non-empty, made of `[a-z0-9._-]`, and not `.`/`..`.
    pub fn new(key: impl Into<String>) -> Result<Self, StoreError> {
        let key = key.into();
        let ok = !key.is_empty()
            && key.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if ok {
            Ok(Self(key))
        } else {
            Err(StoreError::InvalidKey(key))
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({})", self.0)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object found by [`ObjectStore::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No object has this key.
    #[error("object {0} not found")]
    NotFound(ObjectKey),
    /// A key that does not follow the naming rules.
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// A read past the end of an object.
    #[error("range {offset}+{len} is outside object {key} of {size} bytes")]
    Range {
        /// Object key.
        key: ObjectKey,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// Actual size.
        size: u64,
    },
    /// An object of an encrypted layer failed authentication or is malformed.
    #[error("object {key} is damaged: {reason}")]
    Corrupt {
        /// Object key.
        key: ObjectKey,
        /// What is wrong.
        reason: &'static str,
    },
    /// The underlying storage failed.
    #[error("storage I/O error on {what}: {source}")]
    Io {
        /// What was being accessed.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// `Ok` when `offset..offset + len` lies inside an object of `size` bytes.
    pub(crate) fn check_range(
        key: &ObjectKey,
        offset: u64,
        len: u64,
        size: u64,
    ) -> Result<(), Self> {
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Self::Range {
                key: key.clone(),
                offset,
                len,
                size,
            });
        }
        Ok(())
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// A flat store of immutable objects.
///
/// Guarantees every implementation must give:
/// * `put` is atomic (readers see the whole object or none) and durable when it returns.
/// * `delete` of a missing object succeeds (deletions are idempotent).
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Stores `data` under `key`, replacing any existing object atomically.
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), StoreError>;
    /// Reads a whole object.
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StoreError>;
    /// Reads `len` bytes at `offset`.
    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, StoreError>;
    /// Reads into `buf` the bytes at `offset`, up to `buf.len()` or the object's end,
    /// and returns how many it read. For a reader that streams through an object once
    /// (restore): a store may bypass its cache, and [`LocalStore`] does (`O_DIRECT`)
    /// when `buf`'s address, `offset` and `buf.len()` are multiples of
    /// [`DIRECT_IO_ALIGN`]. The default reads through [`ObjectStore::get_range`].
    fn read_once(&self, key: &ObjectKey, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let size = self
            .size(key)?
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        let n = (buf.len() as u64).min(size.saturating_sub(offset));
        if n == 0 {
            return Ok(0);
        }
        let data = self.get_range(key, offset, n)?;
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }
    /// Lists objects whose key starts with `prefix` (a directory-like prefix such as `data/`).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, key: &ObjectKey) -> Result<(), StoreError>;
    /// Size of an object, or `None` if it does not exist.
    fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        assert!(ObjectKey::new("data/ab/abcdef").is_ok());
        for bad in ["", "/a", "a//b", "a/../b", "A", "a b", "a/", "..", "a/./b"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?}");
        }
    }
}

//! The chunk index: chunk id → (pack, offset, length), built in memory from the
//! sealed index objects (each a list of [`PackDirectory`]s).
//!
//! Memory per chunk: a 32-byte id plus a 16-byte [`BlobLoc`] in a hash table keyed
//! by the (already uniformly random) id bits, with no per-entry allocation.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

use coffer_crypto::ChunkId;
use coffer_store::ObjectKey;

use crate::{
    format::{BlobKind, ObjectId},
    pack::{PackDirectory, PackEntry},
};

/// Hashes a [`ChunkId`] by taking its first 8 bytes: ids are keyed hashes, so
/// these bits are already uniform.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `Hash for [u8; 32]` writes the bytes once (no length prefix for arrays).
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
}

pub(crate) type IdMap<V> = HashMap<ChunkId, V, BuildHasherDefault<IdHasher>>;
pub(crate) type IdSet = std::collections::HashSet<ChunkId, BuildHasherDefault<IdHasher>>;

const TREE_BIT: u32 = 1 << 31;

/// Where a blob lives (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlobLoc {
    pack: u32,
    offset: u32,
    len: u32,
    raw_len_kind: u32,
}

impl BlobLoc {
    pub(crate) fn kind(&self) -> BlobKind {
        if self.raw_len_kind & TREE_BIT != 0 {
            BlobKind::Tree
        } else {
            BlobKind::Data
        }
    }
    pub(crate) fn raw_len(&self) -> u32 {
        self.raw_len_kind & !TREE_BIT
    }
    /// The pack's number in the index (packs of one index compare by it).
    pub(crate) fn pack_number(&self) -> u32 {
        self.pack
    }
    /// Offset of the blob in its pack.
    pub(crate) fn offset(&self) -> u32 {
        self.offset
    }
    /// Offset just past the blob in its pack.
    pub(crate) fn end(&self) -> u64 {
        u64::from(self.offset) + u64::from(self.len)
    }
}

/// The in-memory index of a repository: a sorted array of (chunk id, location),
/// 48 bytes per chunk, with a 2^16-entry table of bucket starts (chunk ids are
/// uniform, so a lookup is a binary search over ~n/65536 entries).
#[derive(Default)]
pub(crate) struct Index {
    packs: Vec<ObjectId>,
    pack_numbers: HashMap<ObjectId, u32>,
    entries: Vec<(ChunkId, BlobLoc)>,
    /// `buckets[b]..buckets[b + 1]` holds the entries whose id starts with `b` (big-endian u16).
    buckets: Vec<u32>,
    /// Index objects this index was loaded from.
    pub(crate) sources: Vec<ObjectKey>,
}

fn bucket(id: &ChunkId) -> usize {
    usize::from(u16::from_be_bytes([id.0[0], id.0[1]]))
}

impl Index {
    /// Adds a pack's blobs. Call [`Index::finish`] before any lookup.
    pub(crate) fn add_pack(&mut self, dir: &PackDirectory) {
        let n = *self.pack_numbers.entry(dir.pack_id).or_insert_with(|| {
            self.packs.push(dir.pack_id);
            u32::try_from(self.packs.len() - 1).expect("fewer than 2^32 packs")
        });
        let kind_bit = if dir.kind == BlobKind::Tree {
            TREE_BIT
        } else {
            0
        };
        self.entries.reserve(dir.blobs.len());
        for e in &dir.blobs {
            let loc = BlobLoc {
                pack: n,
                offset: e.offset,
                len: e.len,
                raw_len_kind: e.raw_len | kind_bit,
            };
            self.entries.push((e.id, loc));
        }
        self.buckets.clear();
    }

    /// Sorts, drops duplicate chunk ids (any copy will do: each is authenticated on
    /// read) and builds the bucket table.
    pub(crate) fn finish(&mut self) {
        self.entries.sort_unstable_by_key(|e| e.0);
        self.entries.dedup_by(|a, b| a.0 == b.0);
        self.entries.shrink_to_fit();
        let mut buckets = vec![0u32; (1 << 16) + 1];
        for (id, _) in &self.entries {
            buckets[bucket(id) + 1] += 1;
        }
        for b in 1..buckets.len() {
            buckets[b] += buckets[b - 1];
        }
        self.buckets = buckets;
    }

    fn find(&self, id: &ChunkId) -> Option<usize> {
        assert!(
            !self.buckets.is_empty() || self.entries.is_empty(),
            "Index::finish not called"
        );
        if self.entries.is_empty() {
            return None;
        }
        let b = bucket(id);
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        self.entries[lo..hi]
            .binary_search_by(|e| e.0.cmp(id))
            .ok()
            .map(|i| lo + i)
    }

    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        self.find(id).is_some()
    }

    pub(crate) fn get(&self, id: &ChunkId) -> Option<BlobLoc> {
        self.find(id).map(|i| self.entries[i].1)
    }

    /// The pack id and pack entry of a location.
    pub(crate) fn entry(&self, id: &ChunkId, loc: BlobLoc) -> (ObjectId, PackEntry) {
        (
            self.packs[loc.pack as usize],
            PackEntry {
                id: *id,
                offset: loc.offset,
                len: loc.len,
                raw_len: loc.raw_len(),
            },
        )
    }

    /// All packs known to the index.
    pub(crate) fn pack_ids(&self) -> &[ObjectId] {
        &self.packs
    }

    /// Rebuilds the per-pack directories (for garbage collection and check).
    pub(crate) fn directories(&self) -> Vec<PackDirectory> {
        let mut dirs: Vec<PackDirectory> = self
            .packs
            .iter()
            .map(|p| PackDirectory {
                pack_id: *p,
                kind: BlobKind::Data,
                blobs: Vec::new(),
            })
            .collect();
        for (id, loc) in &self.entries {
            let d = &mut dirs[loc.pack as usize];
            d.kind = loc.kind();
            d.blobs.push(PackEntry {
                id: *id,
                offset: loc.offset,
                len: loc.len,
                raw_len: loc.raw_len(),
            });
        }
        for d in &mut dirs {
            d.blobs.sort_by_key(|e| e.offset);
        }
        dirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_after_finish_and_duplicates() {
        let mut idx = Index::default();
        let ids: Vec<ChunkId> = (0u64..5000)
            .map(|i| ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let blobs = |r: std::ops::Range<usize>| {
            r.map(|i| PackEntry {
                id: ids[i],
                offset: i as u32,
                len: 1,
                raw_len: 1,
            })
            .collect()
        };
        idx.add_pack(&PackDirectory {
            pack_id: [1; 16],
            kind: BlobKind::Data,
            blobs: blobs(0..3000),
        });
        idx.add_pack(&PackDirectory {
            pack_id: [2; 16],
            kind: BlobKind::Tree,
            blobs: blobs(2000..4000),
        });
        idx.finish();
        for id in &ids[..4000] {
            assert!(idx.contains(id));
        }
        for id in &ids[4000..] {
            assert!(!idx.contains(id));
        }
        assert_eq!(idx.entries.len(), 4000);
        assert_eq!(idx.get(&ids[10]).unwrap().kind(), BlobKind::Data);
        assert_eq!(idx.get(&ids[3500]).unwrap().kind(), BlobKind::Tree);
        assert_eq!(
            idx.directories()
                .iter()
                .map(|d| d.blobs.len())
                .sum::<usize>(),
            4000
        );
    }
}

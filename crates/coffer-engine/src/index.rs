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
}

/// The in-memory index of a repository.
#[derive(Default)]
pub(crate) struct Index {
    packs: Vec<ObjectId>,
    pack_numbers: HashMap<ObjectId, u32>,
    blobs: IdMap<BlobLoc>,
    /// Index objects this index was loaded from.
    pub(crate) sources: Vec<ObjectKey>,
}

impl Index {
    /// Adds a pack's blobs. A chunk already indexed keeps its first location.
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
        self.blobs.reserve(dir.blobs.len());
        for e in &dir.blobs {
            self.blobs.entry(e.id).or_insert(BlobLoc {
                pack: n,
                offset: e.offset,
                len: e.len,
                raw_len_kind: e.raw_len | kind_bit,
            });
        }
    }

    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        self.blobs.contains_key(id)
    }

    pub(crate) fn get(&self, id: &ChunkId) -> Option<BlobLoc> {
        self.blobs.get(id).copied()
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
        for (id, loc) in &self.blobs {
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

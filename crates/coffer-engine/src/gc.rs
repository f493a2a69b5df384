//! Recovery-point deletion and space reclamation (under the exclusive vault lock,
//! so no backup is in flight).
//!
//! Order, chosen so a crash at any point loses no recovery point:
//! 1. delete the manifest (the recovery point is gone; its data is now garbage);
//! 2. mark every chunk reachable from the remaining manifests;
//! 3. copy the live blobs of mostly-dead packs into new packs (durable);
//! 4. write one new index object describing every live blob (durable);
//! 5. delete the old index objects; 6. delete dead and repacked packs.
//!
//! A crash before 5 leaves duplicates (harmless); after 5, only unreferenced packs.
//! If any manifest, tree or index object cannot be read, nothing is deleted: Coffer
//! never reclaims space on a guess.

use std::collections::HashSet;

use coffer_crypto::ChunkId;

use crate::{
    DeleteOutcome, EngineError,
    format::{self, BlobKind, ObjectId, ObjectType},
    index::{IdSet, Index},
    pack::{PackDirectory, PackWriter},
    repo::Inner,
    tree::NodeKind,
};

/// Repack a pack when at least this fraction of its bytes is dead.
const REPACK_DEAD_FRACTION: f64 = 0.25;

pub(crate) fn delete_and_collect(inner: &Inner, id: &str) -> Result<DeleteOutcome, EngineError> {
    inner.manifest(id)?;
    let mut oid = [0u8; 16];
    hex::decode_to_slice(id, &mut oid)
        .map_err(|_| EngineError::RecoveryPointNotFound(id.to_owned()))?;
    inner
        .store
        .delete(&format::object_key(ObjectType::Manifest, &oid))?;
    collect(inner)
}

/// Every chunk id reachable from `roots`.
pub(crate) fn mark(inner: &Inner, index: &Index, roots: &[ChunkId]) -> Result<IdSet, EngineError> {
    let mut live = IdSet::default();
    let mut stack: Vec<ChunkId> = roots.to_vec();
    while let Some(t) = stack.pop() {
        if !live.insert(t) {
            continue;
        }
        for node in inner.read_tree(index, &t)?.nodes {
            match node.kind {
                NodeKind::File { content } => live.extend(content),
                NodeKind::Dir { tree } => stack.push(tree),
                NodeKind::Symlink { .. } => {}
            }
        }
    }
    Ok(live)
}

/// Reclaims the space of everything no recovery point references.
pub(crate) fn collect(inner: &Inner) -> Result<DeleteOutcome, EngineError> {
    let (index, damaged_index) = inner.load_index()?;
    let mut roots = Vec::new();
    for (key, m) in inner.load_manifests()? {
        match m {
            Ok(m) => roots.push(m.root),
            Err(e) => {
                tracing::warn!(object = %key, error = %e, "space reclamation skipped: a manifest is unreadable");
                return Ok(DeleteOutcome::default());
            }
        }
    }
    let live = match mark(inner, &index, &roots) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "space reclamation skipped: a tree is unreadable");
            return Ok(DeleteOutcome::default());
        }
    };

    let stored = inner.stored_packs()?;
    let mut keep: Vec<PackDirectory> = Vec::new();
    let mut delete: Vec<ObjectId> = Vec::new();
    let mut repack: Vec<PackDirectory> = Vec::new();
    for dir in index.directories() {
        let Some(&size) = stored.get(&dir.pack_id) else {
            continue;
        };
        let live_blobs: Vec<_> = dir
            .blobs
            .iter()
            .filter(|b| live.contains(&b.id))
            .cloned()
            .collect();
        let live_bytes: u64 = live_blobs.iter().map(|b| u64::from(b.len)).sum();
        let pruned = PackDirectory {
            pack_id: dir.pack_id,
            kind: dir.kind,
            blobs: live_blobs,
        };
        if pruned.blobs.is_empty() {
            delete.push(dir.pack_id);
        } else if (size.saturating_sub(live_bytes)) as f64 >= REPACK_DEAD_FRACTION * size as f64 {
            repack.push(pruned);
        } else {
            keep.push(pruned);
        }
    }
    // Packs no index mentions are leftovers of interrupted backups (no backup is in
    // flight under the exclusive lock) — unless an index object is unreadable.
    if damaged_index.is_empty() {
        let indexed: HashSet<&ObjectId> = index.pack_ids().iter().collect();
        delete.extend(stored.keys().filter(|id| !indexed.contains(id)));
    }

    // 3. Repack.
    let target = inner.config.params.pack_target as usize;
    let level = inner.config.params.zstd_level;
    let mut new_dirs = Vec::new();
    let mut new_bytes = 0u64;
    for kind in [BlobKind::Data, BlobKind::Tree] {
        let mut writer: Option<PackWriter> = None;
        for dir in repack.iter().filter(|d| d.kind == kind) {
            // Read all live blobs first: if any is damaged, keep the old pack as it is.
            let mut blobs = Vec::with_capacity(dir.blobs.len());
            let mut ok = true;
            for b in &dir.blobs {
                match crate::pack::read_blob(
                    inner.store.as_ref(),
                    &inner.dek,
                    &inner.id_key,
                    &dir.pack_id,
                    kind,
                    b,
                ) {
                    Ok(data) => blobs.push((b.id, data)),
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                keep.push(dir.clone());
                continue;
            }
            for (id, data) in blobs {
                let w = match writer.as_mut() {
                    Some(w) => w,
                    None => writer.insert(PackWriter::new(&inner.dek, kind, target)?),
                };
                w.add_chunk(id, &data, level);
                if w.is_full() {
                    let done = writer.take().expect("present").finish()?;
                    inner.store.put(&done.key, done.bytes())?;
                    new_bytes += done.bytes().len() as u64;
                    new_dirs.push(done.dir);
                }
            }
            delete.push(dir.pack_id);
        }
        if let Some(w) = writer.take().filter(|w| !w.is_empty()) {
            let done = w.finish()?;
            inner.store.put(&done.key, done.bytes())?;
            new_bytes += done.bytes().len() as u64;
            new_dirs.push(done.dir);
        }
    }
    if delete.is_empty() {
        return Ok(DeleteOutcome::default());
    }

    // 4. New index, 5. old indexes away, 6. packs away.
    keep.extend(new_dirs);
    let id = format::new_object_id()?;
    let (key, bytes) = format::seal_meta(&inner.dek, ObjectType::Index, &id, &keep)?;
    inner.store.put(&key, &bytes)?;
    for old in &index.sources {
        inner.store.delete(old)?;
    }
    let mut reclaimed = 0u64;
    for p in &delete {
        reclaimed += stored.get(p).copied().unwrap_or(0);
        inner
            .store
            .delete(&format::object_key(ObjectType::Pack, p))?;
    }
    Ok(DeleteOutcome {
        reclaimed_bytes: reclaimed.saturating_sub(new_bytes),
        packs_deleted: delete.len() as u64,
    })
}

//! `check`: verify a vault's storage and say exactly what is damaged.
//!
//! Structure (always): config, every index object and manifest authenticates;
//! every tree of every recovery point authenticates and decodes; every chunk a file
//! needs is indexed, and its pack exists and is long enough.
//! Data (`read_data`): every pack is read whole, its trailer authenticated and
//! every indexed blob decrypted, decompressed and checked against its chunk id.
//! Damage is then traced to the recovery points and files that need it.

use std::collections::{BTreeMap, BTreeSet};

use coffer_crypto::ChunkId;

use crate::{
    CheckReport, DamagedRecoveryPoint, EngineError, Progress,
    format::{self, ObjectType},
    index::{IdMap, Index},
    pack,
    repo::Inner,
    tree::{Manifest, NodeKind},
};

pub(crate) fn run(
    inner: &Inner,
    read_data: bool,
    progress: &dyn Progress,
) -> Result<CheckReport, EngineError> {
    let mut report = CheckReport::default();
    let mut damaged_objects = BTreeSet::new();
    let (index, bad_index) = inner.load_index()?;
    for (key, _) in &bad_index {
        damaged_objects.insert(key.to_string());
    }
    report.objects_checked += (index.sources.len() + bad_index.len()) as u64;

    let stored = inner.stored_packs()?;
    report.objects_checked += stored.len() as u64;

    // Chunks that cannot be read back, with the object at fault.
    let mut bad_chunks: IdMap<String> = IdMap::default();
    let dirs = index.directories();
    if read_data {
        let total: u64 = dirs.iter().filter_map(|d| stored.get(&d.pack_id)).sum();
        progress.set_total(Some(total), None);
    }
    for dir in &dirs {
        let key = format::object_key(ObjectType::Pack, &dir.pack_id);
        let Some(&size) = stored.get(&dir.pack_id) else {
            damaged_objects.insert(format!("{key} (missing)"));
            for b in &dir.blobs {
                bad_chunks.insert(b.id, key.to_string());
            }
            continue;
        };
        if !read_data {
            for b in dir
                .blobs
                .iter()
                .filter(|b| u64::from(b.offset) + u64::from(b.len) > size)
            {
                damaged_objects.insert(format!("{key} (truncated)"));
                bad_chunks.insert(b.id, key.to_string());
            }
            continue;
        }
        if progress.stop_requested() {
            return Err(EngineError::Stopped);
        }
        let bytes = match inner.store.get(&key) {
            Ok(b) => b,
            Err(e) => {
                damaged_objects.insert(format!("{key} ({e})"));
                for b in &dir.blobs {
                    bad_chunks.insert(b.id, key.to_string());
                }
                continue;
            }
        };
        progress.advance(bytes.len() as u64, 0);
        if let Err(e) = pack::read_directory(&inner.dek, &key, &bytes) {
            damaged_objects.insert(format!("{key} ({e})"));
        }
        for b in &dir.blobs {
            let (start, end) = (b.offset as usize, b.offset as usize + b.len as usize);
            let ok = end <= bytes.len()
                && pack::open_blob(
                    &inner.dek,
                    &inner.id_key,
                    &dir.pack_id,
                    dir.kind,
                    b,
                    bytes[start..end].to_vec(),
                )
                .is_ok();
            report.chunks_verified += 1;
            if !ok {
                damaged_objects.insert(format!(
                    "{key} (chunk {} fails authentication)",
                    &b.id.to_hex()[..16]
                ));
                bad_chunks.insert(b.id, key.to_string());
            }
        }
    }

    // Trace damage to recovery points and files.
    let mut points: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (key, m) in inner.load_manifests()? {
        report.objects_checked += 1;
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                damaged_objects.insert(format!("{key} ({e})"));
                let id = key.name().to_owned();
                points.entry(id).or_default().insert("<metadata>".into());
                continue;
            }
        };
        let files = damaged_files(inner, &index, &m, &bad_chunks);
        if !files.is_empty() {
            points.entry(m.info.id.clone()).or_default().extend(files);
        }
    }
    report.damaged_objects = damaged_objects.into_iter().collect();
    report.damaged_recovery_points = points
        .into_iter()
        .map(|(id, files)| DamagedRecoveryPoint {
            id,
            files: files.into_iter().collect(),
        })
        .collect();
    Ok(report)
}

/// Paths in `m` whose data or metadata cannot be read.
fn damaged_files(
    inner: &Inner,
    index: &Index,
    m: &Manifest,
    bad: &IdMap<String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<(String, ChunkId)> = vec![(String::new(), m.root)];
    while let Some((path, tree_id)) = stack.pop() {
        let tree = match inner.read_tree(index, &tree_id) {
            Ok(t) => t,
            Err(_) => {
                out.insert(if path.is_empty() {
                    "<metadata>".into()
                } else {
                    format!("{path}/ <metadata>")
                });
                continue;
            }
        };
        for node in tree.nodes {
            let name = String::from_utf8_lossy(&node.name);
            let p = if m.is_stream() {
                "<stream>".to_owned()
            } else if path.is_empty() {
                name.into_owned()
            } else {
                format!("{path}/{name}")
            };
            match node.kind {
                NodeKind::File { content } => {
                    if content
                        .iter()
                        .any(|c| bad.contains_key(c) || !index.contains(c))
                    {
                        out.insert(p);
                    }
                }
                NodeKind::Dir { tree } => stack.push((p, tree)),
                NodeKind::Symlink { .. } => {}
            }
        }
    }
    out
}

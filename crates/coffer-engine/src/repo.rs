//! [`Repository`]: opening a vault's storage and the operations on it.

use std::{path::PathBuf, sync::Arc};

use coffer_crypto::{ChunkIdKey, DataKey, WrappedKey};
use coffer_store::{ObjectKey, ObjectStore, StoreError};
use serde::{Deserialize, Serialize};

use crate::{
    BackupOutcome, BackupRequest, CheckReport, ChunkSizes, DeleteOutcome, EngineError, Progress,
    RecoveryPointInfo, RepoParams, Repository, RestoreOutcome, RestoreRequest, backup, check,
    chunker::ChunkPolicy,
    format::{self, ObjectType},
    gc,
    index::Index,
    lock, pack, restore,
    tree::{Manifest, Tree},
};

/// Format version of the config object (1: one chunk size for every file).
const CONFIG_VERSION: u32 = 2;

/// The sealed `config` object: what a vault's storage is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Config {
    pub(crate) version: u32,
    pub(crate) vault_id: String,
    pub(crate) params: RepoParams,
}

/// A version 1 config: the same chunk sizes for every file.
#[derive(Deserialize)]
struct ConfigV1 {
    vault_id: String,
    chunk_min: u32,
    chunk_avg: u32,
    chunk_max: u32,
    zstd_level: i32,
    pack_target: u32,
}

impl Config {
    /// Decodes a config of any supported version (postcard is not self-describing:
    /// the version, its first field, says what follows).
    fn decode(plain: &[u8]) -> Result<Self, String> {
        let (version, rest) = postcard::take_from_bytes::<u32>(plain).map_err(|e| e.to_string())?;
        match version {
            CONFIG_VERSION => postcard::from_bytes(plain).map_err(|e| e.to_string()),
            1 => {
                let v1: ConfigV1 = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
                let sizes = ChunkSizes {
                    min: v1.chunk_min,
                    avg: v1.chunk_avg,
                    max: v1.chunk_max,
                };
                Ok(Self {
                    version,
                    vault_id: v1.vault_id,
                    params: RepoParams {
                        whole_file_max: 0,
                        medium_chunks: sizes,
                        large_file_min: 0,
                        large_chunks: sizes,
                        zstd_level: v1.zstd_level,
                        pack_target: v1.pack_target,
                    },
                })
            }
            other => Err(format!("unsupported config version {other}")),
        }
    }
}

/// A manifest as found in storage: its key, and its contents unless damaged.
pub(crate) type LoadedManifest = (ObjectKey, Result<Manifest, EngineError>);

/// Shared state of an open repository.
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) dek: DataKey,
    pub(crate) id_key: ChunkIdKey,
    pub(crate) chunking: ChunkPolicy,
    pub(crate) config: Config,
    pub(crate) lock_path: PathBuf,
}

fn keys_object(kek_key_id: &str) -> ObjectKey {
    let h = blake3::hash(kek_key_id.as_bytes());
    ObjectKey::new(format!("keys/{}", &h.to_hex()[..32])).expect("valid key")
}

impl Repository {
    /// Creates a new, empty repository for vault `vault_id` in `store`, recording `wrapped` next to the data.
    pub fn create(
        store: Arc<dyn ObjectStore>,
        lock_path: PathBuf,
        vault_id: &str,
        dek: DataKey,
        wrapped: &WrappedKey,
        params: RepoParams,
    ) -> Result<Self, EngineError> {
        if params.max_chunk() > pack::MAX_CHUNK {
            return Err(EngineError::Internal(format!(
                "chunks of up to {} bytes asked for; at most {} are supported",
                params.max_chunk(),
                pack::MAX_CHUNK
            )));
        }
        let config_key = format::object_key(ObjectType::Config, &[0; 16]);
        if store.size(&config_key)?.is_some() {
            return Err(EngineError::Internal(
                "storage already holds a vault".into(),
            ));
        }
        Self::write_wrapped_key(store.as_ref(), wrapped)?;
        let config = Config {
            version: CONFIG_VERSION,
            vault_id: vault_id.to_owned(),
            params,
        };
        let (key, bytes) = format::seal_meta(&dek, ObjectType::Config, &[0; 16], &config)?;
        store.put(&key, &bytes)?;
        Self::open(store, lock_path, dek)
    }

    /// Opens an existing repository with its unwrapped DEK.
    pub fn open(
        store: Arc<dyn ObjectStore>,
        lock_path: PathBuf,
        dek: DataKey,
    ) -> Result<Self, EngineError> {
        let key = format::object_key(ObjectType::Config, &[0; 16]);
        let bytes = store.get(&key)?;
        // The caller's DEK was itself authenticated when it was unwrapped (bound to the
        // vault id), so a config that fails authentication is damage, not a wrong key.
        let plain = format::open_meta_plain(&dek, ObjectType::Config, &key, &bytes)?;
        let config = Config::decode(&plain).map_err(|reason| EngineError::Damaged {
            object: "config".into(),
            reason,
        })?;
        let chunking = ChunkPolicy::new(&dek, &config.params);
        let id_key = ChunkIdKey::derive(&dek);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                dek,
                id_key,
                chunking,
                config,
                lock_path,
            }),
        })
    }

    /// The vault id recorded in the storage's config.
    pub fn vault_id(&self) -> &str {
        &self.inner.config.vault_id
    }

    /// The wrapped-DEK records stored with the data (no secrets; readable without any key).
    pub fn read_wrapped_keys(store: &dyn ObjectStore) -> Result<Vec<WrappedKey>, EngineError> {
        let mut out = Vec::new();
        for meta in store.list("keys/")? {
            let bytes = store.get(&meta.key)?;
            out.push(
                WrappedKey::from_json(&bytes).map_err(|e| EngineError::Damaged {
                    object: meta.key.to_string(),
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    /// Adds (or replaces, for the same KEK key id) a wrapped-DEK record next to the data.
    pub fn write_wrapped_key(store: &dyn ObjectStore, rec: &WrappedKey) -> Result<(), EngineError> {
        store.put(&keys_object(&rec.kek.key_id), rec.to_json().as_bytes())?;
        Ok(())
    }

    /// Removes the wrapped-DEK record made by the KEK with `kek_key_id`.
    pub fn remove_wrapped_key(
        store: &dyn ObjectStore,
        kek_key_id: &str,
    ) -> Result<(), EngineError> {
        store.delete(&keys_object(kek_key_id))?;
        Ok(())
    }

    /// Verifies the wrapped-DEK records stored with the data against the records the
    /// caller trusts (its catalog): every stored record must parse, name this vault,
    /// and equal a trusted one; every trusted record must be stored. Returns the
    /// damaged or missing objects (empty when all is well).
    pub fn verify_wrapped_keys(&self, trusted: &[WrappedKey]) -> Result<Vec<String>, EngineError> {
        let store = self.inner.store.as_ref();
        let mut damaged = Vec::new();
        let mut seen = Vec::new();
        for meta in store.list("keys/")? {
            let ok = store
                .get(&meta.key)
                .ok()
                .and_then(|b| WrappedKey::from_json(&b).ok())
                .filter(|r| r.vault_id == self.inner.config.vault_id && trusted.contains(r));
            match ok {
                Some(r) => seen.push(r.kek.key_id),
                None => damaged.push(format!(
                    "{} (wrapped key record does not match the catalog)",
                    meta.key
                )),
            }
        }
        for t in trusted.iter().filter(|t| !seen.contains(&t.kek.key_id)) {
            damaged.push(format!("{} (missing)", keys_object(&t.kek.key_id)));
        }
        Ok(damaged)
    }

    /// Runs a backup; the recovery point is durable and listed when this returns Ok.
    pub fn backup(
        &self,
        req: BackupRequest,
        progress: &dyn Progress,
    ) -> Result<BackupOutcome, EngineError> {
        let _lock = lock::shared(&self.inner.lock_path)?;
        backup::run(&self.inner, req, progress)
    }

    /// Restores a recovery point.
    pub fn restore(
        &self,
        req: RestoreRequest,
        progress: &dyn Progress,
    ) -> Result<RestoreOutcome, EngineError> {
        let _lock = lock::shared(&self.inner.lock_path)?;
        restore::run(&self.inner, req, progress)
    }

    /// Every recovery point in storage: the readable ones (oldest first) and the ids
    /// of those whose manifest exists but cannot be read (damaged). A damaged
    /// recovery point still exists: restoring it reports the damage.
    pub fn scan_recovery_points(
        &self,
    ) -> Result<(Vec<RecoveryPointInfo>, Vec<String>), EngineError> {
        let mut ok = Vec::new();
        let mut damaged = Vec::new();
        for (key, m) in self.inner.load_manifests()? {
            match m {
                Ok(m) => ok.push(m.info),
                Err(_) => damaged.push(key.name().to_owned()),
            }
        }
        ok.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok((ok, damaged))
    }

    /// The readable recovery points in storage, oldest first.
    pub fn list_recovery_points(&self) -> Result<Vec<RecoveryPointInfo>, EngineError> {
        let mut v: Vec<RecoveryPointInfo> = self
            .inner
            .load_manifests()?
            .into_iter()
            .filter_map(|(_, m)| m.ok())
            .map(|m| m.info)
            .collect();
        v.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(v)
    }

    /// Deletes a recovery point and reclaims the space no other recovery point uses.
    pub fn delete_recovery_point(&self, id: &str) -> Result<DeleteOutcome, EngineError> {
        let _lock = lock::exclusive(&self.inner.lock_path)?;
        gc::delete_and_collect(&self.inner, id)
    }

    /// Verifies structure, and with `read_data` decrypts and verifies every stored chunk.
    pub fn check(
        &self,
        read_data: bool,
        progress: &dyn Progress,
    ) -> Result<CheckReport, EngineError> {
        let _lock = lock::shared(&self.inner.lock_path)?;
        check::run(&self.inner, read_data, progress)
    }
}

impl Inner {
    /// Loads every index object. Damaged index objects are returned separately; when
    /// there are any, the packs no readable index covers are indexed from their own
    /// (authenticated) trailers, so a damaged index object loses nothing.
    pub(crate) fn load_index(&self) -> Result<(Index, Vec<(ObjectKey, EngineError)>), EngineError> {
        let mut index = Index::default();
        let mut damaged = Vec::new();
        for meta in self.store.list("index/")? {
            let loaded = self
                .store
                .get(&meta.key)
                .map_err(EngineError::from)
                .and_then(|b| {
                    format::open_meta::<Vec<pack::PackDirectory>>(
                        &self.dek,
                        ObjectType::Index,
                        &meta.key,
                        &b,
                    )
                });
            match loaded {
                Ok(dirs) => {
                    for d in &dirs {
                        index.add_pack(d);
                    }
                    index.sources.push(meta.key);
                }
                Err(e) => damaged.push((meta.key, e)),
            }
        }
        if !damaged.is_empty() {
            let known: std::collections::HashSet<format::ObjectId> =
                index.pack_ids().iter().copied().collect();
            for meta in self.store.list("data/")? {
                let Some(id) = format::id_from_key(&meta.key) else {
                    continue;
                };
                if known.contains(&id) {
                    continue;
                }
                let dir = self
                    .store
                    .get(&meta.key)
                    .map_err(EngineError::from)
                    .and_then(|b| pack::read_directory(&self.dek, &meta.key, &b));
                if let Ok(dir) = dir {
                    index.add_pack(&dir);
                }
            }
        }
        index.finish();
        Ok((index, damaged))
    }

    /// Every pack object in storage with its size.
    pub(crate) fn stored_packs(
        &self,
    ) -> Result<std::collections::HashMap<format::ObjectId, u64>, EngineError> {
        Ok(self
            .store
            .list("data/")?
            .into_iter()
            .filter_map(|m| format::id_from_key(&m.key).map(|id| (id, m.size)))
            .collect())
    }

    /// Loads every recovery-point manifest (each may individually be damaged).
    pub(crate) fn load_manifests(&self) -> Result<Vec<LoadedManifest>, EngineError> {
        let mut out = Vec::new();
        for meta in self.store.list("points/")? {
            let m = self
                .store
                .get(&meta.key)
                .map_err(EngineError::from)
                .and_then(|b| {
                    format::open_meta::<Manifest>(&self.dek, ObjectType::Manifest, &meta.key, &b)
                });
            out.push((meta.key, m));
        }
        Ok(out)
    }

    /// Loads one manifest by recovery point id.
    pub(crate) fn manifest(&self, id: &str) -> Result<Manifest, EngineError> {
        let mut oid = [0u8; 16];
        if hex::decode_to_slice(id, &mut oid).is_err() || id.len() != 32 || id.to_lowercase() != id
        {
            return Err(EngineError::RecoveryPointNotFound(id.to_owned()));
        }
        let key = format::object_key(ObjectType::Manifest, &oid);
        let bytes = self.store.get(&key).map_err(|e| match e {
            StoreError::NotFound(_) => EngineError::RecoveryPointNotFound(id.to_owned()),
            other => other.into(),
        })?;
        format::open_meta(&self.dek, ObjectType::Manifest, &key, &bytes)
    }

    /// Where chunk `id` is stored, or the damage its absence from the index is.
    pub(crate) fn locate(
        index: &Index,
        id: &coffer_crypto::ChunkId,
    ) -> Result<crate::index::BlobLoc, EngineError> {
        index.get(id).ok_or_else(|| EngineError::Damaged {
            object: format!("chunk {}", &id.to_hex()[..16]),
            reason: "missing from the index".into(),
        })
    }

    /// Reads and verifies one chunk (its decoded length is the index's `raw_len`).
    pub(crate) fn read_chunk(
        &self,
        index: &Index,
        id: &coffer_crypto::ChunkId,
    ) -> Result<Vec<u8>, EngineError> {
        let loc = Self::locate(index, id)?;
        let (pack_id, entry) = index.entry(id, loc);
        pack::read_blob(
            self.store.as_ref(),
            &self.dek,
            &self.id_key,
            &pack_id,
            loc.kind(),
            &entry,
        )
    }

    /// Reads and decodes a tree.
    pub(crate) fn read_tree(
        &self,
        index: &Index,
        id: &coffer_crypto::ChunkId,
    ) -> Result<Tree, EngineError> {
        let bytes = self.read_chunk(index, id)?;
        let tree: Tree = postcard::from_bytes(&bytes).map_err(|e| EngineError::Damaged {
            object: format!("tree {}", &id.to_hex()[..16]),
            reason: format!("undecodable: {e}"),
        })?;
        tree.validate().map_err(|reason| EngineError::Damaged {
            object: format!("tree {}", &id.to_hex()[..16]),
            reason,
        })?;
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_versions() {
        let now = Config {
            version: CONFIG_VERSION,
            vault_id: "v".into(),
            params: RepoParams::default(),
        };
        let plain = postcard::to_stdvec(&now).unwrap();
        let back = Config::decode(&plain).unwrap();
        assert_eq!((back.version, back.params), (CONFIG_VERSION, now.params));
        // Version 1: one chunk size for every file, no whole-file chunks.
        let v1 = postcard::to_stdvec(&(1u32, "v", 1024u32, 4096u32, 16384u32, 5i32, 1u32 << 20))
            .unwrap();
        let old = Config::decode(&v1).unwrap();
        let sizes = ChunkSizes {
            min: 1024,
            avg: 4096,
            max: 16384,
        };
        assert_eq!(
            old.params,
            RepoParams {
                whole_file_max: 0,
                medium_chunks: sizes,
                large_file_min: 0,
                large_chunks: sizes,
                zstd_level: 5,
                pack_target: 1 << 20,
            }
        );
        assert_eq!(old.vault_id, "v");
        assert!(Config::decode(&postcard::to_stdvec(&(9u32, "v")).unwrap()).is_err());
    }
}

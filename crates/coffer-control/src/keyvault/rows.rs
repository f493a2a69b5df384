//! The catalog rows a data-plane call looks up (the vault with its parsed properties,
//! the key, the version with its parsed attributes), kept per [`Instance`] while the
//! catalog's change counter of key vaults, keys and key versions is unchanged.
//!
//! Triggers bump that counter in the transaction of every insert, update or delete of
//! those rows (schema v7), by any process. [`Instance::key_rows`] reads it in a read
//! snapshot it keeps for the call and drops every kept row when it moved, so a call
//! sees the rows of its own snapshot: a disabled, deleted or rotated key takes effect
//! at the next call, as without the cache. While no process has committed anything
//! since the counter was last read ([`Checked`]), the call reads nothing from the
//! catalog; rows it does not hold yet are then read each in its own snapshot, at
//! least as new as the kept ones. Only successful lookups are kept; a failed one is
//! made again, with its error, by the next call. Time-dependent checks (`nbf`, `exp`)
//! are made on every call.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use coffer_catalog::ReadSnapshot;
use coffer_keyvault::{KEY_CACHE_TTL, PrivateKey};

use super::*;
use crate::row_cache::Checked;

/// A live vault and its properties.
pub(crate) struct VaultEntry {
    pub(crate) row: KeyVaultRow,
    pub(crate) props: VaultProps,
}

/// A key version and its attributes.
pub(crate) struct VersionEntry {
    pub(crate) row: KeyVersionRow,
    pub(crate) attrs: KeyAttrs,
    /// A software version's unsealed material once a call used it, and when it was
    /// unsealed: served to later calls for [`KEY_CACHE_TTL`], as the process's cache of
    /// unsealed keys would be, without hashing the sealed bytes again.
    unsealed: Mutex<Option<(PrivateKey, Instant)>>,
}

impl VersionEntry {
    /// The key material of this version of vault `v`.
    pub(crate) fn material(&self, instance: &Instance, v: &KeyVaultRow) -> Result<Material> {
        if self.row.kty.ends_with("-HSM") {
            return instance.open_material(v, &self.row);
        }
        let mut unsealed = self.unsealed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((key, at)) = &*unsealed
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(Material::Soft(key.share()));
        }
        *unsealed = None;
        let key = instance.open_private(v, &self.row)?;
        *unsealed = Some((key.share(), Instant::now()));
        Ok(Material::Soft(key))
    }
}

/// The rows an [`Instance`] looked up for data-plane calls (`Instance::key_row_cache`).
#[derive(Default)]
pub(crate) struct KeyRowCache(Mutex<Rows>);

#[derive(Default)]
struct Rows {
    /// The change counter the rows were read at, and the settled commit count at
    /// which it was last read.
    checked: Checked,
    /// By vault name (ASCII lowercase: names compare case-insensitively).
    vaults: HashMap<String, Arc<VaultEntry>>,
    /// By vault guid and key name.
    keys: HashMap<(String, String), Arc<KeyRow>>,
    /// By vault guid, key name and version.
    versions: HashMap<(String, String, String), Arc<VersionEntry>>,
}

impl KeyRowCache {
    fn lock(&self) -> MutexGuard<'_, Rows> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Lookups of one data-plane call, valid until dropped (which ends the read snapshot
/// they were checked in, if the catalog had to be read).
pub(crate) struct KeyRows<'a> {
    instance: &'a Instance,
    _snapshot: Option<ReadSnapshot<'a>>,
}

impl Instance {
    /// Data-plane lookups of the current state of the catalog: unless nothing was
    /// committed since it was last read, reads the change counter (in a snapshot kept
    /// until the returned lookups drop) and forgets the kept rows if it moved.
    pub(crate) fn key_rows(&self) -> Result<KeyRows<'_>> {
        let before = self.catalog.settled_commits();
        if self.key_row_cache.lock().checked.is_current(before) {
            return Ok(KeyRows {
                instance: self,
                _snapshot: None,
            });
        }
        let snapshot = self.catalog.read_snapshot()?;
        let generation = self.catalog.key_vault_objects_generation()?;
        let mut rows = self.key_row_cache.lock();
        if rows.checked.confirm(&self.catalog, generation, before) {
            *rows = Rows {
                checked: rows.checked,
                ..Rows::default()
            };
        }
        Ok(KeyRows {
            instance: self,
            _snapshot: Some(snapshot),
        })
    }
}

impl KeyRows<'_> {
    /// The kept entry of `key` in the map `of`, else `load`'s (kept if it succeeds).
    fn get<K: Eq + Hash, V>(
        &self,
        of: impl Fn(&mut Rows) -> &mut HashMap<K, Arc<V>>,
        key: K,
        load: impl FnOnce() -> Result<V>,
    ) -> Result<Arc<V>> {
        if let Some(v) = of(&mut self.instance.key_row_cache.lock()).get(&key) {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(load()?);
        of(&mut self.instance.key_row_cache.lock()).insert(key, Arc::clone(&v));
        Ok(v)
    }

    /// A live vault by name, with its properties.
    pub(crate) fn live_vault(&self, name: &str) -> Result<Arc<VaultEntry>> {
        self.get(
            |r| &mut r.vaults,
            name.to_ascii_lowercase(),
            || {
                let row = self.instance.live_vault(name)?;
                let props = Instance::props(&row)?;
                Ok(VaultEntry { row, props })
            },
        )
    }

    /// A live key of `v`.
    pub(crate) fn live_key(&self, v: &KeyVaultRow, name: &str) -> Result<Arc<KeyRow>> {
        self.get(
            |r| &mut r.keys,
            (v.guid.clone(), name.to_ascii_lowercase()),
            || self.instance.live_key(v, name),
        )
    }

    /// Version `version` of `k` (`None` or empty: its current one), with its attributes.
    pub(crate) fn version(
        &self,
        v: &KeyVaultRow,
        k: &KeyRow,
        version: Option<&str>,
    ) -> Result<Arc<VersionEntry>> {
        let ver = version
            .filter(|s| !s.is_empty())
            .unwrap_or(&k.current_version);
        self.get(
            |r| &mut r.versions,
            (
                v.guid.clone(),
                k.name.to_ascii_lowercase(),
                ver.to_ascii_lowercase(),
            ),
            || {
                let row = self.instance.version_row(v, k, Some(ver))?;
                let attrs = Instance::attrs(&row)?;
                Ok(VersionEntry {
                    row,
                    attrs,
                    unsealed: Mutex::default(),
                })
            },
        )
    }
}

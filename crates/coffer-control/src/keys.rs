//! Which key encryption key (KEK) protects a vault's DEK, and unwrapping it.
//!
//! The DEK of a vault is stored only wrapped ([`WrappedKey`]). [`Instance::kek_for`]
//! selects the [`KeyWrapper`] named by the record: the instance's platform-managed
//! key, or a customer-managed key reached through the vault's managed identity
//! ([`crate::cmk::CmkWrapper`]). The data path never changes: the engine only ever
//! receives the unwrapped DEK.
//!
//! A DEK unwrapped by a customer-managed key lives in memory only, for at most the
//! `dekCacheSeconds` setting (default 5 minutes): [`DekCache`] serves it again within
//! that bound, then the key vault is asked again, so revoking the vault identity's
//! access takes effect within it. Long jobs re-check access at the same interval
//! (see `crate::operations`).

use std::{
    collections::HashMap,
    sync::{
        Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use coffer_catalog::VaultRow;
use coffer_crypto::{DataKey, KeyWrapper, PlatformKey, WrappedKey, wrap::KekKind};
use coffer_engine::Progress;

use crate::{Error, ErrorCode, Instance, Result, cmk::CmkWrapper, config::Setting, util};

/// Unwrapped customer-managed-key DEKs by vault, with the record they came from and
/// when (test clock, milliseconds). Entries older than the bound are never served.
#[derive(Default)]
pub(crate) struct DekCache(Mutex<HashMap<String, (String, DataKey, i64)>>);

impl std::fmt::Debug for DekCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DekCache(..)")
    }
}

impl DekCache {
    fn get(&self, vault: &str, record: &str, max_age_ms: i64) -> Option<DataKey> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = util::clock_ms();
        m.retain(|_, (_, _, at)| now - *at < max_age_ms);
        m.get(vault)
            .filter(|(r, _, _)| r == record)
            .map(|(_, k, _)| k.clone())
    }

    fn put(&self, vault: &str, record: &str, dek: &DataKey) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(
            vault.to_owned(),
            (record.to_owned(), dek.clone(), util::clock_ms()),
        );
    }

    /// Forgets every DEK (they are zeroised as they drop).
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The key id of a platform key.
pub(crate) fn describe_pmk(pmk: &PlatformKey) -> String {
    pmk.describe().key_id
}

/// A KEK able to unwrap one record.
pub(crate) enum Kek<'a> {
    /// The instance's platform key.
    Platform(&'a PlatformKey),
    /// A customer-managed key, used as the vault's identity.
    Customer(Box<CmkWrapper<'a>>),
}

impl Kek<'_> {
    pub(crate) fn as_wrapper(&self) -> &dyn KeyWrapper {
        match self {
            Self::Platform(p) => *p,
            Self::Customer(c) => c.as_ref(),
        }
    }
}

impl Instance {
    /// The KEK able to unwrap `rec`, a record of vault `v`.
    pub(crate) fn kek_for(&self, v: &VaultRow, rec: &WrappedKey) -> Result<Kek<'_>> {
        match rec.kek.kind {
            KekKind::PlatformManaged => {
                let ours = self.pmk.describe().key_id;
                if rec.kek.key_id == ours {
                    Ok(Kek::Platform(&self.pmk))
                } else {
                    Err(Error::new(
                        ErrorCode::EncryptionKeyUnavailable,
                        format!(
                            "the vault's data encryption key is wrapped by platform key {}, \
                             which this instance does not hold (active: {ours})",
                            rec.kek.key_id
                        ),
                    ))
                }
            }
            KekKind::CustomerManaged => Ok(Kek::Customer(Box::new(self.cmk_wrapper_for(v, rec)?))),
        }
    }

    /// The platform key new vaults are created with.
    pub(crate) fn active_kek(&self) -> &dyn KeyWrapper {
        &self.pmk
    }

    /// Unwraps a vault's DEK from its catalog record, checking it belongs to the vault.
    pub(crate) fn unwrap_dek(&self, v: &VaultRow) -> Result<DataKey> {
        let rec = WrappedKey::from_json(v.wrapped_key_json.as_bytes()).map_err(|_| {
            Error::new(
                ErrorCode::CatalogError,
                "the vault's wrapped data encryption key record in the catalog is malformed",
            )
        })?;
        if rec.vault_id != v.guid {
            return Err(Error::new(
                ErrorCode::EncryptionKeyUnavailable,
                "the vault's wrapped data encryption key record belongs to another vault",
            ));
        }
        if rec.kek.kind == KekKind::PlatformManaged {
            return Ok(rec.open(self.kek_for(v, &rec)?.as_wrapper())?);
        }
        let max_age_ms = (self.setting(Setting::DekCacheSeconds) * 1000) as i64;
        if let Some(dek) = self.dek_cache.get(&v.guid, &v.wrapped_key_json, max_age_ms) {
            return Ok(dek);
        }
        let r = self
            .kek_for(v, &rec)
            .and_then(|kek| Ok(rec.open(kek.as_wrapper())?));
        self.note_key_access(v, &r);
        if let Ok(dek) = &r
            && max_age_ms > 0
        {
            self.dek_cache.put(&v.guid, &v.wrapped_key_json, dek);
        }
        r
    }

    /// Asks the key vault again whether vault `v` may still use its DEK (a fresh
    /// unwrap of its current record as the vault's identity, bypassing the cache).
    pub(crate) fn recheck_key_access(&self, v: &VaultRow) -> Result<()> {
        self.dek_cache.clear();
        self.unwrap_dek(v).map(drop)
    }
}

/// The progress sink of a job watched for key access: forwards progress, and asks the
/// engine to stop once the watcher found the vault's key unusable.
struct KeyWatched<'a> {
    inner: &'a dyn Progress,
    stop: AtomicBool,
    lost: Mutex<Option<Error>>,
}

impl Progress for KeyWatched<'_> {
    fn set_total(&self, bytes: Option<u64>, files: Option<u64>) {
        self.inner.set_total(bytes, files);
    }
    fn advance(&self, bytes: u64, files: u64) {
        self.inner.advance(bytes, files);
    }
    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.inner.stop_requested()
    }
}

impl Instance {
    /// Runs job body `f` on vault `v`. For a customer-managed-key vault, a watcher
    /// asks the key vault again every `dekCacheSeconds` (at least every second)
    /// whether the vault's identity may still unwrap its DEK; when access is lost it
    /// stops the job, which fails with the `UserErrorCMK…` code of the cause. So a
    /// revocation takes effect within the DEK cache bound even on a job that runs for
    /// hours. The watcher uses its own catalog connection (its own [`Instance`]).
    pub(crate) fn with_key_watch<T>(
        &self,
        v: &VaultRow,
        progress: &dyn Progress,
        f: impl FnOnce(&dyn Progress) -> Result<T>,
    ) -> Result<T> {
        let cmk = WrappedKey::from_json(v.wrapped_key_json.as_bytes())
            .is_ok_and(|r| r.kek.kind == KekKind::CustomerManaged);
        if !cmk {
            return f(progress);
        }
        let period = Duration::from_secs(self.setting(Setting::DekCacheSeconds).max(1));
        let watched = KeyWatched {
            inner: progress,
            stop: AtomicBool::new(false),
            lost: Mutex::new(None),
        };
        let done = (Mutex::new(false), Condvar::new());
        let (home, key_file, guid) = (&self.home, &self.master_key_file, &v.guid);
        let r = thread::scope(|s| {
            s.spawn(|| {
                let mut finished = done.0.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let (g, t) = done
                        .1
                        .wait_timeout_while(finished, period, |d| !*d)
                        .unwrap_or_else(|p| p.into_inner());
                    finished = g;
                    if !t.timed_out() {
                        return;
                    }
                    if let Err(e) = recheck(home, key_file, guid) {
                        *watched.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        watched.stop.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            });
            let r = f(&watched);
            *done.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
            done.1.notify_all();
            r
        });
        let lost = watched
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match (r, lost) {
            (Err(e), Some(lost)) if e.code == ErrorCode::JobInterrupted => Err(lost),
            (r, _) => r,
        }
    }
}

/// One check of the watcher: `Err` only for a lost key (`UserErrorCMK…`); anything
/// else (a busy catalog, say) is left to the next check.
fn recheck(home: &std::path::Path, key_file: &std::path::Path, guid: &str) -> Result<()> {
    let Ok(inst) = Instance::open(home.to_path_buf(), Some(key_file.to_path_buf())) else {
        return Ok(());
    };
    let Ok(Some(v)) = inst.catalog.vault_by_guid(guid) else {
        return Ok(());
    };
    match inst.recheck_key_access(&v) {
        Err(e) if e.code.as_str().starts_with("UserErrorCMK") => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dek_cache_serves_only_the_same_record_within_the_bound() {
        let cache = DekCache::default();
        let dek = DataKey::generate().unwrap();
        cache.put("vault-a", "record-1", &dek);
        assert!(cache.get("vault-a", "record-1", 60_000) == Some(dek.clone()));
        // Another record of the vault (a rewrap) or another vault: not served.
        assert!(cache.get("vault-a", "record-2", 60_000).is_none());
        assert!(cache.get("vault-b", "record-1", 60_000).is_none());
        // Older than the bound: gone for good (dropped, hence zeroized).
        assert!(cache.get("vault-a", "record-1", 0).is_none());
        assert!(cache.get("vault-a", "record-1", 60_000).is_none());
        cache.put("vault-a", "record-1", &dek);
        cache.clear();
        assert!(cache.get("vault-a", "record-1", 60_000).is_none());
    }
}

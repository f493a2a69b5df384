//! TEMPORARY placeholder bodies while the engine is being written.
use std::{path::PathBuf, sync::Arc};

use coffer_crypto::{DataKey, WrappedKey};
use coffer_store::ObjectStore;

use crate::*;

pub(crate) struct Inner;

fn nyi<T>() -> Result<T, EngineError> {
    Err(EngineError::Internal("engine not built yet".into()))
}

impl Repository {
    /// Creates a new, empty repository for vault `vault_id` in `store`, recording `wrapped` next to the data.
    pub fn create(
        _store: Arc<dyn ObjectStore>,
        _lock_path: PathBuf,
        _vault_id: &str,
        _dek: DataKey,
        _wrapped: &WrappedKey,
        _params: RepoParams,
    ) -> Result<Self, EngineError> {
        nyi()
    }
    /// Opens an existing repository with its unwrapped DEK.
    pub fn open(
        _store: Arc<dyn ObjectStore>,
        _lock_path: PathBuf,
        _dek: DataKey,
    ) -> Result<Self, EngineError> {
        nyi()
    }
    /// The wrapped-DEK records stored with the data (no secrets; readable without any key).
    pub fn read_wrapped_keys(_store: &dyn ObjectStore) -> Result<Vec<WrappedKey>, EngineError> {
        nyi()
    }
    /// Adds (or replaces, for the same KEK key id) a wrapped-DEK record next to the data.
    pub fn write_wrapped_key(
        _store: &dyn ObjectStore,
        _rec: &WrappedKey,
    ) -> Result<(), EngineError> {
        nyi()
    }
    /// Removes the wrapped-DEK record made by the KEK with `kek_key_id`.
    pub fn remove_wrapped_key(
        _store: &dyn ObjectStore,
        _kek_key_id: &str,
    ) -> Result<(), EngineError> {
        nyi()
    }
    /// Runs a backup; the recovery point is durable and listed when this returns Ok.
    pub fn backup(
        &self,
        _req: BackupRequest,
        _progress: &dyn Progress,
    ) -> Result<BackupOutcome, EngineError> {
        nyi()
    }
    /// Restores a recovery point.
    pub fn restore(
        &self,
        _req: RestoreRequest,
        _progress: &dyn Progress,
    ) -> Result<RestoreOutcome, EngineError> {
        nyi()
    }
    /// All recovery points in storage, oldest first.
    pub fn list_recovery_points(&self) -> Result<Vec<RecoveryPointInfo>, EngineError> {
        nyi()
    }
    /// Deletes a recovery point and reclaims the space no other recovery point uses.
    pub fn delete_recovery_point(&self, _id: &str) -> Result<DeleteOutcome, EngineError> {
        nyi()
    }
    /// Verifies structure, and with `read_data` decrypts and verifies every stored chunk.
    pub fn check(
        &self,
        _read_data: bool,
        _progress: &dyn Progress,
    ) -> Result<CheckReport, EngineError> {
        nyi()
    }
}

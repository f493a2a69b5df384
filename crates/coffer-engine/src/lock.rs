//! Advisory locks between Coffer processes sharing a vault: backups, restores and
//! checks hold a shared lock; recovery-point deletion (which may delete packs) holds
//! the exclusive lock, so it never deletes a chunk an in-flight backup will
//! reference. The OS releases a lock when its process dies, so a crash never
//! leaves a vault locked.

use std::{
    fs::{self, File, OpenOptions},
    path::Path,
};

use crate::EngineError;

/// A held lock; released on drop.
#[derive(Debug)]
pub(crate) struct RepoLock(#[allow(dead_code)] File);

fn open(path: &Path) -> Result<File, EngineError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| EngineError::Internal(format!("cannot create lock directory: {e}")))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| {
            EngineError::Internal(format!("cannot open lock file {}: {e}", path.display()))
        })
}

/// Waits for and takes a shared lock.
pub(crate) fn shared(path: &Path) -> Result<RepoLock, EngineError> {
    let f = open(path)?;
    f.lock_shared()
        .map_err(|e| EngineError::Internal(format!("cannot lock {}: {e}", path.display())))?;
    Ok(RepoLock(f))
}

/// Waits for and takes the exclusive lock.
pub(crate) fn exclusive(path: &Path) -> Result<RepoLock, EngineError> {
    let f = open(path)?;
    f.lock()
        .map_err(|e| EngineError::Internal(format!("cannot lock {}: {e}", path.display())))?;
    Ok(RepoLock(f))
}

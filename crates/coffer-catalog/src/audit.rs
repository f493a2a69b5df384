//! Group commit of key audit records.
//!
//! Every key vault operation's audit record must be durable (committed with
//! `synchronous=FULL`: an fsync) before the operation's result is returned. Committing
//! each record alone bounds the operation rate by the disk's fsync rate. Instead, all
//! [`Catalog`]s of one process open on the same database file share one
//! [`AuditCommitter`]: a caller queues its record and either waits while another
//! caller (the leader) commits, or becomes the leader itself and writes every queued
//! record (at most [`MAX_BATCH`]) in ONE transaction, through its own connection. Each
//! caller returns only when the batch holding its record is committed, with that
//! batch's outcome: a failed commit is an error for every caller of the batch.
//!
//! There is no background thread: the committer is driven by its callers, waits on
//! a condition variable (no polling) and is dropped with the last catalog using it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak},
};

use crate::{Catalog, CatalogError, KeyAuditRow, Result};

/// The most records one audit transaction writes.
pub const MAX_BATCH: usize = 256;

/// Where a caller learns the outcome of the batch that committed its record.
type Outcome = Arc<OnceLock<Result<(), Arc<CatalogError>>>>;

#[derive(Default)]
struct Queue {
    /// Records waiting for the next commit, oldest first.
    pending: Vec<(KeyAuditRow, Outcome)>,
    /// Whether a caller is committing a batch now.
    leader: bool,
}

/// The process-wide committer of one catalog database's audit records.
#[derive(Default)]
pub(crate) struct AuditCommitter {
    queue: Mutex<Queue>,
    /// Signalled when a batch's outcome is set and the leader steps down.
    done: Condvar,
}

impl std::fmt::Debug for AuditCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditCommitter").finish_non_exhaustive()
    }
}

/// Steps a leader down when its batch is done, also when the commit panicked: any
/// record of the batch without an outcome then gets an error (never a success).
struct Leading<'a> {
    committer: &'a AuditCommitter,
    batch: Vec<(KeyAuditRow, Outcome)>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        for (_, outcome) in &self.batch {
            let _ = outcome.set(Err(Arc::new(CatalogError::Invalid(
                "the audit commit was interrupted".into(),
            ))));
        }
        self.committer.lock().leader = false;
        self.committer.done.notify_all();
    }
}

impl AuditCommitter {
    /// The committer shared by every catalog of this process open on `path`.
    pub(crate) fn for_database(path: &Path) -> Arc<Self> {
        static ALL: OnceLock<Mutex<HashMap<PathBuf, Weak<AuditCommitter>>>> = OnceLock::new();
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut all = ALL
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = all.get(&key).and_then(Weak::upgrade) {
            return c;
        }
        all.retain(|_, c| c.strong_count() > 0);
        let c = Arc::new(Self::default());
        all.insert(key, Arc::downgrade(&c));
        c
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits `row` durably (in a batch with the records of concurrent callers),
    /// leading the commit through `cat` when no other caller is committing.
    pub(crate) fn commit(&self, cat: &Catalog, row: KeyAuditRow) -> Result<()> {
        let mine: Outcome = Arc::default();
        let mut q = self.lock();
        q.pending.push((row, Arc::clone(&mine)));
        loop {
            if let Some(r) = mine.get() {
                return r.clone().map_err(CatalogError::AuditCommit);
            }
            if q.leader {
                q = self.done.wait(q).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            q.leader = true;
            let n = q.pending.len().min(MAX_BATCH);
            let batch = q.pending.drain(..n).collect();
            drop(q);
            let leading = Leading {
                committer: self,
                batch,
            };
            let r = cat
                .insert_key_audit(leading.batch.iter().map(|(row, _)| row))
                .map_err(Arc::new);
            for (_, outcome) in &leading.batch {
                let _ = outcome.set(r.clone());
            }
            drop(leading);
            q = self.lock();
        }
    }
}

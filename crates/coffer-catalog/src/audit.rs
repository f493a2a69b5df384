//! Group commit of key audit records by one committer thread a process.
//!
//! Every key vault operation's audit record must be durable before the operation's
//! result is returned. All [`Catalog`](crate::Catalog)s of one process open on the same
//! database file share one [`AuditCommitter`], whose thread (started by the first
//! record) repeats:
//!
//! 1. take every queued record (at most [`MAX_BATCH`]) and insert them in ONE
//!    transaction of the committer's connection, which commits with
//!    `synchronous=NORMAL`: the WAL frames are written, not yet synced;
//! 2. `fdatasync` the WAL file, which makes the batch durable, and wake (unpark) each
//!    of its callers.
//!
//! Records queued meanwhile form the next batch. A caller learns that its record is
//! durable only when its batch has been synced; it may queue the record before the work
//! the record is about and wait afterwards ([`PendingKeyAudit`]), so that the sync
//! overlaps that work. A failed write is an error for every caller of that batch; a
//! failed sync is an error for every caller of that batch and of every later one (fail
//! closed: after a failed `fdatasync` the kernel may have dropped the WAL pages, so
//! nothing written after them could be recovered).
//!
//! Why a thread of its own: the callers are busy with key operations (RSA), so a
//! caller leading the commit would wait for a core after every step of its
//! `fsync`; a thread that mostly sleeps is scheduled at once when its I/O completes.
//!
//! The WAL stays the file SQLite uses: the committer's connection stays open for the
//! committer's life, and SQLite deletes the WAL only when the last connection to the
//! database closes; a sync also checks that the file it synced is still linked.
//! Checkpoints stay SQLite's (automatic, with their own syncs) and copy the records
//! into the database file; readers see them as before.

use std::{
    collections::HashMap,
    fs::File,
    marker::PhantomData,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak},
    thread::{JoinHandle, Thread},
};

use rusqlite::Connection;

use crate::{CatalogError, KeyAuditRow, Result, connect, kv};

/// The most records one audit transaction writes.
pub const MAX_BATCH: usize = 256;

/// A committer's error, shared by every caller it fails.
type SharedError = Arc<CatalogError>;

/// Where a caller learns whether its record is durable, and how it is woken (only
/// the callers of a finished batch wake, each by itself: no lock convoy).
struct Ticket {
    /// The record's `seq` once durable.
    outcome: OnceLock<Result<i64, SharedError>>,
    caller: Thread,
}

impl Ticket {
    fn settle(&self, r: Result<i64, SharedError>) {
        let _ = self.outcome.set(r);
        self.caller.unpark();
    }
}

/// An audit record handed to the committer ([`crate::Catalog::begin_key_audit`]).
/// It is waited for on the thread that submitted it (whom the committer wakes).
#[must_use = "a record is only known durable once waited for"]
pub struct PendingKeyAudit {
    state: Pending,
    /// Not `Send`: the committer unparks the submitting thread.
    _same_thread: PhantomData<*const ()>,
}

enum Pending {
    /// Written before it was returned (no committer).
    Written(i64),
    Queued(Arc<Ticket>),
}

impl std::fmt::Debug for PendingKeyAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingKeyAudit").finish_non_exhaustive()
    }
}

impl PendingKeyAudit {
    pub(crate) fn written(seq: i64) -> Self {
        Self {
            state: Pending::Written(seq),
            _same_thread: PhantomData,
        }
    }

    /// Waits until the record is durable; returns its `seq`, or the error that failed
    /// its batch (the record may then be missing from the log).
    pub fn wait(self) -> Result<i64> {
        let mine = match self.state {
            Pending::Written(seq) => return Ok(seq),
            Pending::Queued(t) => t,
        };
        loop {
            if let Some(r) = mine.outcome.get() {
                return r.clone().map_err(CatalogError::AuditCommit);
            }
            std::thread::park();
        }
    }
}

type Queued = (KeyAuditRow, Arc<Ticket>);

#[derive(Default)]
struct State {
    /// Records waiting to be written, oldest first.
    pending: Vec<Queued>,
    /// The committer thread waits for records (and needs a wake-up).
    idle: bool,
    /// The committer is being dropped: the thread ends once `pending` is empty.
    stop: bool,
    /// A sync failed (or the thread died): no record can be made durable any more.
    failed: Option<SharedError>,
}

struct Shared {
    /// The database (canonical path).
    path: PathBuf,
    state: Mutex<State>,
    /// Wakes the committer thread: records queued, or stop.
    work: Condvar,
}

/// The process-wide committer of one catalog database's audit records.
pub(crate) struct AuditCommitter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditCommitter").finish_non_exhaustive()
    }
}

impl Drop for AuditCommitter {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_all();
        if let Some(t) = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
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
        let c = Arc::new(Self {
            shared: Arc::new(Shared {
                path: key.clone(),
                state: Mutex::default(),
                work: Condvar::new(),
            }),
            thread: Mutex::default(),
        });
        all.insert(key, Arc::downgrade(&c));
        c
    }

    /// Queues `row` for the next batch; the returned handle waits until it is durable.
    pub(crate) fn submit(&self, row: KeyAuditRow) -> Result<PendingKeyAudit> {
        self.start()?;
        let mine = Arc::new(Ticket {
            outcome: OnceLock::new(),
            caller: std::thread::current(),
        });
        let s = &self.shared;
        let mut st = s.lock();
        if let Some(e) = &st.failed {
            return Err(CatalogError::AuditCommit(Arc::clone(e)));
        }
        st.pending.push((row, Arc::clone(&mine)));
        let wake = std::mem::take(&mut st.idle);
        drop(st);
        if wake {
            s.work.notify_one();
        }
        Ok(PendingKeyAudit {
            state: Pending::Queued(mine),
            _same_thread: PhantomData,
        })
    }

    /// Starts the committer thread unless it runs.
    fn start(&self) -> Result<()> {
        let mut t = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        if t.is_none() {
            let shared = Arc::clone(&self.shared);
            *t = Some(
                std::thread::Builder::new()
                    .name("coffer-audit".into())
                    .spawn(move || shared.run())
                    .map_err(io_error)?,
            );
        }
        Ok(())
    }
}

/// Fails the records of the batch in hand and every later record if the committer
/// thread unwinds.
struct Dying<'a> {
    shared: &'a Shared,
    batch: Vec<Queued>,
}

impl Drop for Dying<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let e: SharedError = Arc::new(CatalogError::Invalid(
            "the audit commit was interrupted".into(),
        ));
        let mut st = self.shared.lock();
        st.failed.get_or_insert_with(|| Arc::clone(&e));
        for (_, ticket) in self.batch.drain(..).chain(st.pending.drain(..)) {
            ticket.settle(Err(Arc::clone(&e)));
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The committer thread.
    fn run(&self) {
        let mut log: Option<Log> = None;
        let mut dying = Dying {
            shared: self,
            batch: Vec::new(),
        };
        loop {
            let mut st = self.lock();
            while st.pending.is_empty() && !st.stop {
                st.idle = true;
                st = self.work.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            st.idle = false;
            if st.pending.is_empty() {
                return;
            }
            let n = st.pending.len().min(MAX_BATCH);
            dying.batch = st.pending.drain(..n).collect();
            let failed = st.failed.clone();
            drop(st);
            let r = match failed {
                Some(e) => Err(e),
                None => self.write_and_sync(&mut log, &dying.batch),
            };
            let mut st = self.lock();
            if let Err(e) = &r
                && log.as_ref().is_some_and(|l| l.written)
            {
                // Written but not synced: a later sync cannot vouch for what follows.
                st.failed.get_or_insert_with(|| Arc::clone(e));
            }
            drop(st);
            for (i, (_, ticket)) in dying.batch.drain(..).enumerate() {
                ticket.settle(r.clone().map(|seqs| seqs[i]));
            }
        }
    }

    /// Writes and syncs `batch`; returns the `seq` of each record.
    fn write_and_sync(
        &self,
        log: &mut Option<Log>,
        batch: &[Queued],
    ) -> Result<Vec<i64>, SharedError> {
        let l = match log {
            Some(l) => l,
            None => log.insert(Log::open(&self.path).map_err(Arc::new)?),
        };
        l.written = false;
        let seqs =
            kv::insert_key_audit(&l.conn, batch.iter().map(|(row, _)| row)).map_err(Arc::new)?;
        l.written = true;
        l.sync(&self.path).map_err(Arc::new)?;
        Ok(seqs)
    }
}

/// The committer thread's connection and the WAL file it writes to.
struct Log {
    conn: Connection,
    /// The WAL, open once the connection has written.
    wal: Option<File>,
    /// The last batch was written (and needs a sync).
    written: bool,
}

impl Log {
    fn open(path: &Path) -> Result<Self> {
        // Commits write the WAL without syncing it; the committer syncs it. (Checkpoints
        // and WAL restarts still sync, as with FULL.)
        Ok(Self {
            conn: connect(path, "NORMAL")?,
            wal: None,
            written: false,
        })
    }

    /// Makes every batch written so far durable.
    fn sync(&mut self, path: &Path) -> Result<()> {
        if let Some(e) = kv::injected_failure("kv-audit-sync", &path.to_string_lossy()) {
            return Err(e);
        }
        let wal = match &self.wal {
            Some(wal) => wal,
            // The connection has written: the WAL exists and stays while it is open.
            None => self.wal.insert(open_wal(path)?),
        };
        wal.sync_data().map_err(io_error)?;
        if wal.metadata().map_err(io_error)?.nlink() == 0 {
            return Err(CatalogError::Invalid(
                "the catalog's WAL file was replaced while audit records were synced".into(),
            ));
        }
        self.written = false;
        Ok(())
    }
}

/// Opens the WAL file of the database at `path` and makes its directory entry durable
/// (SQLite does that on the first sync of a WAL it created; it never syncs this one).
fn open_wal(path: &Path) -> Result<File> {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    let wal = File::open(&name).map_err(io_error)?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error)?;
    }
    Ok(wal)
}

fn io_error(e: std::io::Error) -> CatalogError {
    CatalogError::Invalid(format!("audit WAL: {e}"))
}

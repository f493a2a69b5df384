//! The catalog's commit count, shared by every process that opens it and readable
//! without a system call or a read transaction: what lets a cache of catalog rows
//! (e.g. the key vault's, for each data-plane call) tell cheaply that nothing was
//! committed since it last checked the catalog's change counters.
//!
//! Two counters live in a small file beside the catalog (`{catalog}-commits`,
//! owner-only), mapped shared into each process: `claimed` and `completed`. SQLite's
//! commit hook, called under the write lock before a write transaction becomes
//! visible, claims the next number (`claimed += 1`); its WAL hook (after the commit)
//! or rollback hook marks it completed (`completed = max(completed, n)`). So while the
//! two are equal, every commit claimed so far is visible and no other has begun
//! becoming visible: [`CommitCounter::settled`] returns that number, else `None`.
//!
//! A reader that saw the same settled number before and after reading the catalog
//! read the state at that number; while the number stays the same, that state is the
//! catalog's (a commit in flight is one whose call has not returned yet). A process
//! killed between the two hooks, or a commit that wrote nothing (no WAL hook), leaves
//! `claimed` ahead until the next commit completes: readers then read the catalog, as
//! they would without the counter. Writers other than Coffer's (e.g. the `sqlite3`
//! shell) do not count: the catalog belongs to Coffer.

use std::{
    fs::OpenOptions,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use memmap2::{MmapOptions, MmapRaw};
use rusqlite::Connection;

/// Bytes of the counter file: `claimed` then `completed`, native-endian `u64`s.
const FILE_LEN: u64 = 16;

/// WAL pages after which a commit checkpoints, as SQLite's default WAL hook does (the
/// commit counter's WAL hook replaces it).
const AUTOCHECKPOINT_PAGES: i32 = 1000;

/// The file of the commit counter of the catalog at `path`: `{path}-commits`.
pub(crate) fn commits_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-commits");
    PathBuf::from(name)
}

/// The shared counters of one catalog file, mapped into this process.
#[derive(Clone)]
pub(crate) struct CommitCounter(Arc<MmapRaw>);

impl CommitCounter {
    /// Maps the counter file of the catalog at `path`, creating it (zeroed,
    /// owner-only) if missing. The file never shrinks, so the mapping stays valid.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(commits_path(path))?;
        if file.metadata()?.len() < FILE_LEN {
            // Growing fills with zeroes; two processes doing it at once agree.
            file.set_len(FILE_LEN)?;
        }
        let map = MmapOptions::new().len(FILE_LEN as usize).map_raw(&file)?;
        Ok(Self(Arc::new(map)))
    }

    fn counter(&self, index: usize) -> &AtomicU64 {
        assert!(index < 2);
        // SAFETY: the mapping is page-aligned and FILE_LEN (16) bytes long, so
        // `index * 8` is an 8-aligned offset of a `u64` inside it; it lives as long as
        // `self` (the Arc), the file is never truncated, and every process only
        // accesses these bytes atomically.
        #[allow(unsafe_code)]
        unsafe {
            AtomicU64::from_ptr(self.0.as_mut_ptr().add(index * 8).cast::<u64>())
        }
    }

    fn claimed(&self) -> &AtomicU64 {
        self.counter(0)
    }

    fn completed(&self) -> &AtomicU64 {
        self.counter(1)
    }

    /// The number of commits made so far when none is in flight, else `None`.
    pub(crate) fn settled(&self) -> Option<u64> {
        let completed = self.completed().load(Ordering::SeqCst);
        let claimed = self.claimed().load(Ordering::SeqCst);
        (claimed == completed).then_some(completed)
    }

    /// Counts every commit of `conn` (a connection to this catalog). Replaces the
    /// connection's WAL hook, so it checkpoints as SQLite's default one does.
    pub(crate) fn count_commits_of(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        // The number this connection claimed and has not yet marked completed.
        let pending = Arc::new(AtomicU64::new(0));
        let complete = {
            let (counter, pending) = (self.clone(), Arc::clone(&pending));
            move || {
                let n = pending.swap(0, Ordering::SeqCst);
                if n != 0 {
                    counter.completed().fetch_max(n, Ordering::SeqCst);
                }
            }
        };
        let on_rollback = complete.clone();
        let claim = {
            let (counter, pending, complete) =
                (self.clone(), Arc::clone(&pending), complete.clone());
            move || {
                // A commit that wrote nothing had no WAL hook: it changed nothing, so
                // its number is completed before the next is claimed.
                complete();
                let n = counter.claimed().fetch_add(1, Ordering::SeqCst) + 1;
                pending.store(n, Ordering::SeqCst);
                false // let the commit proceed
            }
        };
        conn.commit_hook(Some(claim))?;
        conn.rollback_hook(Some(on_rollback))?;
        conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
            complete();
            if pages >= AUTOCHECKPOINT_PAGES {
                // As SQLite's default hook: a passive checkpoint, its failure ignored.
                let _ = wal.checkpoint();
            }
            Ok(())
        }))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog_conn(path: &Path, counter: &CommitCounter) -> Connection {
        let mut conn = Connection::open(path).unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
            .unwrap();
        counter.count_commits_of(&mut conn).unwrap();
        conn
    }

    /// A fresh catalog file in a temporary directory (kept while the first item lives),
    /// its path, its counter, and a connection whose commits it counts.
    fn counted_catalog() -> (tempfile::TempDir, PathBuf, CommitCounter, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let counter = CommitCounter::open(&path).unwrap();
        let conn = catalog_conn(&path, &counter);
        (dir, path, counter, conn)
    }

    #[test]
    fn each_write_commit_counts_once_and_reads_do_not() {
        let (_dir, _, counter, conn) = counted_catalog();
        assert_eq!(counter.settled(), Some(0));
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        assert_eq!(counter.settled(), Some(1));
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        conn.execute_batch("BEGIN; INSERT INTO t VALUES (2); INSERT INTO t VALUES (3); COMMIT")
            .unwrap();
        assert_eq!(counter.settled(), Some(3));
        // Reads, read transactions and rolled-back writes commit nothing.
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap();
        conn.execute_batch("BEGIN; SELECT * FROM t; COMMIT")
            .unwrap();
        conn.execute_batch("BEGIN; INSERT INTO t VALUES (4); ROLLBACK")
            .unwrap();
        assert_eq!(counter.settled(), Some(3));
        // A write transaction that changed nothing (no WAL hook) settles at the next
        // commit at the latest.
        conn.execute("DELETE FROM t WHERE x = 99", []).unwrap();
        conn.execute("INSERT INTO t VALUES (5)", []).unwrap();
        let claimed = counter.claimed().load(Ordering::SeqCst);
        assert!(claimed >= 4);
        assert_eq!(counter.settled(), Some(claimed));
    }

    /// Another process's mapping (here: a second one) sees the same counts, and a
    /// file a killed writer left unsettled settles at the next completed commit.
    #[test]
    fn every_mapping_shares_the_counts_and_a_claimed_commit_settles_later() {
        let (_dir, path, a, conn) = counted_catalog();
        let b = CommitCounter::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        assert_eq!(b.settled(), Some(1));
        // A writer killed after its claim, before its commit completed.
        b.claimed().fetch_add(1, Ordering::SeqCst);
        assert_eq!(a.settled(), None);
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert_eq!(a.settled(), Some(3));
        assert_eq!(
            std::fs::metadata(commits_path(&path)).unwrap().len(),
            FILE_LEN
        );
    }

    /// The WAL hook that counts commits still checkpoints a growing WAL.
    #[test]
    fn the_wal_is_checkpointed_as_by_default() {
        let (_dir, _, _counter, conn) = counted_catalog();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        let blob = vec![7u8; 3000];
        for _ in 0..2000 {
            conn.execute("INSERT INTO t VALUES (?1)", [&blob]).unwrap();
        }
        let (_, log, checkpointed): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        // Without checkpoints the WAL would hold every page written (> 2000).
        assert!(
            log < 2 * i64::from(AUTOCHECKPOINT_PAGES),
            "{log} pages in the WAL"
        );
        assert_eq!(log, checkpointed);
    }
}

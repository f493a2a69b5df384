//! Group commit of key audit records by one committer thread a process.
//!
//! Every key vault operation's audit record must be durable before the operation's
//! result is returned. The records live in a database of their own beside the catalog
//! ([`crate::audit_database_path`]), so that their commits leave the catalog (and its
//! readers' page caches) alone. All [`Catalog`](crate::Catalog)s of one process open on
//! the same catalog share one [`AuditCommitter`], whose thread (started by the first
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
//! overlaps that work, or hold several records while it does other work (a server's
//! worker with several calls begun). A batch is due ([`Shared::batch_due`]) at once
//! with no more callers than cores; beyond them, when enough callers wait, or when the
//! oldest record has waited [`UNWAITED_DELAY`] with nobody waiting for it.
//!
//! A failed write is an error for every caller of that batch; a failed sync is an error
//! for every caller of that batch and of every later one (fail closed: after a failed
//! `fdatasync` the kernel may have dropped the WAL pages, so nothing written after them
//! could be recovered).
//!
//! Why a thread of its own: the callers are busy with key operations (RSA), so a
//! caller leading the commit would wait for a core after every step of its
//! `fsync`; a thread that mostly sleeps is scheduled at once when its I/O completes.
//!
//! The WAL stays the file SQLite uses: the committer's connection stays open for the
//! committer's life, and SQLite deletes the WAL only when the last connection to the
//! database closes; a sync also checks that the file it synced is still linked.
//! Checkpoints stay SQLite's (automatic, with their own syncs) and copy the records
//! into the audit database file; readers see them as before.

use std::{
    collections::HashMap,
    fs::File,
    marker::PhantomData,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak,
        atomic::{AtomicBool, Ordering},
    },
    thread::{JoinHandle, Thread},
    time::{Duration, Instant},
};

use rusqlite::Connection;
use rustix::fs::{AtFlags, StatxFlags};

use crate::{CatalogError, KeyAuditRow, Result, kv, open_audit_database};

/// The most records one audit transaction writes.
pub const MAX_BATCH: usize = 256;

/// A batch waited for is written once at most this many callers per core are still
/// busy with their key operation ([`Shared::batch_due`]).
const BUSY_SLACK: usize = 2;

/// The longest a queued record waits for its batch.
const MAX_DELAY: Duration = Duration::from_millis(50);

/// The longest a queued record waits for its batch while no caller waits for any
/// queued record: callers with more work in hand (a server's worker with several calls
/// begun, [`PendingKeyAudit`] held) find their records durable when they come back
/// to them, instead of their wait starting the batch and then sleeping through its
/// sync. Callers that each wait for their record right after their key operation
/// demand their batches before this.
const UNWAITED_DELAY: Duration = Duration::from_millis(2);

/// A committer's error, shared by every caller it fails.
type SharedError = Arc<CatalogError>;

/// Where a caller learns whether its record is durable, and how it is woken (only
/// the callers of a finished batch wake, each by itself: no lock convoy).
struct Ticket {
    /// The record's `seq` once durable.
    outcome: OnceLock<Result<i64, SharedError>>,
    caller: Thread,
    /// The committer has taken the record into a batch (set and read under the
    /// state lock).
    taken: AtomicBool,
    /// The caller is counted in [`State::waiting`] (set and cleared under the state
    /// lock: by the caller when it starts waiting before the outcome is known, and by
    /// whoever sets the outcome or sees the caller leave).
    counted: AtomicBool,
}

impl Ticket {
    /// Gives the record its outcome; the caller no longer counts as waiting. Called
    /// under the state lock; [`Ticket::wake`] the caller once the lock is released.
    fn settle(&self, st: &mut State, r: Result<i64, SharedError>) {
        let _ = self.outcome.set(r);
        st.uncount(self);
    }

    fn wake(&self) {
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
    Queued(Arc<Ticket>, Arc<Shared>),
    /// Waited for.
    Done,
}

/// How a caller is done with its record ([`Shared::left`]).
enum Left {
    /// It had the outcome.
    Waited,
    /// It dropped the record unwaited.
    Dropped,
}

impl Drop for PendingKeyAudit {
    /// A record dropped without [`PendingKeyAudit::wait`] is still written (the
    /// operation it is about may have happened), without anyone waiting for it.
    fn drop(&mut self) {
        if let Pending::Queued(mine, shared) = std::mem::replace(&mut self.state, Pending::Done) {
            shared.left(&mine, Left::Dropped);
        }
    }
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
    pub fn wait(mut self) -> Result<i64> {
        let (mine, shared) = match std::mem::replace(&mut self.state, Pending::Done) {
            Pending::Written(seq) => return Ok(seq),
            Pending::Queued(t, shared) => (t, shared),
            Pending::Done => unreachable!("waited for twice"),
        };
        if mine.outcome.get().is_none() {
            shared.wait_for(&mine);
        }
        let r = loop {
            if let Some(r) = mine.outcome.get() {
                break r.clone().map_err(CatalogError::AuditCommit);
            }
            std::thread::park();
        };
        shared.left(&mine, Left::Waited);
        r
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
    /// A caller waits for a record still in `pending` (or dropped one there).
    demanded: bool,
    /// Callers between their submit and the end of their wait (or drop).
    active: usize,
    /// Of those, the callers waiting for their record.
    waiting: usize,
    /// When the oldest record of `pending` was queued.
    oldest: Option<Instant>,
}

impl State {
    /// `ticket`'s caller no longer counts as waiting.
    fn uncount(&mut self, ticket: &Ticket) {
        if ticket.counted.swap(false, Ordering::Relaxed) {
            self.waiting -= 1;
        }
    }
}

struct Shared {
    /// The audit database (canonical path).
    path: PathBuf,
    state: Mutex<State>,
    /// Wakes the committer thread: a batch is due, or stop.
    work: Condvar,
    /// The cores of the machine (see [`Shared::batch_due`]).
    cores: usize,
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
    /// The committer shared by every catalog of this process whose audit database is `path`.
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
                cores: std::thread::available_parallelism().map_or(1, usize::from),
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
            taken: AtomicBool::new(false),
            counted: AtomicBool::new(false),
        });
        let s = &self.shared;
        let mut st = s.lock();
        if let Some(e) = &st.failed {
            return Err(CatalogError::AuditCommit(Arc::clone(e)));
        }
        // The first record queued starts the committer's clock (it may sleep untimed).
        let first = st.oldest.is_none();
        st.oldest.get_or_insert_with(Instant::now);
        st.pending.push((row, Arc::clone(&mine)));
        st.active += 1;
        s.wake_if(st, first);
        Ok(PendingKeyAudit {
            state: Pending::Queued(mine, Arc::clone(s)),
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
        let failed: Vec<_> = self.batch.drain(..).chain(st.pending.drain(..)).collect();
        for (_, ticket) in &failed {
            ticket.settle(&mut st, Err(Arc::clone(&e)));
        }
        drop(st);
        for (_, ticket) in &failed {
            ticket.wake();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The caller of `mine` starts waiting for it (unless its outcome came meanwhile).
    fn wait_for(&self, mine: &Ticket) {
        let mut st = self.lock();
        if mine.outcome.get().is_some() {
            return;
        }
        st.waiting += 1;
        mine.counted.store(true, Ordering::Relaxed);
        if !mine.taken.load(Ordering::Relaxed) {
            st.demanded = true;
        }
        self.wake_if_due(st);
    }

    /// The caller of `mine` is done with it.
    fn left(&self, mine: &Ticket, how: Left) {
        let mut st = self.lock();
        st.active -= 1;
        st.uncount(mine);
        if let Left::Dropped = how {
            // The record is still written, without anyone waiting for it.
            st.demanded |= !mine.taken.load(Ordering::Relaxed);
        }
        self.wake_if_due(st);
    }

    /// Wakes the committer if it sleeps and a batch is due.
    fn wake_if_due(&self, st: MutexGuard<'_, State>) {
        self.wake_if(st, false);
    }

    /// Wakes the committer if it sleeps and a batch is due, or `always`.
    fn wake_if(&self, mut st: MutexGuard<'_, State>, always: bool) {
        let wake = st.idle && (always || self.batch_due(&st));
        if wake {
            st.idle = false;
        }
        drop(st);
        if wake {
            self.work.notify_one();
        }
    }

    /// Whether the committer should write a batch of what is queued now.
    ///
    /// Each batch costs a write and an `fdatasync`, whose CPU time (the I/O path,
    /// the wake-ups) competes with the callers' key operations, so batches should be
    /// as large as latency allows:
    /// - with no more active callers than cores, a record is written as soon as it is
    ///   queued: there is a core to spare and the sync overlaps the key operation;
    /// - with more, a batch is written once a caller waits for a queued record AND
    ///   the callers still busy with their key operation are down to
    ///   [`Shared::busy_allowance`]: until then, the ones that wait cost no CPU time
    ///   and their records gather into one batch.
    fn batch_due(&self, st: &State) -> bool {
        let busy = st.active - st.waiting;
        !st.pending.is_empty()
            && (st.stop
                || st.pending.len() >= MAX_BATCH
                || st.active <= self.cores
                || (st.demanded && busy <= self.busy_allowance(st.active))
                || Self::delay(st).is_some_and(|d| d.is_zero()))
    }

    /// How long until the oldest queued record is due by its age alone
    /// ([`UNWAITED_DELAY`] while no caller waits for a queued record, else
    /// [`MAX_DELAY`]); `None` with nothing queued.
    fn delay(st: &State) -> Option<Duration> {
        let limit = if st.demanded {
            MAX_DELAY
        } else {
            UNWAITED_DELAY
        };
        st.oldest.map(|t| limit.saturating_sub(t.elapsed()))
    }

    /// How few of `active` callers may still be busy when a demanded batch is written:
    /// enough that their remaining work keeps the cores occupied while the batch is
    /// synced — [`BUSY_SLACK`] per core, and at least half of the active callers. The
    /// half matters with many callers: their batches are larger (slower to write and
    /// to wake), and waiting for all but a few callers left the cores idle during the
    /// sync (32 callers on 2 cores, RSA-2048 unwrap: idle 7% of the time at 4 busy,
    /// 2% at 16; 85% of the raw rate → 89%). With 8 callers the two agree.
    fn busy_allowance(&self, active: usize) -> usize {
        (BUSY_SLACK * self.cores).max(active / 2)
    }

    /// The committer thread.
    fn run(&self) {
        shorten_time_slice();
        let mut log: Option<Log> = None;
        let mut dying = Dying {
            shared: self,
            batch: Vec::new(),
        };
        loop {
            let mut st = self.lock();
            while !self.batch_due(&st) {
                if st.stop && st.pending.is_empty() {
                    return;
                }
                st.idle = true;
                match Self::delay(&st) {
                    None => st = self.work.wait(st).unwrap_or_else(PoisonError::into_inner),
                    // Queued records are due by their age at the latest.
                    Some(d) => {
                        st = self
                            .work
                            .wait_timeout(st, d)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
            }
            st.idle = false;
            let n = st.pending.len().min(MAX_BATCH);
            dying.batch = st.pending.drain(..n).collect();
            for (_, ticket) in &dying.batch {
                ticket.taken.store(true, Ordering::Relaxed);
            }
            // Callers of records left queued (beyond MAX_BATCH) may wait already.
            st.demanded = !st.pending.is_empty();
            st.oldest = if st.pending.is_empty() {
                None
            } else {
                Some(Instant::now())
            };
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
            // The batch's callers stop counting as waiting now, before the next batch
            // is judged due: until each has run again, they are busy (runnable), not
            // waiting, and a count that still held them would write the next batch at
            // once, small.
            for (i, (_, ticket)) in dying.batch.iter().enumerate() {
                ticket.settle(&mut st, r.clone().map(|seqs| seqs[i]));
            }
            drop(st);
            for (_, ticket) in dying.batch.drain(..) {
                ticket.wake();
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
            conn: open_audit_database(path, "NORMAL")?,
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
        // Asks for the link count alone: a query of the file's times (as `fstat` makes)
        // would give the next write a fine-grained mtime (multigrain timestamps, Linux
        // 6.13+), and every `fdatasync` would then write the inode as well.
        let links = rustix::fs::statx(wal, "", AtFlags::EMPTY_PATH, StatxFlags::NLINK)
            .map_err(|e| io_error(e.into()))?
            .stx_nlink;
        if links == 0 {
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

/// The committer's time slice (Linux 6.12+ `sched_setattr` with `sched_runtime` for a
/// normal thread): shorter than the default, so that when its I/O completes it preempts
/// a caller busy with a key operation instead of waiting for that caller's slice to end
/// (0.3–0.7 ms on the development VM, between each device request of a sync). It needs
/// no privilege; a kernel that refuses it leaves the default slice.
const COMMITTER_SLICE_NS: u64 = 100_000;

/// Asks for [`COMMITTER_SLICE_NS`] on the calling thread, keeping its policy (normal)
/// and nice value; a failure is ignored.
fn shorten_time_slice() {
    let Ok(nice) = rustix::process::getpriority_process(None) else {
        return;
    };
    let attr = libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: COMMITTER_SLICE_NS,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: sched_setattr(2) reads `attr.size` bytes from a valid, initialised
    // `sched_attr` that outlives the call; pid 0 is the calling thread. It changes no
    // memory of this process.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0u32) };
}

fn io_error(e: std::io::Error) -> CatalogError {
    CatalogError::Invalid(format!("audit WAL: {e}"))
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use crate::{Catalog, tests::an_audit_record};

    /// More callers than cores (so batches wait for callers), each of which waits
    /// for its record at once, after it is durable already, or never (drops it):
    /// every record is written, nobody hangs, and the committer's count of active
    /// and waiting callers returns to zero.
    #[test]
    fn every_record_is_written_however_its_caller_waits() {
        const THREADS: usize = 12;
        const EACH: usize = 30;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let first = Catalog::open(&path).unwrap();
        let (done_tx, done) = mpsc::channel();
        for t in 0..THREADS {
            let path = path.clone();
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                let c = Catalog::open(&path).unwrap();
                for i in 0..EACH {
                    let pending = c.begin_key_audit(&an_audit_record("v")).unwrap();
                    match (t + i) % 3 {
                        0 => drop(pending.wait().unwrap()),
                        1 => {
                            std::thread::sleep(Duration::from_millis(2));
                            pending.wait().unwrap();
                        }
                        _ => drop(pending),
                    }
                }
                done_tx.send(()).unwrap();
            });
        }
        for _ in 0..THREADS {
            done.recv_timeout(Duration::from_secs(60))
                .expect("a caller hangs");
        }
        let committer = first.audit.as_ref().unwrap();
        // Dropped records are written within MAX_DELAY of being dropped.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while first.key_audit("v").unwrap().len() < THREADS * EACH {
            assert!(std::time::Instant::now() < deadline, "records missing");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(first.key_audit("v").unwrap().len(), THREADS * EACH);
        let st = committer.shared.lock();
        assert_eq!((st.active, st.waiting), (0, 0));
        assert!(st.pending.is_empty());
    }

    /// With more callers than cores, records nobody waits for yet (a worker's begun
    /// calls) are written within UNWAITED_DELAY, without any wait: by the time their
    /// callers come back to them, they are durable.
    #[test]
    fn beyond_the_cores_records_nobody_waits_for_are_written_soon() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        let cores = c.audit.as_ref().unwrap().shared.cores;
        let begin = || c.begin_key_audit(&an_audit_record("v")).unwrap();
        let written = |n: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while c.key_audit("v").unwrap().len() < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "records nobody waits for are not written"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let mut begun: Vec<_> = (0..cores + 5).map(|_| begin()).collect();
        written(begun.len());
        // The committer sleeps with nothing queued; a record queued now, with more
        // callers than cores active, wakes it to start its clock.
        begun.push(begin());
        written(begun.len());
        for p in begun {
            p.wait().unwrap();
        }
        let st = c.audit.as_ref().unwrap().shared.lock();
        assert_eq!((st.active, st.waiting, st.oldest), (0, 0, None));
    }

    /// Beyond the cores, a queued record is due by its age after UNWAITED_DELAY while
    /// nobody waits for a queued record, and after MAX_DELAY once somebody does (then
    /// the busy callers decide: see `a_demanded_batch_is_due_when_half_the_callers_wait`).
    #[test]
    fn a_queued_record_is_due_by_its_age() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        let shared = &c.audit.as_ref().unwrap().shared;
        let many = 32 * shared.cores;
        let due = |age: Duration, demanded: bool| {
            let st = super::State {
                pending: vec![a_queued_record()],
                oldest: Some(std::time::Instant::now() - age),
                demanded,
                active: many,
                ..Default::default()
            };
            shared.batch_due(&st)
        };
        assert!(!due(Duration::ZERO, false));
        assert!(due(super::UNWAITED_DELAY, false));
        assert!(!due(super::UNWAITED_DELAY, true));
        assert!(due(super::MAX_DELAY, true));
        // Nothing queued: nothing is due, and the committer sleeps untimed.
        let idle = super::State::default();
        assert!(!shared.batch_due(&idle));
        assert_eq!(super::Shared::delay(&idle), None);
    }

    fn a_queued_record() -> super::Queued {
        let ticket = std::sync::Arc::new(super::Ticket {
            outcome: std::sync::OnceLock::new(),
            caller: std::thread::current(),
            taken: std::sync::atomic::AtomicBool::new(false),
            counted: std::sync::atomic::AtomicBool::new(false),
        });
        (an_audit_record("v"), ticket)
    }

    /// Settling a record takes its caller off the waiting count at once (the next
    /// batch is judged with it busy, as it is once woken), and the caller's own leave
    /// does not take it off twice.
    #[test]
    fn a_settled_caller_stops_counting_as_waiting() {
        use std::sync::{OnceLock, atomic::AtomicBool};
        let ticket = super::Ticket {
            outcome: OnceLock::new(),
            caller: std::thread::current(),
            taken: AtomicBool::new(true),
            counted: AtomicBool::new(true),
        };
        let mut st = super::State {
            active: 2,
            waiting: 2,
            ..Default::default()
        };
        ticket.settle(&mut st, Ok(7));
        assert_eq!(st.waiting, 1);
        st.uncount(&ticket);
        assert_eq!(st.waiting, 1);
        assert_eq!(ticket.outcome.get().map(|r| *r.as_ref().unwrap()), Some(7));
    }

    /// A demanded batch is written once the busy callers are down to 2 a core, or to
    /// half of the active callers when that is more.
    #[test]
    fn a_demanded_batch_is_due_when_half_the_callers_wait() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        let shared = &c.audit.as_ref().unwrap().shared;
        let cores = shared.cores;
        let due = |active: usize, waiting: usize| {
            let st = super::State {
                pending: vec![a_queued_record()],
                oldest: Some(std::time::Instant::now()),
                demanded: true,
                active,
                waiting,
                ..Default::default()
            };
            shared.batch_due(&st)
        };
        let few = 4 * cores; // BUSY_SLACK * cores = 2 * cores busy allowed
        assert!(!due(few, few - 2 * cores - 1));
        assert!(due(few, few - 2 * cores));
        let many = 32 * cores; // half of them may be busy
        assert!(!due(many, many / 2 - 1));
        assert!(due(many, many / 2));
    }

    /// On Linux 6.12 and later, a committer thread runs with the short time slice.
    #[test]
    fn the_committer_asks_for_a_short_time_slice() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut v = release
            .split(['.', '-'])
            .map(|x| x.parse::<u32>().unwrap_or(0));
        if (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (6, 12) {
            return; // no custom slices for normal threads
        }
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        c.log_key_audit(&an_audit_record("v")).unwrap();
        let mut slices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if comm.trim() != "coffer-audit" {
                continue;
            }
            let sched = std::fs::read_to_string(task.join("sched")).unwrap_or_default();
            slices.extend(
                sched
                    .lines()
                    .filter(|l| l.starts_with("se.slice"))
                    .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u64>().ok()),
            );
        }
        if slices.is_empty() {
            return; // /proc/PID/sched needs CONFIG_SCHED_DEBUG
        }
        // Other tests' committers may be starting (not yet asked): this test's own
        // committer has written a record, so it has asked.
        assert!(slices.contains(&super::COMMITTER_SLICE_NS), "{slices:?}");
    }
}

//! The backup pipeline.
//!
//! ```text
//! walker thread:  walk ─ stat ─ (unchanged? reuse parent's chunk list)
//!                        ├ file ≥ 8 MiB: its blocks are sent to the workers ────────────┐
//!                        └ read ─ chunk (≤ 1 MiB: whole; else keyed FastCDC, sizes by     │
//!                            │       file size, four-lane candidate scan)                │
//!                            ├ small file: keyed hash ─ dedup check ─ new? ─ copy ─┐     │
//!                            ├ whole file while the workers keep up: copy, unhashed ┤     │
//!                            └ stream: read in shared blocks (scanned ahead by a   ┤ bounded
//!                              thread a core, cut in order), chunks sent unhashed  │ channel,
//!                              as block ranges, not copies ────────────────────────┤ batches
//! N workers:      [a large file's block: pread ─ scan ─ cut in its turn ─ chunks:]  │
//!                 [keyed hash ─ dedup check ─ id back to the walker, in order]      ◄─┘
//!                 ─ compress (zstd, skipped when incompressible) straight into the open pack
//!                 ─ encrypt there (or, stored raw, from the chunk into the pack) ─ full pack ─┐
//! 2 pack writers: put (O_DIRECT, fsync, rename, fsync dir) ─ buffer back to the workers
//! finally:        index object ─ manifest (the recovery point becomes visible only now)
//! ```
//! A large file ([`large_file::ParallelFile`]) is read by the workers themselves, a block each at a
//! time: each reads, scans and stores its block on one core, while its bytes are in
//! that core's cache; only the cut, cheap, goes block after block. Once its blocks are
//! sent the walker goes on ([`large_file::FileInFlight`]: one at a time), so that the next large
//! file's blocks queue behind its last ones; its node is completed when it lands. The walker builds
//! the trees itself. A large file's chunk ids come back from the
//! workers before its node is made. A small file (one chunk) is hashed by the walker
//! when the workers are the slower side; while they keep up (their queue is under half
//! full) it goes to them unhashed, so that the walker, the bottleneck with many small
//! files, only reads: its node holds a placeholder, and its directory's tree
//! ([`PendingTree`]) is stored once the ids are back, taken as they come (looked at
//! each time another subdirectory is listed; the walker waits only past
//! [`MAX_WAITING_TREES`] trees and at the end). Memory is bounded by
//! the channel of work (and the few read blocks its chunks refer to), the trees
//! that wait, one read window, one block and one open pack per worker, a pack being
//! written per pack writer and spare pack buffers; chunk copies, read blocks and pack
//! buffers are recycled rather than allocated per chunk, block or pack.

use std::{
    fs::{self, File, Metadata},
    io::Read,
    ops::Range,
    os::fd::OwnedFd,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use coffer_crypto::ChunkId;
use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};
use rustix::fs::{Mode, OFlags};

use crate::{
    BackupOutcome, BackupRequest, BackupSource, EngineError, Progress, RecoveryPointInfo,
    SourceKind,
    chunker::{self, Chunker, ScanLanes, Split},
    format::{self, BlobKind, ObjectType},
    index::{IdSet, Index},
    pack::{FinishedPack, PackDirectory, PackWriter},
    repo::Inner,
    tree::{Manifest, Node, NodeKind, STREAM_NODE, Tree},
};

mod large_file;

use large_file::{FileInFlight, ParallelFile};

/// Where a worker sends a chunk's id: (position, channel).
type Reply = (usize, Sender<(usize, ChunkId)>);

/// Stands for a chunk or tree id still to come from a worker (never stored: replaced
/// before its tree is).
const DEFERRED_ID: ChunkId = ChunkId([0; 32]);

/// Directories whose trees may wait for ids at once; beyond, the walker waits for
/// the workers before it goes on (which bounds the memory they hold).
const MAX_WAITING_TREES: usize = 256;

/// A directory's nodes, of which `waiting` small files still wait for their chunk id
/// (sent on `replies` with the node's position), and `subdirs` for their trees.
struct PendingTree {
    nodes: Vec<Node>,
    waiting: usize,
    replies: Receiver<(usize, ChunkId)>,
    /// Subdirectories whose tree waits: (position of their node, tree).
    subdirs: Vec<(usize, PendingTree)>,
    /// Positions of large files that failed once in flight: left out of the tree.
    skipped: Vec<usize>,
}

/// A chunk on its way to a worker. With `id` set, the walker hashed it and found it
/// new; without, the worker hashes it, decides whether it is new, and sends the id
/// back on `reply` with the position the walker gave (a stream's chunk in the
/// stream, or a small file's node in its directory).
struct Job {
    id: Option<ChunkId>,
    kind: BlobKind,
    data: ChunkData,
    reply: Option<Reply>,
}

/// A chunk's bytes: a copy (small files, trees) or a range of a shared read block
/// (streams: no copy per chunk).
enum ChunkData {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>, Range<usize>),
}

impl ChunkData {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Shared(block, range) => &block[range.clone()],
        }
    }

    /// Hands the buffer back to its pool (a shared block once its last chunk is done).
    fn recycle(self, pools: &Pools) {
        match self {
            Self::Owned(v) => {
                let _ = pools.chunks.0.try_send(v);
            }
            Self::Shared(block, _) => {
                if let Some(b) = Arc::into_inner(block) {
                    let _ = pools.blocks.0.try_send(b);
                }
            }
        }
    }
}

/// Batches of chunks queued between the walker and the workers: a few milliseconds
/// of work (about 4 MiB), so that a descheduled walker or worker on a busy machine
/// does not stall the other side at once. A stream's chunks refer to shared read
/// blocks, and a large file's blocks are only their numbers, so this costs a few
/// blocks of memory, not copies.
const JOB_QUEUE: usize = 16;

/// Chunks go to the workers in batches of up to this many bytes or [`BATCH_JOBS`]
/// chunks: one channel operation (and at most one wake-up) per batch instead of per
/// chunk, which for small files cost more than hashing them.
const BATCH_BYTES: usize = 256 << 10;
const BATCH_JOBS: usize = 64;

/// Files at least this large are read, cut and hashed by the workers
/// ([`ParallelFile`]); smaller ones are read and cut by the walker, and hashed inline,
/// where a round trip would cost more.
const ASYNC_HASH_MIN_FILE: u64 = 8 << 20;

/// Buffers passed back for reuse instead of being freed: chunk copies and a stream's
/// read blocks (walker → worker → walker) and pack buffers (worker → pack writer → worker). Reusing them
/// keeps the process from touching fresh memory for every chunk and pack.
struct Pools {
    chunks: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    blocks: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    packs: PackBuffers,
}

/// Data packs' buffers (each about 17 MiB, touched whole): at most one per worker and
/// one per pack writer exist, so that a second pack writer does not raise the peak
/// memory; a worker that needs one while all are in use waits for a pack writer to
/// give one back. (Tree packs, few and small, get their own.)
struct PackBuffers {
    free: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    /// Buffers that may still be made.
    unmade: std::sync::atomic::AtomicUsize,
}

impl PackBuffers {
    fn new(limit: usize) -> Self {
        Self {
            free: bounded(limit),
            unmade: limit.into(),
        }
    }

    /// A buffer for a data pack (empty when newly made). Waits while all are in use,
    /// unless `stop` is set (storing failed: buffers may not come back).
    fn take(&self, stop: &AtomicBool) -> Vec<u8> {
        loop {
            if let Ok(buf) = self.free.1.try_recv() {
                return buf;
            }
            let made = self
                .unmade
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            if made.is_ok() || stop.load(Ordering::Relaxed) {
                return Vec::new();
            }
            if let Ok(buf) = self.free.1.recv_timeout(Duration::from_millis(50)) {
                return buf;
            }
        }
    }

    /// Gives a data pack's buffer back.
    fn give(&self, buf: Vec<u8>) {
        let _ = self.free.0.try_send(buf);
    }
}

/// What the pack writer stored.
#[derive(Default)]
struct Written {
    dirs: Vec<PackDirectory>,
    bytes: u64,
}

/// Threads storing full packs: two, so that one writes while the other waits for its
/// `fsync` and rename (a virtio disk took 1.4–1.7 GB/s with one writer, 1.8 with two;
/// a 2 GiB first backup went from 0.83 to 0.77 s). The second costs one more pack
/// buffer ([`PackBuffers`]): about 17 MiB of peak memory.
const PACK_WRITERS: usize = 2;

/// Number of worker threads: one per available core.
fn workers() -> usize {
    crate::cores().clamp(1, 16)
}

pub(crate) fn run(
    inner: &Inner,
    req: BackupRequest,
    progress: &dyn Progress,
) -> Result<BackupOutcome, EngineError> {
    let (index, _damaged) = inner.load_index()?;
    let source_kind = match req.source {
        BackupSource::Directory(_) => SourceKind::Directory,
        BackupSource::Stream(_) => SourceKind::Stream,
    };
    // The newest readable recovery point of this instance is the parent for change detection.
    let parent = inner
        .load_manifests()?
        .into_iter()
        .filter_map(|(_, m)| m.ok())
        .filter(|m| m.info.instance_id == req.instance_id && m.info.source_kind == source_kind)
        .max_by(|a, b| (a.info.time, &a.info.id).cmp(&(b.info.time, &b.info.id)));

    let (root, stats, warnings, written) =
        pipeline(inner, &index, progress, |walker| match req.source {
            BackupSource::Directory(ref path) => walker.backup_root(path, parent.as_ref()),
            BackupSource::Stream(reader) => walker.backup_stream(reader, req.time),
        })?;
    let mut added = written.bytes;
    if !written.dirs.is_empty() {
        let id = format::new_object_id()?;
        let (key, bytes) = format::seal_meta(&inner.dek, ObjectType::Index, &id, &written.dirs)?;
        inner.store.put(&key, &bytes)?;
        added += bytes.len() as u64;
    }
    let rp_id = format::new_object_id()?;
    let info = RecoveryPointInfo {
        id: hex::encode(rp_id),
        instance_id: req.instance_id,
        time: req.time,
        source_kind,
        logical_bytes: stats.bytes,
        added_bytes: added,
        file_count: stats.files,
        dir_count: stats.dirs,
    };
    let mut manifest = Manifest {
        info,
        root,
        parent: parent.map(|p| p.info.id),
    };
    // The manifest's own size counts as added; estimate then fix up (sizes differ by a few bytes at most).
    let (_, probe) = format::seal_meta(&inner.dek, ObjectType::Manifest, &rp_id, &manifest)?;
    manifest.info.added_bytes += probe.len() as u64;
    let (key, bytes) = format::seal_meta(&inner.dek, ObjectType::Manifest, &rp_id, &manifest)?;
    inner.store.put(&key, &bytes)?;
    Ok(BackupOutcome {
        recovery_point: manifest.info,
        warnings,
    })
}

/// Runs `walk` with a walker whose workers and pack writers run meanwhile; returns its
/// result once every queued chunk is stored, with the walk's statistics, warnings and
/// what the pack writers stored.
fn pipeline<'a, T>(
    inner: &'a Inner,
    index: &'a Index,
    progress: &'a dyn Progress,
    walk: impl FnOnce(&mut Walker<'_>) -> Result<T, EngineError>,
) -> Result<(T, Stats, Vec<String>, Written), EngineError> {
    let written = Mutex::new(Written::default());
    let queued = Mutex::new(IdSet::default());
    let n_workers = workers();
    let (tx, rx) = bounded::<Work<'_>>(JOB_QUEUE);
    let (pack_tx, pack_rx) = bounded::<FinishedPack>(0);
    let pools = Pools {
        chunks: bounded(n_workers * 6 + 2),
        blocks: bounded(2),
        packs: PackBuffers::new(n_workers + PACK_WRITERS),
    };
    // Set when storing a pack failed: the workers stop compressing.
    let failed = AtomicBool::new(false);
    let result = thread::scope(|s| {
        let (written, pools, failed) = (&written, &pools, &failed);
        let writers: Vec<_> = (0..PACK_WRITERS)
            .map(|_| {
                let pack_rx = pack_rx.clone();
                crate::spawn_named(s, "coffer-packs", move || {
                    pack_writer(inner, pack_rx, written, pools, failed)
                })
            })
            .collect();
        drop(pack_rx);
        let handles: Vec<_> = (0..n_workers)
            .map(|_| {
                let (rx, pack_tx) = (rx.clone(), pack_tx.clone());
                let (queued, index) = (&queued, index);
                crate::spawn_named(s, "coffer-worker", move || {
                    worker(inner, index, queued, rx, pack_tx, pools, failed)
                })
            })
            .collect();
        drop((rx, pack_tx));
        let mut walker = Walker {
            inner,
            index,
            queued: &queued,
            tx,
            trees_waiting: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            batch_replies: 0,
            pools,
            progress,
            stats: Stats::default(),
            warnings: Vec::new(),
            read_buf: Vec::new(),
        };
        let root = walk(&mut walker);
        let root = root.and_then(|root| walker.flush().map(|()| root));
        let Walker {
            tx,
            stats,
            warnings,
            ..
        } = walker;
        drop(tx);
        let mut first_err = None;
        for h in handles.into_iter().chain(writers) {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err
                        .get_or_insert(EngineError::Internal("a backup worker panicked".into()));
                }
            }
        }
        // A worker's storage error is the root cause of a walker send failure.
        match (root, first_err) {
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(e),
            (Ok(root), None) => Ok((root, stats, warnings)),
        }
    });
    let (root, stats, warnings) = result?;
    let written = written
        .into_inner()
        .map_err(|_| EngineError::Internal("poisoned".into()))?;
    Ok((root, stats, warnings, written))
}

/// Stores full packs, one at a time (one of [`PACK_WRITERS`]), so that the workers
/// seldom wait on the disk; returns their buffers for reuse. After a failure it keeps receiving (so no
/// worker blocks) and tells the workers to stop compressing.
fn pack_writer(
    inner: &Inner,
    rx: Receiver<FinishedPack>,
    written: &Mutex<Written>,
    pools: &Pools,
    failed: &AtomicBool,
) -> Result<(), EngineError> {
    /// A panic here (a bug) also stops the workers, who may wait for its buffer.
    struct FailOnPanic<'f>(&'f AtomicBool);
    impl Drop for FailOnPanic<'_> {
        fn drop(&mut self) {
            if thread::panicking() {
                self.0.store(true, Ordering::Relaxed);
            }
        }
    }
    let _guard = FailOnPanic(failed);
    let mut error = None;
    for pack in rx {
        if error.is_none() {
            let len = pack.bytes().len() as u64;
            match inner.store.put(&pack.key, pack.bytes()) {
                Ok(()) => {
                    let (dir, buf) = pack.into_parts();
                    let kind = dir.kind;
                    let mut wr = written
                        .lock()
                        .map_err(|_| EngineError::Internal("poisoned".into()))?;
                    wr.bytes += len;
                    wr.dirs.push(dir);
                    drop(wr);
                    if kind == BlobKind::Data {
                        pools.packs.give(buf);
                    }
                    continue;
                }
                Err(e) => {
                    error = Some(e.into());
                    failed.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    error.map_or(Ok(()), Err)
}

/// What the walker queues for the workers.
enum Work<'a> {
    /// A batch of chunks (or whole small files) to hash, if not yet, and store.
    Chunks(Vec<Job>),
    /// Block `.1` of a large file: read, scan, cut in its turn, hash and store.
    Block(Arc<ParallelFile<'a>>, u64),
}

/// What backing up a regular file gave.
enum FileBacked<'a> {
    /// Its node's content (or the parent's) and its size.
    Done(NodeKind, u64),
    /// A large file on its way: its node is completed when it lands.
    InFlight(FileInFlight<'a>),
}

/// A worker's side of storing chunks: the dedup decision, and its open packs.
struct Storer<'a> {
    inner: &'a Inner,
    index: &'a Index,
    queued: &'a Mutex<IdSet>,
    packs: Sender<FinishedPack>,
    pools: &'a Pools,
    /// Set when storing a pack failed (in any worker).
    stop: &'a AtomicBool,
    data: Option<PackWriter>,
    trees: Option<PackWriter>,
    /// This worker's first failure: it goes on answering, without storing.
    failed: Option<EngineError>,
}

impl Storer<'_> {
    /// The chunk's id (`known`, or its keyed hash), and whether it is new to the vault
    /// (then it is marked queued: no other worker stores it).
    fn identify(&self, known: Option<ChunkId>, bytes: &[u8]) -> (ChunkId, bool) {
        match known {
            Some(id) => (id, true),
            None => {
                let id = self.inner.id_key.id(bytes);
                let new = !self.index.contains(&id)
                    && self
                        .queued
                        .lock()
                        .map(|mut q| q.insert(id))
                        .unwrap_or(false);
                (id, new)
            }
        }
    }

    /// Adds a new chunk to this worker's open pack of its kind, handing the pack to the
    /// pack writer once full. After a failure it does nothing.
    fn pack(&mut self, kind: BlobKind, id: ChunkId, bytes: &[u8]) {
        if self.failed.is_some() || self.stop.load(Ordering::Relaxed) {
            return;
        }
        let (inner, pools) = (self.inner, self.pools);
        let slot = match kind {
            BlobKind::Tree => &mut self.trees,
            BlobKind::Data => &mut self.data,
        };
        let step = (|| {
            let w = match slot {
                Some(w) => w,
                None => {
                    // Tree packs stay small: a recycled (fully touched) pack buffer
                    // would keep a whole pack's memory resident for them.
                    let buf = match kind {
                        BlobKind::Data => pools.packs.take(self.stop),
                        BlobKind::Tree => Vec::new(),
                    };
                    let target = inner.config.params.pack_target as usize;
                    slot.insert(PackWriter::with_buffer(&inner.dek, kind, target, buf)?)
                }
            };
            w.add_chunk(id, bytes, inner.config.params.zstd_level);
            if w.is_full() {
                hand_off(&self.packs, slot.take().expect("present"))?;
            }
            Ok(())
        })();
        if let Err(e) = step {
            self.failed = Some(e);
        }
    }

    /// Hands the open packs to the pack writer; returns the first failure.
    fn finish(mut self) -> Result<(), EngineError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        for w in [self.data.take(), self.trees.take()].into_iter().flatten() {
            if !w.is_empty() {
                hand_off(&self.packs, w)?;
            }
        }
        Ok(())
    }
}

fn hand_off(packs: &Sender<FinishedPack>, w: PackWriter) -> Result<(), EngineError> {
    packs
        .send(w.finish()?)
        .map_err(|_| EngineError::Internal("the pack writer stopped".into()))
}

fn worker(
    inner: &Inner,
    index: &Index,
    queued: &Mutex<IdSet>,
    rx: Receiver<Work<'_>>,
    packs: Sender<FinishedPack>,
    pools: &Pools,
    stop: &AtomicBool,
) -> Result<(), EngineError> {
    let mut storer = Storer {
        inner,
        index,
        queued,
        packs,
        pools,
        stop,
        data: None,
        trees: None,
        failed: None,
    };
    let (mut block, mut lanes) = (Vec::new(), ScanLanes::default());
    // After a failure, keep draining (and answering) work so the walker never waits
    // on a reply that cannot come; the error is returned at the end.
    for work in rx {
        match work {
            Work::Chunks(jobs) => {
                for job in jobs {
                    let (id, new) = storer.identify(job.id, job.data.bytes());
                    if let Some((pos, reply)) = &job.reply {
                        let _ = reply.send((*pos, id));
                    }
                    if new {
                        storer.pack(job.kind, id, job.data.bytes());
                    }
                    job.data.recycle(pools);
                }
            }
            Work::Block(file, k) => storer.store_block(&file, k, &mut block, &mut lanes),
        }
    }
    storer.finish()
}

#[derive(Default)]
struct Stats {
    bytes: u64,
    files: u64,
    dirs: u64,
}

struct Walker<'a> {
    inner: &'a Inner,
    index: &'a Index,
    queued: &'a Mutex<IdSet>,
    tx: Sender<Work<'a>>,
    /// Directory trees not yet stored (waiting for ids from the workers).
    trees_waiting: usize,
    /// Jobs not yet sent, their bytes, and how many of them will send an id back.
    batch: Vec<Job>,
    batch_bytes: usize,
    batch_replies: usize,
    /// Recycled buffers.
    pools: &'a Pools,
    progress: &'a dyn Progress,
    stats: Stats,
    warnings: Vec<String>,
    /// The chunker's read window, reused across files.
    read_buf: Vec<u8>,
}

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

impl<'a> Walker<'a> {
    /// A copy of `data` in a recycled buffer, to send to a worker.
    fn copy(&self, data: &[u8]) -> ChunkData {
        let mut v = self.pools.chunks.1.try_recv().unwrap_or_default();
        v.clear();
        v.extend_from_slice(data);
        ChunkData::Owned(v)
    }

    /// Hashes a blob and queues it for storage unless the vault already has it.
    fn put_blob(&mut self, kind: BlobKind, data: &[u8]) -> Result<ChunkId, EngineError> {
        let id = self.inner.id_key.id(data);
        let new = !self.index.contains(&id)
            && self
                .queued
                .lock()
                .map_err(|_| EngineError::Internal("poisoned".into()))?
                .insert(id);
        if new {
            self.send(Job {
                id: Some(id),
                kind,
                data: self.copy(data),
                reply: None,
            })?;
        }
        Ok(id)
    }

    fn check_stop(&self) -> Result<(), EngineError> {
        if self.progress.stop_requested() {
            return Err(EngineError::Stopped);
        }
        Ok(())
    }

    /// Queues `job` for the workers (sent with its batch).
    fn send(&mut self, job: Job) -> Result<(), EngineError> {
        self.batch_bytes += job.data.bytes().len();
        self.batch_replies += usize::from(job.reply.is_some());
        self.batch.push(job);
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_JOBS {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the jobs queued so far (their replies, if any, can come only then).
    fn flush(&mut self) -> Result<(), EngineError> {
        self.batch_bytes = 0;
        self.batch_replies = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_JOBS));
        self.tx
            .send(Work::Chunks(batch))
            .map_err(|_| EngineError::Internal("backup workers stopped".into()))
    }

    fn put_tree(&mut self, tree: &Tree) -> Result<ChunkId, EngineError> {
        let bytes = postcard::to_stdvec(tree).map_err(|e| EngineError::Internal(e.to_string()))?;
        self.put_blob(BlobKind::Tree, &bytes)
    }

    /// Reads and chunks `reader` (a file of `size_hint` bytes, or `u64::MAX` for a
    /// stream); returns its chunk ids in order and its length. How it is split depends
    /// on its size ([`crate::RepoParams`]).
    ///
    /// With `defer`, a file stored as one chunk is not hashed here: a worker hashes it
    /// and sends its id back as `defer` says; the returned ids are then
    /// [`DEFERRED_ID`], to be replaced ([`Walker::finish_tree`]).
    fn content(
        &mut self,
        mut reader: impl Read,
        size_hint: u64,
        defer: Option<Reply>,
    ) -> Result<(Vec<ChunkId>, u64), EngineError> {
        let chunking = &self.inner.chunking;
        let chunker = match chunking.split(size_hint) {
            Split::Chunks(c) => c,
            Split::Whole => {
                let limit = chunking.whole_file_max() as usize;
                let mut buf = std::mem::take(&mut self.read_buf);
                if buf.len() <= limit {
                    buf.resize(limit + 1, 0);
                }
                let mut end = 0;
                let eof = match chunker::fill(&mut reader, &mut buf[..=limit], &mut end) {
                    Ok(eof) => eof,
                    Err(source) => {
                        self.read_buf = buf;
                        return Err(EngineError::Source {
                            path: PathBuf::new(),
                            source,
                        });
                    }
                };
                if eof {
                    let ids = match defer {
                        Some(reply) if end > 0 => self
                            .whole_deferred(&buf[..end], reply)
                            .map(|()| vec![DEFERRED_ID]),
                        _ => self.whole(&buf[..end]),
                    };
                    self.read_buf = buf;
                    return ids.map(|ids| (ids, end as u64));
                }
                let head = buf[..end].to_vec();
                self.read_buf = buf;
                // The file grew past the limit after it was looked at: chunk all of it.
                let Split::Chunks(c) = chunking.split(limit as u64 + 1) else {
                    unreachable!("larger than the whole-file limit")
                };
                return self.chunked(std::io::Cursor::new(head).chain(reader), c, false);
            }
        };
        self.chunked(reader, chunker, size_hint >= ASYNC_HASH_MIN_FILE)
    }

    /// Stores a whole file read into memory as one chunk (none when empty).
    fn whole(&mut self, data: &[u8]) -> Result<Vec<ChunkId>, EngineError> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let id = self.put_blob(BlobKind::Data, data)?;
        self.progress.advance(data.len() as u64, 0);
        Ok(vec![id])
    }

    /// Sends a whole file's single chunk to the workers unhashed: a worker hashes it,
    /// stores it unless the vault has it, and sends its id back on `reply`.
    fn whole_deferred(&mut self, data: &[u8], reply: Reply) -> Result<(), EngineError> {
        self.send(Job {
            id: None,
            kind: BlobKind::Data,
            data: self.copy(data),
            reply: Some(reply),
        })?;
        self.progress.advance(data.len() as u64, 0);
        Ok(())
    }

    /// Stores a directory's tree once the workers have sent back the ids of its small
    /// files and its subdirectories' trees are stored; returns the tree's id. Without
    /// `wait`, only ids already sent back are taken, and `None` means the tree still
    /// waits.
    fn finish_tree(
        &mut self,
        t: &mut PendingTree,
        wait: bool,
    ) -> Result<Option<ChunkId>, EngineError> {
        if wait && t.waiting > 0 && self.batch_replies > 0 {
            // Some of the jobs waited for may still be in the batch.
            self.flush()?;
        }
        while t.waiting > 0 {
            let (pos, id) = if wait {
                t.replies.recv().map_err(|_| workers_stopped())?
            } else {
                match t.replies.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(workers_stopped()),
                }
            };
            match &mut t.nodes[pos].kind {
                NodeKind::File { content } if content[..] == [DEFERRED_ID] => content[0] = id,
                _ => return Err(EngineError::Internal("misplaced chunk id".into())),
            }
            t.waiting -= 1;
        }
        self.finish_subdirs(&mut t.nodes, &mut t.subdirs, wait)?;
        if t.waiting > 0 || !t.subdirs.is_empty() {
            return Ok(None);
        }
        self.trees_waiting -= 1;
        let nodes = std::mem::take(&mut t.nodes).into_iter().enumerate();
        let tree = Tree {
            nodes: nodes
                .filter(|(i, _)| !t.skipped.contains(i))
                .map(|(_, n)| n)
                .collect(),
        };
        self.put_tree(&tree).map(Some)
    }

    /// [`Walker::finish_tree`] of each of `subdirs` (nodes at their position in
    /// `nodes`): the trees stored are set in their nodes and leave `subdirs`.
    fn finish_subdirs(
        &mut self,
        nodes: &mut [Node],
        subdirs: &mut Vec<(usize, PendingTree)>,
        wait: bool,
    ) -> Result<(), EngineError> {
        let mut error = None;
        subdirs.retain_mut(|(pos, sub)| {
            if error.is_some() {
                return true;
            }
            match self.finish_tree(sub, wait) {
                Ok(Some(tree)) => {
                    nodes[*pos].kind = NodeKind::Dir { tree };
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    error = Some(e);
                    true
                }
            }
        });
        error.map_or(Ok(()), Err)
    }

    /// Cuts `reader` with `chunker`; with `parallel`, its chunks are hashed by the
    /// workers.
    fn chunked(
        &mut self,
        reader: impl Read,
        chunker: &Chunker,
        parallel: bool,
    ) -> Result<(Vec<ChunkId>, u64), EngineError> {
        let mut ids = Vec::new();
        let mut buf = std::mem::take(&mut self.read_buf);
        let (reply_tx, reply_rx) = crossbeam_channel::unbounded::<(usize, ChunkId)>();
        let mut count = 0usize;
        let n = if parallel {
            let pools = self.pools;
            chunker.for_each_shared_chunk(
                reader,
                || pools.blocks.1.try_recv().unwrap_or_default(),
                |block| {
                    let _ = pools.blocks.0.try_send(block);
                },
                |block, range| -> Result<(), ReadOrEngine> {
                    if self.progress.stop_requested() {
                        return Err(ReadOrEngine::Engine(EngineError::Stopped));
                    }
                    let len = range.len() as u64;
                    let job = Job {
                        id: None,
                        kind: BlobKind::Data,
                        data: ChunkData::Shared(Arc::clone(block), range),
                        reply: Some((count, reply_tx.clone())),
                    };
                    self.send(job).map_err(ReadOrEngine::Engine)?;
                    count += 1;
                    self.progress.advance(len, 0);
                    Ok(())
                },
            )
        } else {
            chunker.for_each_chunk(reader, &mut buf, |chunk| -> Result<(), ReadOrEngine> {
                if self.progress.stop_requested() {
                    return Err(ReadOrEngine::Engine(EngineError::Stopped));
                }
                ids.push(
                    self.put_blob(BlobKind::Data, chunk)
                        .map_err(ReadOrEngine::Engine)?,
                );
                count += 1;
                self.progress.advance(chunk.len() as u64, 0);
                Ok(())
            })
        };
        self.read_buf = buf;
        // Every job waited for below must be sent, and none left holding a reply sender.
        let flushed = if parallel { self.flush() } else { Ok(()) };
        let n = n.and_then(|n| flushed.map(|()| n).map_err(ReadOrEngine::Engine));
        drop(reply_tx);
        if parallel {
            let mut slots: Vec<Option<ChunkId>> = vec![None; count];
            for (pos, id) in reply_rx.iter() {
                slots[pos] = Some(id);
            }
            if n.is_ok() {
                ids = slots
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| EngineError::Internal("backup workers stopped".into()))?;
            }
        }
        match n {
            Ok(n) => Ok((ids, n)),
            Err(ReadOrEngine::Engine(e)) => Err(e),
            Err(ReadOrEngine::Read(e)) => Err(EngineError::Source {
                path: PathBuf::new(),
                source: e,
            }),
        }
    }

    fn backup_stream(
        &mut self,
        reader: Box<dyn Read + Send>,
        time: i64,
    ) -> Result<ChunkId, EngineError> {
        let (content, size) = self.content(reader, u64::MAX, None)?;
        self.stats.bytes = size;
        self.stats.files = 1;
        self.progress.advance(0, 1);
        let node = Node::stream_file(STREAM_NODE, content, size, nanos(time, 0));
        self.put_tree(&Tree { nodes: vec![node] })
    }

    fn backup_root(
        &mut self,
        path: &Path,
        parent: Option<&Manifest>,
    ) -> Result<ChunkId, EngineError> {
        let meta = fs::metadata(path).map_err(|e| EngineError::Source {
            path: path.to_owned(),
            source: e,
        })?;
        if !meta.is_dir() {
            return Err(EngineError::Source {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        // Fail up front if the root itself cannot be listed.
        fs::read_dir(path).map_err(|e| EngineError::Source {
            path: path.to_owned(),
            source: e,
        })?;
        let parent_tree = parent.and_then(|m| self.inner.read_tree(self.index, &m.root).ok());
        let mut root = self.backup_dir(path, Path::new(""), parent_tree)?;
        Ok(self.finish_tree(&mut root, true)?.expect("waited for"))
    }

    /// Backs up a directory; returns its tree, which may still wait for the ids of its
    /// small files (hashed by the workers meanwhile) and for subdirectories' trees.
    /// A subdirectory's tree is stored once complete, looked at each time another
    /// subdirectory has been listed and at the end, so that the walker goes on reading
    /// while the workers hash: it waits only past [`MAX_WAITING_TREES`].
    fn backup_dir(
        &mut self,
        path: &Path,
        rel: &Path,
        parent: Option<Tree>,
    ) -> Result<PendingTree, EngineError> {
        self.stats.dirs += 1;
        // Entries are looked at (`fstatat`) and opened (`openat`) relative to the
        // directory, not by their whole path: no path walk per file.
        let listed = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .and_then(|dir| Ok((dir, fs::read_dir(path)?)));
        let (dir, mut entries): (_, Vec<(Vec<u8>, std::io::Result<Metadata>)>) = match listed {
            Ok((dir, rd)) => {
                let entries = rd
                    .filter_map(|e| match e {
                        Ok(e) => Some((e.file_name().as_bytes().to_vec(), e.metadata())),
                        Err(err) => {
                            self.warnings.push(warning(
                                WARN_DIRECTORY_NOT_READABLE,
                                rel,
                                format!("cannot list an entry: {err}"),
                            ));
                            None
                        }
                    })
                    .collect();
                (Some(dir), entries)
            }
            Err(err) => {
                self.warnings.push(warning(
                    WARN_DIRECTORY_NOT_READABLE,
                    rel,
                    format!("directory skipped, cannot be read: {err}"),
                ));
                (None, Vec::new())
            }
        };
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let parent_nodes = parent.map(|t| t.nodes).unwrap_or_default();
        let mut nodes: Vec<Node> = Vec::with_capacity(entries.len());
        let (reply_tx, replies) = crossbeam_channel::unbounded();
        let mut waiting = 0;
        // Subdirectories whose tree waits: (position of their node, tree).
        let mut subdirs = Vec::new();
        // A subdirectory was listed since the waiting trees were last looked at.
        let mut listed_subdir = false;
        // The large file on its way (at most one), and those that failed on it.
        let mut in_flight: Option<(usize, FileInFlight<'a>, PathBuf)> = None;
        let mut skipped = Vec::new();
        for (name, meta) in entries {
            self.check_stop()?;
            // Trees whose ids are back are stored as soon as the next subdirectory is
            // listed (so that few wait: a directory of many subdirectories would
            // otherwise hold them all until its end), and waited for past the limit.
            let wait = self.trees_waiting > MAX_WAITING_TREES;
            if wait || std::mem::take(&mut listed_subdir) {
                self.finish_subdirs(&mut nodes, &mut subdirs, wait)?;
            }
            let child_rel = rel.join(std::ffi::OsStr::from_bytes(&name));
            let child = || path.join(std::ffi::OsStr::from_bytes(&name));
            let prev = parent_nodes
                .binary_search_by(|n| n.name.as_slice().cmp(&name))
                .ok()
                .map(|i| &parent_nodes[i]);
            let meta = match meta {
                Ok(m) => m,
                Err(err) => {
                    self.warnings.push(warning(
                        WARN_FILE_NOT_READABLE,
                        &child_rel,
                        format!("skipped, cannot be read: {err}"),
                    ));
                    continue;
                }
            };
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                let prev_tree = match prev.map(|p| &p.kind) {
                    Some(NodeKind::Dir { tree }) => self.inner.read_tree(self.index, tree).ok(),
                    _ => None,
                };
                if let Some(f) = in_flight.take() {
                    self.land(&mut nodes, &mut skipped, f)?;
                }
                let sub = self.backup_dir(&child(), &child_rel, prev_tree)?;
                subdirs.push((nodes.len(), sub));
                listed_subdir = true;
                NodeKind::Dir { tree: DEFERRED_ID }
            } else if ft.is_symlink() {
                match fs::read_link(child()) {
                    Ok(t) => NodeKind::Symlink {
                        target: t.as_os_str().as_bytes().to_vec(),
                    },
                    Err(err) => {
                        self.warnings.push(warning(
                            WARN_FILE_NOT_READABLE,
                            &child_rel,
                            format!("symlink skipped, cannot be read: {err}"),
                        ));
                        continue;
                    }
                }
            } else if ft.is_file() {
                let dir = dir.as_ref().expect("entries come from a listed directory");
                // The workers hash a small file when they keep up with the walker (their
                // queue is short); when they are the slower side, the walker has the
                // time to hash it itself, and its tree need not wait.
                let reply =
                    (self.tx.len() < JOB_QUEUE / 2).then(|| (nodes.len(), reply_tx.clone()));
                match self.backup_file(dir, &name, &meta, prev, reply) {
                    Ok(FileBacked::InFlight(f)) => {
                        // The one before lands while this one's blocks are stored.
                        if let Some(before) = in_flight.take() {
                            self.land(&mut nodes, &mut skipped, before)?;
                        }
                        let placeholder = NodeKind::File {
                            content: Vec::new(),
                        };
                        in_flight = Some((nodes.len(), f, child_rel));
                        nodes.push(node_from(name, placeholder, &meta));
                        continue;
                    }
                    Ok(FileBacked::Done(k, size)) => {
                        if matches!(&k, NodeKind::File { content } if content[..] == [DEFERRED_ID])
                        {
                            waiting += 1;
                        }
                        let mut node = node_from(name, k, &meta);
                        node.size = size;
                        nodes.push(node);
                        continue;
                    }
                    Err(err) => {
                        self.file_skipped(&child_rel, &err)?;
                        continue;
                    }
                }
            } else {
                self.warnings.push(warning(
                    WARN_SPECIAL_FILE_SKIPPED,
                    &child_rel,
                    "special file (device, FIFO or socket) skipped",
                ));
                continue;
            };
            nodes.push(node_from(name, kind, &meta));
        }
        if let Some(f) = in_flight.take() {
            self.land(&mut nodes, &mut skipped, f)?;
        }
        // Subdirectories whose ids are all back are stored now; the others wait with
        // this directory, unless too many trees wait (this one counted).
        self.trees_waiting += 1;
        let wait = self.trees_waiting > MAX_WAITING_TREES;
        self.finish_subdirs(&mut nodes, &mut subdirs, wait)?;
        Ok(PendingTree {
            nodes,
            waiting,
            replies,
            subdirs,
            skipped,
        })
    }

    /// Backs up one regular file; returns its node kind and the number of bytes stored.
    fn backup_file(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        meta: &Metadata,
        prev: Option<&Node>,
        reply: Option<Reply>,
    ) -> Result<FileBacked<'a>, std::io::Error> {
        self.stats.files += 1;
        // Unchanged since the parent recovery point (size, mtime, ctime, inode), and
        // every chunk still in the vault: reuse the chunk list without reading.
        if let Some(p) = prev
            && let NodeKind::File { content } = &p.kind
            && p.size == meta.len()
            && p.mtime_ns == nanos(meta.mtime(), meta.mtime_nsec())
            && p.ctime_ns == nanos(meta.ctime(), meta.ctime_nsec())
            && p.inode == meta.ino()
            && content.iter().all(|id| self.index.contains(id))
        {
            self.stats.bytes += meta.len();
            self.progress.advance(meta.len(), 1);
            return Ok(FileBacked::Done(
                NodeKind::File {
                    content: content.clone(),
                },
                meta.len(),
            ));
        }
        // O_NOFOLLOW: a file replaced by a symlink since it was looked at is skipped.
        let file = File::from(rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NOFOLLOW,
            Mode::empty(),
        )?);
        if let Split::Chunks(chunker) = self.inner.chunking.split(meta.len())
            && meta.len() >= ASYNC_HASH_MIN_FILE
        {
            let f = self.start_file(file, meta.len(), chunker).map_err(as_io)?;
            return Ok(FileBacked::InFlight(f));
        }
        let (content, size) = self.content(file, meta.len(), reply).map_err(as_io)?;
        self.stats.bytes += size;
        self.progress.advance(0, 1);
        Ok(FileBacked::Done(NodeKind::File { content }, size))
    }

    /// Reports a file that could not be read (it is left out of its directory's tree),
    /// unless the backup is stopping, which is then the error.
    fn file_skipped(&mut self, rel: &Path, err: &std::io::Error) -> Result<(), EngineError> {
        self.check_stop()?;
        self.warnings.push(warning(
            WARN_FILE_NOT_READABLE,
            rel,
            format!("file skipped, cannot be read: {err}"),
        ));
        Ok(())
    }
}

/// A file's backup error as the walker reports it: the source's own read error, or the
/// engine's as one.
fn as_io(e: EngineError) -> std::io::Error {
    match e {
        EngineError::Source { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    }
}

fn workers_stopped() -> EngineError {
    EngineError::Internal("backup workers stopped".into())
}

enum ReadOrEngine {
    Read(std::io::Error),
    Engine(EngineError),
}

impl From<std::io::Error> for ReadOrEngine {
    fn from(e: std::io::Error) -> Self {
        Self::Read(e)
    }
}

fn node_from(name: Vec<u8>, kind: NodeKind, meta: &Metadata) -> Node {
    let size = if matches!(kind, NodeKind::File { .. }) {
        meta.len()
    } else {
        0
    };
    Node {
        name,
        kind,
        mode: meta.mode() & 0o7777,
        mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
        uid: meta.uid(),
        gid: meta.gid(),
        size,
        inode: meta.ino(),
        dev: meta.dev(),
    }
}

/// Warning code: a directory (or an entry in it) could not be listed.
pub const WARN_DIRECTORY_NOT_READABLE: &str = "UserErrorDirectoryNotReadable";
/// Warning code: a file or symlink could not be read; it is not in the recovery point.
pub const WARN_FILE_NOT_READABLE: &str = "UserErrorFileNotReadable";
/// Warning code: a device, FIFO or socket was skipped.
pub const WARN_SPECIAL_FILE_SKIPPED: &str = "UserErrorSpecialFileSkipped";

/// A backup warning: `CODE: path: message`, the code first so it can be matched on.
fn warning(code: &str, rel: &Path, message: impl std::fmt::Display) -> String {
    format!("{code}: {}: {message}", show(rel))
}

fn show(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use coffer_crypto::{DataKey, PlatformKey, SecretKey, WrappedKey};
    use coffer_store::LocalStore;

    use super::*;
    use crate::{ChunkSizes, NoProgress, RepoParams, Repository};

    fn pseudo_random(n: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; n];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// Raw lengths of the chunks of each file of a recovery point's root, by name.
    fn chunk_lengths(repo: &Repository, rp: &str) -> HashMap<Vec<u8>, Vec<u32>> {
        let inner = &repo.inner;
        let (index, _) = inner.load_index().unwrap();
        let root = inner.manifest(rp).unwrap().root;
        let tree = inner.read_tree(&index, &root).unwrap();
        tree.nodes
            .into_iter()
            .filter_map(|n| match n.kind {
                NodeKind::File { content } => Some((
                    n.name,
                    content
                        .iter()
                        .map(|id| index.entry(id, index.get(id).unwrap()).1.raw_len)
                        .collect(),
                )),
                _ => None,
            })
            .collect()
    }

    /// A vault with the default parameters, in `dir`.
    fn default_repo(dir: &Path) -> Repository {
        let store = Arc::new(LocalStore::open(dir.join("s")).unwrap());
        let dek = DataKey::generate().unwrap();
        let pmk = PlatformKey::new("pmk".into(), &SecretKey::generate().unwrap());
        let wk = WrappedKey::seal(&pmk, &dek, "v", String::new()).unwrap();
        Repository::create(store, dir.join("l"), "v", dek, &wk, RepoParams::default()).unwrap()
    }

    /// Asks the backup to stop from the `.1`th time it is asked on.
    struct StopAfter(std::sync::atomic::AtomicU64, u64);
    impl Progress for StopAfter {
        fn stop_requested(&self) -> bool {
            self.0.fetch_add(1, Ordering::Relaxed) + 1 >= self.1
        }
    }

    /// A large file backed up block by block, start to finish.
    fn parallel_file<'w>(
        w: &mut Walker<'w>,
        file: File,
        size: u64,
        chunker: &'w Chunker,
    ) -> Result<(Vec<ChunkId>, u64), EngineError> {
        let f = w.start_file(file, size, chunker)?;
        w.finish_file(f)
    }

    #[test]
    fn a_large_file_read_block_by_block_gets_the_chunks_of_one_pass_whatever_size_it_had() {
        let dir = tempfile::tempdir().unwrap();
        let repo = default_repo(dir.path());
        let inner = &repo.inner;
        let (index, _) = inner.load_index().unwrap();
        let mut data = pseudo_random(6 << 20, 1);
        data.extend(b"some compressible text\n".iter().cycle().take(3 << 20));
        data.extend(pseudo_random(12345, 2));
        let path = dir.path().join("file");
        fs::write(&path, &data).unwrap();
        // The walker's chunker for large files.
        fn large<'w>(w: &Walker<'w>) -> &'w Chunker {
            match w.inner.chunking.split(u64::MAX) {
                Split::Chunks(c) => c,
                Split::Whole => unreachable!("a stream is chunked"),
            }
        }
        let Split::Chunks(chunker) = inner.chunking.split(u64::MAX) else {
            unreachable!("a stream is chunked")
        };
        let mut want = Vec::new();
        chunker.for_each_chunk_in(&data, |c| want.push(inner.id_key.id(c)));
        let (_, fresh) = chunker.block_layout();
        let len = data.len() as u64;
        // The size seen when the file was looked at: right; smaller (it grew since,
        // from nothing or by blocks, or to a block boundary); larger (it shrank since).
        for size in [len, 0, 1, 3 << 20, 4 * fresh as u64, len + 1, 40 << 20] {
            let (got, _, _, written) = pipeline(inner, &index, &NoProgress, |w| {
                parallel_file(w, File::open(&path).unwrap(), size, large(w))
            })
            .unwrap();
            assert_eq!(got.0, want, "size seen {size}");
            assert_eq!(got.1, len, "size seen {size}");
            assert!(
                written.bytes > (6 << 20),
                "size seen {size}: {}",
                written.bytes
            );
        }
        // A file that ends on a block boundary.
        fs::write(&path, &data[..2 * fresh]).unwrap();
        let mut want = Vec::new();
        chunker.for_each_chunk_in(&data[..2 * fresh], |c| want.push(inner.id_key.id(c)));
        let (got, ..) = pipeline(inner, &index, &NoProgress, |w| {
            parallel_file(w, File::open(&path).unwrap(), 2 * fresh as u64, large(w))
        })
        .unwrap();
        assert_eq!(got, (want, 2 * fresh as u64));
        // A read error fails the file (the source's error), and a stop stops it.
        let err = pipeline(inner, &index, &NoProgress, |w| {
            parallel_file(w, File::open(dir.path()).unwrap(), len, large(w))
        })
        .err()
        .expect("a read error");
        assert!(matches!(err, EngineError::Source { .. }), "{err:?}");
        fs::write(&path, &data).unwrap();
        // Asked before each block is sent: it stops after two.
        let stop = StopAfter(Default::default(), 3);
        let err = pipeline(inner, &index, &stop, |w| {
            parallel_file(w, File::open(&path).unwrap(), len, large(w))
        })
        .err()
        .expect("stopped");
        assert!(matches!(err, EngineError::Stopped), "{err:?}");
    }

    #[test]
    fn large_files_in_flight_one_after_another_land_in_their_own_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let repo = default_repo(dir.path());
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        // Large files (≥ 8 MiB, read block by block) next to each other, around a small
        // file and a subdirectory that holds another.
        let files: [(&str, usize); 5] = [
            ("a", 9 << 20),
            ("b", 5000),
            ("c", (12 << 20) + 7),
            ("d/e", 10 << 20),
            ("f", 8 << 20),
        ];
        for (i, (name, len)) in files.iter().enumerate() {
            fs::write(src.join(name), pseudo_random(*len, 10 + i as u8)).unwrap();
        }
        let rp = repo
            .backup(
                BackupRequest {
                    instance_id: "i".into(),
                    source: BackupSource::Directory(src.clone()),
                    time: 1,
                },
                &NoProgress,
            )
            .unwrap()
            .recovery_point;
        assert_eq!(
            rp.logical_bytes,
            files.iter().map(|f| f.1 as u64).sum::<u64>()
        );
        let inner = &repo.inner;
        let (index, _) = inner.load_index().unwrap();
        let root = inner
            .read_tree(&index, &inner.manifest(&rp.id).unwrap().root)
            .unwrap();
        let names: Vec<_> = root.nodes.iter().map(|n| n.name.clone()).collect();
        assert_eq!(names, [&b"a"[..], b"b", b"c", b"d", b"f"]);
        let sub = match &root.nodes[3].kind {
            NodeKind::Dir { tree } => inner.read_tree(&index, tree).unwrap(),
            _ => panic!("d is a directory"),
        };
        for (name, len) in files {
            let (tree, leaf) = match name.split_once('/') {
                Some((_, leaf)) => (&sub, leaf),
                None => (&root, name),
            };
            let node = tree
                .nodes
                .iter()
                .find(|n| n.name == leaf.as_bytes())
                .unwrap();
            assert_eq!(node.size, len as u64, "{name}");
            let NodeKind::File { content } = &node.kind else {
                panic!("{name} is a file")
            };
            let data = fs::read(src.join(name)).unwrap();
            let mut want = Vec::new();
            match inner.chunking.split(len as u64) {
                Split::Chunks(c) => c.for_each_chunk_in(&data, |ch| want.push(inner.id_key.id(ch))),
                Split::Whole => want.push(inner.id_key.id(&data)),
            }
            assert_eq!(content, &want, "{name}");
        }
    }

    #[test]
    fn a_large_file_that_fails_in_flight_is_left_out_of_its_tree_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let repo = default_repo(dir.path());
        let inner = &repo.inner;
        let (index, _) = inner.load_index().unwrap();
        let meta = fs::metadata(dir.path()).unwrap();
        let node = |name: &str| {
            let kind = NodeKind::File {
                content: Vec::new(),
            };
            node_from(name.as_bytes().to_vec(), kind, &meta)
        };
        let (kept, skipped) = (node("kept"), node("failed"));
        let (tree_id, _, warnings, _) = pipeline(inner, &index, &NoProgress, |w| {
            // A directory opened as a file: its first block's read fails.
            let chunker = match w.inner.chunking.split(u64::MAX) {
                Split::Chunks(c) => c,
                Split::Whole => unreachable!("a stream is chunked"),
            };
            let f = w.start_file(File::open(dir.path()).unwrap(), 20 << 20, chunker)?;
            let mut t = PendingTree {
                nodes: vec![kept.clone(), skipped.clone()],
                waiting: 0,
                replies: crossbeam_channel::never(),
                subdirs: Vec::new(),
                skipped: Vec::new(),
            };
            w.land(
                &mut t.nodes,
                &mut t.skipped,
                (1, f, PathBuf::from("failed")),
            )?;
            assert_eq!(t.skipped, [1]);
            w.trees_waiting += 1;
            Ok(w.finish_tree(&mut t, true)?.expect("nothing waits"))
        })
        .unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("UserErrorFileNotReadable: failed: file skipped"),
            "{warnings:?}"
        );
        let only_kept = postcard::to_stdvec(&Tree { nodes: vec![kept] }).unwrap();
        assert_eq!(tree_id, inner.id_key.id(&only_kept));
    }

    #[test]
    fn no_more_pack_buffers_are_made_than_the_limit() {
        let buffers = PackBuffers::new(2);
        let stop = AtomicBool::new(false);
        let (a, b) = (buffers.take(&stop), buffers.take(&stop));
        // A third waits for one to be given back.
        thread::scope(|s| {
            let third = s.spawn(|| {
                let mut buf = buffers.take(&stop);
                buf.push(1);
                buf
            });
            thread::sleep(Duration::from_millis(120));
            assert!(!third.is_finished(), "a third buffer was made");
            buffers.give(vec![7]);
            assert_eq!(third.join().unwrap(), [7, 1]);
        });
        // After a failure nobody may give one back: no waiting then.
        stop.store(true, Ordering::Relaxed);
        assert!(buffers.take(&stop).is_empty());
        drop((a, b));
    }

    #[test]
    fn chunk_sizes_follow_the_file_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(dir.path().join("s")).unwrap());
        let dek = DataKey::generate().unwrap();
        let pmk = PlatformKey::new("pmk".into(), &SecretKey::generate().unwrap());
        let wk = WrappedKey::seal(&pmk, &dek, "v", String::new()).unwrap();
        let params = RepoParams {
            whole_file_max: 64 << 10,
            medium_chunks: ChunkSizes {
                min: 4 << 10,
                avg: 16 << 10,
                max: 64 << 10,
            },
            large_file_min: 4 << 20,
            large_chunks: ChunkSizes {
                min: 1 << 10,
                avg: 4 << 10,
                max: 8 << 10,
            },
            ..RepoParams::default()
        };
        let repo = Repository::create(store, dir.path().join("l"), "v", dek, &wk, params).unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        let files: [(&str, usize); 5] = [
            ("empty", 0),
            ("small", 5000),
            ("whole", 64 << 10),
            ("medium", (4 << 20) - 1),
            ("large", 4 << 20),
        ];
        for (i, (name, len)) in files.iter().enumerate() {
            fs::write(src.join(name), pseudo_random(*len, i as u8)).unwrap();
        }
        let backup = |source| {
            repo.backup(
                BackupRequest {
                    instance_id: "i".into(),
                    source,
                    time: 1,
                },
                &NoProgress,
            )
            .unwrap()
            .recovery_point
            .id
        };
        let rp = backup(BackupSource::Directory(src.clone()));
        let lens = chunk_lengths(&repo, &rp);
        let total = |name: &str| {
            lens[name.as_bytes()]
                .iter()
                .map(|&l| l as usize)
                .sum::<usize>()
        };
        for (name, len) in files {
            assert_eq!(total(name), len, "{name}");
        }
        // Up to the whole-file limit: one chunk (none when empty).
        assert!(lens[&b"empty"[..]].is_empty());
        assert_eq!(lens[&b"small"[..]], [5000]);
        assert_eq!(lens[&b"whole"[..]], [64 << 10]);
        // Below the large-file size: medium chunks; from it on: fine chunks.
        let medium = &lens[&b"medium"[..]];
        assert!(medium.iter().all(|&l| l <= 64 << 10));
        assert!(medium[..medium.len() - 1].iter().all(|&l| l >= 4 << 10));
        assert!(
            medium.len() < (4 << 20) / (8 << 10),
            "{} chunks",
            medium.len()
        );
        let large = &lens[&b"large"[..]];
        assert!(large.iter().all(|&l| l <= 8 << 10));
        assert!(large.len() >= (4 << 20) / (8 << 10));
        // A stream (size unknown) gets fine chunks too.
        let data = pseudo_random(1 << 20, 9);
        let rp = backup(BackupSource::Stream(Box::new(std::io::Cursor::new(data))));
        let stream = &chunk_lengths(&repo, &rp)[STREAM_NODE];
        assert!(stream.iter().all(|&l| l <= 8 << 10));
        assert_eq!(stream.iter().map(|&l| l as usize).sum::<usize>(), 1 << 20);
    }
}

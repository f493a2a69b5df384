//! Large files, read block by block by the backup workers ([`ParallelFile`]), and the
//! walker's side of them ([`FileInFlight`]): the walker sends a file's blocks and goes
//! on; each worker reads (`pread`), scans, cuts in turn and stores a block on one core.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::PathBuf,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use coffer_crypto::ChunkId;
use crossbeam_channel::{Receiver, Sender};

use super::{Storer, Walker, Work, as_io, workers_stopped};
use crate::{
    EngineError, Progress,
    chunker::{BlockCut, Chunker, ScanLanes},
    format::BlobKind,
    tree::{Node, NodeKind},
};

/// A large file backed up block by block ([`Chunker::block_layout`]): each worker reads
/// a block itself (`pread`), scans it for cut candidates, cuts it when the blocks
/// before it are cut (in turn: a cut depends on where the chunk before ended), then
/// hashes, compresses and encrypts its chunks while they are still in its core's
/// cache. The walker only sends the blocks and gathers the chunk ids.
pub(super) struct ParallelFile<'a> {
    file: File,
    chunker: &'a Chunker,
    turn: Mutex<FileTurn>,
    turned: Condvar,
    /// Each chunk's (position in the file, id, length), as it is hashed.
    ids: Sender<(usize, ChunkId, u32)>,
    /// The backup stops: blocks not yet read are passed over.
    cancel: AtomicBool,
}

/// How far the cutting of a [`ParallelFile`] has come.
#[derive(Default)]
struct FileTurn {
    /// The block whose turn it is to be cut.
    next: u64,
    cut: BlockCut,
    /// Chunks cut so far.
    chunks: usize,
    /// The file's end was found (or reading it failed): later blocks are passed over.
    ended: bool,
    error: Option<std::io::Error>,
}

impl ParallelFile<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, FileTurn> {
        self.turn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for block `k`'s turn to be cut.
    fn wait_turn(&self, k: u64) -> std::sync::MutexGuard<'_, FileTurn> {
        let mut turn = self.lock();
        while turn.next != k {
            turn = self
                .turned
                .wait(turn)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        turn
    }
}

/// Passes block `k`'s turn on if its worker could not (it panicked): the file then
/// fails instead of its later blocks waiting for ever.
struct TurnGuard<'f, 'a> {
    file: &'f ParallelFile<'a>,
    k: u64,
    passed: bool,
}

impl Drop for TurnGuard<'_, '_> {
    fn drop(&mut self) {
        if !self.passed {
            let mut turn = self.file.wait_turn(self.k);
            turn.error
                .get_or_insert_with(|| std::io::Error::other("a backup worker stopped"));
            turn.ended = true;
            turn.next = self.k + 1;
            drop(turn);
            self.file.turned.notify_all();
        }
    }
}

/// A large file whose blocks the walker has sent: the walker goes on with the next
/// entries (the next large file's blocks queue behind this one's, so that no core
/// idles at a file's end) and completes its node once it lands ([`Walker::land`]).
pub(super) struct FileInFlight<'a> {
    pf: Arc<ParallelFile<'a>>,
    ids_rx: Receiver<(usize, ChunkId, u32)>,
    /// Blocks sent so far, and how many the size seen asks for.
    sent: u64,
    sized_blocks: u64,
    /// The chunk ids come back so far, by position, and their count.
    ids: Vec<Option<ChunkId>>,
    got: usize,
}

impl FileInFlight<'_> {
    /// Records a chunk's id come back.
    fn take(&mut self, (pos, id, len): (usize, ChunkId, u32), progress: &dyn Progress) {
        if self.ids.len() <= pos {
            self.ids.resize(pos + 1, None);
        }
        self.ids[pos] = Some(id);
        self.got += 1;
        progress.advance(u64::from(len), 0);
    }
}

impl Drop for FileInFlight<'_> {
    /// Dropped unfinished (the backup failed or stops): its blocks not yet read are
    /// passed over.
    fn drop(&mut self) {
        self.pf.cancel.store(true, Ordering::Relaxed);
    }
}

/// Reads into `buf` from `offset` until it is full or the file ends; returns the bytes
/// read.
fn read_at_full(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Storer<'_> {
    /// Reads, scans, cuts (in its turn) and stores block `k` of `file`; `buf` and
    /// `lanes` are this worker's, reused.
    pub(super) fn store_block(
        &mut self,
        file: &ParallelFile<'_>,
        k: u64,
        buf: &mut Vec<u8>,
        lanes: &mut ScanLanes,
    ) {
        let mut guard = TurnGuard {
            file,
            k,
            passed: false,
        };
        let chunker = file.chunker;
        let (_, fresh) = chunker.block_layout();
        let (from, head) = chunker.block_span(k);
        let offset = from + head as u64;
        let want = head + fresh;
        // One byte more than the block: whether the file goes on past it (the next
        // block reads that byte again).
        if buf.len() <= want {
            buf.resize(want + 1, 0);
        }
        let read = if file.cancel.load(Ordering::Relaxed) {
            Ok(0)
        } else {
            read_at_full(&file.file, &mut buf[..=want], from)
        };
        let read = read.map(|n| (n.min(want), n <= want));
        let candidates = match read {
            Ok((n, _)) if n > head => chunker.scan_block(&buf[..n], head, offset, lanes),
            _ => Vec::new(),
        };
        let mut ranges = Vec::new();
        let mut turn = file.wait_turn(k);
        let first = turn.chunks;
        if !turn.ended && !file.cancel.load(Ordering::Relaxed) {
            match read {
                Ok((n, ended)) => {
                    chunker.cut_block(
                        &mut turn.cut,
                        candidates,
                        &buf[..n],
                        from,
                        ended,
                        &mut ranges,
                    );
                    turn.chunks += ranges.len();
                    turn.ended = ended;
                }
                Err(e) => {
                    turn.error = Some(e);
                    turn.ended = true;
                }
            }
        }
        turn.next = k + 1;
        drop(turn);
        guard.passed = true;
        file.turned.notify_all();
        for (i, range) in ranges.into_iter().enumerate() {
            let bytes = &buf[range];
            let (id, new) = self.identify(None, bytes);
            let _ = file.ids.send((first + i, id, bytes.len() as u32));
            if new {
                self.pack(BlobKind::Data, id, bytes);
            }
        }
    }
}

impl<'a> Walker<'a> {
    /// Starts backing up a large file block by block ([`ParallelFile`]): sends the
    /// blocks up to the size it had when looked at (the last finds whether it ends
    /// there); [`Self::finish_file`] sends more, one at a time, while it goes on, and
    /// gathers its chunk ids.
    pub(super) fn start_file(
        &mut self,
        file: File,
        size: u64,
        chunker: &'a Chunker,
    ) -> Result<FileInFlight<'a>, EngineError> {
        let (_, fresh) = chunker.block_layout();
        let (ids_tx, ids_rx) = crossbeam_channel::unbounded();
        let mut f = FileInFlight {
            pf: Arc::new(ParallelFile {
                file,
                chunker,
                turn: Mutex::new(FileTurn::default()),
                turned: Condvar::new(),
                ids: ids_tx,
                cancel: AtomicBool::new(false),
            }),
            ids_rx,
            sent: 0,
            sized_blocks: size.div_ceil(fresh as u64).max(1),
            ids: Vec::new(),
            got: 0,
        };
        self.pump(&mut f, false)?;
        Ok(f)
    }

    /// Sends `f`'s blocks while taking the ids that come back: the blocks of the size
    /// seen, then, with `to_end`, one at a time while the file goes on, until every
    /// block sent has been cut.
    fn pump(&mut self, f: &mut FileInFlight<'a>, to_end: bool) -> Result<(), EngineError> {
        let ids_rx = f.ids_rx.clone();
        loop {
            if self.progress.stop_requested() {
                f.pf.cancel.store(true, Ordering::Relaxed);
            }
            let (next, ended) = {
                let turn = f.pf.lock();
                (turn.next, turn.ended || f.pf.cancel.load(Ordering::Relaxed))
            };
            if !ended && (f.sent < f.sized_blocks || next == f.sent) {
                // The ids come back so far are taken without waiting for them: woken
                // for each one, the walker cost a core 10% of a large file's backup.
                while let Ok(r) = ids_rx.try_recv() {
                    f.take(r, self.progress);
                }
                self.tx
                    .send(Work::Block(Arc::clone(&f.pf), f.sent))
                    .map_err(|_| workers_stopped())?;
                f.sent += 1;
                continue;
            }
            if !to_end || next == f.sent {
                return Ok(());
            }
            match ids_rx.recv_timeout(Duration::from_millis(20)) {
                Ok(r) => f.take(r, self.progress),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(workers_stopped());
                }
            }
        }
    }

    /// Finishes a large file begun by [`Self::start_file`]: returns its chunk ids and
    /// length.
    pub(super) fn finish_file(
        &mut self,
        mut f: FileInFlight<'a>,
    ) -> Result<(Vec<ChunkId>, u64), EngineError> {
        self.pump(&mut f, true)?;
        let (chunks, len, error) = {
            let mut turn = f.pf.lock();
            (turn.chunks, turn.cut.start(), turn.error.take())
        };
        if f.pf.cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Stopped);
        }
        if let Some(source) = error {
            return Err(EngineError::Source {
                path: PathBuf::new(),
                source,
            });
        }
        while f.got < chunks {
            match f.ids_rx.recv_timeout(Duration::from_millis(20)) {
                Ok(r) => f.take(r, self.progress),
                // Only the walker still holds the file: no id can come any more.
                Err(_) if Arc::strong_count(&f.pf) == 1 && f.ids_rx.is_empty() => {
                    return Err(workers_stopped());
                }
                Err(_) => {}
            }
        }
        let ids = std::mem::take(&mut f.ids)
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(workers_stopped)?;
        Ok((ids, len))
    }

    /// Completes the node at `pos` of `nodes` with the large file `f` once it is
    /// stored, or, if it failed, leaves it out of the tree (`skipped`) with a warning.
    pub(super) fn land(
        &mut self,
        nodes: &mut [Node],
        skipped: &mut Vec<usize>,
        (pos, f, rel): (usize, FileInFlight<'a>, PathBuf),
    ) -> Result<(), EngineError> {
        match self.finish_file(f) {
            Ok((content, size)) => {
                nodes[pos].kind = NodeKind::File { content };
                nodes[pos].size = size;
                self.stats.bytes += size;
                self.progress.advance(0, 1);
            }
            Err(EngineError::Stopped) => return Err(EngineError::Stopped),
            Err(err) => {
                self.file_skipped(&rel, &as_io(err))?;
                skipped.push(pos);
            }
        }
        Ok(())
    }
}

//! Restore: recovery point → directory, file or writer.
//!
//! Safety rules: names come from validated trees (no `/`, `.`, `..`, NUL, or
//! duplicates), so paths never leave the target; files are written to a fresh
//! temporary name (`O_EXCL`, so never through a planted symlink) and renamed into
//! place; an existing symlink or file where a directory must go is replaced only
//! with `Overwrite`; with `FailIfExists` every destination is checked before
//! anything is written. Every chunk is authenticated and its keyed hash verified
//! before its bytes are written; files whose data is damaged are left out and
//! reported, the rest are restored.

use std::{
    ffi::OsStr,
    fs::{self, File, OpenOptions, Permissions},
    io::{self, Seek, SeekFrom, Write},
    os::unix::{
        ffi::OsStrExt,
        fs::{FileExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
};

use coffer_crypto::ChunkId;
use crossbeam_channel::bounded;
use filetime::FileTime;

use crate::{
    EngineError, Progress, RestoreOutcome, RestoreRequest, RestoreTarget,
    index::Index,
    prefetch::{self, Prefetch},
    repo::Inner,
    tree::{Node, NodeKind, Tree},
};

pub(crate) fn run(
    inner: &Inner,
    req: RestoreRequest,
    progress: &dyn Progress,
) -> Result<RestoreOutcome, EngineError> {
    let manifest = inner.manifest(&req.recovery_point)?;
    let (index, _) = inner.load_index()?;
    let root = inner.read_tree(&index, &manifest.root)?;
    if manifest.is_stream() {
        let node = root.nodes.first().ok_or_else(|| EngineError::Damaged {
            object: format!("recovery point {}", manifest.info.id),
            reason: "stream recovery point has no content".into(),
        })?;
        let NodeKind::File { content } = &node.kind else {
            return Err(EngineError::Internal("stream node is not a file".into()));
        };
        progress.set_total(Some(node.size), Some(1));
        return restore_stream(
            inner,
            &index,
            content,
            node.size,
            req.target,
            req.overwrite,
            progress,
        );
    }
    let RestoreTarget::Directory(target) = req.target else {
        return Err(EngineError::Target {
            path: PathBuf::from("-"),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "a directory recovery point restores into a directory",
            ),
        });
    };
    // Resolve --path.
    let mut plan = Plan::default();
    match req
        .subpath
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        None => plan.add_tree(inner, &index, &root, Path::new(""))?,
        Some(sub) => {
            let mut tree = root;
            let parts: Vec<&str> = sub.split('/').filter(|p| !p.is_empty()).collect();
            for (i, part) in parts.iter().enumerate() {
                let node = tree
                    .nodes
                    .iter()
                    .find(|n| n.name == part.as_bytes())
                    .cloned()
                    .ok_or_else(|| EngineError::PathNotFound(sub.to_owned()))?;
                let last = i + 1 == parts.len();
                match (&node.kind, last) {
                    (NodeKind::Dir { tree: t }, false) => tree = inner.read_tree(&index, t)?,
                    (NodeKind::Dir { tree: t }, true) => {
                        let t = inner.read_tree(&index, t)?;
                        plan.add_tree(inner, &index, &t, Path::new(""))?;
                    }
                    (_, true) => plan.add_node(inner, &index, node, Path::new(""))?,
                    (_, false) => return Err(EngineError::PathNotFound(sub.to_owned())),
                }
            }
        }
    }
    fs::create_dir_all(&target).map_err(|e| EngineError::Target {
        path: target.clone(),
        source: e,
    })?;
    if !fs::metadata(&target).map(|m| m.is_dir()).unwrap_or(false) {
        return Err(EngineError::Target {
            path: target,
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    if !req.overwrite {
        plan.check_free(&target)?;
    }
    let total: u64 = plan.items.iter().map(|(_, n)| n.size).sum();
    let files = plan
        .items
        .iter()
        .filter(|(_, n)| matches!(n.kind, NodeKind::File { .. }))
        .count() as u64;
    progress.set_total(Some(total), Some(files));
    plan.execute(inner, &index, &target, progress)
}

/// Everything to restore, parents before children.
#[derive(Default)]
struct Plan {
    items: Vec<(PathBuf, Node)>,
}

impl Plan {
    fn add_tree(
        &mut self,
        inner: &Inner,
        index: &Index,
        tree: &Tree,
        rel: &Path,
    ) -> Result<(), EngineError> {
        for node in &tree.nodes {
            self.add_node(inner, index, node.clone(), rel)?;
        }
        Ok(())
    }

    fn add_node(
        &mut self,
        inner: &Inner,
        index: &Index,
        node: Node,
        rel: &Path,
    ) -> Result<(), EngineError> {
        let path = rel.join(OsStr::from_bytes(&node.name));
        let sub = match &node.kind {
            NodeKind::Dir { tree } => Some(inner.read_tree(index, tree)?),
            _ => None,
        };
        self.items.push((path.clone(), node));
        if let Some(t) = sub {
            self.add_tree(inner, index, &t, &path)?;
        }
        Ok(())
    }

    /// FailIfExists: refuse before writing anything if any file or link exists, or a
    /// non-directory sits where a directory goes.
    fn check_free(&self, target: &Path) -> Result<(), EngineError> {
        for (rel, node) in &self.items {
            let p = target.join(rel);
            if let Ok(m) = fs::symlink_metadata(&p) {
                let ok = matches!(node.kind, NodeKind::Dir { .. }) && m.is_dir();
                if !ok {
                    return Err(EngineError::TargetExists(p));
                }
            }
        }
        Ok(())
    }

    fn execute(
        self,
        inner: &Inner,
        index: &Index,
        target: &Path,
        progress: &dyn Progress,
    ) -> Result<RestoreOutcome, EngineError> {
        let terr = |p: &Path, e: io::Error| EngineError::Target {
            path: p.to_owned(),
            source: e,
        };
        // 1. Directories, in order (parents first).
        for (rel, node) in &self.items {
            if let NodeKind::Dir { .. } = node.kind {
                let p = target.join(rel);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&p).map_err(|e| terr(&p, e))?;
                        fs::create_dir(&p).map_err(|e| terr(&p, e))?;
                    }
                    Err(_) => fs::create_dir(&p).map_err(|e| terr(&p, e))?,
                }
                // Owner needs write access while restoring; final mode is set at the end.
                fs::set_permissions(&p, Permissions::from_mode(0o700)).map_err(|e| terr(&p, e))?;
            }
        }
        // 2. Files, in parallel; 3. symlinks.
        let outcome = Mutex::new(RestoreOutcome::default());
        let damaged = Mutex::new(Vec::<String>::new());
        let fatal = Mutex::new(None::<EngineError>);
        // Twice the cores: restoring a file mostly waits for the kernel (reading the
        // pack, creating and writing the file), so a core would idle otherwise
        // (200k small files: 7-25% faster than one thread per core, measured).
        let n = (crate::cores() * 2).clamp(2, 16);
        // Files go to the threads in batches of neighbours in the tree, whose chunks
        // are neighbours in the packs: a thread reads a batch's chunks in a few reads.
        let (tx, rx) = bounded::<Vec<(&Path, &Node, &[ChunkId])>>(n * 4);
        let src = Source::new(inner, index);
        thread::scope(|s| {
            for _ in 0..n {
                let rx = rx.clone();
                let (src, outcome, damaged, fatal) = (&src, &outcome, &damaged, &fatal);
                crate::spawn_named(s, "coffer-restore", move || {
                    let mut prefetch = src.buffer();
                    for batch in rx {
                        // A many-chunk file is alone in its batch and prefetches its own.
                        let small = batch
                            .iter()
                            .filter(|f| f.2.len() < PARALLEL_DECODE_MIN_CHUNKS);
                        prefetch.load(inner, index, small.flat_map(|f| f.2));
                        for (rel, node, content) in batch {
                            let p = target.join(rel);
                            match restore_file(src, &mut prefetch, &p, node, content, progress) {
                                Ok(bytes) => {
                                    let mut o = outcome.lock().expect("not poisoned");
                                    o.files += 1;
                                    o.bytes += bytes;
                                }
                                Err(FileError::Damaged) => damaged
                                    .lock()
                                    .expect("not poisoned")
                                    .push(rel.display().to_string()),
                                Err(FileError::Fatal(e)) => {
                                    fatal.lock().expect("not poisoned").get_or_insert(e);
                                }
                            }
                        }
                    }
                    src.give_back(prefetch);
                });
            }
            drop(rx);
            let mut batch = Vec::new();
            let mut raw = 0u64;
            for (rel, node) in &self.items {
                let NodeKind::File { content } = &node.kind else {
                    continue;
                };
                let file = (rel.as_path(), node, content.as_slice());
                if content.len() >= PARALLEL_DECODE_MIN_CHUNKS {
                    // Written by several threads, each with its own batches.
                    if tx.send(vec![file]).is_err() {
                        break;
                    }
                    continue;
                }
                batch.push(file);
                raw += node.size;
                if raw >= prefetch::BATCH_RAW || batch.len() >= BATCH_FILES {
                    if tx.send(std::mem::take(&mut batch)).is_err() {
                        break;
                    }
                    raw = 0;
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
            drop(tx);
        });
        if let Some(e) = fatal.into_inner().expect("not poisoned") {
            return Err(e);
        }
        for (rel, node) in &self.items {
            if let NodeKind::Symlink { target: t } = &node.kind {
                let p = target.join(rel);
                if fs::symlink_metadata(&p).is_ok() {
                    remove_any(&p).map_err(|e| terr(&p, e))?;
                }
                std::os::unix::fs::symlink(OsStr::from_bytes(t), &p).map_err(|e| terr(&p, e))?;
                let mt = filetime_of(node.mtime_ns);
                filetime::set_symlink_file_times(&p, mt, mt).map_err(|e| terr(&p, e))?;
            }
        }
        // 4. Directory modes and times, children before parents.
        for (rel, node) in self.items.iter().rev() {
            if let NodeKind::Dir { .. } = node.kind {
                let p = target.join(rel);
                fs::set_permissions(&p, Permissions::from_mode(node.mode & 0o7777))
                    .map_err(|e| terr(&p, e))?;
                let mt = filetime_of(node.mtime_ns);
                filetime::set_file_times(&p, mt, mt).map_err(|e| terr(&p, e))?;
            }
        }
        let mut out = outcome.into_inner().expect("not poisoned");
        let mut damaged = damaged.into_inner().expect("not poisoned");
        if !damaged.is_empty() {
            damaged.sort();
            return Err(EngineError::RestoreIncomplete(damaged));
        }
        out.warnings.clear();
        Ok(out)
    }
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn filetime_of(ns: i64) -> FileTime {
    FileTime::from_unix_time(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

enum FileError {
    Damaged,
    Fatal(EngineError),
}

/// A temporary name next to `p`, unique and hidden.
fn temp_path(p: &Path) -> Result<PathBuf, EngineError> {
    let r: [u8; 8] =
        coffer_crypto::random_array().map_err(|e| EngineError::Internal(e.to_string()))?;
    let mut name = std::ffi::OsString::from(".coffer-restore-");
    name.push(hex::encode(r));
    Ok(p.with_file_name(name))
}

/// Files with at least this many chunks are decoded and written by several threads.
const PARALLEL_DECODE_MIN_CHUNKS: usize = 32;
/// Smaller files go to the restore threads in batches of at most this many (and about
/// [`prefetch::BATCH_RAW`] bytes).
const BATCH_FILES: usize = 256;

/// Where restore's chunks come from: the repository, its index, and the prefetch
/// buffers of the threads that have finished with theirs (reused, not reallocated).
struct Source<'a> {
    inner: &'a Inner,
    index: &'a Index,
    buffers: Mutex<Vec<Prefetch>>,
}

impl<'a> Source<'a> {
    fn new(inner: &'a Inner, index: &'a Index) -> Self {
        Self {
            inner,
            index,
            buffers: Mutex::new(Vec::new()),
        }
    }

    fn buffer(&self) -> Prefetch {
        self.buffers
            .lock()
            .expect("not poisoned")
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, p: Prefetch) {
        self.buffers.lock().expect("not poisoned").push(p);
    }

    /// Chunk `id`, verified, from `prefetch` when it holds it.
    fn read(&self, prefetch: &Prefetch, id: &ChunkId) -> Result<Vec<u8>, ChunkError> {
        prefetch.read(self.inner, self.index, id).map_err(classify)
    }
}

/// Writes chunks into `f`, leaving holes for all-zero chunks. Returns bytes written.
/// Err(Ok(e)) = damaged data, Err(Err(e)) = local I/O failure.
fn write_chunks(
    src: &Source,
    prefetch: &mut Prefetch,
    f: &mut File,
    content: &[ChunkId],
    progress: &dyn Progress,
) -> Result<u64, ChunkError> {
    let threads = crate::cores().clamp(1, 8);
    // The file is new: its length is what was written, unless it ends in a hole.
    let mut hole_at_end = false;
    let pos = if content.len() < PARALLEL_DECODE_MIN_CHUNKS || threads == 1 {
        let mut pos = 0u64;
        for batch in prefetch::batches(src.index, content) {
            prefetch.ensure(src.inner, src.index, batch);
            for id in batch {
                if progress.stop_requested() {
                    return Err(Err(EngineError::Stopped));
                }
                let data = src.read(prefetch, id)?;
                hole_at_end = is_zero(&data);
                if hole_at_end {
                    f.seek(SeekFrom::Current(data.len() as i64))
                        .map_err(|e| Err(io_target(e)))?;
                } else {
                    f.write_all(&data).map_err(|e| Err(io_target(e)))?;
                }
                pos += data.len() as u64;
                progress.advance(data.len() as u64, 0);
            }
        }
        pos
    } else {
        // Written at offsets, holes included: the length is always set.
        hole_at_end = true;
        write_in_parallel(src, f, content, threads, progress)?
    };
    if hole_at_end {
        f.set_len(pos).map_err(|e| Err(io_target(e)))?;
    }
    Ok(pos)
}

/// A chunk that cannot be restored: Ok(e) = damaged data, Err(e) = local I/O failure
/// or a stop.
type ChunkError = Result<EngineError, EngineError>;

fn classify(e: EngineError) -> ChunkError {
    match e {
        EngineError::Store(coffer_store::StoreError::Io { .. }) => Err(e),
        other => Ok(other),
    }
}

fn is_zero(data: &[u8]) -> bool {
    data.iter().all(|&b| b == 0)
}

/// [`write_chunks`] on `threads` threads: each takes the next batch of neighbouring
/// chunks, prefetches it, and authenticates, decompresses and writes its chunks at
/// their offsets in the file (from the lengths in the index). Every thread writes: on
/// a new file the copy into the file's pages is the larger cost, as it is the first
/// touch of each page (a 2 GiB image restored to tmpfs: 54% of the CPU samples,
/// against 10% for decryption, hashing and decompression). Returns the file's length.
fn write_in_parallel(
    src: &Source,
    f: &File,
    content: &[ChunkId],
    threads: usize,
    progress: &dyn Progress,
) -> Result<u64, ChunkError> {
    let mut offsets = Vec::with_capacity(content.len());
    let mut pos = 0u64;
    for id in content {
        offsets.push(pos);
        pos += u64::from(Inner::locate(src.index, id).map_err(Ok)?.raw_len());
    }
    // Each batch with the file's number of its first chunk.
    let batches: Vec<(usize, &[ChunkId])> = prefetch::batches(src.index, content)
        .scan(0, |at, b| {
            let first = *at;
            *at += b.len();
            Some((first, b))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(None::<ChunkError>);
    let stop = AtomicBool::new(false);
    // Writes `batch`, whose first chunk is chunk `first` of the file.
    let write =
        |prefetch: &mut Prefetch, batch: &[ChunkId], first: usize| -> Result<(), ChunkError> {
            prefetch.load(src.inner, src.index, batch);
            for (i, id) in batch.iter().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    return Ok(()); // another thread failed; its error is reported
                }
                if progress.stop_requested() {
                    return Err(Err(EngineError::Stopped));
                }
                // Authenticated, and as long as the index says (the reader checks).
                let data = src.read(prefetch, id)?;
                if !is_zero(&data) {
                    f.write_all_at(&data, offsets[first + i])
                        .map_err(|e| Err(io_target(e)))?;
                }
                progress.advance(data.len() as u64, 0);
            }
            Ok(())
        };
    thread::scope(|s| {
        for _ in 0..threads {
            let (batches, next, failed, stop, write) = (&batches, &next, &failed, &stop, &write);
            crate::spawn_named(s, "coffer-restore", move || {
                let mut prefetch = src.buffer();
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= batches.len() || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (first, batch) = batches[b];
                    if let Err(e) = write(&mut prefetch, batch, first) {
                        failed.lock().expect("not poisoned").get_or_insert(e);
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                src.give_back(prefetch);
            });
        }
    });
    match failed.into_inner().expect("not poisoned") {
        Some(e) => Err(e),
        None => Ok(pos),
    }
}

fn io_target(e: io::Error) -> EngineError {
    EngineError::Target {
        path: PathBuf::new(),
        source: e,
    }
}

fn restore_file(
    src: &Source,
    prefetch: &mut Prefetch,
    p: &Path,
    node: &Node,
    content: &[ChunkId],
    progress: &dyn Progress,
) -> Result<u64, FileError> {
    let fatal = |e: io::Error| {
        FileError::Fatal(EngineError::Target {
            path: p.to_owned(),
            source: e,
        })
    };
    // A new file is created in place with O_EXCL (which never follows a symlink); an
    // existing item (Overwrite) is replaced atomically through a temporary name.
    let create = |path: &Path| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_0600()
            .open(path)
    };
    let (mut f, write_path, exists) = match create(p) {
        Ok(f) => (f, p.to_owned(), false),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let temp = temp_path(p).map_err(FileError::Fatal)?;
            (create(&temp).map_err(fatal)?, temp, true)
        }
        Err(e) => return Err(fatal(e)),
    };
    let written = match write_chunks(src, prefetch, &mut f, content, progress) {
        Ok(n) => n,
        Err(e) => {
            drop(f);
            let _ = fs::remove_file(&write_path);
            return Err(match e {
                Ok(_) => FileError::Damaged,
                Err(e) => FileError::Fatal(e),
            });
        }
    };
    let finish = (|| {
        f.set_permissions(Permissions::from_mode(node.mode & 0o7777))?;
        let mt = filetime_of(node.mtime_ns);
        filetime::set_file_handle_times(&f, Some(mt), Some(mt))?;
        drop(f);
        if exists {
            if let Ok(m) = fs::symlink_metadata(p)
                && m.is_dir()
            {
                fs::remove_dir_all(p)?;
            }
            fs::rename(&write_path, p)?;
        }
        Ok(())
    })();
    if let Err(e) = finish {
        let _ = fs::remove_file(&write_path);
        return Err(fatal(e));
    }
    progress.advance(0, 1);
    Ok(written)
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

fn restore_stream(
    inner: &Inner,
    index: &Index,
    content: &[ChunkId],
    size: u64,
    target: RestoreTarget,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<RestoreOutcome, EngineError> {
    match target {
        RestoreTarget::Writer(mut w) => {
            let mut bytes = 0u64;
            let mut prefetch = Prefetch::default();
            for batch in prefetch::batches(index, content) {
                prefetch.load(inner, index, batch);
                for id in batch {
                    if progress.stop_requested() {
                        return Err(EngineError::Stopped);
                    }
                    let data = prefetch.read(inner, index, id).map_err(|e| match e {
                        EngineError::Damaged { .. } => {
                            EngineError::RestoreIncomplete(vec!["<stream>".into()])
                        }
                        other => other,
                    })?;
                    w.write_all(&data).map_err(|e| EngineError::Target {
                        path: PathBuf::from("-"),
                        source: e,
                    })?;
                    bytes += data.len() as u64;
                    progress.advance(data.len() as u64, 0);
                }
            }
            w.flush().map_err(|e| EngineError::Target {
                path: PathBuf::from("-"),
                source: e,
            })?;
            Ok(RestoreOutcome {
                files: 1,
                bytes,
                warnings: Vec::new(),
            })
        }
        RestoreTarget::File(p) | RestoreTarget::Directory(p) => {
            if let Ok(m) = fs::symlink_metadata(&p)
                && (!overwrite || m.is_dir())
            {
                return Err(EngineError::TargetExists(p));
            }
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(|e| EngineError::Target {
                    path: dir.to_owned(),
                    source: e,
                })?;
            }
            let now_ns = filetime::FileTime::now().unix_seconds() * 1_000_000_000;
            let node = Node::stream_file(b"", content.to_vec(), size, now_ns);
            let src = Source::new(inner, index);
            match restore_file(&src, &mut src.buffer(), &p, &node, content, progress) {
                Ok(bytes) => Ok(RestoreOutcome {
                    files: 1,
                    bytes,
                    warnings: Vec::new(),
                }),
                Err(FileError::Damaged) => {
                    Err(EngineError::RestoreIncomplete(vec!["<stream>".into()]))
                }
                Err(FileError::Fatal(e)) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Hostile recovery points: trees crafted with the vault's own key (as a
    //! compromised writer could) must never make restore write outside the target.

    use std::sync::Arc;

    use coffer_crypto::{DataKey, PlatformKey, SecretKey, WrappedKey};
    use coffer_store::{LocalStore, ObjectStore};

    use super::*;
    use crate::{
        NoProgress, RecoveryPointInfo, RepoParams, Repository, SourceKind,
        format::{self, BlobKind, ObjectType},
        pack::PackWriter,
        tree::Manifest,
    };

    /// Stores `trees` (the last is the root) as a recovery point and returns its id.
    fn craft(repo: &Repository, store: &dyn ObjectStore, trees: Vec<Tree>) -> String {
        let inner = &repo.inner;
        let mut w = PackWriter::new(&inner.dek, BlobKind::Tree, 1 << 20).unwrap();
        let mut root = None;
        for t in &trees {
            let bytes = postcard::to_stdvec(t).unwrap();
            let id = inner.id_key.id(&bytes);
            w.add_chunk(id, &bytes, 3);
            root = Some(id);
        }
        let done = w.finish().unwrap();
        store.put(&done.key, done.bytes()).unwrap();
        let dir = done.dir;
        let iid = format::new_object_id().unwrap();
        let (k, b) = format::seal_meta(&inner.dek, ObjectType::Index, &iid, &vec![dir]).unwrap();
        store.put(&k, &b).unwrap();
        let rid = format::new_object_id().unwrap();
        let info = RecoveryPointInfo {
            id: hex::encode(rid),
            instance_id: "evil".into(),
            time: 1,
            source_kind: SourceKind::Directory,
            logical_bytes: 0,
            added_bytes: 0,
            file_count: 1,
            dir_count: 1,
        };
        let m = Manifest {
            info,
            root: root.unwrap(),
            parent: None,
        };
        let (k, b) = format::seal_meta(&inner.dek, ObjectType::Manifest, &rid, &m).unwrap();
        store.put(&k, &b).unwrap();
        hex::encode(rid)
    }

    fn symlink_node(name: &[u8], target: &[u8]) -> Node {
        let mut n = Node::stream_file(name, Vec::new(), 0, 0);
        n.kind = NodeKind::Symlink {
            target: target.to_vec(),
        };
        n
    }

    #[test]
    fn hostile_names_and_duplicates_are_refused_and_nothing_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(dir.path().join("s")).unwrap());
        let dek = DataKey::generate().unwrap();
        let pmk = PlatformKey::new("pmk".into(), &SecretKey::generate().unwrap());
        let wk = WrappedKey::seal(&pmk, &dek, "v", String::new()).unwrap();
        let repo = Repository::create(
            store.clone(),
            dir.path().join("l"),
            "v",
            dek,
            &wk,
            RepoParams::default(),
        )
        .unwrap();
        let empty = Node::stream_file(b"x", Vec::new(), 0, 0);
        let named = |n: &[u8]| {
            let mut e = empty.clone();
            e.name = n.to_vec();
            e
        };
        let target = dir.path().join("target");
        for bad in [
            &b"../escape"[..],
            b"..",
            b".",
            b"a/b",
            b"",
            b"nul\0byte",
            b"/abs",
        ] {
            let rp = craft(
                &repo,
                store.as_ref(),
                vec![Tree {
                    nodes: vec![named(bad)],
                }],
            );
            let r = repo.restore(
                RestoreRequest {
                    recovery_point: rp,
                    target: RestoreTarget::Directory(target.clone()),
                    subpath: None,
                    overwrite: true,
                },
                &NoProgress,
            );
            assert!(
                matches!(r, Err(EngineError::Damaged { .. })),
                "{bad:?}: {r:?}"
            );
        }
        // Duplicate names (a symlink and a directory called the same): refused.
        let sub = Tree {
            nodes: vec![named(b"passwd")],
        };
        let sub_id = repo.inner.id_key.id(&postcard::to_stdvec(&sub).unwrap());
        let mut d = named(b"etc");
        d.kind = NodeKind::Dir { tree: sub_id };
        let dup = Tree {
            nodes: vec![symlink_node(b"etc", b"/etc"), d],
        };
        let rp = craft(&repo, store.as_ref(), vec![sub, dup]);
        let r = repo.restore(
            RestoreRequest {
                recovery_point: rp,
                target: RestoreTarget::Directory(target.clone()),
                subpath: None,
                overwrite: true,
            },
            &NoProgress,
        );
        assert!(matches!(r, Err(EngineError::Damaged { .. })), "{r:?}");
        assert!(!dir.path().join("escape").exists());
        assert!(
            fs::read_dir(&target)
                .map(|d| d.count() == 0)
                .unwrap_or(true)
        );
    }
}

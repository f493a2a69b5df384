//! [`LocalStore`]: objects as files under a root directory.
//!
//! Writes go to a uniquely named temporary file in `tmp/`, are fsynced, renamed
//! into place, and the destination directory is fsynced: after `put` returns, the
//! object survives a crash or power loss, and a crash mid-write leaves at most a
//! stray temporary file (swept by [`LocalStore::open`]).
//!
//! Large objects (packs) are written with `O_DIRECT` on Linux: the bytes go from
//! process memory to the device without being copied into freshly allocated page
//! cache, which on the measured VMs cost more CPU than compressing them (see
//! `docs/performance.md`). The file is still fsynced and renamed exactly as above;
//! a file system that refuses `O_DIRECT` gets an ordinary buffered write. Restore's
//! reads (`read_once` into an aligned buffer) bypass the page cache the same way.

use std::{
    fs::{self, File, OpenOptions},
    io::{ErrorKind, Read, Seek, SeekFrom, Write},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use crate::{ObjectKey, ObjectMeta, ObjectStore, StoreError};

const TMP_DIR: &str = "tmp";

/// Environment variable of the crash-injection hook used by the crash tests: when
/// set to N, the process aborts (no destructors, no buffered I/O flushed, exactly
/// like `kill -9`) right after its N-th completed `put` or `delete`.
pub const CRASH_AFTER_WRITES_ENV: &str = "COFFER_TEST_CRASH_AFTER_WRITES";

/// A durable object store in a local directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    crash_after: Option<u64>,
    writes: std::sync::atomic::AtomicU64,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `root`, removing temporary files
    /// left by interrupted writes older than an hour.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(|e| StoreError::io(tmp.display().to_string(), e))?;
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 3600);
                if stale {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let crash_after = std::env::var(CRASH_AFTER_WRITES_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        Ok(Self {
            root,
            crash_after,
            writes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Counts a completed mutation; aborts the process at the injected crash point.
    fn wrote(&self) {
        if let Some(limit) = self.crash_after {
            let n = self
                .writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            if n >= limit {
                std::process::abort();
            }
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }
}

/// Fsyncs a directory so that renames and creations inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl ObjectStore for LocalStore {
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), StoreError> {
        let dest = self.path(key);
        let parent = dest.parent().expect("object paths have a parent");
        if !parent.is_dir() {
            fs::create_dir_all(parent).map_err(|e| StoreError::io(key.to_string(), e))?;
            // Make the new directory entries durable up to the root.
            let mut dir = parent;
            while dir != self.root {
                let up = dir.parent().expect("inside root");
                sync_dir(up).map_err(|e| StoreError::io(key.to_string(), e))?;
                dir = up;
            }
        }
        let rand: [u8; 8] = coffer_crypto::random_array().map_err(|_| {
            StoreError::io(
                key.to_string(),
                std::io::Error::other("random number generator failure"),
            )
        })?;
        let tmp = self
            .root
            .join(TMP_DIR)
            .join(format!("{}.{}", key.name(), hex::encode(rand)));
        let result = (|| {
            if !direct::write(&tmp, data)? {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(data)?;
                f.sync_all()?;
            }
            fs::rename(&tmp, &dest)?;
            sync_dir(parent)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| StoreError::io(key.to_string(), e))?;
        self.wrote();
        Ok(())
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StoreError> {
        fs::read(self.path(key)).map_err(|e| match e.kind() {
            ErrorKind::NotFound => StoreError::NotFound(key.clone()),
            _ => StoreError::io(key.to_string(), e),
        })
    }

    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let mut f = File::open(self.path(key)).map_err(|e| match e.kind() {
            ErrorKind::NotFound => StoreError::NotFound(key.clone()),
            _ => StoreError::io(key.to_string(), e),
        })?;
        let size = f
            .metadata()
            .map_err(|e| StoreError::io(key.to_string(), e))?
            .len();
        StoreError::check_range(key, offset, len, size)?;
        let mut buf = vec![0u8; usize::try_from(len).expect("range fits in memory")];
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| StoreError::io(key.to_string(), e))?;
        Ok(buf)
    }

    fn read_once(&self, key: &ObjectKey, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let path = self.path(key);
        let err = |e: std::io::Error| match e.kind() {
            ErrorKind::NotFound => StoreError::NotFound(key.clone()),
            _ => StoreError::io(key.to_string(), e),
        };
        let f = match direct::open_for_read(&path, offset, buf).map_err(err)? {
            Some(f) => f,
            None => File::open(&path).map_err(err)?,
        };
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(got)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        let start = self.root.join(prefix.trim_end_matches('/'));
        walk(&self.root, &start, &mut out)?;
        out.retain(|m| m.key.as_str().starts_with(prefix));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(path.parent().expect("object has parent"))
                    .map_err(|e| StoreError::io(key.to_string(), e))?;
                self.wrote();
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(key.to_string(), e)),
        }
    }

    fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        match fs::metadata(self.path(key)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(key.to_string(), e)),
        }
    }
}

/// `O_DIRECT` writes of large objects, and reads for [`ObjectStore::read_once`].
mod direct {
    use std::{cell::RefCell, fs::OpenOptions, io, path::Path};

    /// Objects at least this large bypass the page cache.
    pub(super) const MIN_LEN: usize = 1 << 20;
    /// Alignment of buffer addresses, file offsets and lengths.
    const ALIGN: usize = crate::DIRECT_IO_ALIGN;
    /// Size of the per-thread bounce buffer for unaligned data.
    const BOUNCE: usize = 4 << 20;

    thread_local! {
        /// Reused bounce buffer (with room to align its start).
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// Creates `tmp` (exclusively, mode 0600) holding `data`, written with `O_DIRECT`
    /// and fsynced. Returns `Ok(false)`, leaving no file behind, when the object is
    /// small or the file system refuses direct I/O: the caller then writes it the
    /// ordinary way.
    #[cfg(target_os = "linux")]
    pub(super) fn write(tmp: &Path, data: &[u8]) -> io::Result<bool> {
        use std::os::unix::fs::OpenOptionsExt;
        if data.len() < MIN_LEN {
            return Ok(false);
        }
        let f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_DIRECT)
            .open(tmp)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
            Err(e) => return Err(e),
        };
        match write_aligned(&f, data) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                drop(f);
                std::fs::remove_file(tmp)?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        // The last block was padded to the alignment: cut the file to its length.
        f.set_len(data.len() as u64)?;
        f.sync_all()?;
        Ok(true)
    }

    /// Opens `path` for an `O_DIRECT` read of `buf` at `offset`: `None` when they are
    /// not aligned or the file system refuses direct I/O (the caller then opens it the
    /// ordinary way).
    #[cfg(target_os = "linux")]
    pub(super) fn open_for_read(
        path: &Path,
        offset: u64,
        buf: &[u8],
    ) -> io::Result<Option<std::fs::File>> {
        use std::os::unix::fs::OpenOptionsExt;
        let aligned = buf.as_ptr().align_offset(ALIGN) == 0
            && offset.is_multiple_of(ALIGN as u64)
            && buf.len().is_multiple_of(ALIGN);
        if !aligned || buf.is_empty() {
            return Ok(None);
        }
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn open_for_read(
        _path: &Path,
        _offset: u64,
        _buf: &[u8],
    ) -> io::Result<Option<std::fs::File>> {
        Ok(None)
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn write(_tmp: &Path, _data: &[u8]) -> io::Result<bool> {
        Ok(false)
    }

    /// Writes `data` in aligned blocks: straight from `data` when its address is
    /// aligned, otherwise (and for the padded last block) through the bounce buffer.
    #[cfg(target_os = "linux")]
    fn write_aligned(mut f: &std::fs::File, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut rest = data;
        if data.as_ptr().align_offset(ALIGN) == 0 {
            let direct = data.len() - data.len() % ALIGN;
            f.write_all(&data[..direct])?;
            rest = &data[direct..];
        }
        BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < BOUNCE + ALIGN {
                buf.resize(BOUNCE + ALIGN, 0);
            }
            let start = buf.as_ptr().align_offset(ALIGN);
            let bounce = &mut buf[start..start + BOUNCE];
            for piece in rest.chunks(BOUNCE) {
                let padded = piece.len().next_multiple_of(ALIGN);
                bounce[..piece.len()].copy_from_slice(piece);
                bounce[piece.len()..padded].fill(0);
                f.write_all(&bounce[..padded])?;
            }
            Ok(())
        })
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(dir.display().to_string(), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir.display().to_string(), e))?;
        let path = entry.path();
        let ft = entry
            .file_type()
            .map_err(|e| StoreError::io(path.display().to_string(), e))?;
        let rel = path.strip_prefix(root).expect("walk stays under root");
        if rel.starts_with(TMP_DIR) {
            continue;
        }
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if ft.is_file() {
            let Some(rel) = rel.to_str() else { continue };
            let Ok(key) = ObjectKey::new(rel) else {
                continue;
            };
            let size = entry
                .metadata()
                .map_err(|e| StoreError::io(path.display().to_string(), e))?
                .len();
            out.push(ObjectMeta { key, size });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let k = ObjectKey::new("data/ab/abc").unwrap();
        s.put(&k, b"hello").unwrap();
        assert_eq!(s.get(&k).unwrap(), b"hello");
        assert_eq!(s.get_range(&k, 1, 3).unwrap(), b"ell");
        assert!(matches!(
            s.get_range(&k, 4, 3),
            Err(StoreError::Range { .. })
        ));
        s.put(&ObjectKey::new("index/x").unwrap(), b"i").unwrap();
        let l = s.list("data/").unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].size, 5);
        assert_eq!(s.list("").unwrap().len(), 2);
        s.delete(&k).unwrap();
        s.delete(&k).unwrap();
        assert!(matches!(s.get(&k), Err(StoreError::NotFound(_))));
        assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn large_objects_round_trip_aligned_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let mut x = 7u64;
        let data: Vec<u8> = (0..direct::MIN_LEN * 9 + 12345)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 40) as u8
            })
            .collect();
        // Every start offset modulo a few alignments, and lengths around block sizes.
        for (i, (start, len)) in [
            (0, data.len()),
            (1, direct::MIN_LEN),
            (4096, direct::MIN_LEN * 5 - 1),
            (13, direct::MIN_LEN * 9),
            (0, direct::MIN_LEN - 1),
        ]
        .into_iter()
        .enumerate()
        {
            let k = ObjectKey::new(format!("data/00/big{i}")).unwrap();
            let part = &data[start..start + len];
            s.put(&k, part).unwrap();
            assert_eq!(s.size(&k).unwrap(), Some(len as u64));
            assert!(s.get(&k).unwrap() == part, "object {i}");
            assert_eq!(s.get_range(&k, 3, 5000).unwrap(), part[3..5003]);
        }
        assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
    }

    /// `read_once` gives the same bytes with an aligned buffer (`O_DIRECT` where the
    /// file system allows it) as without, stops at the object's end, and reports a
    /// missing object.
    #[test]
    fn read_once_reads_up_to_the_end_aligned_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..direct::MIN_LEN * 3 + 777)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let k = ObjectKey::new("data/00/pack").unwrap();
        s.put(&k, &data).unwrap();
        let mut raw = vec![0u8; (4 << 20) + 2 * crate::DIRECT_IO_ALIGN];
        let base = raw.as_ptr().align_offset(crate::DIRECT_IO_ALIGN);
        for (offset, len, shift) in [
            (0usize, 1usize << 20, 0usize),
            (8192, 64 << 10, 0),
            (direct::MIN_LEN * 3 - 4096, 2 << 20, 0), // past the end
            (5, 100_000, 0),
            (4096, 4096, 1),       // unaligned buffer
            (data.len(), 4096, 0), // at the end
        ] {
            let buf = &mut raw[base + shift..base + shift + len];
            buf.fill(0xEE);
            let got = s.read_once(&k, offset as u64, buf).unwrap();
            let want = &data[offset.min(data.len())..(offset + len).min(data.len())];
            assert_eq!(got, want.len(), "read at {offset}");
            assert!(&buf[..got] == want, "bytes at {offset}");
        }
        let missing = ObjectKey::new("data/00/none").unwrap();
        assert!(matches!(
            s.read_once(&missing, 0, &mut raw[base..base + 4096]),
            Err(StoreError::NotFound(_))
        ));
    }
}

//! Engine-level tests: round trips, dedup, deletion and space reclamation, damage.

use std::{
    fs,
    os::unix::fs::{PermissionsExt, symlink},
    path::Path,
    sync::Arc,
};

use coffer_crypto::{DataKey, PlatformKey, SecretKey, WrappedKey};
use coffer_engine::*;
use coffer_store::{LocalStore, ObjectKey, ObjectStore};

struct Fixture {
    dir: tempfile::TempDir,
    repo: Repository,
    store: Arc<LocalStore>,
}

fn fixture() -> Fixture {
    fixture_with(RepoParams::default())
}

/// Files of 1–64 MiB cut into 4–64 KiB chunks (default: 64 KiB–1 MiB), so that small
/// test files have as many chunks as a large file: restore then decodes and writes
/// them on several threads.
fn small_chunks() -> RepoParams {
    RepoParams {
        medium_chunks: ChunkSizes {
            min: 4 << 10,
            avg: 16 << 10,
            max: 64 << 10,
        },
        ..RepoParams::default()
    }
}

fn fixture_with(params: RepoParams) -> Fixture {
    fixture_over(params, |local| local)
}

/// A repository in a local store, seen through the store `over` makes of it.
fn fixture_over(
    params: RepoParams,
    over: impl FnOnce(Arc<LocalStore>) -> Arc<dyn ObjectStore>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(dir.path().join("store")).unwrap());
    let dek = DataKey::generate().unwrap();
    let pmk = PlatformKey::new("pmk/1".into(), &SecretKey::generate().unwrap());
    let wrapped = WrappedKey::seal(&pmk, &dek, "vault-1", "now".into()).unwrap();
    let repo = Repository::create(
        over(store.clone()),
        dir.path().join("lock"),
        "vault-1",
        dek,
        &wrapped,
        params,
    )
    .unwrap();
    Fixture { dir, repo, store }
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

fn backup(f: &Fixture, src: &Path) -> RecoveryPointInfo {
    f.repo
        .backup(
            BackupRequest {
                instance_id: "bi".into(),
                source: BackupSource::Directory(src.to_owned()),
                time: 1_700_000_000,
            },
            &NoProgress,
        )
        .unwrap()
        .recovery_point
}

fn restore(f: &Fixture, rp: &str, target: &Path) -> Result<RestoreOutcome, EngineError> {
    f.repo.restore(
        RestoreRequest {
            recovery_point: rp.into(),
            target: RestoreTarget::Directory(target.to_owned()),
            subpath: None,
            overwrite: false,
        },
        &NoProgress,
    )
}

/// Compares two trees: names, types, content, modes, mtimes, symlink targets.
fn assert_same_tree(a: &Path, b: &Path) {
    let mut ea: Vec<_> = fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut eb: Vec<_> = fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    ea.sort();
    eb.sort();
    assert_eq!(ea, eb, "entries of {}", a.display());
    for name in ea {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", pa.display());
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
            continue;
        }
        assert_eq!(
            ma.permissions().mode() & 0o7777,
            mb.permissions().mode() & 0o7777,
            "{}",
            pa.display()
        );
        assert_eq!(
            ma.modified().unwrap(),
            mb.modified().unwrap(),
            "mtime of {}",
            pa.display()
        );
        if ma.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "content of {}",
                pa.display()
            );
        }
    }
}

#[test]
fn directory_round_trip_dedup_and_delete() {
    let f = fixture();
    let src = f.dir.path().join("src");
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    // One all-zero chunk: restored as a hole, the file keeps its length.
    fs::write(src.join("zeros"), vec![0u8; 100_000]).unwrap();
    fs::write(src.join("a/text.txt"), b"hello world\n".repeat(5000)).unwrap();
    fs::write(src.join("a/b/random.bin"), pseudo_random(3 << 20, 7)).unwrap();
    fs::write(src.join("a/b/c/unicode ü 名前\nnewline"), b"x").unwrap();
    fs::set_permissions(src.join("a/text.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    symlink("../text.txt", src.join("a/b/link")).unwrap();
    symlink("/nonexistent/target", src.join("dangling")).unwrap();

    let rp1 = backup(&f, &src);
    assert_eq!(rp1.file_count, 5);
    let out = f.dir.path().join("out1");
    restore(&f, &rp1.id, &out).unwrap();
    assert_same_tree(&src, &out);

    // Unchanged second backup adds almost nothing.
    let rp2 = backup(&f, &src);
    assert!(rp2.added_bytes < 4096, "added {}", rp2.added_bytes);

    // FailIfExists refuses; Overwrite works.
    assert!(matches!(
        restore(&f, &rp1.id, &out),
        Err(EngineError::TargetExists(_))
    ));

    // Delete both: storage shrinks back to (almost) nothing.
    let before: u64 = f.store.list("data/").unwrap().iter().map(|m| m.size).sum();
    f.repo.delete_recovery_point(&rp1.id).unwrap();
    assert!(f.repo.check(true, &NoProgress).unwrap().is_clean());
    restore(&f, &rp2.id, &f.dir.path().join("out2")).unwrap();
    f.repo.delete_recovery_point(&rp2.id).unwrap();
    let after: u64 = f.store.list("data/").unwrap().iter().map(|m| m.size).sum();
    assert!(
        before > 3 << 20 && after == 0,
        "before {before} after {after}"
    );
    assert!(f.repo.list_recovery_points().unwrap().is_empty());
}

#[test]
fn stream_round_trip() {
    let f = fixture();
    let data = pseudo_random(5 << 20, 3);
    let rp = f
        .repo
        .backup(
            BackupRequest {
                instance_id: "db".into(),
                source: BackupSource::Stream(Box::new(std::io::Cursor::new(data.clone()))),
                time: 5,
            },
            &NoProgress,
        )
        .unwrap()
        .recovery_point;
    assert_eq!(rp.logical_bytes, data.len() as u64);
    let out = f.dir.path().join("dump.sql");
    f.repo
        .restore(
            RestoreRequest {
                recovery_point: rp.id.clone(),
                target: RestoreTarget::File(out.clone()),
                subpath: None,
                overwrite: false,
            },
            &NoProgress,
        )
        .unwrap();
    assert!(fs::read(&out).unwrap() == data);
}

/// With the default chunk sizes (each file restored by one thread) and with small
/// ones (each by several).
#[test]
fn damage_is_reported_and_only_affected_files_fail() {
    for params in [RepoParams::default(), small_chunks()] {
        damage_is_reported_with(params);
    }
}

fn damage_is_reported_with(params: RepoParams) {
    let f = fixture_with(params);
    let src = f.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // Big enough for several packs.
    for i in 0..6 {
        fs::write(src.join(format!("f{i}")), pseudo_random(6 << 20, i + 1)).unwrap();
    }
    let rp = backup(&f, &src);
    assert!(f.repo.check(true, &NoProgress).unwrap().is_clean());
    let packs = f.store.list("data/").unwrap();
    assert!(packs.len() >= 2);
    // Flip one byte in the middle of the largest pack (a data pack, not the tree pack).
    let largest = packs.iter().max_by_key(|m| m.size).unwrap();
    let victim = f.store.root().join(largest.key.as_str());
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&victim, bytes).unwrap();

    let report = f.repo.check(true, &NoProgress).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.damaged_recovery_points.len(), 1);
    let bad = &report.damaged_recovery_points[0].files;
    assert!(!bad.is_empty() && bad.len() < 6, "{bad:?}");
    match restore(&f, &rp.id, &f.dir.path().join("out")) {
        Err(EngineError::RestoreIncomplete(files)) => assert_eq!(&files, bad),
        other => panic!("expected RestoreIncomplete, got {other:?}"),
    }
    for i in 0..6 {
        let name = format!("f{i}");
        let restored = f.dir.path().join("out").join(&name);
        if bad.contains(&name) {
            assert!(!restored.exists());
        } else {
            assert!(fs::read(&restored).unwrap() == fs::read(src.join(&name)).unwrap());
        }
    }
}

/// A file of many chunks (restored by several threads, each writing at its chunks'
/// offsets) with runs of zeros in the middle and at the end: the content comes back
/// equal, and the zero runs as holes.
#[test]
fn a_many_chunk_file_restores_equal_with_its_zero_runs_as_holes() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture_with(small_chunks());
    let src = f.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut data = pseudo_random(2 << 20, 11);
    data.extend(vec![0u8; 4 << 20]);
    data.extend(pseudo_random(2 << 20, 12));
    data.extend(vec![0u8; 1 << 20]);
    fs::write(src.join("image"), &data).unwrap();
    let rp = backup(&f, &src);
    let out = f.dir.path().join("out");
    restore(&f, &rp.id, &out).unwrap();
    let restored = out.join("image");
    assert!(fs::read(&restored).unwrap() == data);
    let allocated = fs::metadata(&restored).unwrap().blocks() * 512;
    assert!(
        allocated < (5 << 20) + (1 << 20),
        "{allocated} bytes allocated for 4 MiB of data"
    );
}

/// Counts the range reads that reach a store.
#[derive(Debug)]
struct CountingStore {
    inner: Arc<LocalStore>,
    ranges: std::sync::atomic::AtomicUsize,
    reads_once: std::sync::atomic::AtomicUsize,
}

impl ObjectStore for CountingStore {
    fn put(&self, key: &ObjectKey, data: &[u8]) -> Result<(), coffer_store::StoreError> {
        self.inner.put(key, data)
    }
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, coffer_store::StoreError> {
        self.inner.get(key)
    }
    fn get_range(
        &self,
        key: &ObjectKey,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, coffer_store::StoreError> {
        self.ranges
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.get_range(key, offset, len)
    }
    fn read_once(
        &self,
        key: &ObjectKey,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, coffer_store::StoreError> {
        self.reads_once
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_once(key, offset, buf)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<coffer_store::ObjectMeta>, coffer_store::StoreError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &ObjectKey) -> Result<(), coffer_store::StoreError> {
        self.inner.delete(key)
    }
    fn size(&self, key: &ObjectKey) -> Result<Option<u64>, coffer_store::StoreError> {
        self.inner.size(key)
    }
}

/// Restore reads the chunks of neighbouring small files, and of a many-chunk file, in
/// a few large reads per pack rather than one read per chunk, and restores them equal.
#[test]
fn restore_reads_neighbouring_chunks_together() {
    use std::sync::atomic::Ordering::Relaxed;
    let counting = std::sync::OnceLock::<Arc<CountingStore>>::new();
    let f = fixture_over(small_chunks(), |local| {
        let store = Arc::new(CountingStore {
            inner: local,
            ranges: 0.into(),
            reads_once: 0.into(),
        });
        counting.set(store.clone()).unwrap();
        store
    });
    let store = counting.get().unwrap();
    let src = f.dir.path().join("src");
    fs::create_dir_all(src.join("many")).unwrap();
    for i in 0..600 {
        fs::write(
            src.join("many").join(format!("f{i:03}")),
            pseudo_random(3000, i + 1),
        )
        .unwrap();
    }
    // About 200 chunks of 4–64 KiB.
    fs::write(src.join("image"), pseudo_random(3 << 20, 7)).unwrap();
    let rp = backup(&f, &src);
    let chunks = 600 + (3 << 20) / (64 << 10);
    store.ranges.store(0, Relaxed);
    store.reads_once.store(0, Relaxed);
    let out = f.dir.path().join("out");
    restore(&f, &rp.id, &out).unwrap();
    assert_same_tree(&src, &out);
    let (ranges, once) = (store.ranges.load(Relaxed), store.reads_once.load(Relaxed));
    // Trees are read alone; data in runs (the packs number a handful).
    assert!(ranges <= 4, "{ranges} single-chunk reads");
    assert!(
        once >= 1 && once * 10 < chunks as usize,
        "{once} reads for {chunks} chunks"
    );
}

/// Small files are hashed by the workers while the walker reads on, and each
/// directory's tree waits for their ids: with more directories than may wait at once
/// (256), nested directories, duplicates and empty files, every file comes back in its
/// place, and an unchanged second backup adds (almost) nothing.
#[test]
fn many_small_files_in_many_directories_come_back_in_place() {
    let f = fixture();
    let src = f.dir.path().join("src");
    for d in 0..300 {
        let dir = src
            .join(format!("d{d:03}"))
            .join(if d % 7 == 0 { "deep/er" } else { "" });
        fs::create_dir_all(&dir).unwrap();
        for i in 0..3 {
            let body = match i {
                0 => Vec::new(),
                1 => b"the same in every directory\n".to_vec(),
                _ => pseudo_random(100 + 997 * d, d as u64),
            };
            fs::write(dir.join(format!("f{i}")), body).unwrap();
        }
    }
    fs::write(src.join("top"), b"top level\n").unwrap();
    let rp = backup(&f, &src);
    assert_eq!(rp.file_count, 901);
    let out = f.dir.path().join("out");
    restore(&f, &rp.id, &out).unwrap();
    assert_same_tree(&src, &out);
    let again = backup(&f, &src);
    assert!(again.added_bytes < 4096, "added {}", again.added_bytes);
}

/// A file replaced by a symlink between the walker's look at it (lstat) and its open
/// is never followed: a thread keeps swapping files of the source between a regular
/// file and a symlink to a secret outside it while backups run. Every recovery point
/// holds each of them as the symlink or as the regular file's own content, never the
/// secret's. (The swap hits the window between lstat and open only some of the time;
/// a backup that followed the link once would store the secret.)
#[test]
fn a_file_swapped_for_a_symlink_during_backup_is_not_followed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const FILES: usize = 16;
    const SECRET: &[u8] = b"the secret outside the source";
    let f = fixture();
    let src = f.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let secret = f.dir.path().join("secret");
    fs::write(&secret, SECRET).unwrap();
    let public = |i: usize| format!("public content of file {i}\n").into_bytes();
    for i in 0..FILES {
        fs::write(src.join(format!("f{i}")), public(i)).unwrap();
    }
    let stop = AtomicBool::new(false);
    let points = std::thread::scope(|s| {
        s.spawn(|| {
            let tmp = f.dir.path().join("swap.tmp");
            for n in 0usize.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = n % FILES;
                // Atomic replacement (rename), as an attacker with write access would.
                let _ = fs::remove_file(&tmp);
                if (n / FILES).is_multiple_of(2) {
                    symlink(&secret, &tmp).unwrap();
                } else {
                    fs::write(&tmp, public(i)).unwrap();
                }
                fs::rename(&tmp, src.join(format!("f{i}"))).unwrap();
            }
        });
        let points: Vec<_> = (0..40).map(|_| backup(&f, &src).id).collect();
        stop.store(true, Ordering::Relaxed);
        points
    });
    for (n, rp) in points.iter().enumerate() {
        let out = f.dir.path().join(format!("out{n}"));
        restore(&f, rp, &out).unwrap();
        for entry in fs::read_dir(&out).unwrap() {
            let p = entry.unwrap().path();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                assert_eq!(fs::read_link(&p).unwrap(), secret);
            } else {
                let body = fs::read(&p).unwrap();
                assert_ne!(body, SECRET, "{} followed the symlink", p.display());
                let i: usize = p.file_name().unwrap().to_str().unwrap()[1..]
                    .parse()
                    .unwrap();
                assert_eq!(body, public(i), "{}", p.display());
            }
        }
    }
}

//! Black-box durability tests of the storage guarantees: no plaintext at
//! rest, deduplication, damage detection and containment, and crash safety
//! (SIGKILL at random moments and an abort after every single storage write).

mod common;

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::{Coffer, Snapshot, pseudo_random, rp_id, snapshot};
use serde_json::Value;

const MIB: usize = 1 << 20;
/// The crash-injection hook of the local store (`coffer_store::CRASH_AFTER_WRITES_ENV`).
const CRASH_ENV: &str = "COFFER_TEST_CRASH_AFTER_WRITES";

fn added(out: &Value) -> u64 {
    out["recoveryPoint"]["properties"]["addedSizeInBytes"]
        .as_u64()
        .expect("added bytes")
}

fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Hashes of every 64-byte window of `data` (polynomial rolling hash).
struct Windows {
    hashes: HashSet<u64>,
}

const W: usize = 64;
const BASE: u64 = 0x100000001b3;

fn rolling(data: &[u8], mut f: impl FnMut(usize, u64)) {
    if data.len() < W {
        return;
    }
    let top = BASE.wrapping_pow(W as u32 - 1);
    let mut h = 0u64;
    for &b in &data[..W] {
        h = h.wrapping_mul(BASE).wrapping_add(u64::from(b));
    }
    f(0, h);
    for i in W..data.len() {
        h = h
            .wrapping_sub(u64::from(data[i - W]).wrapping_mul(top))
            .wrapping_mul(BASE)
            .wrapping_add(u64::from(data[i]));
        f(i + 1 - W, h);
    }
}

impl Windows {
    fn of(sources: &[&[u8]]) -> Self {
        let mut hashes = HashSet::new();
        for s in sources {
            rolling(s, |_, h| {
                hashes.insert(h);
            });
        }
        Self { hashes }
    }

    /// Offsets in `hay` where some source window occurs (hash match confirmed byte-wise).
    fn find(&self, hay: &[u8], sources: &[&[u8]]) -> Option<usize> {
        let mut found = None;
        rolling(hay, |i, h| {
            if found.is_none() && self.hashes.contains(&h) {
                let w = &hay[i..i + W];
                if sources.iter().any(|s| s.windows(W).any(|x| x == w)) {
                    found = Some(i);
                }
            }
        });
        found
    }
}

#[test]
fn no_plaintext_window_anywhere_under_home() {
    let c = Coffer::new();
    let src = c.path("src");
    fs::create_dir_all(src.join("nested")).unwrap();
    let random = pseudo_random(2 * MIB, 99);
    let marker = format!(
        "COFFER-UNIQUE-MARKER-{:016x}-",
        u64::from_le_bytes(random[..8].try_into().unwrap())
    );
    let marker_text = marker.repeat(400).into_bytes();
    let marker_name = format!("{marker}{marker}file.txt");
    fs::write(src.join("random.bin"), &random).unwrap();
    fs::write(src.join("nested").join(&marker_name), &marker_text).unwrap();
    c.vault("v1");
    c.dir_instance("v1", "docs", &src);
    c.backup("v1", "docs");
    // A stream too: its bytes must not appear either.
    c.stream_instance("v1", "dump");
    c.run_stdin(
        &[
            "backup-instance",
            "adhoc-backup",
            "-v",
            "v1",
            "-n",
            "dump",
            "--stdin",
        ],
        &marker_text,
    )
    .ok();

    let name_bytes = marker_name.as_bytes().to_vec();
    let sources: Vec<&[u8]> = vec![&random, &marker_text, &name_bytes];
    let windows = Windows::of(&sources);
    let files = all_files(&c.home);
    assert!(files.len() > 5, "{files:?}");
    for f in files {
        let bytes = fs::read(&f).unwrap();
        assert!(
            windows.find(&bytes, &sources).is_none(),
            "plaintext found in {}",
            f.display()
        );
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "marker in {}",
            f.display()
        );
    }
}

#[test]
fn second_backup_adds_almost_nothing_and_a_middle_edit_adds_about_one_chunk() {
    let c = Coffer::new();
    let src = c.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut big = pseudo_random(200 * MIB, 5);
    fs::write(src.join("big.img"), &big).unwrap();
    fs::write(src.join("small.txt"), b"small file\n".repeat(100)).unwrap();
    c.vault("v1");
    c.dir_instance("v1", "img", &src);
    let first = c.backup("v1", "img");
    assert!(added(&first) > 200 * MIB as u64);
    let second = c.backup("v1", "img");
    assert!(
        added(&second) < 16 * 1024,
        "unchanged backup added {} bytes",
        added(&second)
    );

    // Another backup instance of the same data deduplicates against the first.
    c.dir_instance("v1", "img-copy", &src);
    let other = c.backup("v1", "img-copy");
    assert!(
        added(&other) < 64 * 1024,
        "a second instance of the same data added {} bytes",
        added(&other)
    );

    // Rewrite 1 MiB in the middle.
    let edit = pseudo_random(MIB, 77);
    big[100 * MIB..101 * MIB].copy_from_slice(&edit);
    fs::write(src.join("big.img"), &big).unwrap();
    let third = c.backup("v1", "img");
    let a = added(&third);
    assert!(
        a >= MIB as u64 && a < 2 * MIB as u64,
        "1 MiB edit added {a} bytes"
    );

    let out = c.path("out");
    c.run(&Coffer::restore_args(
        "v1",
        "img",
        &rp_id(&third),
        out.to_str().unwrap(),
    ))
    .ok();
    assert!(fs::read(out.join("big.img")).unwrap() == big);
    let out1 = c.path("out1");
    c.run(&Coffer::restore_args(
        "v1",
        "img",
        &rp_id(&first),
        out1.to_str().unwrap(),
    ))
    .ok();
    big[100 * MIB..101 * MIB].copy_from_slice(&pseudo_random(200 * MIB, 5)[100 * MIB..101 * MIB]);
    assert!(fs::read(out1.join("big.img")).unwrap() == big);
}

/// Stored objects of the only vault under `home`.
fn stored_objects(home: &Path) -> Vec<PathBuf> {
    let storage = home.join("storage");
    let vault = fs::read_dir(&storage)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    all_files(&vault)
        .into_iter()
        .filter(|p| !p.starts_with(vault.join("tmp")))
        .collect()
}

#[test]
fn one_flipped_byte_in_any_object_is_reported_and_contained() {
    let c = Coffer::new();
    let src = c.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..5u64 {
        fs::write(
            src.join(format!("f{i}.bin")),
            pseudo_random(5 * MIB, i + 10),
        )
        .unwrap();
    }
    fs::write(src.join("d/text.txt"), b"some text\n".repeat(1000)).unwrap();
    c.vault("v1");
    c.dir_instance("v1", "bi", &src);
    let rp = rp_id(&c.backup("v1", "bi"));
    let expected = snapshot(&src);
    c.run(&["backup-vault", "check", "-v", "v1", "--read-data"])
        .ok();

    let objects = stored_objects(&c.home);
    let kinds: HashSet<String> = objects
        .iter()
        .map(|p| {
            p.strip_prefix(&c.home)
                .unwrap()
                .iter()
                .nth(2)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for k in ["config", "keys", "index", "points", "data"] {
        assert!(kinds.contains(k), "no {k} object in {kinds:?}");
    }
    for (n, obj) in objects.iter().enumerate() {
        let original = fs::read(obj).unwrap();
        let mut bytes = original.clone();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x20;
        fs::write(obj, &bytes).unwrap();

        let check = c.run(&["backup-vault", "check", "-v", "v1", "--read-data"]);
        assert!(
            !check.status.success(),
            "damage in {} not reported",
            obj.display()
        );
        assert_eq!(check.code(), "DataCorrupted", "{}", obj.display());

        let target = c.path(&format!("restore-{n}"));
        let r = c.run(&Coffer::restore_args(
            "v1",
            "bi",
            &rp,
            target.to_str().unwrap(),
        ));
        if r.status.success() {
            // Only possible when the damaged object is redundant: an index object
            // (packs carry their own directory) or the stored copy of the wrapped DEK
            // (the catalog holds the working copy). Then everything must be intact.
            let o = obj.to_string_lossy();
            assert!(
                o.contains("/index/") || o.contains("/keys/"),
                "restore ignored damage in {o}"
            );
            assert_eq!(snapshot(&target), expected);
        } else {
            let code = r.code();
            assert!(
                ["RestoreIncomplete", "DataCorrupted"].contains(&code.as_str()),
                "{}: {code}",
                obj.display()
            );
            if code == "RestoreIncomplete" {
                // Exactly the affected files are missing; every other file is intact.
                let got = snapshot(&target);
                assert!(!got.is_empty());
                for item in &got {
                    assert!(expected.contains(item), "{:?} restored wrong", item.0);
                }
                assert!(got.len() < expected.len());
            }
        }
        fs::write(obj, &original).unwrap();
    }
    c.run(&["backup-vault", "check", "-v", "v1", "--read-data"])
        .ok();
}

/// Vault "v1" with Directory instance "bi" over `src` and the four recovery points of
/// [`history`].
fn vault_with_history(c: &Coffer) -> (PathBuf, Vec<(String, Snapshot)>) {
    let src = c.path("src");
    fs::create_dir_all(&src).unwrap();
    c.vault("v1");
    c.dir_instance("v1", "bi", &src);
    let rps = history(c, &src);
    (src, rps)
}

/// Four recovery points of a changing tree, with the expected content of each.
fn history(c: &Coffer, src: &Path) -> Vec<(String, Snapshot)> {
    fs::create_dir_all(src).unwrap();
    let mut rps = Vec::new();
    for round in 0..4u64 {
        for i in 0..12u64 {
            if (i + round) % 3 == 0 {
                fs::write(
                    src.join(format!("f{i}")),
                    pseudo_random(MIB + (i as usize) * 4096, round * 100 + i),
                )
                .unwrap();
            }
        }
        if round == 2 {
            fs::remove_file(src.join("f0")).unwrap();
        }
        let rp = rp_id(&c.backup("v1", "bi"));
        rps.push((rp, snapshot(src)));
    }
    rps
}

fn assert_intact(c: &Coffer, rps: &[(String, Snapshot)], tag: &str) {
    c.run(&["backup-vault", "check", "-v", "v1"]).ok();
    for (i, (rp, expected)) in rps.iter().enumerate() {
        let target = c.path(&format!("verify-{tag}-{i}"));
        c.run(&Coffer::restore_args(
            "v1",
            "bi",
            rp,
            target.to_str().unwrap(),
        ))
        .ok();
        assert!(
            snapshot(&target) == *expected,
            "recovery point {rp} changed after {tag}"
        );
        fs::remove_dir_all(&target).unwrap();
    }
}

fn listed(c: &Coffer) -> HashSet<String> {
    let out = c.run(&[
        "recovery-point",
        "list",
        "-v",
        "v1",
        "--backup-instance",
        "bi",
    ]);
    out.ok()
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            r["properties"]["recoveryPointId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn crash_after_every_storage_write_of_a_backup_and_a_deletion() {
    let c = Coffer::new();
    let (src, rps) = vault_with_history(&c);

    // Backup: abort after the 1st, 2nd, ... storage write until one completes.
    for round in 0..3u64 {
        fs::write(
            src.join(format!("new{round}")),
            pseudo_random(3 * MIB, 999 + round),
        )
        .unwrap();
    }
    let mut n = 1;
    loop {
        let mut cmd = c.command(&["backup-instance", "adhoc-backup", "-v", "v1", "-n", "bi"]);
        cmd.env(CRASH_ENV, n.to_string());
        let out = c.run_with(cmd, None);
        assert_intact(&c, &rps, &format!("backup-crash-{n}"));
        if out.status.success() {
            break;
        }
        n += 1;
        assert!(n < 50, "backup never completed");
    }
    assert!(
        n > 3,
        "backup finished after only {n} writes: crash points not exercised"
    );

    // Deletion of the oldest recovery point, crashing after each write in turn.
    let victim = rps[0].0.clone();
    let keep = &rps[1..];
    let mut n = 1;
    loop {
        let mut cmd = c.command(&[
            "recovery-point",
            "delete",
            "-v",
            "v1",
            "--backup-instance",
            "bi",
            "--recovery-point",
            &victim,
        ]);
        cmd.env(CRASH_ENV, n.to_string());
        let out = c.run_with(cmd, None);
        assert_intact(&c, keep, &format!("delete-crash-{n}"));
        if out.status.success() || !listed(&c).contains(&victim) {
            break;
        }
        n += 1;
        assert!(n < 50, "deletion never completed");
    }
    // A later deletion reclaims what an interrupted one left behind.
    let del = c.run(&[
        "recovery-point",
        "delete",
        "-v",
        "v1",
        "--backup-instance",
        "bi",
        "--recovery-point",
        &rps[1].0,
    ]);
    del.ok();
    assert_intact(&c, &rps[2..], "final");
    c.run(&["backup-vault", "check", "-v", "v1", "--read-data"])
        .ok();
}

#[test]
fn sigkill_at_random_moments_during_backups_and_deletions() {
    let c = Coffer::new();
    let (src, rps) = vault_with_history(&c);
    for i in 0..24u64 {
        fs::write(src.join(format!("k{i}")), pseudo_random(2 * MIB, 5000 + i)).unwrap();
    }
    for (i, delay_ms) in [5u64, 20, 40, 70, 100, 150, 220, 300, 450, 700]
        .into_iter()
        .enumerate()
    {
        let (args, what): (Vec<&str>, &str) = if i % 3 == 2 {
            (
                vec![
                    "recovery-point",
                    "delete",
                    "-v",
                    "v1",
                    "--backup-instance",
                    "bi",
                    "--recovery-point",
                    "0",
                ],
                "delete",
            )
        } else {
            (
                vec!["backup-instance", "adhoc-backup", "-v", "v1", "-n", "bi"],
                "backup",
            )
        };
        let mut args = args;
        let newest;
        if what == "delete" {
            // Delete the newest recovery point made during this test (never one of `rps`).
            let mine: Vec<String> = listed(&c)
                .into_iter()
                .filter(|id| !rps.iter().any(|(r, _)| r == id))
                .collect();
            let Some(id) = mine.into_iter().next() else {
                continue;
            };
            newest = id;
            *args.last_mut().unwrap() = &newest;
        }
        let mut child = c
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        assert_intact(&c, &rps, &format!("sigkill-{what}-{delay_ms}ms"));
    }
    // The next run works and the vault checks clean, data included.
    c.backup("v1", "bi");
    c.run(&["backup-vault", "check", "-v", "v1", "--read-data"])
        .ok();
}

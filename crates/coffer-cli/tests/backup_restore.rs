//! Black-box tests of backups, restores, recovery points, jobs and check.
//! These need the storage engine (`coffer-engine`).

mod common;

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use common::{Coffer, pseudo_random, rp_id, snapshot};

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("nested/deeper/deepest")).expect("mkdir");
    fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    fs::write(root.join("empty.txt"), b"").expect("write");
    fs::write(root.join("hello.txt"), b"hello, coffer\n").expect("write");
    fs::write(
        root.join("nested/deeper/deepest/data.bin"),
        pseudo_random(3 << 20, 42),
    )
    .expect("write");
    // A 100 MiB file: half random, half compressible text.
    let mut big = pseudo_random(50 << 20, 43);
    big.extend(b"compressible line of text\n".iter().cycle().take(50 << 20));
    fs::write(root.join("nested/big 100MiB.img"), big).expect("write");
    fs::write(root.join("nested/ünïcødé name with spaces"), b"unicode\n").expect("write");
    fs::write(root.join("nested/new\nline"), b"newline in name\n").expect("write");
    let script = root.join("run.sh");
    fs::write(&script, b"#!/bin/sh\necho hi\n").expect("write");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::symlink("hello.txt", root.join("link-to-hello")).expect("symlink");
    std::os::unix::fs::symlink("../does-not-exist", root.join("nested/dangling")).expect("symlink");
}

#[test]
fn directory_round_trip() {
    let c = Coffer::new();
    let src = c.path("src");
    make_tree(&src);
    c.vault("v1");
    c.dir_instance("v1", "docs", &src);

    let b = c
        .run(&["backup-instance", "adhoc-backup", "-v", "v1", "-n", "docs"])
        .ok()
        .clone();
    assert_eq!(b["status"], "Completed", "{b}");
    assert!(b["jobId"].is_string());
    let rp = rp_id(&b);
    assert_eq!(rp.len(), 32);
    let props = &b["recoveryPoint"]["properties"];
    assert_eq!(
        props["recoveryPointDataStoresDetails"][0]["type"],
        "VaultStore"
    );
    assert_eq!(props["fileCount"], 7);
    assert!(props["logicalSizeInBytes"].as_u64().unwrap_or(0) >= 103 << 20);

    // Listed and shown.
    let list = c
        .run(&[
            "recovery-point",
            "list",
            "-v",
            "v1",
            "--backup-instance",
            "docs",
        ])
        .ok()
        .clone();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["name"], rp.as_str());
    let shown = c
        .run(&[
            "recovery-point",
            "show",
            "-v",
            "v1",
            "--backup-instance",
            "docs",
            "--recovery-point",
            &rp,
        ])
        .ok()
        .clone();
    assert_eq!(shown["properties"]["recoveryPointState"], "Completed");

    // Restore and compare: content, modes, mtimes, symlinks.
    let dst = c.path("restored");
    let r = c
        .run(&[
            "backup-instance",
            "restore",
            "-v",
            "v1",
            "-n",
            "docs",
            "--recovery-point",
            &rp,
            "--target",
            dst.to_str().expect("utf-8"),
        ])
        .ok()
        .clone();
    assert!(r["jobId"].is_string());
    assert_eq!(snapshot(&src), snapshot(&dst));

    // FailIfExists (the default) refuses to overwrite; Overwrite replaces.
    fs::write(dst.join("hello.txt"), b"changed").expect("write");
    let e = c.run(&[
        "backup-instance",
        "restore",
        "-v",
        "v1",
        "-n",
        "docs",
        "--recovery-point",
        &rp,
        "--target",
        dst.to_str().expect("utf-8"),
    ]);
    assert_eq!(e.code(), "RestoreTargetExists");
    assert_eq!(fs::read(dst.join("hello.txt")).expect("read"), b"changed");
    c.run(&[
        "backup-instance",
        "restore",
        "-v",
        "v1",
        "-n",
        "docs",
        "--recovery-point",
        &rp,
        "--target",
        dst.to_str().expect("utf-8"),
        "--recovery-option",
        "Overwrite",
    ])
    .ok();
    assert_eq!(
        fs::read(dst.join("hello.txt")).expect("read"),
        b"hello, coffer\n"
    );

    // A sub-path only.
    let part = c.path("part");
    c.run(&[
        "backup-instance",
        "restore",
        "-v",
        "v1",
        "-n",
        "docs",
        "--recovery-point",
        &rp,
        "--target",
        part.to_str().expect("utf-8"),
        "--path",
        "nested/deeper",
    ])
    .ok();
    let found: Vec<_> = walk_files(&part);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("data.bin"));

    // Unknown recovery point.
    assert_eq!(
        c.run(&[
            "backup-instance",
            "restore",
            "-v",
            "v1",
            "-n",
            "docs",
            "--recovery-point",
            "00000000000000000000000000000000",
            "--target",
            c.path("x").to_str().expect("utf-8"),
        ])
        .code(),
        "RecoveryPointNotFound"
    );

    // A second backup of the same tree adds almost nothing.
    let b2 = c
        .run(&["backup-instance", "adhoc-backup", "-v", "v1", "-n", "docs"])
        .ok()
        .clone();
    let added = b2["recoveryPoint"]["properties"]["addedSizeInBytes"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(added < 64 * 1024, "second backup added {added} bytes");

    // check is clean.
    let chk = c
        .run(&["backup-vault", "check", "-v", "v1", "--read-data"])
        .ok()
        .clone();
    assert_eq!(chk["clean"], true, "{chk}");

    // Jobs: backups and restores recorded.
    let jobs = c.run(&["job", "list", "-v", "v1"]).ok().clone();
    let ops: Vec<_> = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            (
                j["properties"]["operation"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                j["properties"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert!(
        ops.contains(&("Backup".into(), "Completed".into())),
        "{ops:?}"
    );
    assert!(
        ops.contains(&("Restore".into(), "Completed".into())),
        "{ops:?}"
    );
    assert!(
        ops.contains(&("Restore".into(), "Failed".into())),
        "{ops:?}"
    );

    // Delete the first recovery point: the second still restores.
    let d = c
        .run(&[
            "recovery-point",
            "delete",
            "-v",
            "v1",
            "--backup-instance",
            "docs",
            "--recovery-point",
            &rp,
        ])
        .ok()
        .clone();
    assert!(d["jobId"].is_string());
    let list = c
        .run(&[
            "recovery-point",
            "list",
            "-v",
            "v1",
            "--backup-instance",
            "docs",
        ])
        .ok()
        .clone();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let dst2 = c.path("restored2");
    c.run(&[
        "backup-instance",
        "restore",
        "-v",
        "v1",
        "-n",
        "docs",
        "--recovery-point",
        &rp_id(&b2),
        "--target",
        dst2.to_str().expect("utf-8"),
    ])
    .ok();
    assert_eq!(snapshot(&src), snapshot(&dst2));
}

fn walk_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(root).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn stream_round_trip() {
    let c = Coffer::new();
    c.vault("v1");
    c.stream_instance("v1", "db");
    let mut data = pseudo_random(2 << 20, 7);
    data.extend(std::iter::repeat_n(b'x', 1 << 20));

    // Stream instances need --stdin; Directory ones refuse it.
    assert_eq!(
        c.run(&["backup-instance", "adhoc-backup", "-v", "v1", "-n", "db"])
            .code(),
        "InvalidArgument"
    );
    let b = c
        .run_stdin(
            &[
                "backup-instance",
                "adhoc-backup",
                "-v",
                "v1",
                "-n",
                "db",
                "--stdin",
            ],
            &data,
        )
        .ok()
        .clone();
    let rp = rp_id(&b);
    assert_eq!(
        b["recoveryPoint"]["properties"]["logicalSizeInBytes"].as_u64(),
        Some(data.len() as u64)
    );

    // To stdout: exactly the bytes, nothing else.
    let out = c.run(&[
        "backup-instance",
        "restore",
        "-v",
        "v1",
        "-n",
        "db",
        "--recovery-point",
        &rp,
        "--target",
        "-",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout == data,
        "stdout restore differs ({} bytes)",
        out.stdout.len()
    );

    // To a file; FailIfExists refuses an existing file.
    let f = c.path("dump.out");
    c.run(&[
        "backup-instance",
        "restore",
        "-v",
        "v1",
        "-n",
        "db",
        "--recovery-point",
        &rp,
        "--target",
        f.to_str().expect("utf-8"),
    ])
    .ok();
    assert!(fs::read(&f).expect("read") == data);
    assert_eq!(
        c.run(&[
            "backup-instance",
            "restore",
            "-v",
            "v1",
            "-n",
            "db",
            "--recovery-point",
            &rp,
            "--target",
            f.to_str().expect("utf-8"),
        ])
        .code(),
        "RestoreTargetExists"
    );
    // A directory target is refused for a stream.
    assert_eq!(
        c.run(&[
            "backup-instance",
            "restore",
            "-v",
            "v1",
            "-n",
            "db",
            "--recovery-point",
            &rp,
            "--target",
            c.dir.path().to_str().expect("utf-8"),
        ])
        .code(),
        "RestoreTargetInvalid"
    );

    // Deleting the backup instance deletes its recovery points; then the vault can go.
    let d = c
        .run(&["backup-instance", "delete", "-v", "v1", "-n", "db"])
        .ok()
        .clone();
    assert!(d["jobId"].is_string());
    assert!(d["reclaimedBytes"].as_u64().unwrap_or(0) > 0, "{d}");
    assert_eq!(
        c.run(&[
            "recovery-point",
            "list",
            "-v",
            "v1",
            "--backup-instance",
            "db"
        ])
        .code(),
        "BackupInstanceNotFound"
    );
    c.run(&["backup-vault", "delete", "-v", "v1"]).ok();
}

#[test]
fn failed_backup_is_a_failed_job_with_code() {
    let c = Coffer::new();
    c.vault("v1");
    let src = c.path("src");
    fs::create_dir(&src).expect("mkdir");
    fs::write(src.join("a"), b"a").expect("write");
    c.dir_instance("v1", "docs", &src);
    fs::remove_dir_all(&src).expect("remove the datasource");

    let e = c
        .run(&["backup-instance", "adhoc-backup", "-v", "v1", "-n", "docs"])
        .err();
    assert_eq!(e["code"], "DatasourceNotFound", "{e}");
    let job_id = e["jobId"]
        .as_str()
        .expect("the failure names its job")
        .to_owned();

    let jobs = c.run(&["job", "list", "-v", "v1"]).ok().clone();
    let job = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["name"] == job_id.as_str())
        .expect("failed job listed")
        .clone();
    let p = &job["properties"];
    assert_eq!(p["operation"], "Backup");
    assert_eq!(p["status"], "Failed");
    assert_eq!(p["backupInstanceFriendlyName"], "docs");
    assert_eq!(p["errorDetails"][0]["code"], "DatasourceNotFound");
    assert!(p["errorDetails"][0]["message"].is_string());
    assert!(p["errorDetails"][0]["recommendedAction"][0].is_string());
    assert!(p["endTime"].is_string());
    assert!(p["duration"].as_str().unwrap_or_default().starts_with("PT"));

    let shown = c
        .run(&["job", "show", "-v", "v1", "--job-id", &job_id])
        .ok()
        .clone();
    assert_eq!(shown, job);
}

#[test]
fn restore_never_writes_through_symlinks_planted_in_the_target() {
    let c = Coffer::new();
    let src = c.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    fs::write(src.join("sub/file"), b"inside\n").expect("write");
    fs::write(src.join("top"), b"top\n").expect("write");
    c.vault("v1");
    c.dir_instance("v1", "bi", &src);
    let rp = rp_id(&c.backup("v1", "bi"));

    // The target already holds symlinks pointing outside it, where the recovery
    // point has a directory and a file.
    let outside = c.path("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    fs::write(outside.join("victim"), b"must survive\n").expect("write");
    let target = c.path("target");
    fs::create_dir_all(&target).expect("mkdir");
    std::os::unix::fs::symlink(&outside, target.join("sub")).expect("symlink");
    std::os::unix::fs::symlink(outside.join("victim"), target.join("top")).expect("symlink");

    assert_eq!(
        c.restore("v1", "bi", &rp, &target).code(),
        "RestoreTargetExists"
    );
    let mut args = Coffer::restore_args("v1", "bi", &rp, target.to_str().expect("utf-8"));
    args.extend(["--recovery-option", "Overwrite"]);
    c.run(&args).ok();

    assert_eq!(
        fs::read(outside.join("victim")).expect("read"),
        b"must survive\n"
    );
    assert_eq!(
        fs::read_dir(&outside).expect("ls").count(),
        1,
        "nothing written outside"
    );
    assert!(
        fs::symlink_metadata(target.join("sub"))
            .expect("meta")
            .is_dir()
    );
    assert!(
        fs::symlink_metadata(target.join("top"))
            .expect("meta")
            .is_file()
    );
    assert_eq!(
        fs::read(target.join("sub/file")).expect("read"),
        b"inside\n"
    );
    assert_eq!(fs::read(target.join("top")).expect("read"), b"top\n");
}

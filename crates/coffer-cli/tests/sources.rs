//! Black-box tests of what a backup reads: special and unreadable files (warnings
//! with codes, nothing lost), sparse and very large files (bounded memory, holes
//! kept), and a deletion racing a backup (the lock makes it safe).

mod common;

use std::{
    fs::{self, File},
    io::{Seek, SeekFrom, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    process::{Command, Stdio},
    time::Duration,
};

use common::{Coffer, pseudo_random, rp_id, snapshot};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn special_and_unreadable_files_are_coded_warnings_and_the_rest_is_kept() {
    let c = Coffer::new();
    // When the tests run as root, permissions do not stop reads: run coffer as
    // `nobody` (setpriv, util-linux) so that an unreadable file really is unreadable.
    let as_nobody = is_root();
    if as_nobody {
        fs::set_permissions(c.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    }
    let src = c.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("ok.txt"), b"readable\n").unwrap();
    fs::write(src.join("sub/secret.txt"), b"nobody may read this\n").unwrap();
    fs::set_permissions(
        src.join("sub/secret.txt"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let st = Command::new("mkfifo")
        .arg(src.join("a-fifo"))
        .status()
        .unwrap();
    assert!(st.success());
    for d in [&src, &src.join("sub")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }

    let run = |args: &[&str]| {
        let mut cmd = if as_nobody {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_coffer"));
            cmd
        } else {
            Command::new(env!("CARGO_BIN_EXE_coffer"))
        };
        cmd.env_remove("COFFER_HOME")
            .env_remove("COFFER_MASTER_KEY_FILE")
            .arg("--home")
            .arg(&c.home)
            .args(args);
        c.run_with(cmd, None)
    };
    run(&["backup-vault", "create", "-v", "v1"]).ok();
    run(&[
        "backup-instance",
        "create",
        "-v",
        "v1",
        "-n",
        "bi",
        "--datasource-type",
        "Directory",
        "--datasource-path",
        src.to_str().unwrap(),
    ])
    .ok();
    let out = run(&["backup-instance", "adhoc-backup", "-v", "v1", "-n", "bi"]);
    let res = out.ok().clone();
    assert_eq!(res["status"], "CompletedWithWarnings", "{res}");
    let warnings: Vec<String> = res["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("UserErrorFileNotReadable: sub/secret.txt:")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("UserErrorSpecialFileSkipped: a-fifo:")),
        "{warnings:?}"
    );
    // The job says the same.
    let jobs = run(&["job", "list", "-v", "v1"]).ok().clone();
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| {
            j["properties"]["operation"]
                .as_str()
                .unwrap_or("")
                .contains("Backup")
        })
        .cloned()
        .unwrap();
    assert_eq!(
        job["properties"]["status"], "CompletedWithWarnings",
        "{job}"
    );

    let target = c.path("restored");
    run(&[
        "backup-instance",
        "restore",
        "-v",
        "v1",
        "-n",
        "bi",
        "--recovery-point",
        &rp_id(&res),
        "--target",
        target.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(fs::read(target.join("ok.txt")).unwrap(), b"readable\n");
    assert!(target.join("sub").is_dir());
    assert!(!target.join("sub/secret.txt").exists());
    assert!(!target.join("a-fifo").exists());
}

/// Runs `cmd` and returns (its result, its peak resident set size in bytes).
fn run_measuring_peak_rss(c: &Coffer, args: &[&str]) -> (std::process::ExitStatus, u64) {
    let mut child = c
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(s) = fs::read_to_string(&status_file)
            && let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb * 1024);
        }
        if let Some(st) = child.try_wait().unwrap() {
            return (st, peak);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sparse_and_very_large_files_stream_in_bounded_memory() {
    let c = Coffer::new();
    let src = c.path("src");
    fs::create_dir_all(&src).unwrap();
    // A 4 GiB sparse file with 3 MiB of data in the middle.
    let data = pseudo_random(3 * MIB as usize, 11);
    {
        let mut f = File::create(src.join("disk.img")).unwrap();
        f.set_len(4 << 30).unwrap();
        f.seek(SeekFrom::Start(2 << 30)).unwrap();
        f.write_all(&data).unwrap();
    }
    c.vault("v1");
    c.dir_instance("v1", "vm", &src);
    let (st, peak) = run_measuring_peak_rss(
        &c,
        &["backup-instance", "adhoc-backup", "-v", "v1", "-n", "vm"],
    );
    assert!(st.success());
    assert!(peak > 0 && peak < 160 * MIB, "peak RSS {} MiB", peak / MIB);

    let list = c.run(&[
        "recovery-point",
        "list",
        "-v",
        "v1",
        "--backup-instance",
        "vm",
    ]);
    let rp = list.ok()[0]["properties"]["recoveryPointId"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = c.path("out");
    let (st, peak) = run_measuring_peak_rss(
        &c,
        &[
            "backup-instance",
            "restore",
            "-v",
            "v1",
            "-n",
            "vm",
            "--recovery-point",
            &rp,
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert!(st.success());
    assert!(peak < 160 * MIB, "restore peak RSS {} MiB", peak / MIB);
    let out = target.join("disk.img");
    let m = fs::metadata(&out).unwrap();
    assert_eq!(m.len(), 4 << 30);
    // Holes stay holes: far less than 4 GiB is allocated.
    assert!(
        m.blocks() * 512 < 64 * MIB,
        "restored file allocates {} bytes",
        m.blocks() * 512
    );
    let mut f = File::open(&out).unwrap();
    f.seek(SeekFrom::Start(2 << 30)).unwrap();
    let mut back = vec![0u8; data.len()];
    std::io::Read::read_exact(&mut f, &mut back).unwrap();
    assert!(back == data);
}

#[test]
fn deleting_a_recovery_point_during_a_backup_loses_nothing() {
    let c = Coffer::new();
    let src = c.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..10u64 {
        fs::write(
            src.join(format!("old{i}")),
            pseudo_random(2 * MIB as usize, i),
        )
        .unwrap();
    }
    c.vault("v1");
    c.dir_instance("v1", "bi", &src);
    let first = c.backup("v1", "bi");
    // The next backup reuses every chunk of the first and adds 120 MiB.
    for i in 0..6u64 {
        fs::write(
            src.join(format!("new{i}")),
            pseudo_random(20 * MIB as usize, 100 + i),
        )
        .unwrap();
    }
    let expected = snapshot(&src);
    let backup = c
        .command(&["backup-instance", "adhoc-backup", "-v", "v1", "-n", "bi"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    c.run(&[
        "recovery-point",
        "delete",
        "-v",
        "v1",
        "--backup-instance",
        "bi",
        "--recovery-point",
        &rp_id(&first),
    ])
    .ok();
    let out = backup.wait_with_output().unwrap();
    assert!(out.status.success());
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    c.run(&["backup-vault", "check", "-v", "v1", "--read-data"])
        .ok();
    let target = c.path("out");
    c.restore("v1", "bi", &rp_id(&second), &target).ok();
    assert!(snapshot(&target) == expected);
}

#[test]
fn without_a_terminal_a_backup_prints_only_its_result() {
    let c = Coffer::new();
    let src = c.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), pseudo_random(3 * MIB as usize, 1)).unwrap();
    c.vault("v1");
    c.dir_instance("v1", "bi", &src);
    let out = c.run(&["backup-instance", "adhoc-backup", "-v", "v1", "-n", "bi"]);
    let res = out.ok();
    // No progress bar, no log lines: stderr is empty and stdout is one JSON document
    // naming the job and the recovery point.
    assert_eq!(out.stderr, "", "stderr without a terminal");
    assert!(res["jobId"].is_string(), "{res}");
    assert_eq!(rp_id(res).len(), 32);
}

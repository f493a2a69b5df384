//! Black-box tests of several `coffer` processes at once, and of a process
//! killed in the middle of a job.

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::{Coffer, pseudo_random};

/// Eight processes initialise the same fresh home at once, each creating a group
/// (three homes: the race, in which SQLite reported the switch to WAL mode busy
/// without waiting, showed in about one home in 40 under load).
#[test]
fn concurrent_first_use_and_creates() {
    for _ in 0..3 {
        first_use_by_eight_processes();
    }
}

fn first_use_by_eight_processes() {
    let c = Coffer::new();
    let children: Vec<_> = (0..8)
        .map(|i| {
            c.command(&["group", "create", "-n", &format!("rg{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for ch in children {
        let out = ch.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let groups = c.run(&["group", "list"]).ok().clone();
    assert_eq!(groups.as_array().map(Vec::len), Some(9), "{groups}");
    // One instance, one key.
    assert_eq!(
        std::fs::read(c.home.join("master.key")).expect("key").len(),
        32
    );
}

#[test]
fn concurrent_backups_into_one_vault() {
    let c = Coffer::new();
    c.vault("v1");
    for i in 0..3 {
        c.stream_instance("v1", &format!("s{i}"));
    }
    let data: Vec<Vec<u8>> = (0..3).map(|i| pseudo_random(1 << 20, 100 + i)).collect();
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let cmd = c.command(&[
                "backup-instance",
                "adhoc-backup",
                "-v",
                "v1",
                "-n",
                &format!("s{i}"),
                "--stdin",
            ]);
            let input = data[i].clone();
            let home = c.home.clone();
            std::thread::spawn(move || {
                let h = Coffer {
                    dir: tempfile::tempdir().expect("tempdir"),
                    home,
                    master_key_file: None,
                };
                h.run_with(cmd, Some(input))
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    for (i, r) in results.iter().enumerate() {
        let rp = r.ok()["recoveryPoint"]["name"]
            .as_str()
            .expect("rp")
            .to_owned();
        let out = c.run(&[
            "backup-instance",
            "restore",
            "-v",
            "v1",
            "-n",
            &format!("s{i}"),
            "--recovery-point",
            &rp,
            "--target",
            "-",
        ]);
        assert!(out.status.success(), "{}", out.stderr);
        assert!(out.stdout == data[i], "stream {i} differs");
    }
}

#[test]
fn killed_backup_becomes_an_interrupted_job() {
    let c = Coffer::new();
    c.vault("v1");
    c.stream_instance("v1", "db");
    // Keep stdin open so the backup stays in progress.
    let mut child = c
        .command(&[
            "backup-instance",
            "adhoc-backup",
            "-v",
            "v1",
            "-n",
            "db",
            "--stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, &pseudo_random(256 * 1024, 1)).expect("feed");
    let start = Instant::now();
    loop {
        let jobs = c.run(&["job", "list", "-v", "v1"]).ok().clone();
        if jobs[0]["properties"]["status"] == "InProgress" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "job never started: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    drop(stdin);

    let jobs = c.run(&["job", "list", "-v", "v1"]).ok().clone();
    let p = &jobs[0]["properties"];
    assert_eq!(p["status"], "Failed", "{jobs}");
    assert_eq!(p["errorDetails"][0]["code"], "JobInterrupted");

    // The vault still works.
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
            b"after the crash",
        )
        .ok()
        .clone();
    assert_eq!(b["status"], "Completed");
    let chk = c.run(&["backup-vault", "check", "-v", "v1"]).ok().clone();
    assert_eq!(chk["clean"], true, "{chk}");
}

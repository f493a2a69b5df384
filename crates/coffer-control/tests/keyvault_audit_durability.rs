//! Durability of key audit records: a data-plane result is returned only after the sync
//! that makes its audit record durable, a committer that dies fails its callers instead
//! of leaving them waiting, and every record acknowledged before a SIGKILL is in the
//! log afterwards.
//!
//! The fail points here are not filtered by database, so the tests of this file run one
//! at a time (`SERIAL`) and no other test binary shares their process.

#[cfg(feature = "failpoints")]
use std::sync::{Arc, Barrier, mpsc};
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::Mutex,
    thread,
    time::Duration,
};

use coffer_control::Instance;

mod common;

#[cfg(feature = "failpoints")]
use common::DEK;
use common::{ALG, Setup, data_plane_records, set_up};

/// Set in the child process of the SIGKILL test: the home it works in.
const CHILD_HOME: &str = "COFFER_TEST_AUDIT_CHILD_HOME";
const CHILD_THREADS: usize = 4;

static SERIAL: Mutex<()> = Mutex::new(());

/// The number of successful unwrapKey records in the key vault's audit log.
fn unwrap_records(home: &Path) -> usize {
    data_plane_records(home)
        .iter()
        .filter(|(_, op, result)| op == "unwrapKey" && result == "Succeeded")
        .count()
}

/// The identity, kid and wrapped DEK of a one-identity set-up.
fn one(s: &Setup) -> (&str, &str, &[u8]) {
    (&s.principals[0], &s.kid, &s.wrapped)
}

/// While the sync of the audit log is held, the unwrap whose record it would make
/// durable does not return; once the sync completes, it returns the key.
#[cfg(feature = "failpoints")]
#[test]
fn an_unwrap_returns_only_after_the_sync_of_its_audit_record() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = set_up(1);
    let (principal, kid, wrapped) = one(&s);
    let (entered_tx, entered) = mpsc::channel::<()>();
    let gate = Arc::new(Barrier::new(2));
    let entered_tx = Mutex::new(entered_tx);
    let g = Arc::clone(&gate);
    fail::cfg_callback("kv-audit-sync", move || {
        let _ = entered_tx.lock().unwrap().send(());
        g.wait();
    })
    .unwrap();
    let (done_tx, done) = mpsc::channel();
    thread::scope(|sc| {
        sc.spawn(|| {
            let inst = Instance::open(s.home.clone(), None).unwrap();
            let r = inst
                .key_vault_client()
                .unwrap_key(principal, kid, ALG, wrapped)
                .map(|u| u.value.expose().to_vec());
            done_tx.send(r).unwrap();
        });
        entered
            .recv_timeout(Duration::from_secs(30))
            .expect("the record reached the sync");
        assert!(
            done.recv_timeout(Duration::from_millis(300)).is_err(),
            "the unwrap returned before its audit record was synced"
        );
        fail::remove("kv-audit-sync");
        gate.wait();
        let r = done.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(r.unwrap(), DEK);
    });
    assert_eq!(unwrap_records(&s.home), 1);
}

/// A committer thread that panics while syncing leaves no caller waiting and returns
/// no key material: the concurrent callers get an error, and so does every later
/// caller of the process.
#[cfg(feature = "failpoints")]
#[test]
fn a_commit_that_dies_fails_its_callers_instead_of_hanging() {
    const THREADS: usize = 4;
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = set_up(1);
    let (principal, kid, wrapped) = one(&s);
    // Keeps the process's committer (and its failure) alive after the threads.
    let keep = Instance::open(s.home.clone(), None).unwrap();
    fail::cfg("kv-audit-sync", "panic(injected)").unwrap();
    let barrier = Barrier::new(THREADS);
    let outcomes: Vec<_> = thread::scope(|sc| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (barrier, home) = (&barrier, &s.home);
                sc.spawn(move || {
                    let inst = Instance::open(home.clone(), None).unwrap();
                    barrier.wait();
                    inst.key_vault_client()
                        .unwrap_key(principal, kid, ALG, wrapped)
                        .map(|u| u.value.expose().to_vec())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    fail::remove("kv-audit-sync");
    for o in outcomes {
        let e = o
            .expect("the committer's panic reached a caller")
            .expect_err("unwrap returned key material without a durable record");
        assert_eq!(e.code.as_str(), "CatalogError", "{e}");
    }
    let e = keep
        .key_vault_client()
        .unwrap_key(principal, kid, ALG, wrapped)
        .expect_err("the failed committer cannot vouch for later records");
    assert_eq!(e.code.as_str(), "CatalogError", "{e}");
    drop(keep);
    let inst = Instance::open(s.home.clone(), None).unwrap();
    inst.key_vault_client()
        .unwrap_key(principal, kid, ALG, wrapped)
        .unwrap();
}

/// The child of [`acknowledged_records_survive_a_sigkill_at_any_moment`]: unwraps on
/// several threads until killed, printing a line after each unwrap that returned.
fn child(home: &Path) {
    let (principal, kid, wrapped) = {
        let args: Vec<String> = std::env::var("COFFER_TEST_AUDIT_CHILD_ARGS")
            .unwrap()
            .split(' ')
            .map(str::to_owned)
            .collect();
        (args[0].clone(), args[1].clone(), hex_decode(&args[2]))
    };
    thread::scope(|sc| {
        for _ in 0..CHILD_THREADS {
            sc.spawn(|| {
                let inst = Instance::open(home.to_owned(), None).unwrap();
                let client = inst.key_vault_client();
                loop {
                    client.unwrap_key(&principal, &kid, ALG, &wrapped).unwrap();
                    println!("acknowledged");
                }
            });
        }
    });
}

/// Whether a line of the child's output acknowledges an unwrap. The test harness
/// writes `test NAME ... ` before the test's own output, on the same line.
fn is_ack(line: &str) -> bool {
    line.ends_with("acknowledged")
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A process doing unwraps on several threads is killed (SIGKILL) at different
/// moments; every unwrap it acknowledged (printed after the call returned) has its
/// record in the audit log, read by a new process afterwards.
#[test]
fn acknowledged_records_survive_a_sigkill_at_any_moment() {
    if let Some(home) = std::env::var_os(CHILD_HOME) {
        child(Path::new(&home));
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = set_up(1);
    let (principal, kid, wrapped) = one(&s);
    let start = unwrap_records(&s.home);
    let mut total_acknowledged = 0;
    for (round, after) in [1usize, 7, 40, 3, 120].into_iter().enumerate() {
        let before = unwrap_records(&s.home);
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args([
                "acknowledged_records_survive_a_sigkill_at_any_moment",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_HOME, &s.home)
            .env(
                "COFFER_TEST_AUDIT_CHILD_ARGS",
                format!("{principal} {kid} {}", hex_encode(wrapped)),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        let mut acknowledged = 0;
        // Kill right after the `after`-th acknowledgement (and a round-dependent
        // pause), while the other threads are anywhere in their calls.
        while acknowledged < after {
            match lines.next() {
                Some(Ok(l)) if is_ack(&l) => acknowledged += 1,
                Some(Ok(_)) => {}
                other => panic!("child ended early: {other:?}"),
            }
        }
        thread::sleep(Duration::from_micros(300 * round as u64));
        c.kill().unwrap();
        c.wait().unwrap();
        acknowledged += lines.map_while(Result::ok).filter(|l| is_ack(l)).count();
        let now = unwrap_records(&s.home);
        let records = now - before;
        assert!(
            records >= acknowledged,
            "round {round}: {acknowledged} unwraps acknowledged, {records} records"
        );
        total_acknowledged += acknowledged;
        // At most one call per thread was in flight when each process died, so no
        // round adds more than CHILD_THREADS records nobody acknowledged. The bound is
        // on the total: a transaction a killed child had written to the WAL but not
        // yet published in the WAL index can show only once a later opener recovers
        // the WAL, in the next round.
        let all = now - start;
        let bound = total_acknowledged + CHILD_THREADS * (round + 1);
        assert!(
            all <= bound,
            "after round {round}: {total_acknowledged} unwraps acknowledged in all, \
             {all} records (at most {bound})"
        );
    }
    assert!(total_acknowledged >= 171);
}

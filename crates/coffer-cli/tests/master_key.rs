//! Black-box tests of the instance master key: creation mode, loss, mismatch, recovery.

mod common;

use std::{fs, os::unix::fs::PermissionsExt};

use common::Coffer;

#[test]
fn master_key_file_is_created_owner_only() {
    let c = Coffer::new();
    c.run(&["group", "list"]).ok();
    let key = c.home.join("master.key");
    let meta = fs::metadata(&key).expect("master.key exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    let home_mode = fs::metadata(&c.home).expect("home").permissions().mode() & 0o777;
    assert_eq!(home_mode, 0o700);
    // The catalog never holds the key bytes.
    let key_bytes = fs::read(&key).expect("read key");
    let catalog = fs::read(c.home.join("catalog.db")).expect("catalog");
    assert!(
        !catalog.windows(32).any(|w| w == key_bytes.as_slice()),
        "master key found in the catalog"
    );
}

#[test]
fn missing_master_key_is_a_clear_error_and_data_survives() {
    let c = Coffer::new();
    c.run(&["group", "create", "-n", "keep-me"]).ok();
    let v = c.vault("vault-a");
    let key = c.home.join("master.key");
    let saved = c.path("master.key.backup");
    fs::copy(&key, &saved).expect("back up the key");
    fs::remove_file(&key).expect("lose the key");

    for args in [
        &["group", "list"][..],
        &["backup-vault", "show", "-v", "vault-a"][..],
        &["backup-vault", "create", "-v", "vault-b"][..],
    ] {
        let e = c.run(args).err();
        assert_eq!(e["code"], "MasterKeyNotFound", "{args:?}: {e}");
        let action = e["recommendedAction"].as_str().unwrap_or_default();
        assert!(action.contains("--master-key-file"), "{action}");
        assert!(
            !key.exists(),
            "a new master key must never be created over existing data"
        );
    }

    // Supplying the saved key by path works without restoring the file...
    let by_path = Coffer {
        dir: tempfile::tempdir().expect("tempdir"),
        home: c.home.clone(),
        master_key_file: Some(saved.clone()),
    };
    assert_eq!(
        by_path.run(&["backup-vault", "show", "-v", "vault-a"]).ok()["properties"]["vaultId"],
        v["properties"]["vaultId"]
    );

    // ...and so does putting the file back: everything is intact.
    fs::copy(&saved, &key).expect("restore the key");
    assert_eq!(
        c.run(&["group", "show", "-n", "keep-me"]).ok()["name"],
        "keep-me"
    );
    let shown = c
        .run(&["backup-vault", "show", "-v", "vault-a"])
        .ok()
        .clone();
    assert_eq!(shown, v);
}

#[test]
fn wrong_or_malformed_master_key_is_refused() {
    let c = Coffer::new();
    c.vault("vault-a");
    let other = c.path("other.key");
    fs::write(&other, [7u8; 32]).expect("write");
    let wrong = Coffer {
        dir: tempfile::tempdir().expect("tempdir"),
        home: c.home.clone(),
        master_key_file: Some(other),
    };
    assert_eq!(
        wrong.run(&["backup-vault", "list"]).code(),
        "MasterKeyMismatch"
    );

    let short = c.path("short.key");
    fs::write(&short, b"not a key").expect("write");
    let bad = Coffer {
        dir: tempfile::tempdir().expect("tempdir"),
        home: c.home.clone(),
        master_key_file: Some(short),
    };
    assert_eq!(
        bad.run(&["backup-vault", "list"]).code(),
        "MasterKeyInvalid"
    );

    // The right key still works.
    c.run(&["backup-vault", "show", "-v", "vault-a"]).ok();
}

#[test]
fn supplied_master_key_file_is_used_from_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("my.key");
    fs::write(&key, [3u8; 32]).expect("write");
    let c = Coffer {
        home: dir.path().join("home"),
        master_key_file: Some(key),
        dir,
    };
    c.vault("vault-a");
    assert!(
        !c.home.join("master.key").exists(),
        "no default key when one is supplied"
    );
    // Without it, the instance cannot be opened.
    let without = Coffer {
        dir: tempfile::tempdir().expect("tempdir"),
        home: c.home.clone(),
        master_key_file: None,
    };
    assert_eq!(
        without.run(&["backup-vault", "list"]).code(),
        "MasterKeyNotFound"
    );
    // A missing supplied file is a clear error too.
    let missing = Coffer {
        dir: tempfile::tempdir().expect("tempdir"),
        home: c.home.clone(),
        master_key_file: Some(c.path("nope.key")),
    };
    assert_eq!(
        missing.run(&["backup-vault", "list"]).code(),
        "MasterKeyNotFound"
    );
}

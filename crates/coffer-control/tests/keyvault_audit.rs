//! Key vault data-plane audit under concurrency: records of concurrent callers in one
//! process are group-committed, each caller's result is returned only once its record
//! is committed, a failed commit fails every caller of its batch, and a revoked role
//! takes effect at once for instances that already used it, as do key and vault changes
//! made elsewhere (kept rows follow the catalog's change counter); a failed sync of the
//! audit log fails its callers and every later caller of the process.

use std::{sync::Barrier, thread};

use coffer_control::{Instance, KeyAttributeUpdate, KeyVaultOptions, rbac::AssignmentSelector};

mod common;

use common::{ALG, DEK, KV, Setup, data_plane_records, set_up};

impl Setup {
    /// Makes the fail point `name` fail for this test's database only (its path holds
    /// the test's temporary directory), leaving the other tests of this binary alone.
    #[cfg(feature = "failpoints")]
    fn fail_here(&self, name: &str) {
        let marker = self.dir.path().file_name().unwrap().to_str().unwrap();
        fail::cfg(name, &format!("return({marker})")).unwrap();
    }

    /// Unwraps (as the first identity, through a new instance) a value the key did not
    /// wrap; returns the error, the instance and the one data-plane record it added.
    fn unwrap_a_value_the_key_did_not_wrap(
        &self,
    ) -> (
        coffer_control::Error,
        Instance,
        Vec<(String, String, String)>,
    ) {
        let inst = Instance::open(self.home.clone(), None).unwrap();
        let before = data_plane_records(&self.home).len();
        let e = inst
            .key_vault_client()
            .unwrap_key(&self.principals[0], &self.kid, ALG, &[0x5a; 256])
            .expect_err("not a value this key wrapped");
        let added = data_plane_records(&self.home).split_off(before);
        assert_eq!(added.len(), 1, "{added:?}");
        (e, inst, added)
    }

    /// Runs `f` once per identity, each on its own thread with its own instance, all
    /// starting together.
    fn on_every_thread<T: Send>(&self, f: impl Fn(Instance, &str) -> T + Sync) -> Vec<T> {
        let barrier = Barrier::new(self.principals.len());
        thread::scope(|sc| {
            let handles: Vec<_> = self
                .principals
                .iter()
                .map(|p| {
                    let (barrier, f) = (&barrier, &f);
                    sc.spawn(move || {
                        let inst = Instance::open(self.home.clone(), None).unwrap();
                        barrier.wait();
                        f(inst, p)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }
}

#[test]
fn concurrent_data_plane_calls_each_leave_exactly_their_audit_record() {
    const THREADS: usize = 6;
    const OPS: usize = 12;
    let s = set_up(THREADS);
    let (home, principals, kid, wrapped) = (&s.home, &s.principals, &s.kid, &s.wrapped);
    // Each thread is its own instance (catalog connection), like a server's workers;
    // they share the process's audit committer.
    s.on_every_thread(|inst, p| {
        let client = inst.key_vault_client();
        for _ in 0..OPS {
            client.wrap_key(p, kid, ALG, &DEK).unwrap();
            let u = client.unwrap_key(p, kid, ALG, wrapped).unwrap();
            assert_eq!(u.value.expose(), &DEK);
        }
    });
    let records = data_plane_records(home);
    assert_eq!(records.len(), 1 + THREADS * OPS * 2, "{records:?}");
    for (i, p) in principals.iter().enumerate() {
        for op in ["wrapKey", "unwrapKey"] {
            let n = records
                .iter()
                .filter(|(rp, ro, res)| rp == p && ro == op && res == "Succeeded")
                .count();
            let expected = OPS + usize::from(i == 0 && op == "wrapKey");
            assert_eq!(n, expected, "{p} {op}");
        }
    }
}

/// A worker that begins many unwraps before finishing them (as a server's worker
/// would) gets each one's own result, only through `finish`, with one record per call:
/// a call that failed is recorded `Failed` when finished.
#[test]
fn begun_unwraps_each_finish_with_their_own_result_and_record() {
    const BEGUN: usize = 40;
    let s = set_up(1);
    let (home, principals, kid, wrapped) = (&s.home, &s.principals, &s.kid, &s.wrapped);
    let before = data_plane_records(home).len();
    let worker = Instance::open(home.clone(), None).unwrap();
    let client = worker.key_vault_client();
    let bad = [0x5a; 256];
    let begun: Vec<_> = (0..BEGUN)
        .map(|i| {
            let value: &[u8] = if i == 7 { &bad } else { wrapped };
            client
                .begin_unwrap_key(&principals[0], kid, ALG, value)
                .unwrap()
        })
        .collect();
    for (i, pending) in begun.into_iter().enumerate() {
        match pending.finish() {
            Ok(u) => assert_eq!((i, u.value.expose()), (i, &DEK[..])),
            Err(e) => assert_eq!((i, e.code.as_str()), (7, "BadParameter"), "{e}"),
        }
    }
    let added = data_plane_records(home).split_off(before);
    assert_eq!(added.len(), BEGUN, "{added:?}");
    let failed: Vec<_> = added.iter().filter(|r| r.2 == "Failed").collect();
    assert_eq!(failed.len(), 1, "{added:?}");
    assert!(
        added
            .iter()
            .all(|r| r.0 == principals[0] && r.1 == "unwrapKey")
    );
}

#[test]
fn a_revoked_role_takes_effect_at_once_in_an_instance_that_used_it() {
    let s = set_up(1);
    let (home, principals, kid, wrapped) = (&s.home, &s.principals, &s.kid, &s.wrapped);
    let worker = Instance::open(home.clone(), None).unwrap();
    let client = worker.key_vault_client();
    for _ in 0..3 {
        client
            .unwrap_key(&principals[0], kid, ALG, wrapped)
            .unwrap();
    }
    let admin = Instance::open(home.clone(), None).unwrap();
    admin
        .delete_role_assignments(
            &AssignmentSelector {
                id: Some(&s.assignments[0]),
                ..AssignmentSelector::default()
            },
            true,
        )
        .unwrap();
    let e = client
        .unwrap_key(&principals[0], kid, ALG, wrapped)
        .expect_err("the role was revoked");
    assert_eq!(e.code.as_str(), "Forbidden", "{e}");
    let e = client
        .wrap_key(&principals[0], kid, ALG, &DEK)
        .expect_err("the role was revoked");
    assert_eq!(e.code.as_str(), "Forbidden", "{e}");
    let last = data_plane_records(home).pop().unwrap();
    assert_eq!((last.1.as_str(), last.2.as_str()), ("wrapKey", "Failed"));
}

/// A key operation is recorded while it runs and its record amended when it fails:
/// an unwrap of a value the key did not wrap leaves exactly one record, `Failed`.
#[test]
fn a_key_operation_that_fails_leaves_one_failed_record() {
    let s = set_up(1);
    let (e, inst, added) = s.unwrap_a_value_the_key_did_not_wrap();
    let last = added.last().unwrap();
    assert_eq!(
        (last.1.as_str(), last.2.as_str()),
        ("unwrapKey", "Failed"),
        "{e}"
    );
    let audit = inst.key_vault_audit(KV).unwrap();
    let code = audit.last().unwrap()["errorCode"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        code,
        e.inner_code.unwrap_or_else(|| e.code.as_str().to_owned())
    );
}

/// When the record of a failed key operation cannot be amended, the operation's own
/// error is returned and the record over-states (`Succeeded`), never under-states.
#[cfg(feature = "failpoints")]
#[test]
fn a_failed_amend_returns_the_operations_error_and_keeps_the_record() {
    let s = set_up(1);
    s.fail_here("kv-audit-amend");
    let (e, _, added) = s.unwrap_a_value_the_key_did_not_wrap();
    fail::remove("kv-audit-amend");
    assert_ne!(e.code.as_str(), "CatalogError", "{e}");
    let last = added.last().unwrap();
    assert_eq!(
        (last.1.as_str(), last.2.as_str()),
        ("unwrapKey", "Succeeded")
    );
}

/// The key vault rows an instance keeps for its data-plane calls follow every change
/// another instance (another process) makes: a rotation moves the versionless key
/// to the new version, a disabled version and changed vault properties refuse the
/// next call, a deleted key is not found.
#[test]
fn key_changes_by_another_instance_take_effect_at_once_in_an_instance_that_used_the_key() {
    let s = set_up(1);
    let (home, p) = (&s.home, s.principals[0].as_str());
    let versionless = s.kid.rsplit_once('/').unwrap().0;
    let worker = Instance::open(home.clone(), None).unwrap();
    let client = worker.key_vault_client();
    let w1 = client.wrap_key(p, versionless, ALG, &DEK).unwrap();
    assert_eq!(w1.kid, s.kid);
    client.unwrap_key(p, &w1.kid, ALG, &w1.value).unwrap();
    let admin = Instance::open(home.clone(), None).unwrap();

    admin.rotate_key(KV, "k").unwrap();
    let w2 = client.wrap_key(p, versionless, ALG, &DEK).unwrap();
    assert_ne!(
        w2.kid, w1.kid,
        "the versionless key moved to the new version"
    );
    client.unwrap_key(p, &w2.kid, ALG, &w2.value).unwrap();

    let disable = KeyAttributeUpdate {
        enabled: Some(false),
        ..KeyAttributeUpdate::default()
    };
    admin.set_key_attributes(KV, "k", None, disable).unwrap();
    let e = client
        .unwrap_key(p, &w2.kid, ALG, &w2.value)
        .expect_err("the current version was disabled");
    assert_eq!(e.inner_code.as_deref(), Some("KeyDisabled"), "{e}");
    let e = client
        .wrap_key(p, versionless, ALG, &DEK)
        .expect_err("the current version was disabled");
    assert_eq!(e.inner_code.as_deref(), Some("KeyDisabled"), "{e}");
    client.unwrap_key(p, &w1.kid, ALG, &w1.value).unwrap();

    // Access policies instead of RBAC, with none for the identity.
    let policies = KeyVaultOptions {
        enable_rbac_authorization: Some(false),
        ..KeyVaultOptions::default()
    };
    admin.update_key_vault(KV, policies, true).unwrap();
    let e = client
        .unwrap_key(p, &w1.kid, ALG, &w1.value)
        .expect_err("the vault's permission model changed");
    assert_eq!(e.inner_code.as_deref(), Some("AccessDenied"), "{e}");
    let rbac = KeyVaultOptions {
        enable_rbac_authorization: Some(true),
        ..KeyVaultOptions::default()
    };
    admin.update_key_vault(KV, rbac, true).unwrap();
    client.unwrap_key(p, &w1.kid, ALG, &w1.value).unwrap();

    admin.delete_key(KV, "k").unwrap();
    let e = client
        .unwrap_key(p, &w1.kid, ALG, &w1.value)
        .expect_err("the key was deleted");
    assert_eq!(e.code.as_str(), "KeyNotFound", "{e}");
}

/// A failed audit commit fails every caller of its batch: no result (no key
/// material) is returned and no record of the batch is in the log.
#[cfg(feature = "failpoints")]
#[test]
fn a_failed_audit_commit_returns_an_error_and_no_key_material_to_every_caller() {
    const THREADS: usize = 4;
    let s = set_up(THREADS);
    let (home, principals, kid, wrapped) = (&s.home, &s.principals, &s.kid, &s.wrapped);
    let before = data_plane_records(home).len();
    // Only this test's catalog fails (other tests of this binary run meanwhile).
    s.fail_here("kv-audit-commit");
    let outcomes = s.on_every_thread(|inst, p| {
        let client = inst.key_vault_client();
        let u = client.unwrap_key(p, kid, ALG, wrapped);
        let w = client.wrap_key(p, kid, ALG, &DEK);
        (u.map(|u| u.value.expose().to_vec()), w.map(|w| w.value))
    });
    fail::remove("kv-audit-commit");
    for (u, w) in outcomes {
        let e = u.expect_err("unwrap returned key material without an audit record");
        assert_eq!(e.code.as_str(), "CatalogError", "{e}");
        assert!(e.to_string().contains("audit record"), "{e}");
        assert_eq!(
            w.expect_err("wrap without audit").code.as_str(),
            "CatalogError"
        );
    }
    assert_eq!(data_plane_records(home).len(), before);
    // The key vault works again once the commit does.
    let inst = Instance::open(home.clone(), None).unwrap();
    let u = inst
        .key_vault_client()
        .unwrap_key(&principals[1], kid, ALG, wrapped)
        .unwrap();
    assert_eq!(u.value.expose(), &DEK);
    assert_eq!(data_plane_records(home).len(), before + 1);
}

/// Begun unwraps whose batch fails to commit give no key material when finished.
#[cfg(feature = "failpoints")]
#[test]
fn begun_unwraps_whose_audit_commit_fails_give_no_key_material() {
    let s = set_up(1);
    let (home, principals, kid, wrapped) = (&s.home, &s.principals, &s.kid, &s.wrapped);
    let before = data_plane_records(home).len();
    let worker = Instance::open(home.clone(), None).unwrap();
    let client = worker.key_vault_client();
    s.fail_here("kv-audit-commit");
    let begun: Vec<_> = (0..8)
        .map(|_| {
            client
                .begin_unwrap_key(&principals[0], kid, ALG, wrapped)
                .unwrap()
        })
        .collect();
    let outcomes: Vec<_> = begun.into_iter().map(|p| p.finish()).collect();
    fail::remove("kv-audit-commit");
    for u in outcomes {
        let e = u.expect_err("a begun unwrap gave key material without an audit record");
        assert_eq!(e.code.as_str(), "CatalogError", "{e}");
    }
    assert_eq!(data_plane_records(home).len(), before);
}

/// A failed sync of the audit log (the records are written, their durability is not
/// known) fails every caller waiting for it, and every later caller of the process
/// until the process's catalogs are closed: nothing written after a failed sync can be
/// vouched for.
#[cfg(feature = "failpoints")]
#[test]
fn a_failed_audit_sync_fails_its_callers_and_every_later_caller_of_the_process() {
    const THREADS: usize = 4;
    let s = set_up(THREADS);
    let (home, principals, kid, wrapped) = (&s.home, &s.principals, &s.kid, &s.wrapped);
    s.fail_here("kv-audit-sync");
    let (instances, outcomes): (Vec<_>, Vec<_>) = s
        .on_every_thread(|inst, p| {
            let u = inst
                .key_vault_client()
                .unwrap_key(p, kid, ALG, wrapped)
                .map(|u| u.value.expose().to_vec());
            (inst, u)
        })
        .into_iter()
        .unzip();
    fail::remove("kv-audit-sync");
    for u in outcomes {
        let e = u.expect_err("unwrap returned key material before its record was durable");
        assert_eq!(e.code.as_str(), "CatalogError", "{e}");
        assert!(e.to_string().contains("audit record"), "{e}");
    }
    // The sync works again, but this process's committer no longer vouches for
    // anything: every later call fails too, also through another instance.
    for inst in &instances {
        let e = inst
            .key_vault_client()
            .unwrap_key(&principals[0], kid, ALG, wrapped)
            .expect_err("a later caller after a failed sync");
        assert_eq!(e.code.as_str(), "CatalogError", "{e}");
    }
    drop(instances);
    // With the process's catalogs closed, a new committer starts clean.
    let inst = Instance::open(home.clone(), None).unwrap();
    let u = inst
        .key_vault_client()
        .unwrap_key(&principals[1], kid, ALG, wrapped)
        .unwrap();
    assert_eq!(u.value.expose(), &DEK);
}

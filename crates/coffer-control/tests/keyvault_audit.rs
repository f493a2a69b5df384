//! Key vault data-plane audit under concurrency: records of concurrent callers in one
//! process are group-committed, each caller's result is returned only once its record
//! is committed, a failed commit fails every caller of its batch, and a revoked role
//! takes effect at once for instances that already used it.

use std::{
    path::{Path, PathBuf},
    sync::Barrier,
    thread,
};

use coffer_control::{Instance, KeyCreateOptions, KeyVaultOptions, rbac::AssignmentSelector};

const KV: &str = "auditkv";
const ROLE: &str = "Key Vault Crypto Service Encryption User";
const ALG: &str = "RSA-OAEP-256";
const DEK: [u8; 32] = [7; 32];

/// A home with an RBAC key vault, one RSA-2048 key and identities holding the
/// crypto service role on it.
struct Setup {
    dir: tempfile::TempDir,
    home: PathBuf,
    principals: Vec<String>,
    assignments: Vec<String>,
    kid: String,
    /// The DEK wrapped (by the first identity) under the key.
    wrapped: Vec<u8>,
}

fn set_up(n: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let inst = Instance::open(home.clone(), None).unwrap();
    let group = coffer_control::DEFAULT_RESOURCE_GROUP;
    let kv = inst
        .create_key_vault(
            group,
            KV,
            KeyVaultOptions {
                enable_rbac_authorization: Some(true),
                ..KeyVaultOptions::default()
            },
        )
        .unwrap();
    let scope = kv["id"].as_str().unwrap();
    let (mut principals, mut assignments) = (Vec::new(), Vec::new());
    for i in 0..n {
        let ident = inst.create_identity(group, &format!("id{i}")).unwrap();
        let p = ident["principalId"].as_str().unwrap().to_owned();
        let a = inst.create_role_assignment(ROLE, &p, scope).unwrap();
        assignments.push(a["name"].as_str().unwrap().to_owned());
        principals.push(p);
    }
    let key = inst
        .create_key(
            KV,
            "k",
            KeyCreateOptions {
                kty: "RSA".into(),
                size: Some(2048),
                ..KeyCreateOptions::default()
            },
        )
        .unwrap();
    let kid = key["key"]["kid"].as_str().unwrap().to_owned();
    let client = inst.key_vault_client();
    let wrapped = client
        .wrap_key(&principals[0], &kid, ALG, &DEK)
        .unwrap()
        .value;
    Setup {
        dir,
        home,
        principals,
        assignments,
        kid,
        wrapped,
    }
}

/// (principal, operation, result) of every data-plane record of the key vault.
fn data_plane_records(home: &Path) -> Vec<(String, String, String)> {
    let inst = Instance::open(home.to_owned(), None).unwrap();
    inst.key_vault_audit(KV)
        .unwrap()
        .iter()
        .filter(|a| matches!(a["operationName"].as_str(), Some("wrapKey" | "unwrapKey")))
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            (s("callerPrincipalId"), s("operationName"), s("result"))
        })
        .collect()
}

#[test]
fn concurrent_data_plane_calls_each_leave_exactly_their_audit_record() {
    const THREADS: usize = 6;
    const OPS: usize = 12;
    let s = set_up(THREADS);
    let (home, principals, kid, wrapped) = (&s.home, &s.principals, &s.kid, &s.wrapped);
    let barrier = Barrier::new(THREADS);
    thread::scope(|s| {
        for p in principals {
            let barrier = &barrier;
            s.spawn(move || {
                // Each thread is its own instance (catalog connection), like a server's
                // workers; they share the process's audit committer.
                let inst = Instance::open(home.clone(), None).unwrap();
                let client = inst.key_vault_client();
                barrier.wait();
                for _ in 0..OPS {
                    client.wrap_key(p, kid, ALG, &DEK).unwrap();
                    let u = client.unwrap_key(p, kid, ALG, wrapped).unwrap();
                    assert_eq!(u.value.expose(), &DEK);
                }
            });
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
    let marker = s
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    fail::cfg("kv-audit-commit", &format!("return({marker})")).unwrap();
    let barrier = Barrier::new(THREADS);
    let outcomes: Vec<_> = thread::scope(|s| {
        let handles: Vec<_> = principals
            .iter()
            .map(|p| {
                let barrier = &barrier;
                s.spawn(move || {
                    let inst = Instance::open(home.clone(), None).unwrap();
                    let client = inst.key_vault_client();
                    barrier.wait();
                    let u = client.unwrap_key(p, kid, ALG, wrapped);
                    let w = client.wrap_key(p, kid, ALG, &DEK);
                    (u.map(|u| u.value.expose().to_vec()), w.map(|w| w.value))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
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

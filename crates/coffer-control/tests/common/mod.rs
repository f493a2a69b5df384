//! The set-up shared by the key vault audit tests: a home with an RBAC key vault, one
//! RSA-2048 key and identities holding the crypto service role on it.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use coffer_control::{Instance, KeyCreateOptions, KeyVaultOptions};

pub const KV: &str = "auditkv";
pub const ROLE: &str = "Key Vault Crypto Service Encryption User";
pub const ALG: &str = "RSA-OAEP-256";
pub const DEK: [u8; 32] = [7; 32];

/// A home with an RBAC key vault, one RSA-2048 key and identities holding the
/// crypto service role on it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub principals: Vec<String>,
    pub assignments: Vec<String>,
    pub kid: String,
    /// The DEK wrapped (by the first identity) under the key.
    pub wrapped: Vec<u8>,
}

pub fn set_up(n: usize) -> Setup {
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
pub fn data_plane_records(home: &Path) -> Vec<(String, String, String)> {
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

//! Black-box tests of part 2 through the `coffer` binary: identities, RBAC and
//! access-policy permission matrices, key state refusals, soft delete with a test
//! clock, rotation policies, and interoperability with Python's `cryptography`.

mod common;

use common::{Coffer, Out, SOFTHSM, TOKEN_PIN, softhsm_token};

const DEK_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"; // bytes 0..32

/// Short spellings of the roles used here (GUIDs and names are both accepted).
const CSEU: &str = "Key Vault Crypto Service Encryption User";
const CRYPTO_USER: &str = "12338af0-0e69-4776-bea7-57ae8d297424";
const KV_READER: &str = "Key Vault Reader";

/// Runs `coffer -o json [--as-principal WHO] WORDS...`; `line` is split on spaces.
fn sh(c: &Coffer, who: Option<&str>, line: &str) -> Out {
    let mut args = vec!["-o", "json"];
    if let Some(p) = who {
        args.extend(["--as-principal", p]);
    }
    args.extend(line.split_whitespace());
    c.run(&args)
}

/// The same at a test clock `days` in the future.
fn sh_at(c: &Coffer, days: i64, line: &str) -> Out {
    let mut args = vec!["-o", "json"];
    args.extend(line.split_whitespace());
    let mut cmd = c.command(&args);
    cmd.env("COFFER_TEST_CLOCK_OFFSET_SECS", (days * 86_400).to_string());
    c.run_with(cmd, None)
}

fn admin(c: &Coffer, line: &str) -> serde_json::Value {
    sh(c, None, line).ok().clone()
}

fn identity(c: &Coffer, name: &str) -> String {
    admin(c, &format!("identity create -n {name}"))["principalId"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn assign(c: &Coffer, role: &str, who: &str, scope: &str) -> serde_json::Value {
    c.run(&[
        "-o",
        "json",
        "role",
        "assignment",
        "create",
        "--role",
        role,
        "--assignee",
        who,
        "--scope",
        scope,
    ])
    .ok()
    .clone()
}

fn wrap(c: &Coffer, who: Option<&str>, kv: &str, key: &str) -> Out {
    sh(
        c,
        who,
        &format!("keyvault key wrap --vault-name {kv} -n {key} --value {DEK_B64}"),
    )
}

fn wrapped(c: &Coffer, kv: &str, key: &str) -> String {
    wrap(c, None, kv, key).ok()["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn inner(o: &Out) -> String {
    o.err()["innererror"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn count(v: &serde_json::Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// Checks the outcomes of get / wrapKey / unwrapKey: `expect` says which succeed
/// (an unwrap must return the DEK); refusals must be `Forbidden` with inner code `deny`.
fn check_outcomes(outs: &[Out; 3], expect: [bool; 3], deny: &str) {
    for ((out, ok), op) in outs.iter().zip(expect).zip(["get", "wrapKey", "unwrapKey"]) {
        if ok {
            let v = out.ok();
            if op == "unwrapKey" {
                assert_eq!(v["value"], DEK_B64);
            }
        } else {
            assert_eq!(out.code(), "Forbidden", "{op}");
            assert_eq!(inner(out), deny, "{op}");
        }
    }
}

/// get / wrapKey / unwrapKey of `who` on `kv`/`key`: `expect` says which succeed;
/// refusals must be `Forbidden` with inner code `deny`.
fn matrix(c: &Coffer, who: &str, kv: &str, key: &str, expect: [bool; 3], w: &str, deny: &str) {
    let sel = format!("--vault-name {kv} -n {key}");
    let outs = [
        sh(c, Some(who), &format!("keyvault key show {sel}")),
        wrap(c, Some(who), kv, key),
        sh(
            c,
            Some(who),
            &format!("keyvault key unwrap {sel} --value {w}"),
        ),
    ];
    check_outcomes(&outs, expect, deny);
}

#[test]
fn rbac_permission_matrix_and_audit() {
    let c = Coffer::new();
    let vault_id = admin(&c, "keyvault create -n kv-rbac")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    admin(&c, "keyvault create -n kv-other");
    for (kv, k) in [("kv-rbac", "k1"), ("kv-rbac", "k2"), ("kv-other", "k1")] {
        admin(&c, &format!("keyvault key create --vault-name {kv} -n {k}"));
    }
    let w1 = wrapped(&c, "kv-rbac", "k1");
    let w2 = wrapped(&c, "kv-rbac", "k2");
    let app = identity(&c, "app");
    let group_scope = vault_id.split("/providers/").next().unwrap().to_owned();

    let k1_refused = || {
        matrix(
            &c,
            &app,
            "kv-rbac",
            "k1",
            [false; 3],
            &w1,
            "ForbiddenByRbac",
        )
    };
    k1_refused();
    // Grants on another key and on another vault do not reach k1.
    let a1 = assign(&c, CSEU, &app, &format!("{vault_id}/keys/k2"));
    let a2 = assign(&c, CSEU, &app, &vault_id.replace("kv-rbac", "kv-other"));
    k1_refused();
    matrix(&c, &app, "kv-rbac", "k2", [true; 3], &w2, "");
    // Key Vault Reader at the vault: get only.
    let a3 = assign(&c, KV_READER, &app, &vault_id);
    matrix(
        &c,
        &app,
        "kv-rbac",
        "k1",
        [true, false, false],
        &w1,
        "ForbiddenByRbac",
    );
    // The CMK role at the key scope: all three.
    assign(&c, CSEU, &app, &format!("{vault_id}/keys/k1"));
    matrix(&c, &app, "kv-rbac", "k1", [true; 3], &w1, "");

    // Owner (management only) gives no data access; a resource-group grant inherits.
    let app2 = identity(&c, "app2");
    assign(&c, "Owner", &app2, &group_scope);
    matrix(
        &c,
        &app2,
        "kv-rbac",
        "k1",
        [false; 3],
        &w1,
        "ForbiddenByRbac",
    );
    assign(&c, CRYPTO_USER, &app2, &group_scope);
    matrix(&c, &app2, "kv-rbac", "k1", [true; 3], &w1, "");

    // An identity without a management role cannot grant itself anything.
    let e = c.run(&[
        "-o",
        "json",
        "--as-principal",
        &app,
        "role",
        "assignment",
        "create",
        "--role",
        "Owner",
        "--assignee",
        &app,
        "--scope",
        &group_scope,
    ]);
    assert_eq!(e.code(), "AuthorizationFailed");
    for a in [&a1, &a2, &a3] {
        admin(
            &c,
            &format!(
                "role assignment delete --ids {}",
                a["name"].as_str().unwrap()
            ),
        );
    }
    matrix(
        &c,
        &app,
        "kv-rbac",
        "k2",
        [false; 3],
        &w2,
        "ForbiddenByRbac",
    );
    assert_eq!(
        count(&admin(
            &c,
            &format!("role assignment list --assignee {app}")
        )),
        1
    );

    let defs = admin(&c, "role definition list");
    for name in [
        "Owner",
        "Contributor",
        "Reader",
        "Key Vault Administrator",
        "Key Vault Crypto Officer",
        "Key Vault Crypto User",
        CSEU,
        KV_READER,
        "Managed HSM Administrator",
        "Managed HSM Crypto Officer",
        "Managed HSM Crypto User",
        "Managed HSM Crypto Service Encryption User",
        "Managed HSM Crypto Auditor",
    ] {
        assert!(
            defs.as_array()
                .unwrap()
                .iter()
                .any(|d| d["roleName"] == name),
            "{name}"
        );
    }
    let cseu = defs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["roleName"] == CSEU)
        .unwrap();
    assert_eq!(cseu["name"], "e147488a-f6f5-4113-8e2d-b22465e65bf6");

    // Audit: refused and allowed calls, with principal, operation and version.
    let audit = admin(&c, "keyvault audit list -n kv-rbac");
    let rows = audit.as_array().unwrap();
    let has = |result: &str, code: serde_json::Value| {
        rows.iter().any(|r| {
            r["callerPrincipalId"] == app.as_str()
                && r["operationName"] == "unwrapKey"
                && r["result"] == result
                && r["errorCode"] == code
                && r["keyName"] == "k1"
        })
    };
    assert!(has("Failed", "ForbiddenByRbac".into()));
    assert!(has("Succeeded", serde_json::Value::Null));
    assert!(rows.iter().all(|r| r["time"].is_string()));
}

#[test]
fn access_policy_matrix_and_key_state_refusals() {
    let c = Coffer::new();
    let kv = admin(
        &c,
        "keyvault create -n kv-ap --enable-rbac-authorization false",
    );
    assert_eq!(kv["properties"]["enableRbacAuthorization"], false);
    admin(
        &c,
        "keyvault create -n kv-ap2 --enable-rbac-authorization false",
    );
    admin(&c, "keyvault key create --vault-name kv-ap -n k1");
    let w = wrapped(&c, "kv-ap", "k1");
    let app = identity(&c, "app");
    matrix(&c, &app, "kv-ap", "k1", [false; 3], &w, "AccessDenied");
    // A policy on another vault does not help; RBAC roles are ignored in this mode.
    admin(
        &c,
        &format!("keyvault set-policy -n kv-ap2 --object-id {app} --key-permissions all"),
    );
    assign(&c, CRYPTO_USER, &app, kv["id"].as_str().unwrap());
    matrix(&c, &app, "kv-ap", "k1", [false; 3], &w, "AccessDenied");
    let steps = [
        ("get", [true, false, false]),
        ("wrapKey", [true, true, false]),
        ("unwrapKey", [true; 3]),
    ];
    for (perm, expect) in steps {
        admin(
            &c,
            &format!("keyvault set-policy -n kv-ap --object-id {app} --key-permissions {perm}"),
        );
        matrix(&c, &app, "kv-ap", "k1", expect, &w, "AccessDenied");
    }
    admin(
        &c,
        &format!("keyvault delete-policy -n kv-ap --object-id {app}"),
    );
    matrix(&c, &app, "kv-ap", "k1", [false; 3], &w, "AccessDenied");

    // Disabled, expired, not yet valid, key_ops, RSA1_5, unknown key, HSM without a token.
    let set = |attrs: &str| {
        admin(
            &c,
            &format!("keyvault key set-attributes --vault-name kv-ap -n k1 {attrs}"),
        )
    };
    for (attrs, code) in [
        ("--enabled false", "KeyDisabled"),
        ("--enabled true --expires 1000", "KeyExpired"),
        ("--expires 0 --not-before 99999999999", "KeyNotYetValid"),
        ("--not-before 0 --ops sign verify", "OperationNotAllowed"),
    ] {
        set(attrs);
        assert_eq!(inner(&wrap(&c, None, "kv-ap", "k1")), code, "{attrs}");
    }
    set("--ops wrapKey unwrapKey");
    wrap(&c, None, "kv-ap", "k1").ok();
    let sel = "--vault-name kv-ap -n k1";
    assert_eq!(
        sh(
            &c,
            None,
            &format!("keyvault key wrap {sel} -a RSA1_5 --value {DEK_B64}")
        )
        .code(),
        "BadParameter"
    );
    assert_eq!(
        sh(&c, None, "keyvault key show --vault-name kv-ap -n nope").code(),
        "KeyNotFound"
    );
    let e = sh(
        &c,
        None,
        "keyvault key create --vault-name kv-ap -n h --kty RSA-HSM",
    );
    assert!(e.err()["message"].as_str().unwrap().contains("PKCS#11"));
    // A managed HSM needs its token: module, label and PIN file.
    let e = sh(&c, None, "keyvault create --hsm-name hsm1").err();
    assert_eq!(e["code"], "InvalidArgument");
    assert!(e["message"].as_str().unwrap().contains("--pkcs11-module"));

    // EC keys sign and verify digests.
    admin(
        &c,
        "keyvault key create --vault-name kv-ap -n ec --kty EC --curve P-384",
    );
    let digest = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v"; // 48 bytes
    let sel = "--vault-name kv-ap -n ec -a ES384";
    let sig = admin(&c, &format!("keyvault key sign {sel} --value {digest}"))["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let ok = admin(
        &c,
        &format!("keyvault key verify {sel} --value {digest} --signature {sig}"),
    );
    assert_eq!(ok["value"], true);
}

#[test]
fn soft_delete_recover_reuse_purge_and_scheduled_purge() {
    let c = Coffer::new();
    admin(&c, "keyvault create -n kv-sd --retention-days 7");
    admin(
        &c,
        "keyvault create -n kv-pp --retention-days 7 --enable-purge-protection true",
    );
    let shown = admin(&c, "keyvault key create --vault-name kv-sd -n k");
    admin(&c, "keyvault key create --vault-name kv-pp -n k");
    assert_eq!(shown["attributes"]["recoverableDays"], 7);
    assert_eq!(
        shown["attributes"]["recoveryLevel"],
        "CustomizedRecoverable+Purgeable"
    );
    let kid = shown["key"]["kid"].as_str().unwrap();
    assert!(
        kid.starts_with("https://kv-sd.vault.coffer.local/keys/k/"),
        "{kid}"
    );
    assert_eq!(kid.rsplit('/').next().unwrap().len(), 32);
    // Irreversible settings, retention bounds.
    for line in [
        "keyvault update -n kv-pp --enable-purge-protection false",
        "keyvault update -n kv-sd --enable-soft-delete false",
        "keyvault create -n kv-bad --retention-days 6",
    ] {
        assert_eq!(sh(&c, None, line).code(), "BadParameter", "{line}");
    }

    let sd = "--vault-name kv-sd -n k";
    let del = admin(&c, &format!("keyvault key delete {sd}"));
    assert!(
        del["recoveryId"]
            .as_str()
            .unwrap()
            .ends_with("/deletedkeys/k")
    );
    assert_eq!(
        sh(&c, None, &format!("keyvault key show {sd}")).code(),
        "KeyNotFound"
    );
    let e = sh(&c, None, &format!("keyvault key create {sd}"));
    assert_eq!(
        (e.code(), inner(&e)),
        ("Conflict".into(), "ObjectIsDeletedButRecoverable".into())
    );
    assert_eq!(
        count(&admin(&c, "keyvault key list-deleted --vault-name kv-sd")),
        1
    );
    admin(&c, &format!("keyvault key recover {sd}"));
    wrap(&c, None, "kv-sd", "k").ok();
    // Purge works without purge protection, and destroys the key for good...
    admin(&c, &format!("keyvault key delete {sd}"));
    admin(&c, &format!("keyvault key purge {sd}"));
    assert_eq!(
        sh(&c, None, &format!("keyvault key recover {sd}")).code(),
        "KeyNotFound"
    );
    admin(&c, &format!("keyvault key create {sd}"));
    // ...and is refused under it.
    let pp = "--vault-name kv-pp -n k";
    admin(&c, &format!("keyvault key delete {pp}"));
    let e = sh(&c, None, &format!("keyvault key purge {pp}"));
    assert_eq!(e.code(), "Forbidden");
    assert!(
        e.err()["message"]
            .as_str()
            .unwrap()
            .contains("purge protection")
    );
    // Six days on it is still there; eight days on the background work purged it.
    sh_at(&c, 6, "keyvault show -n kv-pp").ok();
    assert_eq!(
        count(&admin(&c, "keyvault key list-deleted --vault-name kv-pp")),
        1
    );
    sh_at(&c, 8, "keyvault show -n kv-pp").ok();
    assert_eq!(
        count(&admin(&c, "keyvault key list-deleted --vault-name kv-pp")),
        0
    );
    assert_eq!(
        sh(&c, None, &format!("keyvault key recover {pp}")).code(),
        "KeyNotFound"
    );
    admin(&c, &format!("keyvault key create {pp}"));

    // Vaults: soft delete keeps the name, recover, purge refusal, scheduled purge.
    admin(&c, "keyvault delete -n kv-sd");
    assert_eq!(
        sh(&c, None, "keyvault show -n kv-sd").code(),
        "KeyVaultNotFound"
    );
    assert_eq!(sh(&c, None, "keyvault create -n kv-sd").code(), "Conflict");
    admin(&c, "keyvault recover -n kv-sd");
    wrap(&c, None, "kv-sd", "k").ok();
    admin(&c, "keyvault delete -n kv-pp");
    assert_eq!(sh(&c, None, "keyvault purge -n kv-pp").code(), "Forbidden");
    assert_eq!(count(&admin(&c, "keyvault list-deleted")), 1);
    sh_at(&c, 8, "keyvault list").ok();
    assert_eq!(count(&admin(&c, "keyvault list-deleted")), 0);
    admin(&c, "keyvault create -n kv-pp");
}

#[test]
fn rotation_policy_makes_versions_and_old_versions_still_unwrap() {
    let c = Coffer::new();
    admin(&c, "keyvault create -n kv-rot");
    let sel = "--vault-name kv-rot -n cmk";
    let v1 = admin(&c, &format!("keyvault key create {sel}"))["key"]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let w1 = wrap(&c, None, "kv-rot", "cmk").ok().clone();
    assert_eq!(w1["kid"], v1.as_str());
    let policy = |json: &str| set_rotation_policy(&c, "kv-rot", "cmk", json);
    assert_eq!(
        policy(r#"{"lifetimeActions":[],"attributes":{"expiryTime":"P27D"}}"#).code(),
        "BadParameter"
    );
    let p = policy(
        r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P30D"},"action":{"type":"Rotate"}},
            {"trigger":{"timeBeforeExpiry":"P10D"},"action":{"type":"notify"}}],
            "attributes":{"expiryTime":"P90D"}}"#,
    );
    assert!(
        p.ok()["id"]
            .as_str()
            .unwrap()
            .ends_with("/keys/cmk/rotationpolicy")
    );
    assert_eq!(
        admin(&c, &format!("keyvault key rotation-policy show {sel}"))["lifetimeActions"][1]["action"]
            ["type"],
        "Notify"
    );
    // Rotate now: a new version whose exp comes from the policy.
    let v2 = admin(&c, &format!("keyvault key rotate {sel}"));
    assert!(v2["attributes"]["exp"].is_i64());
    // Thirty-one days on, the background work rotated by itself.
    sh_at(&c, 31, "keyvault list").ok();
    assert_eq!(
        count(&admin(&c, &format!("keyvault key list-versions {sel}"))),
        3
    );
    let cur = admin(&c, &format!("keyvault key show {sel}"))["key"]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(cur != v1 && cur != v2["key"]["kid"].as_str().unwrap());
    // The old version still unwraps what it wrapped; the current one cannot.
    let ver1 = v1.rsplit('/').next().unwrap();
    let w = w1["value"].as_str().unwrap();
    let u = admin(
        &c,
        &format!("keyvault key unwrap {sel} --version {ver1} --value {w}"),
    );
    assert_eq!(u["value"], DEK_B64);
    assert_eq!(
        sh(&c, None, &format!("keyvault key unwrap {sel} --value {w}")).code(),
        "BadParameter"
    );
    let audit = admin(&c, "keyvault audit list -n kv-rot");
    assert!(
        audit.as_array().unwrap().iter().any(
            |r| r["callerPrincipalId"] == "KeyRotationPolicy" && r["operationName"] == "rotate"
        )
    );
}

/// `keyvault key rotation-policy update` of key `key` in vault `kv` with a JSON document.
fn set_rotation_policy(c: &Coffer, kv: &str, key: &str, json: &str) -> Out {
    c.run(&[
        "-o",
        "json",
        "keyvault",
        "key",
        "rotation-policy",
        "update",
        "--vault-name",
        kv,
        "-n",
        key,
        "--value",
        json,
    ])
}

/// The `KeyNearExpiry` events published so far: (key id, version, time ms), oldest first.
fn near_expiry_events(c: &Coffer) -> Vec<(String, String, i64)> {
    let db = rusqlite::Connection::open(c.home.join("catalog.db")).unwrap();
    let mut q = db
        .prepare(
            "SELECT key_id, version, time_ms FROM key_events \
             WHERE event_type = 'KeyNearExpiry' ORDER BY seq",
        )
        .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn notify_action_publishes_key_near_expiry_once_per_version() {
    let c = Coffer::new();
    admin(&c, "keyvault create -n kv-ne");
    let sel = "--vault-name kv-ne -n k";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = now + 90 * 86_400;
    let v1 = admin(&c, &format!("keyvault key create {sel} --expires {exp}"))["key"]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    // Notify 30 days before expiry; new versions expire 90 days after they are made.
    let policy = r#"{"lifetimeActions":[{"trigger":{"timeBeforeExpiry":"P30D"},"action":{"type":"Notify"}}],"attributes":{"expiryTime":"P90D"}}"#;
    set_rotation_policy(&c, "kv-ne", "k", policy).ok();
    // Day 59: 31 days to go, nothing yet (the background work runs before every command).
    sh_at(&c, 59, "keyvault list").ok();
    assert_eq!(near_expiry_events(&c), []);
    // Day 61: inside the 30 days: one event for the current version, at key vault time.
    sh_at(&c, 61, "keyvault list").ok();
    let events = near_expiry_events(&c);
    assert_eq!(events.len(), 1, "{events:?}");
    let ver1 = v1.rsplit('/').next().unwrap();
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        (v1.as_str(), ver1)
    );
    let day61_ms = (now as i64 + 61 * 86_400) * 1000;
    assert!((events[0].2 - day61_ms).abs() < 600_000, "{events:?}");
    // Once per version: later runs do not repeat it.
    sh_at(&c, 62, "keyvault list").ok();
    assert_eq!(near_expiry_events(&c).len(), 1);
    // Notify does not rotate: the version is unchanged and, past exp, unusable.
    assert_eq!(
        admin(&c, &format!("keyvault key show {sel}"))["key"]["kid"],
        v1.as_str()
    );
    assert_eq!(
        inner(&sh_at(
            &c,
            91,
            &format!("keyvault key wrap {sel} --value {DEK_B64}")
        )),
        "KeyExpired"
    );
    // A new version (rotated on day 62: exp day 152) is notified again from day 122 on.
    let v2 = sh_at(&c, 62, &format!("keyvault key rotate {sel}")).ok()["key"]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    sh_at(&c, 121, "keyvault list").ok();
    assert_eq!(near_expiry_events(&c).len(), 1);
    sh_at(&c, 123, "keyvault list").ok();
    let events = near_expiry_events(&c);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].0, v2);
    sh_at(&c, 124, "keyvault list").ok();
    assert_eq!(near_expiry_events(&c).len(), 2);
}

const PY: &str = r#"
import sys, base64
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa, padding, ec, utils
def b64(b): return base64.urlsafe_b64encode(b).decode().rstrip("=")
def unb64(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
def oaep(alg):
    h = hashes.SHA256() if alg == "RSA-OAEP-256" else hashes.SHA1()
    return padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)
cmd, path = sys.argv[1], sys.argv[2]
data = open(path, "rb").read() if cmd != "gen" else None
if cmd == "gen":
    k = rsa.generate_private_key(public_exponent=65537, key_size=int(sys.argv[3]))
    open(path, "wb").write(k.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
elif cmd == "wrap":
    k = serialization.load_pem_private_key(data, None).public_key()
    print(b64(k.encrypt(unb64(sys.argv[4]), oaep(sys.argv[3]))))
elif cmd == "wrap-pub":
    print(b64(serialization.load_pem_public_key(data).encrypt(unb64(sys.argv[4]), oaep(sys.argv[3]))))
elif cmd == "ecverify":
    # PEM public key, algorithm, digest and raw r||s signature (base64url): exit 0 iff valid.
    k = serialization.load_pem_public_key(data)
    h = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}[sys.argv[3]]
    sig = unb64(sys.argv[5])
    n = len(sig) // 2
    der = utils.encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))
    k.verify(der, unb64(sys.argv[4]), ec.ECDSA(utils.Prehashed(h)))
    print(k.curve.name)
elif cmd == "rsaverify":
    # PEM public key, RS*/PS* algorithm, digest and signature (base64url): exit 0 iff valid
    # (PSS: MGF1 with the same hash, salt the digest's length).
    k = serialization.load_pem_public_key(data)
    alg = sys.argv[3]
    h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
    pad = padding.PKCS1v15() if alg.startswith("RS") else padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
    k.verify(unb64(sys.argv[5]), unb64(sys.argv[4]), pad, utils.Prehashed(h))
    print("valid")
elif cmd == "unwrap":
    k = serialization.load_pem_private_key(data, None)
    print(b64(k.decrypt(unb64(sys.argv[4]), oaep(sys.argv[3]))))
"#;

fn python(args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(PY)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn interoperability_with_python_cryptography() {
    let has = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .status();
    if !has.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs python3 `cryptography` (.ci/run installs it)"
        );
        eprintln!("skipping: python3 with `cryptography` is not installed");
        return;
    }
    let c = Coffer::new();
    admin(&c, "keyvault create -n kv-py");
    let pem = c.path("py.pem");
    let pem_s = pem.to_str().unwrap();
    python(&["gen", pem_s, "3072"]);
    let imported = admin(
        &c,
        &format!("keyvault key import --vault-name kv-py -n pykey --pem-file {pem_s}"),
    );
    assert_eq!(imported["key"]["kty"], "RSA");
    assert!(imported["key"].get("d").is_none() && imported["key"].get("p").is_none());
    let sel = "--vault-name kv-py -n pykey";
    for alg in ["RSA-OAEP-256", "RSA-OAEP"] {
        // Python wraps with the public key; Coffer unwraps.
        let w = python(&["wrap", pem_s, alg, DEK_B64]);
        let u = admin(
            &c,
            &format!("keyvault key unwrap {sel} -a {alg} --value {w}"),
        );
        assert_eq!(u["value"], DEK_B64, "{alg}");
        // Coffer wraps; Python unwraps with the private key.
        let w = admin(
            &c,
            &format!("keyvault key wrap {sel} -a {alg} --value {DEK_B64}"),
        );
        assert_eq!(
            python(&["unwrap", pem_s, alg, w["value"].as_str().unwrap()]),
            DEK_B64,
            "{alg}"
        );
    }
    // The public key `download` writes wraps DEKs Coffer unwraps.
    admin(
        &c,
        "keyvault key create --vault-name kv-py -n gen --size 2048",
    );
    let pubf = c.path("pub.pem");
    admin(
        &c,
        &format!(
            "keyvault key download --vault-name kv-py -n gen -f {}",
            pubf.display()
        ),
    );
    let w = python(&["wrap-pub", pubf.to_str().unwrap(), "RSA-OAEP-256", DEK_B64]);
    let u = admin(
        &c,
        &format!("keyvault key unwrap --vault-name kv-py -n gen --value {w}"),
    );
    assert_eq!(u["value"], DEK_B64);
    // The imported private key is not in the catalog in the clear.
    let body: String = std::fs::read_to_string(&pem)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let needle = &body.as_bytes()[40..80];
    for f in ["catalog.db", "catalog.db-wal"] {
        let bytes = std::fs::read(c.home.join(f)).unwrap_or_default();
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{f}");
    }
}

#[test]
fn identities_lifecycle() {
    let c = Coffer::new();
    let id = admin(&c, "identity create -n backup-id");
    let arm = id["id"].as_str().unwrap();
    assert!(arm.ends_with("/resourceGroups/default/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup-id"));
    assert_eq!(id["principalId"].as_str().unwrap().len(), 36);
    assert_eq!(id["clientId"].as_str().unwrap().len(), 36);
    assert_eq!(
        sh(&c, None, "identity create -n backup-id").code(),
        "ResourceAlreadyExists"
    );
    assert_eq!(count(&admin(&c, "identity list")), 1);
    let nobody = "00000000-0000-0000-0000-000000000000";
    assert_eq!(
        sh(&c, Some(nobody), "identity list").code(),
        "IdentityNotFound"
    );
    let pid = id["principalId"].as_str().unwrap();
    assert_eq!(
        sh(&c, Some(pid), "identity list").code(),
        "AuthorizationFailed"
    );
    admin(&c, "identity delete -n backup-id");
    assert_eq!(
        sh(&c, None, "identity show -n backup-id").code(),
        "IdentityNotFound"
    );
}

/// A SoftHSM2 token in the test's directory; `None` (test skipped) without SoftHSM2.
#[test]
fn managed_hsm_local_rbac_and_token_keys() {
    let c = Coffer::new();
    let Some((conf, pin)) = softhsm_token(&c) else {
        return;
    };
    let run = |who: Option<&str>, args: &[&str]| {
        let mut all = vec!["-o", "json"];
        if let Some(p) = who {
            all.extend(["--as-principal", p]);
        }
        all.extend(args);
        let mut cmd = c.command(&all);
        cmd.env("SOFTHSM2_CONF", &conf);
        c.run_with(cmd, None)
    };
    let line = |who: Option<&str>, l: &str| run(who, &l.split_whitespace().collect::<Vec<_>>());
    let pin_s = pin.to_str().unwrap();
    for h in ["hsm-a", "hsm-b"] {
        let created = run(
            None,
            &[
                "keyvault",
                "create",
                "--hsm-name",
                h,
                "--pkcs11-module",
                SOFTHSM,
                "--token-label",
                "coffer-test",
                "--pin-file",
                pin_s,
            ],
        );
        let v = created.ok();
        assert_eq!(v["type"], "Microsoft.KeyVault/managedHSMs");
        assert_eq!(
            v["properties"]["pkcs11"]["oaepSha256Supported"], false,
            "SoftHSM2 2.6.1 lacks OAEP-SHA256"
        );
        let text = String::from_utf8_lossy(&created.stdout).to_string();
        assert!(!text.contains(TOKEN_PIN), "the PIN never appears");
    }
    for (h, k) in [("hsm-a", "k1"), ("hsm-a", "k2"), ("hsm-b", "k1")] {
        let b = line(
            None,
            &format!("keyvault key create --hsm-name {h} -n {k} --kty RSA-HSM"),
        )
        .ok()
        .clone();
        assert_eq!(b["key"]["kty"], "RSA-HSM");
        assert!(
            b["key"]["kid"]
                .as_str()
                .unwrap()
                .starts_with(&format!("https://{h}.managedhsm.coffer.local/keys/{k}/"))
        );
    }
    // Wrap asked for RSA-OAEP-256 falls back to RSA-OAEP on this token, and says so.
    let w = line(
        None,
        &format!("keyvault key wrap --hsm-name hsm-a -n k1 --value {DEK_B64}"),
    )
    .ok()
    .clone();
    assert_eq!(w["alg"], "RSA-OAEP");
    let w1 = w["value"].as_str().unwrap().to_owned();
    let app = identity(&c, "app");
    let matrix_hsm = |expect: [bool; 3]| {
        let outs = [
            line(Some(&app), "keyvault key show --hsm-name hsm-a -n k1"),
            line(
                Some(&app),
                &format!("keyvault key wrap --hsm-name hsm-a -n k1 --value {DEK_B64}"),
            ),
            run(
                Some(&app),
                &[
                    "keyvault",
                    "key",
                    "unwrap",
                    "--hsm-name",
                    "hsm-a",
                    "-n",
                    "k1",
                    "-a",
                    "RSA-OAEP",
                    "--value",
                    &w1,
                ],
            ),
        ];
        check_outcomes(&outs, expect, "ForbiddenByRbac");
    };
    let role = "Managed HSM Crypto Service Encryption User";
    let local = |who: Option<&str>, h: &str, role: &str, assignee: &str, scope: &str| {
        let args = [
            "keyvault",
            "role",
            "assignment",
            "create",
            "--hsm-name",
            h,
            "--role",
            role,
            "--assignee",
            assignee,
            "--scope",
            scope,
        ];
        run(who, &args)
    };
    let assign_local = |h: &str, scope: &str| local(None, h, role, &app, scope).ok().clone();
    matrix_hsm([false; 3]);
    // Grants on another key or another HSM do not reach hsm-a/k1.
    assign_local("hsm-a", "/keys/k2");
    assign_local("hsm-b", "/");
    matrix_hsm([false; 3]);
    // An identity cannot grant itself a local role.
    let e = local(Some(&app), "hsm-a", role, &app, "/");
    assert_eq!(e.code(), "Forbidden");
    // Key-scope grant: all three.
    let a = assign_local("hsm-a", "/keys/k1");
    matrix_hsm([true; 3]);
    run(
        None,
        &[
            "keyvault",
            "role",
            "assignment",
            "delete",
            "--hsm-name",
            "hsm-a",
            "--ids",
            a["name"].as_str().unwrap(),
        ],
    )
    .ok();
    matrix_hsm([false; 3]);
    let auditor = local(None, "hsm-a", "Managed HSM Crypto Auditor", &app, "/");
    auditor.ok();
    matrix_hsm([true, false, false]);
    assign_local("hsm-a", "/");
    matrix_hsm([true; 3]);

    // A DEK wrapped (RSA-OAEP) with the public key `download` writes unwraps inside the token.
    if std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success())
    {
        let pubf = c.path("hsm-pub.pem");
        line(
            None,
            &format!(
                "keyvault key download --hsm-name hsm-a -n k2 -f {}",
                pubf.display()
            ),
        )
        .ok();
        let w = python(&["wrap-pub", pubf.to_str().unwrap(), "RSA-OAEP", DEK_B64]);
        let unwrap = format!("keyvault key unwrap --hsm-name hsm-a -n k2 -a RSA-OAEP --value {w}");
        let u = line(None, &unwrap).ok().clone();
        assert_eq!(u["value"], DEK_B64);
    }
    // Rotation makes a new token key; the old version still unwraps; purge destroys it.
    line(None, "keyvault key rotate --hsm-name hsm-a -n k1").ok();
    let ver1 = w["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let unwrap = format!(
        "keyvault key unwrap --hsm-name hsm-a -n k1 --version {ver1} -a RSA-OAEP --value {w1}"
    );
    let u = line(None, &unwrap).ok().clone();
    assert_eq!(u["value"], DEK_B64);
    line(None, "keyvault key delete --hsm-name hsm-a -n k1").ok();
    // Purging needs Managed HSM Crypto Officer, which the creator lacks until assigned.
    let e = line(None, "keyvault key purge --hsm-name hsm-a -n k1");
    assert_eq!(inner(&e), "ForbiddenByRbac");
    let mine = line(
        None,
        "keyvault role assignment list --hsm-name hsm-a --scope /",
    )
    .ok()
    .clone();
    let admin_id = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["roleDefinitionName"] == "Managed HSM Administrator")
        .unwrap()["principalId"]
        .as_str()
        .unwrap()
        .to_owned();
    local(None, "hsm-a", "Managed HSM Crypto Officer", &admin_id, "/").ok();
    line(None, "keyvault key purge --hsm-name hsm-a -n k1").ok();
    assert_eq!(
        line(None, "keyvault key recover --hsm-name hsm-a -n k1").code(),
        "KeyNotFound"
    );
    let audit = line(None, "keyvault audit list -n hsm-a").ok().clone();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["callerPrincipalId"] == app.as_str()
                && r["operationName"] == "unwrapKey"
                && r["result"] == "Succeeded")
    );
}

/// Runs `coffer -o json WORDS...` with the test token's SoftHSM2 configuration.
fn hsm_sh(c: &Coffer, conf: &std::path::Path, line: &str) -> Out {
    let mut args = vec!["-o", "json"];
    args.extend(line.split_whitespace());
    let mut cmd = c.command(&args);
    cmd.env("SOFTHSM2_CONF", conf);
    c.run_with(cmd, None)
}

#[test]
fn managed_hsm_ec_keys_sign_in_the_token() {
    let c = Coffer::new();
    let Some((conf, pin)) = softhsm_token(&c) else {
        return;
    };
    let hsm = |l: &str| hsm_sh(&c, &conf, l);
    hsm(&format!(
        "keyvault create --hsm-name hsm-ec --pkcs11-module {SOFTHSM} --token-label coffer-test --pin-file {}",
        pin.display()
    ))
    .ok();
    let has_python = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    for (crv, alg, n, py_curve) in [
        ("P-256", "ES256", 32usize, "secp256r1"),
        ("P-384", "ES384", 48, "secp384r1"),
        ("P-521", "ES512", 66, "secp521r1"),
    ] {
        let name = format!("ec{n}");
        let b = hsm(&format!(
            "keyvault key create --hsm-name hsm-ec -n {name} --kty EC-HSM --curve {crv}"
        ))
        .ok()
        .clone();
        // The JWK shape: crv, x, y (each coordinate n bytes), no RSA or private part.
        let key = &b["key"];
        assert_eq!(
            (key["kty"].as_str(), key["crv"].as_str()),
            (Some("EC-HSM"), Some(crv))
        );
        for coord in ["x", "y"] {
            let len = key[coord].as_str().unwrap().len();
            assert_eq!(len, (n * 4).div_ceil(3), "{coord} of {crv}");
        }
        assert!(key["n"].is_null() && key["d"].is_null());
        assert_eq!(key["key_ops"], serde_json::json!(["sign", "verify"]));
        // Sign through the token; raw r||s; Coffer verifies it, and not another digest.
        let digest_len = match alg {
            "ES256" => 32,
            "ES384" => 48,
            _ => 64,
        };
        let digest = b64(&(0..digest_len).map(|i| i as u8 ^ 0x5a).collect::<Vec<_>>());
        let other = b64(&vec![1u8; digest_len]);
        let sel = format!("--hsm-name hsm-ec -n {name} -a {alg}");
        let signed = hsm(&format!("keyvault key sign {sel} --value {digest}"))
            .ok()
            .clone();
        let sig = signed["value"].as_str().unwrap().to_owned();
        assert_eq!(sig.len(), (2 * n * 4).div_ceil(3), "raw r||s of {crv}");
        assert_eq!(signed["kid"], key["kid"]);
        let verify = |d: &str| {
            hsm(&format!(
                "keyvault key verify {sel} --value {d} --signature {sig}"
            ))
            .ok()["value"]
                .clone()
        };
        assert_eq!(verify(&digest), true);
        assert_eq!(verify(&other), false);
        // The downloaded PEM verifies the token's signature in Python `cryptography`.
        let pem = c.path(&format!("{name}.pem"));
        hsm(&format!(
            "keyvault key download --hsm-name hsm-ec -n {name} -f {}",
            pem.display()
        ))
        .ok();
        let text = std::fs::read_to_string(&pem).unwrap();
        assert!(text.starts_with("-----BEGIN PUBLIC KEY-----"), "{text}");
        if has_python {
            let curve = python(&["ecverify", pem.to_str().unwrap(), alg, &digest, &sig]);
            assert_eq!(curve, py_curve);
        }
    }
    // The wrong algorithm or digest length for the curve is a bad parameter.
    for l in [
        "keyvault key sign --hsm-name hsm-ec -n ec32 -a ES384 --value AAAA",
        "keyvault key sign --hsm-name hsm-ec -n ec32 -a ES256 --value AAAA",
    ] {
        assert_eq!(hsm(l).code(), "BadParameter", "{l}");
    }
    // wrapKey on an EC key: not in its key_ops (Forbidden / OperationNotAllowed); with
    // wrapKey in key_ops, still refused: it needs an RSA key (BadParameter).
    let wrap = |k: &str| {
        hsm(&format!(
            "keyvault key wrap --hsm-name hsm-ec -n {k} --value {DEK_B64}"
        ))
    };
    assert_eq!(inner(&wrap("ec32")), "OperationNotAllowed");
    hsm("keyvault key create --hsm-name hsm-ec -n ecw --kty EC-HSM --ops sign verify wrapKey").ok();
    let e = wrap("ecw").err();
    assert_eq!(e["code"], "BadParameter");
    assert!(
        e["message"].as_str().unwrap().contains("needs an RSA key"),
        "{e}"
    );
    // Rotation keeps the curve in the token; the old version still verifies its signature.
    let old = hsm("keyvault key show --hsm-name hsm-ec -n ec48").ok()["key"]["kid"].clone();
    let digest = b64(&[7u8; 48]);
    let sig = hsm(&format!(
        "keyvault key sign --hsm-name hsm-ec -n ec48 -a ES384 --value {digest}"
    ))
    .ok()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let new = hsm("keyvault key rotate --hsm-name hsm-ec -n ec48").ok()["key"].clone();
    assert_eq!(
        (new["kty"].as_str(), new["crv"].as_str()),
        (Some("EC-HSM"), Some("P-384"))
    );
    assert_ne!(new["kid"], old);
    let ver = old.as_str().unwrap().rsplit('/').next().unwrap();
    let verify = |v: &str| {
        hsm(&format!(
            "keyvault key verify --hsm-name hsm-ec -n ec48 {v} -a ES384 --value {digest} --signature {sig}"
        ))
        .ok()["value"]
            .clone()
    };
    assert_eq!(verify(&format!("--version {ver}")), true);
    assert_eq!(verify(""), false);
    // A key vault has no token: EC-HSM is refused there, never emulated.
    admin(&c, "keyvault create -n kv-noh");
    let e = sh(
        &c,
        None,
        "keyvault key create --vault-name kv-noh -n e --kty EC-HSM",
    )
    .err();
    assert_eq!(e["code"], "BadParameter");
    assert!(e["message"].as_str().unwrap().contains("PKCS#11"), "{e}");
}

/// base64url without padding.
fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// `networkAcls` are enforced on the data plane: with `defaultAction Deny`, calls from
/// this machine pass only through an IP rule that covers 127.0.0.1, and are refused
/// with `Forbidden`/`ForbiddenByFirewall` otherwise; the control plane (show, update)
/// is not behind the firewall.
#[test]
fn key_vault_firewall_denies_data_plane_calls_without_a_matching_ip_rule() {
    let c = Coffer::new();
    admin(&c, "keyvault create -n kv-fw --default-action Deny");
    let create = sh(&c, None, "keyvault key create --vault-name kv-fw -n k");
    assert_eq!(create.code(), "Forbidden");
    assert_eq!(inner(&create), "ForbiddenByFirewall");
    admin(&c, "keyvault update -n kv-fw --ip-rules 10.0.0.0/8");
    assert_eq!(
        inner(&sh(&c, None, "keyvault key create --vault-name kv-fw -n k")),
        "ForbiddenByFirewall"
    );
    admin(
        &c,
        "keyvault update -n kv-fw --ip-rules 10.0.0.0/8 127.0.0.0/24",
    );
    admin(&c, "keyvault key create --vault-name kv-fw -n k");
    wrapped(&c, "kv-fw", "k");
    admin(&c, "keyvault update -n kv-fw --ip-rules 10.0.0.0/8");
    let w = wrap(&c, None, "kv-fw", "k");
    assert_eq!(inner(&w), "ForbiddenByFirewall");
    let shown = admin(&c, "keyvault show -n kv-fw");
    assert_eq!(shown["properties"]["networkAcls"]["defaultAction"], "Deny");
    admin(&c, "keyvault update -n kv-fw --default-action Allow");
    wrapped(&c, "kv-fw", "k");
}

/// Runs `coffer -o table WORDS...`; returns stdout's lines split into cells.
fn table(c: &Coffer, line: &str) -> Vec<Vec<String>> {
    let mut args = vec!["-o", "table"];
    args.extend(line.split_whitespace());
    let out = c.run(&args);
    assert!(out.status.success(), "{line}: {}", out.stderr);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "not JSON: {text}"
    );
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn table_output_of_key_vaults_keys_identities_and_roles() {
    let c = Coffer::new();
    admin(&c, "keyvault create -n kv-t1 --retention-days 7");
    admin(
        &c,
        "keyvault create -n kv-t2 --enable-rbac-authorization false",
    );
    let t = table(&c, "keyvault list");
    assert_eq!(
        t[0],
        [
            "Name",
            "ResourceGroup",
            "Location",
            "Type",
            "VaultUri",
            "RbacAuthorization",
            "SoftDeleteDays",
            "PurgeProtection"
        ]
    );
    assert!(t[1].iter().all(|c| c.chars().all(|ch| ch == '-')), "{t:?}");
    assert_eq!(t.len(), 4, "{t:?}");
    let row = t.iter().find(|r| r[0] == "kv-t1").unwrap();
    assert_eq!(
        row[1..],
        [
            "default",
            "local",
            "vaults",
            "https://kv-t1.vault.coffer.local",
            "true",
            "7",
            "false"
        ]
    );
    let row = t.iter().find(|r| r[0] == "kv-t2").unwrap();
    assert_eq!(row[5], "false");

    admin(
        &c,
        "keyvault key create --vault-name kv-t1 -n rsa-k --size 3072",
    );
    admin(
        &c,
        "keyvault key create --vault-name kv-t1 -n ec-k --kty EC --curve P-384 --expires 4102444800",
    );
    let t = table(&c, "keyvault key list --vault-name kv-t1");
    assert_eq!(
        t[0],
        ["Name", "Enabled", "NotBefore", "Expires", "Updated", "Kid"]
    );
    assert_eq!(t.len(), 4, "{t:?}");
    let ec = t.iter().find(|r| r[0] == "ec-k").unwrap();
    assert_eq!(
        ec[1..],
        [
            "true",
            "2100-01-01T00:00:00Z",
            ec[3].as_str(),
            "https://kv-t1.vault.coffer.local/keys/ec-k"
        ]
    );
    assert!(ec[3].starts_with("20") && ec[3].ends_with('Z'), "{ec:?}");
    let rsa = t.iter().find(|r| r[0] == "rsa-k").unwrap();
    assert_eq!(rsa.len(), 4, "no nbf or exp: {rsa:?}");
    // One key: name, version, type and size or curve, key_ops.
    let t = table(&c, "keyvault key show --vault-name kv-t1 -n rsa-k");
    assert_eq!(
        t[0],
        [
            "Name",
            "Version",
            "Kty",
            "SizeOrCurve",
            "Enabled",
            "Expires",
            "KeyOps"
        ]
    );
    assert_eq!(t[2][0], "rsa-k");
    assert_eq!(t[2][1].len(), 32);
    assert_eq!(t[2][2..5], ["RSA", "3072", "true"]);
    assert_eq!(
        t[2][5..],
        [
            "encrypt,",
            "decrypt,",
            "sign,",
            "verify,",
            "wrapKey,",
            "unwrapKey"
        ]
    );
    assert_eq!(
        table(&c, "keyvault key show --vault-name kv-t1 -n ec-k")[2][3],
        "P-384"
    );

    // Identities and role assignments.
    let id = identity(&c, "tbl-id");
    let t = table(&c, "identity list");
    assert_eq!(
        t[0],
        [
            "Name",
            "ResourceGroup",
            "Location",
            "PrincipalId",
            "ClientId"
        ]
    );
    assert_eq!(t[2][..4], ["tbl-id", "default", "local", id.as_str()]);
    let kv = admin(&c, "keyvault show -n kv-t1")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assign(&c, KV_READER, &id, &kv);
    let t = table(&c, &format!("role assignment list --assignee {id}"));
    assert_eq!(t[0], ["Principal", "Role", "Scope", "Name"]);
    assert_eq!(t[2][0], id);
    assert_eq!(t[2][1..4], ["Key", "Vault", "Reader"]);
    assert_eq!(t[2][4], kv);
    let t = table(&c, "role definition list");
    assert_eq!(t[0], ["RoleName", "Name", "RoleType"]);
    assert!(
        t.iter()
            .any(|r| r[..2] == ["Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"])
    );
}

/// A data-plane result is returned only once its audit record is committed: when the
/// record cannot be written, the caller gets an error and no wrapped key.
#[test]
fn a_data_plane_result_is_never_returned_without_its_audit_record() {
    let c = Coffer::new();
    admin(&c, "keyvault create -n kv-aud");
    admin(&c, "keyvault key create --vault-name kv-aud -n k");
    wrapped(&c, "kv-aud", "k");
    // The key audit records live in their own database beside the catalog, owner-only.
    let audit_db = c.home.join("catalog-audit.db");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&audit_db).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let db = rusqlite::Connection::open(&audit_db).unwrap();
    db.execute_batch(
        "CREATE TRIGGER no_audit BEFORE INSERT ON kv_audit \
         BEGIN SELECT RAISE(ABORT, 'audit store unavailable'); END;",
    )
    .unwrap();
    let w = wrap(&c, None, "kv-aud", "k");
    assert!(!w.status.success());
    assert!(w.json.is_null(), "{}", w.json);
    assert_eq!(w.code(), "CatalogError");
    db.execute_batch("DROP TRIGGER no_audit").unwrap();
    wrapped(&c, "kv-aud", "k");
}

/// Runs `coffer -o json [--as-principal WHO] WORDS...` with the test token's SoftHSM2
/// configuration and the test clock `days` ahead.
fn tok(c: &Coffer, conf: &std::path::Path, who: Option<&str>, days: i64, line: &str) -> Out {
    let mut args = vec!["-o", "json"];
    if let Some(p) = who {
        args.extend(["--as-principal", p]);
    }
    args.extend(line.split_whitespace());
    let mut cmd = c.command(&args);
    cmd.env("SOFTHSM2_CONF", conf)
        .env("COFFER_TEST_CLOCK_OFFSET_SECS", (days * 86_400).to_string());
    c.run_with(cmd, None)
}

/// How many key objects the test token holds (SoftHSM2's file store: one
/// `*.object` file per object besides `token.object`).
fn token_objects(c: &Coffer) -> usize {
    let mut n = 0;
    for dir in std::fs::read_dir(c.path("tokens")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            n += usize::from(name.ends_with(".object") && name != "token.object");
        }
    }
    n
}

fn has_python_cryptography() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success())
}

/// A premium key vault configured with a token holds RSA-HSM / EC-HSM keys in the
/// token (authorised by its access policies) next to software keys; a standard vault,
/// or a premium one without a token, refuses HSM key types and says how to get one.
#[test]
fn premium_key_vault_with_a_token_keeps_hsm_keys_in_the_token() {
    let c = Coffer::new();
    let Some((conf, pin)) = softhsm_token(&c) else {
        return;
    };
    let t = |l: &str| tok(&c, &conf, None, 0, l);
    let token_opts = format!(
        "--pkcs11-module {SOFTHSM} --token-label coffer-test --pin-file {}",
        pin.display()
    );
    // Refusals: a token needs a premium vault; HSM keys need a token.
    let e = t(&format!("keyvault create -n kv-tok {token_opts}")).err();
    assert_eq!(e["code"], "BadParameter");
    assert!(
        e["message"].as_str().unwrap().contains("--sku premium"),
        "{e}"
    );
    let e = t(&format!(
        "keyvault create -n kv-tok --sku premium --pin-file {}",
        pin.display()
    ));
    assert_eq!(e.code(), "BadParameter");
    t("keyvault create -n kv-std").ok();
    t("keyvault create -n kv-p0 --sku premium").ok();
    for kv in ["kv-std", "kv-p0"] {
        for kty in ["RSA-HSM", "EC-HSM"] {
            let e = t(&format!(
                "keyvault key create --vault-name {kv} -n h --kty {kty}"
            ))
            .err();
            assert_eq!(e["code"], "BadParameter");
            let m = e["message"].as_str().unwrap();
            assert!(
                m.contains("no PKCS#11 token") && m.contains("--sku premium --pkcs11-module"),
                "{m}"
            );
        }
    }
    assert_eq!(token_objects(&c), 0);

    let created = t(&format!(
        "keyvault create -n kv-tok --sku premium --enable-rbac-authorization false {token_opts}"
    ));
    let v = created.ok();
    assert_eq!(v["type"], "Microsoft.KeyVault/vaults");
    assert_eq!(v["properties"]["sku"]["name"], "premium");
    assert_eq!(v["properties"]["pkcs11"]["oaepSha256Supported"], false);
    assert!(!String::from_utf8_lossy(&created.stdout).contains(TOKEN_PIN));
    assert_eq!(
        t("keyvault update -n kv-tok --sku standard").code(),
        "BadParameter"
    );

    // An RSA-HSM key is generated in the token (two objects per version).
    let b = t("keyvault key create --vault-name kv-tok -n hk --kty RSA-HSM")
        .ok()
        .clone();
    assert_eq!(b["key"]["kty"], "RSA-HSM");
    let kid1 = b["key"]["kid"].as_str().unwrap().to_owned();
    assert!(
        kid1.starts_with("https://kv-tok.vault.coffer.local/keys/hk/"),
        "{kid1}"
    );
    assert!(b["key"]["d"].is_null());
    assert_eq!(token_objects(&c), 2);
    let sel = "--vault-name kv-tok -n hk";
    // Wrap in Coffer (RSA-OAEP on this token, and it says so), unwrap in the token.
    let w = t(&format!("keyvault key wrap {sel} --value {DEK_B64}"))
        .ok()
        .clone();
    assert_eq!(
        (w["alg"].as_str(), w["kid"].as_str()),
        (Some("RSA-OAEP"), Some(kid1.as_str()))
    );
    let w1 = w["value"].as_str().unwrap().to_owned();
    let unwrap = |who: Option<&str>, extra: &str, value: &str| {
        tok(
            &c,
            &conf,
            who,
            0,
            &format!("keyvault key unwrap {sel} {extra} -a RSA-OAEP --value {value}"),
        )
    };
    assert_eq!(unwrap(None, "", &w1).ok()["value"], DEK_B64);
    // RSA-OAEP-256 cannot be unwrapped by this token: a clear refusal.
    let e = t(&format!("keyvault key unwrap {sel} --value {w1}")).err();
    assert!(
        e["message"].as_str().unwrap().contains("RSA-OAEP-256"),
        "{e}"
    );
    // The downloaded public key wraps a DEK that unwraps in the token.
    if has_python_cryptography() {
        let pubf = c.path("hk.pem");
        t(&format!(
            "keyvault key download {sel} -f {}",
            pubf.display()
        ))
        .ok();
        let pw = python(&["wrap-pub", pubf.to_str().unwrap(), "RSA-OAEP", DEK_B64]);
        assert_eq!(unwrap(None, "", &pw).ok()["value"], DEK_B64);
    }

    // The vault's access policies authorise its token keys (no HSM local RBAC).
    let app = identity(&c, "app");
    let ap_matrix = |expect: [bool; 3]| {
        let outs = [
            tok(
                &c,
                &conf,
                Some(&app),
                0,
                &format!("keyvault key show {sel}"),
            ),
            tok(
                &c,
                &conf,
                Some(&app),
                0,
                &format!("keyvault key wrap {sel} --value {DEK_B64}"),
            ),
            unwrap(Some(&app), "", &w1),
        ];
        check_outcomes(&outs, expect, "AccessDenied");
    };
    ap_matrix([false; 3]);
    for (perm, expect) in [
        ("get", [true, false, false]),
        ("wrapKey", [true, true, false]),
        ("unwrapKey", [true; 3]),
    ] {
        t(&format!(
            "keyvault set-policy -n kv-tok --object-id {app} --key-permissions {perm}"
        ))
        .ok();
        ap_matrix(expect);
    }
    t(&format!(
        "keyvault delete-policy -n kv-tok --object-id {app}"
    ))
    .ok();
    ap_matrix([false; 3]);

    // An EC-HSM key signs in the token; Coffer and Python verify with its public key.
    let ec = t("keyvault key create --vault-name kv-tok -n hec --kty EC-HSM --curve P-256")
        .ok()
        .clone();
    assert_eq!(
        (ec["key"]["kty"].as_str(), ec["key"]["crv"].as_str()),
        (Some("EC-HSM"), Some("P-256"))
    );
    assert_eq!(token_objects(&c), 4);
    let digest = b64(&[0x42u8; 32]);
    let esel = "--vault-name kv-tok -n hec -a ES256";
    let sig = t(&format!("keyvault key sign {esel} --value {digest}")).ok()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let verified = t(&format!(
        "keyvault key verify {esel} --value {digest} --signature {sig}"
    ));
    assert_eq!(verified.ok()["value"], true);
    if has_python_cryptography() {
        let pem = c.path("hec.pem");
        t(&format!(
            "keyvault key download --vault-name kv-tok -n hec -f {}",
            pem.display()
        ))
        .ok();
        assert_eq!(
            python(&["ecverify", pem.to_str().unwrap(), "ES256", &digest, &sig]),
            "secp256r1"
        );
    }

    // A software RSA key of the same vault stays a software key (nothing in the token).
    let sk = t("keyvault key create --vault-name kv-tok -n sk --kty RSA")
        .ok()
        .clone();
    assert_eq!(sk["key"]["kty"], "RSA");
    assert_eq!(token_objects(&c), 4);
    let sw = t(&format!(
        "keyvault key wrap --vault-name kv-tok -n sk --value {DEK_B64}"
    ))
    .ok()
    .clone();
    assert_eq!(sw["alg"], "RSA-OAEP-256");
    let su = t(&format!(
        "keyvault key unwrap --vault-name kv-tok -n sk --value {}",
        sw["value"].as_str().unwrap()
    ));
    assert_eq!(su.ok()["value"], DEK_B64);
    // HSM key types are generated in the token, never imported.
    if has_python_cryptography() {
        let pem = c.path("imp.pem");
        python(&["gen", pem.to_str().unwrap(), "2048"]);
        let e = t(&format!(
            "keyvault key import --vault-name kv-tok -n imp --kty RSA-HSM --pem-file {}",
            pem.display()
        ));
        assert_eq!(e.code(), "BadParameter");
    }

    // Rotation (now, and by policy) makes new token versions; old versions still unwrap.
    let r = t(&format!("keyvault key rotate {sel}")).ok().clone();
    assert_eq!(r["key"]["kty"], "RSA-HSM");
    assert_ne!(r["key"]["kid"], kid1.as_str());
    assert_eq!(token_objects(&c), 6);
    t(&format!(
        "keyvault key rotation-policy update {sel} --value \
         {{\"lifetimeActions\":[{{\"trigger\":{{\"timeAfterCreate\":\"P30D\"}},\"action\":{{\"type\":\"Rotate\"}}}}]}}"
    ))
    .ok();
    tok(&c, &conf, None, 31, "keyvault list").ok();
    let versions = t(&format!("keyvault key list-versions {sel}")).ok().clone();
    assert_eq!(count(&versions), 3);
    assert_eq!(token_objects(&c), 8);
    let cur = t(&format!("keyvault key show {sel}")).ok()["key"].clone();
    assert_eq!(cur["kty"], "RSA-HSM");
    assert!(cur["kid"] != kid1.as_str() && cur["kid"] != r["key"]["kid"]);
    let ver1 = kid1.rsplit('/').next().unwrap();
    assert_eq!(
        unwrap(None, &format!("--version {ver1}"), &w1).ok()["value"],
        DEK_B64
    );
    assert_eq!(unwrap(None, "", &w1).code(), "BadParameter");

    // Soft delete keeps the token objects; recover; purge destroys them.
    t(&format!("keyvault key delete {sel}")).ok();
    assert_eq!(
        count(t("keyvault key list-deleted --vault-name kv-tok").ok()),
        1
    );
    assert_eq!(t(&format!("keyvault key show {sel}")).code(), "KeyNotFound");
    t(&format!("keyvault key recover {sel}")).ok();
    assert_eq!(
        unwrap(None, &format!("--version {ver1}"), &w1).ok()["value"],
        DEK_B64
    );
    t(&format!("keyvault key delete {sel}")).ok();
    assert_eq!(token_objects(&c), 8);
    t(&format!("keyvault key purge {sel}")).ok();
    assert_eq!(
        token_objects(&c),
        2,
        "the three versions of hk are gone from the token"
    );
    assert_eq!(
        t(&format!("keyvault key recover {sel}")).code(),
        "KeyNotFound"
    );
    // Deleting the vault and purging it destroys the remaining token key.
    t("keyvault delete -n kv-tok").ok();
    t("keyvault purge -n kv-tok").ok();
    assert_eq!(token_objects(&c), 0);
}

/// RSA-HSM keys sign digests in the token: RS256/384/512 (`CKM_RSA_PKCS` over the
/// DigestInfo) and PS256/384/512 (`CKM_RSA_PKCS_PSS`, salt = digest length); Coffer
/// verifies with the public key, and so does Python with the downloaded PEM.
#[test]
fn rsa_hsm_keys_sign_rs_and_ps_in_the_token() {
    let c = Coffer::new();
    let Some((conf, pin)) = softhsm_token(&c) else {
        return;
    };
    let t = |l: &str| tok(&c, &conf, None, 0, l);
    t(&format!(
        "keyvault create -n kv-sig --sku premium --pkcs11-module {SOFTHSM} --token-label coffer-test --pin-file {}",
        pin.display()
    ))
    .ok();
    let b = t("keyvault key create --vault-name kv-sig -n rs --kty RSA-HSM --size 3072")
        .ok()
        .clone();
    assert_eq!(
        b["key"]["key_ops"],
        serde_json::json!([
            "encrypt",
            "decrypt",
            "sign",
            "verify",
            "wrapKey",
            "unwrapKey"
        ])
    );
    let pem = c.path("rs.pem");
    t(&format!(
        "keyvault key download --vault-name kv-sig -n rs -f {}",
        pem.display()
    ))
    .ok();
    let python_ok = has_python_cryptography();
    for (alg, len) in [
        ("RS256", 32),
        ("RS384", 48),
        ("RS512", 64),
        ("PS256", 32),
        ("PS384", 48),
        ("PS512", 64),
    ] {
        let digest = b64(&(0..len).map(|i| i as u8 ^ 0x3c).collect::<Vec<_>>());
        let other = b64(&vec![9u8; len]);
        let sel = format!("--vault-name kv-sig -n rs -a {alg}");
        let signed = t(&format!("keyvault key sign {sel} --value {digest}"))
            .ok()
            .clone();
        assert_eq!(signed["kid"], b["key"]["kid"], "{alg}");
        let sig = signed["value"].as_str().unwrap().to_owned();
        assert_eq!(
            sig.len(),
            (384usize * 4).div_ceil(3),
            "{alg}: 3072-bit signature"
        );
        let verify = |d: &str| {
            t(&format!(
                "keyvault key verify {sel} --value {d} --signature {sig}"
            ))
            .ok()["value"]
                .clone()
        };
        assert_eq!(verify(&digest), true, "{alg}");
        assert_eq!(verify(&other), false, "{alg}");
        if python_ok {
            let r = python(&["rsaverify", pem.to_str().unwrap(), alg, &digest, &sig]);
            assert_eq!(r, "valid", "{alg}");
        }
    }
    // An EC algorithm or a digest of the wrong length is a bad parameter.
    for l in [
        "keyvault key sign --vault-name kv-sig -n rs -a ES256 --value AAAA",
        "keyvault key sign --vault-name kv-sig -n rs -a RS256 --value AAAA",
        "keyvault key sign --vault-name kv-sig -n rs -a PS384 --value AAAA",
    ] {
        assert_eq!(t(l).code(), "BadParameter", "{l}");
    }
}

/// Background work that needs a token which cannot be opened (here: its PIN file is
/// gone) does not fail the command running it: the rotation is audited as failed,
/// the key is unavailable meanwhile, and the next run with the token rotates.
#[test]
fn background_rotation_waits_for_an_unreachable_token() {
    let c = Coffer::new();
    let Some((conf, pin)) = softhsm_token(&c) else {
        return;
    };
    let at = |days: i64, l: &str| tok(&c, &conf, None, days, l);
    at(
        0,
        &format!(
            "keyvault create -n kv-bg --sku premium --pkcs11-module {SOFTHSM} --token-label coffer-test --pin-file {}",
            pin.display()
        ),
    )
    .ok();
    let sel = "--vault-name kv-bg -n hk";
    at(0, &format!("keyvault key create {sel} --kty RSA-HSM")).ok();
    at(
        0,
        &format!(
            "keyvault key rotation-policy update {sel} --value \
             {{\"lifetimeActions\":[{{\"trigger\":{{\"timeAfterCreate\":\"P30D\"}},\"action\":{{\"type\":\"Rotate\"}}}}]}}"
        ),
    )
    .ok();
    let away = c.path("pin.away");
    std::fs::rename(&pin, &away).unwrap();
    assert_eq!(
        count(at(31, &format!("keyvault key list-versions {sel}")).ok()),
        1
    );
    let e = at(
        31,
        &format!("keyvault key unwrap {sel} -a RSA-OAEP --value AAAA"),
    )
    .err();
    assert_eq!(e["code"], "EncryptionKeyUnavailable");
    assert!(!e["message"].as_str().unwrap().contains(TOKEN_PIN));
    let audit = at(31, "keyvault audit list -n kv-bg").ok().clone();
    assert!(audit.as_array().unwrap().iter().any(|r| {
        r["callerPrincipalId"] == "KeyRotationPolicy"
            && r["result"] == "Failed"
            && r["errorCode"] == "EncryptionKeyUnavailable"
    }));
    std::fs::rename(&away, &pin).unwrap();
    assert_eq!(
        count(at(31, &format!("keyvault key list-versions {sel}")).ok()),
        2
    );
    assert_eq!(token_objects(&c), 4);
}

//! Black-box tests of part 3 through the `coffer` binary: backup vault identities,
//! customer-managed keys (CMK) at creation and by update, every refusal rule with
//! its exact code, and jobs failing (then recovering) when key access is lost.

mod common;

use std::fs;

use common::{Coffer, Out, SOFTHSM, rp_id, snapshot, softhsm_token};
use serde_json::Value;

const CSEU: &str = "Key Vault Crypto Service Encryption User";

/// Runs `coffer -o json ARGS` (ARGS split on spaces).
fn sh(c: &Coffer, line: &str) -> Out {
    let mut args = vec!["-o", "json"];
    args.extend(line.split_whitespace());
    c.run(&args)
}

fn ok(c: &Coffer, line: &str) -> Value {
    sh(c, line).ok().clone()
}

#[track_caller]
fn refused(c: &Coffer, line: &str, code: &str) {
    assert_eq!(sh(c, line).code(), code, "{line}");
}

/// A user-assigned identity: (ARM id, principal id).
fn uami(c: &Coffer, name: &str) -> (String, String) {
    let v = ok(c, &format!("identity create -n {name}"));
    (
        v["id"].as_str().unwrap().to_owned(),
        v["principalId"].as_str().unwrap().to_owned(),
    )
}

/// An access-policy key vault with soft delete and purge protection, plus a key.
/// Returns the versioned kid.
fn ap_vault(c: &Coffer, kv: &str, extra: &str) -> String {
    ok(
        c,
        &format!(
            "keyvault create -n {kv} --enable-rbac-authorization false --enable-purge-protection true {extra}"
        ),
    );
    ok(c, &format!("keyvault key create --vault-name {kv} -n k"))["key"]["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn grant(c: &Coffer, kv: &str, principal: &str) {
    ok(
        c,
        &format!(
            "keyvault set-policy -n {kv} --object-id {principal} --key-permissions get wrapKey unwrapKey"
        ),
    );
}

/// A user-assigned identity "uid1" with get/wrapKey/unwrapKey on key `k` of a new
/// access-policy key vault `kv`: (identity ARM id, principal id, versioned kid).
fn identity_with_key(c: &Coffer, kv: &str, extra: &str) -> (String, String, String) {
    let (uai, upid) = uami(c, "uid1");
    let kid = ap_vault(c, kv, extra);
    grant(c, kv, &upid);
    (uai, upid, kid)
}

/// Runs `coffer -o json ARGS` with the test clock `days` ahead.
fn at_day(c: &Coffer, days: i64, args: &[&str]) -> Out {
    let mut all = vec!["-o", "json"];
    all.extend(args);
    let mut cmd = c.command(&all);
    cmd.env("COFFER_TEST_CLOCK_OFFSET_SECS", (days * 86_400).to_string());
    c.run_with(cmd, None)
}

/// The `backup-vault create` line of a CMK vault with user-assigned identity `uai`.
fn cmk_create_line(vault: &str, uai: &str, uri: &str, extra: &str) -> String {
    format!(
        "backup-vault create -v {vault} --type UserAssigned --user-assigned-identities {{\"{uai}\":{{}}}} \
         --cmk-encryption-key-uri {uri} --cmk-encryption-state Enabled --cmk-identity-type UserAssigned \
         --cmk-user-assigned-identity-id {uai} {extra}"
    )
}

fn create_cmk(c: &Coffer, vault: &str, uai: &str, uri: &str, extra: &str) -> Out {
    sh(c, &cmk_create_line(vault, uai, uri, extra))
}

fn enc(v: &Value) -> &Value {
    &v["properties"]["securitySettings"]["encryptionSettings"]
}

/// The wrapped-DEK records stored next to the vault's data.
fn stored_records(c: &Coffer, vault_guid: &str) -> Vec<Value> {
    let dir = c.home.join("storage").join(vault_guid).join("keys");
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push(serde_json::from_slice(&fs::read(p).unwrap()).unwrap());
        }
    }
    out
}

/// `line` (an identity change or deletion that cuts vault "vlt" off its key) is
/// refused without --force; with --force it runs and the next backup fails.
fn cut_off_only_with_force(c: &Coffer, line: &str) {
    refused(c, line, "UserErrorCMKIdentityInUseForEncryption");
    ok(c, &format!("{line} --force"));
    assert_eq!(
        backup_code(c, "vlt"),
        "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault"
    );
}

fn backup_code(c: &Coffer, vault: &str) -> String {
    let o = sh(
        c,
        &format!("backup-instance adhoc-backup -v {vault} -n docs"),
    );
    let e = o.err();
    assert!(e["recommendedAction"].is_string(), "{e}");
    e["code"].as_str().unwrap().to_owned()
}

fn restore_identical(c: &Coffer, vault: &str, rp: &str, src: &std::path::Path, tag: &str) {
    let target = c.path(&format!("restore-{tag}"));
    c.restore(vault, "docs", rp, &target).ok();
    assert_eq!(snapshot(&target), snapshot(src), "{tag}");
}

fn source(c: &Coffer) -> std::path::PathBuf {
    let src = c.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.bin"), common::pseudo_random(300_000, 7)).unwrap();
    fs::write(src.join("sub/b.txt"), b"hello cmk\n").unwrap();
    src
}

#[test]
fn every_rule_is_refused_with_its_code_and_changes_nothing() {
    let c = Coffer::new();
    let (uai, upid) = uami(&c, "uid1");
    let (uai2, _) = uami(&c, "uid2");
    let kid = ap_vault(&c, "kv-good", "");
    grant(&c, "kv-good", &upid);
    let versionless = kid.rsplit_once('/').unwrap().0.to_owned();
    ok(
        &c,
        "keyvault key create --vault-name kv-good -n ec --kty EC",
    );
    ok(
        &c,
        "keyvault key create --vault-name kv-good -n off --enabled false",
    );
    ok(
        &c,
        "keyvault key create --vault-name kv-good -n old --expires 1000",
    );
    ok(
        &c,
        "keyvault create -n kv-nosd --enable-soft-delete false --enable-rbac-authorization false",
    );
    ok(&c, "keyvault key create --vault-name kv-nosd -n k");
    ok(
        &c,
        "keyvault create -n kv-nopp --enable-rbac-authorization false",
    );
    ok(&c, "keyvault key create --vault-name kv-nopp -n k");
    // (The command line reaches it through an IP rule for this machine.)
    ap_vault(
        &c,
        "kv-deny",
        "--default-action Deny --ip-rules 127.0.0.1/32",
    );
    grant(&c, "kv-deny", &upid);
    // An RSA key of a non-standard size (importable, not usable for CMK).
    let pem = c.path("rsa2560.pem");
    let keygen = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2560",
            "-out",
        ])
        .arg(&pem)
        .output()
        .expect("openssl");
    assert!(keygen.status.success(), "{keygen:?}");
    ok(
        &c,
        &format!(
            "keyvault key import --vault-name kv-good -n odd --pem-file {}",
            pem.display()
        ),
    );
    let uri = |kv: &str, k: &str| format!("https://{kv}.vault.coffer.local/keys/{k}");

    let create_refusals = [
        (
            uri("kv-nosd", "k"),
            "UserErrorCMKSoftDeleteNotEnabledOnKeyVault",
        ),
        (
            uri("kv-nopp", "k"),
            "UserErrorCMKPurgeProtectionNotEnabledOnKeyVault",
        ),
        (
            uri("kv-good", "ec"),
            "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault",
        ),
        (uri("kv-good", "nope"), "UserErrorCMKKeyVaultAuthFailure"),
        (uri("kv-gone", "k"), "UserErrorCMKKeyVaultAuthFailure"),
        (uri("kv-good", "off"), "UserErrorCMKKeyDisabledOrExpired"),
        (uri("kv-good", "odd"), "UserErrorCMKUnsupportedKeySize"),
        (uri("kv-good", "old"), "UserErrorCMKKeyDisabledOrExpired"),
        (
            "https://kv-good.example.com/keys/k".into(),
            "UserErrorCMKInvalidKeyUri",
        ),
        (
            format!("{versionless}/v1/extra"),
            "UserErrorCMKInvalidKeyUri",
        ),
        (
            uri("kv-deny", "k"),
            "UserErrorCMKUserAssignedIdentityWithRestrictedKeyVault",
        ),
    ];
    for (u, code) in &create_refusals {
        assert_eq!(create_cmk(&c, "v1", &uai, u, "").code(), *code, "{u}");
    }
    // An identity without permission, and one not attached to the vault.
    assert_eq!(
        sh(&c, &format!(
            "backup-vault create -v v1 --type UserAssigned --user-assigned-identities {{\"{uai2}\":{{}}}} \
             --cmk-encryption-key-uri {kid} --cmk-encryption-state Enabled --cmk-identity-type UserAssigned \
             --cmk-user-assigned-identity-id {uai2}"
        )).code(),
        "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault"
    );
    assert_eq!(
        sh(&c, &format!(
            "backup-vault create -v v1 --cmk-encryption-key-uri {kid} --cmk-encryption-state Enabled \
             --cmk-identity-type UserAssigned --cmk-user-assigned-identity-id {uai}"
        )).code(),
        "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault"
    );
    refused(
        &c,
        &format!(
            "backup-vault create -v v1 --cmk-encryption-key-uri {kid} --cmk-encryption-state Enabled --cmk-identity-type SystemAssigned"
        ),
        "UserErrorCMKSystemAssignedIdentityNotAllowedAtCreation",
    );
    refused(
        &c,
        "backup-vault create -v v1 --cmk-infrastructure-encryption Enabled",
        "UserErrorCMKInfrastructureEncryptionOnlyAtCreation",
    );
    // No refused create left anything behind.
    refused(&c, "backup-vault show -v v1", "BackupVaultNotFound");
    assert!(!c.home.join("storage").read_dir().unwrap().any(|_| true));

    // Success with infrastructure encryption, then the update rules.
    let v = create_cmk(
        &c,
        "v1",
        &uai,
        &kid,
        "--cmk-infrastructure-encryption Enabled",
    )
    .ok()
    .clone();
    let e = enc(&v);
    assert_eq!(e["state"], "Enabled");
    assert_eq!(e["infrastructureEncryption"], "Enabled");
    assert_eq!(e["keyVaultProperties"]["keyUri"], kid.as_str());
    assert_eq!(e["kekIdentity"]["identityType"], "UserAssigned");
    assert_eq!(e["kekIdentity"]["identityId"], uai.as_str());
    assert_eq!(v["identity"]["type"], "UserAssigned");
    assert_eq!(
        v["identity"]["userAssignedIdentities"][&uai]["principalId"],
        upid.as_str()
    );
    let before = ok(&c, "backup-vault show -v v1");
    refused(
        &c,
        "backup-vault update -v v1 --cmk-encryption-state Disabled",
        "UserErrorCMKCannotRevertToPlatformKey",
    );
    refused(
        &c,
        "backup-vault update -v v1 --cmk-infrastructure-encryption Disabled",
        "UserErrorCMKInfrastructureEncryptionOnlyAtCreation",
    );
    refused(
        &c,
        &format!(
            "backup-vault update -v v1 --cmk-encryption-key-uri {versionless} --cmk-identity-type SystemAssigned"
        ),
        "UserErrorCMKKeyAndIdentityUpdateInSameRequest",
    );
    refused(
        &c,
        "backup-vault update -v v1 --cmk-encryption-key-uri https://kv-good.vault.coffer.local/k",
        "UserErrorCMKInvalidKeyUri",
    );
    refused(
        &c,
        &format!(
            "backup-vault update -v v1 --cmk-encryption-key-uri {}",
            uri("kv-nopp", "k")
        ),
        "UserErrorCMKPurgeProtectionNotEnabledOnKeyVault",
    );
    assert_eq!(
        ok(&c, "backup-vault show -v v1"),
        before,
        "a refused update changes nothing"
    );

    // A PMK vault: infrastructure encryption cannot be added later.
    c.vault("v2");
    refused(
        &c,
        "backup-vault update -v v2 --cmk-infrastructure-encryption Enabled",
        "UserErrorCMKInfrastructureEncryptionOnlyAtCreation",
    );
    refused(
        &c,
        &format!(
            "backup-vault update -v v2 --cmk-encryption-key-uri {kid} --cmk-encryption-state Enabled --cmk-identity-type SystemAssigned"
        ),
        "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault",
    );
    assert_eq!(enc(&ok(&c, "backup-vault show -v v2"))["state"], "Disabled");

    // Every vault write is in the activity log: creation (PUT), refused updates (PATCH, Failed).
    let id = v["id"].as_str().unwrap();
    let log = ok(&c, &format!("activity-log list --resource-id {id}"));
    let entries = log.as_array().unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e["resourceId"] == id && e["correlationId"].is_string())
    );
    let find = |method: &str, status: &str, code: &str| {
        entries.iter().any(|e| {
            e["operationName"]["value"] == "Microsoft.DataProtection/backupVaults/write"
                && e["httpMethod"] == method
                && e["status"]["value"] == status
                && (code.is_empty() || e["subStatus"]["value"] == code)
        })
    };
    assert!(find("PUT", "Succeeded", ""), "{log}");
    assert!(
        find("PATCH", "Failed", "UserErrorCMKCannotRevertToPlatformKey"),
        "{log}"
    );
    assert!(
        find(
            "PUT",
            "Failed",
            "UserErrorCMKSoftDeleteNotEnabledOnKeyVault"
        ),
        "{log}"
    );
}

#[test]
fn user_assigned_at_creation_backup_restore_and_revocation() {
    let c = Coffer::new();
    let (uai, upid, kid) = identity_with_key(&c, "kv-ap", "");
    let v = create_cmk(&c, "vlt", &uai, &kid, "").ok().clone();
    let guid = v["properties"]["vaultId"].as_str().unwrap().to_owned();
    let recs = stored_records(&c, &guid);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["kek"]["kind"], "CustomerManaged");
    assert_eq!(recs[0]["kek"]["keyId"], kid.as_str());
    assert_eq!(recs[0]["kek"]["algorithm"], "RSA-OAEP-256");
    let src = source(&c);
    c.dir_instance("vlt", "docs", &src);
    let rp1 = rp_id(&c.backup("vlt", "docs"));
    restore_identical(&c, "vlt", &rp1, &src, "1");
    // The key vault audit shows the identity unwrapping.
    let audit = ok(&c, "keyvault audit list -n kv-ap");
    let by_identity = |a: &&Value| a["callerPrincipalId"] == upid.as_str();
    let ops: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(by_identity)
        .collect();
    assert!(
        ops.iter()
            .any(|a| a["operationName"] == "unwrapKey" && a["result"] == "Succeeded")
    );

    // Switching the key vault to RBAC (the identity holds no role) would cut the vault
    // off: refused without --force, nothing changes.
    refused(
        &c,
        "keyvault update -n kv-ap --enable-rbac-authorization true",
        "UserErrorCMKIdentityInUseForEncryption",
    );
    c.backup("vlt", "docs");
    // Permission removed (only with --force): the next backup fails with the code,
    // recorded on the job.
    cut_off_only_with_force(
        &c,
        &format!("keyvault delete-policy -n kv-ap --object-id {upid}"),
    );
    let jobs = ok(&c, "job list -v vlt");
    let failed = &jobs[0]["properties"];
    assert_eq!(failed["status"], "Failed", "{jobs}");
    assert!(
        jobs.to_string()
            .contains("UserErrorCMKMissingMangedIdentityPermissionOnKeyVault")
    );
    let t = c.path("restore-denied");
    assert_eq!(
        c.restore("vlt", "docs", &rp1, &t).code(),
        "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault"
    );
    let health = |c: &Coffer| enc(&ok(c, "backup-vault show -v vlt"))["encryptionHealth"].clone();
    let h = health(&c);
    assert_eq!(h["state"], "KeyAccessLost", "{h}");
    assert_eq!(
        h["errorCode"],
        "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault"
    );
    assert!(
        h["since"].is_string() && h["storedBytes"].as_u64().unwrap() > 300_000,
        "{h}"
    );
    grant(&c, "kv-ap", &upid);
    assert_eq!(health(&c)["state"], "Healthy");
    c.backup("vlt", "docs");

    // Key disabled, then enabled again.
    ok(
        &c,
        "keyvault key set-attributes --vault-name kv-ap -n k --enabled false",
    );
    assert_eq!(backup_code(&c, "vlt"), "UserErrorCMKKeyDisabledOrExpired");
    ok(
        &c,
        "keyvault key set-attributes --vault-name kv-ap -n k --enabled true",
    );
    c.backup("vlt", "docs");

    // Key soft-deleted, then recovered.
    ok(&c, "keyvault key delete --vault-name kv-ap -n k");
    assert_eq!(backup_code(&c, "vlt"), "UserErrorCMKKeyVaultAuthFailure");
    ok(&c, "keyvault key recover --vault-name kv-ap -n k");
    c.backup("vlt", "docs");

    // Identity detached from the vault (only with --force), then reattached.
    cut_off_only_with_force(&c, "backup-vault update -v vlt --type None");
    assert_eq!(
        ok(&c, "backup-vault show -v vlt")["identity"]["type"],
        "None"
    );
    ok(
        &c,
        &format!(
            "backup-vault update -v vlt --type UserAssigned --user-assigned-identities {{\"{uai}\":{{}}}}"
        ),
    );
    let rp = rp_id(&c.backup("vlt", "docs"));
    restore_identical(&c, "vlt", &rp, &src, "2");
    restore_identical(&c, "vlt", &rp1, &src, "3");

    // Deleting the identity is refused while the vault's key is used through it.
    cut_off_only_with_force(&c, "identity delete -n uid1");
}

#[test]
fn enable_cmk_later_with_system_identity_on_rbac_key_vaults() {
    let c = Coffer::new();
    let src = source(&c);
    let v = c.vault("vlt");
    let guid = v["properties"]["vaultId"].as_str().unwrap().to_owned();
    c.dir_instance("vlt", "docs", &src);
    let rp1 = rp_id(&c.backup("vlt", "docs"));
    fs::write(src.join("c.txt"), b"second").unwrap();
    let rp2 = rp_id(&c.backup("vlt", "docs"));
    let pmk_records = stored_records(&c, &guid);
    assert_eq!(pmk_records.len(), 1);
    assert_eq!(pmk_records[0]["kek"]["kind"], "PlatformManaged");

    // Enable the system-assigned identity; grant it the role at the key vault scope.
    let shown = ok(&c, "backup-vault update -v vlt --type SystemAssigned");
    assert_eq!(shown["identity"]["type"], "SystemAssigned");
    let spid = shown["identity"]["principalId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(shown["identity"]["tenantId"].is_string());
    let kv = ok(
        &c,
        "keyvault create -n kv-rbac --enable-purge-protection true",
    );
    let kv_id = kv["id"].as_str().unwrap().to_owned();
    let kid = ok(&c, "keyvault key create --vault-name kv-rbac -n k1")["key"]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let versionless = kid.rsplit_once('/').unwrap().0.to_owned();
    let enable = format!(
        "backup-vault update -v vlt --cmk-encryption-key-uri {versionless} --cmk-encryption-state Enabled --cmk-identity-type SystemAssigned"
    );
    refused(
        &c,
        &enable,
        "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault",
    );
    assert_eq!(
        stored_records(&c, &guid),
        pmk_records,
        "a refused update changes nothing"
    );
    let assign = |scope: &str| {
        c.run(&[
            "-o",
            "json",
            "role",
            "assignment",
            "create",
            "--role",
            CSEU,
            "--assignee",
            &spid,
            "--scope",
            scope,
        ])
        .ok()
        .clone()
    };
    assign(&kv_id);
    let shown = ok(&c, &enable);
    let e = enc(&shown);
    assert_eq!(e["state"], "Enabled");
    assert_eq!(e["keyVaultProperties"]["keyUri"], versionless.as_str());
    assert_eq!(e["keyVaultProperties"]["currentKeyId"], kid.as_str());
    assert_eq!(
        e["keyVaultProperties"]["currentKeyVersion"],
        kid.rsplit('/').next().unwrap()
    );
    assert_eq!(e["kekIdentity"]["identityType"], "SystemAssigned");
    assert_eq!(e["infrastructureEncryption"], "Disabled");
    // No PMK-wrapped copy of the DEK remains, in storage or in the catalog.
    let recs = stored_records(&c, &guid);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["kek"]["kind"], "CustomerManaged");
    assert_eq!(recs[0]["kek"]["keyId"], kid.as_str());
    ok(&c, "backup-vault check -v vlt --read-data");
    for (i, rp) in [&rp1, &rp2].into_iter().enumerate() {
        let t = c.path(&format!("r{i}"));
        c.restore("vlt", "docs", rp, &t).ok();
    }
    restore_identical(&c, "vlt", &rp2, &src, "rp2");

    // Move to a key in a second RBAC key vault whose role is granted at the key scope.
    let kv2 = ok(
        &c,
        "keyvault create -n kv-rbac2 --enable-purge-protection true",
    );
    let kid2 = ok(
        &c,
        "keyvault key create --vault-name kv-rbac2 -n k2 --size 3072",
    )["key"]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assign(&format!("{}/keys/k2", kv2["id"].as_str().unwrap()));
    let shown = ok(
        &c,
        &format!("backup-vault update -v vlt --cmk-encryption-key-uri {kid2}"),
    );
    assert_eq!(
        enc(&shown)["keyVaultProperties"]["currentKeyId"],
        kid2.as_str()
    );
    let recs = stored_records(&c, &guid);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["kek"]["keyId"], kid2.as_str());
    fs::write(src.join("d.txt"), b"third").unwrap();
    let rp3 = rp_id(&c.backup("vlt", "docs"));
    restore_identical(&c, "vlt", &rp3, &src, "rp3");
    c.restore("vlt", "docs", &rp1, &c.path("r-old")).ok();

    // The key vault firewall: with defaultAction Deny the vault (a trusted service)
    // still reaches its key while bypass is AzureServices; bypass None would make the
    // key vault unreachable, so it is refused without --force, and with --force the
    // next backup fails with UserErrorCMKKeyVaultAuthFailure until it is undone.
    ok(&c, "keyvault update -n kv-rbac2 --default-action Deny");
    c.backup("vlt", "docs");
    refused(
        &c,
        "keyvault update -n kv-rbac2 --bypass None",
        "UserErrorCMKIdentityInUseForEncryption",
    );
    ok(&c, "keyvault update -n kv-rbac2 --bypass None --force");
    assert_eq!(backup_code(&c, "vlt"), "UserErrorCMKKeyVaultAuthFailure");
    ok(&c, "keyvault update -n kv-rbac2 --bypass AzureServices");
    c.backup("vlt", "docs");

    // Removing one of two grants keeps access and is allowed; removing the last one is
    // refused without --force.
    let kv2_id = kv2["id"].as_str().unwrap();
    assign(kv2_id);
    let unassign = |scope: &str| {
        format!(
            "role assignment delete --role e147488a-f6f5-4113-8e2d-b22465e65bf6 --assignee {spid} --scope {scope}"
        )
    };
    ok(&c, &unassign(&format!("{kv2_id}/keys/k2")));
    refused(
        &c,
        &unassign(kv2_id),
        "UserErrorCMKIdentityInUseForEncryption",
    );
    c.backup("vlt", "docs");

    // Disabling the system identity loses access: backups and deletions fail visibly.
    cut_off_only_with_force(&c, "backup-vault update -v vlt --type None");
    assert_eq!(
        sh(&c, "backup-instance delete -v vlt -n docs").code(),
        "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault"
    );
}

#[test]
fn versionless_uri_autorotates_versioned_does_not_and_purge_shreds() {
    let c = Coffer::new();
    let (uai, _, kid) = identity_with_key(&c, "kv-rot", "--retention-days 7");
    let versionless = kid.rsplit_once('/').unwrap().0.to_owned();
    let src = source(&c);
    // Vault "auto" follows the key; vault "pinned" keeps its version.
    let guid = create_cmk(&c, "auto", &uai, &versionless, "").ok()["properties"]["vaultId"]
        .as_str()
        .unwrap()
        .to_owned();
    create_cmk(&c, "pinned", &uai, &kid, "").ok();
    for v in ["auto", "pinned"] {
        c.dir_instance(v, "docs", &src);
    }
    let rp_auto = rp_id(&c.backup("auto", "docs"));
    let rp_pinned = rp_id(&c.backup("pinned", "docs"));
    let current = |v: &str| {
        enc(&ok(&c, &format!("backup-vault show -v {v}")))["keyVaultProperties"]["currentKeyId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(current("auto"), kid);
    let kid2 = ok(&c, "keyvault key rotate --vault-name kv-rot -n k")["key"]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(kid2, kid);
    // The next job (or show) rewraps with the new version, once even when several
    // processes notice at the same time; only that record remains.
    let racers: Vec<_> = (0..3)
        .map(|_| {
            c.command(&["-o", "json", "backup-vault", "show", "-v", "auto"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut r in racers {
        assert!(r.wait().unwrap().success());
    }
    c.backup("auto", "docs");
    ok(&c, "backup-vault check -v auto");
    let recs = stored_records(&c, &guid);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["kek"]["keyId"], kid2.as_str());
    assert_eq!(current("auto"), kid2);
    assert_eq!(
        enc(&ok(&c, "backup-vault show -v auto"))["keyVaultProperties"]["keyUri"],
        versionless.as_str()
    );
    assert_eq!(current("pinned"), kid);
    restore_identical(&c, "auto", &rp_auto, &src, "auto");
    restore_identical(&c, "pinned", &rp_pinned, &src, "pinned");
    // The pinned vault moves to the new version by update.
    ok(
        &c,
        &format!("backup-vault update -v pinned --cmk-encryption-key-uri {kid2}"),
    );
    assert_eq!(current("pinned"), kid2);

    // A rotation policy makes a new version (background work, 31 days later); the
    // next job of the versionless vault follows it.
    let policy = r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P30D"},"action":{"type":"Rotate"}}],
        "attributes":{"expiryTime":"P90D"}}"#;
    let mut set_policy: Vec<&str> = "keyvault key rotation-policy update --vault-name kv-rot -n k"
        .split_whitespace()
        .collect();
    set_policy.extend(["--value", policy]);
    at_day(&c, 0, &set_policy).ok();
    at_day(
        &c,
        31,
        &[
            "backup-instance",
            "adhoc-backup",
            "-v",
            "auto",
            "-n",
            "docs",
        ],
    )
    .ok();
    let show_key = [
        "keyvault",
        "key",
        "show",
        "--vault-name",
        "kv-rot",
        "-n",
        "k",
    ];
    let kid3 = at_day(&c, 31, &show_key).ok()["key"]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(kid3, kid2);
    let recs = stored_records(&c, &guid);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["kek"]["keyId"], kid3.as_str());
    restore_identical(&c, "auto", &rp_auto, &src, "auto-policy");
    assert_eq!(current("pinned"), kid2, "a versioned URI does not follow");

    // Crypto-shredding: once the deleted key is purged (after its retention period),
    // the vault's data is unreadable for good.
    ok(&c, "keyvault key delete --vault-name kv-rot -n k");
    let recover = [
        "keyvault",
        "key",
        "recover",
        "--vault-name",
        "kv-rot",
        "-n",
        "k",
    ];
    assert_eq!(at_day(&c, 8, &recover).code(), "KeyNotFound");
    let t = c.path("shredded");
    let restore = Coffer::restore_args("auto", "docs", &rp_auto, t.to_str().unwrap());
    assert_eq!(
        at_day(&c, 8, &restore).code(),
        "UserErrorCMKKeyVaultAuthFailure"
    );
    assert!(!t.exists());
}

/// Runs `coffer -o json ARGS` with the SoftHSM2 configuration `conf`.
fn with_token(c: &Coffer, conf: &std::path::Path, args: &[&str]) -> Out {
    let mut all = vec!["-o", "json"];
    all.extend(args);
    let mut cmd = c.command(&all);
    cmd.env("SOFTHSM2_CONF", conf);
    c.run_with(cmd, None)
}

/// `backup-instance adhoc-backup` of instance "docs" in vault "vlt".
const BACKUP: [&str; 6] = ["backup-instance", "adhoc-backup", "-v", "vlt", "-n", "docs"];

/// Creates CMK vault "vlt" (`create`: its `backup-vault create` line) on the token key
/// `kid`, checks the wrapped-DEK record (RSA-OAEP: SoftHSM2 lacks OAEP-SHA256), backs
/// up a source as instance "docs" and restores it identically; `run` runs `coffer`
/// with the token's configuration.
fn cmk_vault_on_token_key(c: &Coffer, run: &dyn Fn(&[&str]) -> Out, create: &str, kid: &str) {
    let v = run(&create.split_whitespace().collect::<Vec<_>>())
        .ok()
        .clone();
    let guid = v["properties"]["vaultId"].as_str().unwrap();
    let recs = stored_records(c, guid);
    assert_eq!(recs[0]["kek"]["keyId"], kid);
    assert_eq!(
        recs[0]["kek"]["algorithm"], "RSA-OAEP",
        "SoftHSM2 lacks OAEP-SHA256"
    );
    let src = source(c);
    c.dir_instance("vlt", "docs", &src);
    let rp = rp_id(run(&BACKUP).ok());
    let target = c.path("restored");
    run(&Coffer::restore_args(
        "vlt",
        "docs",
        &rp,
        target.to_str().unwrap(),
    ))
    .ok();
    assert_eq!(snapshot(&target), snapshot(&src));
}

#[test]
fn managed_hsm_key_with_local_rbac_wraps_with_rsa_oaep() {
    let c = Coffer::new();
    let Some((conf, pin)) = softhsm_token(&c) else {
        return;
    };
    let run = |args: &[&str]| with_token(&c, &conf, args);
    let line = |l: &str| run(&l.split_whitespace().collect::<Vec<_>>());
    let pin = pin.to_str().unwrap();
    line(&format!(
        "keyvault create --hsm-name hsm-c --pkcs11-module {SOFTHSM} --token-label coffer-test \
         --pin-file {pin} --enable-purge-protection true"
    ))
    .ok();
    let kid = line("keyvault key create --hsm-name hsm-c -n k --kty RSA-HSM").ok()["key"]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (uai, upid) = uami(&c, "uid1");
    let create = cmk_create_line("vlt", &uai, &kid, "");
    assert_eq!(
        line(&create).code(),
        "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault"
    );
    // `keyvault role assignment VERB` of the identity's local role on the key.
    let assignment = |verb: &str| {
        let role = "Managed HSM Crypto Service Encryption User";
        run(&[
            "keyvault",
            "role",
            "assignment",
            verb,
            "--hsm-name",
            "hsm-c",
            "--role",
            role,
            "--assignee",
            &upid,
            "--scope",
            "/keys/k",
        ])
    };
    assignment("create").ok();
    cmk_vault_on_token_key(&c, &run, &create, &kid);
    // Removing the identity's local role is refused without --force.
    assert_eq!(
        assignment("delete").code(),
        "UserErrorCMKIdentityInUseForEncryption"
    );
    run(&BACKUP).ok();
    line("keyvault key set-attributes --hsm-name hsm-c -n k --enabled false").ok();
    assert_eq!(run(&BACKUP).code(), "UserErrorCMKKeyDisabledOrExpired");
    line("keyvault key set-attributes --hsm-name hsm-c -n k --enabled true").ok();
    run(&BACKUP).ok();
}

#[cfg(feature = "failpoints")]
#[test]
fn a_key_change_stopped_at_each_failpoint_is_inconsistent_keeps_working_and_a_retry_repairs() {
    let c = Coffer::new();
    let (uai, _, kid) = identity_with_key(&c, "kv-fp", "");
    let guid = c.vault("vlt")["properties"]["vaultId"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        &c,
        &format!(
            "backup-vault update -v vlt --type UserAssigned --user-assigned-identities {{\"{uai}\":{{}}}}"
        ),
    );
    let src = source(&c);
    c.dir_instance("vlt", "docs", &src);
    let rp = rp_id(&c.backup("vlt", "docs"));
    let mut uri = kid;
    for (i, fp) in [
        "cmk-after-mark-inconsistent",
        "cmk-after-storage-write",
        "cmk-after-catalog-switch",
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            uri = ok(&c, "keyvault key rotate --vault-name kv-fp -n k")["key"]["kid"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        let update = format!(
            "backup-vault update -v vlt --cmk-encryption-key-uri {uri} --cmk-encryption-state Enabled \
             --cmk-identity-type UserAssigned --cmk-user-assigned-identity-id {uai}"
        );
        let mut args = vec!["-o", "json"];
        args.extend(update.split_whitespace());
        let mut cmd = c.command(&args);
        cmd.env("FAILPOINTS", format!("{fp}=return"));
        assert_eq!(c.run_with(cmd, None).code(), "InternalError", "{fp}");
        assert_eq!(
            enc(&ok(&c, "backup-vault show -v vlt"))["state"],
            "Inconsistent",
            "{fp}"
        );
        // The vault keeps working with its last good wrapped DEK.
        c.backup("vlt", "docs");
        restore_identical(&c, "vlt", &rp, &src, &format!("{fp}-during"));
        // Retrying the same update repairs it: one record, the new key's.
        let shown = ok(&c, &update);
        assert_eq!(enc(&shown)["state"], "Enabled", "{fp}");
        let recs = stored_records(&c, &guid);
        assert_eq!(recs.len(), 1, "{fp}: {recs:?}");
        assert_eq!(recs[0]["kek"]["keyId"], uri.as_str(), "{fp}");
        ok(&c, "backup-vault check -v vlt");
        restore_identical(&c, "vlt", &rp, &src, &format!("{fp}-after"));
    }
}

#[test]
fn a_pmk_vault_moves_to_another_group_and_a_cmk_vault_does_not() {
    let c = Coffer::new();
    let (uai, _, kid) = identity_with_key(&c, "kv-mv", "");
    ok(&c, "group create -n rg2");
    let src = source(&c);
    let before = c.vault("pmk");
    ok(&c, "backup-vault update -v pmk --type SystemAssigned");
    c.dir_instance("pmk", "docs", &src);
    let rp = rp_id(&c.backup("pmk", "docs"));
    let moved = ok(&c, "backup-vault move -v pmk --target-resource-group rg2");
    assert_ne!(moved["id"], before["id"]);
    assert!(
        moved["id"]
            .as_str()
            .unwrap()
            .contains("/resourceGroups/rg2/")
    );
    assert_eq!(
        moved["properties"]["vaultId"],
        before["properties"]["vaultId"]
    );
    assert_eq!(moved["identity"]["type"], "SystemAssigned");
    refused(&c, "backup-vault show -v pmk", "BackupVaultNotFound");
    let target = c.path("moved");
    c.run(&[
        "backup-instance",
        "restore",
        "-v",
        "pmk",
        "-g",
        "rg2",
        "-n",
        "docs",
        "--recovery-point",
        &rp,
        "--target",
        target.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(snapshot(&target), snapshot(&src));

    create_cmk(&c, "cmk", &uai, &kid, "").ok();
    let shown = ok(&c, "backup-vault show -v cmk");
    refused(
        &c,
        "backup-vault move -v cmk --target-resource-group rg2",
        "UserErrorCMKVaultMoveNotSupported",
    );
    assert_eq!(ok(&c, "backup-vault show -v cmk"), shown);
}

#[test]
fn infrastructure_encryption_adds_an_independent_layer_over_every_object() {
    let c = Coffer::new();
    let (uai, _, kid) = identity_with_key(&c, "kvinfra", "");
    let v = create_cmk(
        &c,
        "vinfra",
        &uai,
        &kid,
        "--cmk-infrastructure-encryption Enabled",
    )
    .ok()
    .clone();
    assert_eq!(enc(&v)["infrastructureEncryption"], "Enabled");
    let guid = v["properties"]["vaultId"].as_str().unwrap().to_owned();
    let src = source(&c);
    c.dir_instance("vinfra", "docs", &src);
    let rp = rp_id(&c.backup("vinfra", "docs"));
    restore_identical(&c, "vinfra", &rp, &src, "infra");
    ok(&c, "backup-vault check -v vinfra --read-data");

    // Every stored object carries the outer layer: none shows Coffer's own object
    // header, and the key that opens the layer exists (sealed) only for this vault.
    let storage = c.home.join("storage").join(&guid);
    let mut stack = vec![storage.clone()];
    let mut objects = 0;
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.ends_with("tmp") {
                    stack.push(p);
                }
            } else {
                let bytes = fs::read(&p).unwrap();
                assert_eq!(&bytes[..4], b"CFIE", "{}", p.display());
                objects += 1;
            }
        }
    }
    assert!(objects >= 5, "{objects} objects");
    let sealed = c.home.join("infra-keys").join(format!("{guid}.sealed"));
    assert!(sealed.is_file());

    // Without the infrastructure key the vault cannot be opened at all.
    let saved = fs::read(&sealed).unwrap();
    fs::remove_file(&sealed).unwrap();
    assert_eq!(
        c.restore("vinfra", "docs", &rp, &c.path("no-infra-key"))
            .code(),
        "EncryptionKeyUnavailable"
    );
    fs::write(&sealed, saved).unwrap();
    restore_identical(&c, "vinfra", &rp, &src, "infra-again");
}

#[test]
fn settings_are_listed_validated_and_the_administrators() {
    let c = Coffer::new();
    let list = ok(&c, "config list");
    let dek = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "dekCacheSeconds")
        .unwrap();
    assert_eq!(
        (dek["value"].as_u64(), dek["default"].as_u64()),
        (Some(300), Some(300))
    );
    assert_eq!(ok(&c, "config set dekCacheSeconds 2")[0]["value"], 2);
    refused(&c, "config set dekCacheSeconds 99999", "InvalidArgument");
    refused(&c, "config set noSuchSetting 1", "InvalidArgument");
    let (_, upid) = uami(&c, "someone");
    refused(
        &c,
        &format!("--as-principal {upid} config set dekCacheSeconds 1"),
        "AuthorizationFailed",
    );
    assert_eq!(ok(&c, "config unset dekCacheSeconds")[0]["value"], 300);
    let table = c.run(&["-o", "table", "config", "list"]);
    let text = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(text.contains("autorotationCheckSeconds"), "{text}");
}

/// A backup that runs longer than the DEK cache bound stops, with the code of the
/// cause, once the key is disabled during it; no recovery point appears; after the
/// key is enabled again the next backup succeeds.
#[test]
fn revocation_stops_a_running_backup_within_the_dek_cache_bound() {
    use std::io::Write;
    let c = Coffer::new();
    let (uai, _, kid) = identity_with_key(&c, "kv-dek", "");
    create_cmk(&c, "vlt", &uai, &kid, "").ok();
    c.stream_instance("vlt", "db");
    ok(&c, "config set dekCacheSeconds 1");
    let backup: Vec<&str> = "-o json backup-instance adhoc-backup -v vlt -n db --stdin"
        .split(' ')
        .collect();
    let mut child = c
        .command(&backup)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let block = common::pseudo_random(256 << 10, 3);
    stdin.write_all(&block).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    ok(
        &c,
        "keyvault key set-attributes --vault-name kv-dek -n k --enabled false",
    );
    // Keep the backup running for well over the bound (it may stop reading earlier).
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(4) {
        if stdin.write_all(&block).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        err["error"]["code"], "UserErrorCMKKeyDisabledOrExpired",
        "{err}"
    );
    ok(
        &c,
        "keyvault key set-attributes --vault-name kv-dek -n k --enabled true",
    );
    let rps = ok(&c, "recovery-point list -v vlt --backup-instance db");
    assert_eq!(rps.as_array().unwrap().len(), 0, "{rps}");
    c.run_stdin(&backup, &block).ok();
}

/// A new key version reaches a vault with a versionless URI through the key vault's
/// event at the start of any command (no job or `show` needed); a missed event is
/// caught by the scheduled check once `autorotationCheckSeconds` has passed.
#[test]
fn autorotation_follows_key_events_and_a_schedule() {
    let c = Coffer::new();
    let (uai, upid, kid) = identity_with_key(&c, "kv-ev", "");
    let versionless = kid.rsplit_once('/').unwrap().0.to_owned();
    let v = create_cmk(&c, "vlt", &uai, &versionless, "").ok().clone();
    let guid = v["properties"]["vaultId"].as_str().unwrap().to_owned();
    let wrapped_by = || {
        let recs = stored_records(&c, &guid);
        assert_eq!(recs.len(), 1, "{recs:?}");
        recs[0]["kek"]["keyId"].as_str().unwrap().to_owned()
    };
    let rotate = || {
        ok(&c, "keyvault key rotate --vault-name kv-ev -n k")["key"]["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(wrapped_by(), kid);
    // Event: an unrelated command's background work rewraps.
    let kid2 = rotate();
    assert_eq!(wrapped_by(), kid);
    ok(&c, "group list");
    assert_eq!(wrapped_by(), kid2);
    let log = ok(
        &c,
        &format!(
            "activity-log list --resource-id {}",
            v["id"].as_str().unwrap()
        ),
    );
    let entry = &log[0];
    assert_eq!(entry["caller"], upid.as_str(), "{entry}");
    assert_eq!(entry["httpMethod"], "PATCH");
    assert_eq!(entry["status"]["value"], "Succeeded");

    // A missed event: only the scheduled check (due after autorotationCheckSeconds) finds it.
    ok(&c, "config set autorotationCheckSeconds 3600");
    let kid3 = rotate();
    let db = rusqlite::Connection::open(c.home.join("catalog.db")).unwrap();
    db.execute(
        "INSERT INTO settings (name, value) SELECT 'state.autorotation.eventCursor', max(seq) \
         FROM key_events WHERE true ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [],
    )
    .unwrap();
    drop(db);
    ok(&c, "group list");
    assert_eq!(wrapped_by(), kid2, "no event, not due yet");
    at_day(&c, 1, &["group", "list"]).ok();
    assert_eq!(wrapped_by(), kid3);
}

/// A backup vault's customer-managed key can be an RSA-HSM key of a premium key
/// vault with a token: the DEK is wrapped (RSA-OAEP on SoftHSM2) and unwrapped in
/// the token, authorised by the key vault's access policy for the identity.
#[test]
fn rsa_hsm_key_of_a_premium_key_vault_with_a_token() {
    let c = Coffer::new();
    let Some((conf, pin)) = softhsm_token(&c) else {
        return;
    };
    let run = |args: &[&str]| with_token(&c, &conf, args);
    let line = |l: &str| run(&l.split_whitespace().collect::<Vec<_>>());
    line(&format!(
        "keyvault create -n kv-prem --sku premium --enable-rbac-authorization false \
         --enable-purge-protection true --pkcs11-module {SOFTHSM} --token-label coffer-test \
         --pin-file {}",
        pin.display()
    ))
    .ok();
    let key =
        line("keyvault key create --vault-name kv-prem -n k --kty RSA-HSM").ok()["key"].clone();
    assert_eq!(key["kty"], "RSA-HSM");
    let kid = key["kid"].as_str().unwrap().to_owned();
    let (uai, upid) = uami(&c, "uid1");
    let create = cmk_create_line("vlt", &uai, &kid, "");
    assert_eq!(
        line(&create).code(),
        "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault"
    );
    line(&format!(
        "keyvault set-policy -n kv-prem --object-id {upid} --key-permissions get wrapKey unwrapKey"
    ))
    .ok();
    cmk_vault_on_token_key(&c, &run, &create, &kid);
    // The unwraps happened in the key vault, as the identity, and were audited.
    let audit = line("keyvault audit list -n kv-prem").ok().clone();
    assert!(audit.as_array().unwrap().iter().any(|r| {
        r["callerPrincipalId"] == upid.as_str()
            && r["operationName"] == "unwrapKey"
            && r["result"] == "Succeeded"
    }));
    // Losing unwrapKey stops backups (with --force past the CMK guard).
    line(&format!(
        "keyvault delete-policy -n kv-prem --object-id {upid} --force"
    ))
    .ok();
    assert_eq!(
        run(&BACKUP).code(),
        "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault"
    );
}

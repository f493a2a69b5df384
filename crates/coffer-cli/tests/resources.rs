//! Black-box tests of the control plane through the CLI: resource groups,
//! backup vaults, backup instances, names, error codes and the error envelope.

mod common;

use common::Coffer;

#[test]
fn group_lifecycle() {
    let c = Coffer::new();
    let groups = c.run(&["group", "list"]).ok().clone();
    let names: Vec<_> = groups
        .as_array()
        .expect("array")
        .iter()
        .map(|g| g["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        names,
        ["default"],
        "the default group is created on first use"
    );

    let g = c.run(&["group", "create", "-n", "rg1"]).ok().clone();
    assert_eq!(g["name"], "rg1");
    let id = g["id"].as_str().expect("id");
    assert!(
        id.starts_with("/subscriptions/") && id.ends_with("/resourceGroups/rg1"),
        "{id}"
    );
    assert_eq!(c.run(&["group", "show", "-n", "rg1"]).ok()["id"], g["id"]);
    assert_eq!(
        c.run(&["group", "create", "-n", "RG1"]).code(),
        "ResourceAlreadyExists"
    );

    // A group holding a vault cannot be deleted.
    c.run(&["backup-vault", "create", "-v", "v1", "-g", "rg1"])
        .ok();
    assert_eq!(
        c.run(&["group", "delete", "-n", "rg1"]).code(),
        "ResourceGroupNotEmpty"
    );
    c.run(&["backup-vault", "delete", "-v", "v1", "-g", "rg1"])
        .ok();
    c.run(&["group", "delete", "-n", "rg1"]).ok();
    assert_eq!(
        c.run(&["group", "show", "-n", "rg1"]).code(),
        "ResourceGroupNotFound"
    );
    assert_eq!(
        c.run(&["group", "delete", "-n", "rg1"]).code(),
        "ResourceGroupNotFound"
    );
    assert_eq!(
        c.run(&["group", "create", "-n", "bad/name"]).code(),
        "InvalidResourceName"
    );
}

#[test]
fn vault_lifecycle_and_shape() {
    let c = Coffer::new();
    let v = c.vault("my-vault-1");
    let sub = c.run(&["group", "show", "-n", "default"]).ok()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        v["id"],
        format!("{sub}/providers/Microsoft.DataProtection/backupVaults/my-vault-1")
    );
    let shown = c
        .run(&["backup-vault", "show", "-v", "my-vault-1", "-o", "json"])
        .ok()
        .clone();
    assert_eq!(shown, v);
    assert_eq!(shown["name"], "my-vault-1");
    assert_eq!(shown["type"], "Microsoft.DataProtection/backupVaults");
    assert!(shown["location"].is_string());
    assert!(shown["tags"].is_object());
    assert_eq!(shown["identity"]["type"], "None");
    let props = &shown["properties"];
    assert_eq!(props["provisioningState"], "Succeeded");
    let sec = &props["securitySettings"];
    assert_eq!(sec["encryptionSettings"]["state"], "Disabled");
    assert!(sec["softDeleteSettings"]["state"].is_string());
    assert!(sec["immutabilitySettings"]["state"].is_string());
    let storage = props["storageSettings"]
        .as_array()
        .expect("storageSettings");
    assert_eq!(storage.len(), 1);
    assert_eq!(storage[0]["datastoreType"], "VaultStore");
    assert_eq!(storage[0]["type"], "LocallyRedundant");

    // Storage exists under the home, named by the vault's id.
    let guid = props["vaultId"].as_str().expect("vaultId");
    assert!(c.home.join("storage").join(guid).is_dir());

    // Names are unique per group, case-insensitively.
    assert_eq!(
        c.run(&["backup-vault", "create", "-v", "MY-VAULT-1"])
            .code(),
        "ResourceAlreadyExists"
    );

    // List, in all groups and in one.
    let all = c.run(&["backup-vault", "list"]).ok().clone();
    assert_eq!(all.as_array().map(Vec::len), Some(1));
    let in_default = c
        .run(&["backup-vault", "list", "-g", "default"])
        .ok()
        .clone();
    assert_eq!(in_default, all);

    // Table output is readable text, not JSON.
    let t = c.run(&["backup-vault", "list", "-o", "table"]);
    t.ok();
    let text = String::from_utf8_lossy(&t.stdout);
    assert!(
        text.contains("my-vault-1") && text.contains("Name"),
        "{text}"
    );

    // A vault with a backup instance cannot be deleted.
    let src = c.path("src");
    std::fs::create_dir(&src).expect("mkdir");
    c.dir_instance("my-vault-1", "docs", &src);
    assert_eq!(
        c.run(&["backup-vault", "delete", "-v", "my-vault-1"])
            .code(),
        "BackupVaultNotEmpty"
    );
    c.run(&[
        "backup-instance",
        "delete",
        "-v",
        "my-vault-1",
        "-n",
        "docs",
    ])
    .ok();
    c.run(&["backup-vault", "delete", "-v", "my-vault-1"]).ok();
    assert!(
        !c.home.join("storage").join(guid).exists(),
        "storage removed"
    );
    assert_eq!(
        c.run(&["backup-vault", "show", "-v", "my-vault-1"]).code(),
        "BackupVaultNotFound"
    );
}

#[test]
fn bad_vault_names_are_rejected_and_nothing_is_created() {
    let c = Coffer::new();
    c.run(&["group", "list"]).ok();
    let long = "a".repeat(51);
    for bad in [
        "a", "1vault", "-vault", "vault-", "my_vault", "my vault", "vault.1", "väult", &long,
        "v/x", "..",
    ] {
        // `--vault-name=VALUE` so that names starting with '-' reach the validation.
        let e = c
            .run(&["backup-vault", "create", &format!("--vault-name={bad}")])
            .err();
        assert_eq!(e["code"], "InvalidResourceName", "{bad:?}: {e}");
        let msg = e["message"].as_str().unwrap_or_default();
        assert!(msg.contains("2-50") && msg.contains("letter"), "{msg}");
    }
    let list = c.run(&["backup-vault", "list"]).ok().clone();
    assert_eq!(list.as_array().map(Vec::len), Some(0));
    let storage: Vec<_> = std::fs::read_dir(c.home.join("storage"))
        .expect("storage dir")
        .collect();
    assert!(storage.is_empty(), "no storage created: {storage:?}");
    // The limits themselves are fine.
    c.vault("ab");
    c.vault(&"b".repeat(50));
}

#[test]
fn unknown_resources_have_clear_codes() {
    let c = Coffer::new();
    assert_eq!(
        c.run(&["backup-vault", "show", "-v", "nope"]).code(),
        "BackupVaultNotFound"
    );
    assert_eq!(
        c.run(&["backup-vault", "show", "-v", "nope", "-g", "nogroup"])
            .code(),
        "ResourceGroupNotFound"
    );
    assert_eq!(
        c.run(&["backup-vault", "create", "-v", "vv", "-g", "nogroup"])
            .code(),
        "ResourceGroupNotFound"
    );
    assert_eq!(
        c.run(&["backup-vault", "list", "-g", "nogroup"]).code(),
        "ResourceGroupNotFound"
    );
    assert_eq!(
        c.run(&["job", "list", "-v", "nope"]).code(),
        "BackupVaultNotFound"
    );
    assert_eq!(
        c.run(&["backup-instance", "adhoc-backup", "-v", "nope", "-n", "x"])
            .code(),
        "BackupVaultNotFound"
    );
    c.vault("v1");
    for args in [
        &["backup-instance", "show", "-v", "v1", "-n", "nope"][..],
        &["backup-instance", "delete", "-v", "v1", "-n", "nope"][..],
        &["backup-instance", "adhoc-backup", "-v", "v1", "-n", "nope"][..],
        &[
            "recovery-point",
            "list",
            "-v",
            "v1",
            "--backup-instance",
            "nope",
        ][..],
    ] {
        assert_eq!(c.run(args).code(), "BackupInstanceNotFound", "{args:?}");
    }
    assert_eq!(
        c.run(&[
            "job",
            "show",
            "-v",
            "v1",
            "--job-id",
            "00000000-0000-0000-0000-000000000000"
        ])
        .code(),
        "JobNotFound"
    );
}

#[test]
fn datasource_paths_are_validated() {
    let c = Coffer::new();
    c.vault("v1");
    let missing = c.path("does-not-exist");
    let create = |name: &str, path: &str| {
        c.run(&[
            "backup-instance",
            "create",
            "-v",
            "v1",
            "-n",
            name,
            "--datasource-type",
            "Directory",
            "--datasource-path",
            path,
        ])
    };
    assert_eq!(
        create("a", missing.to_str().expect("utf-8")).code(),
        "DatasourceNotFound"
    );
    let rel = create("b", "relative/dir").err();
    assert_eq!(rel["code"], "InvalidArgument");
    assert!(
        rel["message"]
            .as_str()
            .unwrap_or_default()
            .contains("absolute"),
        "{rel}"
    );
    let file = c.path("file.txt");
    std::fs::write(&file, b"x").expect("write");
    assert_eq!(
        create("c", file.to_str().expect("utf-8")).code(),
        "InvalidArgument"
    );
    // Directory needs a path; Stream takes none.
    assert_eq!(
        c.run(&[
            "backup-instance",
            "create",
            "-v",
            "v1",
            "-n",
            "d",
            "--datasource-type",
            "Directory"
        ])
        .code(),
        "InvalidArgument"
    );
    assert_eq!(
        c.run(&[
            "backup-instance",
            "create",
            "-v",
            "v1",
            "-n",
            "e",
            "--datasource-type",
            "Stream",
            "--datasource-path",
            "/tmp"
        ])
        .code(),
        "InvalidArgument"
    );
    // Nothing was created.
    let list = c.run(&["backup-instance", "list", "-v", "v1"]).ok().clone();
    assert_eq!(list.as_array().map(Vec::len), Some(0));

    // A good one, and its shape.
    let src = c.path("src");
    std::fs::create_dir(&src).expect("mkdir");
    let bi = c.dir_instance("v1", "docs", &src);
    assert_eq!(bi["name"], "docs");
    assert_eq!(
        bi["type"],
        "Microsoft.DataProtection/backupVaults/backupInstances"
    );
    assert_eq!(
        bi["properties"]["dataSourceInfo"]["datasourceType"],
        "Directory"
    );
    assert_eq!(
        bi["properties"]["dataSourceInfo"]["resourceID"],
        src.to_str().expect("utf-8")
    );
    assert!(
        bi["id"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/backupVaults/v1/backupInstances/docs")
    );
    assert_eq!(
        create("docs", src.to_str().expect("utf-8")).code(),
        "ResourceAlreadyExists"
    );
    assert_eq!(
        c.run(&[
            "backup-instance",
            "create",
            "-v",
            "v1",
            "-n",
            "../x",
            "--datasource-type",
            "Stream"
        ])
        .code(),
        "InvalidResourceName"
    );
}

#[test]
fn error_envelope_and_formats() {
    let c = Coffer::new();
    // JSON (explicit): envelope on stderr, nothing on stdout, exit status 1.
    let out = c.run(&["backup-vault", "show", "-v", "missing", "-o", "json"]);
    let e = out.err();
    assert_eq!(e["code"], "BackupVaultNotFound");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("missing")
    );
    assert!(e["recommendedAction"].is_string());
    assert!(out.stdout.is_empty());

    // Table: `error[CODE]: message`.
    let out = c.run(&["backup-vault", "show", "-v", "missing", "-o", "table"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.starts_with("error[BackupVaultNotFound]: "),
        "{}",
        out.stderr
    );

    // Usage errors use the same envelope in JSON mode.
    let out = c.run(&[
        "backup-instance",
        "create",
        "-v",
        "v",
        "-n",
        "x",
        "--datasource-type",
        "Tape",
    ]);
    assert_eq!(out.code(), "InvalidArgument");

    // Help is helpful and succeeds.
    let help = c.run(&["--help"]);
    help.ok();
    let text = String::from_utf8_lossy(&help.stdout);
    for word in [
        "backup-vault",
        "backup-instance",
        "recovery-point",
        "--home",
        "master",
    ] {
        assert!(text.contains(word), "help lacks {word}: {text}");
    }
}

/// Backup vault operations are authorised for the calling principal with Azure RBAC:
/// nothing without a role; Reader reads (and sees only what it may read) but neither
/// backs up, restores nor deletes; a role at one backup instance's scope covers that
/// instance only; Contributor at the vault does everything there. Denials are
/// `AuthorizationFailed` and change nothing.
#[test]
fn backup_vault_operations_are_authorised_per_principal() {
    let c = Coffer::new();
    let src = c.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.txt"), b"rbac").unwrap();
    // `coffer -o json [--as-principal WHO] LINE` (LINE split on spaces).
    let run = |who: Option<&str>, line: &str| {
        let mut all = vec!["-o", "json"];
        if let Some(w) = who {
            all.extend(["--as-principal", w]);
        }
        all.extend(line.split_whitespace());
        c.run(&all)
    };
    let ok = |line: &str| run(None, line).ok().clone();
    ok("group create -n rg1");
    let vid = ok("backup-vault create -v v1 -g rg1")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok("backup-vault create -v v2 -g rg1");
    for n in ["a", "b"] {
        ok(&format!(
            "backup-instance create -v v1 -g rg1 -n {n} --datasource-type Directory \
             --datasource-path {}",
            src.display()
        ));
    }
    let backup = |n: &str| format!("backup-instance adhoc-backup -v v1 -g rg1 -n {n}");
    let rp = common::rp_id(&ok(&backup("a")));
    let principal = |name: &str| {
        ok(&format!("identity create -n {name}"))["principalId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (nobody, reader, operator) = (
        principal("nobody"),
        principal("reader"),
        principal("operator"),
    );
    let assign = |who: &str, role: &str, scope: &str| {
        ok(&format!(
            "role assignment create --role {role} --assignee {who} --scope {scope}"
        ));
    };
    assign(&reader, "Reader", &vid);
    assign(
        &operator,
        "Contributor",
        &format!("{vid}/backupInstances/b"),
    );
    let denied = |who: &str, line: &str| {
        assert_eq!(
            run(Some(who), line).code(),
            "AuthorizationFailed",
            "{who} {line}"
        );
    };
    let show = "backup-vault show -v v1 -g rg1";
    let rps_a = "recovery-point list -v v1 -g rg1 --backup-instance a";
    let target = c.path("restored");
    let restore_a = format!(
        "backup-instance restore -v v1 -g rg1 -n a --recovery-point {rp} --target {}",
        target.display()
    );
    let delete_v2 = "backup-vault delete -v v2 -g rg1";
    // No role: nothing, not even whether the vault exists.
    for line in [show, &backup("a"), rps_a, &restore_a, delete_v2] {
        denied(&nobody, line);
    }
    denied(&nobody, "backup-vault show -v no-such-vault -g rg1");
    denied(&nobody, "group create -n rg-nobody");
    denied(&nobody, "group delete -n rg1");
    denied(&nobody, "activity-log list");
    assert_eq!(
        run(Some(&nobody), "group list").ok(),
        &serde_json::json!([])
    );
    assert_eq!(
        run(Some(&nobody), "backup-vault list").ok(),
        &serde_json::json!([])
    );
    // Reader at v1: reads v1 (and lists only it), no backup, restore, update or delete.
    run(Some(&reader), show).ok();
    assert_eq!(run(Some(&reader), rps_a).ok().as_array().unwrap().len(), 1);
    run(Some(&reader), "job list -v v1 -g rg1").ok();
    // The activity log of v1, not everyone's.
    run(
        Some(&reader),
        &format!("activity-log list --resource-id {vid}"),
    )
    .ok();
    denied(&reader, "activity-log list");
    let listed = run(Some(&reader), "backup-vault list").ok().clone();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    for line in [
        &backup("a"),
        &restore_a,
        delete_v2,
        "backup-vault update -v v1 -g rg1 --type SystemAssigned",
    ] {
        denied(&reader, line);
    }
    // Contributor at instance b: backs up b, not a, and cannot read the vault.
    run(Some(&operator), &backup("b")).ok();
    denied(&operator, &backup("a"));
    denied(&operator, show);
    // The denials changed nothing.
    assert_eq!(run(None, rps_a).ok().as_array().unwrap().len(), 1);
    ok("backup-vault show -v v2 -g rg1");
    assert!(!target.exists());
    // Contributor at the vault: everything there.
    assign(&operator, "Contributor", &vid);
    run(Some(&operator), &backup("a")).ok();
    run(Some(&operator), &restore_a).ok();
}

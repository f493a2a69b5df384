//! Unit tests of the catalog.

use super::*;

fn group(name: &str) -> ResourceGroupRow {
    ResourceGroupRow {
        name: name.into(),
        location: "local".into(),
        created: "2026-01-01T00:00:00Z".into(),
        created_by: "p".into(),
        tags_json: "{}".into(),
    }
}

fn vault(guid: &str, name: &str, rg: &str) -> VaultRow {
    VaultRow {
        guid: guid.into(),
        name: name.into(),
        resource_group: rg.into(),
        location: "local".into(),
        created: "2026-01-01T00:00:00Z".into(),
        created_by: "p".into(),
        wrapped_key_json: "{}".into(),
        encryption_state: "Disabled".into(),
        storage_settings_json: "[]".into(),
        tags_json: "{}".into(),
    }
}

fn init(c: &Catalog) {
    let inst = InstanceRow {
        instance_id: "i".into(),
        subscription_id: "s".into(),
        tenant_id: "t".into(),
        admin_principal_id: "p".into(),
        created: "2026-01-01T00:00:00Z".into(),
        master_key_fingerprint: "fp".into(),
    };
    let pmk = PlatformKeyRow {
        key_id: "coffer:pmk:i/1".into(),
        sealed: vec![1, 2, 3],
        created: "2026-01-01T00:00:00Z".into(),
        active: true,
    };
    c.init_instance(&inst, &pmk, &group("default")).unwrap();
    // A second initialisation keeps the first.
    let mut other = inst.clone();
    other.instance_id = "j".into();
    assert_eq!(
        c.init_instance(&other, &pmk, &group("default"))
            .unwrap()
            .instance_id,
        "i"
    );
}

#[test]
fn groups_and_vaults() {
    let c = Catalog::open_in_memory().unwrap();
    init(&c);
    assert!(matches!(
        c.create_group(&group("DEFAULT")),
        Err(CatalogError::AlreadyExists { .. })
    ));
    c.create_group(&group("rg1")).unwrap();
    c.create_vault(&vault("g1", "v1", "rg1")).unwrap();
    assert!(matches!(
        c.create_vault(&vault("g2", "V1", "rg1")),
        Err(CatalogError::AlreadyExists { .. })
    ));
    assert_eq!(c.vault("RG1", "v1").unwrap().unwrap().guid, "g1");
    assert!(matches!(
        c.delete_group("rg1"),
        Err(CatalogError::NotEmpty { count: 1, .. })
    ));
    c.create_instance(&InstanceItemRow {
        guid: "bi1".into(),
        vault_guid: "g1".into(),
        name: "docs".into(),
        datasource_type: DatasourceType::Directory,
        datasource_path: Some("/x".into()),
        created: "t".into(),
        created_by: "p".into(),
    })
    .unwrap();
    assert!(matches!(
        c.delete_vault("g1"),
        Err(CatalogError::NotEmpty { .. })
    ));
    let rp = |id: &str, inst: &str| RecoveryPointRow {
        id: id.into(),
        instance_guid: inst.into(),
        time: 1,
        datastore: "VaultStore".into(),
        logical_bytes: 10,
        added_bytes: 5,
        file_count: 1,
        dir_count: 0,
        source_kind: "Directory".into(),
        state: "Completed".into(),
    };
    c.upsert_recovery_point(&rp("old", "bi1")).unwrap();
    let (added, removed) = c
        .reconcile_recovery_points("g1", &[rp("a", "bi1"), rp("b", "unknown")], &[])
        .unwrap();
    assert_eq!((added, removed), (1, 1));
    c.upsert_recovery_point(&rp("damaged", "bi1")).unwrap();
    let (added, removed) = c
        .reconcile_recovery_points("g1", &[rp("a", "bi1")], &["damaged".to_owned()])
        .unwrap();
    assert_eq!((added, removed), (0, 0));
    assert_eq!(c.vault_recovery_point_ids("g1").unwrap(), ["a", "damaged"]);
    assert!(c.delete_recovery_point("damaged").unwrap());
    let ids: Vec<_> = c
        .recovery_points("bi1")
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["a"]);
    assert!(c.delete_instance_item("bi1").unwrap());
    assert!(c.delete_vault("g1").unwrap());
    assert!(c.delete_group("rg1").unwrap());
    assert!(!c.delete_group("rg1").unwrap());
}

#[test]
fn jobs_round_trip() {
    let c = Catalog::open_in_memory().unwrap();
    init(&c);
    let job = JobRow {
        guid: "j1".into(),
        vault_guid: "g1".into(),
        instance_guid: Some("bi".into()),
        instance_name: Some("docs".into()),
        datasource_type: Some(DatasourceType::Stream),
        operation: JobOperation::Backup,
        status: JobStatus::InProgress,
        start_ms: 5,
        end_ms: None,
        bytes: 0,
        pid: Some(1),
        pid_start: None,
        error_code: None,
        error_message: None,
        recommended_action: None,
        warnings_json: "[]".into(),
        principal: "p".into(),
        recovery_point_id: None,
        recovery_point_time: None,
    };
    c.insert_job(&job).unwrap();
    assert_eq!(c.jobs_in_progress().unwrap().len(), 1);
    let fin = JobFinish {
        status: JobStatus::Failed,
        end_ms: 9,
        bytes: 0,
        error_code: Some("JobInterrupted".into()),
        error_message: Some("m".into()),
        recommended_action: None,
        warnings_json: "[]".into(),
        recovery_point_id: None,
        recovery_point_time: None,
    };
    assert!(c.finish_job_if_in_progress("j1", &fin).unwrap());
    assert!(!c.finish_job_if_in_progress("j1", &fin).unwrap());
    let got = c.job("g1", "j1").unwrap().unwrap();
    assert_eq!(got.status, JobStatus::Failed);
    assert_eq!(got.error_code.as_deref(), Some("JobInterrupted"));
}

#[test]
fn file_catalog_is_wal_and_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("catalog.db");
    let c = Catalog::open(&p).unwrap();
    let mode: String = c
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(c);
    let c = Catalog::open(&p).unwrap();
    let v: u32 = c
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn every_role_assignment_change_moves_the_change_counter() {
    let c = Catalog::open_in_memory().unwrap();
    let a = |id: &str, principal: &str, hsm: Option<&str>| RoleAssignmentRow {
        id: id.into(),
        role_definition_id: "r".into(),
        principal_id: principal.into(),
        scope: "/".into(),
        hsm_guid: hsm.map(str::to_owned),
        created: "2026-01-01T00:00:00Z".into(),
        created_by: "p".into(),
    };
    let mut last = c.role_assignments_generation().unwrap();
    let mut moved = |what: &str| {
        let now = c.role_assignments_generation().unwrap();
        assert_ne!(now, last, "{what}");
        last = now;
    };
    c.create_role_assignment(&a("a1", "x", None)).unwrap();
    moved("insert");
    c.create_role_assignment(&a("a2", "y", Some("hsm")))
        .unwrap();
    moved("insert (managed HSM)");
    assert!(c.delete_role_assignment("a1").unwrap());
    moved("delete");
    // A revoked assignment re-created under the same id is still a change.
    c.create_role_assignment(&a("a1", "x", None)).unwrap();
    moved("insert again");
    c.delete_principal("x").unwrap();
    moved("delete with the principal");
    c.conn
        .execute("UPDATE role_assignments SET scope = '/keys/k'", [])
        .unwrap();
    moved("update");
    // Other writes (e.g. audit records) leave it alone.
    let before = c.role_assignments_generation().unwrap();
    c.log_key_audit(&an_audit_record("v")).unwrap();
    assert_eq!(c.role_assignments_generation().unwrap(), before);
}

#[test]
fn every_key_vault_object_change_moves_its_change_counter() {
    let c = Catalog::open_in_memory().unwrap();
    let mut last = c.key_vault_objects_generation().unwrap();
    let role_generation = c.role_assignments_generation().unwrap();
    for (what, sql) in [
        (
            "vault insert",
            "INSERT INTO key_vaults (guid, name, resource_group, kind, location, created, \
             created_by, properties_json) VALUES ('g', 'kv', 'rg', 'vault', 'l', 't', 'p', '{}')",
        ),
        ("vault update", "UPDATE key_vaults SET deleted_ms = 1"),
        (
            "key insert",
            "INSERT INTO kv_keys (vault_guid, name, current_version, created_ms, updated_ms) \
             VALUES ('g', 'k', 'v1', 0, 0)",
        ),
        ("key update", "UPDATE kv_keys SET current_version = 'v2'"),
        (
            "version insert",
            "INSERT INTO kv_key_versions (vault_guid, name, version, kty, public_jwk_json, \
             attributes_json, sealed_private, created_ms, updated_ms) \
             VALUES ('g', 'k', 'v2', 'RSA', '{}', '{}', x'00', 0, 0)",
        ),
        (
            "version update",
            "UPDATE kv_key_versions SET attributes_json = '{\"enabled\":false}'",
        ),
        ("version delete", "DELETE FROM kv_key_versions"),
        ("key delete", "DELETE FROM kv_keys"),
        ("vault delete", "DELETE FROM key_vaults"),
    ] {
        c.conn.execute(sql, []).unwrap();
        let now = c.key_vault_objects_generation().unwrap();
        assert_ne!(now, last, "{what}");
        last = now;
    }
    assert_eq!(c.role_assignments_generation().unwrap(), role_generation);
    // Audit records leave it alone: the data plane writes one per call.
    c.log_key_audit(&an_audit_record("g")).unwrap();
    assert_eq!(c.key_vault_objects_generation().unwrap(), last);
}

/// A successful unwrapKey record of vault `vault_guid`.
pub(crate) fn an_audit_record(vault_guid: &str) -> KeyAuditRow {
    KeyAuditRow {
        seq: 0,
        vault_guid: vault_guid.into(),
        time_ms: 0,
        principal: "p".into(),
        operation: "unwrapKey".into(),
        key_name: None,
        key_version: None,
        result: "Succeeded".into(),
        error_code: None,
    }
}

/// A catalog of schema v7 keeps its key audit records in its own table: opening it
/// moves them, with their `seq`, to the audit database, and new records follow them.
#[test]
fn audit_records_of_an_older_catalog_move_to_the_audit_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    {
        let old = Connection::open(&path).unwrap();
        for sql in &schema::MIGRATIONS[..7] {
            old.execute_batch(sql).unwrap();
        }
        old.pragma_update(None, "user_version", 7).unwrap();
        for op in ["wrapKey", "unwrapKey", "decrypt"] {
            old.execute(
                "INSERT INTO kv_audit (vault_guid, time_ms, principal, operation, result) \
                 VALUES ('g', 1, 'p', ?1, 'Succeeded')",
                [op],
            )
            .unwrap();
        }
    }
    for _ in 0..2 {
        let c = Catalog::open(&path).unwrap();
        let moved = c.key_audit("g").unwrap();
        let ops: Vec<_> = moved
            .iter()
            .map(|a| (a.seq, a.operation.as_str()))
            .collect();
        assert_eq!(ops, [(1, "wrapKey"), (2, "unwrapKey"), (3, "decrypt")]);
        assert!(!c.has_table("kv_audit").unwrap());
    }
    let c = Catalog::open(&path).unwrap();
    c.log_key_audit(&an_audit_record("g")).unwrap();
    assert_eq!(c.key_audit("g").unwrap().last().unwrap().seq, 4);
    assert!(audit_database_path(&path).ends_with("catalog-audit.db"));
}

/// Audit records are committed to the audit database: the catalog itself does not
/// change, so its readers' page caches and kept rows stay valid.
#[test]
fn audit_commits_leave_the_catalog_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let c = Catalog::open(&path).unwrap();
    let reader = Connection::open(&path).unwrap();
    let version = |r: &Connection| -> i64 {
        r.query_row("PRAGMA data_version", [], |row| row.get(0))
            .unwrap()
    };
    let before = version(&reader);
    for _ in 0..5 {
        c.log_key_audit(&an_audit_record("g")).unwrap();
    }
    assert_eq!(version(&reader), before);
    assert_eq!(c.key_audit("g").unwrap().len(), 5);
    // A change to the catalog does move it.
    c.create_group(&group("rg")).unwrap();
    assert_ne!(version(&reader), before);
}

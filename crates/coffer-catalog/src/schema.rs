//! The catalog schema as numbered migrations. Migration `n` (1-based) brings a
//! database from `user_version = n - 1` to `n`. Never edit a released migration:
//! append a new one and bump [`SCHEMA_VERSION`].

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) const MIGRATIONS: [&str; 9] = [V1, V2, V3, V4, V5, V6, V7, V8, V9];

const V1: &str = r#"
CREATE TABLE instance (
    singleton              INTEGER PRIMARY KEY CHECK (singleton = 1),
    instance_id            TEXT NOT NULL,
    subscription_id        TEXT NOT NULL,
    tenant_id              TEXT NOT NULL,
    admin_principal_id     TEXT NOT NULL,
    created                TEXT NOT NULL,
    -- keyed hash of the master key, to detect a wrong key file; never the key
    master_key_fingerprint TEXT NOT NULL
);

CREATE TABLE platform_keys (
    key_id  TEXT PRIMARY KEY,
    -- the platform key sealed under the instance master key
    sealed  BLOB NOT NULL,
    created TEXT NOT NULL,
    active  INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE resource_groups (
    name       TEXT PRIMARY KEY COLLATE NOCASE,
    location   TEXT NOT NULL,
    created    TEXT NOT NULL,
    created_by TEXT NOT NULL,
    tags_json  TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE backup_vaults (
    guid                  TEXT PRIMARY KEY,
    name                  TEXT NOT NULL COLLATE NOCASE,
    resource_group        TEXT NOT NULL COLLATE NOCASE REFERENCES resource_groups(name),
    location              TEXT NOT NULL,
    created               TEXT NOT NULL,
    created_by            TEXT NOT NULL,
    -- the self-describing wrapped DEK record (no secret in the clear)
    wrapped_key_json      TEXT NOT NULL,
    encryption_state      TEXT NOT NULL,
    storage_settings_json TEXT NOT NULL,
    tags_json             TEXT NOT NULL DEFAULT '{}',
    UNIQUE (resource_group, name)
);

CREATE TABLE backup_instances (
    guid            TEXT PRIMARY KEY,
    vault_guid      TEXT NOT NULL REFERENCES backup_vaults(guid),
    name            TEXT NOT NULL COLLATE NOCASE,
    datasource_type TEXT NOT NULL CHECK (datasource_type IN ('Directory', 'Stream')),
    datasource_path TEXT,
    created         TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    UNIQUE (vault_guid, name)
);

CREATE TABLE recovery_points (
    id            TEXT PRIMARY KEY,
    instance_guid TEXT NOT NULL REFERENCES backup_instances(guid),
    time          INTEGER NOT NULL,
    datastore     TEXT NOT NULL,
    logical_bytes INTEGER NOT NULL,
    added_bytes   INTEGER NOT NULL,
    file_count    INTEGER NOT NULL,
    dir_count     INTEGER NOT NULL,
    source_kind   TEXT NOT NULL,
    state         TEXT NOT NULL
);
CREATE INDEX recovery_points_instance ON recovery_points (instance_guid, time);

CREATE TABLE jobs (
    guid                TEXT PRIMARY KEY,
    vault_guid          TEXT NOT NULL,
    instance_guid       TEXT,
    instance_name       TEXT,
    datasource_type     TEXT,
    operation           TEXT NOT NULL,
    status              TEXT NOT NULL,
    start_ms            INTEGER NOT NULL,
    end_ms              INTEGER,
    bytes               INTEGER NOT NULL DEFAULT 0,
    pid                 INTEGER,
    pid_start           INTEGER,
    error_code          TEXT,
    error_message       TEXT,
    recommended_action  TEXT,
    warnings_json       TEXT NOT NULL DEFAULT '[]',
    principal           TEXT NOT NULL,
    recovery_point_id   TEXT,
    recovery_point_time INTEGER
);
CREATE INDEX jobs_vault ON jobs (vault_guid, start_ms);
CREATE INDEX jobs_status ON jobs (status);

CREATE TABLE activity_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms     INTEGER NOT NULL,
    principal   TEXT NOT NULL,
    operation   TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    error_code  TEXT
);
"#;

/// Part 2: principals (the administrator, user- and system-assigned managed
/// identities), RBAC role assignments (ARM and managed-HSM local), key vaults,
/// keys and their immutable versions (private material sealed under the master
/// key), the key audit log and the key event feed.
const V2: &str = r#"
CREATE TABLE principals (
    principal_id      TEXT PRIMARY KEY COLLATE NOCASE,
    kind              TEXT NOT NULL CHECK (kind IN ('Administrator', 'UserAssigned', 'SystemAssigned')),
    name              TEXT COLLATE NOCASE,
    resource_group    TEXT COLLATE NOCASE,
    client_id         TEXT NOT NULL,
    -- SystemAssigned: the ARM id of the resource that owns the identity
    owner_resource_id TEXT COLLATE NOCASE,
    created           TEXT NOT NULL,
    created_by        TEXT NOT NULL,
    tags_json         TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX principals_user_assigned ON principals (resource_group, name)
    WHERE kind = 'UserAssigned';
CREATE UNIQUE INDEX principals_system_assigned ON principals (owner_resource_id)
    WHERE kind = 'SystemAssigned';

CREATE TABLE role_assignments (
    id                 TEXT PRIMARY KEY COLLATE NOCASE,
    role_definition_id TEXT NOT NULL COLLATE NOCASE,
    principal_id       TEXT NOT NULL COLLATE NOCASE,
    scope              TEXT NOT NULL COLLATE NOCASE,
    -- NULL: an Azure RBAC assignment; else the managed HSM whose local RBAC it belongs to
    hsm_guid           TEXT,
    created            TEXT NOT NULL,
    created_by         TEXT NOT NULL
);
CREATE INDEX role_assignments_principal ON role_assignments (principal_id);

CREATE TABLE key_vaults (
    guid               TEXT PRIMARY KEY,
    -- DNS-unique like Azure: a soft-deleted vault keeps its name until purged
    name               TEXT NOT NULL UNIQUE COLLATE NOCASE,
    resource_group     TEXT NOT NULL COLLATE NOCASE,
    kind               TEXT NOT NULL CHECK (kind IN ('vault', 'managedHSM')),
    location           TEXT NOT NULL,
    created            TEXT NOT NULL,
    created_by         TEXT NOT NULL,
    properties_json    TEXT NOT NULL,
    tags_json          TEXT NOT NULL DEFAULT '{}',
    deleted_ms         INTEGER,
    scheduled_purge_ms INTEGER
);

CREATE TABLE kv_keys (
    vault_guid           TEXT NOT NULL REFERENCES key_vaults(guid),
    name                 TEXT NOT NULL COLLATE NOCASE,
    current_version      TEXT NOT NULL,
    rotation_policy_json TEXT,
    created_ms           INTEGER NOT NULL,
    updated_ms           INTEGER NOT NULL,
    deleted_ms           INTEGER,
    scheduled_purge_ms   INTEGER,
    last_notify_ms       INTEGER,
    PRIMARY KEY (vault_guid, name)
);

CREATE TABLE kv_key_versions (
    vault_guid      TEXT NOT NULL,
    name            TEXT NOT NULL COLLATE NOCASE,
    version         TEXT NOT NULL COLLATE NOCASE,
    kty             TEXT NOT NULL,
    public_jwk_json TEXT NOT NULL,
    attributes_json TEXT NOT NULL,
    -- private key sealed under the instance master key (never in the clear)
    sealed_private  BLOB NOT NULL,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    PRIMARY KEY (vault_guid, name, version),
    FOREIGN KEY (vault_guid, name) REFERENCES kv_keys (vault_guid, name)
);

CREATE TABLE kv_audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    vault_guid  TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    principal   TEXT NOT NULL,
    operation   TEXT NOT NULL,
    key_name    TEXT,
    key_version TEXT,
    result      TEXT NOT NULL,
    error_code  TEXT
);
CREATE INDEX kv_audit_vault ON kv_audit (vault_guid, seq);

CREATE TABLE key_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms    INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    vault_guid TEXT NOT NULL,
    vault_name TEXT NOT NULL,
    key_name   TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    version    TEXT NOT NULL
);
"#;

/// Part 3: backup vault identities and customer-managed-key settings.
const V3: &str = r#"
CREATE TABLE vault_settings (
    vault_guid      TEXT PRIMARY KEY,
    identity_json   TEXT NOT NULL DEFAULT '{}',
    encryption_json TEXT
);
"#;

/// Part 3: the activity log records the HTTP method (PUT, PATCH, DELETE, POST) and a
/// correlation id of each operation.
const V4: &str = r#"
ALTER TABLE activity_log ADD COLUMN http_method TEXT;
ALTER TABLE activity_log ADD COLUMN correlation_id TEXT;
"#;

/// Part 3: instance-wide settings (`coffer config`) and the state of Coffer's
/// background work (event cursors, last scheduled checks), as name/value pairs.
const V5: &str = r#"
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// A change counter of the role assignments, bumped by triggers in the transaction of
/// every insert, update or delete, so a process can keep the assignments it read and
/// know at the cost of one row whether they are still current (a revocation takes
/// effect at the next authorization).
const V6: &str = r#"
CREATE TABLE change_counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO change_counters (name, value) VALUES ('role_assignments', 0);
CREATE TRIGGER role_assignments_inserted AFTER INSERT ON role_assignments BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'role_assignments';
END;
CREATE TRIGGER role_assignments_updated AFTER UPDATE ON role_assignments BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'role_assignments';
END;
CREATE TRIGGER role_assignments_deleted AFTER DELETE ON role_assignments BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'role_assignments';
END;
"#;

/// A change counter of key vaults, keys and key versions, bumped like the one of role
/// assignments (V6), so the data plane can keep the rows it read and check them at
/// the cost of one row per call.
const V7: &str = r#"
INSERT INTO change_counters (name, value) VALUES ('key_vault_objects', 0);
CREATE TRIGGER key_vaults_inserted AFTER INSERT ON key_vaults BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'key_vault_objects';
END;
CREATE TRIGGER key_vaults_updated AFTER UPDATE ON key_vaults BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'key_vault_objects';
END;
CREATE TRIGGER key_vaults_deleted AFTER DELETE ON key_vaults BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'key_vault_objects';
END;
CREATE TRIGGER kv_keys_inserted AFTER INSERT ON kv_keys BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'key_vault_objects';
END;
CREATE TRIGGER kv_keys_updated AFTER UPDATE ON kv_keys BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'key_vault_objects';
END;
CREATE TRIGGER kv_keys_deleted AFTER DELETE ON kv_keys BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'key_vault_objects';
END;
CREATE TRIGGER kv_key_versions_inserted AFTER INSERT ON kv_key_versions BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'key_vault_objects';
END;
CREATE TRIGGER kv_key_versions_updated AFTER UPDATE ON kv_key_versions BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'key_vault_objects';
END;
CREATE TRIGGER kv_key_versions_deleted AFTER DELETE ON kv_key_versions BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = 'key_vault_objects';
END;
"#;

/// The key audit records moved to a database of their own ([`AUDIT`]): an audit commit
/// (one per batch of key operations) no longer changes the catalog, so the readers'
/// page caches and snapshots of the catalog stay valid. `Catalog::migrate` copies the
/// records first; their table here goes.
pub(crate) const V8_VERSION: u32 = 8;
const V8: &str = r#"
DROP TABLE kv_audit;
"#;

/// No change of tables: from this version on, every process that writes the catalog
/// counts its commits in `{catalog}-commits` (`commits.rs`), which processes' caches of
/// catalog rows trust. A build without the count would write unseen: it refuses a
/// catalog of this version (`SchemaTooNew`).
const V9: &str = "-- no change of tables";

/// The audit database (`{catalog stem}-audit.db` beside the catalog): the key audit
/// records, `seq` continuing the catalog's former table.
pub(crate) const AUDIT: &str = r#"
CREATE TABLE IF NOT EXISTS kv_audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    vault_guid  TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    principal   TEXT NOT NULL,
    operation   TEXT NOT NULL,
    key_name    TEXT,
    key_version TEXT,
    result      TEXT NOT NULL,
    error_code  TEXT
);
CREATE INDEX IF NOT EXISTS kv_audit_vault ON kv_audit (vault_guid, seq);
"#;

//! The catalog schema as numbered migrations. Migration `n` (1-based) brings a
//! database from `user_version = n - 1` to `n`. Never edit a released migration:
//! append a new one and bump [`SCHEMA_VERSION`].

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) const MIGRATIONS: [&str; 1] = [V1];

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

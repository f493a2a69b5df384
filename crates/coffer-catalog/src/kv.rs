//! Catalog tables of part 2: principals, role assignments, key vaults, keys, key
//! versions (sealed private material only), the key audit log and key events.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{Catalog, CatalogError, PendingKeyAudit, Result, immediate_tx, is_unique_violation};

/// A principal: the administrator or a managed identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalRow {
    /// Object (principal) id, a GUID.
    pub principal_id: String,
    /// `Administrator`, `UserAssigned` or `SystemAssigned`.
    pub kind: String,
    /// Identity name (user-assigned).
    pub name: Option<String>,
    /// Resource group (user-assigned).
    pub resource_group: Option<String>,
    /// Client (application) id, a GUID.
    pub client_id: String,
    /// System-assigned: ARM id of the owning resource.
    pub owner_resource_id: Option<String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// Creating principal.
    pub created_by: String,
    /// Tags as a JSON object.
    pub tags_json: String,
}

/// A role assignment (Azure RBAC when `hsm_guid` is `None`, else managed-HSM local RBAC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignmentRow {
    /// Assignment name (a GUID).
    pub id: String,
    /// Role definition GUID.
    pub role_definition_id: String,
    /// Assignee.
    pub principal_id: String,
    /// Scope (ARM path, or `/` and `/keys/NAME` for local RBAC).
    pub scope: String,
    /// Managed HSM of a local assignment.
    pub hsm_guid: Option<String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// Creating principal.
    pub created_by: String,
}

/// A key vault or managed HSM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVaultRow {
    /// Immutable id.
    pub guid: String,
    /// Name (unique in the instance).
    pub name: String,
    /// Resource group.
    pub resource_group: String,
    /// `vault` or `managedHSM`.
    pub kind: String,
    /// Location label.
    pub location: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Creating principal.
    pub created_by: String,
    /// The vault's properties (settings, access policies, network ACLs) as JSON.
    pub properties_json: String,
    /// Tags as a JSON object.
    pub tags_json: String,
    /// When it was soft-deleted (unix ms).
    pub deleted_ms: Option<i64>,
    /// When a soft-deleted vault is purged (unix ms).
    pub scheduled_purge_ms: Option<i64>,
}

/// A key (the name; its versions are [`KeyVersionRow`]s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    /// Vault.
    pub vault_guid: String,
    /// Key name.
    pub name: String,
    /// The version the versionless id designates.
    pub current_version: String,
    /// Rotation policy JSON, if set.
    pub rotation_policy_json: Option<String>,
    /// Creation time (unix ms).
    pub created_ms: i64,
    /// Last update (unix ms).
    pub updated_ms: i64,
    /// Soft-deletion time (unix ms).
    pub deleted_ms: Option<i64>,
    /// Scheduled purge (unix ms).
    pub scheduled_purge_ms: Option<i64>,
    /// Last `Notify` lifetime action (unix ms).
    pub last_notify_ms: Option<i64>,
}

/// One immutable key version.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyVersionRow {
    /// Vault.
    pub vault_guid: String,
    /// Key name.
    pub name: String,
    /// 32 hex digits.
    pub version: String,
    /// `RSA`, `EC`, ...
    pub kty: String,
    /// Public JWK JSON.
    pub public_jwk_json: String,
    /// Attributes JSON (enabled, nbf, exp, key_ops, tags).
    pub attributes_json: String,
    /// Private key sealed under the master key.
    pub sealed_private: Vec<u8>,
    /// Creation (unix ms).
    pub created_ms: i64,
    /// Last attribute update (unix ms).
    pub updated_ms: i64,
}

impl std::fmt::Debug for KeyVersionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVersionRow")
            .field("vault_guid", &self.vault_guid)
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A key audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAuditRow {
    /// Sequence number (ignored on insert).
    pub seq: i64,
    /// Vault.
    pub vault_guid: String,
    /// Time (unix ms).
    pub time_ms: i64,
    /// Calling principal.
    pub principal: String,
    /// Operation, e.g. `wrapKey`.
    pub operation: String,
    /// Key name.
    pub key_name: Option<String>,
    /// Key version.
    pub key_version: Option<String>,
    /// `Succeeded` or `Failed`.
    pub result: String,
    /// Error code of a failure.
    pub error_code: Option<String>,
}

/// An event published for other parts of Coffer (e.g. a new key version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEventRow {
    /// Sequence number (ignored on insert); consumers remember the last one seen.
    pub seq: i64,
    /// Time (unix ms).
    pub time_ms: i64,
    /// `KeyNewVersionCreated` or `KeyNearExpiry`.
    pub event_type: String,
    /// Vault.
    pub vault_guid: String,
    /// Vault name.
    pub vault_name: String,
    /// Key name.
    pub key_name: String,
    /// Versioned key id.
    pub key_id: String,
    /// Version.
    pub version: String,
}

fn principal_from(r: &Row<'_>) -> rusqlite::Result<PrincipalRow> {
    Ok(PrincipalRow {
        principal_id: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        resource_group: r.get(3)?,
        client_id: r.get(4)?,
        owner_resource_id: r.get(5)?,
        created: r.get(6)?,
        created_by: r.get(7)?,
        tags_json: r.get(8)?,
    })
}
const PRINCIPAL_COLS: &str = "principal_id, kind, name, resource_group, client_id, \
    owner_resource_id, created, created_by, tags_json";

fn assignment_from(r: &Row<'_>) -> rusqlite::Result<RoleAssignmentRow> {
    Ok(RoleAssignmentRow {
        id: r.get(0)?,
        role_definition_id: r.get(1)?,
        principal_id: r.get(2)?,
        scope: r.get(3)?,
        hsm_guid: r.get(4)?,
        created: r.get(5)?,
        created_by: r.get(6)?,
    })
}
const ASSIGNMENT_COLS: &str =
    "id, role_definition_id, principal_id, scope, hsm_guid, created, created_by";

fn vault_from(r: &Row<'_>) -> rusqlite::Result<KeyVaultRow> {
    Ok(KeyVaultRow {
        guid: r.get(0)?,
        name: r.get(1)?,
        resource_group: r.get(2)?,
        kind: r.get(3)?,
        location: r.get(4)?,
        created: r.get(5)?,
        created_by: r.get(6)?,
        properties_json: r.get(7)?,
        tags_json: r.get(8)?,
        deleted_ms: r.get(9)?,
        scheduled_purge_ms: r.get(10)?,
    })
}
const VAULT_COLS: &str = "guid, name, resource_group, kind, location, created, created_by, \
    properties_json, tags_json, deleted_ms, scheduled_purge_ms";

fn key_from(r: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        vault_guid: r.get(0)?,
        name: r.get(1)?,
        current_version: r.get(2)?,
        rotation_policy_json: r.get(3)?,
        created_ms: r.get(4)?,
        updated_ms: r.get(5)?,
        deleted_ms: r.get(6)?,
        scheduled_purge_ms: r.get(7)?,
        last_notify_ms: r.get(8)?,
    })
}
const KEY_COLS: &str = "vault_guid, name, current_version, rotation_policy_json, created_ms, \
    updated_ms, deleted_ms, scheduled_purge_ms, last_notify_ms";

fn version_from(r: &Row<'_>) -> rusqlite::Result<KeyVersionRow> {
    Ok(KeyVersionRow {
        vault_guid: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        kty: r.get(3)?,
        public_jwk_json: r.get(4)?,
        attributes_json: r.get(5)?,
        sealed_private: r.get(6)?,
        created_ms: r.get(7)?,
        updated_ms: r.get(8)?,
    })
}
const VERSION_COLS: &str = "vault_guid, name, version, kty, public_jwk_json, attributes_json, \
    sealed_private, created_ms, updated_ms";

/// Every row of `sql` on `conn`, mapped by `f`.
fn query_all_on<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    p: P,
    f: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map(p, f)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

impl Catalog {
    fn query_all<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        p: P,
        f: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        query_all_on(&self.conn, sql, p, f)
    }

    fn query_one<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        p: P,
        f: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.conn.prepare_cached(sql)?.query_row(p, f).optional()?)
    }

    // --------------------------------------------------------------- principals

    /// Inserts a principal; `AlreadyExists` if the id or the identity name is taken.
    pub fn create_principal(&self, p: &PrincipalRow) -> Result<()> {
        let r = self.conn.execute(
            &format!(
                "INSERT INTO principals ({PRINCIPAL_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)"
            ),
            params![
                p.principal_id,
                p.kind,
                p.name,
                p.resource_group,
                p.client_id,
                p.owner_resource_id,
                p.created,
                p.created_by,
                p.tags_json
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(CatalogError::AlreadyExists {
                kind: "managed identity",
                name: p.name.clone().unwrap_or_else(|| p.principal_id.clone()),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Inserts a principal unless one with its id exists.
    pub fn ensure_principal(&self, p: &PrincipalRow) -> Result<()> {
        match self.create_principal(p) {
            Err(CatalogError::AlreadyExists { .. }) => Ok(()),
            other => other,
        }
    }

    /// A principal by id.
    pub fn principal(&self, id: &str) -> Result<Option<PrincipalRow>> {
        self.query_one(
            &format!("SELECT {PRINCIPAL_COLS} FROM principals WHERE principal_id = ?1"),
            [id],
            principal_from,
        )
    }

    /// A user-assigned identity by group and name.
    pub fn user_identity(&self, group: &str, name: &str) -> Result<Option<PrincipalRow>> {
        self.query_one(
            &format!(
                "SELECT {PRINCIPAL_COLS} FROM principals WHERE kind = 'UserAssigned' \
                 AND resource_group = ?1 AND name = ?2"
            ),
            [group, name],
            principal_from,
        )
    }

    /// All principals, by kind then name.
    pub fn principals(&self) -> Result<Vec<PrincipalRow>> {
        self.query_all(
            &format!("SELECT {PRINCIPAL_COLS} FROM principals ORDER BY kind, resource_group, name"),
            [],
            principal_from,
        )
    }

    /// Deletes a principal and its role assignments.
    pub fn delete_principal(&self, id: &str) -> Result<bool> {
        let tx = self.tx()?;
        tx.execute("DELETE FROM role_assignments WHERE principal_id = ?1", [id])?;
        let n = tx.execute("DELETE FROM principals WHERE principal_id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    // --------------------------------------------------------- role assignments

    /// Inserts a role assignment.
    pub fn create_role_assignment(&self, a: &RoleAssignmentRow) -> Result<()> {
        let r = self.conn.execute(
            &format!(
                "INSERT INTO role_assignments ({ASSIGNMENT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"
            ),
            params![
                a.id,
                a.role_definition_id,
                a.principal_id,
                a.scope,
                a.hsm_guid,
                a.created,
                a.created_by
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(CatalogError::AlreadyExists {
                kind: "role assignment",
                name: a.id.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The change counter of the role assignments: any insert, update or delete of an
    /// assignment (Azure RBAC or managed-HSM local) commits a new value with it. Read
    /// it before the assignments it validates.
    pub fn role_assignments_generation(&self) -> Result<i64> {
        self.change_counter("role_assignments")
    }

    /// The change counter of key vaults, keys and key versions (any insert, update
    /// or delete of one commits a new value with it). Read it before the rows it
    /// validates.
    pub fn key_vault_objects_generation(&self) -> Result<i64> {
        self.change_counter("key_vault_objects")
    }

    fn change_counter(&self, name: &str) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM change_counters WHERE name = ?1")?
            .query_row([name], |r| r.get(0))?)
    }

    /// Role assignments of Azure RBAC (`hsm_guid = None`) or of one managed HSM.
    pub fn role_assignments(&self, hsm_guid: Option<&str>) -> Result<Vec<RoleAssignmentRow>> {
        match hsm_guid {
            None => self.query_all(
                &format!(
                    "SELECT {ASSIGNMENT_COLS} FROM role_assignments WHERE hsm_guid IS NULL ORDER BY created, id"
                ),
                [],
                assignment_from,
            ),
            Some(h) => self.query_all(
                &format!(
                    "SELECT {ASSIGNMENT_COLS} FROM role_assignments WHERE hsm_guid = ?1 ORDER BY created, id"
                ),
                [h],
                assignment_from,
            ),
        }
    }

    /// Deletes a role assignment by id.
    pub fn delete_role_assignment(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM role_assignments WHERE id = ?1", [id])?
            > 0)
    }

    // --------------------------------------------------------------- key vaults

    /// Inserts a key vault; `AlreadyExists` if the name is taken (also by a deleted vault).
    pub fn create_key_vault(&self, v: &KeyVaultRow) -> Result<()> {
        let r = self.conn.execute(
            &format!(
                "INSERT INTO key_vaults ({VAULT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
            ),
            params![
                v.guid,
                v.name,
                v.resource_group,
                v.kind,
                v.location,
                v.created,
                v.created_by,
                v.properties_json,
                v.tags_json,
                v.deleted_ms,
                v.scheduled_purge_ms
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(CatalogError::AlreadyExists {
                kind: "key vault",
                name: v.name.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// A key vault (deleted or not) by name.
    pub fn key_vault(&self, name: &str) -> Result<Option<KeyVaultRow>> {
        self.query_one(
            &format!("SELECT {VAULT_COLS} FROM key_vaults WHERE name = ?1"),
            [name],
            vault_from,
        )
    }

    /// A key vault by guid.
    pub fn key_vault_by_guid(&self, guid: &str) -> Result<Option<KeyVaultRow>> {
        self.query_one(
            &format!("SELECT {VAULT_COLS} FROM key_vaults WHERE guid = ?1"),
            [guid],
            vault_from,
        )
    }

    /// All key vaults and managed HSMs (deleted ones included), by name.
    pub fn key_vaults(&self) -> Result<Vec<KeyVaultRow>> {
        self.query_all(
            &format!("SELECT {VAULT_COLS} FROM key_vaults ORDER BY name"),
            [],
            vault_from,
        )
    }

    /// Rewrites a vault's mutable columns.
    pub fn update_key_vault(&self, v: &KeyVaultRow) -> Result<()> {
        self.conn.execute(
            "UPDATE key_vaults SET properties_json = ?2, tags_json = ?3, deleted_ms = ?4, \
             scheduled_purge_ms = ?5 WHERE guid = ?1",
            params![
                v.guid,
                v.properties_json,
                v.tags_json,
                v.deleted_ms,
                v.scheduled_purge_ms
            ],
        )?;
        Ok(())
    }

    /// Removes a vault, its keys and versions (sealed material included) and its local
    /// role assignments. The audit log stays.
    pub fn purge_key_vault(&self, guid: &str) -> Result<()> {
        let tx = self.tx()?;
        tx.execute("DELETE FROM kv_key_versions WHERE vault_guid = ?1", [guid])?;
        tx.execute("DELETE FROM kv_keys WHERE vault_guid = ?1", [guid])?;
        tx.execute("DELETE FROM role_assignments WHERE hsm_guid = ?1", [guid])?;
        tx.execute("DELETE FROM key_vaults WHERE guid = ?1", [guid])?;
        tx.commit()?;
        Ok(())
    }

    // --------------------------------------------------------------------- keys

    /// Adds a version and makes it current, creating the key if needed.
    pub fn add_key_version(&self, v: &KeyVersionRow) -> Result<()> {
        let tx = self.tx()?;
        tx.execute(
            "INSERT INTO kv_keys (vault_guid, name, current_version, created_ms, updated_ms) \
             VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (vault_guid, name) DO UPDATE SET \
             current_version = excluded.current_version, updated_ms = excluded.updated_ms",
            params![v.vault_guid, v.name, v.version, v.created_ms],
        )?;
        tx.execute(
            &format!(
                "INSERT INTO kv_key_versions ({VERSION_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)"
            ),
            params![
                v.vault_guid,
                v.name,
                v.version,
                v.kty,
                v.public_jwk_json,
                v.attributes_json,
                v.sealed_private,
                v.created_ms,
                v.updated_ms
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A key (deleted or not).
    pub fn key(&self, vault_guid: &str, name: &str) -> Result<Option<KeyRow>> {
        self.query_one(
            &format!("SELECT {KEY_COLS} FROM kv_keys WHERE vault_guid = ?1 AND name = ?2"),
            [vault_guid, name],
            key_from,
        )
    }

    /// All keys of a vault (deleted ones included), by name; `None`: of every vault.
    pub fn keys(&self, vault_guid: Option<&str>) -> Result<Vec<KeyRow>> {
        match vault_guid {
            Some(g) => self.query_all(
                &format!("SELECT {KEY_COLS} FROM kv_keys WHERE vault_guid = ?1 ORDER BY name"),
                [g],
                key_from,
            ),
            None => self.query_all(
                &format!("SELECT {KEY_COLS} FROM kv_keys ORDER BY vault_guid, name"),
                [],
                key_from,
            ),
        }
    }

    /// Rewrites a key's mutable columns.
    pub fn update_key(&self, k: &KeyRow) -> Result<()> {
        self.conn.execute(
            "UPDATE kv_keys SET rotation_policy_json = ?3, updated_ms = ?4, deleted_ms = ?5, \
             scheduled_purge_ms = ?6, last_notify_ms = ?7 WHERE vault_guid = ?1 AND name = ?2",
            params![
                k.vault_guid,
                k.name,
                k.rotation_policy_json,
                k.updated_ms,
                k.deleted_ms,
                k.scheduled_purge_ms,
                k.last_notify_ms
            ],
        )?;
        Ok(())
    }

    /// One key version.
    pub fn key_version(
        &self,
        vault_guid: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<KeyVersionRow>> {
        self.query_one(
            &format!(
                "SELECT {VERSION_COLS} FROM kv_key_versions WHERE vault_guid = ?1 AND name = ?2 AND version = ?3"
            ),
            [vault_guid, name, version],
            version_from,
        )
    }

    /// All versions of a key, oldest first.
    pub fn key_versions(&self, vault_guid: &str, name: &str) -> Result<Vec<KeyVersionRow>> {
        self.query_all(
            &format!(
                "SELECT {VERSION_COLS} FROM kv_key_versions WHERE vault_guid = ?1 AND name = ?2 \
                 ORDER BY created_ms, rowid"
            ),
            [vault_guid, name],
            version_from,
        )
    }

    /// Rewrites a version's attributes.
    pub fn update_key_version_attributes(
        &self,
        vault_guid: &str,
        name: &str,
        version: &str,
        attributes_json: &str,
        updated_ms: i64,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE kv_key_versions SET attributes_json = ?4, updated_ms = ?5 \
             WHERE vault_guid = ?1 AND name = ?2 AND version = ?3",
            params![vault_guid, name, version, attributes_json, updated_ms],
        )?;
        Ok(())
    }

    /// Destroys a key and all its versions (sealed material included).
    pub fn purge_key(&self, vault_guid: &str, name: &str) -> Result<()> {
        let tx = self.tx()?;
        tx.execute(
            "DELETE FROM kv_key_versions WHERE vault_guid = ?1 AND name = ?2",
            [vault_guid, name],
        )?;
        tx.execute(
            "DELETE FROM kv_keys WHERE vault_guid = ?1 AND name = ?2",
            [vault_guid, name],
        )?;
        tx.commit()?;
        Ok(())
    }

    // ------------------------------------------------------------ audit, events

    /// Appends a key audit record and returns once it is durable. Records of
    /// concurrent callers in this process (any [`Catalog`] on the same database) are
    /// written together by the process's committer thread, one transaction and one WAL
    /// sync a batch (`audit.rs`); an error means the record is not known to be durable
    /// (a failed write leaves no record of its batch; after a failed sync the records
    /// may be in the log). Inside a transaction of this connection, the record becomes
    /// part of that transaction instead.
    pub fn log_key_audit(&self, a: &KeyAuditRow) -> Result<()> {
        self.begin_key_audit(a)?.wait().map(drop)
    }

    /// Hands `a` to the group committer and returns at once: [`PendingKeyAudit::wait`]
    /// returns its `seq` once it is durable, so the caller can do its work meanwhile.
    /// Without a committer (in memory) the record is written before this returns.
    pub fn begin_key_audit(&self, a: &KeyAuditRow) -> Result<PendingKeyAudit> {
        match &self.audit {
            Some(c) => c.submit(a.clone()),
            None => Ok(PendingKeyAudit::written(
                insert_key_audit(self.audit_db()?, [a])?[0],
            )),
        }
    }

    /// Rewrites the result and error code of the audit record `seq` (an operation
    /// recorded before it was made, that then failed); durable when it returns.
    pub fn amend_key_audit(&self, seq: i64, result: &str, error_code: Option<&str>) -> Result<()> {
        let audit = self.audit_db()?;
        if let Some(e) = injected_failure("kv-audit-amend", audit.path().unwrap_or_default()) {
            return Err(e);
        }
        let n = audit.execute(
            "UPDATE kv_audit SET result = ?2, error_code = ?3 WHERE seq = ?1",
            params![seq, result, error_code],
        )?;
        if n == 1 {
            Ok(())
        } else {
            Err(CatalogError::Invalid(format!("no key audit record {seq}")))
        }
    }

    /// A vault's audit records, oldest first.
    pub fn key_audit(&self, vault_guid: &str) -> Result<Vec<KeyAuditRow>> {
        query_all_on(
            self.audit_db()?,
            "SELECT seq, vault_guid, time_ms, principal, operation, key_name, key_version, result, \
             error_code FROM kv_audit WHERE vault_guid = ?1 ORDER BY seq",
            [vault_guid],
            |r| {
                Ok(KeyAuditRow {
                    seq: r.get(0)?,
                    vault_guid: r.get(1)?,
                    time_ms: r.get(2)?,
                    principal: r.get(3)?,
                    operation: r.get(4)?,
                    key_name: r.get(5)?,
                    key_version: r.get(6)?,
                    result: r.get(7)?,
                    error_code: r.get(8)?,
                })
            },
        )
    }

    /// Publishes a key event.
    pub fn publish_key_event(&self, e: &KeyEventRow) -> Result<()> {
        self.conn.execute(
            "INSERT INTO key_events (time_ms, event_type, vault_guid, vault_name, key_name, key_id, \
             version) VALUES (?1,?2,?3,?4,?5,?6,?7)",
            params![
                e.time_ms,
                e.event_type,
                e.vault_guid,
                e.vault_name,
                e.key_name,
                e.key_id,
                e.version
            ],
        )?;
        Ok(())
    }

    /// Events with a sequence number greater than `after`, oldest first.
    pub fn key_events_since(&self, after: i64) -> Result<Vec<KeyEventRow>> {
        self.query_all(
            "SELECT seq, time_ms, event_type, vault_guid, vault_name, key_name, key_id, version \
             FROM key_events WHERE seq > ?1 ORDER BY seq",
            [after],
            |r| {
                Ok(KeyEventRow {
                    seq: r.get(0)?,
                    time_ms: r.get(1)?,
                    event_type: r.get(2)?,
                    vault_guid: r.get(3)?,
                    vault_name: r.get(4)?,
                    key_name: r.get(5)?,
                    key_id: r.get(6)?,
                    version: r.get(7)?,
                })
            },
        )
    }
}

/// Inserts audit records in one transaction of `conn` (or in the transaction `conn` is
/// in). Durable when it returns if `conn` commits with `synchronous=FULL`; the group
/// committer's connection commits with `synchronous=NORMAL` and syncs the WAL itself.
/// The fail point `kv-audit-commit=return(TEXT)` fails it for databases whose path
/// contains TEXT, `return` for all.
pub(crate) fn insert_key_audit<'a>(
    conn: &Connection,
    rows: impl IntoIterator<Item = &'a KeyAuditRow>,
) -> Result<Vec<i64>> {
    if let Some(e) = injected_failure("kv-audit-commit", conn.path().unwrap_or_default()) {
        return Err(e);
    }
    let tx = if conn.is_autocommit() {
        Some(immediate_tx(conn)?)
    } else {
        None
    };
    let mut seqs = Vec::new();
    {
        let mut st = conn.prepare_cached(
            "INSERT INTO kv_audit (vault_guid, time_ms, principal, operation, key_name, \
             key_version, result, error_code) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
        )?;
        for a in rows {
            seqs.push(st.insert(params![
                a.vault_guid,
                a.time_ms,
                a.principal,
                a.operation,
                a.key_name,
                a.key_version,
                a.result,
                a.error_code
            ])?);
        }
    }
    if let Some(tx) = tx {
        tx.commit()?;
    }
    Ok(seqs)
}

/// The error of the test fail point `name` when it is set to `return` or to
/// `return(TEXT)` with TEXT in `path` (a database's path).
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub(crate) fn injected_failure(name: &str, path: &str) -> Option<CatalogError> {
    fail::fail_point!(name, |only: Option<String>| {
        only.is_none_or(|p| path.contains(&p))
            .then(|| CatalogError::Invalid(format!("injected failure: fail point {name}")))
    });
    None
}

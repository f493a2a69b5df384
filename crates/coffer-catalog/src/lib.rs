//! Coffer's embedded catalog: the control plane's record of the instance, its
//! resource groups, backup vaults, backup instances, recovery points and jobs.
//!
//! The catalog is one SQLite database (`catalog.db`) in WAL mode with
//! `synchronous=FULL` and a busy timeout, so several `coffer` processes can use it
//! at once; the key audit records live in a second one beside it
//! (`catalog-audit.db`, [`audit_database_path`]), written by the group committer.
//! All SQL lives in this crate; callers get typed rows and typed functions. The catalog knows nothing about the storage engine or key material:
//! it stores sealed/wrapped blobs and fingerprints only, never a key in the clear.
//!
//! Schema changes are applied by [`Catalog::open`] through numbered migrations
//! recorded in SQLite's `user_version` (see [`SCHEMA_VERSION`]).

mod audit;
mod commits;
mod kv;
mod rows;
mod schema;
mod settings;

use std::{
    cell::OnceCell,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

pub use audit::{MAX_BATCH as MAX_AUDIT_BATCH, PendingKeyAudit};
pub use kv::*;
pub use rows::*;
pub use schema::SCHEMA_VERSION;
pub use settings::VaultSettingsRow;

/// Catalog failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// SQLite failed (I/O, busy beyond the timeout, corruption, ...).
    #[error("catalog database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A resource with this name already exists.
    #[error("{kind} '{name}' already exists")]
    AlreadyExists {
        /// Resource kind, e.g. "resource group".
        kind: &'static str,
        /// The conflicting name.
        name: String,
    },
    /// A resource cannot be deleted because it still contains others.
    #[error("{kind} '{name}' is not empty: it still contains {count} {contained}")]
    NotEmpty {
        /// Resource kind of the container.
        kind: &'static str,
        /// Its name.
        name: String,
        /// How many contained resources remain.
        count: u64,
        /// What they are, e.g. "backup vault(s)".
        contained: &'static str,
    },
    /// The database was written by a newer Coffer.
    #[error(
        "catalog schema version {found} is newer than this build supports ({supported}); upgrade coffer"
    )]
    SchemaTooNew {
        /// Version found in the database.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// A stored value does not parse (e.g. an unknown enum string).
    #[error("catalog holds an invalid value: {0}")]
    Invalid(String),
    /// A file beside the catalog database could not be opened or mapped.
    #[error("catalog file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The commit of a batch of key audit records failed: every caller whose record
    /// was in the batch gets this error (the shared cause).
    #[error("the key audit record could not be committed: {0}")]
    AuditCommit(Arc<CatalogError>),
}

/// Result alias of this crate.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// An open catalog. Cheap methods take `&self`; multi-statement changes run in
/// `BEGIN IMMEDIATE` transactions so concurrent processes serialise cleanly.
pub struct Catalog {
    conn: Connection,
    /// The audit database's file ([`audit_database_path`]; none in memory).
    audit_path: Option<PathBuf>,
    /// This catalog's connection to the audit database, opened at first use.
    audit_db: OnceCell<Connection>,
    /// The group committer of key audit records this process shares for the
    /// audit database file (none in memory).
    audit: Option<Arc<audit::AuditCommitter>>,
    /// The count of commits by every process, which this connection's commits move
    /// (none in memory).
    commits: Option<commits::CommitCounter>,
}

/// The file of the key audit records of the catalog at `path`: `{stem}-audit.db` beside
/// it (`catalog-audit.db` for `catalog.db`), in WAL mode like the catalog.
pub fn audit_database_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "catalog".into(), |s| s.to_string_lossy());
    path.with_file_name(format!("{stem}-audit.db"))
}

/// A connection to the audit database at `path` (created owner-only if missing, its
/// table created if missing), committing with `synchronous`.
pub(crate) fn open_audit_database(path: &Path, synchronous: &str) -> Result<Connection> {
    use std::os::unix::fs::OpenOptionsExt;
    // SQLite gives the -wal/-shm files the database file's mode.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| CatalogError::Invalid(format!("audit database {}: {e}", path.display())))?;
    let conn = connect(path, synchronous)?;
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kv_audit'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        let tx = immediate_tx(&conn)?;
        tx.execute_batch(schema::AUDIT)?;
        tx.commit()?;
    }
    Ok(conn)
}

/// A read snapshot of the catalog ([`Catalog::read_snapshot`]); ends when dropped.
pub struct ReadSnapshot<'a>(Option<&'a Connection>);

impl Drop for ReadSnapshot<'_> {
    fn drop(&mut self) {
        // A cached statement: `execute_batch` would parse "COMMIT" on every call.
        if let Some(conn) = self.0
            && conn
                .prepare_cached("COMMIT")
                .and_then(|mut st| st.execute([]))
                .is_err()
        {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

impl std::fmt::Debug for ReadSnapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSnapshot").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

/// How long a statement waits for another process's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Retries after `n` earlier tries of a statement that found another connection
/// holding the write lock: up to [`BUSY_TIMEOUT`] in all, in 50 µs steps for the first
/// 5 ms, then 1 ms steps. (SQLite's own handler sleeps 1, 2, 5, 10, ... ms, many
/// times longer than the commit being waited for, e.g. a key vault audit record.)
fn busy_wait(n: i32) -> bool {
    const FINE_STEPS: u32 = 100;
    const FINE: Duration = Duration::from_micros(50);
    const COARSE: Duration = Duration::from_millis(1);
    let n = n.max(0) as u32;
    let waited = if n < FINE_STEPS {
        FINE * n
    } else {
        FINE * FINE_STEPS + COARSE * (n - FINE_STEPS)
    };
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(if n < FINE_STEPS { FINE } else { COARSE });
    true
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation
                && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
}

/// A connection to the catalog database at `path`, in WAL mode, waiting on other
/// processes' locks, committing with `synchronous` (`FULL` or `NORMAL`).
fn connect(path: &Path, synchronous: &str) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_handler(Some(busy_wait))?;
    // journal_mode returns a row; WAL persists in the file once set. While other
    // processes open, initialise or close the same database, SQLite may report this
    // statement busy at once, without calling the busy handler: retry it as the
    // handler would.
    let mut attempt = 0;
    while let Err(e) = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
        if !(is_busy(&e) && busy_wait(attempt)) {
            return Err(e.into());
        }
        attempt += 1;
    }
    conn.pragma_update(None, "synchronous", synchronous)?;
    Ok(conn)
}

/// Starts a write transaction on `conn` (taking the write lock at once).
fn immediate_tx(conn: &Connection) -> Result<Transaction<'_>> {
    Ok(Transaction::new_unchecked(
        conn,
        TransactionBehavior::Immediate,
    )?)
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = connect(path, "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Every process that writes the catalog counts its commits, or other processes'
        // caches could miss them: no counter, no catalog.
        let commits = commits::CommitCounter::open(path).map_err(|source| CatalogError::File {
            path: commits::commits_path(path),
            source,
        })?;
        commits.count_commits_of(&mut conn)?;
        let audit_path = audit_database_path(path);
        let cat = Self {
            conn,
            commits: Some(commits),
            audit: Some(audit::AuditCommitter::for_database(&audit_path)),
            audit_path: Some(audit_path),
            audit_db: OnceCell::new(),
        };
        cat.migrate()?;
        Ok(cat)
    }

    /// Opens an in-memory catalog (tests).
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let cat = Self {
            conn,
            audit_path: None,
            audit_db: OnceCell::new(),
            audit: None,
            commits: None,
        };
        cat.migrate()?;
        Ok(cat)
    }

    /// This catalog's connection to its audit database (opened at first use; writes
    /// through it commit with `synchronous=FULL`).
    pub(crate) fn audit_db(&self) -> Result<&Connection> {
        if let Some(c) = self.audit_db.get() {
            return Ok(c);
        }
        let conn = match &self.audit_path {
            Some(p) => open_audit_database(p, "FULL")?,
            None => {
                let c = Connection::open_in_memory()?;
                c.execute_batch(schema::AUDIT)?;
                c
            }
        };
        Ok(self.audit_db.get_or_init(|| conn))
    }

    /// Whether the catalog database has the table `name`.
    fn has_table(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .is_some())
    }

    /// Copies the key audit records of a catalog older than schema v8 into the audit
    /// database, in one transaction of it, before the migration drops them from the
    /// catalog: a crash in between leaves them in both, and the next open copies again
    /// (records already there, by `seq`, are kept as they are).
    fn copy_audit_records_out(&self) -> Result<()> {
        let audit = self.audit_db()?;
        let tx = immediate_tx(audit)?;
        {
            let mut read = self.conn.prepare(
                "SELECT seq, vault_guid, time_ms, principal, operation, key_name, key_version, \
                 result, error_code FROM main.kv_audit ORDER BY seq",
            )?;
            let mut write = tx.prepare(
                "INSERT OR IGNORE INTO kv_audit (seq, vault_guid, time_ms, principal, operation, \
                 key_name, key_version, result, error_code) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
            )?;
            let mut rows = read.query([])?;
            while let Some(r) = rows.next()? {
                // The nine columns as stored, whatever their types.
                let values = (0..9)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                write.execute(rusqlite::params_from_iter(values))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Starts a read snapshot: until the guard drops, this connection's statements see
    /// one consistent state of the database and share one WAL read lock (instead of
    /// taking one per statement). Inside a transaction of this connection it does
    /// nothing. Writes belong outside the guard.
    pub fn read_snapshot(&self) -> Result<ReadSnapshot<'_>> {
        if !self.conn.is_autocommit() {
            return Ok(ReadSnapshot(None));
        }
        self.conn.prepare_cached("BEGIN DEFERRED")?.execute([])?;
        Ok(ReadSnapshot(Some(&self.conn)))
    }

    /// The number of commits made to this catalog by every process, read from shared
    /// memory (no system call, no transaction), or `None` while a commit is in flight,
    /// for an in-memory catalog, or until the next commit after a writer was killed
    /// mid-commit. Equal numbers read before and after some reads of the catalog mean
    /// those reads saw the state at that number; while it stays the same, so does the
    /// catalog (a commit in flight is one whose call has not returned).
    pub fn settled_commits(&self) -> Option<u64> {
        self.commits
            .as_ref()
            .and_then(commits::CommitCounter::settled)
    }

    fn tx(&self) -> Result<Transaction<'_>> {
        immediate_tx(&self.conn)
    }

    fn migrate(&self) -> Result<()> {
        let current: u32 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current == SCHEMA_VERSION {
            return Ok(());
        }
        if current < schema::V8_VERSION {
            // One snapshot of the catalog for the check and the copy: another process
            // may migrate (and drop the table) meanwhile.
            let _snapshot = self.read_snapshot()?;
            if self.has_table("kv_audit")? {
                self.copy_audit_records_out()?;
            }
        }
        let tx = self.tx()?;
        // Re-read under the write lock: another process may have migrated meanwhile.
        let current: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current > SCHEMA_VERSION {
            return Err(CatalogError::SchemaTooNew {
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        for (version, sql) in schema::MIGRATIONS.iter().enumerate() {
            let version = version as u32 + 1;
            if version > current {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", version)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    // ----------------------------------------------------------------- instance

    /// The instance row, if the instance has been initialised.
    pub fn instance(&self) -> Result<Option<InstanceRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT instance_id, subscription_id, tenant_id, admin_principal_id, created, \
                 master_key_fingerprint FROM instance WHERE singleton = 1",
                [],
                |r| {
                    Ok(InstanceRow {
                        instance_id: r.get(0)?,
                        subscription_id: r.get(1)?,
                        tenant_id: r.get(2)?,
                        admin_principal_id: r.get(3)?,
                        created: r.get(4)?,
                        master_key_fingerprint: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Initialises the instance: its row, its first platform key and the default
    /// resource group, atomically. If another process initialised it first, nothing
    /// is written and the existing row is returned.
    pub fn init_instance(
        &self,
        inst: &InstanceRow,
        pmk: &PlatformKeyRow,
        default_group: &ResourceGroupRow,
    ) -> Result<InstanceRow> {
        let tx = self.tx()?;
        let exists: Option<i64> = tx
            .query_row("SELECT 1 FROM instance WHERE singleton = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_none() {
            tx.execute(
                "INSERT INTO instance (singleton, instance_id, subscription_id, tenant_id, \
                 admin_principal_id, created, master_key_fingerprint) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    inst.instance_id,
                    inst.subscription_id,
                    inst.tenant_id,
                    inst.admin_principal_id,
                    inst.created,
                    inst.master_key_fingerprint
                ],
            )?;
            insert_platform_key(&tx, pmk)?;
            insert_group(&tx, default_group)?;
        }
        tx.commit()?;
        self.instance()?.ok_or_else(|| {
            CatalogError::Invalid("instance row missing after initialisation".into())
        })
    }

    /// The active platform-managed key (sealed).
    pub fn active_platform_key(&self) -> Result<Option<PlatformKeyRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT key_id, sealed, created, active FROM platform_keys \
                 WHERE active = 1 ORDER BY created DESC LIMIT 1",
                [],
                platform_key_from_row,
            )
            .optional()?)
    }

    /// A platform key by id (sealed), active or retired.
    pub fn platform_key(&self, key_id: &str) -> Result<Option<PlatformKeyRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT key_id, sealed, created, active FROM platform_keys WHERE key_id = ?1",
                [key_id],
                platform_key_from_row,
            )
            .optional()?)
    }

    /// Appends to the activity log (who did what to which resource).
    pub fn log_activity(&self, entry: &ActivityRow) -> Result<()> {
        self.conn.execute(
            "INSERT INTO activity_log (time_ms, principal, operation, resource_id, status, error_code, \
             http_method, correlation_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                entry.time_ms,
                entry.principal,
                entry.operation,
                entry.resource_id,
                entry.status,
                entry.error_code,
                entry.http_method,
                entry.correlation_id
            ],
        )?;
        Ok(())
    }

    /// The most recent `limit` activity log entries, newest first.
    pub fn activity(&self, limit: u32) -> Result<Vec<ActivityRow>> {
        let mut st = self.conn.prepare(
            "SELECT time_ms, principal, operation, resource_id, status, error_code, http_method, \
             correlation_id FROM activity_log ORDER BY seq DESC LIMIT ?1",
        )?;
        let rows = st.query_map([limit], |r| {
            Ok(ActivityRow {
                time_ms: r.get(0)?,
                principal: r.get(1)?,
                operation: r.get(2)?,
                resource_id: r.get(3)?,
                status: r.get(4)?,
                error_code: r.get(5)?,
                http_method: r.get(6)?,
                correlation_id: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---------------------------------------------------------- resource groups

    /// Creates a resource group; [`CatalogError::AlreadyExists`] if the name is taken
    /// (names compare case-insensitively).
    pub fn create_group(&self, g: &ResourceGroupRow) -> Result<()> {
        let tx = self.tx()?;
        insert_group(&tx, g)?;
        tx.commit()?;
        Ok(())
    }

    /// A resource group by name (case-insensitive).
    pub fn group(&self, name: &str) -> Result<Option<ResourceGroupRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, location, created, created_by, tags_json FROM resource_groups WHERE name = ?1",
                [name],
                group_from_row,
            )
            .optional()?)
    }

    /// All resource groups, by name.
    pub fn groups(&self) -> Result<Vec<ResourceGroupRow>> {
        let mut st = self.conn.prepare(
            "SELECT name, location, created, created_by, tags_json FROM resource_groups ORDER BY name",
        )?;
        let rows = st.query_map([], group_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes an empty resource group. Returns false if it does not exist;
    /// [`CatalogError::NotEmpty`] if it still holds backup vaults.
    pub fn delete_group(&self, name: &str) -> Result<bool> {
        let tx = self.tx()?;
        let Some(g) = tx
            .query_row(
                "SELECT name FROM resource_groups WHERE name = ?1",
                [name],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        else {
            return Ok(false);
        };
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM backup_vaults WHERE resource_group = ?1",
            [&g],
            |r| r.get(0),
        )?;
        if count > 0 {
            return Err(CatalogError::NotEmpty {
                kind: "resource group",
                name: g,
                count: count as u64,
                contained: "backup vault(s)",
            });
        }
        tx.execute("DELETE FROM resource_groups WHERE name = ?1", [&g])?;
        tx.commit()?;
        Ok(true)
    }

    // ------------------------------------------------------------ backup vaults

    /// Records a new backup vault. The resource group must exist.
    pub fn create_vault(&self, v: &VaultRow) -> Result<()> {
        let tx = self.tx()?;
        let r = tx.execute(
            "INSERT INTO backup_vaults (guid, name, resource_group, location, created, created_by, \
             wrapped_key_json, encryption_state, storage_settings_json, tags_json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                v.guid,
                v.name,
                v.resource_group,
                v.location,
                v.created,
                v.created_by,
                v.wrapped_key_json,
                v.encryption_state,
                v.storage_settings_json,
                v.tags_json
            ],
        );
        match r {
            Err(e) if is_unique_violation(&e) => {
                return Err(CatalogError::AlreadyExists {
                    kind: "backup vault",
                    name: v.name.clone(),
                });
            }
            r => {
                r?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A backup vault by resource group and name (both case-insensitive).
    pub fn vault(&self, group: &str, name: &str) -> Result<Option<VaultRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("{VAULT_COLS} WHERE resource_group = ?1 AND name = ?2"),
                [group, name],
                vault_from_row,
            )
            .optional()?)
    }

    /// A backup vault by its immutable id.
    pub fn vault_by_guid(&self, guid: &str) -> Result<Option<VaultRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("{VAULT_COLS} WHERE guid = ?1"),
                [guid],
                vault_from_row,
            )
            .optional()?)
    }

    /// Backup vaults of one resource group, or of all groups.
    pub fn vaults(&self, group: Option<&str>) -> Result<Vec<VaultRow>> {
        let rows = match group {
            Some(g) => {
                let mut st = self.conn.prepare(&format!(
                    "{VAULT_COLS} WHERE resource_group = ?1 ORDER BY name"
                ))?;
                st.query_map([g], vault_from_row)?
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let mut st = self
                    .conn
                    .prepare(&format!("{VAULT_COLS} ORDER BY resource_group, name"))?;
                st.query_map([], vault_from_row)?
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    /// Replaces a vault's wrapped DEK record (key rotation, CMK later).
    pub fn set_vault_wrapped_key(
        &self,
        guid: &str,
        wrapped_key_json: &str,
        encryption_state: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE backup_vaults SET wrapped_key_json = ?2, encryption_state = ?3 WHERE guid = ?1",
            params![guid, wrapped_key_json, encryption_state],
        )?;
        Ok(())
    }

    /// Deletes a vault row with its jobs and recovery point rows. Returns false if
    /// it does not exist; [`CatalogError::NotEmpty`] while backup instances remain.
    pub fn delete_vault(&self, guid: &str) -> Result<bool> {
        let tx = self.tx()?;
        let Some(name) = tx
            .query_row(
                "SELECT name FROM backup_vaults WHERE guid = ?1",
                [guid],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        else {
            return Ok(false);
        };
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM backup_instances WHERE vault_guid = ?1",
            [guid],
            |r| r.get(0),
        )?;
        if count > 0 {
            return Err(CatalogError::NotEmpty {
                kind: "backup vault",
                name,
                count: count as u64,
                contained: "backup instance(s)",
            });
        }
        tx.execute("DELETE FROM jobs WHERE vault_guid = ?1", [guid])?;
        tx.execute("DELETE FROM vault_settings WHERE vault_guid = ?1", [guid])?;
        tx.execute("DELETE FROM backup_vaults WHERE guid = ?1", [guid])?;
        tx.commit()?;
        Ok(true)
    }

    // --------------------------------------------------------- backup instances

    /// Records a new backup instance in a vault.
    pub fn create_instance(&self, i: &InstanceItemRow) -> Result<()> {
        let tx = self.tx()?;
        let r = tx.execute(
            "INSERT INTO backup_instances (guid, vault_guid, name, datasource_type, datasource_path, \
             created, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                i.guid,
                i.vault_guid,
                i.name,
                i.datasource_type.as_str(),
                i.datasource_path,
                i.created,
                i.created_by
            ],
        );
        match r {
            Err(e) if is_unique_violation(&e) => {
                return Err(CatalogError::AlreadyExists {
                    kind: "backup instance",
                    name: i.name.clone(),
                });
            }
            r => {
                r?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A backup instance of a vault by name (case-insensitive).
    pub fn instance_item(&self, vault_guid: &str, name: &str) -> Result<Option<InstanceItemRow>> {
        self.conn
            .query_row(
                &format!("{INSTANCE_COLS} WHERE vault_guid = ?1 AND name = ?2"),
                [vault_guid, name],
                instance_item_from_row,
            )
            .optional()?
            .transpose()
    }

    /// All backup instances of a vault, by name.
    pub fn instance_items(&self, vault_guid: &str) -> Result<Vec<InstanceItemRow>> {
        let mut st = self.conn.prepare(&format!(
            "{INSTANCE_COLS} WHERE vault_guid = ?1 ORDER BY name"
        ))?;
        let rows = st
            .query_map([vault_guid], instance_item_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().collect()
    }

    /// Deletes a backup instance row and its recovery point rows.
    pub fn delete_instance_item(&self, guid: &str) -> Result<bool> {
        let tx = self.tx()?;
        tx.execute(
            "DELETE FROM recovery_points WHERE instance_guid = ?1",
            [guid],
        )?;
        let n = tx.execute("DELETE FROM backup_instances WHERE guid = ?1", [guid])?;
        tx.commit()?;
        Ok(n > 0)
    }

    // ---------------------------------------------------------- recovery points

    /// Inserts or updates one recovery point row.
    pub fn upsert_recovery_point(&self, rp: &RecoveryPointRow) -> Result<()> {
        upsert_rp(&self.conn, rp)?;
        Ok(())
    }

    /// Ids of all recovery point rows of a vault.
    pub fn vault_recovery_point_ids(&self, vault_guid: &str) -> Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT rp.id FROM recovery_points rp JOIN backup_instances bi \
             ON rp.instance_guid = bi.guid WHERE bi.vault_guid = ?1 ORDER BY rp.id",
        )?;
        let rows = st
            .query_map([vault_guid], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Recovery points of a backup instance, oldest first.
    pub fn recovery_points(&self, instance_guid: &str) -> Result<Vec<RecoveryPointRow>> {
        let mut st = self.conn.prepare(&format!(
            "{RP_COLS} WHERE instance_guid = ?1 ORDER BY time, id"
        ))?;
        let rows = st
            .query_map([instance_guid], rp_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One recovery point of a backup instance.
    pub fn recovery_point(
        &self,
        instance_guid: &str,
        id: &str,
    ) -> Result<Option<RecoveryPointRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("{RP_COLS} WHERE instance_guid = ?1 AND id = ?2"),
                [instance_guid, id],
                rp_from_row,
            )
            .optional()?)
    }

    /// Removes one recovery point row.
    pub fn delete_recovery_point(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM recovery_points WHERE id = ?1", [id])?
            > 0)
    }

    /// Makes the recovery point rows of a vault match `in_storage` (storage is the
    /// source of truth): inserts or updates every listed point whose backup instance
    /// is known, and deletes rows of points that are no longer listed, except those
    /// in `keep` (points still present in storage but unreadable, e.g. damaged).
    /// Points whose instance is unknown to the catalog are ignored.
    /// Returns (inserted, removed).
    pub fn reconcile_recovery_points(
        &self,
        vault_guid: &str,
        in_storage: &[RecoveryPointRow],
        keep: &[String],
    ) -> Result<(u64, u64)> {
        let tx = self.tx()?;
        let known: std::collections::HashSet<String> = {
            let mut st = tx.prepare("SELECT guid FROM backup_instances WHERE vault_guid = ?1")?;
            st.query_map([vault_guid], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?
        };
        let existing: std::collections::HashSet<String> = {
            let mut st = tx.prepare(
                "SELECT rp.id FROM recovery_points rp JOIN backup_instances bi \
                 ON rp.instance_guid = bi.guid WHERE bi.vault_guid = ?1",
            )?;
            st.query_map([vault_guid], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?
        };
        let mut upserted = 0;
        let mut wanted = std::collections::HashSet::new();
        for rp in in_storage {
            if !known.contains(&rp.instance_guid) {
                continue;
            }
            wanted.insert(rp.id.clone());
            if !existing.contains(&rp.id) {
                upserted += 1;
            }
            upsert_rp(&tx, rp)?;
        }
        let mut removed = 0;
        for id in existing.difference(&wanted) {
            if keep.contains(id) {
                continue;
            }
            removed += tx.execute("DELETE FROM recovery_points WHERE id = ?1", [id])? as u64;
        }
        tx.commit()?;
        Ok((upserted, removed))
    }

    // --------------------------------------------------------------------- jobs

    /// Records a new job (normally `InProgress`).
    pub fn insert_job(&self, j: &JobRow) -> Result<()> {
        self.conn.execute(
            "INSERT INTO jobs (guid, vault_guid, instance_guid, instance_name, datasource_type, \
             operation, status, start_ms, end_ms, bytes, pid, pid_start, error_code, error_message, \
             recommended_action, warnings_json, principal, recovery_point_id, recovery_point_time) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            params![
                j.guid,
                j.vault_guid,
                j.instance_guid,
                j.instance_name,
                j.datasource_type.map(|d| d.as_str()),
                j.operation.as_str(),
                j.status.as_str(),
                j.start_ms,
                j.end_ms,
                j.bytes as i64,
                j.pid,
                j.pid_start,
                j.error_code,
                j.error_message,
                j.recommended_action,
                j.warnings_json,
                j.principal,
                j.recovery_point_id,
                j.recovery_point_time
            ],
        )?;
        Ok(())
    }

    /// Finishes a job: final status, end time, bytes, recovery point, error and warnings.
    pub fn finish_job(&self, guid: &str, f: &JobFinish) -> Result<()> {
        self.conn.execute(
            "UPDATE jobs SET status = ?2, end_ms = ?3, bytes = ?4, error_code = ?5, error_message = ?6, \
             recommended_action = ?7, warnings_json = ?8, \
             recovery_point_id = COALESCE(?9, recovery_point_id), \
             recovery_point_time = COALESCE(?10, recovery_point_time) WHERE guid = ?1",
            params![
                guid,
                f.status.as_str(),
                f.end_ms,
                f.bytes as i64,
                f.error_code,
                f.error_message,
                f.recommended_action,
                f.warnings_json,
                f.recovery_point_id,
                f.recovery_point_time
            ],
        )?;
        Ok(())
    }

    /// Jobs of a vault, newest first.
    pub fn jobs(&self, vault_guid: &str) -> Result<Vec<JobRow>> {
        let mut st = self.conn.prepare(&format!(
            "{JOB_COLS} WHERE vault_guid = ?1 ORDER BY start_ms DESC, guid"
        ))?;
        let rows = st
            .query_map([vault_guid], job_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().collect()
    }

    /// One job of a vault.
    pub fn job(&self, vault_guid: &str, guid: &str) -> Result<Option<JobRow>> {
        self.conn
            .query_row(
                &format!("{JOB_COLS} WHERE vault_guid = ?1 AND guid = ?2"),
                [vault_guid, guid],
                job_from_row,
            )
            .optional()?
            .transpose()
    }

    /// All jobs still marked `InProgress`, in any vault.
    pub fn jobs_in_progress(&self) -> Result<Vec<JobRow>> {
        let mut st = self
            .conn
            .prepare(&format!("{JOB_COLS} WHERE status = 'InProgress'"))?;
        let rows = st
            .query_map([], job_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().collect()
    }

    /// Finishes `guid` with `f` only if it is still `InProgress` (used to mark
    /// interrupted jobs without racing a process that finishes normally).
    pub fn finish_job_if_in_progress(&self, guid: &str, f: &JobFinish) -> Result<bool> {
        let tx = self.tx()?;
        let status: Option<String> = tx
            .query_row("SELECT status FROM jobs WHERE guid = ?1", [guid], |r| {
                r.get(0)
            })
            .optional()?;
        if status.as_deref() != Some(JobStatus::InProgress.as_str()) {
            return Ok(false);
        }
        tx.execute(
            "UPDATE jobs SET status = ?2, end_ms = ?3, error_code = ?4, error_message = ?5, \
             recommended_action = ?6 WHERE guid = ?1",
            params![
                guid,
                f.status.as_str(),
                f.end_ms,
                f.error_code,
                f.error_message,
                f.recommended_action
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }
}

// ------------------------------------------------------------------ helpers

const VAULT_COLS: &str = "SELECT guid, name, resource_group, location, created, created_by, \
     wrapped_key_json, encryption_state, storage_settings_json, tags_json FROM backup_vaults";
const INSTANCE_COLS: &str = "SELECT guid, vault_guid, name, datasource_type, datasource_path, \
     created, created_by FROM backup_instances";
const RP_COLS: &str = "SELECT id, instance_guid, time, datastore, logical_bytes, added_bytes, \
     file_count, dir_count, source_kind, state FROM recovery_points";
const JOB_COLS: &str = "SELECT guid, vault_guid, instance_guid, instance_name, datasource_type, \
     operation, status, start_ms, end_ms, bytes, pid, pid_start, error_code, error_message, \
     recommended_action, warnings_json, principal, recovery_point_id, recovery_point_time FROM jobs";

fn insert_group(tx: &Transaction<'_>, g: &ResourceGroupRow) -> Result<()> {
    let r = tx.execute(
        "INSERT INTO resource_groups (name, location, created, created_by, tags_json) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![g.name, g.location, g.created, g.created_by, g.tags_json],
    );
    match r {
        Err(e) if is_unique_violation(&e) => Err(CatalogError::AlreadyExists {
            kind: "resource group",
            name: g.name.clone(),
        }),
        r => r.map(|_| ()).map_err(Into::into),
    }
}

fn insert_platform_key(tx: &Transaction<'_>, k: &PlatformKeyRow) -> Result<()> {
    tx.execute(
        "INSERT INTO platform_keys (key_id, sealed, created, active) VALUES (?1, ?2, ?3, ?4)",
        params![k.key_id, k.sealed, k.created, k.active],
    )?;
    Ok(())
}

fn upsert_rp(conn: &Connection, rp: &RecoveryPointRow) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO recovery_points (id, instance_guid, time, datastore, logical_bytes, added_bytes, \
         file_count, dir_count, source_kind, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT(id) DO UPDATE SET instance_guid = excluded.instance_guid, time = excluded.time, \
         datastore = excluded.datastore, logical_bytes = excluded.logical_bytes, \
         added_bytes = excluded.added_bytes, file_count = excluded.file_count, \
         dir_count = excluded.dir_count, source_kind = excluded.source_kind, state = excluded.state",
        params![
            rp.id,
            rp.instance_guid,
            rp.time,
            rp.datastore,
            rp.logical_bytes as i64,
            rp.added_bytes as i64,
            rp.file_count as i64,
            rp.dir_count as i64,
            rp.source_kind,
            rp.state
        ],
    )
}

fn platform_key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PlatformKeyRow> {
    Ok(PlatformKeyRow {
        key_id: r.get(0)?,
        sealed: r.get(1)?,
        created: r.get(2)?,
        active: r.get(3)?,
    })
}

fn group_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResourceGroupRow> {
    Ok(ResourceGroupRow {
        name: r.get(0)?,
        location: r.get(1)?,
        created: r.get(2)?,
        created_by: r.get(3)?,
        tags_json: r.get(4)?,
    })
}

fn vault_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VaultRow> {
    Ok(VaultRow {
        guid: r.get(0)?,
        name: r.get(1)?,
        resource_group: r.get(2)?,
        location: r.get(3)?,
        created: r.get(4)?,
        created_by: r.get(5)?,
        wrapped_key_json: r.get(6)?,
        encryption_state: r.get(7)?,
        storage_settings_json: r.get(8)?,
        tags_json: r.get(9)?,
    })
}

fn instance_item_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<InstanceItemRow>> {
    let ty: String = r.get(3)?;
    let Some(datasource_type) = DatasourceType::parse(&ty) else {
        return Ok(Err(CatalogError::Invalid(format!(
            "datasource type {ty:?}"
        ))));
    };
    Ok(Ok(InstanceItemRow {
        guid: r.get(0)?,
        vault_guid: r.get(1)?,
        name: r.get(2)?,
        datasource_type,
        datasource_path: r.get(4)?,
        created: r.get(5)?,
        created_by: r.get(6)?,
    }))
}

fn rp_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecoveryPointRow> {
    Ok(RecoveryPointRow {
        id: r.get(0)?,
        instance_guid: r.get(1)?,
        time: r.get(2)?,
        datastore: r.get(3)?,
        logical_bytes: r.get::<_, i64>(4)? as u64,
        added_bytes: r.get::<_, i64>(5)? as u64,
        file_count: r.get::<_, i64>(6)? as u64,
        dir_count: r.get::<_, i64>(7)? as u64,
        source_kind: r.get(8)?,
        state: r.get(9)?,
    })
}

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<JobRow>> {
    let op: String = r.get(5)?;
    let st: String = r.get(6)?;
    let ds: Option<String> = r.get(4)?;
    let (Some(operation), Some(status)) = (JobOperation::parse(&op), JobStatus::parse(&st)) else {
        return Ok(Err(CatalogError::Invalid(format!(
            "job operation {op:?} / status {st:?}"
        ))));
    };
    Ok(Ok(JobRow {
        guid: r.get(0)?,
        vault_guid: r.get(1)?,
        instance_guid: r.get(2)?,
        instance_name: r.get(3)?,
        datasource_type: ds.as_deref().and_then(DatasourceType::parse),
        operation,
        status,
        start_ms: r.get(7)?,
        end_ms: r.get(8)?,
        bytes: r.get::<_, i64>(9)? as u64,
        pid: r.get(10)?,
        pid_start: r.get(11)?,
        error_code: r.get(12)?,
        error_message: r.get(13)?,
        recommended_action: r.get(14)?,
        warnings_json: r.get(15)?,
        principal: r.get(16)?,
        recovery_point_id: r.get(17)?,
        recovery_point_time: r.get(18)?,
    }))
}

#[cfg(test)]
mod tests;

//! The embedded instance: its home directory, master key, platform key and catalog.
//!
//! Layout of a home directory (mode 0700):
//!
//! ```text
//! HOME/catalog.db          SQLite catalog (WAL)
//! HOME/catalog-audit.db    key audit records (SQLite, WAL, mode 0600)
//! HOME/master.key          32 random bytes, mode 0600 (unless --master-key-file)
//! HOME/storage/{vault-id}/ each vault's encrypted object store
//! HOME/locks/{vault-id}.lock
//! ```
//!
//! The master key seals the platform-managed key (PMK) in the catalog; the PMK
//! wraps each vault's DEK. The master key never leaves this module except as a
//! fingerprint (keyed BLAKE3) used to tell a wrong key file from the right one.
//! A missing key file for an initialised instance is an error
//! ([`ErrorCode::MasterKeyNotFound`]): a new key is never created over existing data.

use std::{
    fs::{self, DirBuilder, OpenOptions},
    io::{ErrorKind, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use coffer_catalog::{
    ActivityRow, Catalog, InstanceRow, JobFinish, JobStatus, PlatformKeyRow, PrincipalRow,
    ResourceGroupRow,
};
use coffer_crypto::{PlatformKey, SecretKey, wrap};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::{
    DEFAULT_LOCATION, DEFAULT_RESOURCE_GROUP, Error, ErrorCode, Result,
    error::io_error,
    procinfo,
    util::{self, now_ms, now_rfc3339},
};

/// Default name of the master key file inside the home directory.
pub const MASTER_KEY_FILE_NAME: &str = "master.key";
const CATALOG_FILE_NAME: &str = "catalog.db";
/// `seal_with_master` purpose of the platform key.
const PMK_PURPOSE: &str = "platform-key";
/// BLAKE3 `derive_key` context of the master key fingerprint.
const FINGERPRINT_CONTEXT: &str = "coffer v1 2026 instance master key fingerprint";

/// Public facts about the instance (no secrets).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    /// Home directory.
    pub home: PathBuf,
    /// Master key file in use.
    pub master_key_file: PathBuf,
    /// Fingerprint of the master key (not the key).
    pub master_key_fingerprint: String,
    /// Immutable instance id.
    pub instance_id: String,
    /// Default subscription id.
    pub subscription_id: String,
    /// Tenant id.
    pub tenant_id: String,
    /// The calling principal (the instance administrator).
    pub principal_id: String,
    /// Creation time.
    pub created: String,
    /// Id of the active platform-managed key.
    pub platform_key_id: String,
}

/// An open Coffer instance. All operations go through it.
pub struct Instance {
    pub(crate) home: PathBuf,
    pub(crate) catalog: Catalog,
    pub(crate) row: InstanceRow,
    pub(crate) master_key_file: PathBuf,
    pub(crate) pmk: PlatformKey,
    /// The master key, kept to seal and open key vault key material.
    pub(crate) master: SecretKey,
    /// The principal data-plane and management calls are made as.
    pub(crate) acting_principal: String,
    /// Unwrapped customer-managed-key DEKs, each usable for `dekCacheSeconds`.
    pub(crate) dek_cache: crate::keys::DekCache,
    /// Role assignment ids that authorization ignores while a change is evaluated
    /// before it is made ([`Instance::rbac_what_if`]).
    pub(crate) ignored_assignments: std::sync::Mutex<Vec<String>>,
    /// Role assignments read by this instance, valid while the catalog's change
    /// counter of assignments is unchanged ([`crate::rbac::AssignmentCache`]).
    pub(crate) assignment_cache: crate::rbac::AssignmentCache,
    /// Key vault rows read by data-plane calls, valid while the catalog's change
    /// counter of key vault objects is unchanged ([`crate::keyvault::KeyRowCache`]).
    pub(crate) key_row_cache: crate::keyvault::KeyRowCache,
    /// Set while a backup vault calls its key vault (the firewall's trusted services).
    pub(crate) trusted_service_call: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("home", &self.home)
            .field("instance_id", &self.row.instance_id)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Opens the instance at `home`, initialising it on first use.
    ///
    /// `master_key_file` overrides `HOME/master.key`; a supplied file must exist.
    /// Jobs left `InProgress` by processes that no longer run are marked failed
    /// (`JobInterrupted`).
    pub fn open(home: PathBuf, master_key_file: Option<PathBuf>) -> Result<Self> {
        let home = std::path::absolute(&home)
            .map_err(|e| io_error(ErrorCode::HomeDirectoryError, "invalid home directory", &e))?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&home)
            .map_err(|e| {
                io_error(
                    ErrorCode::HomeDirectoryError,
                    &format!("cannot create home directory {}", home.display()),
                    &e,
                )
            })?;
        for sub in ["storage", "locks"] {
            let p = home.join(sub);
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(|e| {
                    io_error(
                        ErrorCode::HomeDirectoryError,
                        &format!("cannot create {}", p.display()),
                        &e,
                    )
                })?;
        }
        let catalog_path = home.join(CATALOG_FILE_NAME);
        // Create the catalog owner-only; SQLite gives its -wal/-shm files the same mode.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&catalog_path)
            .map_err(|e| {
                io_error(
                    ErrorCode::HomeDirectoryError,
                    &format!("cannot create the catalog {}", catalog_path.display()),
                    &e,
                )
            })?;
        let catalog = Catalog::open(&catalog_path)?;
        let existing = catalog.instance()?;

        let supplied = master_key_file.is_some();
        let key_path = match master_key_file {
            Some(p) => std::path::absolute(&p).map_err(|e| {
                io_error(
                    ErrorCode::InvalidArgument,
                    "invalid master key file path",
                    &e,
                )
            })?,
            None => home.join(MASTER_KEY_FILE_NAME),
        };
        let master = match read_master_key(&key_path)? {
            Some(k) => k,
            None if existing.is_some() || supplied => {
                return Err(Error::new(
                    ErrorCode::MasterKeyNotFound,
                    format!(
                        "the instance master key file {} does not exist{}",
                        key_path.display(),
                        if existing.is_some() {
                            "; this instance's catalog and vaults cannot be opened without it"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            None => create_master_key(&key_path)?,
        };
        let fingerprint = fingerprint(&master);

        let row = match existing {
            Some(row) => row,
            None => init_instance(&catalog, &master, &fingerprint)?,
        };
        if row.master_key_fingerprint != fingerprint {
            return Err(Error::new(
                ErrorCode::MasterKeyMismatch,
                format!(
                    "the master key in {} is not the key of the instance at {}",
                    key_path.display(),
                    home.display()
                ),
            ));
        }
        let pmk_row = catalog.active_platform_key()?.ok_or_else(|| {
            Error::new(
                ErrorCode::CatalogError,
                "the catalog holds no platform-managed key",
            )
        })?;
        let pmk = unseal_platform_key(&master, &pmk_row)?;

        catalog.ensure_principal(&PrincipalRow {
            principal_id: row.admin_principal_id.clone(),
            kind: "Administrator".into(),
            name: Some("administrator".into()),
            resource_group: None,
            client_id: row.admin_principal_id.clone(),
            owner_resource_id: None,
            created: row.created.clone(),
            created_by: row.admin_principal_id.clone(),
            tags_json: "{}".into(),
        })?;
        let acting_principal = row.admin_principal_id.clone();
        let inst = Self {
            home,
            catalog,
            row,
            master_key_file: key_path,
            pmk,
            master,
            acting_principal,
            dek_cache: Default::default(),
            ignored_assignments: Default::default(),
            assignment_cache: Default::default(),
            key_row_cache: Default::default(),
            trusted_service_call: Default::default(),
        };
        inst.reap_interrupted_jobs()?;
        Ok(inst)
    }

    /// Public facts about the instance.
    pub fn info(&self) -> InstanceInfo {
        InstanceInfo {
            home: self.home.clone(),
            master_key_file: self.master_key_file.clone(),
            master_key_fingerprint: self.row.master_key_fingerprint.clone(),
            instance_id: self.row.instance_id.clone(),
            subscription_id: self.row.subscription_id.clone(),
            tenant_id: self.row.tenant_id.clone(),
            principal_id: self.row.admin_principal_id.clone(),
            created: self.row.created.clone(),
            platform_key_id: crate::keys::describe_pmk(&self.pmk),
        }
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The default subscription id.
    pub fn subscription_id(&self) -> &str {
        &self.row.subscription_id
    }

    /// The calling principal (the administrator unless [`Instance::act_as`] chose another).
    pub fn principal(&self) -> &str {
        &self.acting_principal
    }

    /// The instance administrator's principal id.
    pub fn admin_principal(&self) -> &str {
        &self.row.admin_principal_id
    }

    /// Makes later calls act as `principal_id` (the administrator or a managed
    /// identity); `IdentityNotFound` if no such principal exists.
    pub fn act_as(&mut self, principal_id: &str) -> Result<()> {
        let p = self
            .catalog
            .principal(principal_id.trim())?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::IdentityNotFound,
                    format!("no principal with id '{principal_id}' exists in this instance"),
                )
            })?;
        self.acting_principal = p.principal_id;
        Ok(())
    }

    /// Records a mutating operation in the activity log (best effort: a failure to
    /// log never hides the operation's own result).
    pub(crate) fn audit<T>(&self, operation: &str, resource_id: &str, result: &Result<T>) {
        let method = if operation.ends_with("/delete") {
            "DELETE"
        } else if operation.ends_with("/action") {
            "POST"
        } else {
            "PUT"
        };
        self.audit_method(operation, method, resource_id, result);
    }

    /// [`Instance::audit`] with an explicit HTTP method (`PATCH` for updates).
    pub(crate) fn audit_method<T>(
        &self,
        operation: &str,
        method: &str,
        resource_id: &str,
        result: &Result<T>,
    ) {
        self.audit_as(self.principal(), operation, method, resource_id, result);
    }

    /// [`Instance::audit_method`] for work done by `principal` on its own (a vault's
    /// identity autorotating its key), not by the caller.
    pub(crate) fn audit_as<T>(
        &self,
        principal: &str,
        operation: &str,
        method: &str,
        resource_id: &str,
        result: &Result<T>,
    ) {
        let _ = self.catalog.log_activity(&ActivityRow {
            time_ms: now_ms(),
            principal: principal.to_owned(),
            operation: operation.to_owned(),
            resource_id: resource_id.to_owned(),
            status: if result.is_ok() {
                "Succeeded"
            } else {
                "Failed"
            }
            .to_owned(),
            error_code: result.as_ref().err().map(|e| e.code.as_str().to_owned()),
            http_method: Some(method.to_owned()),
            correlation_id: Some(util::new_guid()),
        });
    }

    fn reap_interrupted_jobs(&self) -> Result<()> {
        for job in self.catalog.jobs_in_progress()? {
            let alive = job
                .pid
                .is_some_and(|pid| procinfo::is_alive(pid, job.pid_start));
            if alive {
                continue;
            }
            let code = ErrorCode::JobInterrupted;
            self.catalog.finish_job_if_in_progress(
                &job.guid,
                &JobFinish {
                    status: JobStatus::Failed,
                    end_ms: now_ms(),
                    bytes: job.bytes,
                    error_code: Some(code.as_str().to_owned()),
                    error_message: Some(format!(
                        "the process running this job (pid {}) stopped before the job finished",
                        job.pid.unwrap_or(-1)
                    )),
                    recommended_action: code.default_action().map(str::to_owned),
                    warnings_json: job.warnings_json.clone(),
                    recovery_point_id: None,
                    recovery_point_time: None,
                },
            )?;
        }
        Ok(())
    }
}

/// Reads the master key: 32 raw bytes, or 64 hex digits (optionally with a trailing
/// newline). `None` if the file does not exist.
fn read_master_key(path: &Path) -> Result<Option<SecretKey>> {
    let bytes = match fs::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(io_error(
                ErrorCode::MasterKeyNotFound,
                &format!("cannot read the master key file {}", path.display()),
                &e,
            )
            .with_action(
                "Make the master key file readable by the user running coffer (mode 0600, owned by that user).",
            ));
        }
    };
    let invalid = || {
        Error::new(
            ErrorCode::MasterKeyInvalid,
            format!(
                "the master key file {} is malformed: it must hold exactly 32 bytes (or 64 hex digits)",
                path.display()
            ),
        )
    };
    if bytes.len() == 32 {
        return SecretKey::from_slice(&bytes)
            .map(Some)
            .map_err(|_| invalid());
    }
    let text = bytes.trim_ascii();
    if text.len() == 64 {
        let mut raw = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, &mut raw[..]).map_err(|_| invalid())?;
        return Ok(Some(SecretKey::from_bytes(*raw)));
    }
    Err(invalid())
}

/// Creates a new master key file atomically with mode 0600. If another process
/// created one meanwhile, that key is used instead.
fn create_master_key(path: &Path) -> Result<SecretKey> {
    let key = SecretKey::generate()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(MASTER_KEY_FILE_NAME),
        std::process::id(),
        util::new_guid()
    ));
    let fail = |e: std::io::Error| {
        io_error(
            ErrorCode::HomeDirectoryError,
            &format!("cannot create the master key file {}", path.display()),
            &e,
        )
    };
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(key.expose())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    // hard_link fails if the destination exists: the file appears complete or not at all.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            util::sync_dir(dir).map_err(fail)?;
            Ok(key)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_master_key(path)?.ok_or_else(|| {
            Error::new(
                ErrorCode::MasterKeyNotFound,
                format!("the master key file {} vanished", path.display()),
            )
        }),
        Err(e) => Err(fail(e)),
    }
}

fn fingerprint(master: &SecretKey) -> String {
    let fp = blake3::derive_key(FINGERPRINT_CONTEXT, master.expose());
    hex::encode(&fp[..16])
}

fn init_instance(catalog: &Catalog, master: &SecretKey, fingerprint: &str) -> Result<InstanceRow> {
    let now = now_rfc3339();
    let instance_id = util::new_guid();
    let admin = util::new_guid();
    let pmk = SecretKey::generate()?;
    let key_id = format!("coffer:pmk:{instance_id}/1");
    let sealed = wrap::seal_with_master(master, PMK_PURPOSE, pmk.expose())?;
    drop(pmk);
    let row = InstanceRow {
        instance_id,
        subscription_id: util::new_guid(),
        tenant_id: util::new_guid(),
        admin_principal_id: admin.clone(),
        created: now.clone(),
        master_key_fingerprint: fingerprint.to_owned(),
    };
    Ok(catalog.init_instance(
        &row,
        &PlatformKeyRow {
            key_id,
            sealed,
            created: now.clone(),
            active: true,
        },
        &ResourceGroupRow {
            name: DEFAULT_RESOURCE_GROUP.to_owned(),
            location: DEFAULT_LOCATION.to_owned(),
            created: now,
            created_by: admin,
            tags_json: "{}".to_owned(),
        },
    )?)
}

fn unseal_platform_key(master: &SecretKey, row: &PlatformKeyRow) -> Result<PlatformKey> {
    let plain = wrap::open_with_master(master, PMK_PURPOSE, &row.sealed).map_err(|_| {
        Error::new(
            ErrorCode::MasterKeyMismatch,
            format!(
                "the master key does not open the platform-managed key {}",
                row.key_id
            ),
        )
    })?;
    let key = SecretKey::from_slice(plain.expose()).map_err(|_| {
        Error::new(
            ErrorCode::CatalogError,
            format!("the platform-managed key {} is malformed", row.key_id),
        )
    })?;
    Ok(PlatformKey::new(row.key_id.clone(), &key))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn first_open_creates_key_and_reopen_checks_it() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let a = Instance::open(home.clone(), None).unwrap();
        let key = home.join(MASTER_KEY_FILE_NAME);
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&key).unwrap().len(), 32);
        let home_mode = fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(home_mode, 0o700);
        let sub = a.subscription_id().to_owned();
        drop(a);
        assert_eq!(
            Instance::open(home.clone(), None)
                .unwrap()
                .subscription_id(),
            sub
        );

        // Missing key file: clear error, and no new key is created.
        let saved = fs::read(&key).unwrap();
        fs::remove_file(&key).unwrap();
        let e = Instance::open(home.clone(), None).unwrap_err();
        assert_eq!(e.code, ErrorCode::MasterKeyNotFound);
        assert!(!key.exists());

        // Wrong key file.
        let other = dir.path().join("other.key");
        fs::write(&other, [9u8; 32]).unwrap();
        let e = Instance::open(home.clone(), Some(other)).unwrap_err();
        assert_eq!(e.code, ErrorCode::MasterKeyMismatch);

        // Malformed key file.
        let short = dir.path().join("short.key");
        fs::write(&short, [9u8; 5]).unwrap();
        let e = Instance::open(home.clone(), Some(short)).unwrap_err();
        assert_eq!(e.code, ErrorCode::MasterKeyInvalid);

        // Restored key (as hex, via an explicit path) works again.
        let hexkey = dir.path().join("hex.key");
        fs::write(&hexkey, format!("{}\n", hex::encode(&saved))).unwrap();
        assert_eq!(
            Instance::open(home.clone(), Some(hexkey))
                .unwrap()
                .subscription_id(),
            sub
        );
        fs::write(&key, &saved).unwrap();
        assert!(Instance::open(home, None).is_ok());
    }

    #[test]
    fn supplied_missing_key_is_an_error_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let e =
            Instance::open(dir.path().join("h"), Some(dir.path().join("nope.key"))).unwrap_err();
        assert_eq!(e.code, ErrorCode::MasterKeyNotFound);
    }
}

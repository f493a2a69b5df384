//! Backup vaults and backup instances: create, show, list, delete; opening a
//! vault's repository (unwrap the DEK, open storage).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use coffer_catalog::{InstanceItemRow, VaultRow};
use coffer_crypto::{DataKey, SecretKey, WrappedKey};
use coffer_engine::{RepoParams, Repository};
use coffer_store::{LocalStore, ObjectStore, SealedStore};

use crate::{
    DEFAULT_LOCATION, Error, ErrorCode, Instance, Result,
    error::io_error,
    groups::{parse_tags, tags_json},
    names::{validate_instance_name, validate_vault_name},
    resources::{
        BackupInstanceProperties, BackupInstanceResource, BackupVaultProperties,
        BackupVaultResource, DatasourceInfo, DeleteResult, EncryptionSettings, INSTANCE_TYPE,
        KeyVaultProperties, SecuritySettings, SoftDeleteSettings, StateSetting, StorageSetting,
        VAULT_TYPE,
    },
    util::{self, now_rfc3339},
};

pub use coffer_catalog::DatasourceType;

/// Options of `backup-vault create`.
#[derive(Clone, Debug, Default)]
pub struct VaultCreateOptions {
    /// Location label (default `local`).
    pub location: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Managed identities (`--type`, `--user-assigned-identities`).
    pub identity: crate::cmk::IdentityOptions,
    /// Customer-managed key (`--cmk-*`).
    pub cmk: crate::cmk::CmkOptions,
}

/// The datasource of a new backup instance.
#[derive(Clone, Debug)]
pub struct DatasourceSpec {
    /// Directory or Stream.
    pub datasource_type: DatasourceType,
    /// Absolute path of the directory (Directory only).
    pub path: Option<PathBuf>,
}

const ENCRYPTION_PMK: &str = "Disabled";
const ENCRYPTION_CMK: &str = "Enabled";

/// The Azure RBAC actions of backup vault operations, authorised for the acting
/// principal (Owner and Contributor hold them all, Reader the `…/read` ones).
pub(crate) mod action {
    pub(crate) const VAULT_READ: &str = "Microsoft.DataProtection/backupVaults/read";
    pub(crate) const VAULT_WRITE: &str = "Microsoft.DataProtection/backupVaults/write";
    pub(crate) const VAULT_DELETE: &str = "Microsoft.DataProtection/backupVaults/delete";
    pub(crate) const INSTANCE_READ: &str =
        "Microsoft.DataProtection/backupVaults/backupInstances/read";
    pub(crate) const INSTANCE_WRITE: &str =
        "Microsoft.DataProtection/backupVaults/backupInstances/write";
    pub(crate) const INSTANCE_DELETE: &str =
        "Microsoft.DataProtection/backupVaults/backupInstances/delete";
    pub(crate) const BACKUP: &str =
        "Microsoft.DataProtection/backupVaults/backupInstances/backup/action";
    pub(crate) const RESTORE: &str =
        "Microsoft.DataProtection/backupVaults/backupInstances/restore/action";
    pub(crate) const RP_READ: &str =
        "Microsoft.DataProtection/backupVaults/backupInstances/recoveryPoints/read";
    pub(crate) const RP_DELETE: &str =
        "Microsoft.DataProtection/backupVaults/backupInstances/recoveryPoints/delete";
    pub(crate) const JOB_READ: &str = "Microsoft.DataProtection/backupVaults/backupJobs/read";
}

impl Instance {
    /// The ARM id of vault `name` in group `rg` as the caller spelled them: the
    /// scope its actions are authorised at (before the vault is looked up, so a
    /// caller without access learns nothing, not even whether it exists).
    pub(crate) fn vault_scope(&self, rg: &str, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.DataProtection/backupVaults/{name}",
            self.group_id(rg)
        )
    }

    /// The scope of backup instance `name` of vault `vault` in group `rg`.
    pub(crate) fn instance_scope(&self, rg: &str, vault: &str, name: &str) -> String {
        format!("{}/backupInstances/{name}", self.vault_scope(rg, vault))
    }

    /// Authorises `action` on vault `name` of `rg` for the acting principal, then
    /// looks the vault up.
    pub(crate) fn vault_for(&self, rg: &str, name: &str, action: &str) -> Result<VaultRow> {
        self.authorize_action(&self.vault_scope(rg, name), action)?;
        self.vault_row(rg, name)
    }

    pub(crate) fn vault_id(&self, v: &VaultRow) -> String {
        format!(
            "{}/providers/Microsoft.DataProtection/backupVaults/{}",
            self.group_id(&v.resource_group),
            v.name
        )
    }

    pub(crate) fn instance_id(&self, v: &VaultRow, bi: &InstanceItemRow) -> String {
        format!("{}/backupInstances/{}", self.vault_id(v), bi.name)
    }

    pub(crate) fn storage_path(&self, vault_guid: &str) -> PathBuf {
        self.home.join("storage").join(vault_guid)
    }

    pub(crate) fn lock_path(&self, vault_guid: &str) -> PathBuf {
        self.home.join("locks").join(format!("{vault_guid}.lock"))
    }

    /// The vault `name` in group `rg`; the group must exist.
    pub(crate) fn vault_row(&self, rg: &str, name: &str) -> Result<VaultRow> {
        let g = self.group_row(rg)?;
        self.catalog.vault(&g.name, name)?.ok_or_else(|| {
            Error::new(
                ErrorCode::BackupVaultNotFound,
                format!(
                    "backup vault '{name}' does not exist in resource group '{}'",
                    g.name
                ),
            )
        })
    }

    pub(crate) fn instance_row(&self, v: &VaultRow, name: &str) -> Result<InstanceItemRow> {
        self.catalog.instance_item(&v.guid, name)?.ok_or_else(|| {
            Error::new(
                ErrorCode::BackupInstanceNotFound,
                format!(
                    "backup instance '{name}' does not exist in backup vault '{}'",
                    v.name
                ),
            )
        })
    }

    pub(crate) fn vault_resource(&self, v: &VaultRow) -> BackupVaultResource {
        let storage_settings: Vec<StorageSetting> =
            serde_json::from_str(&v.storage_settings_json).unwrap_or_default();
        let cmk = self.vault_cmk(&v.guid).ok().flatten();
        let key_vault_properties = WrappedKey::from_json(v.wrapped_key_json.as_bytes())
            .ok()
            .filter(|w| w.kek.kind == coffer_crypto::wrap::KekKind::CustomerManaged)
            .map(|w| KeyVaultProperties {
                key_uri: cmk
                    .as_ref()
                    .map_or_else(|| w.kek.key_id.clone(), |c| c.key_uri.clone()),
                current_key_version: w
                    .kek
                    .key_id
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                current_key_id: w.kek.key_id,
            });
        let identity = self.vault_identity(&v.guid).unwrap_or_default();
        BackupVaultResource {
            id: self.vault_id(v),
            name: v.name.clone(),
            resource_type: VAULT_TYPE.to_owned(),
            location: v.location.clone(),
            tags: parse_tags(&v.tags_json),
            identity: self.identity_resource(&identity),
            properties: BackupVaultProperties {
                provisioning_state: "Succeeded".to_owned(),
                security_settings: SecuritySettings {
                    soft_delete_settings: SoftDeleteSettings {
                        state: "Off".to_owned(),
                        retention_duration_in_days: 0.0,
                    },
                    immutability_settings: StateSetting {
                        state: "Disabled".to_owned(),
                    },
                    encryption_settings: EncryptionSettings {
                        state: v.encryption_state.clone(),
                        key_vault_properties,
                        kek_identity: cmk.as_ref().map(|c| c.kek_identity()),
                        infrastructure_encryption: if cmk
                            .as_ref()
                            .is_some_and(|c| c.infrastructure_encryption)
                        {
                            "Enabled"
                        } else {
                            "Disabled"
                        }
                        .to_owned(),
                        encryption_health: cmk.as_ref().map(|c| self.encryption_health(v, c)),
                    },
                },
                storage_settings,
                vault_id: v.guid.clone(),
                created: v.created.clone(),
            },
        }
    }

    /// Opens a vault's repository: unwraps its DEK and opens its storage.
    pub(crate) fn open_repository(&self, v: &VaultRow) -> Result<Repository> {
        let dek = self.unwrap_dek(v)?;
        let store = self.open_store(v)?;
        Ok(Repository::open(store, self.lock_path(&v.guid), dek)?)
    }

    /// Where a vault's infrastructure-encryption key lives, sealed under the master key.
    fn infra_key_path(&self, guid: &str) -> PathBuf {
        self.home()
            .join("infra-keys")
            .join(format!("{guid}.sealed"))
    }

    /// Creates a vault's infrastructure-encryption key: 32 random bytes, independent of
    /// the DEK, sealed under the instance master key in `HOME/infra-keys/{guid}.sealed`
    /// (written atomically, mode 0600).
    fn create_infra_key(&self, guid: &str) -> Result<SecretKey> {
        let key = SecretKey::generate()?;
        let sealed = coffer_crypto::wrap::seal_with_master(
            &self.master,
            &format!("infra-key:{guid}"),
            key.expose(),
        )?;
        let dir = self.home().join("infra-keys");
        let store = LocalStore::open(&dir)?;
        let name = coffer_store::ObjectKey::new(format!("{guid}.sealed"))?;
        store.put(&name, &sealed)?;
        Ok(key)
    }

    /// The infrastructure-encryption key of a vault created with it.
    fn infra_key(&self, v: &VaultRow) -> Result<SecretKey> {
        let sealed = fs::read(self.infra_key_path(&v.guid)).map_err(|e| {
            Error::new(
                ErrorCode::EncryptionKeyUnavailable,
                format!(
                    "the infrastructure-encryption key of backup vault '{}' cannot be read: {e}",
                    v.name
                ),
            )
        })?;
        let plain = coffer_crypto::wrap::open_with_master(
            &self.master,
            &format!("infra-key:{}", v.guid),
            &sealed,
        )?;
        Ok(SecretKey::from_slice(plain.expose())?)
    }

    /// A vault's storage: its directory, under the infrastructure-encryption layer when
    /// the vault was created with it.
    pub(crate) fn open_store(&self, v: &VaultRow) -> Result<Arc<dyn ObjectStore>> {
        let local = self.open_local_store(v)?;
        let infra = self
            .vault_cmk(&v.guid)
            .ok()
            .flatten()
            .is_some_and(|c| c.infrastructure_encryption);
        if infra {
            Ok(Arc::new(SealedStore::new(local, self.infra_key(v)?)))
        } else {
            Ok(local)
        }
    }

    fn open_local_store(&self, v: &VaultRow) -> Result<Arc<LocalStore>> {
        let path = self.storage_path(&v.guid);
        if !path.is_dir() {
            return Err(Error::new(
                ErrorCode::StorageError,
                format!(
                    "the storage of backup vault '{}' is missing ({})",
                    v.name,
                    path.display()
                ),
            ));
        }
        Ok(Arc::new(LocalStore::open(path)?))
    }

    // ---------------------------------------------------------------- vaults

    /// Creates a backup vault: a new DEK wrapped by the platform-managed key, an
    /// empty repository in `HOME/storage/{vault-id}`, and its catalog entry.
    pub fn create_vault(
        &self,
        rg: &str,
        name: &str,
        opts: VaultCreateOptions,
    ) -> Result<BackupVaultResource> {
        let fallback_id = self.vault_scope(rg, name);
        let r = self
            .authorize_action(&fallback_id, action::VAULT_WRITE)
            .and_then(|()| self.create_vault_inner(rg, name, opts));
        let id = r.as_ref().map(|v| v.id.clone()).unwrap_or(fallback_id);
        self.audit("Microsoft.DataProtection/backupVaults/write", &id, &r);
        r
    }

    fn create_vault_inner(
        &self,
        rg: &str,
        name: &str,
        opts: VaultCreateOptions,
    ) -> Result<BackupVaultResource> {
        validate_vault_name(name)?;
        let g = self.group_row(rg)?;
        if self.catalog.vault(&g.name, name)?.is_some() {
            return Err(Error::new(
                ErrorCode::ResourceAlreadyExists,
                format!(
                    "backup vault '{name}' already exists in resource group '{}'",
                    g.name
                ),
            ));
        }
        let guid = util::new_guid();
        let created = now_rfc3339();
        let dek = DataKey::generate()?;
        // Identities and CMK are validated (and the DEK wrapped by the CMK) before
        // anything is created.
        let (identity, cmk) =
            self.prepare_create_settings(&opts.identity, &opts.cmk, &dek, &guid)?;
        let (wrapped, encryption_state) = match &cmk {
            Some((_, rec)) => (rec.clone(), ENCRYPTION_CMK),
            None => (
                WrappedKey::seal(self.active_kek(), &dek, &guid, created.clone())?,
                ENCRYPTION_PMK,
            ),
        };
        let row = VaultRow {
            guid: guid.clone(),
            name: name.to_owned(),
            resource_group: g.name.clone(),
            location: opts.location.unwrap_or_else(|| DEFAULT_LOCATION.to_owned()),
            created,
            created_by: self.principal().to_owned(),
            wrapped_key_json: wrapped.to_json(),
            encryption_state: encryption_state.to_owned(),
            storage_settings_json: serde_json::to_string(&[StorageSetting {
                datastore_type: "VaultStore".to_owned(),
                redundancy: "LocallyRedundant".to_owned(),
            }])
            .map_err(|e| Error::internal(e.to_string()))?,
            tags_json: tags_json(&opts.tags),
        };
        let path = self.storage_path(&guid);
        let infra = cmk.as_ref().is_some_and(|c| c.0.infrastructure_encryption);
        let made = (|| {
            let local = Arc::new(LocalStore::open(&path)?);
            let store: Arc<dyn ObjectStore> = if infra {
                Arc::new(SealedStore::new(local, self.create_infra_key(&guid)?))
            } else {
                local
            };
            Repository::create(
                store,
                self.lock_path(&guid),
                &guid,
                dek,
                &wrapped,
                RepoParams::default(),
            )?;
            self.catalog.create_vault(&row)?;
            if let Err(e) = self.store_create_settings(&row, identity, cmk.as_ref().map(|c| &c.0)) {
                let _ = self.delete_system_identity(&self.vault_id(&row));
                let _ = self.catalog.delete_vault(&row.guid);
                return Err(e);
            }
            Ok(())
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&path);
            let _ = fs::remove_file(self.infra_key_path(&guid));
            let _ = fs::remove_file(self.lock_path(&guid));
            return Err(e);
        }
        Ok(self.vault_resource(&row))
    }

    /// Shows a backup vault (BackupVaultResource). A CMK vault's key access is
    /// probed (one unwrap as its identity) so that `encryptionHealth` is current.
    pub fn show_vault(&self, rg: &str, name: &str) -> Result<BackupVaultResource> {
        self.authorize_action(&self.vault_scope(rg, name), action::VAULT_READ)?;
        let v = self.vault_row_current(rg, name)?;
        if v.encryption_state != ENCRYPTION_PMK {
            let _ = self.unwrap_dek(&v);
        }
        Ok(self.vault_resource(&v))
    }

    fn encryption_health(
        &self,
        v: &VaultRow,
        c: &crate::cmk::CmkSettings,
    ) -> crate::resources::EncryptionHealth {
        match &c.key_access_lost {
            None => crate::resources::EncryptionHealth {
                state: "Healthy".to_owned(),
                since: None,
                error_code: None,
                stored_bytes: None,
            },
            Some(l) => crate::resources::EncryptionHealth {
                state: "KeyAccessLost".to_owned(),
                since: Some(l.since.clone()),
                error_code: Some(l.error_code.clone()),
                stored_bytes: Some(tree_bytes(&self.storage_path(&v.guid))),
            },
        }
    }

    /// `backup-vault move`: moves a vault to another resource group. Its ARM id
    /// changes (and its system-assigned identity follows); its storage, DEK and
    /// recovery points stay. A vault encrypted with a customer-managed key is refused
    /// (`UserErrorCMKVaultMoveNotSupported`), as in Azure.
    pub fn move_vault(&self, rg: &str, name: &str, target_rg: &str) -> Result<BackupVaultResource> {
        let v = self.vault_for(rg, name, action::VAULT_WRITE)?;
        let old_id = self.vault_id(&v);
        let r = (|| {
            self.authorize_action(
                &self.group_id(rg),
                "Microsoft.Resources/subscriptions/resourceGroups/moveResources/action",
            )?;
            self.authorize_action(&self.vault_scope(target_rg, name), action::VAULT_WRITE)?;
            let cmk = WrappedKey::from_json(v.wrapped_key_json.as_bytes())
                .is_ok_and(|w| w.kek.kind == coffer_crypto::wrap::KekKind::CustomerManaged);
            if cmk || v.encryption_state != ENCRYPTION_PMK {
                return Err(Error::new(
                    ErrorCode::CmkVaultMoveNotSupported,
                    format!(
                        "backup vault '{}' is encrypted with a customer-managed key (state {}): \
                         moving it to another resource group or subscription is not supported",
                        v.name, v.encryption_state
                    ),
                ));
            }
            let g = self.group_row(target_rg)?;
            if self.catalog.vault(&g.name, &v.name)?.is_some() {
                return Err(Error::new(
                    ErrorCode::ResourceAlreadyExists,
                    format!(
                        "backup vault '{}' already exists in resource group '{}'",
                        v.name, g.name
                    ),
                ));
            }
            let mut moved = v.clone();
            moved.resource_group = g.name.clone();
            let new_id = self.vault_id(&moved);
            self.catalog
                .move_vault(&v.guid, &g.name, &old_id, &new_id)?;
            Ok(self.vault_resource(&moved))
        })();
        self.audit(
            "Microsoft.Resources/subscriptions/resourceGroups/moveResources/action",
            &old_id,
            &r,
        );
        r
    }

    /// Lists the backup vaults of a resource group, or of all groups.
    pub fn list_vaults(&self, rg: Option<&str>) -> Result<Vec<BackupVaultResource>> {
        let rows = match rg {
            Some(rg) => {
                let g = self.group_row(rg)?;
                self.catalog.vaults(Some(&g.name))?
            }
            None => self.catalog.vaults(None)?,
        };
        // Like ARM, a list shows only what the caller may read.
        Ok(rows
            .iter()
            .filter(|v| {
                self.authorize_action(&self.vault_id(v), action::VAULT_READ)
                    .is_ok()
            })
            .map(|v| self.vault_resource(v))
            .collect())
    }

    /// Deletes a backup vault and its storage. Refused while it has backup instances.
    pub fn delete_vault(&self, rg: &str, name: &str) -> Result<DeleteResult> {
        let v = match self.vault_for(rg, name, action::VAULT_DELETE) {
            Ok(v) => v,
            Err(e) => {
                let r = Err(e);
                self.audit(
                    "Microsoft.DataProtection/backupVaults/delete",
                    &self.vault_scope(rg, name),
                    &r,
                );
                return r;
            }
        };
        let r = self.delete_vault_inner(&v);
        self.audit(
            "Microsoft.DataProtection/backupVaults/delete",
            &self.vault_id(&v),
            &r,
        );
        r
    }

    fn delete_vault_inner(&self, v: &VaultRow) -> Result<DeleteResult> {
        let instances = self.catalog.instance_items(&v.guid)?;
        if !instances.is_empty() {
            return Err(Error::new(
                ErrorCode::BackupVaultNotEmpty,
                format!(
                    "backup vault '{}' still has {} backup instance(s): {}",
                    v.name,
                    instances.len(),
                    instances
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        // Move the storage out of the way first, so a failure leaves either the
        // whole vault or no catalog entry (a leftover `.deleted` directory is swept below).
        let path = self.storage_path(&v.guid);
        let doomed = self
            .home
            .join("storage")
            .join(format!("{}.deleted", v.guid));
        let moved = match fs::rename(&path, &doomed) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(io_error(
                    ErrorCode::StorageError,
                    &format!("cannot remove the storage of backup vault '{}'", v.name),
                    &e,
                ));
            }
        };
        if let Err(e) = self.catalog.delete_vault(&v.guid) {
            if moved {
                let _ = fs::rename(&doomed, &path);
            }
            return Err(e.into());
        }
        // The data is gone with its catalog entry: its infrastructure key goes too.
        let _ = fs::remove_file(self.infra_key_path(&v.guid));
        let _ = self.delete_system_identity(&self.vault_id(v));
        if moved {
            remove_tree(&doomed)?;
        }
        let _ = fs::remove_file(self.lock_path(&v.guid));
        let _ = fs::remove_file(self.home.join("locks").join(format!("{}.kek.lock", v.guid)));
        Ok(DeleteResult {
            job_id: None,
            id: self.vault_id(v),
            reclaimed_bytes: 0,
        })
    }

    // ------------------------------------------------------ backup instances

    fn instance_resource(&self, v: &VaultRow, bi: &InstanceItemRow) -> BackupInstanceResource {
        let (resource_id, resource_name) = match bi.datasource_type {
            DatasourceType::Directory => {
                let p = bi.datasource_path.clone().unwrap_or_default();
                let n = Path::new(&p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| p.clone());
                (p, n)
            }
            DatasourceType::Stream => ("stdin".to_owned(), bi.name.clone()),
        };
        BackupInstanceResource {
            id: self.instance_id(v, bi),
            name: bi.name.clone(),
            resource_type: INSTANCE_TYPE.to_owned(),
            properties: BackupInstanceProperties {
                object_type: "BackupInstance".to_owned(),
                friendly_name: bi.name.clone(),
                data_source_info: DatasourceInfo {
                    object_type: "Datasource".to_owned(),
                    datasource_type: bi.datasource_type.as_str().to_owned(),
                    resource_id,
                    resource_name,
                    resource_type: format!("Coffer/{}", bi.datasource_type.as_str()),
                },
                current_protection_state: "ProtectionConfigured".to_owned(),
                provisioning_state: "Succeeded".to_owned(),
                backup_instance_id: bi.guid.clone(),
                created: bi.created.clone(),
            },
        }
    }

    /// Creates a backup instance protecting a directory or a stream.
    pub fn create_backup_instance(
        &self,
        rg: &str,
        vault: &str,
        name: &str,
        ds: DatasourceSpec,
    ) -> Result<BackupInstanceResource> {
        self.authorize_action(
            &self.instance_scope(rg, vault, name),
            action::INSTANCE_WRITE,
        )?;
        let v = self.vault_row(rg, vault)?;
        let r = (|| {
            validate_instance_name(name)?;
            let path = match (ds.datasource_type, ds.path) {
                (DatasourceType::Directory, None) => {
                    return Err(Error::invalid(
                        "--datasource-path is required for datasource type Directory",
                    ));
                }
                (DatasourceType::Directory, Some(p)) => Some(check_directory(&p)?),
                (DatasourceType::Stream, Some(_)) => {
                    return Err(Error::invalid(
                        "--datasource-path is not allowed for datasource type Stream: \
                         the data is read from stdin at backup time (adhoc-backup --stdin)",
                    ));
                }
                (DatasourceType::Stream, None) => None,
            };
            if self.catalog.instance_item(&v.guid, name)?.is_some() {
                return Err(Error::new(
                    ErrorCode::ResourceAlreadyExists,
                    format!(
                        "backup instance '{name}' already exists in backup vault '{}'",
                        v.name
                    ),
                ));
            }
            let row = InstanceItemRow {
                guid: util::new_guid(),
                vault_guid: v.guid.clone(),
                name: name.to_owned(),
                datasource_type: ds.datasource_type,
                datasource_path: path,
                created: now_rfc3339(),
                created_by: self.principal().to_owned(),
            };
            self.catalog.create_instance(&row)?;
            Ok(self.instance_resource(&v, &row))
        })();
        self.audit(
            "Microsoft.DataProtection/backupVaults/backupInstances/write",
            &format!("{}/backupInstances/{name}", self.vault_id(&v)),
            &r,
        );
        r
    }

    /// Shows a backup instance.
    pub fn show_backup_instance(
        &self,
        rg: &str,
        vault: &str,
        name: &str,
    ) -> Result<BackupInstanceResource> {
        self.authorize_action(&self.instance_scope(rg, vault, name), action::INSTANCE_READ)?;
        let v = self.vault_row(rg, vault)?;
        let bi = self.instance_row(&v, name)?;
        Ok(self.instance_resource(&v, &bi))
    }

    /// Lists the backup instances of a vault.
    pub fn list_backup_instances(
        &self,
        rg: &str,
        vault: &str,
    ) -> Result<Vec<BackupInstanceResource>> {
        let v = self.vault_for(rg, vault, action::INSTANCE_READ)?;
        Ok(self
            .catalog
            .instance_items(&v.guid)?
            .iter()
            .map(|bi| self.instance_resource(&v, bi))
            .collect())
    }
}

/// Validates a Directory datasource path: absolute, existing, a directory.
fn check_directory(p: &Path) -> Result<String> {
    if !p.is_absolute() {
        return Err(Error::invalid(format!(
            "the datasource path {} is relative; give an absolute path (e.g. {})",
            p.display(),
            std::path::absolute(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
        )));
    }
    let meta = fs::metadata(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::new(
            ErrorCode::DatasourceNotFound,
            format!("the datasource path {} does not exist", p.display()),
        ),
        std::io::ErrorKind::PermissionDenied => io_error(
            ErrorCode::DatasourceNotReadable,
            &format!("cannot access the datasource path {}", p.display()),
            &e,
        ),
        _ => io_error(
            ErrorCode::DatasourceNotFound,
            &format!("cannot access the datasource path {}", p.display()),
            &e,
        ),
    })?;
    if !meta.is_dir() {
        return Err(Error::invalid(format!(
            "the datasource path {} is not a directory; use --datasource-type Stream with \
             adhoc-backup --stdin to back up a single file or a dump",
            p.display()
        )));
    }
    p.to_str().map(str::to_owned).ok_or_else(|| {
        Error::invalid(format!(
            "the datasource path {} is not valid UTF-8",
            p.display()
        ))
    })
}

/// Total size of the regular files under `p` (0 when unreadable).
fn tree_bytes(p: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

pub(crate) fn remove_tree(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(
            ErrorCode::StorageError,
            &format!("cannot remove {}", p.display()),
            &e,
        )),
    }
}

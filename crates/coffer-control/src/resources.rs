//! The resource shapes the control plane returns, serialised in camelCase JSON
//! following the ARM / `Microsoft.DataProtection` shapes of the spec notes
//! (BackupVaultResource, BackupInstanceResource, AzureBackupDiscreteRecoveryPoint,
//! AzureBackupJobResource). Fields Coffer adds are documented where they appear.

use std::collections::BTreeMap;

use serde::Serialize;

/// Resource type of backup vaults.
pub const VAULT_TYPE: &str = "Microsoft.DataProtection/backupVaults";
/// Resource type of backup instances.
pub const INSTANCE_TYPE: &str = "Microsoft.DataProtection/backupVaults/backupInstances";
/// Resource type of recovery points.
pub const RECOVERY_POINT_TYPE: &str =
    "Microsoft.DataProtection/backupVaults/backupInstances/recoveryPoints";
/// Resource type of jobs.
pub const JOB_TYPE: &str = "Microsoft.DataProtection/backupVaults/backupJobs";
/// Resource type of resource groups.
pub const GROUP_TYPE: &str = "Microsoft.Resources/resourceGroups";

/// A resource group.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroupResource {
    /// `/subscriptions/{sub}/resourceGroups/{name}`.
    pub id: String,
    /// Name.
    pub name: String,
    /// [`GROUP_TYPE`].
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Location label.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// `{provisioningState}`.
    pub properties: ProvisioningProperties,
}

/// Properties holding only a provisioning state.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningProperties {
    /// `Succeeded`.
    pub provisioning_state: String,
}

/// A backup vault (BackupVaultResource).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupVaultResource {
    /// ARM id.
    pub id: String,
    /// Name.
    pub name: String,
    /// [`VAULT_TYPE`].
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Location label.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Managed identities of the vault.
    pub identity: Identity,
    /// Vault properties.
    pub properties: BackupVaultProperties,
}

/// `identity` of a vault.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// `None`, `SystemAssigned`, `UserAssigned` or `SystemAssigned,UserAssigned`.
    #[serde(rename = "type")]
    pub identity_type: String,
    /// The system-assigned identity's principal id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Tenant id (when any identity is enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Attached user-assigned identities by ARM id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_assigned_identities: Option<BTreeMap<String, UserAssignedIdentityDetails>>,
}

/// An attached user-assigned identity.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignedIdentityDetails {
    /// Principal (object) id (absent if the identity was deleted).
    pub principal_id: Option<String>,
    /// Client id.
    pub client_id: Option<String>,
}

/// `kekIdentity` of the encryption settings.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KekIdentity {
    /// `SystemAssigned` or `UserAssigned`.
    pub identity_type: String,
    /// The user-assigned identity's ARM id (UserAssigned only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
}

/// `properties` of a vault.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupVaultProperties {
    /// `Succeeded`.
    pub provisioning_state: String,
    /// Security settings (soft delete, immutability, encryption).
    pub security_settings: SecuritySettings,
    /// Datastores and their redundancy.
    pub storage_settings: Vec<StorageSetting>,
    /// Coffer: the vault's immutable id (names its storage).
    pub vault_id: String,
    /// Coffer: creation time (RFC 3339).
    pub created: String,
}

/// `securitySettings`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySettings {
    /// Soft delete.
    pub soft_delete_settings: SoftDeleteSettings,
    /// Immutability.
    pub immutability_settings: StateSetting,
    /// Encryption (PMK: state `Disabled`).
    pub encryption_settings: EncryptionSettings,
}

/// `softDeleteSettings`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SoftDeleteSettings {
    /// `Off` (soft delete is not implemented yet).
    pub state: String,
    /// Retention in days.
    pub retention_duration_in_days: f64,
}

impl Eq for SoftDeleteSettings {}

/// A `{state}` object.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StateSetting {
    /// The state.
    pub state: String,
}

/// `encryptionSettings`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSettings {
    /// `Disabled` = platform-managed key; `Enabled` = customer-managed key.
    pub state: String,
    /// Customer-managed key (absent for PMK).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_vault_properties: Option<KeyVaultProperties>,
    /// The identity that uses the key (absent for PMK).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kek_identity: Option<KekIdentity>,
    /// `Enabled` (recorded at creation with CMK) or `Disabled`.
    pub infrastructure_encryption: String,
    /// Coffer: whether the customer-managed key can be used (absent for PMK).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_health: Option<EncryptionHealth>,
}

/// Coffer's `encryptionHealth` of a CMK vault.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionHealth {
    /// `Healthy` or `KeyAccessLost`.
    pub state: String,
    /// KeyAccessLost: since when (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// KeyAccessLost: the code jobs fail with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// KeyAccessLost: bytes still stored in the vault (unreadable until access returns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
}

/// `keyVaultProperties`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyVaultProperties {
    /// Key URI as given (versioned, or versionless for autorotation).
    pub key_uri: String,
    /// Coffer: the versioned key id that wraps the DEK now.
    pub current_key_id: String,
    /// Coffer: the key version in use.
    pub current_key_version: String,
}

/// One `storageSettings` entry.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSetting {
    /// `VaultStore`.
    pub datastore_type: String,
    /// `LocallyRedundant`.
    #[serde(rename = "type")]
    pub redundancy: String,
}

/// A backup instance (BackupInstanceResource).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupInstanceResource {
    /// ARM id.
    pub id: String,
    /// Name.
    pub name: String,
    /// [`INSTANCE_TYPE`].
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Properties.
    pub properties: BackupInstanceProperties,
}

/// `properties` of a backup instance.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupInstanceProperties {
    /// `BackupInstance`.
    pub object_type: String,
    /// Friendly name (= name).
    pub friendly_name: String,
    /// The protected datasource.
    pub data_source_info: DatasourceInfo,
    /// `ProtectionConfigured`.
    pub current_protection_state: String,
    /// `Succeeded`.
    pub provisioning_state: String,
    /// Coffer: immutable id of the instance.
    pub backup_instance_id: String,
    /// Coffer: creation time (RFC 3339).
    pub created: String,
}

/// `dataSourceInfo`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DatasourceInfo {
    /// `Datasource`.
    pub object_type: String,
    /// `Directory` or `Stream`.
    pub datasource_type: String,
    /// The absolute path (Directory), or `stdin` (Stream).
    #[serde(rename = "resourceID")]
    pub resource_id: String,
    /// Last path component, or the instance name for a stream.
    pub resource_name: String,
    /// `Coffer/Directory` or `Coffer/Stream`.
    pub resource_type: String,
}

/// A recovery point (AzureBackupDiscreteRecoveryPoint).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPointResource {
    /// ARM id.
    pub id: String,
    /// Recovery point id.
    pub name: String,
    /// [`RECOVERY_POINT_TYPE`].
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Properties.
    pub properties: RecoveryPointProperties,
}

/// `properties` of a recovery point.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPointProperties {
    /// `AzureBackupDiscreteRecoveryPoint`.
    pub object_type: String,
    /// Recovery point id (32 hex characters).
    pub recovery_point_id: String,
    /// RFC 3339 time.
    pub recovery_point_time: String,
    /// `Incremental` (every recovery point is complete but deduplicated).
    pub recovery_point_type: String,
    /// `Completed`.
    pub recovery_point_state: String,
    /// The datastore holding it.
    pub recovery_point_data_stores_details: Vec<RecoveryPointDataStoreDetails>,
    /// Coffer: `Directory` or `Stream`.
    pub datasource_type: String,
    /// Coffer: total bytes of content.
    pub logical_size_in_bytes: u64,
    /// Coffer: bytes newly stored in the vault by this backup.
    pub added_size_in_bytes: u64,
    /// Coffer: regular files.
    pub file_count: u64,
    /// Coffer: directories.
    pub directory_count: u64,
}

/// One `recoveryPointDataStoresDetails` entry.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPointDataStoreDetails {
    /// Datastore id (the vault id).
    pub id: String,
    /// `VaultStore`.
    #[serde(rename = "type")]
    pub datastore_type: String,
    /// `Completed`.
    pub state: String,
    /// Visible.
    pub visible: bool,
    /// RFC 3339.
    pub creation_time: String,
}

/// A job (AzureBackupJobResource).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobResource {
    /// ARM id.
    pub id: String,
    /// Job id.
    pub name: String,
    /// [`JOB_TYPE`].
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Properties.
    pub properties: JobProperties,
}

/// `properties` of a job (a subset of AzureBackupJob).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobProperties {
    /// Job id.
    #[serde(rename = "activityID")]
    pub activity_id: String,
    /// `Backup`, `Restore`, `DeleteRecoveryPoint`, `DeleteBackupInstance`.
    pub operation: String,
    /// `Backup`, `Restore` or `Management`.
    pub operation_category: String,
    /// `InProgress`, `Completed`, `CompletedWithWarnings`, `Failed`.
    pub status: String,
    /// RFC 3339.
    pub start_time: String,
    /// RFC 3339, when finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// ISO 8601 duration (`PT12.345S`), so far or in total.
    pub duration: String,
    /// Vault name.
    pub vault_name: String,
    /// Backup instance name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_instance_friendly_name: Option<String>,
    /// `Directory` or `Stream`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_source_type: Option<String>,
    /// Always true (no schedules yet).
    pub is_user_triggered: bool,
    /// Principal id that started it.
    pub initiated_by: String,
    /// Process that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_id: Option<i64>,
    /// Errors (one, on failure).
    pub error_details: Vec<UserFacingError>,
    /// Bytes, recovery point, warnings.
    pub extended_info: JobExtendedInfo,
}

/// A UserFacingError.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserFacingError {
    /// Stable code.
    pub code: String,
    /// Message.
    pub message: String,
    /// Recommended actions.
    pub recommended_action: Vec<String>,
}

/// `extendedInfo` of a job.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobExtendedInfo {
    /// Bytes read (backup) or written (restore).
    pub data_transferred_in_bytes: u64,
    /// Recovery point made (backup) or used (restore, delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_point: Option<JobRecoveryPoint>,
    /// Items skipped.
    pub warning_details: Vec<WarningDetail>,
}

/// A recovery point referenced by a job.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobRecoveryPoint {
    /// Recovery point id.
    #[serde(rename = "recoveryPointID")]
    pub recovery_point_id: String,
    /// RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_point_time: Option<String>,
}

/// A warning of a job.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WarningDetail {
    /// The affected item.
    pub resource_name: String,
    /// What happened.
    pub warning: String,
}

/// Result of an ad-hoc backup.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupResult {
    /// The job that ran it.
    pub job_id: String,
    /// `Completed` or `CompletedWithWarnings`.
    pub status: String,
    /// The new recovery point.
    pub recovery_point: RecoveryPointResource,
    /// Items skipped.
    pub warnings: Vec<String>,
}

/// Result of a restore.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    /// The job that ran it.
    pub job_id: String,
    /// `Completed` or `CompletedWithWarnings`.
    pub status: String,
    /// The recovery point restored.
    pub recovery_point_id: String,
    /// Regular files restored.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Items skipped.
    pub warnings: Vec<String>,
}

/// Result of a deletion run as a job.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResult {
    /// The job that ran it (absent when nothing needed a job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// ARM id of what was deleted.
    pub id: String,
    /// Bytes of storage reclaimed.
    pub reclaimed_bytes: u64,
}

/// Result of `backup-vault check`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Vault ARM id.
    pub id: String,
    /// True when nothing is damaged.
    pub clean: bool,
    /// Whether data was decrypted and verified.
    pub read_data: bool,
    /// Objects examined.
    pub objects_checked: u64,
    /// Chunks decrypted and verified.
    pub chunks_verified: u64,
    /// Damaged or missing objects.
    pub damaged_objects: Vec<String>,
    /// Damaged recovery points and their affected files.
    pub damaged_recovery_points: Vec<DamagedRecoveryPoint>,
}

/// A damaged recovery point found by check.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DamagedRecoveryPoint {
    /// Recovery point id.
    pub recovery_point_id: String,
    /// Backup instance name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_instance: Option<String>,
    /// Affected files.
    pub files: Vec<String>,
}

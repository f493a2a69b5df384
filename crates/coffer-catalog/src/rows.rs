//! Typed rows of the catalog tables and the small enums stored as text.

/// The instance: one per home directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRow {
    /// Immutable id of this instance (a GUID).
    pub instance_id: String,
    /// Default subscription id (a GUID).
    pub subscription_id: String,
    /// Tenant id (a GUID).
    pub tenant_id: String,
    /// Principal id of the instance administrator (a GUID).
    pub admin_principal_id: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Hex fingerprint (keyed hash) of the master key; identifies the key, reveals nothing.
    pub master_key_fingerprint: String,
}

/// A platform-managed key, sealed under the instance master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformKeyRow {
    /// Key identifier, e.g. `coffer:pmk:{instance}/1`.
    pub key_id: String,
    /// Sealed key bytes (nonce ‖ ciphertext ‖ tag).
    pub sealed: Vec<u8>,
    /// RFC 3339 creation time.
    pub created: String,
    /// Whether new vaults use this key.
    pub active: bool,
}

/// A resource group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceGroupRow {
    /// Name (case-insensitive, case-preserving).
    pub name: String,
    /// Location label.
    pub location: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Principal id that created it.
    pub created_by: String,
    /// Tags as a JSON object.
    pub tags_json: String,
}

/// A backup vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultRow {
    /// Immutable id (a GUID); also names its storage directory.
    pub guid: String,
    /// Name (case-insensitive within its resource group).
    pub name: String,
    /// Owning resource group.
    pub resource_group: String,
    /// Location label.
    pub location: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Principal id that created it.
    pub created_by: String,
    /// The wrapped DEK record (JSON, no secret in the clear).
    pub wrapped_key_json: String,
    /// `Disabled` (platform-managed key), `Enabled` (customer-managed) or `Inconsistent`.
    pub encryption_state: String,
    /// storageSettings as JSON.
    pub storage_settings_json: String,
    /// Tags as a JSON object.
    pub tags_json: String,
}

/// What a backup instance protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasourceType {
    /// A directory tree.
    Directory,
    /// A byte stream given at backup time (stdin).
    Stream,
}

impl DatasourceType {
    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Directory => "Directory",
            Self::Stream => "Stream",
        }
    }

    /// Parses [`Self::as_str`] output (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("Directory") {
            Some(Self::Directory)
        } else if s.eq_ignore_ascii_case("Stream") {
            Some(Self::Stream)
        } else {
            None
        }
    }
}

/// A backup instance (a protected datasource in a vault).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceItemRow {
    /// Immutable id (a GUID); the engine's `instance_id`.
    pub guid: String,
    /// Owning vault.
    pub vault_guid: String,
    /// Name (case-insensitive within its vault).
    pub name: String,
    /// Directory or Stream.
    pub datasource_type: DatasourceType,
    /// Absolute directory path (Directory only).
    pub datasource_path: Option<String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// Principal id that created it.
    pub created_by: String,
}

/// A recovery point as recorded in the catalog (a cache of storage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPointRow {
    /// Recovery point id (32 hex characters).
    pub id: String,
    /// Owning backup instance.
    pub instance_guid: String,
    /// Unix seconds (UTC).
    pub time: i64,
    /// Datastore, `VaultStore`.
    pub datastore: String,
    /// Total bytes of content.
    pub logical_bytes: u64,
    /// Bytes newly stored by this backup.
    pub added_bytes: u64,
    /// Regular files.
    pub file_count: u64,
    /// Directories.
    pub dir_count: u64,
    /// `Directory` or `Stream`.
    pub source_kind: String,
    /// `Completed`.
    pub state: String,
}

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobOperation {
    /// An ad-hoc backup.
    Backup,
    /// A restore.
    Restore,
    /// Deleting one recovery point.
    DeleteRecoveryPoint,
    /// Deleting a backup instance with its recovery points.
    DeleteBackupInstance,
}

impl JobOperation {
    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backup => "Backup",
            Self::Restore => "Restore",
            Self::DeleteRecoveryPoint => "DeleteRecoveryPoint",
            Self::DeleteBackupInstance => "DeleteBackupInstance",
        }
    }

    /// Parses [`Self::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Backup,
            Self::Restore,
            Self::DeleteRecoveryPoint,
            Self::DeleteBackupInstance,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// Status of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Running (or its process died; see `JobInterrupted`).
    InProgress,
    /// Finished successfully.
    Completed,
    /// Finished, with items skipped (see warnings).
    CompletedWithWarnings,
    /// Failed (see the error code).
    Failed,
}

impl JobStatus {
    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Completed => "Completed",
            Self::CompletedWithWarnings => "CompletedWithWarnings",
            Self::Failed => "Failed",
        }
    }

    /// Parses [`Self::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::InProgress,
            Self::Completed,
            Self::CompletedWithWarnings,
            Self::Failed,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// A job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRow {
    /// Job id (a GUID).
    pub guid: String,
    /// Vault the job ran against.
    pub vault_guid: String,
    /// Backup instance, if any.
    pub instance_guid: Option<String>,
    /// Backup instance name at the time (kept after the instance is deleted).
    pub instance_name: Option<String>,
    /// Datasource type of the instance.
    pub datasource_type: Option<DatasourceType>,
    /// What it does.
    pub operation: JobOperation,
    /// Status.
    pub status: JobStatus,
    /// Start, unix milliseconds.
    pub start_ms: i64,
    /// End, unix milliseconds.
    pub end_ms: Option<i64>,
    /// Bytes processed.
    pub bytes: u64,
    /// Process id running the job.
    pub pid: Option<i64>,
    /// Start time of that process (to detect pid reuse), clock ticks since boot.
    pub pid_start: Option<i64>,
    /// Error code on failure.
    pub error_code: Option<String>,
    /// Error message on failure.
    pub error_message: Option<String>,
    /// Recommended action on failure.
    pub recommended_action: Option<String>,
    /// Warnings as a JSON array of strings.
    pub warnings_json: String,
    /// Principal id that started the job.
    pub principal: String,
    /// Recovery point made, restored or deleted.
    pub recovery_point_id: Option<String>,
    /// Its time, unix seconds.
    pub recovery_point_time: Option<i64>,
}

/// The final state written by [`crate::Catalog::finish_job`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFinish {
    /// Final status.
    pub status: JobStatus,
    /// End, unix milliseconds.
    pub end_ms: i64,
    /// Bytes processed.
    pub bytes: u64,
    /// Error code on failure.
    pub error_code: Option<String>,
    /// Error message on failure.
    pub error_message: Option<String>,
    /// Recommended action on failure.
    pub recommended_action: Option<String>,
    /// Warnings as a JSON array of strings.
    pub warnings_json: String,
    /// Recovery point, if now known.
    pub recovery_point_id: Option<String>,
    /// Its time, if now known.
    pub recovery_point_time: Option<i64>,
}

/// One entry of the activity log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityRow {
    /// Unix milliseconds.
    pub time_ms: i64,
    /// Calling principal id.
    pub principal: String,
    /// Operation, e.g. `Microsoft.DataProtection/backupVaults/write`.
    pub operation: String,
    /// ARM-style resource id.
    pub resource_id: String,
    /// `Succeeded` or `Failed`.
    pub status: String,
    /// Error code on failure.
    pub error_code: Option<String>,
    /// HTTP method of the operation (`PUT`, `PATCH`, `DELETE`, `POST`).
    pub http_method: Option<String>,
    /// Correlation id (a GUID per operation).
    pub correlation_id: Option<String>,
}

//! The one public error type of the control plane, with stable string codes.
//!
//! Every failure that reaches a user is an [`Error`]: a stable [`ErrorCode`]
//! (listed with meanings and recommended actions in `docs/errors.md`), a message
//! that never contains key material, and an optional recommended action. Engine,
//! catalog, storage and crypto errors are all mapped here and nowhere else.

use std::fmt;

use coffer_catalog::CatalogError;
use coffer_crypto::{CryptoError, wrap::WrapError};
use coffer_engine::EngineError;
use coffer_store::StoreError;

/// Stable error codes. The string forms ([`ErrorCode::as_str`]) are part of the
/// public interface: never rename one, only add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// An argument is missing, malformed or inconsistent with the resource.
    InvalidArgument,
    /// A resource name does not follow the naming rule of its type.
    InvalidResourceName,
    /// A resource with this name already exists.
    ResourceAlreadyExists,
    /// The resource group does not exist.
    ResourceGroupNotFound,
    /// The resource group still contains backup vaults.
    ResourceGroupNotEmpty,
    /// The backup vault does not exist.
    BackupVaultNotFound,
    /// The backup vault still contains backup instances.
    BackupVaultNotEmpty,
    /// The backup instance does not exist.
    BackupInstanceNotFound,
    /// The recovery point does not exist (for this backup instance).
    RecoveryPointNotFound,
    /// The job does not exist.
    JobNotFound,
    /// The datasource path does not exist.
    DatasourceNotFound,
    /// The datasource exists but cannot be read.
    DatasourceNotReadable,
    /// The instance master key file is missing.
    MasterKeyNotFound,
    /// The master key file does not belong to this instance.
    MasterKeyMismatch,
    /// The master key file is malformed.
    MasterKeyInvalid,
    /// The key encryption key that protects a vault's DEK cannot be used.
    EncryptionKeyUnavailable,
    /// A restore would overwrite existing items with recovery option FailIfExists.
    RestoreTargetExists,
    /// The restore target cannot be written or is of the wrong kind.
    RestoreTargetInvalid,
    /// The `--path` given to restore is not in the recovery point.
    RestorePathNotFound,
    /// Some files could not be restored because their stored data is damaged.
    RestoreIncomplete,
    /// Stored data failed authentication or is missing.
    DataCorrupted,
    /// The vault's storage could not be read or written.
    StorageError,
    /// The catalog database could not be read or written.
    CatalogError,
    /// The instance home directory cannot be created or used.
    HomeDirectoryError,
    /// The process running a job stopped before the job finished.
    JobInterrupted,
    /// The managed identity (or principal) does not exist.
    IdentityNotFound,
    /// No role definition with this name or id.
    RoleDefinitionNotFound,
    /// No role assignment with this id.
    RoleAssignmentNotFound,
    /// The calling principal may not perform this management-plane action at this scope (Azure RBAC).
    AuthorizationFailed,
    /// The key vault (or managed HSM) does not exist, or is soft-deleted.
    KeyVaultNotFound,
    /// Key Vault refused the operation: the caller lacks the permission (innererror ForbiddenByRbac or AccessDenied), the key is disabled, not yet active or expired (KeyDisabled, KeyNotYetValid, KeyExpired), the operation is not in key_ops (OperationNotAllowed), or purge protection forbids a purge (PurgeProtectionEnabled).
    Forbidden,
    /// The key (or key version, or deleted key) does not exist in this key vault.
    KeyNotFound,
    /// The key vault object is in a conflicting state; innererror ObjectIsDeletedButRecoverable: a soft-deleted key or vault keeps its name until it is recovered or purged.
    Conflict,
    /// A Key Vault parameter is invalid: key type, size or curve, algorithm (RSA1_5 is refused), a value that is not base64url or does not fit the key, retention days outside 7..90, an irreversible setting being turned off, or an HSM key type without a configured token.
    BadParameter,
    /// CMK: soft delete is not enabled on the key vault.
    CmkSoftDeleteNotEnabledOnKeyVault,
    /// CMK: purge protection is not enabled on the key vault.
    CmkPurgeProtectionNotEnabledOnKeyVault,
    /// CMK: the vault's identity lacks get/wrapKey/unwrapKey on the key, is disabled or detached, or the key is not RSA (the seed's spelling, sic).
    CmkMissingManagedIdentityPermission,
    /// CMK: the key vault or the key does not exist, is soft-deleted, or cannot be reached.
    CmkKeyVaultAuthFailure,
    /// CMK: the RSA key is not 2048, 3072 or 4096 bits.
    CmkUnsupportedKeySize,
    /// CMK: the key is disabled, expired or not yet valid.
    CmkKeyDisabledOrExpired,
    /// CMK: the key URI is not {vaultUri}/keys/{name}[/{version}].
    CmkInvalidKeyUri,
    /// CMK: one update changed both the key URI and the identity.
    CmkKeyAndIdentityUpdateInSameRequest,
    /// CMK: encryption cannot go back to the platform-managed key.
    CmkCannotRevertToPlatformKey,
    /// CMK: a system-assigned identity was chosen for the key at vault creation.
    CmkSystemAssignedIdentityNotAllowedAtCreation,
    /// CMK: infrastructure encryption was set after creation or without a customer-managed key.
    CmkInfrastructureEncryptionOnlyAtCreation,
    /// CMK: a user-assigned identity with a key vault that limits network access (defaultAction Deny).
    CmkUserAssignedIdentityWithRestrictedKeyVault,
    /// CMK: an identity change would detach or disable the identity the vault's customer-managed key is used with (refused without --force).
    CmkIdentityInUseForEncryption,
    /// A vault encrypted with a customer-managed key cannot be moved to another resource group or subscription.
    CmkVaultMoveNotSupported,
    /// An unexpected internal failure (a bug).
    InternalError,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: &'static [ErrorCode] = &[
        Self::InvalidArgument,
        Self::InvalidResourceName,
        Self::ResourceAlreadyExists,
        Self::ResourceGroupNotFound,
        Self::ResourceGroupNotEmpty,
        Self::BackupVaultNotFound,
        Self::BackupVaultNotEmpty,
        Self::BackupInstanceNotFound,
        Self::RecoveryPointNotFound,
        Self::JobNotFound,
        Self::DatasourceNotFound,
        Self::DatasourceNotReadable,
        Self::MasterKeyNotFound,
        Self::MasterKeyMismatch,
        Self::MasterKeyInvalid,
        Self::EncryptionKeyUnavailable,
        Self::RestoreTargetExists,
        Self::RestoreTargetInvalid,
        Self::RestorePathNotFound,
        Self::RestoreIncomplete,
        Self::DataCorrupted,
        Self::StorageError,
        Self::CatalogError,
        Self::HomeDirectoryError,
        Self::JobInterrupted,
        Self::IdentityNotFound,
        Self::RoleDefinitionNotFound,
        Self::RoleAssignmentNotFound,
        Self::AuthorizationFailed,
        Self::KeyVaultNotFound,
        Self::Forbidden,
        Self::KeyNotFound,
        Self::Conflict,
        Self::BadParameter,
        Self::CmkSoftDeleteNotEnabledOnKeyVault,
        Self::CmkPurgeProtectionNotEnabledOnKeyVault,
        Self::CmkMissingManagedIdentityPermission,
        Self::CmkKeyVaultAuthFailure,
        Self::CmkUnsupportedKeySize,
        Self::CmkKeyDisabledOrExpired,
        Self::CmkInvalidKeyUri,
        Self::CmkKeyAndIdentityUpdateInSameRequest,
        Self::CmkCannotRevertToPlatformKey,
        Self::CmkSystemAssignedIdentityNotAllowedAtCreation,
        Self::CmkInfrastructureEncryptionOnlyAtCreation,
        Self::CmkUserAssignedIdentityWithRestrictedKeyVault,
        Self::CmkIdentityInUseForEncryption,
        Self::CmkVaultMoveNotSupported,
        Self::InternalError,
    ];

    /// The stable string code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "InvalidArgument",
            Self::InvalidResourceName => "InvalidResourceName",
            Self::ResourceAlreadyExists => "ResourceAlreadyExists",
            Self::ResourceGroupNotFound => "ResourceGroupNotFound",
            Self::ResourceGroupNotEmpty => "ResourceGroupNotEmpty",
            Self::BackupVaultNotFound => "BackupVaultNotFound",
            Self::BackupVaultNotEmpty => "BackupVaultNotEmpty",
            Self::BackupInstanceNotFound => "BackupInstanceNotFound",
            Self::RecoveryPointNotFound => "RecoveryPointNotFound",
            Self::JobNotFound => "JobNotFound",
            Self::DatasourceNotFound => "DatasourceNotFound",
            Self::DatasourceNotReadable => "DatasourceNotReadable",
            Self::MasterKeyNotFound => "MasterKeyNotFound",
            Self::MasterKeyMismatch => "MasterKeyMismatch",
            Self::MasterKeyInvalid => "MasterKeyInvalid",
            Self::EncryptionKeyUnavailable => "EncryptionKeyUnavailable",
            Self::RestoreTargetExists => "RestoreTargetExists",
            Self::RestoreTargetInvalid => "RestoreTargetInvalid",
            Self::RestorePathNotFound => "RestorePathNotFound",
            Self::RestoreIncomplete => "RestoreIncomplete",
            Self::DataCorrupted => "DataCorrupted",
            Self::StorageError => "StorageError",
            Self::CatalogError => "CatalogError",
            Self::HomeDirectoryError => "HomeDirectoryError",
            Self::JobInterrupted => "JobInterrupted",
            Self::IdentityNotFound => "IdentityNotFound",
            Self::RoleDefinitionNotFound => "RoleDefinitionNotFound",
            Self::RoleAssignmentNotFound => "RoleAssignmentNotFound",
            Self::AuthorizationFailed => "AuthorizationFailed",
            Self::KeyVaultNotFound => "KeyVaultNotFound",
            Self::Forbidden => "Forbidden",
            Self::KeyNotFound => "KeyNotFound",
            Self::Conflict => "Conflict",
            Self::BadParameter => "BadParameter",
            Self::CmkSoftDeleteNotEnabledOnKeyVault => "UserErrorCMKSoftDeleteNotEnabledOnKeyVault",
            Self::CmkPurgeProtectionNotEnabledOnKeyVault => {
                "UserErrorCMKPurgeProtectionNotEnabledOnKeyVault"
            }
            Self::CmkMissingManagedIdentityPermission => {
                "UserErrorCMKMissingMangedIdentityPermissionOnKeyVault"
            }
            Self::CmkKeyVaultAuthFailure => "UserErrorCMKKeyVaultAuthFailure",
            Self::CmkUnsupportedKeySize => "UserErrorCMKUnsupportedKeySize",
            Self::CmkKeyDisabledOrExpired => "UserErrorCMKKeyDisabledOrExpired",
            Self::CmkInvalidKeyUri => "UserErrorCMKInvalidKeyUri",
            Self::CmkKeyAndIdentityUpdateInSameRequest => {
                "UserErrorCMKKeyAndIdentityUpdateInSameRequest"
            }
            Self::CmkCannotRevertToPlatformKey => "UserErrorCMKCannotRevertToPlatformKey",
            Self::CmkSystemAssignedIdentityNotAllowedAtCreation => {
                "UserErrorCMKSystemAssignedIdentityNotAllowedAtCreation"
            }
            Self::CmkInfrastructureEncryptionOnlyAtCreation => {
                "UserErrorCMKInfrastructureEncryptionOnlyAtCreation"
            }
            Self::CmkUserAssignedIdentityWithRestrictedKeyVault => {
                "UserErrorCMKUserAssignedIdentityWithRestrictedKeyVault"
            }
            Self::CmkIdentityInUseForEncryption => "UserErrorCMKIdentityInUseForEncryption",
            Self::CmkVaultMoveNotSupported => "UserErrorCMKVaultMoveNotSupported",
            Self::InternalError => "InternalError",
        }
    }

    /// The default recommended action for this code, if there is a useful one.
    pub fn default_action(self) -> Option<&'static str> {
        Some(match self {
            Self::InvalidArgument => {
                "Correct the argument and retry; see `coffer <command> --help`."
            }
            Self::InvalidResourceName => "Choose a name that follows the rule in the message.",
            Self::ResourceAlreadyExists => "Choose another name, or use the existing resource.",
            Self::ResourceGroupNotFound => {
                "Check the name with `coffer group list`, or create it with `coffer group create -n NAME`."
            }
            Self::ResourceGroupNotEmpty => {
                "Delete the backup vaults in the group first (`coffer backup-vault list -g NAME`)."
            }
            Self::BackupVaultNotFound => {
                "Check the vault name and resource group with `coffer backup-vault list`."
            }
            Self::BackupVaultNotEmpty => {
                "Delete the vault's backup instances first (`coffer backup-instance list -v VAULT`)."
            }
            Self::BackupInstanceNotFound => {
                "Check the name with `coffer backup-instance list -v VAULT`."
            }
            Self::RecoveryPointNotFound => {
                "List the recovery points with `coffer recovery-point list -v VAULT --backup-instance NAME`."
            }
            Self::JobNotFound => "List the jobs with `coffer job list -v VAULT`.",
            Self::DatasourceNotFound => {
                "Make sure the datasource path exists and is an absolute path to a directory."
            }
            Self::DatasourceNotReadable => {
                "Grant the user running coffer read access to the datasource, then retry."
            }
            Self::MasterKeyNotFound => {
                "Restore the instance master key file from your key backup (default: HOME/master.key), \
                 or pass its location with --master-key-file / COFFER_MASTER_KEY_FILE. \
                 Do not create a new key: the existing data can only be opened with the original one."
            }
            Self::MasterKeyMismatch => {
                "Use the master key file that belongs to this instance (--master-key-file / COFFER_MASTER_KEY_FILE)."
            }
            Self::MasterKeyInvalid => {
                "Restore the master key file from your key backup; it must hold exactly 32 bytes."
            }
            Self::EncryptionKeyUnavailable => {
                "Restore access to the key that protects the vault's data encryption key, then retry."
            }
            Self::RestoreTargetExists => {
                "Restore into an empty or new target, or pass --recovery-option Overwrite."
            }
            Self::RestoreTargetInvalid => {
                "Choose a target you can write to: a directory for Directory backups, a file or '-' for Stream backups."
            }
            Self::RestorePathNotFound => {
                "Check the path inside the recovery point (relative to the protected directory)."
            }
            Self::RestoreIncomplete => {
                "Run `coffer backup-vault check -v VAULT --read-data` and restore the damaged files from another recovery point."
            }
            Self::DataCorrupted => {
                "Run `coffer backup-vault check -v VAULT --read-data` to find the damaged recovery points, and restore from an undamaged one."
            }
            Self::StorageError => {
                "Check that the vault's storage directory is present, writable and not full, then retry."
            }
            Self::CatalogError => {
                "Check that the home directory is writable and not full, then retry."
            }
            Self::HomeDirectoryError => {
                "Check --home / COFFER_HOME and the permissions of that directory."
            }
            Self::JobInterrupted => "Run the operation again.",
            Self::IdentityNotFound => "Check with `coffer identity list`.",
            Self::RoleDefinitionNotFound => "List them with `coffer role definition list`.",
            Self::RoleAssignmentNotFound => "List them with `coffer role assignment list`.",
            Self::AuthorizationFailed => {
                "Ask an administrator for a role assignment that grants the action (e.g. Contributor or Owner) at this scope or above."
            }
            Self::KeyVaultNotFound => "Check with `coffer keyvault list` (or `list-deleted`).",
            Self::Forbidden => {
                "Grant the permission (access policy or role assignment at the key or vault scope), or enable the key / fix its attributes."
            }
            Self::KeyNotFound => "Check with `coffer keyvault key list` / `list-deleted`.",
            Self::Conflict => {
                "Recover the deleted object, or purge it (unless purge protection is on), or choose another name."
            }
            Self::BadParameter => "Correct the parameter; see docs/keyvault.md.",
            Self::CmkSoftDeleteNotEnabledOnKeyVault => {
                "Enable soft delete on the key vault (`coffer keyvault update -n KV --enable-soft-delete true`), then retry."
            }
            Self::CmkPurgeProtectionNotEnabledOnKeyVault => {
                "Enable purge protection on the key vault (`coffer keyvault update -n KV --enable-purge-protection true`), then retry."
            }
            Self::CmkMissingManagedIdentityPermission => {
                "Grant the identity used for encryption get, wrapKey and unwrapKey (access policy) or the Key Vault Crypto Service Encryption User role (RBAC), reattach or re-enable it, use an RSA key, then retry."
            }
            Self::CmkKeyVaultAuthFailure => {
                "Check the key URI; recover a soft-deleted key or key vault (`coffer keyvault key recover` / `coffer keyvault recover`), then retry."
            }
            Self::CmkUnsupportedKeySize => "Use an RSA key of 2048, 3072 or 4096 bits.",
            Self::CmkKeyDisabledOrExpired => {
                "Enable the key or fix its activation/expiry dates (`coffer keyvault key set-attributes`), or move the vault to another key, then retry."
            }
            Self::CmkInvalidKeyUri => {
                "Copy the key id from `coffer keyvault key show` (kid), with or without its version."
            }
            Self::CmkKeyAndIdentityUpdateInSameRequest => {
                "Update the key URI and the identity in two separate requests."
            }
            Self::CmkCannotRevertToPlatformKey => {
                "Keep --cmk-encryption-state Enabled; change the key or the identity instead."
            }
            Self::CmkSystemAssignedIdentityNotAllowedAtCreation => {
                "Use a user-assigned identity at creation, or create the vault, enable its system-assigned identity, grant it access and update the encryption settings."
            }
            Self::CmkInfrastructureEncryptionOnlyAtCreation => {
                "Set --cmk-infrastructure-encryption only with `backup-vault create` together with a customer-managed key."
            }
            Self::CmkUserAssignedIdentityWithRestrictedKeyVault => {
                "Use the system-assigned identity for this key vault, or allow network access (`--default-action Allow`)."
            }
            Self::CmkIdentityInUseForEncryption => {
                "Change the encryption identity first (`backup-vault update --cmk-identity-type ...`), or pass --force if you mean to cut the vault off its key."
            }
            Self::CmkVaultMoveNotSupported => {
                "Keep the vault where it is; create a new vault in the target group if needed."
            }
            Self::InternalError => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control-plane error: stable code, message, and recommended action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Stable code.
    pub code: ErrorCode,
    /// What went wrong (never contains secrets).
    pub message: String,
    /// What the user can do about it.
    pub recommended_action: Option<String>,
    /// The job that recorded this failure, if one was created.
    pub job_id: Option<String>,
    /// Key Vault `innererror.code` (e.g. `ForbiddenByRbac`, `ObjectIsDeletedButRecoverable`).
    pub inner_code: Option<String>,
}

impl Error {
    /// An error with the code's default recommended action.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            recommended_action: code.default_action().map(str::to_owned),
            job_id: None,
            inner_code: None,
        }
    }

    /// Attaches a Key Vault inner error code.
    pub fn with_inner(mut self, inner: impl Into<String>) -> Self {
        self.inner_code = Some(inner.into());
        self
    }

    /// Replaces the recommended action.
    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.recommended_action = Some(action.into());
        self
    }

    /// Attaches the id of the job that recorded this failure.
    pub fn with_job(mut self, job_id: impl Into<String>) -> Self {
        self.job_id = Some(job_id.into());
        self
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

/// Result alias of the control plane.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<CatalogError> for Error {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::AlreadyExists { .. } => {
                Error::new(ErrorCode::ResourceAlreadyExists, e.to_string())
            }
            CatalogError::NotEmpty { kind, .. } => {
                let code = if kind == "resource group" {
                    ErrorCode::ResourceGroupNotEmpty
                } else {
                    ErrorCode::BackupVaultNotEmpty
                };
                Error::new(code, e.to_string())
            }
            other => Error::new(ErrorCode::CatalogError, other.to_string()),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Error::new(
                ErrorCode::DataCorrupted,
                format!("vault storage is missing data: {e}"),
            ),
            StoreError::Corrupt { .. } => Error::new(ErrorCode::DataCorrupted, e.to_string()),
            other => Error::new(ErrorCode::StorageError, other.to_string()),
        }
    }
}

impl From<CryptoError> for Error {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::WrongKey(_) => {
                Error::new(ErrorCode::EncryptionKeyUnavailable, e.to_string())
            }
            CryptoError::Authentication | CryptoError::Malformed(_) => {
                Error::new(ErrorCode::DataCorrupted, e.to_string())
            }
            other => Error::internal(other.to_string()),
        }
    }
}

impl From<WrapError> for Error {
    fn from(e: WrapError) -> Self {
        match e {
            WrapError::Crypto(c) => {
                let mut err = Error::from(c);
                if err.code == ErrorCode::DataCorrupted {
                    err = Error::new(
                        ErrorCode::EncryptionKeyUnavailable,
                        format!(
                            "the vault's data encryption key cannot be unwrapped: {}",
                            err.message
                        ),
                    );
                }
                err
            }
            WrapError::Unavailable { code, message } => {
                match ErrorCode::ALL.iter().find(|c| c.as_str() == code) {
                    Some(c) => Error::new(*c, message),
                    None => Error::new(
                        ErrorCode::EncryptionKeyUnavailable,
                        format!("{code}: {message}"),
                    ),
                }
            }
            other => Error::new(ErrorCode::EncryptionKeyUnavailable, other.to_string()),
        }
    }
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        let msg = e.to_string();
        match e {
            EngineError::Store(s) => Error::from(s),
            EngineError::Damaged { .. } => Error::new(ErrorCode::DataCorrupted, msg),
            EngineError::Stopped => Error::new(ErrorCode::JobInterrupted, msg),
            EngineError::RecoveryPointNotFound(_) => {
                Error::new(ErrorCode::RecoveryPointNotFound, msg)
            }
            EngineError::Source { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => Error::new(ErrorCode::DatasourceNotFound, msg),
                std::io::ErrorKind::PermissionDenied => {
                    Error::new(ErrorCode::DatasourceNotReadable, msg)
                }
                std::io::ErrorKind::NotADirectory => Error::new(ErrorCode::InvalidArgument, msg)
                    .with_action(
                        "The datasource of a Directory backup instance must be a directory.",
                    ),
                _ => Error::new(ErrorCode::DatasourceNotReadable, msg),
            },
            EngineError::PathNotFound(_) => Error::new(ErrorCode::RestorePathNotFound, msg),
            EngineError::TargetExists(_) => Error::new(ErrorCode::RestoreTargetExists, msg),
            EngineError::Target { .. } => Error::new(ErrorCode::RestoreTargetInvalid, msg),
            EngineError::RestoreIncomplete(_) => Error::new(ErrorCode::RestoreIncomplete, msg),
            EngineError::Internal(_) => Error::internal(msg),
            _ => Error::internal(msg),
        }
    }
}

pub(crate) fn io_error(code: ErrorCode, what: &str, e: &std::io::Error) -> Error {
    Error::new(code, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_listed() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
        }
        let doc = include_str!("../../../docs/errors.md");
        for c in ErrorCode::ALL {
            assert!(
                doc.contains(&format!("`{}`", c.as_str())),
                "{c} missing from docs/errors.md"
            );
        }
    }
}

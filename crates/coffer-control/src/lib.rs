//! Coffer's control plane: the embedded instance and its resources.
//!
//! [`Instance`] is the entry point. It owns the instance home directory (catalog,
//! master key file, vault storage, locks), unseals the platform-managed key, and
//! exposes the `az dataprotection`-style operations on resource groups, backup
//! vaults, backup instances, recovery points and jobs. Every failure is an
//! [`Error`] with a stable [`ErrorCode`]; every result is a serialisable resource
//! shape from [`resources`].
//!
//! Layering: the control plane talks to the catalog (`coffer-catalog`), the
//! storage engine (`coffer-engine`), the crypto layer (`coffer-crypto`) and the
//! object store (`coffer-store`). The CLI talks only to this crate.

mod background;
mod cmk;
mod config;
mod error;
mod groups;
mod hsm;
mod identity;
mod instance;
mod jobs;
mod keys;
mod keyvault;
mod names;
mod operations;
mod procinfo;
pub mod rbac;
pub mod resources;
mod row_cache;
mod util;
mod vaults;

pub use background::AutorotationRound;
pub use cmk::{CmkOptions, IdentityOptions, VaultUpdateOptions};
pub use coffer_engine::{NoProgress, Progress};
pub use coffer_keyvault::hsm::HsmConfig;
pub use config::{Setting, SettingValue};
pub use error::{Error, ErrorCode, Result};
pub use instance::{Instance, InstanceInfo, MASTER_KEY_FILE_NAME};
pub use keyvault::{
    AccessPolicy, KeyAttributeUpdate, KeyCreateOptions, KeyEvent, KeyOperationResult, KeyRef,
    KeyVaultClient, KeyVaultOptions, PendingUnwrap, Permissions, UnwrapResult, VAULT_DNS_SUFFIX,
    parse_iso_duration_ms,
};
pub use names::{validate_group_name, validate_instance_name, validate_vault_name};
pub use operations::{RecoveryOption, RestoreSpec, RestoreTarget};
pub use vaults::{DatasourceSpec, DatasourceType, VaultCreateOptions};

/// The default resource group, created with the instance.
pub const DEFAULT_RESOURCE_GROUP: &str = "default";
/// The default location label of new resources.
pub const DEFAULT_LOCATION: &str = "local";

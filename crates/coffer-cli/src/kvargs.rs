//! Command-line arguments of part 2: `identity`, `role`, `keyvault` (names follow
//! `az identity`, `az role` and `az keyvault`; booleans take `true|false`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use coffer_control::DEFAULT_RESOURCE_GROUP;

#[derive(Debug, Subcommand)]
pub(crate) enum IdentityCmd {
    /// Create a user-assigned managed identity.
    Create(IdentitySel),
    /// Show a user-assigned managed identity.
    Show(IdentitySel),
    /// List user-assigned managed identities.
    List {
        /// Only this resource group.
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// Delete a user-assigned managed identity (and its role assignments).
    Delete {
        #[command(flatten)]
        identity: IdentitySel,
        /// Delete it even if a backup vault's customer-managed key is used through it.
        #[arg(long)]
        force: bool,
    },
}

/// Selects an identity.
#[derive(Debug, Args)]
pub(crate) struct IdentitySel {
    /// Identity name.
    #[arg(short = 'n', long)]
    pub(crate) name: String,
    /// Resource group.
    #[arg(short = 'g', long, default_value = DEFAULT_RESOURCE_GROUP)]
    pub(crate) resource_group: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RoleCmd {
    /// Role definitions.
    #[command(subcommand)]
    Definition(RoleDefCmd),
    /// Role assignments.
    #[command(subcommand)]
    Assignment(RoleAssignCmd),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RoleDefCmd {
    /// List the built-in role definitions.
    List,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RoleAssignCmd {
    /// Assign a role to a principal at a scope.
    Create {
        /// Role name or definition id.
        #[arg(long)]
        role: String,
        /// Principal (object) id.
        #[arg(long)]
        assignee: String,
        /// Scope: /subscriptions/S[/resourceGroups/G[/providers/Microsoft.KeyVault/vaults/V[/keys/K]]] (HSM: / or /keys/K).
        #[arg(long)]
        scope: String,
    },
    /// List role assignments.
    List {
        /// Only this principal.
        #[arg(long)]
        assignee: Option<String>,
        /// Only assignments at, above or below this scope.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Delete role assignments (by id, or by role/assignee/scope).
    Delete(AssignmentFilter),
}

/// Which role assignments to delete.
#[derive(Debug, Args)]
pub(crate) struct AssignmentFilter {
    /// Assignment id or name.
    #[arg(long)]
    pub(crate) ids: Option<String>,
    /// Role name or id.
    #[arg(long)]
    pub(crate) role: Option<String>,
    /// Principal id.
    #[arg(long)]
    pub(crate) assignee: Option<String>,
    /// Scope.
    #[arg(long)]
    pub(crate) scope: Option<String>,
    /// Delete even if a backup vault's identity loses access to its customer-managed key.
    #[arg(long)]
    pub(crate) force: bool,
}

/// Vault options shared by create and update.
#[derive(Debug, Args)]
pub(crate) struct KvOpts {
    /// Soft delete (default true; cannot be turned off once on).
    #[arg(long, value_name = "BOOL")]
    pub(crate) enable_soft_delete: Option<bool>,
    /// Soft-delete retention in days, 7..90 (default 90).
    #[arg(long, value_name = "DAYS")]
    pub(crate) retention_days: Option<u32>,
    /// Purge protection (irreversible once true).
    #[arg(long, value_name = "BOOL")]
    pub(crate) enable_purge_protection: Option<bool>,
    /// RBAC data-plane authorization (default true; false = access policies).
    #[arg(long, value_name = "BOOL")]
    pub(crate) enable_rbac_authorization: Option<bool>,
    /// Network ACL default action: Allow or Deny (stored and shown).
    #[arg(long)]
    pub(crate) default_action: Option<String>,
    /// Network ACL bypass: AzureServices or None (stored and shown).
    #[arg(long)]
    pub(crate) bypass: Option<String>,
    /// Network ACL IP rules (CIDR), stored and shown.
    #[arg(long, num_args = 1..)]
    pub(crate) ip_rules: Option<Vec<String>>,
    /// SKU: standard or premium.
    #[arg(long)]
    pub(crate) sku: Option<String>,
    /// Tags, KEY=VALUE (repeatable).
    #[arg(long, num_args = 1..)]
    pub(crate) tags: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyVaultCmd {
    /// Create a key vault (or, with --hsm-name, a managed HSM). A premium key vault
    /// (--sku premium) may name a PKCS#11 token for its RSA-HSM / EC-HSM keys.
    Create {
        /// Key vault name (3-24 letters, digits, '-').
        #[arg(short = 'n', long, required_unless_present = "hsm_name")]
        name: Option<String>,
        /// Managed HSM name: its keys live in the PKCS#11 token given by
        /// --pkcs11-module, --token-label and --pin-file.
        #[arg(long, conflicts_with = "name", requires_all = ["pkcs11_module", "token_label", "pin_file"])]
        hsm_name: Option<String>,
        /// PKCS#11 module of a managed HSM or premium key vault (e.g. /usr/lib/softhsm/libsofthsm2.so).
        #[arg(long, value_name = "PATH")]
        pkcs11_module: Option<PathBuf>,
        /// Label of the token.
        #[arg(long)]
        token_label: Option<String>,
        /// File holding the token's user PIN (never pass a PIN on the command line).
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
        /// Resource group.
        #[arg(short = 'g', long, default_value = DEFAULT_RESOURCE_GROUP)]
        resource_group: String,
        /// Location label.
        #[arg(short = 'l', long)]
        location: Option<String>,
        #[command(flatten)]
        opts: KvOpts,
    },
    /// Show a key vault.
    Show(KvName),
    /// List key vaults.
    List {
        /// Only this resource group.
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// Update a key vault's settings.
    Update {
        #[command(flatten)]
        kv: KvName,
        #[command(flatten)]
        opts: KvOpts,
        /// Apply even if a backup vault's identity loses access to its customer-managed key.
        #[arg(long)]
        force: bool,
    },
    /// Delete (soft delete) a key vault.
    Delete(KvName),
    /// List soft-deleted key vaults.
    ListDeleted,
    /// Recover a soft-deleted key vault.
    Recover(KvName),
    /// Purge a soft-deleted key vault (refused under purge protection).
    Purge(KvName),
    /// Grant key permissions to a principal (access-policy mode).
    SetPolicy {
        #[command(flatten)]
        kv: KvName,
        /// Principal (object) id.
        #[arg(long)]
        object_id: String,
        /// Key permissions: all get list wrapKey unwrapKey encrypt decrypt sign verify create update import delete recover purge rotate ...
        #[arg(long, num_args = 1..)]
        key_permissions: Vec<String>,
    },
    /// Remove a principal's access policy.
    DeletePolicy {
        #[command(flatten)]
        kv: KvName,
        /// Principal (object) id.
        #[arg(long)]
        object_id: String,
        /// Remove it even if a backup vault's customer-managed key is used through it.
        #[arg(long)]
        force: bool,
    },
    /// Keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// The key audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Managed HSM local RBAC.
    #[command(subcommand)]
    Role(HsmRoleCmd),
}

#[derive(Debug, Subcommand)]
pub(crate) enum HsmRoleCmd {
    /// Managed HSM local role assignments.
    #[command(subcommand)]
    Assignment(HsmAssignCmd),
}

/// Selects a managed HSM.
#[derive(Debug, Args)]
pub(crate) struct HsmName {
    /// Managed HSM name.
    #[arg(long)]
    pub(crate) hsm_name: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum HsmAssignCmd {
    /// Assign a local role at / or /keys/NAME.
    Create {
        #[command(flatten)]
        hsm: HsmName,
        /// Local role name or id (e.g. "Managed HSM Crypto Service Encryption User").
        #[arg(long)]
        role: String,
        /// Principal id.
        #[arg(long)]
        assignee: String,
        /// / or /keys/NAME.
        #[arg(long, default_value = "/")]
        scope: String,
    },
    /// List local role assignments.
    List {
        #[command(flatten)]
        hsm: HsmName,
        /// Only this principal.
        #[arg(long)]
        assignee: Option<String>,
        /// Only at, above or below this scope.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Delete local role assignments.
    Delete {
        #[command(flatten)]
        hsm: HsmName,
        #[command(flatten)]
        filter: AssignmentFilter,
    },
}

/// Selects a key vault.
#[derive(Debug, Args)]
pub(crate) struct KvName {
    /// Key vault (or managed HSM) name.
    #[arg(short = 'n', long, visible_alias = "hsm-name")]
    pub(crate) name: String,
    /// Resource group (informational: vault names are unique in the instance).
    #[arg(short = 'g', long)]
    pub(crate) resource_group: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCmd {
    /// List a vault's key audit records (oldest first).
    List(KvName),
}

/// Selects a key.
#[derive(Debug, Args)]
pub(crate) struct KeySel {
    /// Key vault name (or --hsm-name: managed HSM name).
    #[arg(long, visible_alias = "hsm-name")]
    pub(crate) vault_name: String,
    /// Key name.
    #[arg(short = 'n', long)]
    pub(crate) name: String,
}

/// Selects a key version.
#[derive(Debug, Args)]
pub(crate) struct KeyVerSel {
    #[command(flatten)]
    pub(crate) key: KeySel,
    /// Key version (default: the current one).
    #[arg(long = "version", id = "key_version", value_name = "VERSION")]
    pub(crate) version: Option<String>,
}

/// Key attributes of create/import.
#[derive(Debug, Args)]
pub(crate) struct KeyAttrArgs {
    /// Permitted operations (key_ops): encrypt decrypt sign verify wrapKey unwrapKey.
    #[arg(long, num_args = 1..)]
    pub(crate) ops: Vec<String>,
    /// Enabled (true|false).
    #[arg(long, value_name = "BOOL")]
    pub(crate) enabled: Option<bool>,
    /// Not before (unix seconds or RFC 3339).
    #[arg(long)]
    pub(crate) not_before: Option<String>,
    /// Expires (unix seconds or RFC 3339).
    #[arg(long)]
    pub(crate) expires: Option<String>,
    /// Tags, KEY=VALUE.
    #[arg(long, num_args = 1..)]
    pub(crate) tags: Vec<String>,
}

/// A crypto operation's inputs.
#[derive(Debug, Args)]
pub(crate) struct CryptoArgs {
    #[command(flatten)]
    pub(crate) key: KeyVerSel,
    /// Algorithm (RSA-OAEP-256, RSA-OAEP; RS256, PS256, ES256, ...).
    #[arg(short = 'a', long, default_value = "RSA-OAEP-256")]
    pub(crate) algorithm: String,
    /// The input value, base64url (for sign/verify: the digest).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) value: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCmd {
    /// Create a key (a new version if it exists).
    Create {
        #[command(flatten)]
        key: KeySel,
        /// Key type: RSA, EC (RSA-HSM, EC-HSM need a PKCS#11 token).
        #[arg(long, default_value = "RSA")]
        kty: String,
        /// RSA size: 2048, 3072, 4096.
        #[arg(long)]
        size: Option<u32>,
        /// EC curve: P-256, P-384, P-521.
        #[arg(long)]
        curve: Option<String>,
        #[command(flatten)]
        attrs: KeyAttrArgs,
    },
    /// Import an RSA or EC private key from a PEM file.
    Import {
        #[command(flatten)]
        key: KeySel,
        /// Unencrypted PEM private key file.
        #[arg(long)]
        pem_file: PathBuf,
        /// Key type (RSA or EC; the PEM decides).
        #[arg(long, default_value = "RSA")]
        kty: String,
        #[command(flatten)]
        attrs: KeyAttrArgs,
    },
    /// Show a key (KeyBundle; public parts only).
    #[command(disable_version_flag = true)]
    Show(KeyVerSel),
    /// List keys.
    List {
        /// Key vault name (or --hsm-name: managed HSM name).
        #[arg(long, visible_alias = "hsm-name")]
        vault_name: String,
    },
    /// List a key's versions.
    ListVersions(KeySel),
    /// Update a key version's attributes.
    #[command(disable_version_flag = true)]
    SetAttributes {
        #[command(flatten)]
        key: KeyVerSel,
        #[command(flatten)]
        attrs: KeyAttrArgs,
    },
    /// Delete (soft delete) a key.
    Delete(KeySel),
    /// List soft-deleted keys.
    ListDeleted {
        /// Key vault name (or --hsm-name: managed HSM name).
        #[arg(long, visible_alias = "hsm-name")]
        vault_name: String,
    },
    /// Recover a soft-deleted key.
    Recover(KeySel),
    /// Purge a soft-deleted key (refused under purge protection).
    Purge(KeySel),
    /// Rotate a key now (new version).
    Rotate(KeySel),
    /// Write the public key as PEM.
    #[command(disable_version_flag = true)]
    Download {
        #[command(flatten)]
        key: KeyVerSel,
        /// Output file.
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Wrap a key (wrapKey).
    #[command(disable_version_flag = true)]
    Wrap(CryptoArgs),
    /// Unwrap a key (unwrapKey).
    #[command(disable_version_flag = true)]
    Unwrap(CryptoArgs),
    /// Encrypt.
    #[command(disable_version_flag = true)]
    Encrypt(CryptoArgs),
    /// Decrypt.
    #[command(disable_version_flag = true)]
    Decrypt(CryptoArgs),
    /// Sign a digest.
    #[command(disable_version_flag = true)]
    Sign(CryptoArgs),
    /// Verify a signature over a digest.
    #[command(disable_version_flag = true)]
    Verify {
        #[command(flatten)]
        op: CryptoArgs,
        /// Signature, base64url.
        #[arg(long, allow_hyphen_values = true)]
        signature: String,
    },
    /// Rotation policy.
    #[command(subcommand)]
    RotationPolicy(RotationCmd),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RotationCmd {
    /// Show the rotation policy.
    Show(KeySel),
    /// Set the rotation policy from a KeyRotationPolicy JSON (file path or inline JSON).
    Update {
        #[command(flatten)]
        key: KeySel,
        /// Policy JSON, or a path to a file holding it.
        #[arg(long)]
        value: String,
    },
}

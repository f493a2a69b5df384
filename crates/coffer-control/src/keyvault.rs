//! Key vaults (`az keyvault`): vault lifecycle with soft delete and purge
//! protection, access policies or RBAC, keys with immutable versions, the Key
//! Vault data plane (wrap/unwrap, encrypt/decrypt, sign/verify) authorised per
//! calling principal and audited, rotation policies, and the key event feed.
//!
//! Key material lives in `coffer-keyvault`; here it is only sealed bytes in the
//! catalog, opened for one operation at a time. `vaultUri` is
//! `https://{name}.vault.coffer.local` (managed HSM: `https://{name}.managedhsm.coffer.local`).
//! Time is [`util::clock_ms`], which tests move forward with
//! `COFFER_TEST_CLOCK_OFFSET_SECS`.

use std::collections::BTreeMap;

use coffer_catalog::{KeyAuditRow, KeyEventRow, KeyRow, KeyVaultRow, KeyVersionRow};
use coffer_crypto::SecretBytes;
use coffer_keyvault::{EncryptionAlgorithm, KvError, PrivateKey, SignatureAlgorithm, b64url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Error, ErrorCode, Instance, Result, hsm::Material, util};

/// DNS suffix of vault URIs.
pub const VAULT_DNS_SUFFIX: &str = "vault.coffer.local";
const DAY_MS: i64 = 86_400_000;
const KEY_PERMISSIONS: &[&str] = &[
    "encrypt",
    "decrypt",
    "wrapKey",
    "unwrapKey",
    "sign",
    "verify",
    "get",
    "list",
    "create",
    "update",
    "import",
    "delete",
    "backup",
    "restore",
    "recover",
    "purge",
    "release",
    "rotate",
    "getrotationpolicy",
    "setrotationpolicy",
];

/// An access policy entry (access-policy permission model).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    /// Tenant.
    pub tenant_id: String,
    /// Principal (object) id.
    pub object_id: String,
    /// Permissions.
    pub permissions: Permissions,
}

/// Permissions of an access policy.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Permissions {
    /// Key permissions.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Secret permissions (stored only).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Certificate permissions (stored only).
    #[serde(default)]
    pub certificates: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetworkAcls {
    bypass: String,
    default_action: String,
    ip_rules: Vec<Value>,
    virtual_network_rules: Vec<Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VaultProps {
    enable_soft_delete: bool,
    soft_delete_retention_in_days: u32,
    enable_purge_protection: bool,
    enable_rbac_authorization: bool,
    access_policies: Vec<AccessPolicy>,
    network_acls: NetworkAcls,
    sku: String,
    /// Managed HSM: its PKCS#11 token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hsm: Option<crate::hsm::HsmProps>,
}

/// Options of `keyvault create` / `update` (`None`: default or unchanged).
#[derive(Clone, Debug, Default)]
pub struct KeyVaultOptions {
    /// `--enable-soft-delete`.
    pub enable_soft_delete: Option<bool>,
    /// `--retention-days` (7..90).
    pub retention_days: Option<u32>,
    /// `--enable-purge-protection`.
    pub enable_purge_protection: Option<bool>,
    /// `--enable-rbac-authorization`.
    pub enable_rbac_authorization: Option<bool>,
    /// `--default-action Allow|Deny`.
    pub default_action: Option<String>,
    /// `--bypass AzureServices|None`.
    pub bypass: Option<String>,
    /// `--ip-rules`.
    pub ip_rules: Option<Vec<String>>,
    /// `--sku standard|premium`.
    pub sku: Option<String>,
    /// `--location`.
    pub location: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
}

/// Options of `key create` / `import`.
#[derive(Clone, Debug, Default)]
pub struct KeyCreateOptions {
    /// `RSA`, `EC`, `RSA-HSM`, `EC-HSM`.
    pub kty: String,
    /// RSA size.
    pub size: Option<u32>,
    /// EC curve.
    pub curve: Option<String>,
    /// key_ops (empty: all the key type supports).
    pub ops: Vec<String>,
    /// enabled (default true).
    pub enabled: Option<bool>,
    /// nbf (unix seconds).
    pub not_before: Option<i64>,
    /// exp (unix seconds).
    pub expires: Option<i64>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl KeyCreateOptions {
    fn attrs(&self, exp: Option<i64>) -> KeyAttrs {
        KeyAttrs {
            enabled: self.enabled.unwrap_or(true),
            nbf: self.not_before,
            exp,
            key_ops: self.ops.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// Attribute changes of `key set-attributes`.
#[derive(Clone, Debug, Default)]
pub struct KeyAttributeUpdate {
    /// enabled.
    pub enabled: Option<bool>,
    /// nbf (unix seconds; 0 clears).
    pub not_before: Option<i64>,
    /// exp (unix seconds; 0 clears).
    pub expires: Option<i64>,
    /// key_ops.
    pub ops: Option<Vec<String>>,
    /// Tags (replace).
    pub tags: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct KeyAttrs {
    pub(crate) enabled: bool,
    #[serde(default)]
    pub(crate) nbf: Option<i64>,
    #[serde(default)]
    pub(crate) exp: Option<i64>,
    pub(crate) key_ops: Vec<String>,
    #[serde(default)]
    pub(crate) tags: BTreeMap<String, String>,
}

/// Which key version a data-plane call uses, and who calls.
#[derive(Clone, Copy, Debug)]
pub struct KeyRef<'a> {
    /// Calling principal (object id).
    pub principal: &'a str,
    /// Key vault name.
    pub vault: &'a str,
    /// Key name.
    pub name: &'a str,
    /// Version (`None`: the current one).
    pub version: Option<&'a str>,
}

impl<'a> KeyRef<'a> {
    /// A key reference.
    pub fn new(
        principal: &'a str,
        vault: &'a str,
        name: &'a str,
        version: Option<&'a str>,
    ) -> Self {
        Self {
            principal,
            vault,
            name,
            version,
        }
    }
}

/// Result of a wrap, encrypt or sign: the versioned key id used and the output bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOperationResult {
    /// Versioned key id (`{vaultUri}/keys/{name}/{version}`).
    pub kid: String,
    /// Output (wrapped key, ciphertext or signature).
    pub value: Vec<u8>,
    /// The algorithm actually used: for HSM keys whose token lacks RSA-OAEP-256 a
    /// wrap asked for `RSA-OAEP-256` is made with `RSA-OAEP`; record this value.
    pub alg: String,
}

/// Result of an unwrap or decrypt: the versioned key id and the plaintext (zeroizing).
#[derive(Debug)]
pub struct UnwrapResult {
    /// Versioned key id.
    pub kid: String,
    /// The unwrapped key / plaintext.
    pub value: SecretBytes,
}

/// A published key event (`KeyNewVersionCreated`, `KeyNearExpiry`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyEvent {
    /// Sequence number: consumers remember the last one they processed.
    pub seq: i64,
    /// Unix milliseconds (key vault clock).
    pub time_ms: i64,
    /// `KeyNewVersionCreated` or `KeyNearExpiry`.
    pub event_type: String,
    /// Key vault name.
    pub vault_name: String,
    /// Key name.
    pub key_name: String,
    /// Versioned key id of the new (or expiring) version.
    pub key_id: String,
    /// Version.
    pub version: String,
}

/// The Key Vault data-plane client of the embedded instance: the Rust API other
/// parts of Coffer (customer-managed keys) use. Every call is authorised for the
/// given principal (access policy, RBAC dataAction, or HSM local RBAC) and audited.
#[derive(Debug)]
pub struct KeyVaultClient<'a> {
    inst: &'a Instance,
}

impl KeyVaultClient<'_> {
    /// `GET {kid}`: the public KeyBundle (needs keys/get).
    pub fn get_key(&self, principal: &str, key_id: &str) -> Result<Value> {
        let (vault, name, version) = self.inst.parse_kid(key_id)?;
        self.inst
            .show_key_as(principal, &vault, &name, version.as_deref())
    }

    /// `wrapKey` with `alg` (`RSA-OAEP-256` or `RSA-OAEP`); versionless ids use the current version.
    pub fn wrap_key(
        &self,
        principal: &str,
        key_id: &str,
        alg: &str,
        dek: &[u8],
    ) -> Result<KeyOperationResult> {
        let (vault, name, version) = self.inst.parse_kid(key_id)?;
        let k = KeyRef::new(principal, &vault, &name, version.as_deref());
        self.inst.key_encrypt(&k, "wrapKey", alg, dek)
    }

    /// `unwrapKey`: the key version must be the one that wrapped (pass the versioned kid).
    pub fn unwrap_key(
        &self,
        principal: &str,
        key_id: &str,
        alg: &str,
        wrapped: &[u8],
    ) -> Result<UnwrapResult> {
        let (vault, name, version) = self.inst.parse_kid(key_id)?;
        let k = KeyRef::new(principal, &vault, &name, version.as_deref());
        self.inst.key_decrypt(&k, "unwrapKey", alg, wrapped)
    }
}

pub(crate) fn forbidden(inner: &str, msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::Forbidden, msg).with_inner(inner)
}

pub(crate) fn bad(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::BadParameter, msg)
}

pub(crate) fn kv_err(e: KvError) -> Error {
    match e {
        KvError::BadParameter(m) => bad(m),
        KvError::Crypto(m) => bad(m),
        KvError::Hsm(m) => Error::new(
            ErrorCode::EncryptionKeyUnavailable,
            format!("the PKCS#11 token failed: {m}"),
        ),
        _ => Error::internal("key store failure"),
    }
}

/// The canonical spelling of `value` among `options` (case-insensitive).
fn choice(flag: &str, value: &str, options: &[&str]) -> Result<String> {
    options
        .iter()
        .find(|o| o.eq_ignore_ascii_case(value))
        .map(|o| (*o).to_owned())
        .ok_or_else(|| {
            bad(format!(
                "{flag} must be one of {}, not {value:?}",
                options.join(", ")
            ))
        })
}

fn key_not_found(name: &str) -> Error {
    Error::new(
        ErrorCode::KeyNotFound,
        format!(
            "A key with (name/id) {name} was not found in this key vault. If you recently deleted \
             this key you may be able to recover it using the correct recovery command."
        ),
    )
}

fn data_action(permission: &str) -> &'static str {
    match permission {
        "get" | "list" => "Microsoft.KeyVault/vaults/keys/read",
        "wrapKey" => "Microsoft.KeyVault/vaults/keys/wrap/action",
        "unwrapKey" => "Microsoft.KeyVault/vaults/keys/unwrap/action",
        "encrypt" => "Microsoft.KeyVault/vaults/keys/encrypt/action",
        "decrypt" => "Microsoft.KeyVault/vaults/keys/decrypt/action",
        "sign" => "Microsoft.KeyVault/vaults/keys/sign/action",
        "verify" => "Microsoft.KeyVault/vaults/keys/verify/action",
        "create" => "Microsoft.KeyVault/vaults/keys/create/action",
        "update" => "Microsoft.KeyVault/vaults/keys/update/action",
        "import" => "Microsoft.KeyVault/vaults/keys/import/action",
        "delete" => "Microsoft.KeyVault/vaults/keys/delete",
        "recover" => "Microsoft.KeyVault/vaults/keys/recover/action",
        "purge" => "Microsoft.KeyVault/vaults/keys/purge/action",
        "backup" => "Microsoft.KeyVault/vaults/keys/backup/action",
        "restore" => "Microsoft.KeyVault/vaults/keys/restore/action",
        "release" => "Microsoft.KeyVault/vaults/keys/release/action",
        "rotate" => "Microsoft.KeyVault/vaults/keys/rotate/action",
        "getrotationpolicy" => "Microsoft.KeyVault/vaults/keyrotationpolicies/read",
        "setrotationpolicy" => "Microsoft.KeyVault/vaults/keyrotationpolicies/write",
        _ => "Microsoft.KeyVault/vaults/keys/unknown",
    }
}

/// Parses an ISO-8601 duration (`P90D`, `P18M`, `P1Y`, `PT12H`) into milliseconds
/// (a month counts 30 days, a year 365).
pub fn parse_iso_duration_ms(s: &str) -> Result<i64> {
    let err = || {
        bad(format!(
            "invalid ISO-8601 duration {s:?} (e.g. P90D, P18M, P1Y)"
        ))
    };
    let rest = s.trim().strip_prefix(['P', 'p']).ok_or_else(err)?;
    let (date, time) = match rest.split_once(['T', 't']) {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut total: i64 = 0;
    let mut parse = |part: &str, units: &[(char, i64)]| -> Result<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
            } else {
                let mult = units
                    .iter()
                    .find(|(u, _)| u.eq_ignore_ascii_case(&c))
                    .map(|(_, m)| *m)
                    .ok_or_else(err)?;
                let n: i64 = num.parse().map_err(|_| err())?;
                total = total.saturating_add(n.saturating_mul(mult));
                num.clear();
            }
        }
        if num.is_empty() { Ok(()) } else { Err(err()) }
    };
    parse(
        date,
        &[
            ('Y', 365 * DAY_MS),
            ('M', 30 * DAY_MS),
            ('W', 7 * DAY_MS),
            ('D', DAY_MS),
        ],
    )?;
    parse(time, &[('H', 3_600_000), ('M', 60_000), ('S', 1000)])?;
    if total == 0 && rest.is_empty() {
        return Err(err());
    }
    Ok(total)
}

impl Instance {
    /// The Key Vault data-plane client.
    pub fn key_vault_client(&self) -> KeyVaultClient<'_> {
        KeyVaultClient { inst: self }
    }

    /// Key events published after sequence number `after` (0: all), oldest first.
    pub fn key_events_since(&self, after: i64) -> Result<Vec<KeyEvent>> {
        Ok(self
            .catalog
            .key_events_since(after)?
            .into_iter()
            .map(|e| KeyEvent {
                seq: e.seq,
                time_ms: e.time_ms,
                event_type: e.event_type,
                vault_name: e.vault_name,
                key_name: e.key_name,
                key_id: e.key_id,
                version: e.version,
            })
            .collect())
    }

    // ------------------------------------------------------------------ vaults

    pub(crate) fn vault_arm_id(&self, v: &KeyVaultRow) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/{}/{}",
            self.subscription_id(),
            v.resource_group,
            if v.kind == "managedHSM" {
                "managedHSMs"
            } else {
                "vaults"
            },
            v.name
        )
    }

    fn vault_uri(v: &KeyVaultRow) -> String {
        if v.kind == "managedHSM" {
            format!(
                "https://{}.managedhsm.coffer.local",
                v.name.to_ascii_lowercase()
            )
        } else {
            format!("https://{}.{VAULT_DNS_SUFFIX}", v.name.to_ascii_lowercase())
        }
    }

    pub(crate) fn props(v: &KeyVaultRow) -> Result<VaultProps> {
        serde_json::from_str(&v.properties_json).map_err(|_| {
            Error::new(
                ErrorCode::CatalogError,
                "malformed key vault properties in the catalog",
            )
        })
    }

    pub(crate) fn vault_json(&self, v: &KeyVaultRow) -> Result<Value> {
        let p = Self::props(v)?;
        let hsm = Self::is_hsm(v);
        Ok(json!({
            "id": self.vault_arm_id(v),
            "name": v.name,
            "type": if hsm { "Microsoft.KeyVault/managedHSMs" } else { "Microsoft.KeyVault/vaults" },
            "location": v.location,
            "resourceGroup": v.resource_group,
            "tags": serde_json::from_str::<Value>(&v.tags_json).unwrap_or(json!({})),
            "properties": {
                "tenantId": self.row.tenant_id,
                "sku": {"family": "A", "name": p.sku},
                "vaultUri": Self::vault_uri(v),
                "hsmUri": if hsm { json!(Self::vault_uri(v)) } else { Value::Null },
                "pkcs11": p.hsm,
                "enableSoftDelete": p.enable_soft_delete,
                "softDeleteRetentionInDays": p.soft_delete_retention_in_days,
                "enablePurgeProtection": if p.enable_purge_protection { json!(true) } else { Value::Null },
                "enableRbacAuthorization": p.enable_rbac_authorization,
                "accessPolicies": p.access_policies,
                "networkAcls": p.network_acls,
                "publicNetworkAccess": "Enabled",
                "provisioningState": "Succeeded",
            },
            "systemData": {"createdAt": v.created, "createdBy": v.created_by},
        }))
    }

    fn deleted_vault_json(&self, v: &KeyVaultRow) -> Result<Value> {
        let p = Self::props(v)?;
        Ok(json!({
            "id": format!("/subscriptions/{}/providers/Microsoft.KeyVault/locations/{}/deletedVaults/{}", self.subscription_id(), v.location, v.name),
            "name": v.name,
            "type": "Microsoft.KeyVault/deletedVaults",
            "properties": {
                "vaultId": self.vault_arm_id(v),
                "location": v.location,
                "deletionDate": v.deleted_ms.map(util::rfc3339_ms),
                "scheduledPurgeDate": v.scheduled_purge_ms.map(util::rfc3339_ms),
                "purgeProtectionEnabled": p.enable_purge_protection,
                "tags": serde_json::from_str::<Value>(&v.tags_json).unwrap_or(json!({})),
            },
        }))
    }

    /// A live (not soft-deleted) vault by name.
    pub(crate) fn live_vault(&self, name: &str) -> Result<KeyVaultRow> {
        match self.catalog.key_vault(name)? {
            Some(v) if v.deleted_ms.is_none() => Ok(v),
            _ => Err(Error::new(
                ErrorCode::KeyVaultNotFound,
                format!("key vault '{name}' does not exist (or is soft-deleted)"),
            )),
        }
    }

    pub(crate) fn check_vault_name(name: &str) -> Result<()> {
        let ok = (3..=24).contains(&name.len())
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !name.contains("--");
        crate::names::name_rule(ok, || {
            format!(
                "invalid key vault name '{name}': 3-24 ASCII letters, digits and '-', starting with a letter, \
                 ending with a letter or digit, no '--'"
            )
        })
    }

    pub(crate) fn apply_options(
        p: &mut VaultProps,
        o: &KeyVaultOptions,
        creating: bool,
    ) -> Result<()> {
        if let Some(sd) = o.enable_soft_delete {
            if !sd && p.enable_soft_delete && !creating {
                return Err(bad(
                    "soft delete cannot be turned off once it is enabled (enableSoftDelete is irreversible)",
                ));
            }
            p.enable_soft_delete = sd;
        }
        if let Some(d) = o.retention_days {
            if !(7..=90).contains(&d) {
                return Err(bad(format!(
                    "--retention-days must be between 7 and 90, not {d}"
                )));
            }
            p.soft_delete_retention_in_days = d;
        }
        if let Some(pp) = o.enable_purge_protection {
            if !pp && p.enable_purge_protection {
                return Err(bad(
                    "purge protection cannot be turned off once it is enabled (it is irreversible)",
                ));
            }
            if pp && !p.enable_soft_delete {
                return Err(bad("purge protection needs soft delete"));
            }
            p.enable_purge_protection = pp;
        }
        if let Some(r) = o.enable_rbac_authorization {
            p.enable_rbac_authorization = r;
        }
        if let Some(a) = &o.default_action {
            p.network_acls.default_action = choice("--default-action", a, &["Allow", "Deny"])?;
        }
        if let Some(b) = &o.bypass {
            p.network_acls.bypass = choice("--bypass", b, &["AzureServices", "None"])?;
        }
        if let Some(rules) = &o.ip_rules {
            let mut out = Vec::new();
            for r in rules {
                let (addr, len) = r.split_once('/').unwrap_or((r.as_str(), "32"));
                let ok = addr.parse::<std::net::Ipv4Addr>().is_ok()
                    && len.parse::<u8>().is_ok_and(|l| l <= 32);
                if !ok {
                    return Err(bad(format!(
                        "invalid IP rule {r:?}: use an IPv4 address or CIDR, e.g. 10.0.0.0/24"
                    )));
                }
                out.push(json!({ "value": r }));
            }
            p.network_acls.ip_rules = out;
        }
        if let Some(s) = &o.sku {
            p.sku = choice("--sku", s, &["standard", "premium"])?;
        }
        Ok(())
    }

    /// `coffer keyvault create`. The creator gets data-plane access: an access policy
    /// with every key permission (access-policy mode, as `az` does), or a Key Vault
    /// Administrator assignment at the vault scope (RBAC mode).
    pub fn create_key_vault(&self, group: &str, name: &str, o: KeyVaultOptions) -> Result<Value> {
        self.create_vault_of_kind(group, name, o, None)
    }

    /// Creates a key vault (`hsm = None`) or a managed HSM on a token.
    pub(crate) fn create_vault_of_kind(
        &self,
        group: &str,
        name: &str,
        o: KeyVaultOptions,
        hsm: Option<crate::hsm::HsmProps>,
    ) -> Result<Value> {
        Self::check_vault_name(name)?;
        let g = self.group_row(group)?;
        let mut p = VaultProps {
            enable_soft_delete: true,
            soft_delete_retention_in_days: 90,
            enable_purge_protection: false,
            enable_rbac_authorization: true,
            access_policies: Vec::new(),
            network_acls: NetworkAcls {
                bypass: "AzureServices".into(),
                default_action: "Allow".into(),
                ip_rules: Vec::new(),
                virtual_network_rules: Vec::new(),
            },
            sku: "standard".into(),
            hsm: None,
        };
        Self::apply_options(&mut p, &o, true)?;
        let is_hsm = hsm.is_some();
        if is_hsm {
            // Managed HSMs use local RBAC only.
            p.enable_rbac_authorization = true;
            p.hsm = hsm;
        }
        let mut row = KeyVaultRow {
            guid: util::new_guid(),
            name: name.to_owned(),
            resource_group: g.name.clone(),
            kind: if is_hsm { "managedHSM" } else { "vault" }.into(),
            location: o
                .location
                .clone()
                .unwrap_or_else(|| crate::DEFAULT_LOCATION.into()),
            created: util::now_rfc3339(),
            created_by: self.principal().to_owned(),
            properties_json: String::new(),
            tags_json: serde_json::to_string(&o.tags.clone().unwrap_or_default())
                .unwrap_or_else(|_| "{}".into()),
            deleted_ms: None,
            scheduled_purge_ms: None,
        };
        let id = self.vault_arm_id(&row);
        let write = if is_hsm {
            "Microsoft.KeyVault/managedHSMs/write"
        } else {
            "Microsoft.KeyVault/vaults/write"
        };
        let r = (|| {
            self.authorize_action(&id, write)?;
            if !p.enable_rbac_authorization {
                p.access_policies.push(AccessPolicy {
                    tenant_id: self.row.tenant_id.clone(),
                    object_id: self.principal().to_owned(),
                    permissions: Permissions {
                        keys: KEY_PERMISSIONS.iter().map(|s| (*s).to_owned()).collect(),
                        ..Permissions::default()
                    },
                });
            }
            row.properties_json =
                serde_json::to_string(&p).map_err(|e| Error::internal(e.to_string()))?;
            if let Some(existing) = self.catalog.key_vault(name)?
                && existing.deleted_ms.is_some()
            {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!("Vault '{name}' is currently in a deleted but recoverable state, and its name cannot be reused; recover or purge it"),
                )
                .with_inner("ObjectIsDeletedButRecoverable"));
            }
            self.catalog.create_key_vault(&row)?;
            if p.enable_rbac_authorization && !is_hsm {
                self.create_assignment("Key Vault Administrator", self.principal(), &id, None)?;
            }
            self.vault_json(&row)
        })();
        self.audit(write, &id, &r);
        r
    }

    /// `coffer keyvault show`.
    pub fn show_key_vault(&self, name: &str) -> Result<Value> {
        let v = self.live_vault(name)?;
        self.authorize_action(&self.vault_arm_id(&v), "Microsoft.KeyVault/vaults/read")?;
        self.vault_json(&v)
    }

    /// `coffer keyvault list`.
    pub fn list_key_vaults(&self, group: Option<&str>) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for v in self.catalog.key_vaults()? {
            if v.deleted_ms.is_some()
                || group.is_some_and(|g| !g.eq_ignore_ascii_case(&v.resource_group))
            {
                continue;
            }
            if self.rbac_allows(
                self.principal(),
                &self.vault_arm_id(&v),
                "Microsoft.KeyVault/vaults/read",
                false,
                None,
            )? {
                out.push(self.vault_json(&v)?);
            }
        }
        Ok(out)
    }

    /// `coffer keyvault update`.
    pub fn update_key_vault(&self, name: &str, o: KeyVaultOptions) -> Result<Value> {
        let mut v = self.live_vault(name)?;
        let id = self.vault_arm_id(&v);
        let r = (|| {
            self.authorize_action(&id, "Microsoft.KeyVault/vaults/write")?;
            let mut p = Self::props(&v)?;
            Self::apply_options(&mut p, &o, false)?;
            v.properties_json =
                serde_json::to_string(&p).map_err(|e| Error::internal(e.to_string()))?;
            if let Some(t) = &o.tags {
                v.tags_json = serde_json::to_string(t).unwrap_or_else(|_| "{}".into());
            }
            self.catalog.update_key_vault(&v)?;
            self.vault_json(&v)
        })();
        self.audit("Microsoft.KeyVault/vaults/write", &id, &r);
        r
    }

    /// `coffer keyvault delete`: soft delete (recoverable for the retention period)
    /// when soft delete is on, else purge.
    pub fn delete_key_vault(&self, name: &str) -> Result<Value> {
        let mut v = self.live_vault(name)?;
        let id = self.vault_arm_id(&v);
        let r = (|| {
            self.authorize_action(&id, "Microsoft.KeyVault/vaults/delete")?;
            let p = Self::props(&v)?;
            if p.enable_soft_delete {
                let now = util::clock_ms();
                v.deleted_ms = Some(now);
                v.scheduled_purge_ms =
                    Some(now + i64::from(p.soft_delete_retention_in_days) * DAY_MS);
                self.catalog.update_key_vault(&v)?;
                self.deleted_vault_json(&v)
            } else {
                self.purge_vault_material(&v)?;
                Ok(json!({ "id": id, "status": "Purged" }))
            }
        })();
        self.audit("Microsoft.KeyVault/vaults/delete", &id, &r);
        r
    }

    fn deleted_vault(&self, name: &str) -> Result<KeyVaultRow> {
        match self.catalog.key_vault(name)? {
            Some(v) if v.deleted_ms.is_some() => Ok(v),
            _ => Err(Error::new(
                ErrorCode::KeyVaultNotFound,
                format!("no soft-deleted key vault named '{name}'"),
            )),
        }
    }

    /// `coffer keyvault list-deleted`.
    pub fn list_deleted_key_vaults(&self) -> Result<Vec<Value>> {
        self.authorize_action(
            &self.subscription_scope(),
            "Microsoft.KeyVault/deletedVaults/read",
        )?;
        self.catalog
            .key_vaults()?
            .iter()
            .filter(|v| v.deleted_ms.is_some())
            .map(|v| self.deleted_vault_json(v))
            .collect()
    }

    /// `coffer keyvault recover`.
    pub fn recover_key_vault(&self, name: &str) -> Result<Value> {
        let mut v = self.deleted_vault(name)?;
        let id = self.vault_arm_id(&v);
        let r = (|| {
            self.authorize_action(&id, "Microsoft.KeyVault/vaults/write")?;
            v.deleted_ms = None;
            v.scheduled_purge_ms = None;
            self.catalog.update_key_vault(&v)?;
            self.vault_json(&v)
        })();
        self.audit("Microsoft.KeyVault/vaults/recover", &id, &r);
        r
    }

    /// `coffer keyvault purge`: refused while purge protection is on.
    pub fn purge_key_vault(&self, name: &str) -> Result<Value> {
        let v = self.deleted_vault(name)?;
        let id = self.vault_arm_id(&v);
        let r = (|| {
            self.authorize_action(
                &id,
                "Microsoft.KeyVault/locations/deletedVaults/purge/action",
            )?;
            if Self::props(&v)?.enable_purge_protection {
                return Err(forbidden(
                    "PurgeProtectionEnabled",
                    format!(
                        "Operation \"purge\" is not allowed because purge protection is enabled for vault '{name}'. Key Vault service will automatically purge it after the retention period has passed."
                    ),
                ));
            }
            self.purge_vault_material(&v)?;
            Ok(json!({ "id": id, "status": "Purged" }))
        })();
        self.audit(
            "Microsoft.KeyVault/locations/deletedVaults/purge/action",
            &id,
            &r,
        );
        r
    }

    /// `coffer keyvault set-policy`: adds permissions to the principal's access policy.
    pub fn set_key_vault_policy(
        &self,
        name: &str,
        object_id: &str,
        key_permissions: &[String],
    ) -> Result<Value> {
        self.edit_policy(name, object_id, |policies, tenant| {
            let mut perms = Vec::new();
            for k in key_permissions {
                let canon = if k.eq_ignore_ascii_case("all") {
                    "all"
                } else {
                    KEY_PERMISSIONS
                        .iter()
                        .find(|p| p.eq_ignore_ascii_case(k))
                        .copied()
                        .ok_or_else(|| {
                            bad(format!(
                                "unknown key permission {k:?}; valid: all, {}",
                                KEY_PERMISSIONS.join(", ")
                            ))
                        })?
                };
                perms.push(canon.to_owned());
            }
            match policies
                .iter_mut()
                .find(|p| p.object_id.eq_ignore_ascii_case(object_id))
            {
                Some(p) => {
                    for k in perms {
                        if !p.permissions.keys.contains(&k) {
                            p.permissions.keys.push(k);
                        }
                    }
                }
                None => policies.push(AccessPolicy {
                    tenant_id: tenant.to_owned(),
                    object_id: object_id.to_owned(),
                    permissions: Permissions {
                        keys: perms,
                        ..Permissions::default()
                    },
                }),
            }
            Ok(())
        })
    }

    /// `coffer keyvault delete-policy`: removes the principal's access policy.
    pub fn delete_key_vault_policy(&self, name: &str, object_id: &str) -> Result<Value> {
        self.edit_policy(name, object_id, |policies, _| {
            policies.retain(|p| !p.object_id.eq_ignore_ascii_case(object_id));
            Ok(())
        })
    }

    fn edit_policy(
        &self,
        name: &str,
        object_id: &str,
        f: impl FnOnce(&mut Vec<AccessPolicy>, &str) -> Result<()>,
    ) -> Result<Value> {
        let mut v = self.live_vault(name)?;
        let id = self.vault_arm_id(&v);
        let r = (|| {
            self.authorize_action(&id, "Microsoft.KeyVault/vaults/accessPolicies/write")?;
            if self.catalog.principal(object_id.trim())?.is_none() {
                return Err(Error::new(
                    ErrorCode::IdentityNotFound,
                    format!("no principal with id '{object_id}' exists in this instance"),
                ));
            }
            let mut p = Self::props(&v)?;
            f(&mut p.access_policies, &self.row.tenant_id)?;
            v.properties_json =
                serde_json::to_string(&p).map_err(|e| Error::internal(e.to_string()))?;
            self.catalog.update_key_vault(&v)?;
            self.vault_json(&v)
        })();
        self.audit("Microsoft.KeyVault/vaults/accessPolicies/write", &id, &r);
        r
    }

    /// `coffer keyvault audit list`: the vault's key audit log.
    pub fn key_vault_audit(&self, name: &str) -> Result<Vec<Value>> {
        let v = self.live_vault(name)?;
        self.authorize_action(&self.vault_arm_id(&v), "Microsoft.KeyVault/vaults/read")?;
        Ok(self
            .catalog
            .key_audit(&v.guid)?
            .into_iter()
            .map(|a| {
                json!({
                    "time": util::rfc3339_ms(a.time_ms),
                    "callerPrincipalId": a.principal,
                    "operationName": a.operation,
                    "keyName": a.key_name,
                    "keyVersion": a.key_version,
                    "result": a.result,
                    "errorCode": a.error_code,
                })
            })
            .collect())
    }

    // -------------------------------------------------------------- data plane

    /// Authorises `permission` on key `key` (or the vault when `None`) for `principal`.
    fn authorize_key(
        &self,
        principal: &str,
        v: &KeyVaultRow,
        key: Option<&str>,
        permission: &str,
    ) -> Result<()> {
        if Self::is_hsm(v) {
            return self.authorize_hsm(principal, v, key, permission);
        }
        let p = Self::props(v)?;
        if p.enable_rbac_authorization {
            let mut scope = self.vault_arm_id(v);
            if let Some(k) = key {
                scope = format!("{scope}/keys/{k}");
            }
            let action = data_action(permission);
            if self.rbac_allows(principal, &scope, action, true, None)? {
                return Ok(());
            }
            return Err(forbidden(
                "ForbiddenByRbac",
                format!(
                    "Caller is not authorized to perform action on resource.\r\nCaller: oid={principal}\r\nAction: '{action}'\r\nResource: '{}'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC'\r\nVault: {}",
                    scope.to_ascii_lowercase(),
                    v.name
                ),
            ));
        }
        let allowed =
            p.access_policies.iter().any(|ap| {
                ap.object_id.eq_ignore_ascii_case(principal)
                    && ap.permissions.keys.iter().any(|k| {
                        k.eq_ignore_ascii_case(permission) || k.eq_ignore_ascii_case("all")
                    })
            });
        if allowed {
            Ok(())
        } else {
            Err(forbidden(
                "AccessDenied",
                format!(
                    "The user, group or application 'oid={principal}' does not have keys {} permission on key vault '{}'.",
                    permission.to_ascii_lowercase(),
                    v.name
                ),
            ))
        }
    }

    pub(crate) fn audit_key<T>(
        &self,
        v: &KeyVaultRow,
        principal: &str,
        op: &str,
        key: Option<&str>,
        version: Option<&str>,
        r: &Result<T>,
    ) {
        let _ = self.catalog.log_key_audit(&KeyAuditRow {
            seq: 0,
            vault_guid: v.guid.clone(),
            time_ms: util::clock_ms(),
            principal: principal.to_owned(),
            operation: op.to_owned(),
            key_name: key.map(str::to_owned),
            key_version: version.map(str::to_owned),
            result: if r.is_ok() { "Succeeded" } else { "Failed" }.to_owned(),
            error_code: r.as_ref().err().map(|e| {
                e.inner_code
                    .clone()
                    .unwrap_or_else(|| e.code.as_str().to_owned())
            }),
        });
    }

    /// Parses `https://{vault}.vault.coffer.local/keys/{name}[/{version}]`.
    pub(crate) fn parse_kid(&self, kid: &str) -> Result<(String, String, Option<String>)> {
        let bad_id = || {
            bad(format!(
                "'{kid}' is not a Coffer key vault key identifier (https://VAULT.{VAULT_DNS_SUFFIX}/keys/NAME[/VERSION])"
            ))
        };
        let rest = kid.trim().strip_prefix("https://").ok_or_else(bad_id)?;
        let (host, path) = rest.split_once('/').ok_or_else(bad_id)?;
        let vault = host
            .strip_suffix(&format!(".{VAULT_DNS_SUFFIX}"))
            .or_else(|| host.strip_suffix(".managedhsm.coffer.local"))
            .ok_or_else(bad_id)?;
        let mut parts = path.trim_end_matches('/').split('/');
        if parts.next() != Some("keys") {
            return Err(bad_id());
        }
        let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(bad_id)?;
        let version = parts.next().map(str::to_owned);
        if parts.next().is_some() {
            return Err(bad_id());
        }
        Ok((vault.to_owned(), name.to_owned(), version))
    }

    fn live_key(&self, v: &KeyVaultRow, name: &str) -> Result<KeyRow> {
        match self.catalog.key(&v.guid, name)? {
            Some(k) if k.deleted_ms.is_none() => Ok(k),
            _ => Err(key_not_found(name)),
        }
    }

    pub(crate) fn version_row(
        &self,
        v: &KeyVaultRow,
        k: &KeyRow,
        version: Option<&str>,
    ) -> Result<KeyVersionRow> {
        let ver = version
            .filter(|s| !s.is_empty())
            .unwrap_or(&k.current_version);
        self.catalog
            .key_version(&v.guid, &k.name, ver)?
            .ok_or_else(|| key_not_found(&format!("{}/{ver}", k.name)))
    }

    pub(crate) fn kid(v: &KeyVaultRow, name: &str, version: &str) -> String {
        format!("{}/keys/{name}/{version}", Self::vault_uri(v))
    }

    fn attrs(row: &KeyVersionRow) -> Result<KeyAttrs> {
        serde_json::from_str(&row.attributes_json).map_err(|_| {
            Error::new(
                ErrorCode::CatalogError,
                "malformed key attributes in the catalog",
            )
        })
    }

    fn recovery(p: &VaultProps) -> (u32, &'static str) {
        if !p.enable_soft_delete {
            return (0, "Purgeable");
        }
        let level = match (
            p.soft_delete_retention_in_days == 90,
            p.enable_purge_protection,
        ) {
            (true, true) => "Recoverable",
            (true, false) => "Recoverable+Purgeable",
            (false, true) => "CustomizedRecoverable",
            (false, false) => "CustomizedRecoverable+Purgeable",
        };
        (p.soft_delete_retention_in_days, level)
    }

    fn bundle(&self, v: &KeyVaultRow, row: &KeyVersionRow) -> Result<Value> {
        let a = Self::attrs(row)?;
        let p = Self::props(v)?;
        let (days, level) = Self::recovery(&p);
        let mut key: Value = serde_json::from_str(&row.public_jwk_json).map_err(|_| {
            Error::new(
                ErrorCode::CatalogError,
                "malformed public key in the catalog",
            )
        })?;
        key["kid"] = json!(Self::kid(v, &row.name, &row.version));
        key["key_ops"] = json!(a.key_ops);
        Ok(json!({
            "key": key,
            "attributes": {
                "enabled": a.enabled,
                "nbf": a.nbf,
                "exp": a.exp,
                "created": row.created_ms / 1000,
                "updated": row.updated_ms / 1000,
                "recoverableDays": days,
                "recoveryLevel": level,
                "exportable": false,
            },
            "tags": a.tags,
            "managed": Value::Null,
        }))
    }

    fn check_usable(row: &KeyVersionRow, op: &str, now_ms: i64) -> Result<KeyAttrs> {
        let a = Self::attrs(row)?;
        if !a.enabled {
            return Err(forbidden(
                "KeyDisabled",
                format!("Operation {op} is not allowed on a disabled key."),
            ));
        }
        if a.nbf.is_some_and(|n| now_ms < n * 1000) {
            return Err(forbidden(
                "KeyNotYetValid",
                format!("Operation {op} is not allowed: the key is not yet valid (nbf)."),
            ));
        }
        if a.exp.is_some_and(|e| now_ms >= e * 1000) {
            return Err(forbidden(
                "KeyExpired",
                format!("Operation {op} is not allowed: the key has expired (exp)."),
            ));
        }
        Ok(a)
    }

    fn key_purpose(v: &KeyVaultRow, name: &str, version: &str) -> String {
        format!(
            "keyvault-key:{}/{}/{}",
            v.guid,
            name.to_ascii_lowercase(),
            version.to_ascii_lowercase()
        )
    }

    pub(crate) fn open_private(&self, v: &KeyVaultRow, row: &KeyVersionRow) -> Result<PrivateKey> {
        PrivateKey::open(
            &self.master,
            &Self::key_purpose(v, &row.name, &row.version),
            &row.sealed_private,
        )
        .map_err(|_| {
            Error::new(
                ErrorCode::DataCorrupted,
                format!(
                    "the sealed material of key {}/{} does not authenticate",
                    row.name, row.version
                ),
            )
        })
    }

    /// Runs one audited data-plane operation on a key version that must be usable for `op`.
    fn with_key<T>(
        &self,
        k: &KeyRef<'_>,
        op: &str,
        f: impl FnOnce(&KeyVaultRow, &KeyVersionRow, Material) -> Result<T>,
    ) -> Result<T> {
        let KeyRef {
            principal,
            vault,
            name,
            version,
        } = *k;
        let permission = op;
        let v = self.live_vault(vault)?;
        let mut used_version = version.map(str::to_owned);
        let r = (|| {
            self.authorize_key(principal, &v, Some(name), permission)?;
            let k = self.live_key(&v, name)?;
            let row = self.version_row(&v, &k, version)?;
            used_version = Some(row.version.clone());
            let a = Self::check_usable(&row, op, util::clock_ms())?;
            if !a.key_ops.iter().any(|o| o.eq_ignore_ascii_case(op)) {
                return Err(forbidden(
                    "OperationNotAllowed",
                    format!(
                        "Operation {op} is not permitted on this key (key_ops: {}).",
                        a.key_ops.join(", ")
                    ),
                ));
            }
            let key = self.open_material(&v, &row)?;
            f(&v, &row, key)
        })();
        self.audit_key(&v, principal, op, Some(name), used_version.as_deref(), &r);
        r
    }

    /// One RSA-OAEP operation (`op`: wrapKey, unwrapKey, encrypt, decrypt) on the
    /// key version `k`; returns the versioned kid with the output.
    fn rsa_op<T>(
        &self,
        k: &KeyRef<'_>,
        op: &str,
        alg: &str,
        f: impl FnOnce(&Material, EncryptionAlgorithm) -> coffer_keyvault::Result<T>,
    ) -> Result<(String, T)> {
        let alg = EncryptionAlgorithm::parse(alg).map_err(kv_err);
        self.with_key(k, op, |v, row, key| {
            let out = f(&key, alg?).map_err(kv_err)?;
            Ok((Self::kid(v, &row.name, &row.version), out))
        })
    }

    /// wrapKey / encrypt.
    pub(crate) fn key_encrypt(
        &self,
        k: &KeyRef<'_>,
        op: &str,
        alg: &str,
        plain: &[u8],
    ) -> Result<KeyOperationResult> {
        let (kid, (value, used)) = self.rsa_op(k, op, alg, |key, a| key.encrypt(a, plain))?;
        Ok(KeyOperationResult {
            kid,
            value,
            alg: used.as_str().to_owned(),
        })
    }

    /// unwrapKey / decrypt.
    pub(crate) fn key_decrypt(
        &self,
        k: &KeyRef<'_>,
        op: &str,
        alg: &str,
        cipher: &[u8],
    ) -> Result<UnwrapResult> {
        let (kid, value) = self.rsa_op(k, op, alg, |key, a| key.decrypt(a, cipher))?;
        Ok(UnwrapResult { kid, value })
    }

    /// `coffer keyvault key wrap|encrypt` (as the acting principal).
    pub fn key_wrap(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
        op: &str,
        alg: &str,
        value_b64: &str,
    ) -> Result<Value> {
        let plain = coffer_keyvault::from_b64url(value_b64).map_err(kv_err)?;
        let k = KeyRef::new(self.principal(), vault, name, version);
        let r = self.key_encrypt(&k, op, alg, &plain)?;
        Ok(json!({ "kid": r.kid, "value": b64url(&r.value), "alg": r.alg }))
    }

    /// `coffer keyvault key unwrap|decrypt` (as the acting principal).
    pub fn key_unwrap(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
        op: &str,
        alg: &str,
        value_b64: &str,
    ) -> Result<Value> {
        let c = coffer_keyvault::from_b64url(value_b64).map_err(kv_err)?;
        let k = KeyRef::new(self.principal(), vault, name, version);
        let r = self.key_decrypt(&k, op, alg, &c)?;
        Ok(json!({ "kid": r.kid, "value": b64url(r.value.expose()), "alg": alg }))
    }

    /// `coffer keyvault key sign` (value: the digest, base64url).
    pub fn key_sign(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
        alg: &str,
        digest_b64: &str,
    ) -> Result<Value> {
        let d = coffer_keyvault::from_b64url(digest_b64).map_err(kv_err)?;
        let a = SignatureAlgorithm::parse(alg).map_err(kv_err);
        let k = KeyRef::new(self.principal(), vault, name, version);
        self.with_key(&k, "sign", |v, row, key| {
            let sig = key.sign(a?, &d).map_err(kv_err)?;
            Ok(json!({ "kid": Self::kid(v, &row.name, &row.version), "value": b64url(&sig), "alg": alg }))
        })
    }

    /// `coffer keyvault key verify`.
    pub fn key_verify(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
        alg: &str,
        digest_b64: &str,
        sig_b64: &str,
    ) -> Result<Value> {
        let d = coffer_keyvault::from_b64url(digest_b64).map_err(kv_err)?;
        let s = coffer_keyvault::from_b64url(sig_b64).map_err(kv_err)?;
        let a = SignatureAlgorithm::parse(alg).map_err(kv_err);
        let k = KeyRef::new(self.principal(), vault, name, version);
        self.with_key(&k, "verify", |_, _, key| {
            Ok(json!({ "value": key.verify(a?, &d, &s).map_err(kv_err)? }))
        })
    }

    // ------------------------------------------------------------- key management

    /// Runs an audited key-management operation after authorising `permission`.
    pub(crate) fn key_mgmt<T>(
        &self,
        principal: &str,
        vault: &str,
        name: Option<&str>,
        op: &str,
        permission: &str,
        f: impl FnOnce(&KeyVaultRow) -> Result<(T, Option<String>)>,
    ) -> Result<T> {
        let v = self.live_vault(vault)?;
        let mut ver = None;
        let r = (|| {
            self.authorize_key(principal, &v, name, permission)?;
            let (out, version) = f(&v)?;
            ver = version;
            Ok(out)
        })();
        self.audit_key(&v, principal, op, name, ver.as_deref(), &r);
        r
    }

    fn check_key_name(name: &str) -> Result<()> {
        if !name.is_empty()
            && name.len() <= 127
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            Ok(())
        } else {
            Err(bad(format!(
                "invalid key name '{name}': use 1-127 of ASCII letters, digits and '-'"
            )))
        }
    }

    pub(crate) fn default_ops(key: &PrivateKey) -> Vec<String> {
        match key.kty() {
            coffer_keyvault::KeyType::Rsa => [
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey",
            ]
            .map(String::from)
            .to_vec(),
            coffer_keyvault::KeyType::Ec => ["sign", "verify"].map(String::from).to_vec(),
        }
    }

    fn canon_ops(ops: &[String]) -> Result<Vec<String>> {
        const OPS: [&str; 8] = [
            "encrypt",
            "decrypt",
            "sign",
            "verify",
            "wrapKey",
            "unwrapKey",
            "import",
            "export",
        ];
        ops.iter()
            .map(|o| {
                OPS.iter()
                    .find(|x| x.eq_ignore_ascii_case(o))
                    .map(|x| (*x).to_owned())
                    .ok_or_else(|| {
                        bad(format!(
                            "unknown key operation {o:?}; valid: {}",
                            OPS.join(", ")
                        ))
                    })
            })
            .collect()
    }

    /// Stores `key` as a new current version of `name` and publishes the event.
    fn store_version(
        &self,
        v: &KeyVaultRow,
        name: &str,
        key: &PrivateKey,
        mut attrs: KeyAttrs,
    ) -> Result<KeyVersionRow> {
        let version = uuid::Uuid::new_v4().simple().to_string();
        let canonical = self.canonical_key_name(v, name)?;
        if attrs.key_ops.is_empty() {
            attrs.key_ops = Self::default_ops(key);
        }
        let jwk = key.public_jwk(&[]).map_err(kv_err)?;
        let sealed = key
            .seal(&self.master, &Self::key_purpose(v, &canonical, &version))
            .map_err(kv_err)?;
        self.store_public_version(v, &canonical, version, &jwk, sealed, attrs)
    }

    pub(crate) fn canonical_key_name(&self, v: &KeyVaultRow, name: &str) -> Result<String> {
        Ok(self
            .catalog
            .key(&v.guid, name)?
            .map_or_else(|| name.to_owned(), |k| k.name))
    }

    /// Records a new current version (public JWK, sealed private part or token
    /// reference) and publishes `KeyNewVersionCreated`.
    pub(crate) fn store_public_version(
        &self,
        v: &KeyVaultRow,
        canonical: &str,
        version: String,
        jwk: &coffer_keyvault::JsonWebKey,
        sealed: Vec<u8>,
        mut attrs: KeyAttrs,
    ) -> Result<KeyVersionRow> {
        attrs.key_ops = Self::canon_ops(&attrs.key_ops)?;
        let now = util::clock_ms();
        let row = KeyVersionRow {
            vault_guid: v.guid.clone(),
            name: canonical.to_owned(),
            version: version.clone(),
            kty: jwk.kty.clone(),
            public_jwk_json: serde_json::to_string(jwk)
                .map_err(|e| Error::internal(e.to_string()))?,
            attributes_json: serde_json::to_string(&attrs)
                .map_err(|e| Error::internal(e.to_string()))?,
            sealed_private: sealed,
            created_ms: now,
            updated_ms: now,
        };
        self.catalog.add_key_version(&row)?;
        let _ = self.catalog.publish_key_event(&KeyEventRow {
            seq: 0,
            time_ms: now,
            event_type: "KeyNewVersionCreated".into(),
            vault_guid: v.guid.clone(),
            vault_name: v.name.clone(),
            key_name: canonical.to_owned(),
            key_id: Self::kid(v, canonical, &version),
            version,
        });
        Ok(row)
    }

    fn refuse_deleted_name(&self, v: &KeyVaultRow, name: &str) -> Result<()> {
        if let Some(k) = self.catalog.key(&v.guid, name)?
            && k.deleted_ms.is_some()
        {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged."),
            )
            .with_inner("ObjectIsDeletedButRecoverable"));
        }
        Ok(())
    }

    fn software_kty(kty: &str) -> Result<&'static str> {
        match kty.to_ascii_uppercase().as_str() {
            "RSA" => Ok("RSA"),
            "EC" => Ok("EC"),
            "RSA-HSM" | "EC-HSM" => Err(bad(format!(
                "key type {kty} needs a hardware security module, and no PKCS#11 token is configured for this vault; \
                 Coffer never emulates HSM keys in software. Use RSA or EC."
            ))),
            _ => Err(bad(format!(
                "unsupported key type {kty:?}: use RSA or EC (RSA-HSM / EC-HSM need a PKCS#11 token)"
            ))),
        }
    }

    /// `coffer keyvault key create` (a new version if the key exists).
    pub fn create_key(&self, vault: &str, name: &str, o: KeyCreateOptions) -> Result<Value> {
        self.key_mgmt(
            self.principal(),
            vault,
            Some(name),
            "create",
            "create",
            |v| {
                Self::check_key_name(name)?;
                self.refuse_deleted_name(v, name)?;
                if Self::is_hsm(v) {
                    let exp = o.expires.or(self.policy_expiry(v, name)?);
                    let row = self.create_hsm_version(v, name, &o.kty, o.size, o.attrs(exp))?;
                    return Ok((self.bundle(v, &row)?, Some(row.version)));
                }
                let key = match Self::software_kty(&o.kty)? {
                    "RSA" => {
                        if o.curve.is_some() {
                            return Err(bad("--curve applies to EC keys only"));
                        }
                        PrivateKey::generate_rsa(o.size.unwrap_or(2048)).map_err(kv_err)?
                    }
                    _ => {
                        if o.size.is_some() {
                            return Err(bad("--size applies to RSA keys only"));
                        }
                        let c =
                            coffer_keyvault::Curve::parse(o.curve.as_deref().unwrap_or("P-256"))
                                .map_err(kv_err)?;
                        PrivateKey::generate_ec(c).map_err(kv_err)?
                    }
                };
                let exp = o.expires.or(self.policy_expiry(v, name)?);
                let row = self.store_version(v, name, &key, o.attrs(exp))?;
                Ok((self.bundle(v, &row)?, Some(row.version)))
            },
        )
    }

    /// `coffer keyvault key import --pem-file` (PEM text; never logged).
    pub fn import_key(
        &self,
        vault: &str,
        name: &str,
        pem: &str,
        o: KeyCreateOptions,
    ) -> Result<Value> {
        self.key_mgmt(
            self.principal(),
            vault,
            Some(name),
            "import",
            "import",
            |v| {
                Self::check_key_name(name)?;
                self.refuse_deleted_name(v, name)?;
                if o.kty.to_ascii_uppercase().ends_with("-HSM") {
                    Self::software_kty(&o.kty)?;
                }
                if Self::is_hsm(v) {
                    return Err(bad(
                        "keys cannot be imported into a managed HSM: its keys are generated inside the token",
                    ));
                }
                let key = PrivateKey::from_pem(pem).map_err(kv_err)?;
                let row = self.store_version(v, name, &key, o.attrs(o.expires))?;
                Ok((self.bundle(v, &row)?, Some(row.version)))
            },
        )
    }

    pub(crate) fn show_key_as(
        &self,
        principal: &str,
        vault: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Value> {
        self.key_mgmt(principal, vault, Some(name), "get", "get", |v| {
            let k = self.live_key(v, name)?;
            let row = self.version_row(v, &k, version)?;
            Ok((self.bundle(v, &row)?, Some(row.version)))
        })
    }

    /// `coffer keyvault key show`.
    pub fn show_key(&self, vault: &str, name: &str, version: Option<&str>) -> Result<Value> {
        self.show_key_as(self.principal(), vault, name, version)
    }

    /// `coffer keyvault key download`: the public key as PEM.
    pub fn download_key(&self, vault: &str, name: &str, version: Option<&str>) -> Result<String> {
        self.key_mgmt(self.principal(), vault, Some(name), "get", "get", |v| {
            let k = self.live_key(v, name)?;
            let row = self.version_row(v, &k, version)?;
            let pem = self.open_material(v, &row)?.public_pem().map_err(kv_err)?;
            Ok((pem, Some(row.version)))
        })
    }

    fn key_item(&self, v: &KeyVaultRow, row: &KeyVersionRow, versioned: bool) -> Result<Value> {
        let b = self.bundle(v, row)?;
        let kid = if versioned {
            Self::kid(v, &row.name, &row.version)
        } else {
            format!("{}/keys/{}", Self::vault_uri(v), row.name)
        };
        Ok(
            json!({ "kid": kid, "name": row.name, "attributes": b["attributes"], "tags": b["tags"], "managed": Value::Null }),
        )
    }

    /// `coffer keyvault key list` (KeyItems, versionless kids).
    pub fn list_keys(&self, vault: &str) -> Result<Vec<Value>> {
        self.key_mgmt(self.principal(), vault, None, "list", "list", |v| {
            let mut out = Vec::new();
            for k in self
                .catalog
                .keys(Some(&v.guid))?
                .iter()
                .filter(|k| k.deleted_ms.is_none())
            {
                let row = self.version_row(v, k, None)?;
                out.push(self.key_item(v, &row, false)?);
            }
            Ok((out, None))
        })
    }

    /// `coffer keyvault key list-versions`.
    pub fn list_key_versions(&self, vault: &str, name: &str) -> Result<Vec<Value>> {
        self.key_mgmt(self.principal(), vault, Some(name), "list", "list", |v| {
            let k = self.live_key(v, name)?;
            let out = self
                .catalog
                .key_versions(&v.guid, &k.name)?
                .iter()
                .map(|r| self.key_item(v, r, true))
                .collect::<Result<_>>()?;
            Ok((out, None))
        })
    }

    /// `coffer keyvault key set-attributes`.
    pub fn set_key_attributes(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
        u: KeyAttributeUpdate,
    ) -> Result<Value> {
        self.key_mgmt(
            self.principal(),
            vault,
            Some(name),
            "update",
            "update",
            |v| {
                let k = self.live_key(v, name)?;
                let row = self.version_row(v, &k, version)?;
                let mut a = Self::attrs(&row)?;
                if let Some(e) = u.enabled {
                    a.enabled = e;
                }
                if let Some(n) = u.not_before {
                    a.nbf = (n != 0).then_some(n);
                }
                if let Some(x) = u.expires {
                    a.exp = (x != 0).then_some(x);
                }
                if let Some(ops) = &u.ops {
                    a.key_ops = Self::canon_ops(ops)?;
                }
                if let Some(t) = u.tags.clone() {
                    a.tags = t;
                }
                let json = serde_json::to_string(&a).map_err(|e| Error::internal(e.to_string()))?;
                let now = util::clock_ms();
                self.catalog.update_key_version_attributes(
                    &v.guid,
                    &row.name,
                    &row.version,
                    &json,
                    now,
                )?;
                let row = self.version_row(v, &k, Some(&row.version))?;
                Ok((self.bundle(v, &row)?, Some(row.version)))
            },
        )
    }

    fn deleted_bundle(&self, v: &KeyVaultRow, k: &KeyRow) -> Result<Value> {
        let row = self.version_row(v, k, None)?;
        let mut b = self.bundle(v, &row)?;
        b["recoveryId"] = json!(format!("{}/deletedkeys/{}", Self::vault_uri(v), k.name));
        b["deletedDate"] = json!(k.deleted_ms.map(|d| d / 1000));
        b["scheduledPurgeDate"] = json!(k.scheduled_purge_ms.map(|d| d / 1000));
        Ok(b)
    }

    /// `coffer keyvault key delete`: soft delete (or purge when soft delete is off).
    pub fn delete_key(&self, vault: &str, name: &str) -> Result<Value> {
        self.key_mgmt(
            self.principal(),
            vault,
            Some(name),
            "delete",
            "delete",
            |v| {
                let mut k = self.live_key(v, name)?;
                let p = Self::props(v)?;
                let now = util::clock_ms();
                k.deleted_ms = Some(now);
                k.scheduled_purge_ms =
                    Some(now + i64::from(p.soft_delete_retention_in_days) * DAY_MS);
                let out = self.deleted_bundle(v, &k)?;
                if p.enable_soft_delete {
                    k.updated_ms = now;
                    self.catalog.update_key(&k)?;
                } else {
                    self.catalog.purge_key(&v.guid, &k.name)?;
                }
                Ok((out, None))
            },
        )
    }

    fn deleted_key(&self, v: &KeyVaultRow, name: &str) -> Result<KeyRow> {
        match self.catalog.key(&v.guid, name)? {
            Some(k) if k.deleted_ms.is_some() => Ok(k),
            _ => Err(Error::new(
                ErrorCode::KeyNotFound,
                format!("A deleted key with (name/id) {name} was not found in this key vault."),
            )),
        }
    }

    /// `coffer keyvault key list-deleted`.
    pub fn list_deleted_keys(&self, vault: &str) -> Result<Vec<Value>> {
        self.key_mgmt(self.principal(), vault, None, "list-deleted", "list", |v| {
            let out = self
                .catalog
                .keys(Some(&v.guid))?
                .iter()
                .filter(|k| k.deleted_ms.is_some())
                .map(|k| self.deleted_bundle(v, k))
                .collect::<Result<_>>()?;
            Ok((out, None))
        })
    }

    /// `coffer keyvault key recover`.
    pub fn recover_key(&self, vault: &str, name: &str) -> Result<Value> {
        self.key_mgmt(
            self.principal(),
            vault,
            Some(name),
            "recover",
            "recover",
            |v| {
                let mut k = self.deleted_key(v, name)?;
                k.deleted_ms = None;
                k.scheduled_purge_ms = None;
                self.catalog.update_key(&k)?;
                let row = self.version_row(v, &k, None)?;
                Ok((self.bundle(v, &row)?, Some(row.version)))
            },
        )
    }

    /// `coffer keyvault key purge`: refused under purge protection.
    pub fn purge_key(&self, vault: &str, name: &str) -> Result<Value> {
        self.key_mgmt(self.principal(), vault, Some(name), "purge", "purge", |v| {
            let k = self.deleted_key(v, name)?;
            if Self::props(v)?.enable_purge_protection {
                return Err(forbidden(
                    "PurgeProtectionEnabled",
                    "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.",
                ));
            }
            self.purge_key_material(v, &k.name)?;
            Ok((json!({ "recoveryId": format!("{}/deletedkeys/{}", Self::vault_uri(v), k.name), "status": "Purged" }), None))
        })
    }

    fn rotate_now(&self, v: &KeyVaultRow, k: &KeyRow) -> Result<KeyVersionRow> {
        let cur = self.version_row(v, k, None)?;
        let a = Self::attrs(&cur)?;
        let jwk: coffer_keyvault::JsonWebKey =
            serde_json::from_str(&cur.public_jwk_json).map_err(|_| {
                Error::new(
                    ErrorCode::CatalogError,
                    "malformed public key in the catalog",
                )
            })?;
        let attrs = KeyAttrs {
            enabled: true,
            nbf: None,
            exp: self.policy_expiry(v, &k.name)?,
            key_ops: a.key_ops,
            tags: a.tags,
        };
        let bits = jwk
            .n
            .as_deref()
            .map(|n| coffer_keyvault::from_b64url(n).map(|b| b.len() as u32 * 8))
            .transpose()
            .map_err(kv_err)?;
        if cur.kty.ends_with("-HSM") {
            return self.create_hsm_version(v, &k.name, &cur.kty, bits, attrs);
        }
        let key = match bits {
            Some(bits) => PrivateKey::generate_rsa(bits),
            None => coffer_keyvault::Curve::parse(jwk.crv.as_deref().unwrap_or("P-256"))
                .and_then(PrivateKey::generate_ec),
        }
        .map_err(kv_err)?;
        self.store_version(v, &k.name, &key, attrs)
    }

    /// `coffer keyvault key rotate`: a new version now.
    pub fn rotate_key(&self, vault: &str, name: &str) -> Result<Value> {
        self.key_mgmt(
            self.principal(),
            vault,
            Some(name),
            "rotate",
            "rotate",
            |v| {
                let k = self.live_key(v, name)?;
                let row = self.rotate_now(v, &k)?;
                Ok((self.bundle(v, &row)?, Some(row.version)))
            },
        )
    }

    // --------------------------------------------------------------- rotation

    /// `exp` for a new version from the key's policy `expiryTime`, if any.
    fn policy_expiry(&self, v: &KeyVaultRow, name: &str) -> Result<Option<i64>> {
        let Some(k) = self.catalog.key(&v.guid, name)? else {
            return Ok(None);
        };
        let Some(p) = k.rotation_policy_json.as_deref() else {
            return Ok(None);
        };
        let p: Value = serde_json::from_str(p).unwrap_or_default();
        match p["attributes"]["expiryTime"].as_str() {
            Some(d) => Ok(Some((util::clock_ms() + parse_iso_duration_ms(d)?) / 1000)),
            None => Ok(None),
        }
    }

    fn policy_json(v: &KeyVaultRow, k: &KeyRow) -> Value {
        let mut p: Value = k.rotation_policy_json.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_else(|| {
            json!({ "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}], "attributes": {} })
        });
        p["id"] = json!(format!(
            "{}/keys/{}/rotationpolicy",
            Self::vault_uri(v),
            k.name
        ));
        p
    }

    /// `coffer keyvault key rotation-policy show`.
    pub fn show_rotation_policy(&self, vault: &str, name: &str) -> Result<Value> {
        self.key_mgmt(
            self.principal(),
            vault,
            Some(name),
            "getrotationpolicy",
            "getrotationpolicy",
            |v| {
                let k = self.live_key(v, name)?;
                Ok((Self::policy_json(v, &k), None))
            },
        )
    }

    /// `coffer keyvault key rotation-policy update` with a KeyRotationPolicy JSON document.
    pub fn update_rotation_policy(&self, vault: &str, name: &str, policy: &str) -> Result<Value> {
        self.key_mgmt(self.principal(), vault, Some(name), "setrotationpolicy", "setrotationpolicy", |v| {
            let mut k = self.live_key(v, name)?;
            let p: Value = serde_json::from_str(policy).map_err(|e| bad(format!("the rotation policy is not valid JSON: {e}")))?;
            let mut actions = Vec::new();
            let (mut rotates, mut notifies) = (0, 0);
            for a in p["lifetimeActions"].as_array().cloned().unwrap_or_default() {
                let ty = a["action"]["type"].as_str().unwrap_or_default();
                let ty = if ty.eq_ignore_ascii_case("rotate") { rotates += 1; "Rotate" } else if ty.eq_ignore_ascii_case("notify") { notifies += 1; "Notify" } else {
                    return Err(bad(format!("lifetime action type must be Rotate or Notify, not {ty:?}")));
                };
                let t = &a["trigger"];
                let (after, before) = (t["timeAfterCreate"].as_str(), t["timeBeforeExpiry"].as_str());
                let trigger = match (after, before) {
                    (Some(d), None) if ty == "Rotate" => { parse_iso_duration_ms(d)?; json!({"timeAfterCreate": d}) }
                    (None, Some(d)) => { parse_iso_duration_ms(d)?; json!({"timeBeforeExpiry": d}) }
                    (Some(_), None) => return Err(bad("timeAfterCreate applies to Rotate actions only")),
                    _ => return Err(bad("each lifetime action needs exactly one of trigger.timeAfterCreate or trigger.timeBeforeExpiry")),
                };
                actions.push(json!({"trigger": trigger, "action": {"type": ty}}));
            }
            if rotates > 1 || notifies > 1 {
                return Err(bad("a rotation policy has at most one Rotate and one Notify action"));
            }
            let now = util::clock_ms() / 1000;
            let mut attrs = json!({ "created": now, "updated": now });
            if let Some(old) = k.rotation_policy_json.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok())
                && let Some(c) = old["attributes"]["created"].as_i64()
            {
                attrs["created"] = json!(c);
            }
            if let Some(e) = p["attributes"]["expiryTime"].as_str() {
                if parse_iso_duration_ms(e)? < 28 * DAY_MS {
                    return Err(bad(format!("expiryTime {e} is too short: it must be at least 28 days (P28D)")));
                }
                attrs["expiryTime"] = json!(e);
            }
            let stored = json!({ "lifetimeActions": actions, "attributes": attrs });
            k.rotation_policy_json = Some(stored.to_string());
            k.updated_ms = util::clock_ms();
            self.catalog.update_key(&k)?;
            Ok((Self::policy_json(v, &k), None))
        })
    }

    /// Coffer's background work for key vaults, run at the start of every command:
    /// purges soft-deleted keys and vaults past their retention, and applies rotation
    /// policies (Rotate → new version, Notify → a `KeyNearExpiry` event). Returns how
    /// many actions it took.
    pub fn run_key_vault_background(&self) -> Result<usize> {
        let now = util::clock_ms();
        let mut n = 0;
        for v in self.catalog.key_vaults()? {
            if v.scheduled_purge_ms.is_some_and(|t| t <= now) {
                self.purge_vault_material(&v)?;
                n += 1;
            }
        }
        for k in self.catalog.keys(None)? {
            let Some(v) = self.catalog.key_vault_by_guid(&k.vault_guid)? else {
                continue;
            };
            if k.scheduled_purge_ms.is_some_and(|t| t <= now) {
                self.purge_key_material(&v, &k.name)?;
                let _ = self.catalog.log_key_audit(&KeyAuditRow {
                    seq: 0,
                    vault_guid: v.guid.clone(),
                    time_ms: now,
                    principal: "KeyVaultService".into(),
                    operation: "purge".into(),
                    key_name: Some(k.name.clone()),
                    key_version: None,
                    result: "Succeeded".into(),
                    error_code: None,
                });
                n += 1;
                continue;
            }
            if k.deleted_ms.is_some() || v.deleted_ms.is_some() {
                continue;
            }
            n += self.apply_policy(&v, k, now)?;
        }
        Ok(n)
    }

    fn apply_policy(&self, v: &KeyVaultRow, mut k: KeyRow, now: i64) -> Result<usize> {
        let Some(p) = k
            .rotation_policy_json
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
        else {
            return Ok(0);
        };
        let cur = self.version_row(v, &k, None)?;
        let exp_ms = Self::attrs(&cur)?.exp.map(|e| e * 1000);
        let mut n = 0;
        for a in p["lifetimeActions"].as_array().cloned().unwrap_or_default() {
            let t = &a["trigger"];
            let due = if let Some(d) = t["timeAfterCreate"].as_str() {
                now >= cur.created_ms + parse_iso_duration_ms(d)?
            } else if let (Some(d), Some(exp)) = (t["timeBeforeExpiry"].as_str(), exp_ms) {
                now >= exp - parse_iso_duration_ms(d)?
            } else {
                false
            };
            if !due {
                continue;
            }
            match a["action"]["type"].as_str() {
                Some("Rotate") => {
                    let r = self.rotate_now(v, &k).map(|_| ());
                    let ver = self
                        .catalog
                        .key(&v.guid, &k.name)?
                        .map(|x| x.current_version);
                    self.audit_key(
                        v,
                        "KeyRotationPolicy",
                        "rotate",
                        Some(&k.name),
                        ver.as_deref(),
                        &r,
                    );
                    r?;
                    n += 1;
                    return Ok(n);
                }
                Some("Notify") if k.last_notify_ms.is_none_or(|l| l < cur.created_ms) => {
                    self.catalog.publish_key_event(&KeyEventRow {
                        seq: 0,
                        time_ms: now,
                        event_type: "KeyNearExpiry".into(),
                        vault_guid: v.guid.clone(),
                        vault_name: v.name.clone(),
                        key_name: k.name.clone(),
                        key_id: Self::kid(v, &k.name, &cur.version),
                        version: cur.version.clone(),
                    })?;
                    k.last_notify_ms = Some(now);
                    self.catalog.update_key(&k)?;
                    n += 1;
                }
                _ => {}
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_api_authorises_wraps_unwraps_and_publishes_events() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::open(dir.path().join("h"), None).unwrap();
        inst.create_key_vault("default", "kv-api", KeyVaultOptions::default())
            .unwrap();
        let b = inst
            .create_key(
                "kv-api",
                "cmk",
                KeyCreateOptions {
                    kty: "RSA".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let kid = b["key"]["kid"].as_str().unwrap().to_owned();
        let versionless = kid.rsplit_once('/').unwrap().0.to_owned();
        let id = inst.create_identity("default", "vault-id").unwrap();
        let who = id["principalId"].as_str().unwrap();
        let client = inst.key_vault_client();
        let dek = [7u8; 32];
        let e = client
            .wrap_key(who, &versionless, "RSA-OAEP-256", &dek)
            .unwrap_err();
        assert_eq!(
            (e.code, e.inner_code.as_deref()),
            (ErrorCode::Forbidden, Some("ForbiddenByRbac"))
        );
        let scope = format!(
            "{}/keys/cmk",
            inst.show_key_vault("kv-api").unwrap()["id"]
                .as_str()
                .unwrap()
        );
        inst.create_role_assignment("Key Vault Crypto Service Encryption User", who, &scope)
            .unwrap();
        let w = client
            .wrap_key(who, &versionless, "RSA-OAEP-256", &dek)
            .unwrap();
        assert_eq!(
            (w.kid.as_str(), w.alg.as_str()),
            (kid.as_str(), "RSA-OAEP-256")
        );
        let u = client.unwrap_key(who, &w.kid, &w.alg, &w.value).unwrap();
        assert_eq!(u.value.expose(), &dek);
        assert_eq!(
            client.get_key(who, &kid).unwrap()["key"]["kid"],
            kid.as_str()
        );
        let events = inst.key_events_since(0).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].event_type.as_str(), events[0].key_id.as_str()),
            ("KeyNewVersionCreated", kid.as_str())
        );
        inst.rotate_key("kv-api", "cmk").unwrap();
        let newer = inst.key_events_since(events[0].seq).unwrap();
        assert_eq!(newer.len(), 1);
        assert_ne!(newer[0].key_id, kid);
        // The old version still unwraps; the versionless id now means the new one.
        assert_eq!(
            client
                .unwrap_key(who, &w.kid, &w.alg, &w.value)
                .unwrap()
                .value
                .expose(),
            &dek
        );
        assert!(
            client
                .unwrap_key(who, &versionless, &w.alg, &w.value)
                .is_err()
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_iso_duration_ms("P28D").unwrap(), 28 * DAY_MS);
        assert_eq!(parse_iso_duration_ms("P1Y").unwrap(), 365 * DAY_MS);
        assert_eq!(parse_iso_duration_ms("P18M").unwrap(), 540 * DAY_MS);
        assert_eq!(parse_iso_duration_ms("PT1H").unwrap(), 3_600_000);
        assert!(parse_iso_duration_ms("30D").is_err());
        assert!(parse_iso_duration_ms("P").is_err());
    }
}

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
//!
//! This module holds the shared types, error helpers and lookups (vault, key,
//! version, kid); [`vaults`] the vault control plane (properties, soft delete,
//! access policies), [`keys`] key lifecycle and versions, [`dataplane`] the
//! authorised and audited cryptographic operations, [`rotation`] rotation policies
//! and the background work.

use std::collections::BTreeMap;

use coffer_catalog::{KeyAuditRow, KeyEventRow, KeyRow, KeyVaultRow, KeyVersionRow};
use coffer_crypto::SecretBytes;
use coffer_keyvault::{EncryptionAlgorithm, KvError, PrivateKey, SignatureAlgorithm, b64url};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, ErrorCode, Instance, Result, hsm::Material, util};

mod dataplane;
mod keys;
mod rotation;
mod rows;
mod vaults;

pub(crate) use rows::KeyRowCache;

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

/// What a new key version is: RSA of a size, or EC on a curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeySpec {
    /// RSA with this many bits.
    Rsa(u32),
    /// EC on this curve.
    Ec(coffer_keyvault::Curve),
}

impl KeySpec {
    /// From the key family (`ec`) and `--size` / `--curve` (defaults 2048, P-256).
    fn parse(ec: bool, size: Option<u32>, curve: Option<&str>) -> Result<Self> {
        match (ec, size, curve) {
            (false, _, Some(_)) => Err(bad("--curve applies to EC keys only")),
            (true, Some(_), _) => Err(bad("--size applies to RSA keys only")),
            (false, size, None) => Ok(Self::Rsa(size.unwrap_or(2048))),
            (true, None, curve) => coffer_keyvault::Curve::parse(curve.unwrap_or("P-256"))
                .map(Self::Ec)
                .map_err(kv_err),
        }
    }

    /// The type and size or curve of an existing version (its public JWK).
    fn of(jwk: &coffer_keyvault::JsonWebKey) -> Result<Self> {
        match (&jwk.n, &jwk.crv) {
            (Some(n), _) => Ok(Self::Rsa(
                coffer_keyvault::from_b64url(n).map_err(kv_err)?.len() as u32 * 8,
            )),
            (None, crv) => Self::parse(true, None, crv.as_deref()),
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
        self.inst.as_trusted_service(|| {
            self.inst
                .show_key_as(principal, &vault, &name, version.as_deref())
        })
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
        self.inst
            .as_trusted_service(|| self.inst.key_encrypt(&k, "wrapKey", alg, dek))
    }

    /// `unwrapKey`: the key version must be the one that wrapped (pass the versioned kid).
    pub fn unwrap_key(
        &self,
        principal: &str,
        key_id: &str,
        alg: &str,
        wrapped: &[u8],
    ) -> Result<UnwrapResult> {
        self.begin_unwrap_key(principal, key_id, alg, wrapped)?
            .finish()
    }

    /// [`KeyVaultClient::unwrap_key`] for a caller with more requests in hand (a
    /// server's worker): the call is authorised and the key operation run, and
    /// its audit record handed to the committer; [`PendingUnwrap::finish`] gives the
    /// result once that record is durable. Meanwhile the thread can begin other calls,
    /// instead of sleeping while the record is synced. Errors that leave no record to
    /// wait for (a malformed key id, an unknown key vault, an audit log that failed)
    /// are returned here; every other outcome, refusals included, by `finish`.
    pub fn begin_unwrap_key(
        &self,
        principal: &str,
        key_id: &str,
        alg: &str,
        wrapped: &[u8],
    ) -> Result<PendingUnwrap> {
        let (vault, name, version) = self.inst.parse_kid(key_id)?;
        let k = KeyRef::new(principal, &vault, &name, version.as_deref());
        self.inst
            .as_trusted_service(|| self.inst.begin_key_decrypt(&k, "unwrapKey", alg, wrapped))
            .map(PendingUnwrap)
    }
}

/// An `unwrapKey` whose audit record is being made durable
/// ([`KeyVaultClient::begin_unwrap_key`]). Finish it on the thread that began it; it
/// does not borrow the instance (a worker may hold it with the instance in one place).
#[must_use = "the unwrapped key is only given out by finish"]
pub struct PendingUnwrap(dataplane::InFlight<UnwrapResult>);

impl PendingUnwrap {
    /// Waits until the call's audit record is durable (at once if it is), then returns
    /// the unwrapped key, or the error of the call or of its audit record.
    pub fn finish(self) -> Result<UnwrapResult> {
        self.0.finish()
    }
}

impl std::fmt::Debug for PendingUnwrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingUnwrap").finish_non_exhaustive()
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

/// A JSON document of the catalog (`what`: for the error), parsed.
pub(crate) fn from_catalog<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|_| {
        Error::new(
            ErrorCode::CatalogError,
            format!("malformed {what} in the catalog"),
        )
    })
}

/// `value` as a JSON document for the catalog.
pub(crate) fn to_catalog<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::internal(e.to_string()))
}

/// `Conflict` / `ObjectIsDeletedButRecoverable`: a soft-deleted object's name reused
/// (`what`: "Vault 'kv'", "Key k").
fn deleted_but_recoverable(what: &str, then: &str) -> Error {
    Error::new(
        ErrorCode::Conflict,
        format!("{what} is currently in a deleted but recoverable state, and its name cannot be reused; {then}"),
    )
    .with_inner("ObjectIsDeletedButRecoverable")
}

/// `Forbidden` / `PurgeProtectionEnabled` (`target`: "vault 'kv'", "this vault").
fn purge_protected(target: &str) -> Error {
    forbidden(
        "PurgeProtectionEnabled",
        format!(
            "Operation \"purge\" is not allowed because purge protection is enabled for {target}. Key Vault service will automatically purge it after the retention period has passed."
        ),
    )
}

/// `Forbidden` / `ForbiddenByRbac` for a missing RBAC dataAction (`holder`:
/// "Vault: kv" or "Managed HSM: hsm").
pub(crate) fn rbac_denied(principal: &str, action: &str, resource: &str, holder: &str) -> Error {
    forbidden(
        "ForbiddenByRbac",
        format!(
            "Caller is not authorized to perform action on resource.\r\nCaller: oid={principal}\r\nAction: '{action}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC'\r\n{holder}"
        ),
    )
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
    /// Runs `f` as a call from a trusted service (a backup vault reaching its key):
    /// the key vault firewall lets it through when `bypass` is `AzureServices`.
    pub(crate) fn as_trusted_service<T>(&self, f: impl FnOnce() -> T) -> T {
        use std::sync::atomic::Ordering;
        let before = self.trusted_service_call.swap(true, Ordering::SeqCst);
        let out = f();
        self.trusted_service_call.store(before, Ordering::SeqCst);
        out
    }

    pub(crate) fn is_trusted_service_call(&self) -> bool {
        self.trusted_service_call
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The key vault client Coffer's backup vaults use (calls count as a trusted
    /// service's for the key vault firewall).
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

    // ------------------------------------------------------------ shared lookup

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
        from_catalog(&v.properties_json, "key vault properties")
    }

    /// When an object soft-deleted at `now` in a vault with properties `p` is purged.
    fn scheduled_purge(p: &VaultProps, now: i64) -> i64 {
        now + i64::from(p.soft_delete_retention_in_days) * DAY_MS
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
        from_catalog(&row.attributes_json, "key attributes")
    }

    /// The public JWK of a version.
    pub(crate) fn public_jwk(row: &KeyVersionRow) -> Result<coffer_keyvault::JsonWebKey> {
        from_catalog(&row.public_jwk_json, "public key")
    }

    /// Publishes a key event (`KeyNewVersionCreated`, `KeyNearExpiry`) about `version`.
    fn publish_key_event(
        &self,
        v: &KeyVaultRow,
        event_type: &str,
        name: &str,
        version: &str,
        now: i64,
    ) -> Result<()> {
        self.catalog.publish_key_event(&KeyEventRow {
            seq: 0,
            time_ms: now,
            event_type: event_type.into(),
            vault_guid: v.guid.clone(),
            vault_name: v.name.clone(),
            key_name: name.to_owned(),
            key_id: Self::kid(v, name, version),
            version: version.to_owned(),
        })?;
        Ok(())
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

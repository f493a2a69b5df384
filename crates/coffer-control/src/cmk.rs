//! Customer-managed keys (CMK) on backup vaults, and the vault's managed identities.
//!
//! A vault's DEK is wrapped either by the platform key (PMK) or by an RSA key in a
//! Coffer key vault / managed HSM, reached through [`crate::KeyVaultClient`] *as the
//! vault's managed identity* (system- or user-assigned): every wrap and unwrap is
//! authorised for that principal and audited by the key vault. [`CmkWrapper`] is the
//! [`KeyWrapper`] of that path; [`Instance::update_vault`] enables CMK, changes the key
//! or the identity, and enforces the rules of `docs/cmk.md` before anything changes.
//!
//! Settings live in the catalog (`vault_settings`): the identity document
//! ([`VaultIdentity`]) and the CMK document ([`CmkSettings`]). The wrapped DEK record
//! itself stays in `backup_vaults.wrapped_key_json` and next to the data (`keys/`).

use std::{collections::BTreeMap, sync::Mutex};

use coffer_catalog::VaultRow;
use coffer_crypto::{
    DataKey, KeyWrapper, SecretKey, WrappedKey,
    wrap::{KekDescriptor, KekKind, WrapError},
};
use coffer_engine::Repository;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Error, ErrorCode, Instance, Result,
    resources::{KekIdentity, UserAssignedIdentityDetails},
    util,
};

/// The wrapping algorithm asked for (an HSM token without OAEP-SHA256 answers with `RSA-OAEP`).
pub(crate) const CMK_ALGORITHM: &str = "RSA-OAEP-256";
const SYSTEM: &str = "SystemAssigned";
const USER: &str = "UserAssigned";
const INCONSISTENT: &str = "Inconsistent";
const UAI_PROVIDER: &str = "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/";

/// Identity options of `backup-vault create` / `update`.
#[derive(Clone, Debug, Default)]
pub struct IdentityOptions {
    /// `--type`: `None`, `SystemAssigned`, `UserAssigned`, `SystemAssigned,UserAssigned`.
    pub identity_type: Option<String>,
    /// `--user-assigned-identities '{"<uami-arm-id>":{}}'`.
    pub user_assigned_identities: Option<String>,
}

/// Customer-managed-key options of `backup-vault create` / `update`.
#[derive(Clone, Debug, Default)]
pub struct CmkOptions {
    /// `--cmk-encryption-key-uri` (versioned or versionless).
    pub key_uri: Option<String>,
    /// `--cmk-encryption-state` (`Enabled`; `Disabled` is refused once enabled).
    pub state: Option<String>,
    /// `--cmk-identity-type` (`SystemAssigned` or `UserAssigned`).
    pub identity_type: Option<String>,
    /// `--cmk-user-assigned-identity-id`.
    pub user_assigned_identity_id: Option<String>,
    /// `--cmk-infrastructure-encryption` (`Enabled` only at creation, with CMK).
    pub infrastructure_encryption: Option<String>,
}

impl CmkOptions {
    fn is_empty(&self) -> bool {
        self.key_uri.is_none()
            && self.state.is_none()
            && self.identity_type.is_none()
            && self.user_assigned_identity_id.is_none()
            && self.infrastructure_encryption.is_none()
    }
}

/// Options of `backup-vault update`.
#[derive(Clone, Debug, Default)]
pub struct VaultUpdateOptions {
    /// Identity changes.
    pub identity: IdentityOptions,
    /// CMK changes.
    pub cmk: CmkOptions,
    /// `--force`: allow an identity change that cuts the vault off its key.
    pub force: bool,
}

/// The managed identities of a backup vault (catalog JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VaultIdentity {
    /// Principal id of the system-assigned identity, when enabled.
    #[serde(default)]
    pub(crate) system_principal_id: Option<String>,
    /// ARM ids of the attached user-assigned identities (canonical spelling).
    #[serde(default)]
    pub(crate) user_assigned: Vec<String>,
}

impl VaultIdentity {
    pub(crate) fn type_name(&self) -> &'static str {
        match (
            self.system_principal_id.is_some(),
            !self.user_assigned.is_empty(),
        ) {
            (true, true) => "SystemAssigned,UserAssigned",
            (true, false) => SYSTEM,
            (false, true) => USER,
            (false, false) => "None",
        }
    }
}

/// A vault's customer-managed-key settings (catalog JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CmkSettings {
    /// Key URI as given (versioned or versionless).
    pub(crate) key_uri: String,
    /// `SystemAssigned` or `UserAssigned`.
    pub(crate) identity_type: String,
    /// The user-assigned identity's ARM id (UserAssigned only).
    #[serde(default)]
    pub(crate) identity_id: Option<String>,
    /// Recorded at creation; the second encryption layer itself is future work.
    #[serde(default)]
    pub(crate) infrastructure_encryption: bool,
    /// Since when the key cannot be used, and why (absent while access works).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_access_lost: Option<KeyAccessLost>,
}

/// When and why a vault lost access to its customer-managed key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyAccessLost {
    /// RFC 3339 time of the first failure.
    pub(crate) since: String,
    /// The latest failure's code.
    pub(crate) error_code: String,
}

impl CmkSettings {
    pub(crate) fn kek_identity(&self) -> KekIdentity {
        KekIdentity {
            identity_type: self.identity_type.clone(),
            identity_id: self.identity_id.clone(),
        }
    }
}

fn cmk(code: ErrorCode, msg: impl Into<String>) -> Error {
    Error::new(code, msg)
}

/// Maps a key vault data-plane failure to the CMK code the seed names for it.
pub(crate) fn key_access_error(e: Error, key_uri: &str) -> Error {
    let code = match (e.code, e.inner_code.as_deref()) {
        (ErrorCode::Forbidden, Some("KeyDisabled" | "KeyExpired" | "KeyNotYetValid")) => {
            ErrorCode::CmkKeyDisabledOrExpired
        }
        // The key vault firewall: the key vault is unreachable for the vault.
        (ErrorCode::Forbidden, Some("ForbiddenByFirewall")) => ErrorCode::CmkKeyVaultAuthFailure,
        (ErrorCode::Forbidden, _) => ErrorCode::CmkMissingManagedIdentityPermission,
        (ErrorCode::KeyVaultNotFound | ErrorCode::KeyNotFound, _) => {
            ErrorCode::CmkKeyVaultAuthFailure
        }
        (ErrorCode::EncryptionKeyUnavailable | ErrorCode::BadParameter, _) => {
            ErrorCode::CmkKeyVaultAuthFailure
        }
        _ => return e,
    };
    let mut out = cmk(
        code,
        format!("customer-managed key {key_uri}: {}", e.message),
    );
    out.inner_code = e.inner_code.or_else(|| Some(e.code.as_str().to_owned()));
    out
}

/// Wraps and unwraps a vault's DEK with a key vault key, as the vault's identity.
pub(crate) struct CmkWrapper<'a> {
    inst: &'a Instance,
    principal: String,
    /// Key id to call (versioned for unwrap; may be versionless for wrap) and the
    /// descriptor of the last wrap (versioned kid, algorithm actually used).
    kek: Mutex<KekDescriptor>,
}

impl<'a> CmkWrapper<'a> {
    pub(crate) fn new(inst: &'a Instance, principal: &str, key_id: &str, alg: &str) -> Self {
        Self {
            inst,
            principal: principal.to_owned(),
            kek: Mutex::new(KekDescriptor {
                kind: KekKind::CustomerManaged,
                key_id: key_id.to_owned(),
                algorithm: alg.to_owned(),
            }),
        }
    }

    fn current(&self) -> KekDescriptor {
        self.kek.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn unavailable(e: Error) -> WrapError {
    WrapError::Unavailable {
        code: e.code.as_str(),
        message: e.message,
    }
}

impl KeyWrapper for CmkWrapper<'_> {
    fn describe(&self) -> KekDescriptor {
        self.current()
    }

    fn wrap(&self, dek: &DataKey, _context: &[u8]) -> Result<Vec<u8>, WrapError> {
        let d = self.current();
        let r = self
            .inst
            .key_vault_client()
            .wrap_key(
                &self.principal,
                &d.key_id,
                &d.algorithm,
                dek.secret().expose(),
            )
            .map_err(|e| unavailable(key_access_error(e, &d.key_id)))?;
        *self.kek.lock().unwrap_or_else(|p| p.into_inner()) = KekDescriptor {
            kind: KekKind::CustomerManaged,
            key_id: r.kid,
            algorithm: r.alg,
        };
        Ok(r.value)
    }

    fn unwrap(&self, wrapped: &[u8], _context: &[u8]) -> Result<DataKey, WrapError> {
        let d = self.current();
        let r = self
            .inst
            .key_vault_client()
            .unwrap_key(&self.principal, &d.key_id, &d.algorithm, wrapped)
            .map_err(|e| unavailable(key_access_error(e, &d.key_id)))?;
        Ok(DataKey::from_secret(SecretKey::from_slice(
            r.value.expose(),
        )?))
    }
}

/// What validation found about a key: enough to wrap with it.
struct ValidKey {
    principal: String,
}

/// RSA modulus size in bits of a public JWK (`n`, base64url).
fn rsa_bits(jwk: &Value) -> Option<usize> {
    let n = coffer_keyvault::from_b64url(jwk["n"].as_str()?.trim_end_matches('=')).ok()?;
    let lead = n.iter().take_while(|b| **b == 0).count();
    let n = &n[lead..];
    let first = *n.first()?;
    Some((n.len() - 1) * 8 + (8 - first.leading_zeros() as usize))
}

/// Whether an RSA size is accepted for CMK.
pub(crate) fn supported_rsa_size(bits: usize) -> bool {
    matches!(bits, 2048 | 3072 | 4096)
}

fn canonical_choice(flag: &str, value: &str, options: &[&str]) -> Result<String> {
    options
        .iter()
        .find(|o| o.eq_ignore_ascii_case(value.trim()))
        .map(|o| (*o).to_owned())
        .ok_or_else(|| {
            Error::invalid(format!(
                "{flag} must be one of {}, not {value:?}",
                options.join(", ")
            ))
        })
}

impl Instance {
    // ------------------------------------------------------------- settings

    pub(crate) fn vault_identity(&self, guid: &str) -> Result<VaultIdentity> {
        let s = self.catalog.vault_settings(guid)?;
        Ok(serde_json::from_str(&s.identity_json).unwrap_or_default())
    }

    pub(crate) fn vault_cmk(&self, guid: &str) -> Result<Option<CmkSettings>> {
        let s = self.catalog.vault_settings(guid)?;
        Ok(s.encryption_json
            .and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// `identity` of a vault as shown.
    pub(crate) fn identity_resource(&self, id: &VaultIdentity) -> crate::resources::Identity {
        let mut uai = BTreeMap::new();
        for arm in &id.user_assigned {
            let p = self.user_identity_by_arm_id(arm).ok();
            uai.insert(
                arm.clone(),
                UserAssignedIdentityDetails {
                    principal_id: p.as_ref().map(|p| p.principal_id.clone()),
                    client_id: p.map(|p| p.client_id),
                },
            );
        }
        let any = id.system_principal_id.is_some() || !uai.is_empty();
        crate::resources::Identity {
            identity_type: id.type_name().to_owned(),
            principal_id: id.system_principal_id.clone(),
            tenant_id: any.then(|| self.row.tenant_id.clone()),
            user_assigned_identities: (!uai.is_empty()).then_some(uai),
        }
    }

    /// The user-assigned identity named by an ARM id.
    fn user_identity_by_arm_id(&self, arm: &str) -> Result<coffer_catalog::PrincipalRow> {
        let not_found = || {
            Error::new(
                ErrorCode::IdentityNotFound,
                format!("user-assigned identity '{arm}' does not exist"),
            )
        };
        let lower = arm.trim().to_ascii_lowercase();
        let (head, name) = lower
            .split_once(&UAI_PROVIDER.to_ascii_lowercase())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "'{arm}' is not a user-assigned identity id \
                     (/subscriptions/SUB/resourceGroups/RG{UAI_PROVIDER}NAME)"
                ))
            })?;
        let group = head
            .split_once("/resourcegroups/")
            .map(|(_, g)| g)
            .filter(|g| !g.is_empty() && !g.contains('/'))
            .ok_or_else(not_found)?;
        if name.is_empty() || name.contains('/') {
            return Err(not_found());
        }
        self.catalog
            .user_identity(group, name)?
            .ok_or_else(not_found)
    }

    fn canonical_uai_id(&self, arm: &str) -> Result<String> {
        let p = self.user_identity_by_arm_id(arm)?;
        Ok(self.identity_id(
            p.resource_group.as_deref().unwrap_or_default(),
            p.name.as_deref().unwrap_or_default(),
        ))
    }

    /// The identity document a request asks for (nothing is created yet).
    fn requested_identity(
        &self,
        current: &VaultIdentity,
        o: &IdentityOptions,
    ) -> Result<VaultIdentity> {
        let Some(t) = &o.identity_type else {
            if o.user_assigned_identities.is_some() {
                return Err(Error::invalid(
                    "--user-assigned-identities needs --type UserAssigned or \"SystemAssigned,UserAssigned\"",
                ));
            }
            return Ok(current.clone());
        };
        let t = canonical_choice(
            "--type",
            &t.replace(' ', ""),
            &["None", SYSTEM, USER, "SystemAssigned,UserAssigned"],
        )?;
        let system = t.contains(SYSTEM);
        let user = t.contains(USER);
        let mut out = VaultIdentity {
            system_principal_id: if system {
                current
                    .system_principal_id
                    .clone()
                    .or_else(|| Some(String::new()))
            } else {
                None
            },
            user_assigned: Vec::new(),
        };
        if user {
            match &o.user_assigned_identities {
                Some(j) => {
                    let m: serde_json::Map<String, Value> = serde_json::from_str(j)
                        .map_err(|_| {
                            Error::invalid(
                                "--user-assigned-identities must be a JSON object: '{\"<identity-id>\":{}}'",
                            )
                        })?;
                    for k in m.keys() {
                        let id = self.canonical_uai_id(k)?;
                        if !out.user_assigned.contains(&id) {
                            out.user_assigned.push(id);
                        }
                    }
                }
                None => out.user_assigned = current.user_assigned.clone(),
            }
            if out.user_assigned.is_empty() {
                return Err(Error::invalid(
                    "--type UserAssigned needs --user-assigned-identities '{\"<identity-id>\":{}}'",
                ));
            }
        } else if o.user_assigned_identities.is_some() {
            return Err(Error::invalid(format!(
                "--user-assigned-identities is not allowed with --type {t}"
            )));
        }
        Ok(out)
    }

    /// Stores an identity document, creating or deleting the system-assigned principal.
    fn persist_identity(&self, v: &VaultRow, mut id: VaultIdentity) -> Result<VaultIdentity> {
        let owner = self.vault_id(v);
        match &id.system_principal_id {
            Some(p) if p.is_empty() => {
                id.system_principal_id = Some(self.ensure_system_identity(&owner)?);
            }
            Some(_) => {}
            None => {
                self.delete_system_identity(&owner)?;
            }
        }
        self.catalog.set_vault_identity(
            &v.guid,
            &serde_json::to_string(&id).map_err(|e| Error::internal(e.to_string()))?,
        )?;
        Ok(id)
    }

    // ------------------------------------------------------------ CMK rules

    /// The CMK settings a request asks for, checking the rules that need no key
    /// vault. `None`: the request leaves encryption as it is.
    fn requested_cmk(
        current: Option<&CmkSettings>,
        o: &CmkOptions,
        creating: bool,
    ) -> Result<Option<CmkSettings>> {
        if o.is_empty() {
            return Ok(None);
        }
        let state = o
            .state
            .as_deref()
            .map(|s| canonical_choice("--cmk-encryption-state", s, &["Enabled", "Disabled"]))
            .transpose()?;
        let infra = o
            .infrastructure_encryption
            .as_deref()
            .map(|s| {
                canonical_choice(
                    "--cmk-infrastructure-encryption",
                    s,
                    &["Enabled", "Disabled"],
                )
                .map(|s| s == "Enabled")
            })
            .transpose()?;
        if state.as_deref() == Some("Disabled") {
            if current.is_some() {
                return Err(cmk(
                    ErrorCode::CmkCannotRevertToPlatformKey,
                    "encryption with a customer-managed key cannot be turned off: a vault \
                     never returns to the platform-managed key; change the key or the identity instead",
                ));
            }
            if infra == Some(true) {
                return Err(infra_only_at_creation());
            }
            if o.key_uri.is_some() || o.identity_type.is_some() {
                return Err(Error::invalid(
                    "--cmk-encryption-state Disabled cannot be combined with a key or an identity",
                ));
            }
            return Ok(None);
        }
        match (creating, current) {
            (true, _) | (false, None) => {
                if infra == Some(true) && !creating {
                    return Err(infra_only_at_creation());
                }
                if state.is_none() {
                    return Err(if infra == Some(true) {
                        infra_only_at_creation()
                    } else {
                        Error::invalid(
                            "enabling a customer-managed key needs --cmk-encryption-state Enabled",
                        )
                    });
                }
                let key_uri = o.key_uri.clone().ok_or_else(|| {
                    Error::invalid("enabling a customer-managed key needs --cmk-encryption-key-uri")
                })?;
                let identity_type = o.identity_type.as_deref().ok_or_else(|| {
                    Error::invalid("enabling a customer-managed key needs --cmk-identity-type")
                })?;
                let identity_type =
                    canonical_choice("--cmk-identity-type", identity_type, &[SYSTEM, USER])?;
                if creating && identity_type == SYSTEM {
                    return Err(cmk(
                        ErrorCode::CmkSystemAssignedIdentityNotAllowedAtCreation,
                        "a system-assigned identity cannot be used for the customer-managed key \
                         at vault creation (it does not exist yet): use a user-assigned identity, \
                         or create the vault, enable its system-assigned identity, grant it \
                         access and then update the encryption settings",
                    ));
                }
                let identity_id = Self::cmk_identity_id(&identity_type, o)?;
                Ok(Some(CmkSettings {
                    key_uri,
                    identity_type,
                    identity_id,
                    infrastructure_encryption: infra.unwrap_or(false),
                    key_access_lost: None,
                }))
            }
            (false, Some(cur)) => {
                if infra.is_some_and(|i| i != cur.infrastructure_encryption) {
                    return Err(infra_only_at_creation());
                }
                let key_uri = o.key_uri.clone().unwrap_or_else(|| cur.key_uri.clone());
                let (identity_type, identity_id) = match &o.identity_type {
                    Some(t) => {
                        let t = canonical_choice("--cmk-identity-type", t, &[SYSTEM, USER])?;
                        let id = Self::cmk_identity_id(&t, o)?;
                        (t, id)
                    }
                    None if o.user_assigned_identity_id.is_some() => {
                        (USER.to_owned(), Self::cmk_identity_id(USER, o)?)
                    }
                    None => (cur.identity_type.clone(), cur.identity_id.clone()),
                };
                let key_changed = key_uri != cur.key_uri;
                let identity_changed = identity_type != cur.identity_type
                    || !same_id(identity_id.as_deref(), cur.identity_id.as_deref());
                if key_changed && identity_changed {
                    return Err(cmk(
                        ErrorCode::CmkKeyAndIdentityUpdateInSameRequest,
                        "the key URI and the identity of the encryption settings cannot change in \
                         the same request: update one, then the other",
                    ));
                }
                Ok(Some(CmkSettings {
                    key_uri,
                    identity_type,
                    identity_id,
                    infrastructure_encryption: cur.infrastructure_encryption,
                    key_access_lost: None,
                }))
            }
        }
    }

    fn cmk_identity_id(identity_type: &str, o: &CmkOptions) -> Result<Option<String>> {
        match (identity_type, &o.user_assigned_identity_id) {
            (USER, Some(id)) => Ok(Some(id.trim().to_owned())),
            (USER, None) => Err(Error::invalid(
                "--cmk-identity-type UserAssigned needs --cmk-user-assigned-identity-id",
            )),
            (_, Some(_)) => Err(Error::invalid(
                "--cmk-user-assigned-identity-id is only for --cmk-identity-type UserAssigned",
            )),
            _ => Ok(None),
        }
    }

    /// The principal that uses the key for `s`, given the vault's identities.
    pub(crate) fn cmk_principal(&self, s: &CmkSettings, id: &VaultIdentity) -> Result<String> {
        let missing = |what: String| {
            cmk(
                ErrorCode::CmkMissingManagedIdentityPermission,
                format!(
                    "{what}; the customer-managed key {} cannot be used",
                    s.key_uri
                ),
            )
        };
        if s.identity_type == SYSTEM {
            return match id.system_principal_id.as_deref() {
                Some(p) if !p.is_empty() => {
                    if self.catalog.principal(p)?.is_some() {
                        Ok(p.to_owned())
                    } else {
                        Err(missing(
                            "the vault's system-assigned identity no longer exists".into(),
                        ))
                    }
                }
                Some(_) => Err(missing(
                    "the vault's system-assigned identity is being enabled in this request and \
                     has no key vault permission yet: enable it first, grant it access, then \
                     update the encryption settings"
                        .into(),
                )),
                None => Err(missing(
                    "the vault's system-assigned identity is not enabled (--type SystemAssigned)"
                        .into(),
                )),
            };
        }
        let want = s.identity_id.as_deref().unwrap_or_default();
        let attached = id
            .user_assigned
            .iter()
            .any(|a| same_id(Some(a), Some(want)));
        if !attached {
            return Err(missing(format!(
                "user-assigned identity '{want}' is not attached to the vault \
                 (--type UserAssigned --user-assigned-identities)"
            )));
        }
        match self.user_identity_by_arm_id(want) {
            Ok(p) => Ok(p.principal_id),
            Err(_) => Err(missing(format!(
                "user-assigned identity '{want}' no longer exists"
            ))),
        }
    }

    /// Checks the key vault and the key for CMK use by `principal` (no change made).
    fn validate_key(&self, s: &CmkSettings, principal: &str) -> Result<ValidKey> {
        let (kv_name, _key, _version) = self.parse_kid(&s.key_uri).map_err(|_| {
            cmk(
                ErrorCode::CmkInvalidKeyUri,
                format!(
                    "'{}' is not a key URI of the form https://VAULT.{}/keys/NAME[/VERSION] \
                     (or https://HSM.managedhsm.coffer.local/keys/NAME[/VERSION])",
                    s.key_uri,
                    crate::VAULT_DNS_SUFFIX
                ),
            )
        })?;
        let kv = self
            .live_vault(&kv_name)
            .map_err(|e| key_access_error(e, &s.key_uri))?;
        let props = self.vault_json(&kv)?["properties"].clone();
        if props["enableSoftDelete"] != Value::Bool(true) {
            return Err(cmk(
                ErrorCode::CmkSoftDeleteNotEnabledOnKeyVault,
                format!("soft delete is not enabled on key vault '{}'", kv.name),
            ));
        }
        if props["enablePurgeProtection"] != Value::Bool(true) {
            return Err(cmk(
                ErrorCode::CmkPurgeProtectionNotEnabledOnKeyVault,
                format!("purge protection is not enabled on key vault '{}'", kv.name),
            ));
        }
        if s.identity_type == USER
            && props["networkAcls"]["defaultAction"]
                .as_str()
                .is_some_and(|a| a.eq_ignore_ascii_case("Deny"))
        {
            return Err(cmk(
                ErrorCode::CmkUserAssignedIdentityWithRestrictedKeyVault,
                format!(
                    "key vault '{}' limits network access (defaultAction Deny), which a \
                     user-assigned identity cannot be used with for CMK",
                    kv.name
                ),
            ));
        }
        let bundle = self
            .key_vault_client()
            .get_key(principal, &s.key_uri)
            .map_err(|e| key_access_error(e, &s.key_uri))?;
        let kty = bundle["key"]["kty"].as_str().unwrap_or_default();
        if kty != "RSA" && kty != "RSA-HSM" {
            return Err(cmk(
                ErrorCode::CmkMissingManagedIdentityPermission,
                format!(
                    "key {} is of type {kty}: only RSA and RSA-HSM keys can wrap a vault's key",
                    s.key_uri
                ),
            ));
        }
        let bits = rsa_bits(&bundle["key"]).unwrap_or(0);
        if !supported_rsa_size(bits) {
            return Err(cmk(
                ErrorCode::CmkUnsupportedKeySize,
                format!(
                    "key {} has {bits} bits: use an RSA key of 2048, 3072 or 4096 bits",
                    s.key_uri
                ),
            ));
        }
        let a = &bundle["attributes"];
        let now = util::clock_ms() / 1000;
        let disabled = a["enabled"] == Value::Bool(false);
        let early = a["nbf"].as_i64().is_some_and(|n| now < n);
        let expired = a["exp"].as_i64().is_some_and(|e| now >= e);
        if disabled || early || expired {
            let why = if disabled {
                "disabled"
            } else if early {
                "not yet valid"
            } else {
                "expired"
            };
            return Err(cmk(
                ErrorCode::CmkKeyDisabledOrExpired,
                format!("key {} is {why}", s.key_uri),
            ));
        }
        Ok(ValidKey {
            principal: principal.to_owned(),
        })
    }

    /// Wraps `dek` with the key of `s` as `principal`, and proves the identity can
    /// unwrap it again. Returns the new record.
    fn cmk_seal(
        &self,
        v_guid: &str,
        s: &CmkSettings,
        k: &ValidKey,
        dek: &DataKey,
    ) -> Result<WrappedKey> {
        let w = CmkWrapper::new(self, &k.principal, &s.key_uri, CMK_ALGORITHM);
        let rec = WrappedKey::seal(&w, dek, v_guid, util::now_rfc3339())?;
        let back = CmkWrapper::new(self, &k.principal, &rec.kek.key_id, &rec.kek.algorithm);
        if rec.open(&back)? != *dek {
            return Err(Error::internal(
                "the customer-managed key did not unwrap what it wrapped",
            ));
        }
        Ok(rec)
    }

    // -------------------------------------------------------------- flows

    /// Creation with identities and CMK: validates, then returns what to store.
    pub(crate) fn prepare_create_settings(
        &self,
        identity: &IdentityOptions,
        cmk_opts: &CmkOptions,
        dek: &DataKey,
        guid: &str,
    ) -> Result<(VaultIdentity, Option<(CmkSettings, WrappedKey)>)> {
        let id = self.requested_identity(&VaultIdentity::default(), identity)?;
        let Some(s) = Self::requested_cmk(None, cmk_opts, true)? else {
            return Ok((id, None));
        };
        let principal = self.cmk_principal(&s, &id)?;
        let k = self.validate_key(&s, &principal)?;
        let rec = self.cmk_seal(guid, &s, &k, dek)?;
        Ok((id, Some((s, rec))))
    }

    /// Stores the settings of a newly created vault.
    pub(crate) fn store_create_settings(
        &self,
        v: &VaultRow,
        id: VaultIdentity,
        cmk: Option<&CmkSettings>,
    ) -> Result<()> {
        self.persist_identity(v, id)?;
        if let Some(s) = cmk {
            self.catalog.set_vault_encryption(
                &v.guid,
                &v.wrapped_key_json,
                &v.encryption_state,
                &serde_json::to_string(s).map_err(|e| Error::internal(e.to_string()))?,
            )?;
        }
        Ok(())
    }

    /// `coffer backup-vault update`: identities and encryption settings. Every rule
    /// is checked before anything changes.
    pub fn update_vault(
        &self,
        rg: &str,
        name: &str,
        o: VaultUpdateOptions,
    ) -> Result<crate::resources::BackupVaultResource> {
        let v = self.vault_for(rg, name, crate::vaults::action::VAULT_WRITE)?;
        // Key changes of one vault are serialised; the row is re-read under the lock.
        let r = self.kek_lock(&v.guid).and_then(|_lock| {
            let v = self.vault_row(rg, name)?;
            self.update_vault_inner(&v, &o)
        });
        self.audit_method(
            "Microsoft.DataProtection/backupVaults/write",
            "PATCH",
            &self.vault_id(&v),
            &r,
        );
        r
    }

    fn update_vault_inner(
        &self,
        v: &VaultRow,
        o: &VaultUpdateOptions,
    ) -> Result<crate::resources::BackupVaultResource> {
        let cur_id = self.vault_identity(&v.guid)?;
        // Health is not a setting: an update that names the same key and identity is
        // "no change" even while access is lost.
        let cur_cmk = self.vault_cmk(&v.guid)?.map(|mut c| {
            c.key_access_lost = None;
            c
        });
        let new_id = self.requested_identity(&cur_id, &o.identity)?;
        let new_cmk = Self::requested_cmk(cur_cmk.as_ref(), &o.cmk, false)?;
        let plan = match &new_cmk {
            Some(s) if Some(s) != cur_cmk.as_ref() => {
                let principal = self.cmk_principal(s, &new_id)?;
                let k = self.validate_key(s, &principal)?;
                // The DEK comes from the current KEK (PMK, or the old key as the old identity).
                let dek = self.unwrap_dek(v)?;
                let rec = self.cmk_seal(&v.guid, s, &k, &dek)?;
                Some((s.clone(), rec))
            }
            _ => None,
        };
        if let (Some(cur), None, false) = (&cur_cmk, &plan, o.force) {
            let before = self.cmk_principal(cur, &cur_id).ok();
            let cuts_off = before.is_some() && before != self.cmk_principal(cur, &new_id).ok();
            if new_id != cur_id && cuts_off {
                return Err(cmk(
                    ErrorCode::CmkIdentityInUseForEncryption,
                    format!(
                        "the {} identity is used for the vault's customer-managed key: without \
                         it backups, restores and deletions fail until access is restored. \
                         Change the encryption identity first, or pass --force",
                        cur.identity_type
                    ),
                ));
            }
        }
        if new_id != cur_id {
            self.persist_identity(v, new_id)?;
        }
        match plan {
            Some((s, rec)) => self.switch_kek(v, &s, &rec)?,
            // Retrying an update that stopped after the catalog switch: finish it.
            None if v.encryption_state == INCONSISTENT && cur_cmk.is_some() => {
                let rec = WrappedKey::from_json(v.wrapped_key_json.as_bytes())?;
                self.finish_switch(v, &rec)?;
            }
            None => {}
        }
        let v = self.vault_row(&v.resource_group, &v.name)?;
        Ok(self.vault_resource(&v))
    }

    /// Replaces the vault's wrapped DEK. The vault is marked `Inconsistent` first; the
    /// new record is written next to the data; the catalog switches (record, settings)
    /// in one transaction; older records are removed from storage; only then is the
    /// state `Enabled`. A failure at any step leaves `Inconsistent` with a record that
    /// still opens the vault (jobs keep working); retrying the same update repairs it.
    fn switch_kek(&self, v: &VaultRow, s: &CmkSettings, rec: &WrappedKey) -> Result<()> {
        let settings = serde_json::to_string(s).map_err(|e| Error::internal(e.to_string()))?;
        self.catalog
            .set_vault_wrapped_key(&v.guid, &v.wrapped_key_json, INCONSISTENT)?;
        failpoint("cmk-after-mark-inconsistent")?;
        let store = self.open_store(v)?;
        Repository::write_wrapped_key(store.as_ref(), rec)?;
        failpoint("cmk-after-storage-write")?;
        self.catalog
            .set_vault_encryption(&v.guid, &rec.to_json(), INCONSISTENT, &settings)?;
        failpoint("cmk-after-catalog-switch")?;
        self.finish_switch(v, rec)
    }

    /// Removes every stored record but `rec` and marks the vault `Enabled`.
    fn finish_switch(&self, v: &VaultRow, rec: &WrappedKey) -> Result<()> {
        let store = self.open_store(v)?;
        for old in Repository::read_wrapped_keys(store.as_ref())? {
            if old.kek.key_id != rec.kek.key_id {
                Repository::remove_wrapped_key(store.as_ref(), &old.kek.key_id)?;
            }
        }
        self.catalog
            .set_vault_wrapped_key(&v.guid, &rec.to_json(), "Enabled")?;
        Ok(())
    }

    /// Autorotation: when the vault's key URI is versionless and the key's current
    /// version is not the one that wraps the DEK, rewraps the DEK with the current
    /// version (the old version must still unwrap). Returns the updated row, `None`
    /// when nothing had to change. A rewrap (or a failed attempt at one) is a vault
    /// write in the activity log, made by the vault's identity.
    pub(crate) fn autorotate(&self, v: &VaultRow) -> Result<Option<VaultRow>> {
        let Some(s) = self.vault_cmk(&v.guid)? else {
            return Ok(None);
        };
        if self
            .parse_kid(&s.key_uri)
            .map(|(_, _, ver)| ver.is_some())?
        {
            return Ok(None);
        }
        let Ok(rec) = WrappedKey::from_json(v.wrapped_key_json.as_bytes()) else {
            return Ok(None);
        };
        let principal = self.cmk_principal(&s, &self.vault_identity(&v.guid)?)?;
        let bundle = self
            .key_vault_client()
            .get_key(&principal, &s.key_uri)
            .map_err(|e| key_access_error(e, &s.key_uri))?;
        let Some(current) = bundle["key"]["kid"].as_str() else {
            return Ok(None);
        };
        if current == rec.kek.key_id {
            return Ok(None);
        }
        let r = self.rewrap_to(v, &s, &principal, current);
        self.audit_as(
            &principal,
            "Microsoft.DataProtection/backupVaults/write",
            "PATCH",
            &self.vault_id(v),
            &r,
        );
        r.map(Some)
    }

    /// Rewraps vault `v`'s DEK with key version `current` of its settings' key.
    fn rewrap_to(
        &self,
        v: &VaultRow,
        s: &CmkSettings,
        principal: &str,
        current: &str,
    ) -> Result<VaultRow> {
        // Another process may be rotating the same vault: decide again under the lock.
        let _lock = self.kek_lock(&v.guid)?;
        let v = self.vault_by_guid(&v.guid)?;
        let rec = WrappedKey::from_json(v.wrapped_key_json.as_bytes())?;
        if current == rec.kek.key_id {
            return Ok(v);
        }
        let k = self.validate_key(s, principal)?;
        let dek = self.unwrap_dek(&v)?;
        let new = self.cmk_seal(&v.guid, s, &k, &dek)?;
        self.switch_kek(&v, s, &new)?;
        self.vault_by_guid(&v.guid)
    }

    fn vault_by_guid(&self, guid: &str) -> Result<VaultRow> {
        self.catalog.vault_by_guid(guid)?.ok_or_else(|| {
            Error::new(
                ErrorCode::BackupVaultNotFound,
                format!("backup vault {guid} no longer exists"),
            )
        })
    }

    /// Takes the exclusive lock that serialises key changes of vault `guid`
    /// (`HOME/locks/{guid}.kek.lock`; released when the returned file is dropped).
    fn kek_lock(&self, guid: &str) -> Result<std::fs::File> {
        let path = self.home.join("locks").join(format!("{guid}.kek.lock"));
        let io = |e: std::io::Error| {
            crate::error::io_error(
                ErrorCode::StorageError,
                &format!("cannot lock {}", path.display()),
                &e,
            )
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        f.lock().map_err(io)?;
        Ok(f)
    }

    /// The vault `name` of group `rg`, after autorotating its key if a new version
    /// is there (best effort: when the new version cannot be used yet, the vault
    /// keeps working with the version that wraps its DEK now). Every job and
    /// `show` goes through here.
    pub(crate) fn vault_row_current(&self, rg: &str, name: &str) -> Result<VaultRow> {
        let v = self.vault_row(rg, name)?;
        Ok(self.autorotate(&v).ok().flatten().unwrap_or(v))
    }

    /// Refuses (`UserErrorCMKIdentityInUseForEncryption`) when `principal` is the
    /// user-assigned identity some vault's customer-managed key is used through.
    pub(crate) fn refuse_if_encryption_identity(&self, principal: &str) -> Result<()> {
        for v in self.catalog.vaults(None)? {
            let Some(s) = self.vault_cmk(&v.guid)? else {
                continue;
            };
            if s.identity_type != USER {
                continue;
            }
            let id = self.vault_identity(&v.guid)?;
            if self.cmk_principal(&s, &id).is_ok_and(|p| p == principal) {
                return Err(cmk(
                    ErrorCode::CmkIdentityInUseForEncryption,
                    format!(
                        "backup vault '{}' (group '{}') uses this identity for its \
                         customer-managed key: deleting it makes its backups, restores and \
                         deletions fail. Change the vault's encryption identity first, or \
                         pass --force",
                        v.name, v.resource_group
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Refuses (`UserErrorCMKIdentityInUseForEncryption`, unless `force`) a key vault
    /// permission change that would cut a backup vault off its customer-managed key:
    /// a vault whose identity can now get, wrap and unwrap with its key, and could not
    /// once key vault `kv_guid` reads `after(kv)` and the role assignments `removed`
    /// are gone. Nothing is changed here; the caller makes the change after.
    pub(crate) fn refuse_if_cuts_off_cmk(
        &self,
        kv_guid: Option<&str>,
        after: &dyn Fn(&coffer_catalog::KeyVaultRow) -> coffer_catalog::KeyVaultRow,
        removed: &[String],
        force: bool,
    ) -> Result<()> {
        if force {
            return Ok(());
        }
        let can_use = |principal: &str, kv: &coffer_catalog::KeyVaultRow, key: &str| {
            self.as_trusted_service(|| {
                ["get", "wrapKey", "unwrapKey"]
                    .iter()
                    .all(|p| self.authorize_key(principal, kv, Some(key), p).is_ok())
            })
        };
        for v in self.catalog.vaults(None)? {
            let Some(s) = self.vault_cmk(&v.guid)? else {
                continue;
            };
            let Ok(principal) = self.cmk_principal(&s, &self.vault_identity(&v.guid)?) else {
                continue;
            };
            let Ok((kv_name, key, _)) = self.parse_kid(&s.key_uri) else {
                continue;
            };
            let Ok(kv) = self.live_vault(&kv_name) else {
                continue;
            };
            if kv_guid.is_some_and(|g| g != kv.guid) || !can_use(&principal, &kv, &key) {
                continue;
            }
            let still = {
                let _what_if = self.rbac_what_if(removed);
                can_use(&principal, &after(&kv), &key)
            };
            if !still {
                return Err(cmk(
                    ErrorCode::CmkIdentityInUseForEncryption,
                    format!(
                        "backup vault '{}' (group '{}') uses key '{key}' of key vault '{}' through \
                         identity {principal}: after this change that identity could no longer \
                         get, wrap and unwrap with it, and the vault's backups, restores and \
                         deletions would fail. Give the identity access another way first, or \
                         pass --force",
                        v.name, v.resource_group, kv.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `coffer activity-log list`: the activity log, newest first, optionally of one
    /// resource (and the resources below it).
    pub fn list_activity(&self, resource_id: Option<&str>) -> Result<Vec<Value>> {
        // Authorised where the caller looks: one resource (and below), or everything.
        let scope = resource_id.map_or_else(|| self.subscription_scope(), str::to_owned);
        self.authorize_action(&scope, "Microsoft.Insights/eventtypes/values/read")?;
        let want = resource_id.map(|r| r.trim().trim_end_matches('/').to_ascii_lowercase());
        Ok(self
            .catalog
            .activity(10_000)?
            .into_iter()
            .filter(|a| {
                want.as_deref().is_none_or(|w| {
                    let id = a.resource_id.to_ascii_lowercase();
                    id == w || id.starts_with(&format!("{w}/"))
                })
            })
            .map(|a| {
                serde_json::json!({
                    "eventTimestamp": util::rfc3339_ms(a.time_ms),
                    "caller": a.principal,
                    "operationName": {"value": a.operation},
                    "httpMethod": a.http_method,
                    "status": {"value": a.status},
                    "subStatus": {"value": a.error_code},
                    "resourceId": a.resource_id,
                    "correlationId": a.correlation_id,
                })
            })
            .collect())
    }

    /// Records the outcome of using the vault's customer-managed key: the first
    /// failure with a `UserErrorCMK…` code starts `KeyAccessLost`, a success ends it.
    /// Best effort (the caller's own result is what matters).
    pub(crate) fn note_key_access<T>(&self, v: &VaultRow, r: &Result<T>) {
        let Ok(Some(mut s)) = self.vault_cmk(&v.guid) else {
            return;
        };
        let lost = match r {
            Ok(_) => None,
            Err(e) if e.code.as_str().starts_with("UserErrorCMK") => Some(KeyAccessLost {
                since: s
                    .key_access_lost
                    .as_ref()
                    .map_or_else(util::now_rfc3339, |l| l.since.clone()),
                error_code: e.code.as_str().to_owned(),
            }),
            Err(_) => return,
        };
        if lost != s.key_access_lost {
            s.key_access_lost = lost;
            if let Ok(j) = serde_json::to_string(&s) {
                let _ = self.catalog.set_vault_encryption_settings(&v.guid, &j);
            }
        }
    }

    /// The wrapper that unwraps a CMK record of vault `v`, as its configured identity.
    pub(crate) fn cmk_wrapper_for(&self, v: &VaultRow, rec: &WrappedKey) -> Result<CmkWrapper<'_>> {
        let s = self.vault_cmk(&v.guid)?.ok_or_else(|| {
            Error::new(
                ErrorCode::EncryptionKeyUnavailable,
                "the vault's data encryption key is wrapped by a customer-managed key but the \
                 vault has no encryption settings",
            )
        })?;
        let principal = self.cmk_principal(&s, &self.vault_identity(&v.guid)?)?;
        Ok(CmkWrapper::new(
            self,
            &principal,
            &rec.kek.key_id,
            &rec.kek.algorithm,
        ))
    }
}

/// A step of a key change where tests can stop it as an internal error would: the
/// `fail` crate's fail point `name`, compiled in only with the `failpoints` feature
/// and armed by `FAILPOINTS=name=return` (`cmk-after-mark-inconsistent`,
/// `cmk-after-storage-write`, `cmk-after-catalog-switch`).
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn failpoint(name: &str) -> Result<()> {
    fail::fail_point!(name, |_| Err(Error::internal(format!(
        "stopped at fail point {name}"
    ))));
    Ok(())
}

fn infra_only_at_creation() -> Error {
    cmk(
        ErrorCode::CmkInfrastructureEncryptionOnlyAtCreation,
        "infrastructure encryption can only be set when the vault is created, together with a \
         customer-managed key",
    )
}

fn same_id(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.trim().eq_ignore_ascii_case(b.trim()),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_sizes() {
        assert!(supported_rsa_size(2048) && supported_rsa_size(3072) && supported_rsa_size(4096));
        assert!(!supported_rsa_size(1024) && !supported_rsa_size(8192));
        // 0x80 followed by 255 bytes: 2048 bits; a leading zero byte is ignored.
        let mut n = vec![0u8, 0x80];
        n.extend(std::iter::repeat_n(1u8, 255));
        let jwk = serde_json::json!({
            "n": coffer_keyvault::b64url(&n)
        });
        assert_eq!(rsa_bits(&jwk), Some(2048));
    }
}

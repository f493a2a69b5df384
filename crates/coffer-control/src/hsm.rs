//! PKCS#11 tokens of managed HSMs (every key in the token, managed-HSM local RBAC at
//! scope `/` or `/keys/NAME`) and of premium key vaults (`RSA-HSM` / `EC-HSM` keys in
//! the token next to software keys, authorised by the vault's access policies or
//! RBAC), and the [`Material`] a data-plane operation runs on (sealed software key or
//! token key). Which one a version uses is decided by its `kty` alone.
//!
//! RSA-OAEP-256 needs token support; SoftHSM2 2.6.1 lacks it. When the token lacks
//! it, a wrap asked for `RSA-OAEP-256` is made with `RSA-OAEP` (SHA-1) and the
//! algorithm used is returned with the result (`KeyOperationResult::alg`).

use std::path::PathBuf;

use coffer_catalog::{KeyVaultRow, KeyVersionRow};
use coffer_crypto::SecretBytes;
use coffer_keyvault::{
    EncryptionAlgorithm, JsonWebKey, PrivateKey, SignatureAlgorithm,
    hsm::{self, Hsm, HsmConfig},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Error, ErrorCode, Instance, KeyVaultOptions, Result,
    keyvault::{KeyAttrs, KeySpec, bad, forbidden, kv_err, rbac_denied},
};

/// A vault's token, as stored in its properties (no secret: the PIN stays in its file).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HsmProps {
    module: PathBuf,
    token_label: String,
    pin_file: PathBuf,
    oaep_sha256_supported: bool,
}

impl HsmProps {
    /// Opens the token once (the PIN must work) and records where it is and whether
    /// it decrypts RSA-OAEP-256.
    fn probe(token: HsmConfig) -> Result<Self> {
        let hsm = Hsm::open(&token).map_err(kv_err)?;
        Ok(Self {
            module: std::path::absolute(&token.module).unwrap_or(token.module),
            token_label: token.token_label,
            pin_file: std::path::absolute(&token.pin_file).unwrap_or(token.pin_file),
            oaep_sha256_supported: hsm.supports_oaep_sha256(),
        })
    }
}

/// The key a data-plane operation uses.
pub(crate) enum Material {
    /// A software key, unsealed for this operation.
    Soft(PrivateKey),
    /// A key pair in a token: its `CKA_ID` and public JWK.
    Hsm(Box<(Hsm, Vec<u8>, JsonWebKey)>),
}

impl Material {
    /// Encrypts (wrapKey/encrypt); returns the ciphertext and the algorithm used.
    pub(crate) fn encrypt(
        &self,
        alg: EncryptionAlgorithm,
        plain: &[u8],
    ) -> coffer_keyvault::Result<(Vec<u8>, EncryptionAlgorithm)> {
        match self {
            Self::Soft(k) => Ok((k.encrypt(alg, plain)?, alg)),
            Self::Hsm(b) => {
                let (h, _, jwk) = &**b;
                let alg = if h.supports_oaep_sha256() {
                    alg
                } else {
                    EncryptionAlgorithm::RsaOaep
                };
                Ok((hsm::public_encrypt(jwk, alg, plain)?, alg))
            }
        }
    }

    /// Decrypts (unwrapKey/decrypt).
    pub(crate) fn decrypt(
        &self,
        alg: EncryptionAlgorithm,
        c: &[u8],
    ) -> coffer_keyvault::Result<SecretBytes> {
        match self {
            Self::Soft(k) => k.decrypt(alg, c),
            Self::Hsm(b) => {
                hsm::need_rsa_key(&b.2, "decrypt")?;
                b.0.decrypt(&b.1, alg, c)
            }
        }
    }

    /// Signs a digest.
    pub(crate) fn sign(
        &self,
        alg: SignatureAlgorithm,
        d: &[u8],
    ) -> coffer_keyvault::Result<Vec<u8>> {
        match self {
            Self::Soft(k) => k.sign(alg, d),
            Self::Hsm(b) => match b.2.crv {
                Some(_) => b.0.sign_ec(&b.1, hsm::jwk_curve(&b.2)?, alg, d),
                None => b.0.sign_rsa(&b.1, alg, d),
            },
        }
    }

    /// Verifies a signature over a digest.
    pub(crate) fn verify(
        &self,
        alg: SignatureAlgorithm,
        d: &[u8],
        s: &[u8],
    ) -> coffer_keyvault::Result<bool> {
        match self {
            Self::Soft(k) => k.verify(alg, d, s),
            Self::Hsm(b) => match b.2.crv {
                Some(_) => b.0.verify_ec(&b.1, hsm::jwk_curve(&b.2)?, alg, d, s),
                None => hsm::public_verify(&b.2, alg, d, s),
            },
        }
    }

    /// The public key as PEM.
    pub(crate) fn public_pem(&self) -> coffer_keyvault::Result<String> {
        match self {
            Self::Soft(k) => k.public_pem(),
            Self::Hsm(b) => hsm::public_pem(&b.2),
        }
    }
}

/// Managed-HSM local data action of a key permission.
fn hsm_data_action(permission: &str) -> String {
    let a = match permission {
        "get" | "list" => "keys/read/action",
        "wrapKey" => "keys/wrap/action",
        "unwrapKey" => "keys/unwrap/action",
        "encrypt" | "decrypt" | "sign" | "verify" | "import" | "backup" | "restore" | "release" => {
            return format!("Microsoft.KeyVault/managedHsm/keys/{permission}/action");
        }
        "create" | "rotate" => "keys/create",
        "update" | "setrotationpolicy" => "keys/write/action",
        "getrotationpolicy" => "keys/read/action",
        "delete" => "keys/delete",
        "recover" => "keys/deletedKeys/recover/action",
        "purge" => "keys/deletedKeys/delete",
        _ => "keys/unknown",
    };
    format!("Microsoft.KeyVault/managedHsm/{a}")
}

const ROLE_WRITE: &str = "Microsoft.KeyVault/managedHsm/roleAssignments/write/action";

impl Instance {
    pub(crate) fn is_hsm(v: &KeyVaultRow) -> bool {
        v.kind == "managedHSM"
    }

    /// Whether HSM key types can be created in `v` (a managed HSM, or a premium key
    /// vault configured with a token).
    pub(crate) fn has_token(v: &KeyVaultRow) -> Result<bool> {
        Ok(Self::props(v)?.hsm.is_some())
    }

    fn open_hsm(v: &KeyVaultRow) -> Result<Hsm> {
        let p = Self::props(v)?.hsm.ok_or_else(|| {
            Error::new(
                ErrorCode::CatalogError,
                format!(
                    "vault '{}' holds HSM keys but has no PKCS#11 token configuration",
                    v.name
                ),
            )
        })?;
        // The probe made at creation is recorded: no throw-away key pair per operation.
        let cfg = HsmConfig {
            module: p.module,
            token_label: p.token_label,
            pin_file: p.pin_file,
        };
        // A vault's token that cannot be opened now (module, label, PIN file) makes its
        // HSM keys unavailable, whatever the reason.
        Hsm::open_probed(&cfg, p.oaep_sha256_supported).map_err(|e| {
            Error::new(
                ErrorCode::EncryptionKeyUnavailable,
                format!(
                    "the PKCS#11 token of vault '{}' cannot be used: {e}",
                    v.name
                ),
            )
        })
    }

    /// The key material of a version: unsealed software key, or a token reference.
    pub(crate) fn open_material(&self, v: &KeyVaultRow, row: &KeyVersionRow) -> Result<Material> {
        if !row.kty.ends_with("-HSM") {
            return Ok(Material::Soft(self.open_private(v, row)?));
        }
        let id = hex::decode(&row.version).map_err(|_| Error::internal("malformed key version"))?;
        let jwk = Self::public_jwk(row)?;
        Ok(Material::Hsm(Box::new((Self::open_hsm(v)?, id, jwk))))
    }

    /// Generates a new version of `name` inside the vault's token (`RSA-HSM` or `EC-HSM`).
    pub(crate) fn create_hsm_version(
        &self,
        v: &KeyVaultRow,
        name: &str,
        spec: KeySpec,
        mut attrs: KeyAttrs,
    ) -> Result<KeyVersionRow> {
        let version = uuid::Uuid::new_v4().simple().to_string();
        let id = hex::decode(&version).map_err(|_| Error::internal("malformed key version"))?;
        let hsm = Self::open_hsm(v)?;
        let jwk = match spec {
            KeySpec::Rsa(bits) => hsm.generate_rsa(bits, &id),
            KeySpec::Ec(curve) => hsm.generate_ec(curve, &id),
        }
        .map_err(kv_err)?;
        if attrs.key_ops.is_empty() {
            attrs.key_ops = Self::default_ops(matches!(spec, KeySpec::Ec(_)));
        }
        let canonical = self.canonical_key_name(v, name)?;
        self.store_public_version(v, &canonical, version, &jwk, Vec::new(), attrs)
    }

    /// Destroys a key's material (token objects of HSM versions) and its catalog rows.
    pub(crate) fn purge_key_material(&self, v: &KeyVaultRow, name: &str) -> Result<()> {
        let versions = self.catalog.key_versions(&v.guid, name)?;
        if versions.iter().any(|r| r.kty.ends_with("-HSM")) {
            let hsm = Self::open_hsm(v)?;
            for r in versions.iter().filter(|r| r.kty.ends_with("-HSM")) {
                if let Ok(id) = hex::decode(&r.version) {
                    hsm.destroy(&id).map_err(kv_err)?;
                }
            }
        }
        Ok(self.catalog.purge_key(&v.guid, name)?)
    }

    /// Destroys every key of a vault, then the vault.
    pub(crate) fn purge_vault_material(&self, v: &KeyVaultRow) -> Result<()> {
        for k in self.catalog.keys(Some(&v.guid))? {
            self.purge_key_material(v, &k.name)?;
        }
        Ok(self.catalog.purge_key_vault(&v.guid)?)
    }

    /// Local RBAC check of a managed HSM.
    pub(crate) fn authorize_hsm(
        &self,
        principal: &str,
        v: &KeyVaultRow,
        key: Option<&str>,
        permission: &str,
    ) -> Result<()> {
        let scope = key.map_or_else(|| "/".to_owned(), |k| format!("/keys/{k}"));
        let action = hsm_data_action(permission);
        if self.rbac_allows(principal, &scope, &action, true, Some(&v.guid))? {
            return Ok(());
        }
        Err(rbac_denied(
            principal,
            &action,
            &scope,
            &format!("Managed HSM: {}", v.name),
        ))
    }

    /// `coffer keyvault create --hsm-name`: a managed HSM on a PKCS#11 token. The
    /// creator gets the local roles Managed HSM Administrator and Managed HSM Crypto
    /// User at `/` (Azure gives initial administrators only the first).
    pub fn create_managed_hsm(
        &self,
        group: &str,
        name: &str,
        o: KeyVaultOptions,
        token: HsmConfig,
    ) -> Result<Value> {
        let props = HsmProps::probe(token)?;
        let out = self.create_vault_of_kind(group, name, o, Some(props), true)?;
        let v = self.live_vault(name)?;
        for role in ["Managed HSM Administrator", "Managed HSM Crypto User"] {
            self.create_assignment(role, self.principal(), "/", Some(&v.guid))?;
        }
        Ok(out)
    }

    /// `coffer keyvault create -n KV --sku premium --pkcs11-module …`: a premium key
    /// vault whose `RSA-HSM` / `EC-HSM` keys are generated and used in the token
    /// (software `RSA` / `EC` keys stay sealed under the master key). Authorisation
    /// stays the key vault's (access policies or RBAC).
    pub fn create_key_vault_with_token(
        &self,
        group: &str,
        name: &str,
        o: KeyVaultOptions,
        token: HsmConfig,
    ) -> Result<Value> {
        if !o
            .sku
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("premium"))
        {
            return Err(bad(
                "a PKCS#11 token (HSM-protected keys) needs a premium key vault: add --sku premium",
            ));
        }
        Self::check_vault_name(name)?;
        let props = HsmProps::probe(token)?;
        self.create_vault_of_kind(group, name, o, Some(props), false)
    }

    fn live_hsm(&self, name: &str) -> Result<KeyVaultRow> {
        let v = self.live_vault(name)?;
        if !Self::is_hsm(&v) {
            return Err(bad(format!(
                "'{name}' is a key vault, not a managed HSM: use `coffer role assignment`"
            )));
        }
        Ok(v)
    }

    fn local_scope(scope: &str) -> Result<String> {
        let s = scope.trim();
        if s == "/"
            || s.strip_prefix("/keys/")
                .is_some_and(|k| !k.is_empty() && !k.contains('/'))
        {
            Ok(s.to_owned())
        } else {
            Err(bad(format!(
                "managed HSM scope must be / or /keys/NAME, not {scope:?}"
            )))
        }
    }

    /// `coffer keyvault role assignment create --hsm-name`.
    pub fn create_hsm_role_assignment(
        &self,
        hsm: &str,
        role: &str,
        assignee: &str,
        scope: &str,
    ) -> Result<Value> {
        let v = self.live_hsm(hsm)?;
        let scope = Self::local_scope(scope)?;
        let r = (|| {
            if !self.rbac_allows(self.principal(), "/", ROLE_WRITE, true, Some(&v.guid))? {
                return Err(forbidden(
                    "ForbiddenByRbac",
                    format!("Caller is not authorized to assign roles in managed HSM '{hsm}'."),
                ));
            }
            self.create_assignment(role, assignee, &scope, Some(&v.guid))
        })();
        let _ = self.audit_key(
            &v,
            self.principal(),
            "roleAssignments/write",
            None,
            None,
            &r,
        );
        r
    }

    /// `coffer keyvault role assignment list --hsm-name`.
    pub fn list_hsm_role_assignments(
        &self,
        hsm: &str,
        assignee: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Vec<Value>> {
        let v = self.live_hsm(hsm)?;
        self.list_role_assignments(assignee, scope, Some(&v.guid))
    }

    /// `coffer keyvault role assignment delete --hsm-name`. Refused, unless `force`,
    /// when a backup vault's identity would lose access to its customer-managed key.
    pub fn delete_hsm_role_assignments(
        &self,
        hsm: &str,
        sel: &crate::rbac::AssignmentSelector<'_>,
        force: bool,
    ) -> Result<Vec<Value>> {
        let v = self.live_hsm(hsm)?;
        if !self.rbac_allows(self.principal(), "/", ROLE_WRITE, true, Some(&v.guid))? {
            return Err(forbidden(
                "ForbiddenByRbac",
                format!(
                    "Caller is not authorized to remove role assignments in managed HSM '{hsm}'."
                ),
            ));
        }
        self.delete_assignments(sel, Some(&v.guid), force)
    }
}

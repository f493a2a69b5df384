//! Key lifecycle (`az keyvault key ...`): immutable versions (create, import,
//! rotate), KeyBundle output, attributes, soft delete / recover / purge, and the
//! sealing of software private keys under the master key.

use serde_json::{Value, json};

use super::*;

/// Every `key_ops` value, in Azure's order.
const KEY_OPS: [&str; 8] = [
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
    "import",
    "export",
];

impl Instance {
    fn bundle(&self, v: &KeyVaultRow, row: &KeyVersionRow) -> Result<Value> {
        let a = Self::attrs(row)?;
        let p = Self::props(v)?;
        let (days, level) = Self::recovery(&p);
        let mut key: Value = from_catalog(&row.public_jwk_json, "public key")?;
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

    // ------------------------------------------------------- key management ops

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
        // The change is made: a failed audit insert must not report it as failed.
        let _ = self.audit_key(&v, principal, op, name, ver.as_deref(), &r);
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

    /// The `key_ops` of a new key that names none: what its family supports.
    pub(crate) fn default_ops(ec: bool) -> Vec<String> {
        let ops = if ec {
            // sign, verify
            &KEY_OPS[2..4]
        } else {
            // encrypt, decrypt, sign, verify, wrapKey, unwrapKey
            &KEY_OPS[..6]
        };
        ops.iter().map(|o| (*o).to_owned()).collect()
    }

    fn canon_ops(ops: &[String]) -> Result<Vec<String>> {
        ops.iter()
            .map(|o| {
                KEY_OPS
                    .iter()
                    .find(|x| x.eq_ignore_ascii_case(o))
                    .map(|x| (*x).to_owned())
                    .ok_or_else(|| {
                        bad(format!(
                            "unknown key operation {o:?}; valid: {}",
                            KEY_OPS.join(", ")
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
            attrs.key_ops = Self::default_ops(key.kty() == coffer_keyvault::KeyType::Ec);
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
            public_jwk_json: to_catalog(jwk)?,
            attributes_json: to_catalog(&attrs)?,
            sealed_private: sealed,
            created_ms: now,
            updated_ms: now,
        };
        self.catalog.add_key_version(&row)?;
        let _ = self.publish_key_event(v, "KeyNewVersionCreated", canonical, &version, now);
        Ok(row)
    }

    fn refuse_deleted_name(&self, v: &KeyVaultRow, name: &str) -> Result<()> {
        if let Some(k) = self.catalog.key(&v.guid, name)?
            && k.deleted_ms.is_some()
        {
            return Err(deleted_but_recoverable(
                &format!("Key {name}"),
                "in this state, the key can only be recovered or purged.",
            ));
        }
        Ok(())
    }

    /// The key family (`true`: EC) and protection (`true`: in the vault's token) of
    /// `--kty` in vault `v`. A managed HSM takes `RSA`/`RSA-HSM` and `EC`/`EC-HSM`, all
    /// in its token; a key vault takes `RSA`/`EC` (software) and, when configured
    /// with a token (premium), `RSA-HSM`/`EC-HSM`.
    fn key_kind(v: &KeyVaultRow, kty: &str) -> Result<(bool, bool)> {
        let upper = kty.to_ascii_uppercase();
        let ec = match upper.as_str() {
            "RSA" | "RSA-HSM" => false,
            "EC" | "EC-HSM" => true,
            _ if Self::is_hsm(v) => {
                return Err(bad(format!(
                    "unsupported key type {kty:?} in a managed HSM: use RSA-HSM or EC-HSM"
                )));
            }
            _ => {
                return Err(bad(format!(
                    "unsupported key type {kty:?}: use RSA or EC (RSA-HSM / EC-HSM need a PKCS#11 token)"
                )));
            }
        };
        if Self::is_hsm(v) {
            return Ok((ec, true));
        }
        let hsm = upper.ends_with("-HSM");
        if hsm && !Self::has_token(v)? {
            return Err(bad(format!(
                "key type {kty} needs a hardware security module, and no PKCS#11 token is configured for \
                 key vault '{}'; Coffer never emulates HSM keys in software. Use RSA or EC, create a \
                 premium key vault with a token (coffer keyvault create -n NAME --sku premium \
                 --pkcs11-module PATH --token-label LABEL --pin-file FILE), or use a managed HSM (--hsm-name).",
                v.name
            )));
        }
        Ok((ec, hsm))
    }

    /// Generates a new current version of `name`: in the vault's token (`hsm`) or as
    /// a software key sealed under the master key.
    fn new_version(
        &self,
        v: &KeyVaultRow,
        name: &str,
        spec: KeySpec,
        hsm: bool,
        attrs: KeyAttrs,
    ) -> Result<KeyVersionRow> {
        if hsm {
            return self.create_hsm_version(v, name, spec, attrs);
        }
        let key = match spec {
            KeySpec::Rsa(bits) => PrivateKey::generate_rsa(bits),
            KeySpec::Ec(curve) => PrivateKey::generate_ec(curve),
        }
        .map_err(kv_err)?;
        self.store_version(v, name, &key, attrs)
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
                let (ec, hsm) = Self::key_kind(v, &o.kty)?;
                let spec = KeySpec::parse(ec, o.size, o.curve.as_deref())?;
                let exp = o.expires.or(self.policy_expiry(v, name)?);
                let row = self.new_version(v, name, spec, hsm, o.attrs(exp))?;
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
                if Self::is_hsm(v) {
                    return Err(bad(
                        "keys cannot be imported into a managed HSM: its keys are generated inside the token",
                    ));
                }
                if Self::key_kind(v, &o.kty)?.1 {
                    return Err(bad(format!(
                        "key type {} cannot be imported: HSM keys are generated inside the token \
                         (key create --kty {}); import brings in software RSA or EC keys",
                        o.kty, o.kty
                    )));
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
                let json = to_catalog(&a)?;
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
                k.scheduled_purge_ms = Some(Self::scheduled_purge(&p, now));
                let out = self.deleted_bundle(v, &k)?;
                if p.enable_soft_delete {
                    k.updated_ms = now;
                    self.catalog.update_key(&k)?;
                } else {
                    self.purge_key_material(v, &k.name)?;
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
                return Err(purge_protected("this vault"));
            }
            self.purge_key_material(v, &k.name)?;
            Ok((json!({ "recoveryId": format!("{}/deletedkeys/{}", Self::vault_uri(v), k.name), "status": "Purged" }), None))
        })
    }

    pub(super) fn rotate_now(&self, v: &KeyVaultRow, k: &KeyRow) -> Result<KeyVersionRow> {
        let cur = self.version_row(v, k, None)?;
        let a = Self::attrs(&cur)?;
        let jwk = Self::public_jwk(&cur)?;
        let attrs = KeyAttrs {
            enabled: true,
            nbf: None,
            exp: self.policy_expiry(v, &k.name)?,
            key_ops: a.key_ops,
            tags: a.tags,
        };
        let hsm = cur.kty.ends_with("-HSM");
        self.new_version(v, &k.name, KeySpec::of(&jwk)?, hsm, attrs)
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
}

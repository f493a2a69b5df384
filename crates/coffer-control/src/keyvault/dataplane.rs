//! The Key Vault data plane: wrapKey/unwrapKey, encrypt/decrypt, sign/verify on
//! one key version, each authorised for the calling principal (RBAC dataAction,
//! access policy or managed-HSM local RBAC), checked against the key's state and
//! `key_ops`, and audited.

use serde_json::{Value, json};

use super::*;

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

/// A base64url command-line value (it may be a key: zeroized after use).
fn from_b64(s: &str) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    coffer_keyvault::from_b64url(s)
        .map(zeroize::Zeroizing::new)
        .map_err(kv_err)
}

impl Instance {
    /// Authorises `permission` on key `key` (or the vault when `None`) for `principal`.
    pub(crate) fn authorize_key(
        &self,
        principal: &str,
        v: &KeyVaultRow,
        key: Option<&str>,
        permission: &str,
    ) -> Result<()> {
        self.authorize_key_in(principal, v, &Self::props(v)?, key, permission)
    }

    /// [`Instance::authorize_key`] with the vault's properties `p` already parsed.
    fn authorize_key_in(
        &self,
        principal: &str,
        v: &KeyVaultRow,
        p: &VaultProps,
        key: Option<&str>,
        permission: &str,
    ) -> Result<()> {
        if Self::is_hsm(v) {
            return self.authorize_hsm(principal, v, key, permission);
        }
        self.check_firewall(v, p)?;
        if p.enable_rbac_authorization {
            let mut scope = self.vault_arm_id(v);
            if let Some(k) = key {
                scope = format!("{scope}/keys/{k}");
            }
            let action = data_action(permission);
            if self.rbac_allows(principal, &scope, action, true, None)? {
                return Ok(());
            }
            return Err(rbac_denied(
                principal,
                action,
                &scope.to_ascii_lowercase(),
                &format!("Vault: {}", v.name),
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
    ) -> Result<()> {
        let row = Self::audit_row(v, principal, op, key, version, r.as_ref().err());
        self.catalog.log_key_audit(&row)?;
        Ok(())
    }

    /// The audit record of `op`: `Succeeded`, or `Failed` with the code of `err`.
    fn audit_row(
        v: &KeyVaultRow,
        principal: &str,
        op: &str,
        key: Option<&str>,
        version: Option<&str>,
        err: Option<&Error>,
    ) -> KeyAuditRow {
        KeyAuditRow {
            seq: 0,
            vault_guid: v.guid.clone(),
            time_ms: util::clock_ms(),
            principal: principal.to_owned(),
            operation: op.to_owned(),
            key_name: key.map(str::to_owned),
            key_version: version.map(str::to_owned),
            result: if err.is_none() { "Succeeded" } else { "Failed" }.to_owned(),
            error_code: err.map(Self::audit_error_code),
        }
    }

    fn audit_error_code(e: &Error) -> String {
        e.inner_code
            .clone()
            .unwrap_or_else(|| e.code.as_str().to_owned())
    }

    fn check_usable(a: &KeyAttrs, op: &str, now_ms: i64) -> Result<()> {
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
        Ok(())
    }

    /// Runs one audited data-plane operation on a key version that must be usable for `op`.
    fn with_key<T>(
        &self,
        k: &KeyRef<'_>,
        op: &str,
        f: impl FnOnce(&KeyVaultRow, &KeyVersionRow, Material) -> Result<T>,
    ) -> Result<T> {
        self.begin_with_key(k, op, f)?.finish()
    }

    /// [`Instance::with_key`] up to the audit record's durability: the operation has
    /// run (or was refused), its record is being committed; [`InFlight::finish`] waits
    /// for the record and returns the outcome (a refused or failed operation's record is
    /// durable before this returns). An error here is one no record was queued for
    /// (the catalog could not be read, the vault is unknown).
    fn begin_with_key<T>(
        &self,
        k: &KeyRef<'_>,
        op: &str,
        f: impl FnOnce(&KeyVaultRow, &KeyVersionRow, Material) -> Result<T>,
    ) -> Result<InFlight<T>> {
        let KeyRef {
            principal,
            vault,
            name,
            version,
        } = *k;
        // The lookups and the authorization read one snapshot of the catalog (none
        // while nothing was committed since the last check); it ends before the key is
        // used and the audit record is committed. The rows come from this instance's
        // cache while the catalog's change counter says they are current.
        let rows = self.key_rows()?;
        let vault = rows.live_vault(vault)?;
        let v = &vault.row;
        let mut used_version = version.map(str::to_owned);
        let usable = (|| {
            self.authorize_key_in(principal, v, &vault.props, Some(name), op)?;
            let k = rows.live_key(v, name)?;
            let entry = rows.version(v, &k, version)?;
            used_version = Some(entry.row.version.clone());
            let a = &entry.attrs;
            Self::check_usable(a, op, util::clock_ms())?;
            if !a.key_ops.iter().any(|o| o.eq_ignore_ascii_case(op)) {
                return Err(forbidden(
                    "OperationNotAllowed",
                    format!(
                        "Operation {op} is not permitted on this key (key_ops: {}).",
                        a.key_ops.join(", ")
                    ),
                ));
            }
            Ok(entry)
        })();
        drop(rows);
        let entry = match usable {
            Ok(entry) => entry,
            Err(e) => {
                let r = Err(e);
                // Refused: the error is returned whether or not its record is written.
                let _ = self.audit_key(v, principal, op, Some(name), used_version.as_deref(), &r);
                return Ok(InFlight::done(r));
            }
        };
        // The record is committed while the key is used (the sync overlaps the key
        // operation), written as `Succeeded` and amended if the operation fails.
        // Fail closed: a result is only returned once its record is durable.
        let ver = Some(entry.row.version.as_str());
        let row = Self::audit_row(v, principal, op, Some(name), ver, None);
        let pending = self.catalog.begin_key_audit(&row)?;
        let r = entry
            .material(self, v)
            .and_then(|key| f(v, &entry.row, key));
        match r {
            Ok(out) => Ok(InFlight {
                r: Ok(out),
                pending: Some(pending),
            }),
            // A failed operation's record is amended once written (rare: waited for here).
            Err(e) => {
                if let Ok(seq) = pending.wait() {
                    let code = Self::audit_error_code(&e);
                    // The operation's error is the one to report; if the amend fails
                    // too, the record over-states (Succeeded) and never under-states.
                    let _ = self.catalog.amend_key_audit(seq, "Failed", Some(&code));
                }
                Ok(InFlight::done(Err(e)))
            }
        }
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
        self.begin_rsa_op(k, op, alg, f)?.finish()
    }

    /// [`Instance::rsa_op`] up to the audit record's durability.
    fn begin_rsa_op<T>(
        &self,
        k: &KeyRef<'_>,
        op: &str,
        alg: &str,
        f: impl FnOnce(&Material, EncryptionAlgorithm) -> coffer_keyvault::Result<T>,
    ) -> Result<InFlight<(String, T)>> {
        let alg = EncryptionAlgorithm::parse(alg).map_err(kv_err);
        self.begin_with_key(k, op, |v, row, key| {
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
        self.begin_key_decrypt(k, op, alg, cipher)?.finish()
    }

    /// [`Instance::key_decrypt`] up to the audit record's durability.
    pub(crate) fn begin_key_decrypt(
        &self,
        k: &KeyRef<'_>,
        op: &str,
        alg: &str,
        cipher: &[u8],
    ) -> Result<InFlight<UnwrapResult>> {
        let begun = self.begin_rsa_op(k, op, alg, |key, a| key.decrypt(a, cipher))?;
        Ok(begun.map(|(kid, value)| UnwrapResult { kid, value }))
    }

    /// `coffer keyvault key wrap|encrypt` (`value`: base64url).
    pub fn key_wrap(&self, k: &KeyRef<'_>, op: &str, alg: &str, value_b64: &str) -> Result<Value> {
        let plain = from_b64(value_b64)?;
        let r = self.key_encrypt(k, op, alg, &plain)?;
        Ok(json!({ "kid": r.kid, "value": b64url(&r.value), "alg": r.alg }))
    }

    /// `coffer keyvault key unwrap|decrypt` (`value`: base64url).
    pub fn key_unwrap(
        &self,
        k: &KeyRef<'_>,
        op: &str,
        alg: &str,
        value_b64: &str,
    ) -> Result<Value> {
        let r = self.key_decrypt(k, op, alg, &from_b64(value_b64)?)?;
        Ok(json!({ "kid": r.kid, "value": b64url(r.value.expose()), "alg": alg }))
    }

    /// `coffer keyvault key sign` (value: the digest, base64url).
    pub fn key_sign(&self, k: &KeyRef<'_>, alg: &str, digest_b64: &str) -> Result<Value> {
        let d = from_b64(digest_b64)?;
        let a = SignatureAlgorithm::parse(alg).map_err(kv_err);
        self.with_key(k, "sign", |v, row, key| {
            let sig = key.sign(a?, &d).map_err(kv_err)?;
            Ok(json!({ "kid": Self::kid(v, &row.name, &row.version), "value": b64url(&sig), "alg": alg }))
        })
    }

    /// `coffer keyvault key verify`.
    pub fn key_verify(
        &self,
        k: &KeyRef<'_>,
        alg: &str,
        digest_b64: &str,
        sig_b64: &str,
    ) -> Result<Value> {
        let (d, s) = (from_b64(digest_b64)?, from_b64(sig_b64)?);
        let a = SignatureAlgorithm::parse(alg).map_err(kv_err);
        self.with_key(k, "verify", |_, _, key| {
            Ok(json!({ "value": key.verify(a?, &d, &s).map_err(kv_err)? }))
        })
    }
}

/// A key operation that has run (or was refused) and whose audit record is being made
/// durable: its result is only given out by [`InFlight::finish`], once the record is
/// durable (fail closed). Not `Send`: the committer wakes the thread that began it.
#[must_use = "an operation's outcome is only known once finished"]
pub(crate) struct InFlight<T> {
    r: Result<T>,
    /// The record of a successful operation, being committed; `None`: nothing to wait
    /// for (refused or failed: its record is durable already).
    pending: Option<coffer_catalog::PendingKeyAudit>,
}

impl<T> InFlight<T> {
    fn done(r: Result<T>) -> Self {
        Self { r, pending: None }
    }

    /// The same operation with its output turned by `f` (given out as before, once
    /// the record is durable).
    fn map<U>(self, f: impl FnOnce(T) -> U) -> InFlight<U> {
        InFlight {
            r: self.r.map(f),
            pending: self.pending,
        }
    }

    /// Waits until the operation's audit record is durable; returns the outcome.
    pub(crate) fn finish(self) -> Result<T> {
        match self.pending {
            Some(pending) => pending.wait().map_err(Error::from).and(self.r),
            None => self.r,
        }
    }
}

/// The address callers on this machine reach a key vault from: the CLI calls the key
/// vault in-process, as a client on the loopback interface would.
const LOCAL_CLIENT: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

/// Whether IPv4 CIDR `rule` (`a.b.c.d` or `a.b.c.d/len`) contains `addr`.
fn cidr_contains(rule: &str, addr: std::net::Ipv4Addr) -> bool {
    let (net, len) = rule.split_once('/').unwrap_or((rule, "32"));
    let (Ok(net), Ok(len)) = (net.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
    u32::from(net) & mask == u32::from(addr) & mask
}

impl Instance {
    /// The key vault firewall (`networkAcls`), checked before permissions as Azure
    /// does: with `defaultAction Deny`, only trusted services (Coffer's backup vaults,
    /// through [`crate::KeyVaultClient`]) pass, and only when `bypass` is
    /// `AzureServices`; other callers pass when an `ipRules` entry covers their address
    /// (127.0.0.1 on this machine). Refusals are `Forbidden`/`ForbiddenByFirewall`.
    fn check_firewall(&self, v: &KeyVaultRow, p: &VaultProps) -> Result<()> {
        let acl = &p.network_acls;
        if acl.default_action.eq_ignore_ascii_case("Allow") {
            return Ok(());
        }
        let trusted = self.is_trusted_service_call();
        let pass = if trusted {
            acl.bypass.eq_ignore_ascii_case("AzureServices")
        } else {
            acl.ip_rules
                .iter()
                .filter_map(|r| r["value"].as_str())
                .any(|r| cidr_contains(r, LOCAL_CLIENT))
        };
        if pass {
            return Ok(());
        }
        Err(forbidden(
            "ForbiddenByFirewall",
            format!(
                "Client address is not authorized and caller is not a trusted service. \
                 Client address: {LOCAL_CLIENT}; caller: {}; vault: {}. {}",
                if trusted {
                    "trusted service (backup vault)"
                } else {
                    "command line"
                },
                v.name,
                if trusted {
                    "Set --bypass AzureServices or --default-action Allow on the key vault."
                } else {
                    "Add --ip-rules 127.0.0.1/32 or set --default-action Allow on the key vault."
                }
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::cidr_contains;

    #[test]
    fn cidr_rules() {
        let lo = std::net::Ipv4Addr::LOCALHOST;
        assert!(cidr_contains("127.0.0.1", lo));
        assert!(cidr_contains("127.0.0.0/8", lo));
        assert!(cidr_contains("0.0.0.0/0", lo));
        assert!(!cidr_contains("10.0.0.0/8", lo));
        assert!(!cidr_contains("127.0.0.2/32", lo));
        assert!(!cidr_contains("nonsense", lo));
    }
}

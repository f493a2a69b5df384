//! Control plane of key vaults (`az keyvault create|show|list|update|delete|
//! list-deleted|recover|purge|set-policy|delete-policy|audit list`): vault
//! properties, soft delete and purge protection, access policies.

use serde_json::{Value, json};

use super::*;

impl Instance {
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
        self.create_vault_of_kind(group, name, o, None, false)
    }

    /// A key vault configured with a token must stay premium.
    fn check_token_sku(p: &VaultProps, managed_hsm: bool) -> Result<()> {
        if !managed_hsm && p.hsm.is_some() && p.sku != "premium" {
            return Err(bad(
                "this key vault has a PKCS#11 token (HSM-protected keys): its SKU must stay premium",
            ));
        }
        Ok(())
    }

    /// Creates a key vault (with a token for HSM keys when `token` is set: premium)
    /// or, when `managed_hsm`, a managed HSM on `token`.
    pub(crate) fn create_vault_of_kind(
        &self,
        group: &str,
        name: &str,
        o: KeyVaultOptions,
        token: Option<crate::hsm::HsmProps>,
        managed_hsm: bool,
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
        let is_hsm = managed_hsm;
        if is_hsm {
            // Managed HSMs use local RBAC only.
            p.enable_rbac_authorization = true;
        }
        p.hsm = token;
        Self::check_token_sku(&p, is_hsm)?;
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
            row.properties_json = to_catalog(&p)?;
            if let Some(existing) = self.catalog.key_vault(name)?
                && existing.deleted_ms.is_some()
            {
                return Err(deleted_but_recoverable(
                    &format!("Vault '{name}'"),
                    "recover or purge it",
                ));
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

    /// `coffer keyvault update`. Refused, unless `force`, when the new settings
    /// would cut a backup vault off its customer-managed key (e.g. switching the
    /// permission model).
    pub fn update_key_vault(&self, name: &str, o: KeyVaultOptions, force: bool) -> Result<Value> {
        let mut v = self.live_vault(name)?;
        let id = self.vault_arm_id(&v);
        let r = (|| {
            self.authorize_action(&id, "Microsoft.KeyVault/vaults/write")?;
            let mut p = Self::props(&v)?;
            Self::apply_options(&mut p, &o, false)?;
            Self::check_token_sku(&p, Self::is_hsm(&v))?;
            let props = to_catalog(&p)?;
            self.refuse_if_props_cut_off_cmk(&v, &props, force)?;
            v.properties_json = props;
            if let Some(t) = &o.tags {
                v.tags_json = serde_json::to_string(t).unwrap_or_else(|_| "{}".into());
            }
            self.catalog.update_key_vault(&v)?;
            self.vault_json(&v)
        })();
        self.audit("Microsoft.KeyVault/vaults/write", &id, &r);
        r
    }

    /// Refuses (unless `force`) new properties for key vault `v` (permission model,
    /// access policies) under which a backup vault's identity could no longer use its
    /// customer-managed key.
    fn refuse_if_props_cut_off_cmk(&self, v: &KeyVaultRow, props: &str, force: bool) -> Result<()> {
        self.refuse_if_cuts_off_cmk(
            Some(&v.guid),
            &|kv| KeyVaultRow {
                properties_json: props.to_owned(),
                ..kv.clone()
            },
            &[],
            force,
        )
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
                v.scheduled_purge_ms = Some(Self::scheduled_purge(&p, now));
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
                return Err(purge_protected(&format!("vault '{name}'")));
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
        self.edit_policy(name, object_id, false, |policies, tenant| {
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
    /// Refused, unless `force`, when a backup vault's customer-managed key is used
    /// through that principal.
    pub fn delete_key_vault_policy(
        &self,
        name: &str,
        object_id: &str,
        force: bool,
    ) -> Result<Value> {
        self.edit_policy(name, object_id, force, |policies, _| {
            policies.retain(|p| !p.object_id.eq_ignore_ascii_case(object_id));
            Ok(())
        })
    }

    fn edit_policy(
        &self,
        name: &str,
        object_id: &str,
        force: bool,
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
            let props = to_catalog(&p)?;
            self.refuse_if_props_cut_off_cmk(&v, &props, force)?;
            v.properties_json = props;
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

    pub(super) fn recovery(p: &VaultProps) -> (u32, &'static str) {
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
}

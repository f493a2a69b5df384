//! Dispatch of the part-2 commands (`identity`, `role`, `keyvault`) to the control plane.

use coffer_control::{
    Error, ErrorCode, HsmConfig, Instance, KeyAttributeUpdate, KeyCreateOptions, KeyRef,
    KeyVaultOptions, Result,
};

use crate::{
    kvargs::{
        AuditCmd, CryptoArgs, HsmAssignCmd, HsmRoleCmd, IdentityCmd, KeyAttrArgs, KeyCmd,
        KeyVaultCmd, KvOpts, RoleAssignCmd, RoleCmd, RoleDefCmd, RotationCmd,
    },
    output::Printer,
    parse_tags,
};

fn opts(o: KvOpts, location: Option<String>) -> Result<KeyVaultOptions> {
    Ok(KeyVaultOptions {
        enable_soft_delete: o.enable_soft_delete,
        retention_days: o.retention_days,
        enable_purge_protection: o.enable_purge_protection,
        enable_rbac_authorization: o.enable_rbac_authorization,
        default_action: o.default_action,
        bypass: o.bypass,
        ip_rules: o.ip_rules,
        sku: o.sku,
        location,
        tags: o.tags.as_deref().map(parse_tags).transpose()?,
    })
}

fn unix(s: &Option<String>, what: &str) -> Result<Option<i64>> {
    s.as_deref()
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                Error::new(
                    ErrorCode::BadParameter,
                    format!("{what} must be unix seconds, not {v:?}"),
                )
            })
        })
        .transpose()
}

fn create_opts(
    kty: String,
    size: Option<u32>,
    curve: Option<String>,
    a: &KeyAttrArgs,
) -> Result<KeyCreateOptions> {
    Ok(KeyCreateOptions {
        kty,
        size,
        curve,
        ops: a.ops.clone(),
        enabled: a.enabled,
        not_before: unix(&a.not_before, "--not-before")?,
        expires: unix(&a.expires, "--expires")?,
        tags: parse_tags(&a.tags)?,
    })
}

/// The key version a data-plane command selects, called as the acting principal.
fn key_ref<'a>(inst: &'a Instance, c: &'a CryptoArgs) -> KeyRef<'a> {
    KeyRef::new(
        inst.principal(),
        &c.key.key.vault_name,
        &c.key.key.name,
        c.key.version.as_deref(),
    )
}

/// Runs one `identity` command.
pub(crate) fn identity(inst: &Instance, cmd: IdentityCmd, p: &Printer) -> Result<()> {
    match cmd {
        IdentityCmd::Create(s) => p.value(&inst.create_identity(&s.resource_group, &s.name)?),
        IdentityCmd::Show(s) => p.value(&inst.show_identity(&s.resource_group, &s.name)?),
        IdentityCmd::List { resource_group } => {
            p.value(&inst.list_identities(resource_group.as_deref())?)
        }
        IdentityCmd::Delete { identity, force } => {
            p.value(&inst.delete_identity(&identity.resource_group, &identity.name, force)?)
        }
    }
    Ok(())
}

/// Runs one `role` command.
pub(crate) fn role(inst: &Instance, cmd: RoleCmd, p: &Printer) -> Result<()> {
    match cmd {
        RoleCmd::Definition(RoleDefCmd::List) => p.value(&inst.list_role_definitions(None)),
        RoleCmd::Assignment(a) => match a {
            RoleAssignCmd::Create {
                role,
                assignee,
                scope,
            } => p.value(&inst.create_role_assignment(&role, &assignee, &scope)?),
            RoleAssignCmd::List { assignee, scope } => {
                p.value(&inst.list_role_assignments(assignee.as_deref(), scope.as_deref(), None)?)
            }
            RoleAssignCmd::Delete(f) => p.value(&inst.delete_role_assignments(
                f.ids.as_deref(),
                f.role.as_deref(),
                f.assignee.as_deref(),
                f.scope.as_deref(),
                f.force,
            )?),
        },
    }
    Ok(())
}

/// Runs one `keyvault` command.
pub(crate) fn keyvault(inst: &Instance, cmd: KeyVaultCmd, p: &Printer) -> Result<()> {
    match cmd {
        KeyVaultCmd::Create {
            name,
            hsm_name,
            pkcs11_module,
            token_label,
            pin_file,
            resource_group,
            location,
            opts: o,
        } => match (hsm_name, pkcs11_module, token_label, pin_file) {
            (Some(h), Some(module), Some(token_label), Some(pin_file)) => {
                let token = HsmConfig {
                    module,
                    token_label,
                    pin_file,
                };
                p.value(&inst.create_managed_hsm(&resource_group, &h, opts(o, location)?, token)?)
            }
            (None, None, None, None) => {
                let name = name.unwrap_or_default();
                p.value(&inst.create_key_vault(&resource_group, &name, opts(o, location)?)?)
            }
            _ => {
                return Err(Error::new(
                    ErrorCode::BadParameter,
                    "--pkcs11-module, --token-label and --pin-file configure a managed HSM: use them with --hsm-name",
                ));
            }
        },
        KeyVaultCmd::Show(kv) => p.value(&inst.show_key_vault(&kv.name)?),
        KeyVaultCmd::List { resource_group } => {
            p.value(&inst.list_key_vaults(resource_group.as_deref())?)
        }
        KeyVaultCmd::Update { kv, opts: o, force } => {
            p.value(&inst.update_key_vault(&kv.name, opts(o, None)?, force)?)
        }
        KeyVaultCmd::Delete(kv) => p.value(&inst.delete_key_vault(&kv.name)?),
        KeyVaultCmd::ListDeleted => p.value(&inst.list_deleted_key_vaults()?),
        KeyVaultCmd::Recover(kv) => p.value(&inst.recover_key_vault(&kv.name)?),
        KeyVaultCmd::Purge(kv) => p.value(&inst.purge_key_vault(&kv.name)?),
        KeyVaultCmd::SetPolicy {
            kv,
            object_id,
            key_permissions,
        } => p.value(&inst.set_key_vault_policy(&kv.name, &object_id, &key_permissions)?),
        KeyVaultCmd::DeletePolicy {
            kv,
            object_id,
            force,
        } => p.value(&inst.delete_key_vault_policy(&kv.name, &object_id, force)?),
        KeyVaultCmd::Audit(AuditCmd::List(kv)) => p.value(&inst.key_vault_audit(&kv.name)?),
        KeyVaultCmd::Key(k) => key(inst, k, p)?,
        KeyVaultCmd::Role(HsmRoleCmd::Assignment(a)) => match a {
            HsmAssignCmd::Create {
                hsm,
                role,
                assignee,
                scope,
            } => p.value(&inst.create_hsm_role_assignment(
                &hsm.hsm_name,
                &role,
                &assignee,
                &scope,
            )?),
            HsmAssignCmd::List {
                hsm,
                assignee,
                scope,
            } => p.value(&inst.list_hsm_role_assignments(
                &hsm.hsm_name,
                assignee.as_deref(),
                scope.as_deref(),
            )?),
            HsmAssignCmd::Delete { hsm, filter: f } => p.value(&inst.delete_hsm_role_assignments(
                &hsm.hsm_name,
                f.ids.as_deref(),
                f.role.as_deref(),
                f.assignee.as_deref(),
                f.scope.as_deref(),
                f.force,
            )?),
        },
    }
    Ok(())
}

fn key(inst: &Instance, cmd: KeyCmd, p: &Printer) -> Result<()> {
    match cmd {
        KeyCmd::Create {
            key,
            kty,
            size,
            curve,
            attrs,
        } => p.value(&inst.create_key(
            &key.vault_name,
            &key.name,
            create_opts(kty, size, curve, &attrs)?,
        )?),
        KeyCmd::Import {
            key,
            pem_file,
            kty,
            attrs,
        } => {
            let pem = zeroize::Zeroizing::new(std::fs::read_to_string(&pem_file).map_err(|e| {
                Error::new(
                    ErrorCode::BadParameter,
                    format!("cannot read the PEM file {}: {e}", pem_file.display()),
                )
            })?);
            p.value(&inst.import_key(
                &key.vault_name,
                &key.name,
                &pem,
                create_opts(kty, None, None, &attrs)?,
            )?)
        }
        KeyCmd::Show(s) => {
            p.value(&inst.show_key(&s.key.vault_name, &s.key.name, s.version.as_deref())?)
        }
        KeyCmd::List { vault_name } => p.value(&inst.list_keys(&vault_name)?),
        KeyCmd::ListVersions(k) => p.value(&inst.list_key_versions(&k.vault_name, &k.name)?),
        KeyCmd::SetAttributes { key, attrs } => p.value(
            &inst.set_key_attributes(
                &key.key.vault_name,
                &key.key.name,
                key.version.as_deref(),
                KeyAttributeUpdate {
                    enabled: attrs.enabled,
                    not_before: unix(&attrs.not_before, "--not-before")?,
                    expires: unix(&attrs.expires, "--expires")?,
                    ops: (!attrs.ops.is_empty()).then(|| attrs.ops.clone()),
                    tags: (!attrs.tags.is_empty())
                        .then(|| parse_tags(&attrs.tags))
                        .transpose()?,
                },
            )?,
        ),
        KeyCmd::Delete(k) => p.value(&inst.delete_key(&k.vault_name, &k.name)?),
        KeyCmd::ListDeleted { vault_name } => p.value(&inst.list_deleted_keys(&vault_name)?),
        KeyCmd::Recover(k) => p.value(&inst.recover_key(&k.vault_name, &k.name)?),
        KeyCmd::Purge(k) => p.value(&inst.purge_key(&k.vault_name, &k.name)?),
        KeyCmd::Rotate(k) => p.value(&inst.rotate_key(&k.vault_name, &k.name)?),
        KeyCmd::Download { key, file } => {
            let pem =
                inst.download_key(&key.key.vault_name, &key.key.name, key.version.as_deref())?;
            std::fs::write(&file, pem).map_err(|e| {
                Error::new(
                    ErrorCode::InvalidArgument,
                    format!("cannot write {}: {e}", file.display()),
                )
            })?;
        }
        KeyCmd::Wrap(c) => {
            p.value(&inst.key_wrap(&key_ref(inst, &c), "wrapKey", &c.algorithm, &c.value)?)
        }
        KeyCmd::Encrypt(c) => {
            p.value(&inst.key_wrap(&key_ref(inst, &c), "encrypt", &c.algorithm, &c.value)?)
        }
        KeyCmd::Unwrap(c) => {
            p.value(&inst.key_unwrap(&key_ref(inst, &c), "unwrapKey", &c.algorithm, &c.value)?)
        }
        KeyCmd::Decrypt(c) => {
            p.value(&inst.key_unwrap(&key_ref(inst, &c), "decrypt", &c.algorithm, &c.value)?)
        }
        KeyCmd::Sign(c) => p.value(&inst.key_sign(&key_ref(inst, &c), &c.algorithm, &c.value)?),
        KeyCmd::Verify { op: c, signature } => {
            p.value(&inst.key_verify(&key_ref(inst, &c), &c.algorithm, &c.value, &signature)?)
        }
        KeyCmd::RotationPolicy(r) => match r {
            RotationCmd::Show(k) => p.value(&inst.show_rotation_policy(&k.vault_name, &k.name)?),
            RotationCmd::Update { key, value } => {
                let text = if value.trim_start().starts_with('{') {
                    value
                } else {
                    std::fs::read_to_string(&value).map_err(|e| {
                        Error::new(
                            ErrorCode::BadParameter,
                            format!("cannot read the policy file {value}: {e}"),
                        )
                    })?
                };
                p.value(&inst.update_rotation_policy(&key.vault_name, &key.name, &text)?)
            }
        },
    }
    Ok(())
}

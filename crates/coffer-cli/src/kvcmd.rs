//! Dispatch of the part-2 commands (`identity`, `role`, `keyvault`) to the control plane.

use coffer_control::{
    Error, ErrorCode, HsmConfig, Instance, KeyAttributeUpdate, KeyCreateOptions, KeyRef,
    KeyVaultOptions, Result,
};

use crate::{
    kvargs::{
        AssignmentFilter, AuditCmd, CryptoArgs, HsmAssignCmd, HsmRoleCmd, IdentityCmd, KeyAttrArgs,
        KeyCmd, KeyVaultCmd, KvOpts, RoleAssignCmd, RoleCmd, RoleDefCmd, RotationCmd,
    },
    output::{
        AUDIT, DELETED_KEYS, DELETED_VAULTS, IDENTITIES, KEY_ITEMS, KEY_RESULTS, KEY_VAULTS,
        KEY_VERSIONS, KEYS, Printer, ROLE_ASSIGNMENTS, ROLE_DEFINITIONS, ROTATION_POLICIES, STATUS,
        VERIFY_RESULTS,
    },
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

/// One wrapKey, encrypt, unwrapKey, decrypt or sign (`op`) on the key version `c` selects.
fn crypto(inst: &Instance, c: &CryptoArgs, op: &str) -> Result<serde_json::Value> {
    let k = key_ref(inst, c);
    match op {
        "wrapKey" | "encrypt" => inst.key_wrap(&k, op, &c.algorithm, &c.value),
        "sign" => inst.key_sign(&k, &c.algorithm, &c.value),
        _ => inst.key_unwrap(&k, op, &c.algorithm, &c.value),
    }
}

/// `role assignment delete`, or with `hsm` a managed HSM's local one.
fn delete_assignments(
    inst: &Instance,
    hsm: Option<&str>,
    f: &AssignmentFilter,
) -> Result<Vec<serde_json::Value>> {
    let sel = coffer_control::rbac::AssignmentSelector {
        id: f.ids.as_deref(),
        role: f.role.as_deref(),
        assignee: f.assignee.as_deref(),
        scope: f.scope.as_deref(),
    };
    match hsm {
        Some(h) => inst.delete_hsm_role_assignments(h, &sel, f.force),
        None => inst.delete_role_assignments(&sel, f.force),
    }
}

/// Runs one `identity` command.
pub(crate) fn identity(inst: &Instance, cmd: IdentityCmd, p: &Printer) -> Result<()> {
    match cmd {
        IdentityCmd::Create(s) => p.table(
            &inst.create_identity(&s.resource_group, &s.name)?,
            IDENTITIES,
        ),
        IdentityCmd::Show(s) => {
            p.table(&inst.show_identity(&s.resource_group, &s.name)?, IDENTITIES)
        }
        IdentityCmd::List { resource_group } => p.table(
            &inst.list_identities(resource_group.as_deref())?,
            IDENTITIES,
        ),
        IdentityCmd::Delete { identity, force } => p.table(
            &inst.delete_identity(&identity.resource_group, &identity.name, force)?,
            STATUS,
        ),
    }
    Ok(())
}

/// Runs one `role` command.
pub(crate) fn role(inst: &Instance, cmd: RoleCmd, p: &Printer) -> Result<()> {
    match cmd {
        RoleCmd::Definition(RoleDefCmd::List) => {
            p.table(&inst.list_role_definitions(None), ROLE_DEFINITIONS)
        }
        RoleCmd::Assignment(a) => match a {
            RoleAssignCmd::Create {
                role,
                assignee,
                scope,
            } => p.table(
                &inst.create_role_assignment(&role, &assignee, &scope)?,
                ROLE_ASSIGNMENTS,
            ),
            RoleAssignCmd::List { assignee, scope } => p.table(
                &inst.list_role_assignments(assignee.as_deref(), scope.as_deref(), None)?,
                ROLE_ASSIGNMENTS,
            ),
            RoleAssignCmd::Delete(f) => {
                p.table(&delete_assignments(inst, None, &f)?, ROLE_ASSIGNMENTS)
            }
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
        } => {
            let o = opts(o, location)?;
            let token = match (pkcs11_module, token_label, pin_file) {
                (Some(module), Some(token_label), Some(pin_file)) => Some(HsmConfig {
                    module,
                    token_label,
                    pin_file,
                }),
                (None, None, None) => None,
                _ => {
                    return Err(Error::new(
                        ErrorCode::BadParameter,
                        "--pkcs11-module, --token-label and --pin-file go together: they name the token \
                         of a managed HSM (--hsm-name) or of a premium key vault (-n NAME --sku premium)",
                    ));
                }
            };
            let g = &resource_group;
            let v = match (hsm_name, token) {
                (Some(h), Some(t)) => inst.create_managed_hsm(g, &h, o, t)?,
                (None, Some(t)) => {
                    inst.create_key_vault_with_token(g, &name.unwrap_or_default(), o, t)?
                }
                (None, None) => inst.create_key_vault(g, &name.unwrap_or_default(), o)?,
                (Some(_), None) => {
                    return Err(Error::new(
                        ErrorCode::BadParameter,
                        "a managed HSM needs its token: --pkcs11-module, --token-label and --pin-file",
                    ));
                }
            };
            p.table(&v, KEY_VAULTS)
        }
        KeyVaultCmd::Show(kv) => p.table(&inst.show_key_vault(&kv.name)?, KEY_VAULTS),
        KeyVaultCmd::List { resource_group } => p.table(
            &inst.list_key_vaults(resource_group.as_deref())?,
            KEY_VAULTS,
        ),
        KeyVaultCmd::Update { kv, opts: o, force } => p.table(
            &inst.update_key_vault(&kv.name, opts(o, None)?, force)?,
            KEY_VAULTS,
        ),
        KeyVaultCmd::Delete(kv) => p.table(&inst.delete_key_vault(&kv.name)?, DELETED_VAULTS),
        KeyVaultCmd::ListDeleted => p.table(&inst.list_deleted_key_vaults()?, DELETED_VAULTS),
        KeyVaultCmd::Recover(kv) => p.table(&inst.recover_key_vault(&kv.name)?, KEY_VAULTS),
        KeyVaultCmd::Purge(kv) => p.table(&inst.purge_key_vault(&kv.name)?, STATUS),
        KeyVaultCmd::SetPolicy {
            kv,
            object_id,
            key_permissions,
        } => p.table(
            &inst.set_key_vault_policy(&kv.name, &object_id, &key_permissions)?,
            KEY_VAULTS,
        ),
        KeyVaultCmd::DeletePolicy {
            kv,
            object_id,
            force,
        } => p.table(
            &inst.delete_key_vault_policy(&kv.name, &object_id, force)?,
            KEY_VAULTS,
        ),
        KeyVaultCmd::Audit(AuditCmd::List(kv)) => p.table(&inst.key_vault_audit(&kv.name)?, AUDIT),
        KeyVaultCmd::Key(k) => key(inst, k, p)?,
        KeyVaultCmd::Role(HsmRoleCmd::Assignment(a)) => match a {
            HsmAssignCmd::Create {
                hsm,
                role,
                assignee,
                scope,
            } => p.table(
                &inst.create_hsm_role_assignment(&hsm.hsm_name, &role, &assignee, &scope)?,
                ROLE_ASSIGNMENTS,
            ),
            HsmAssignCmd::List {
                hsm,
                assignee,
                scope,
            } => p.table(
                &inst.list_hsm_role_assignments(
                    &hsm.hsm_name,
                    assignee.as_deref(),
                    scope.as_deref(),
                )?,
                ROLE_ASSIGNMENTS,
            ),
            HsmAssignCmd::Delete { hsm, filter: f } => p.table(
                &delete_assignments(inst, Some(&hsm.hsm_name), &f)?,
                ROLE_ASSIGNMENTS,
            ),
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
        } => p.table(
            &inst.create_key(
                &key.vault_name,
                &key.name,
                create_opts(kty, size, curve, &attrs)?,
            )?,
            KEYS,
        ),
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
            p.table(
                &inst.import_key(
                    &key.vault_name,
                    &key.name,
                    &pem,
                    create_opts(kty, None, None, &attrs)?,
                )?,
                KEYS,
            )
        }
        KeyCmd::Show(s) => p.table(
            &inst.show_key(&s.key.vault_name, &s.key.name, s.version.as_deref())?,
            KEYS,
        ),
        KeyCmd::List { vault_name } => p.table(&inst.list_keys(&vault_name)?, KEY_ITEMS),
        KeyCmd::ListVersions(k) => p.table(
            &inst.list_key_versions(&k.vault_name, &k.name)?,
            KEY_VERSIONS,
        ),
        KeyCmd::SetAttributes { key, attrs } => p.table(
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
            KEYS,
        ),
        KeyCmd::Delete(k) => p.table(&inst.delete_key(&k.vault_name, &k.name)?, DELETED_KEYS),
        KeyCmd::ListDeleted { vault_name } => {
            p.table(&inst.list_deleted_keys(&vault_name)?, DELETED_KEYS)
        }
        KeyCmd::Recover(k) => p.table(&inst.recover_key(&k.vault_name, &k.name)?, KEYS),
        KeyCmd::Purge(k) => p.table(&inst.purge_key(&k.vault_name, &k.name)?, STATUS),
        KeyCmd::Rotate(k) => p.table(&inst.rotate_key(&k.vault_name, &k.name)?, KEYS),
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
        KeyCmd::Wrap(c) => p.table(&crypto(inst, &c, "wrapKey")?, KEY_RESULTS),
        KeyCmd::Encrypt(c) => p.table(&crypto(inst, &c, "encrypt")?, KEY_RESULTS),
        KeyCmd::Unwrap(c) => p.table(&crypto(inst, &c, "unwrapKey")?, KEY_RESULTS),
        KeyCmd::Decrypt(c) => p.table(&crypto(inst, &c, "decrypt")?, KEY_RESULTS),
        KeyCmd::Sign(c) => p.table(&crypto(inst, &c, "sign")?, KEY_RESULTS),
        KeyCmd::Verify { op: c, signature } => p.table(
            &inst.key_verify(&key_ref(inst, &c), &c.algorithm, &c.value, &signature)?,
            VERIFY_RESULTS,
        ),
        KeyCmd::RotationPolicy(r) => match r {
            RotationCmd::Show(k) => p.table(
                &inst.show_rotation_policy(&k.vault_name, &k.name)?,
                ROTATION_POLICIES,
            ),
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
                p.table(
                    &inst.update_rotation_policy(&key.vault_name, &key.name, &text)?,
                    ROTATION_POLICIES,
                )
            }
        },
    }
    Ok(())
}

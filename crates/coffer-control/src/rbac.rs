//! Azure RBAC: built-in role definitions (real names, GUIDs, actions and
//! dataActions), role assignments, and the authorization check.
//!
//! A role assignment at a scope applies to that scope and everything below it
//! (subscription ⊃ resource group ⊃ resource ⊃ `/keys/NAME`); scopes compare
//! case-insensitively by path segment. Action patterns may contain `*`, which
//! matches any run of characters (`Microsoft.KeyVault/vaults/keys/*`, `*/read`).
//! The instance administrator holds an implicit Owner assignment at the
//! subscription scope (management actions only, like a real Owner: no dataActions).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use coffer_catalog::RoleAssignmentRow;
use serde_json::{Value, json};

use crate::{Error, ErrorCode, Instance, Result, util};

/// A built-in role definition.
#[derive(Debug)]
pub struct RoleDefinition {
    /// Role name, e.g. `Key Vault Crypto User`.
    pub name: &'static str,
    /// Role definition GUID.
    pub id: &'static str,
    /// Description.
    pub description: &'static str,
    /// Management-plane actions.
    pub actions: &'static [&'static str],
    /// Excluded management-plane actions.
    pub not_actions: &'static [&'static str],
    /// Data-plane actions.
    pub data_actions: &'static [&'static str],
    /// Excluded data-plane actions.
    pub not_data_actions: &'static [&'static str],
    /// A managed-HSM local role (scope `/` or `/keys/NAME` of one HSM).
    pub hsm_local: bool,
}

const KV_MGMT_ACTIONS: &[&str] = &[
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Support/*",
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/operations/read",
];
const RBAC_ONLY: &str =
    "Only works for key vaults that use the 'Azure role-based access control' permission model.";

/// Every built-in role Coffer knows.
pub const BUILT_IN_ROLES: &[RoleDefinition] = &[
    RoleDefinition {
        name: "Owner",
        id: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
        hsm_local: false,
    },
    RoleDefinition {
        name: "Contributor",
        id: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Purview/consents/write",
            "Microsoft.Purview/consents/delete",
            "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
            "Microsoft.Subscription/cancel/action",
            "Microsoft.Subscription/enable/action",
        ],
        data_actions: &[],
        not_data_actions: &[],
        hsm_local: false,
    },
    RoleDefinition {
        name: "Reader",
        id: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
        hsm_local: false,
    },
    RoleDefinition {
        name: "Key Vault Administrator",
        id: "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        description: RBAC_ONLY,
        actions: KV_MGMT_ACTIONS,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/*"],
        not_data_actions: &[],
        hsm_local: false,
    },
    RoleDefinition {
        name: "Key Vault Crypto Officer",
        id: "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
        description: RBAC_ONLY,
        actions: KV_MGMT_ACTIONS,
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/*",
            "Microsoft.KeyVault/vaults/keyrotationpolicies/*",
        ],
        not_data_actions: &[],
        hsm_local: false,
    },
    RoleDefinition {
        name: "Key Vault Crypto User",
        id: "12338af0-0e69-4776-bea7-57ae8d297424",
        description: RBAC_ONLY,
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/update/action",
            "Microsoft.KeyVault/vaults/keys/backup/action",
            "Microsoft.KeyVault/vaults/keys/encrypt/action",
            "Microsoft.KeyVault/vaults/keys/decrypt/action",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
            "Microsoft.KeyVault/vaults/keys/sign/action",
            "Microsoft.KeyVault/vaults/keys/verify/action",
        ],
        not_data_actions: &[],
        hsm_local: false,
    },
    RoleDefinition {
        name: "Key Vault Crypto Service Encryption User",
        id: "e147488a-f6f5-4113-8e2d-b22465e65bf6",
        description: RBAC_ONLY,
        actions: &[
            "Microsoft.EventGrid/eventSubscriptions/write",
            "Microsoft.EventGrid/eventSubscriptions/read",
            "Microsoft.EventGrid/eventSubscriptions/delete",
        ],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
        ],
        not_data_actions: &[],
        hsm_local: false,
    },
    RoleDefinition {
        name: "Key Vault Reader",
        id: "21090545-7ca7-4776-b22c-e363652d74d2",
        description: RBAC_ONLY,
        actions: KV_MGMT_ACTIONS,
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
        not_data_actions: &[],
        hsm_local: false,
    },
    RoleDefinition {
        name: "Managed HSM Administrator",
        id: "a290e904-7015-4bba-90c8-60543313cdb4",
        description: "Managed HSM local role: manage role assignments, security domain, backup and restore.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/roleAssignments/*",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/*",
            "Microsoft.KeyVault/managedHsm/securitydomain/*",
            "Microsoft.KeyVault/managedHsm/backup/*",
            "Microsoft.KeyVault/managedHsm/restore/*",
        ],
        not_data_actions: &[],
        hsm_local: true,
    },
    RoleDefinition {
        name: "Managed HSM Crypto Officer",
        id: "515eb02d-2335-4d2d-92f2-b1cbdf9c3778",
        description: "Managed HSM local role: manage keys (create, delete, purge, rotate, role assignments), no cryptographic operations.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/keys/*",
            "Microsoft.KeyVault/managedHsm/roleAssignments/*",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/read/action",
        ],
        not_data_actions: &[
            "Microsoft.KeyVault/managedHsm/keys/encrypt/action",
            "Microsoft.KeyVault/managedHsm/keys/decrypt/action",
            "Microsoft.KeyVault/managedHsm/keys/wrap/action",
            "Microsoft.KeyVault/managedHsm/keys/unwrap/action",
            "Microsoft.KeyVault/managedHsm/keys/sign/action",
            "Microsoft.KeyVault/managedHsm/keys/verify/action",
        ],
        hsm_local: true,
    },
    RoleDefinition {
        name: "Managed HSM Crypto User",
        id: "21dbd100-6940-42c2-9190-5d6cb909625b",
        description: "Managed HSM local role: create and use keys.",
        actions: &[],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/managedHsm/keys/*"],
        not_data_actions: &[
            "Microsoft.KeyVault/managedHsm/keys/deletedKeys/delete",
            "Microsoft.KeyVault/managedHsm/keys/export/action",
        ],
        hsm_local: true,
    },
    RoleDefinition {
        name: "Managed HSM Crypto Service Encryption User",
        id: "33413926-3206-4cdd-b39a-83574fe37a17",
        description: "Managed HSM local role: read keys and wrap/unwrap with them (service encryption).",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/keys/read/action",
            "Microsoft.KeyVault/managedHsm/keys/wrap/action",
            "Microsoft.KeyVault/managedHsm/keys/unwrap/action",
        ],
        not_data_actions: &[],
        hsm_local: true,
    },
    RoleDefinition {
        name: "Managed HSM Policy Administrator",
        id: "4bd23610-cdcf-4971-bdee-bdc562cc28e4",
        description: "Managed HSM local role: manage role assignments and definitions.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/roleAssignments/*",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/*",
        ],
        not_data_actions: &[],
        hsm_local: true,
    },
    RoleDefinition {
        name: "Managed HSM Crypto Auditor",
        id: "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3",
        description: "Managed HSM local role: read key metadata and deleted keys.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/keys/read/action",
            "Microsoft.KeyVault/managedHsm/keys/deletedKeys/read/action",
        ],
        not_data_actions: &[],
        hsm_local: true,
    },
    RoleDefinition {
        name: "Managed HSM Backup",
        id: "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8",
        description: "Managed HSM local role: full backups.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/backup/start/action",
            "Microsoft.KeyVault/managedHsm/backup/status/action",
        ],
        not_data_actions: &[],
        hsm_local: true,
    },
];

/// `true` if `pattern` (with `*` wildcards) matches `action`, case-insensitively.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match p.split_first() {
            None => a.is_empty(),
            Some((b'*', rest)) => (0..=a.len()).any(|i| go(rest, &a[i..])),
            Some((c, rest)) => a
                .split_first()
                .is_some_and(|(d, arest)| c.eq_ignore_ascii_case(d) && go(rest, arest)),
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

/// `true` if an assignment at `scope` applies to `target` (same or below it).
pub fn scope_covers(scope: &str, target: &str) -> bool {
    let seg = |s: &str| -> Vec<String> {
        s.split('/')
            .filter(|x| !x.is_empty())
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let (s, t) = (seg(scope), seg(target));
    s.len() <= t.len() && s.iter().zip(&t).all(|(a, b)| a == b)
}

impl RoleDefinition {
    /// Whether the role grants `action` (data action if `data`).
    pub fn grants(&self, action: &str, data: bool) -> bool {
        let (allow, deny) = if data {
            (self.data_actions, self.not_data_actions)
        } else {
            (self.actions, self.not_actions)
        };
        allow.iter().any(|p| action_matches(p, action))
            && !deny.iter().any(|p| action_matches(p, action))
    }

    /// ARM shape of the definition.
    fn to_json(&self, subscription: &str) -> Value {
        let id = if self.hsm_local {
            format!(
                "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.id
            )
        } else {
            format!(
                "/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.id
            )
        };
        json!({
            "id": id,
            "name": self.id,
            "type": "Microsoft.Authorization/roleDefinitions",
            "roleName": self.name,
            "roleType": if self.hsm_local { "AKVBuiltInRole" } else { "BuiltInRole" },
            "description": self.description,
            "assignableScopes": ["/"],
            "permissions": [{
                "actions": self.actions,
                "notActions": self.not_actions,
                "dataActions": self.data_actions,
                "notDataActions": self.not_data_actions,
            }],
        })
    }
}

/// Finds a built-in role by name (case-insensitive), GUID, or full definition id.
pub fn find_role(name_or_id: &str) -> Result<&'static RoleDefinition> {
    let key = name_or_id.trim().rsplit('/').next().unwrap_or_default();
    BUILT_IN_ROLES
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(name_or_id.trim()) || r.id.eq_ignore_ascii_case(key))
        .ok_or_else(|| {
            Error::new(
                ErrorCode::RoleDefinitionNotFound,
                format!("no built-in role definition named or with id '{name_or_id}'"),
            )
        })
}

fn role_by_id(id: &str) -> Option<&'static RoleDefinition> {
    BUILT_IN_ROLES
        .iter()
        .find(|r| r.id.eq_ignore_ascii_case(id))
}

/// The role assignments an [`Instance`] read, per managed HSM (`None`: Azure RBAC),
/// valid for one value of the catalog's change counter of assignments.
#[derive(Debug, Default)]
pub(crate) struct AssignmentCache(Mutex<CachedAssignments>);

#[derive(Debug, Default)]
struct CachedAssignments {
    checked: crate::row_cache::Checked,
    lists: HashMap<Option<String>, Arc<Vec<RoleAssignmentRow>>>,
}

/// Which role assignments `role assignment delete` removes: by id, or by every
/// given one of role (name or id), assignee and scope (at least one must be given).
#[derive(Clone, Copy, Debug, Default)]
pub struct AssignmentSelector<'a> {
    /// Assignment id (or its full ARM id).
    pub id: Option<&'a str>,
    /// Role name or definition id.
    pub role: Option<&'a str>,
    /// Principal id.
    pub assignee: Option<&'a str>,
    /// Exact scope.
    pub scope: Option<&'a str>,
}

impl Instance {
    /// The built-in role definitions (Azure RBAC and managed-HSM local).
    pub fn list_role_definitions(&self, hsm_local: Option<bool>) -> Vec<Value> {
        BUILT_IN_ROLES
            .iter()
            .filter(|r| hsm_local.is_none_or(|h| h == r.hsm_local))
            .map(|r| r.to_json(self.subscription_id()))
            .collect()
    }

    /// The subscription scope `/subscriptions/{id}`.
    pub(crate) fn subscription_scope(&self) -> String {
        format!("/subscriptions/{}", self.subscription_id())
    }

    /// Whether `principal` holds `action` (a data action if `data`) at `scope`,
    /// through the Azure RBAC assignments (`hsm = None`) or one HSM's local ones.
    pub(crate) fn rbac_allows(
        &self,
        principal: &str,
        scope: &str,
        action: &str,
        data: bool,
        hsm: Option<&str>,
    ) -> Result<bool> {
        if hsm.is_none() && !data && principal.eq_ignore_ascii_case(self.admin_principal()) {
            return Ok(true); // implicit Owner at the subscription
        }
        let ignored = self
            .ignored_assignments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(self
            .role_assignments_current(hsm)?
            .iter()
            .filter(|a| !ignored.contains(&a.id))
            .filter(|a| a.principal_id.eq_ignore_ascii_case(principal))
            .filter(|a| scope_covers(&a.scope, scope))
            .filter_map(|a| role_by_id(&a.role_definition_id))
            .any(|r| r.grants(action, data)))
    }

    /// The role assignments of Azure RBAC (`hsm = None`) or of one managed HSM as the
    /// catalog holds them now: from this instance's cache when nothing was committed
    /// since they were checked or the catalog's change counter of assignments has not
    /// moved since they were read, else read again.
    fn role_assignments_current(&self, hsm: Option<&str>) -> Result<Arc<Vec<RoleAssignmentRow>>> {
        let before = self.catalog.settled_commits();
        let mut cache = self
            .assignment_cache
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !cache.checked.is_current(before) {
            // The counter is read first: assignments read after it are at least as new.
            let generation = self.catalog.role_assignments_generation()?;
            if cache.checked.confirm(&self.catalog, generation, before) {
                cache.lists.clear();
            }
        }
        let key = hsm.map(str::to_owned);
        if let Some(list) = cache.lists.get(&key) {
            return Ok(Arc::clone(list));
        }
        let list = Arc::new(self.catalog.role_assignments(hsm)?);
        cache.lists.insert(key, Arc::clone(&list));
        Ok(list)
    }

    /// Authorization as if the role assignments `ids` did not exist, until the
    /// returned guard drops (to evaluate a deletion before making it).
    pub(crate) fn rbac_what_if(&self, ids: &[String]) -> impl Drop + '_ {
        struct Restore<'a>(&'a Instance, Vec<String>);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                *self
                    .0
                    .ignored_assignments
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = std::mem::take(&mut self.1);
            }
        }
        let mut g = self
            .ignored_assignments
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let before = g.clone();
        g.extend(ids.iter().cloned());
        drop(g);
        Restore(self, before)
    }

    /// Management-plane authorization: `AuthorizationFailed` unless the acting
    /// principal holds `action` at `scope`.
    pub(crate) fn authorize_action(&self, scope: &str, action: &str) -> Result<()> {
        if self.rbac_allows(self.principal(), scope, action, false, None)? {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::AuthorizationFailed,
            format!(
                "The client with object id '{}' does not have authorization to perform action \
                 '{action}' over scope '{scope}' or the scope is invalid.",
                self.principal()
            ),
        ))
    }

    fn assignment_json(&self, a: &RoleAssignmentRow) -> Value {
        let role = role_by_id(&a.role_definition_id);
        let (id, def_id) = if a.hsm_guid.is_some() {
            (
                format!(
                    "{}/providers/Microsoft.Authorization/roleAssignments/{}",
                    a.scope.trim_end_matches('/'),
                    a.id
                ),
                format!(
                    "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{}",
                    a.role_definition_id
                ),
            )
        } else {
            (
                format!(
                    "{}/providers/Microsoft.Authorization/roleAssignments/{}",
                    a.scope, a.id
                ),
                format!(
                    "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{}",
                    self.subscription_id(),
                    a.role_definition_id
                ),
            )
        };
        json!({
            "id": id,
            "name": a.id,
            "type": "Microsoft.Authorization/roleAssignments",
            "principalId": a.principal_id,
            "roleDefinitionId": def_id,
            "roleDefinitionName": role.map(|r| r.name),
            "scope": a.scope,
            "createdOn": a.created,
            "createdBy": a.created_by,
        })
    }

    /// Creates a role assignment. `hsm_guid` selects a managed HSM's local RBAC.
    pub(crate) fn create_assignment(
        &self,
        role: &str,
        assignee: &str,
        scope: &str,
        hsm_guid: Option<&str>,
    ) -> Result<Value> {
        let r = find_role(role)?;
        if r.hsm_local != hsm_guid.is_some() {
            return Err(Error::invalid(format!(
                "role '{}' is {} role; use it with {}",
                r.name,
                if r.hsm_local {
                    "a managed HSM local"
                } else {
                    "an Azure RBAC"
                },
                if r.hsm_local {
                    "`coffer keyvault role assignment create --hsm-name`"
                } else {
                    "`coffer role assignment create`"
                }
            )));
        }
        let p = self.catalog.principal(assignee.trim())?.ok_or_else(|| {
            Error::new(
                ErrorCode::IdentityNotFound,
                format!("no principal with id '{assignee}' exists in this instance"),
            )
        })?;
        let row = RoleAssignmentRow {
            id: util::new_guid(),
            role_definition_id: r.id.to_owned(),
            principal_id: p.principal_id,
            scope: scope.to_owned(),
            hsm_guid: hsm_guid.map(str::to_owned),
            created: util::now_rfc3339(),
            created_by: self.principal().to_owned(),
        };
        self.catalog.create_role_assignment(&row)?;
        Ok(self.assignment_json(&row))
    }

    /// `coffer role assignment create`.
    pub fn create_role_assignment(&self, role: &str, assignee: &str, scope: &str) -> Result<Value> {
        let scope = self.validate_scope(scope)?;
        self.authorize_action(&scope, "Microsoft.Authorization/roleAssignments/write")?;
        let r = self.create_assignment(role, assignee, &scope, None);
        self.audit("Microsoft.Authorization/roleAssignments/write", &scope, &r);
        r
    }

    fn validate_scope(&self, scope: &str) -> Result<String> {
        let scope = scope.trim().trim_end_matches('/').to_owned();
        if !scope_covers(&self.subscription_scope(), &scope) {
            return Err(Error::invalid(format!(
                "scope '{scope}' is not under this instance's subscription {}",
                self.subscription_scope()
            )));
        }
        Ok(scope)
    }

    /// `coffer role assignment list` (optionally filtered by assignee and scope: an
    /// assignment is listed when its scope is at or above `scope`).
    pub fn list_role_assignments(
        &self,
        assignee: Option<&str>,
        scope: Option<&str>,
        hsm_guid: Option<&str>,
    ) -> Result<Vec<Value>> {
        Ok(self
            .catalog
            .role_assignments(hsm_guid)?
            .iter()
            .filter(|a| assignee.is_none_or(|p| a.principal_id.eq_ignore_ascii_case(p.trim())))
            .filter(|a| {
                scope.is_none_or(|s| scope_covers(&a.scope, s) || scope_covers(s, &a.scope))
            })
            .map(|a| self.assignment_json(a))
            .collect())
    }

    /// Deletes the role assignments `sel` picks.
    pub(crate) fn delete_assignments(
        &self,
        sel: &AssignmentSelector<'_>,
        hsm_guid: Option<&str>,
        force: bool,
    ) -> Result<Vec<Value>> {
        let AssignmentSelector {
            id,
            role,
            assignee,
            scope,
        } = *sel;
        let role = role.map(find_role).transpose()?;
        let all = self.catalog.role_assignments(hsm_guid)?;
        let doomed: Vec<_> = all
            .iter()
            .filter(|a| {
                id.is_none_or(|i| {
                    a.id.eq_ignore_ascii_case(i.trim().rsplit('/').next().unwrap_or(i))
                })
            })
            .filter(|a| role.is_none_or(|r| a.role_definition_id.eq_ignore_ascii_case(r.id)))
            .filter(|a| assignee.is_none_or(|p| a.principal_id.eq_ignore_ascii_case(p.trim())))
            .filter(|a| {
                scope.is_none_or(|s| {
                    a.scope
                        .trim_end_matches('/')
                        .eq_ignore_ascii_case(s.trim().trim_end_matches('/'))
                        || (s.trim() == "/" && a.scope == "/")
                })
            })
            .collect();
        if doomed.is_empty()
            || (id.is_none() && role.is_none() && assignee.is_none() && scope.is_none())
        {
            return Err(Error::new(
                ErrorCode::RoleAssignmentNotFound,
                "no role assignment matches the given id, role, assignee and scope",
            ));
        }
        if hsm_guid.is_none() {
            for a in &doomed {
                self.authorize_action(&a.scope, "Microsoft.Authorization/roleAssignments/delete")?;
            }
        }
        let ids: Vec<String> = doomed.iter().map(|a| a.id.clone()).collect();
        self.refuse_if_cuts_off_cmk(None, &|kv| kv.clone(), &ids, force)?;
        let mut out = Vec::new();
        for a in doomed {
            self.catalog.delete_role_assignment(&a.id)?;
            out.push(self.assignment_json(a));
        }
        Ok(out)
    }

    /// `coffer role assignment delete`. Refused when it would cut a backup vault off
    /// its customer-managed key, unless `force`.
    pub fn delete_role_assignments(
        &self,
        sel: &AssignmentSelector<'_>,
        force: bool,
    ) -> Result<Vec<Value>> {
        let r = self.delete_assignments(sel, None, force);
        self.audit(
            "Microsoft.Authorization/roleAssignments/delete",
            sel.scope.unwrap_or("/"),
            &r,
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_scopes() {
        assert!(action_matches(
            "Microsoft.KeyVault/vaults/keys/*",
            "microsoft.keyvault/vaults/keys/wrap/action"
        ));
        assert!(action_matches("*/read", "Microsoft.KeyVault/vaults/read"));
        assert!(!action_matches(
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/wrap/action"
        ));
        assert!(scope_covers(
            "/subscriptions/s",
            "/subscriptions/S/resourceGroups/g/providers/x/y/keys/k"
        ));
        assert!(!scope_covers(
            "/subscriptions/s/resourceGroups/g/providers/x/y/keys/k",
            "/subscriptions/s/resourceGroups/g/providers/x/y/keys/k2"
        ));
        assert!(!scope_covers("/a/b/keys/k", "/a/b/keys/kk"));
        let officer = find_role("Key Vault Crypto Officer").unwrap();
        assert!(officer.grants("Microsoft.KeyVault/vaults/keys/unwrap/action", true));
        let contributor = find_role("b24988ac-6180-42a0-ab88-20f7382dd24c").unwrap();
        assert!(contributor.grants("Microsoft.KeyVault/vaults/write", false));
        assert!(!contributor.grants("Microsoft.Authorization/roleAssignments/write", false));
        assert!(
            !find_role("Managed HSM Crypto Officer")
                .unwrap()
                .grants("Microsoft.KeyVault/managedHsm/keys/wrap/action", true)
        );
    }
}

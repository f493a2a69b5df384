//! Managed identities (`az identity`): user-assigned identities are resources in a
//! resource group with a `principalId` (object id) and a `clientId`; the instance
//! administrator is a principal of kind `Administrator`. System-assigned identities
//! are principals owned by one resource (`owner_resource_id`), created when enabled
//! on it and deleted with it ([`Instance::ensure_system_identity`], for part 3).

use coffer_catalog::PrincipalRow;
use serde_json::{Value, json};

use crate::{Error, ErrorCode, Instance, Result, util, validate_group_name};

const UAI_TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";

impl Instance {
    pub(crate) fn identity_id(&self, group: &str, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{group}/providers/{UAI_TYPE}/{name}",
            self.subscription_id()
        )
    }

    fn group_scope(&self, group: &str) -> String {
        format!("{}/resourceGroups/{group}", self.subscription_scope())
    }

    fn identity_json(&self, p: &PrincipalRow) -> Value {
        let group = p.resource_group.clone().unwrap_or_default();
        let name = p.name.clone().unwrap_or_default();
        json!({
            "id": self.identity_id(&group, &name),
            "name": name,
            "type": UAI_TYPE,
            "location": crate::DEFAULT_LOCATION,
            "resourceGroup": group,
            "principalId": p.principal_id,
            "clientId": p.client_id,
            "tenantId": self.row.tenant_id,
            "tags": serde_json::from_str::<Value>(&p.tags_json).unwrap_or(json!({})),
        })
    }

    fn check_identity_name(name: &str) -> Result<()> {
        let ok = (3..=128).contains(&name.len())
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        crate::names::name_rule(ok, || {
            format!(
                "invalid identity name '{name}': 3-128 ASCII letters, digits, '-' or '_', starting with a letter or digit"
            )
        })
    }

    /// `coffer identity create`.
    pub fn create_identity(&self, group: &str, name: &str) -> Result<Value> {
        validate_group_name(group)?;
        Self::check_identity_name(name)?;
        let g = self.group_row(group)?;
        let id = self.identity_id(&g.name, name);
        let r = (|| {
            self.authorize_action(&id, &format!("{UAI_TYPE}/write"))?;
            let row = PrincipalRow {
                principal_id: util::new_guid(),
                kind: "UserAssigned".into(),
                name: Some(name.to_owned()),
                resource_group: Some(g.name.clone()),
                client_id: util::new_guid(),
                owner_resource_id: None,
                created: util::now_rfc3339(),
                created_by: self.principal().to_owned(),
                tags_json: "{}".into(),
            };
            self.catalog.create_principal(&row)?;
            Ok(self.identity_json(&row))
        })();
        self.audit(&format!("{UAI_TYPE}/write"), &id, &r);
        r
    }

    fn find_identity(&self, group: &str, name: &str) -> Result<PrincipalRow> {
        self.catalog.user_identity(group, name)?.ok_or_else(|| {
            Error::new(
                ErrorCode::IdentityNotFound,
                format!("managed identity '{name}' does not exist in resource group '{group}'"),
            )
        })
    }

    /// `coffer identity show`.
    pub fn show_identity(&self, group: &str, name: &str) -> Result<Value> {
        let p = self.find_identity(group, name)?;
        self.authorize_action(&self.identity_id(group, name), &format!("{UAI_TYPE}/read"))?;
        Ok(self.identity_json(&p))
    }

    /// `coffer identity list` (user-assigned identities, optionally of one group).
    pub fn list_identities(&self, group: Option<&str>) -> Result<Vec<Value>> {
        let scope = group.map_or_else(|| self.subscription_scope(), |g| self.group_scope(g));
        self.authorize_action(&scope, &format!("{UAI_TYPE}/read"))?;
        Ok(self
            .catalog
            .principals()?
            .iter()
            .filter(|p| p.kind == "UserAssigned")
            .filter(|p| {
                group.is_none_or(|g| {
                    p.resource_group
                        .as_deref()
                        .is_some_and(|r| r.eq_ignore_ascii_case(g))
                })
            })
            .map(|p| self.identity_json(p))
            .collect())
    }

    /// `coffer identity delete` (its role assignments go with it). Refused while a
    /// backup vault's customer-managed key is used through it, unless `force`.
    pub fn delete_identity(&self, group: &str, name: &str, force: bool) -> Result<Value> {
        let id = self.identity_id(group, name);
        let r = (|| {
            let p = self.find_identity(group, name)?;
            self.authorize_action(&id, &format!("{UAI_TYPE}/delete"))?;
            if !force {
                self.refuse_if_encryption_identity(&p.principal_id)?;
            }
            self.catalog.delete_principal(&p.principal_id)?;
            Ok(json!({ "id": id, "status": "Deleted" }))
        })();
        self.audit(&format!("{UAI_TYPE}/delete"), &id, &r);
        r
    }

    /// The system-assigned identity of resource `owner_resource_id`, created on first
    /// call (part 3 enables it on backup vaults). Returns its principal id.
    pub fn ensure_system_identity(&self, owner_resource_id: &str) -> Result<String> {
        if let Some(p) = self.catalog.principals()?.into_iter().find(|p| {
            p.kind == "SystemAssigned"
                && p.owner_resource_id
                    .as_deref()
                    .is_some_and(|o| o.eq_ignore_ascii_case(owner_resource_id))
        }) {
            return Ok(p.principal_id);
        }
        let row = PrincipalRow {
            principal_id: util::new_guid(),
            kind: "SystemAssigned".into(),
            name: None,
            resource_group: None,
            client_id: util::new_guid(),
            owner_resource_id: Some(owner_resource_id.to_owned()),
            created: util::now_rfc3339(),
            created_by: self.principal().to_owned(),
            tags_json: "{}".into(),
        };
        self.catalog.create_principal(&row)?;
        Ok(row.principal_id)
    }

    /// Deletes the system-assigned identity of a resource (with its role assignments).
    pub fn delete_system_identity(&self, owner_resource_id: &str) -> Result<bool> {
        for p in self.catalog.principals()? {
            if p.kind == "SystemAssigned"
                && p.owner_resource_id
                    .as_deref()
                    .is_some_and(|o| o.eq_ignore_ascii_case(owner_resource_id))
            {
                return Ok(self.catalog.delete_principal(&p.principal_id)?);
            }
        }
        Ok(false)
    }
}

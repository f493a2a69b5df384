//! Resource groups: create, show, list, delete (only when empty).

use std::collections::BTreeMap;

use coffer_catalog::ResourceGroupRow;

use crate::{
    DEFAULT_LOCATION, Error, ErrorCode, Instance, Result,
    names::validate_group_name,
    resources::{DeleteResult, GROUP_TYPE, ProvisioningProperties, ResourceGroupResource},
    util::now_rfc3339,
};

const GROUP_READ: &str = "Microsoft.Resources/subscriptions/resourceGroups/read";
const GROUP_WRITE: &str = "Microsoft.Resources/subscriptions/resourceGroups/write";
const GROUP_DELETE: &str = "Microsoft.Resources/subscriptions/resourceGroups/delete";

impl Instance {
    pub(crate) fn group_id(&self, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.row.subscription_id, name
        )
    }

    pub(crate) fn group_row(&self, name: &str) -> Result<ResourceGroupRow> {
        self.catalog.group(name)?.ok_or_else(|| {
            Error::new(
                ErrorCode::ResourceGroupNotFound,
                format!("resource group '{name}' does not exist"),
            )
        })
    }

    fn group_resource(&self, g: &ResourceGroupRow) -> ResourceGroupResource {
        ResourceGroupResource {
            id: self.group_id(&g.name),
            name: g.name.clone(),
            resource_type: GROUP_TYPE.to_owned(),
            location: g.location.clone(),
            tags: parse_tags(&g.tags_json),
            properties: ProvisioningProperties {
                provisioning_state: "Succeeded".to_owned(),
            },
        }
    }

    /// Creates a resource group.
    pub fn create_resource_group(
        &self,
        name: &str,
        location: Option<&str>,
        tags: BTreeMap<String, String>,
    ) -> Result<ResourceGroupResource> {
        let r = (|| {
            self.authorize_action(&self.group_id(name), GROUP_WRITE)?;
            validate_group_name(name)?;
            let row = ResourceGroupRow {
                name: name.to_owned(),
                location: location.unwrap_or(DEFAULT_LOCATION).to_owned(),
                created: now_rfc3339(),
                created_by: self.principal().to_owned(),
                tags_json: tags_json(&tags),
            };
            self.catalog.create_group(&row)?;
            Ok(self.group_resource(&row))
        })();
        self.audit(
            "Microsoft.Resources/resourceGroups/write",
            &self.group_id(name),
            &r,
        );
        r
    }

    /// Shows a resource group.
    pub fn show_resource_group(&self, name: &str) -> Result<ResourceGroupResource> {
        self.authorize_action(&self.group_id(name), GROUP_READ)?;
        Ok(self.group_resource(&self.group_row(name)?))
    }

    /// Lists resource groups.
    pub fn list_resource_groups(&self) -> Result<Vec<ResourceGroupResource>> {
        Ok(self
            .catalog
            .groups()?
            .iter()
            .filter(|g| {
                self.authorize_action(&self.group_id(&g.name), GROUP_READ)
                    .is_ok()
            })
            .map(|g| self.group_resource(g))
            .collect())
    }

    /// Deletes an empty resource group.
    pub fn delete_resource_group(&self, name: &str) -> Result<DeleteResult> {
        let r = (|| {
            self.authorize_action(&self.group_id(name), GROUP_DELETE)?;
            if self.catalog.delete_group(name)? {
                Ok(DeleteResult {
                    job_id: None,
                    id: self.group_id(name),
                    reclaimed_bytes: 0,
                })
            } else {
                Err(Error::new(
                    ErrorCode::ResourceGroupNotFound,
                    format!("resource group '{name}' does not exist"),
                ))
            }
        })();
        self.audit(
            "Microsoft.Resources/resourceGroups/delete",
            &self.group_id(name),
            &r,
        );
        r
    }
}

pub(crate) fn tags_json(tags: &BTreeMap<String, String>) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "{}".to_owned())
}

pub(crate) fn parse_tags(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str(json).unwrap_or_default()
}

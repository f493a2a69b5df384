//! Catalog tables of part 3: a backup vault's managed identities and its
//! customer-managed-key settings (`vault_settings`, one row per vault that has any),
//! and instance-wide name/value settings (`settings`).

use rusqlite::{OptionalExtension, params};

use crate::{Catalog, Result};

/// A backup vault's identity and encryption settings, as JSON documents owned by
/// the control plane (`{}` / `None` when never set).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaultSettingsRow {
    /// Managed identities of the vault (JSON object).
    pub identity_json: String,
    /// Customer-managed-key settings (JSON object); `None` for a PMK vault.
    pub encryption_json: Option<String>,
}

impl Catalog {
    /// The settings of vault `guid` (defaults when the vault has none).
    pub fn vault_settings(&self, guid: &str) -> Result<VaultSettingsRow> {
        Ok(self
            .conn
            .query_row(
                "SELECT identity_json, encryption_json FROM vault_settings WHERE vault_guid = ?1",
                [guid],
                |r| {
                    Ok(VaultSettingsRow {
                        identity_json: r.get(0)?,
                        encryption_json: r.get(1)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_else(|| VaultSettingsRow {
                identity_json: "{}".into(),
                encryption_json: None,
            }))
    }

    /// Replaces the identity settings of vault `guid`.
    pub fn set_vault_identity(&self, guid: &str, identity_json: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO vault_settings (vault_guid, identity_json) VALUES (?1, ?2) \
             ON CONFLICT (vault_guid) DO UPDATE SET identity_json = excluded.identity_json",
            params![guid, identity_json],
        )?;
        Ok(())
    }

    /// Replaces, in one transaction, a vault's wrapped DEK record, its encryption
    /// state and its customer-managed-key settings.
    pub fn set_vault_encryption(
        &self,
        guid: &str,
        wrapped_key_json: &str,
        encryption_state: &str,
        encryption_json: &str,
    ) -> Result<()> {
        let tx = self.tx()?;
        tx.execute(
            "UPDATE backup_vaults SET wrapped_key_json = ?2, encryption_state = ?3 WHERE guid = ?1",
            params![guid, wrapped_key_json, encryption_state],
        )?;
        tx.execute(
            "INSERT INTO vault_settings (vault_guid, encryption_json) VALUES (?1, ?2) \
             ON CONFLICT (vault_guid) DO UPDATE SET encryption_json = excluded.encryption_json",
            params![guid, encryption_json],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces only the customer-managed-key settings document of vault `guid`
    /// (e.g. its key-access health), leaving its wrapped DEK and state alone.
    pub fn set_vault_encryption_settings(&self, guid: &str, encryption_json: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE vault_settings SET encryption_json = ?2 WHERE vault_guid = ?1",
            params![guid, encryption_json],
        )?;
        Ok(())
    }

    /// Moves vault `guid` to resource group `group` (which must exist); the system-
    /// assigned identity it owns follows its new ARM id. One transaction.
    /// [`crate::CatalogError::AlreadyExists`] if the group already has a vault of that name.
    pub fn move_vault(&self, guid: &str, group: &str, old_id: &str, new_id: &str) -> Result<()> {
        let tx = self.tx()?;
        tx.execute(
            "UPDATE backup_vaults SET resource_group = ?2 WHERE guid = ?1",
            params![guid, group],
        )
        .map_err(|e| {
            if crate::is_unique_violation(&e) {
                crate::CatalogError::AlreadyExists {
                    kind: "backup vault",
                    name: guid.to_owned(),
                }
            } else {
                e.into()
            }
        })?;
        tx.execute(
            "UPDATE principals SET owner_resource_id = ?2 WHERE owner_resource_id = ?1",
            params![old_id, new_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The value of instance setting `name`, if set.
    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets instance setting `name`.
    pub fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }

    /// Removes instance setting `name` (back to its default); false if it was not set.
    pub fn unset_setting(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM settings WHERE name = ?1", [name])?
            > 0)
    }
}

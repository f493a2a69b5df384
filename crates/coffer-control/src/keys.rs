//! Which key encryption key (KEK) protects a vault's DEK, and unwrapping it.
//!
//! The DEK of a vault is stored only wrapped ([`WrappedKey`]). [`Instance::kek_for`]
//! selects the [`KeyWrapper`] named by the record: today the instance's
//! platform-managed key; customer-managed keys slot in here later without any
//! change to the data path (the engine only ever receives the unwrapped DEK).

use coffer_crypto::{DataKey, KeyWrapper, PlatformKey, WrappedKey, wrap::KekKind};

use crate::{Error, ErrorCode, Instance, Result};

/// The key id of a platform key.
pub(crate) fn describe_pmk(pmk: &PlatformKey) -> String {
    pmk.describe().key_id
}

impl Instance {
    /// The KEK able to unwrap `rec`.
    pub(crate) fn kek_for(&self, rec: &WrappedKey) -> Result<&dyn KeyWrapper> {
        match rec.kek.kind {
            KekKind::PlatformManaged => {
                let ours = self.pmk.describe().key_id;
                if rec.kek.key_id == ours {
                    Ok(&self.pmk)
                } else {
                    Err(Error::new(
                        ErrorCode::EncryptionKeyUnavailable,
                        format!(
                            "the vault's data encryption key is wrapped by platform key {}, \
                             which this instance does not hold (active: {ours})",
                            rec.kek.key_id
                        ),
                    ))
                }
            }
            KekKind::CustomerManaged => Err(Error::new(
                ErrorCode::EncryptionKeyUnavailable,
                format!(
                    "the vault's data encryption key is wrapped by customer-managed key {}, \
                     which this version of coffer cannot use",
                    rec.kek.key_id
                ),
            )),
        }
    }

    /// The platform key new vaults are created with.
    pub(crate) fn active_kek(&self) -> &dyn KeyWrapper {
        &self.pmk
    }

    /// Unwraps a vault's DEK from its catalog record, checking it belongs to `vault_guid`.
    pub(crate) fn unwrap_dek(&self, vault_guid: &str, wrapped_key_json: &str) -> Result<DataKey> {
        let rec = WrappedKey::from_json(wrapped_key_json.as_bytes()).map_err(|_| {
            Error::new(
                ErrorCode::CatalogError,
                "the vault's wrapped data encryption key record in the catalog is malformed",
            )
        })?;
        if rec.vault_id != vault_guid {
            return Err(Error::new(
                ErrorCode::EncryptionKeyUnavailable,
                "the vault's wrapped data encryption key record belongs to another vault",
            ));
        }
        let kek = self.kek_for(&rec)?;
        Ok(rec.open(kek)?)
    }
}

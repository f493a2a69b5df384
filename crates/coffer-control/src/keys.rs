//! Which key encryption key (KEK) protects a vault's DEK, and unwrapping it.
//!
//! The DEK of a vault is stored only wrapped ([`WrappedKey`]). [`Instance::kek_for`]
//! selects the [`KeyWrapper`] named by the record: the instance's platform-managed
//! key, or a customer-managed key reached through the vault's managed identity
//! ([`crate::cmk::CmkWrapper`]). The data path never changes: the engine only ever
//! receives the unwrapped DEK, which is never cached beyond one command.

use coffer_catalog::VaultRow;
use coffer_crypto::{DataKey, KeyWrapper, PlatformKey, WrappedKey, wrap::KekKind};

use crate::{Error, ErrorCode, Instance, Result, cmk::CmkWrapper};

/// The key id of a platform key.
pub(crate) fn describe_pmk(pmk: &PlatformKey) -> String {
    pmk.describe().key_id
}

/// A KEK able to unwrap one record.
pub(crate) enum Kek<'a> {
    /// The instance's platform key.
    Platform(&'a PlatformKey),
    /// A customer-managed key, used as the vault's identity.
    Customer(Box<CmkWrapper<'a>>),
}

impl Kek<'_> {
    pub(crate) fn as_wrapper(&self) -> &dyn KeyWrapper {
        match self {
            Self::Platform(p) => *p,
            Self::Customer(c) => c.as_ref(),
        }
    }
}

impl Instance {
    /// The KEK able to unwrap `rec`, a record of vault `v`.
    pub(crate) fn kek_for(&self, v: &VaultRow, rec: &WrappedKey) -> Result<Kek<'_>> {
        match rec.kek.kind {
            KekKind::PlatformManaged => {
                let ours = self.pmk.describe().key_id;
                if rec.kek.key_id == ours {
                    Ok(Kek::Platform(&self.pmk))
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
            KekKind::CustomerManaged => Ok(Kek::Customer(Box::new(self.cmk_wrapper_for(v, rec)?))),
        }
    }

    /// The platform key new vaults are created with.
    pub(crate) fn active_kek(&self) -> &dyn KeyWrapper {
        &self.pmk
    }

    /// Unwraps a vault's DEK from its catalog record, checking it belongs to the vault.
    pub(crate) fn unwrap_dek(&self, v: &VaultRow) -> Result<DataKey> {
        let rec = WrappedKey::from_json(v.wrapped_key_json.as_bytes()).map_err(|_| {
            Error::new(
                ErrorCode::CatalogError,
                "the vault's wrapped data encryption key record in the catalog is malformed",
            )
        })?;
        if rec.vault_id != v.guid {
            return Err(Error::new(
                ErrorCode::EncryptionKeyUnavailable,
                "the vault's wrapped data encryption key record belongs to another vault",
            ));
        }
        let r = self
            .kek_for(v, &rec)
            .and_then(|kek| Ok(rec.open(kek.as_wrapper())?));
        if rec.kek.kind == KekKind::CustomerManaged {
            self.note_key_access(v, &r);
        }
        r
    }
}

//! Instance-wide settings (`coffer config list|set|unset`), stored in the catalog.
//!
//! Each [`Setting`] has a name, a default and a range; an unset setting has its
//! default. Changing one is a write on the instance (administrator only) and goes to
//! the activity log.

use serde::Serialize;

use crate::{Error, ErrorCode, Instance, Result};

/// A setting of the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// How long an unwrapped DEK of a customer-managed-key vault may be used before
    /// the key vault is asked again (seconds; `0`: ask for every use).
    DekCacheSeconds,
    /// How often Coffer's background work checks every vault with a versionless key
    /// URI for a new key version, besides reacting to key vault events (seconds).
    AutorotationCheckSeconds,
}

impl Setting {
    /// Every setting, in display order.
    pub const ALL: [Self; 2] = [Self::DekCacheSeconds, Self::AutorotationCheckSeconds];

    /// The setting's name, as `coffer config set NAME` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::DekCacheSeconds => "dekCacheSeconds",
            Self::AutorotationCheckSeconds => "autorotationCheckSeconds",
        }
    }

    /// The value of an unset setting.
    pub fn default_value(self) -> u64 {
        match self {
            Self::DekCacheSeconds => 300,
            Self::AutorotationCheckSeconds => 3600,
        }
    }

    fn range(self) -> (u64, u64) {
        match self {
            Self::DekCacheSeconds => (0, 3600),
            Self::AutorotationCheckSeconds => (1, 7 * 86_400),
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::DekCacheSeconds => {
                "longest time an unwrapped customer-managed-key DEK is used before the key vault \
                 is asked again; revoking key access takes effect within it"
            }
            Self::AutorotationCheckSeconds => {
                "interval of the scheduled check of versionless key URIs for new key versions"
            }
        }
    }

    /// The setting called `name` (case-insensitive).
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown setting {name:?}: the settings are {}",
                    Self::ALL.map(Self::name).join(", ")
                ))
            })
    }
}

/// A setting as `coffer config list` shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingValue {
    /// Name.
    pub name: String,
    /// Current value.
    pub value: u64,
    /// Value when unset.
    pub default: u64,
    /// Whether the value was set (not the default).
    pub is_set: bool,
    /// What it controls.
    pub description: String,
}

const INSTANCE_WRITE: &str = "Microsoft.Resources/subscriptions/write";

impl Instance {
    /// The current value of `s`.
    pub fn setting(&self, s: Setting) -> u64 {
        self.catalog
            .setting(s.name())
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| s.default_value())
    }

    fn setting_value(&self, s: Setting) -> Result<SettingValue> {
        let set = self.catalog.setting(s.name())?;
        Ok(SettingValue {
            name: s.name().to_owned(),
            value: self.setting(s),
            default: s.default_value(),
            is_set: set.is_some(),
            description: s.description().to_owned(),
        })
    }

    /// `coffer config list`.
    pub fn list_settings(&self) -> Result<Vec<SettingValue>> {
        Setting::ALL
            .into_iter()
            .map(|s| self.setting_value(s))
            .collect()
    }

    /// `coffer config set NAME VALUE`.
    pub fn set_setting(&self, name: &str, value: &str) -> Result<SettingValue> {
        let s = Setting::from_name(name)?;
        let (lo, hi) = s.range();
        let v: u64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v| (lo..=hi).contains(v))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{} must be a whole number from {lo} to {hi}, not {value:?}",
                    s.name()
                ))
            })?;
        let r = self.write_setting(s, |c| c.set_setting(s.name(), &v.to_string()));
        r.and_then(|()| self.setting_value(s))
    }

    /// `coffer config unset NAME`: back to the default.
    pub fn unset_setting(&self, name: &str) -> Result<SettingValue> {
        let s = Setting::from_name(name)?;
        let r = self.write_setting(s, |c| c.unset_setting(s.name()).map(drop));
        r.and_then(|()| self.setting_value(s))
    }

    fn write_setting(
        &self,
        s: Setting,
        f: impl FnOnce(&coffer_catalog::Catalog) -> coffer_catalog::Result<()>,
    ) -> Result<()> {
        let scope = self.subscription_scope();
        let r = self
            .authorize_action(&scope, INSTANCE_WRITE)
            .and_then(|()| f(&self.catalog).map_err(Error::from));
        self.audit_method(
            INSTANCE_WRITE,
            "PATCH",
            &format!("{scope}/providers/Coffer/settings/{}", s.name()),
            &r,
        );
        r.map_err(|e| {
            if e.code == ErrorCode::AuthorizationFailed {
                Error::new(
                    e.code,
                    format!("{} (settings are the administrator's)", e.message),
                )
            } else {
                e
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_set_validate_and_unset() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::open(dir.path().to_path_buf(), None).unwrap();
        assert_eq!(inst.setting(Setting::DekCacheSeconds), 300);
        let v = inst.set_setting("DEKCACHESECONDS", "2").unwrap();
        assert!(v.is_set && v.value == 2);
        assert_eq!(inst.setting(Setting::DekCacheSeconds), 2);
        for bad in ["-1", "x", "3601"] {
            let e = inst.set_setting("dekCacheSeconds", bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad}");
        }
        assert_eq!(
            inst.set_setting("nope", "1").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let v = inst.unset_setting("dekCacheSeconds").unwrap();
        assert!(!v.is_set && v.value == 300);
    }
}

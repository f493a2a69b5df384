//! Rotation policies (`rotation-policy show|update`) and the key vaults'
//! background work: scheduled purges, Rotate and Notify lifetime actions.

use serde_json::{Value, json};

use super::*;

/// The key's stored rotation policy, if it has one.
fn stored_policy(k: &KeyRow) -> Option<Value> {
    k.rotation_policy_json
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
}

/// A background action's outcome, with a token that cannot be opened now counted as
/// no action (it was audited; the next run tries again).
fn token_may_wait(r: Result<usize>) -> Result<usize> {
    match r {
        Err(e) if e.code == ErrorCode::EncryptionKeyUnavailable => Ok(0),
        r => r,
    }
}

impl Instance {
    /// `exp` for a new version from the key's policy `expiryTime`, if any.
    pub(super) fn policy_expiry(&self, v: &KeyVaultRow, name: &str) -> Result<Option<i64>> {
        let Some(k) = self.catalog.key(&v.guid, name)? else {
            return Ok(None);
        };
        let p = stored_policy(&k).unwrap_or_default();
        match p["attributes"]["expiryTime"].as_str() {
            Some(d) => Ok(Some((util::clock_ms() + parse_iso_duration_ms(d)?) / 1000)),
            None => Ok(None),
        }
    }

    fn policy_json(v: &KeyVaultRow, k: &KeyRow) -> Value {
        let mut p: Value = stored_policy(k).unwrap_or_else(|| {
            json!({ "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}], "attributes": {} })
        });
        p["id"] = json!(format!(
            "{}/keys/{}/rotationpolicy",
            Self::vault_uri(v),
            k.name
        ));
        p
    }

    /// `coffer keyvault key rotation-policy show`.
    pub fn show_rotation_policy(&self, vault: &str, name: &str) -> Result<Value> {
        self.key_mgmt(
            self.principal(),
            vault,
            Some(name),
            "getrotationpolicy",
            "getrotationpolicy",
            |v| {
                let k = self.live_key(v, name)?;
                Ok((Self::policy_json(v, &k), None))
            },
        )
    }

    /// `coffer keyvault key rotation-policy update` with a KeyRotationPolicy JSON document.
    pub fn update_rotation_policy(&self, vault: &str, name: &str, policy: &str) -> Result<Value> {
        self.key_mgmt(self.principal(), vault, Some(name), "setrotationpolicy", "setrotationpolicy", |v| {
            let mut k = self.live_key(v, name)?;
            let p: Value = serde_json::from_str(policy).map_err(|e| bad(format!("the rotation policy is not valid JSON: {e}")))?;
            let mut actions = Vec::new();
            let (mut rotates, mut notifies) = (0, 0);
            for a in p["lifetimeActions"].as_array().cloned().unwrap_or_default() {
                let ty = a["action"]["type"].as_str().unwrap_or_default();
                let ty = if ty.eq_ignore_ascii_case("rotate") { rotates += 1; "Rotate" } else if ty.eq_ignore_ascii_case("notify") { notifies += 1; "Notify" } else {
                    return Err(bad(format!("lifetime action type must be Rotate or Notify, not {ty:?}")));
                };
                let t = &a["trigger"];
                let (after, before) = (t["timeAfterCreate"].as_str(), t["timeBeforeExpiry"].as_str());
                let trigger = match (after, before) {
                    (Some(d), None) if ty == "Rotate" => { parse_iso_duration_ms(d)?; json!({"timeAfterCreate": d}) }
                    (None, Some(d)) => { parse_iso_duration_ms(d)?; json!({"timeBeforeExpiry": d}) }
                    (Some(_), None) => return Err(bad("timeAfterCreate applies to Rotate actions only")),
                    _ => return Err(bad("each lifetime action needs exactly one of trigger.timeAfterCreate or trigger.timeBeforeExpiry")),
                };
                actions.push(json!({"trigger": trigger, "action": {"type": ty}}));
            }
            if rotates > 1 || notifies > 1 {
                return Err(bad("a rotation policy has at most one Rotate and one Notify action"));
            }
            let now = util::clock_ms() / 1000;
            let mut attrs = json!({ "created": now, "updated": now });
            if let Some(old) = stored_policy(&k)
                && let Some(c) = old["attributes"]["created"].as_i64()
            {
                attrs["created"] = json!(c);
            }
            if let Some(e) = p["attributes"]["expiryTime"].as_str() {
                if parse_iso_duration_ms(e)? < 28 * DAY_MS {
                    return Err(bad(format!("expiryTime {e} is too short: it must be at least 28 days (P28D)")));
                }
                attrs["expiryTime"] = json!(e);
            }
            let stored = json!({ "lifetimeActions": actions, "attributes": attrs });
            k.rotation_policy_json = Some(stored.to_string());
            k.updated_ms = util::clock_ms();
            self.catalog.update_key(&k)?;
            Ok((Self::policy_json(v, &k), None))
        })
    }

    /// Coffer's background work for key vaults, run at the start of every command:
    /// purges soft-deleted keys and vaults past their retention, and applies rotation
    /// policies (Rotate → new version, Notify → a `KeyNearExpiry` event). Returns how
    /// many actions it took. An action that needs a PKCS#11 token which cannot be
    /// opened now (`EncryptionKeyUnavailable`) is audited as failed and tried again
    /// at the next run, without failing the command that runs the background work.
    pub fn run_key_vault_background(&self) -> Result<usize> {
        let now = util::clock_ms();
        let mut n = 0;
        for v in self.catalog.key_vaults()? {
            if v.scheduled_purge_ms.is_some_and(|t| t <= now) {
                let r = self.purge_vault_material(&v);
                if r.is_err() {
                    let _ = self.audit_key(&v, "KeyVaultService", "purgeVault", None, None, &r);
                }
                n += token_may_wait(r.map(|()| 1))?;
            }
        }
        for k in self.catalog.keys(None)? {
            let Some(v) = self.catalog.key_vault_by_guid(&k.vault_guid)? else {
                continue;
            };
            if k.scheduled_purge_ms.is_some_and(|t| t <= now) {
                let r = self.purge_key_material(&v, &k.name);
                let _ = self.audit_key(&v, "KeyVaultService", "purge", Some(&k.name), None, &r);
                n += token_may_wait(r.map(|()| 1))?;
                continue;
            }
            if k.deleted_ms.is_some() || v.deleted_ms.is_some() {
                continue;
            }
            n += token_may_wait(self.apply_policy(&v, k, now))?;
        }
        Ok(n)
    }

    fn apply_policy(&self, v: &KeyVaultRow, mut k: KeyRow, now: i64) -> Result<usize> {
        let Some(p) = stored_policy(&k) else {
            return Ok(0);
        };
        let cur = self.version_row(v, &k, None)?;
        let exp_ms = Self::attrs(&cur)?.exp.map(|e| e * 1000);
        let mut n = 0;
        for a in p["lifetimeActions"].as_array().cloned().unwrap_or_default() {
            let t = &a["trigger"];
            let due = if let Some(d) = t["timeAfterCreate"].as_str() {
                now >= cur.created_ms + parse_iso_duration_ms(d)?
            } else if let (Some(d), Some(exp)) = (t["timeBeforeExpiry"].as_str(), exp_ms) {
                now >= exp - parse_iso_duration_ms(d)?
            } else {
                false
            };
            if !due {
                continue;
            }
            match a["action"]["type"].as_str() {
                Some("Rotate") => {
                    let r = self.rotate_now(v, &k).map(|_| ());
                    let ver = self
                        .catalog
                        .key(&v.guid, &k.name)?
                        .map(|x| x.current_version);
                    let _ = self.audit_key(
                        v,
                        "KeyRotationPolicy",
                        "rotate",
                        Some(&k.name),
                        ver.as_deref(),
                        &r,
                    );
                    r?;
                    n += 1;
                    return Ok(n);
                }
                Some("Notify") if k.last_notify_ms.is_none_or(|l| l < cur.created_ms) => {
                    self.publish_key_event(v, "KeyNearExpiry", &k.name, &cur.version, now)?;
                    k.last_notify_ms = Some(now);
                    self.catalog.update_key(&k)?;
                    n += 1;
                }
                _ => {}
            }
        }
        Ok(n)
    }
}

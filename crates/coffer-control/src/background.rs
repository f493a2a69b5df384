//! Coffer's background work, run at the start of every command (and by any
//! long-running host of an [`Instance`]): the key vault's own work (scheduled purges,
//! rotation policies) and the autorotation of backup vaults whose customer-managed
//! key URI is versionless.
//!
//! Autorotation reacts to the key vault's `KeyNewVersionCreated` events (a cursor in
//! the catalog remembers the last one handled) and, every `autorotationCheckSeconds`,
//! checks every such vault whatever the events said (for keys whose events it could
//! not receive). Jobs and `backup-vault show` also check their own vault first, so a
//! rewrap happens no later than the vault's next job or `show` either way.

use std::collections::HashSet;

use crate::{Instance, Result, config::Setting, util};

/// Catalog state: the sequence number of the last key event handled.
const EVENT_CURSOR: &str = "state.autorotation.eventCursor";
/// Catalog state: when the last scheduled check of every vault ran (unix ms).
const LAST_CHECK: &str = "state.autorotation.lastCheckMs";

/// What one round of autorotation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutorotationRound {
    /// Vaults whose DEK was rewrapped with a new key version.
    pub rewrapped: usize,
    /// Vaults checked.
    pub checked: usize,
}

impl Instance {
    /// Runs Coffer's background work; returns how many actions it took.
    pub fn run_background(&self) -> Result<usize> {
        let n = self.run_key_vault_background()?;
        Ok(n + self.run_autorotation()?.rewrapped)
    }

    /// One round of autorotation: the vaults named by new key events, or every vault
    /// with a versionless key URI when the scheduled check is due. A vault that
    /// cannot rewrap yet (key access lost, say) keeps its current key version and is
    /// tried again at its next job, `show` or scheduled check; the failure is in the
    /// activity log.
    pub fn run_autorotation(&self) -> Result<AutorotationRound> {
        let cursor: i64 = self.state_i64(EVENT_CURSOR);
        let events = self.catalog.key_events_since(cursor)?;
        let rotated: HashSet<(String, String)> = events
            .iter()
            .filter(|e| e.event_type == "KeyNewVersionCreated")
            .map(|e| {
                (
                    e.vault_name.to_ascii_lowercase(),
                    e.key_name.to_ascii_lowercase(),
                )
            })
            .collect();
        let now = util::clock_ms();
        let interval_ms = (self.setting(Setting::AutorotationCheckSeconds) * 1000) as i64;
        let last = self.state_i64(LAST_CHECK);
        let due = now - last >= interval_ms;
        let mut round = AutorotationRound::default();
        if rotated.is_empty() && !due {
            return Ok(round);
        }
        for v in self.catalog.vaults(None)? {
            let Some(s) = self.vault_cmk(&v.guid)? else {
                continue;
            };
            let Ok((kv, key, None)) = self.parse_kid(&s.key_uri) else {
                continue; // versioned: the user moves to a new version by update
            };
            if !due && !rotated.contains(&(kv.to_ascii_lowercase(), key.to_ascii_lowercase())) {
                continue;
            }
            round.checked += 1;
            if let Ok(Some(_)) = self.autorotate(&v) {
                round.rewrapped += 1;
            }
        }
        if let Some(e) = events.last() {
            self.catalog.set_setting(EVENT_CURSOR, &e.seq.to_string())?;
        }
        if due {
            self.catalog.set_setting(LAST_CHECK, &now.to_string())?;
        }
        Ok(round)
    }

    fn state_i64(&self, name: &str) -> i64 {
        self.catalog
            .setting(name)
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

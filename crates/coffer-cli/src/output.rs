//! Printing results and errors: camelCase JSON resources, or readable tables.
//!
//! Results go to stdout; errors go to stderr (JSON error envelope or
//! `error[CODE]: message` plus the recommended action).

use std::io::Write;

use coffer_control::{
    Error,
    resources::{
        BackupInstanceResource, BackupResult, BackupVaultResource, CheckResult, DeleteResult,
        JobResource, RecoveryPointResource, ResourceGroupResource, RestoreResult,
    },
};
use serde::Serialize;
use serde_json::Value;

use crate::args::OutputFormat;

/// Prints in one output format.
pub(crate) struct Printer {
    format: OutputFormat,
}

/// A simple left-aligned text table.
struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad + 2));
                }
            }
            s.trim_end().to_owned() + "\n"
        };
        let mut out = line(self.headers.clone());
        out += &line(
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect(),
        );
        for r in &self.rows {
            out += &line(r.iter().map(String::as_str).collect());
        }
        out
    }
}

/// `Key: value` lines for one resource.
fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<w$}  {v}\n"))
        .collect()
}

/// Human-readable byte count (binary units).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print_stdout(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

impl Printer {
    pub(crate) fn new(format: OutputFormat) -> Self {
        Self { format }
    }

    fn json<T: Serialize + ?Sized>(&self, v: &T) {
        match serde_json::to_string_pretty(v) {
            Ok(s) => print_stdout(&(s + "\n")),
            Err(e) => eprintln!("error[InternalError]: cannot serialise the result: {e}"),
        }
    }

    fn emit<T: Serialize + ?Sized>(&self, v: &T, table: impl FnOnce() -> String) {
        match self.format {
            OutputFormat::Json => self.json(v),
            OutputFormat::Table => print_stdout(&table()),
        }
    }

    /// Prints a JSON-shaped result that has no table form (the activity log): JSON
    /// with `-o table` too.
    pub(crate) fn value<T: Serialize + ?Sized>(&self, v: &T) {
        self.json(v);
    }

    /// Prints a JSON-shaped (part-2) resource or list of them: JSON, or with `-o table`
    /// one row per resource with the columns `cols`.
    pub(crate) fn table<T: Serialize + ?Sized>(&self, v: &T, cols: &[Column]) {
        self.emit(v, || {
            let v = serde_json::to_value(v).unwrap_or_default();
            let headers: Vec<&'static str> = cols.iter().map(|(h, _)| *h).collect();
            let mut t = Table::new(&headers);
            for r in v.as_array().map_or(std::slice::from_ref(&v), Vec::as_slice) {
                t.row(cols.iter().map(|(_, cell)| cell(r)).collect());
            }
            t.render()
        });
    }

    /// Prints an error on stderr.
    pub(crate) fn error(&self, e: &Error) {
        let mut err = std::io::stderr().lock();
        match self.format {
            OutputFormat::Json => {
                let mut body = serde_json::Map::new();
                body.insert("code".into(), e.code.as_str().into());
                body.insert("message".into(), e.message.clone().into());
                if let Some(a) = &e.recommended_action {
                    body.insert("recommendedAction".into(), a.clone().into());
                }
                if let Some(j) = &e.job_id {
                    body.insert("jobId".into(), j.clone().into());
                }
                if let Some(i) = &e.inner_code {
                    body.insert("innererror".into(), serde_json::json!({ "code": i }));
                }
                let env = serde_json::json!({ "error": body });
                let _ = writeln!(err, "{env}");
            }
            OutputFormat::Table => {
                match &e.inner_code {
                    Some(i) => {
                        let _ = writeln!(err, "error[{}/{i}]: {}", e.code.as_str(), e.message);
                    }
                    None => {
                        let _ = writeln!(err, "error[{}]: {}", e.code.as_str(), e.message);
                    }
                }
                if let Some(j) = &e.job_id {
                    let _ = writeln!(err, "  job: {j}");
                }
                if let Some(a) = &e.recommended_action {
                    let _ = writeln!(err, "  recommended action: {a}");
                }
            }
        }
    }

    pub(crate) fn settings(&self, ss: &[coffer_control::SettingValue]) {
        self.emit(ss, || {
            let mut t = Table::new(&["Name", "Value", "Default", "Description"]);
            for s in ss {
                t.row(vec![
                    s.name.clone(),
                    s.value.to_string(),
                    s.default.to_string(),
                    s.description.clone(),
                ]);
            }
            t.render()
        });
    }

    pub(crate) fn group(&self, g: &ResourceGroupResource) {
        self.emit(g, || {
            fields(&[
                ("Name", g.name.clone()),
                ("Location", g.location.clone()),
                ("State", g.properties.provisioning_state.clone()),
                ("Id", g.id.clone()),
            ])
        });
    }

    pub(crate) fn groups(&self, gs: &[ResourceGroupResource]) {
        self.emit(gs, || {
            let mut t = Table::new(&["Name", "Location", "State"]);
            for g in gs {
                t.row(vec![
                    g.name.clone(),
                    g.location.clone(),
                    g.properties.provisioning_state.clone(),
                ]);
            }
            t.render()
        });
    }

    pub(crate) fn vault(&self, v: &BackupVaultResource) {
        self.emit(v, || {
            let enc = &v.properties.security_settings.encryption_settings;
            fields(&[
                ("Name", v.name.clone()),
                ("Location", v.location.clone()),
                ("State", v.properties.provisioning_state.clone()),
                (
                    "Encryption",
                    format!(
                        "{} ({})",
                        enc.state,
                        if enc.state == "Disabled" {
                            "platform-managed key"
                        } else {
                            "customer-managed key"
                        }
                    ),
                ),
                (
                    "Storage",
                    v.properties
                        .storage_settings
                        .iter()
                        .map(|s| format!("{} {}", s.datastore_type, s.redundancy))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                ("Vault id", v.properties.vault_id.clone()),
                ("Created", v.properties.created.clone()),
                ("Id", v.id.clone()),
            ])
        });
    }

    pub(crate) fn vaults(&self, vs: &[BackupVaultResource]) {
        self.emit(vs, || {
            let mut t = Table::new(&["Name", "ResourceGroup", "Location", "Encryption", "Created"]);
            for v in vs {
                t.row(vec![
                    v.name.clone(),
                    resource_group_of(&v.id),
                    v.location.clone(),
                    v.properties
                        .security_settings
                        .encryption_settings
                        .state
                        .clone(),
                    v.properties.created.clone(),
                ]);
            }
            t.render()
        });
    }

    pub(crate) fn instance(&self, b: &BackupInstanceResource) {
        self.emit(b, || {
            let ds = &b.properties.data_source_info;
            fields(&[
                ("Name", b.name.clone()),
                ("Datasource type", ds.datasource_type.clone()),
                ("Datasource", ds.resource_id.clone()),
                ("Protection", b.properties.current_protection_state.clone()),
                ("Created", b.properties.created.clone()),
                ("Id", b.id.clone()),
            ])
        });
    }

    pub(crate) fn instances(&self, bs: &[BackupInstanceResource]) {
        self.emit(bs, || {
            let mut t = Table::new(&["Name", "DatasourceType", "Datasource", "Protection"]);
            for b in bs {
                let ds = &b.properties.data_source_info;
                t.row(vec![
                    b.name.clone(),
                    ds.datasource_type.clone(),
                    ds.resource_id.clone(),
                    b.properties.current_protection_state.clone(),
                ]);
            }
            t.render()
        });
    }

    pub(crate) fn recovery_point(&self, r: &RecoveryPointResource) {
        self.emit(r, || {
            let p = &r.properties;
            fields(&[
                ("Recovery point", p.recovery_point_id.clone()),
                ("Time", p.recovery_point_time.clone()),
                (
                    "Datastore",
                    p.recovery_point_data_stores_details
                        .iter()
                        .map(|d| d.datastore_type.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                ("Datasource type", p.datasource_type.clone()),
                ("Logical size", human_bytes(p.logical_size_in_bytes)),
                ("Added to vault", human_bytes(p.added_size_in_bytes)),
                ("Files", p.file_count.to_string()),
                ("Directories", p.directory_count.to_string()),
                ("State", p.recovery_point_state.clone()),
            ])
        });
    }

    pub(crate) fn recovery_points(&self, rs: &[RecoveryPointResource]) {
        self.emit(rs, || {
            let mut t = Table::new(&[
                "RecoveryPointId",
                "Time",
                "Datastore",
                "LogicalSize",
                "Added",
                "Files",
                "State",
            ]);
            for r in rs {
                let p = &r.properties;
                t.row(vec![
                    p.recovery_point_id.clone(),
                    p.recovery_point_time.clone(),
                    p.recovery_point_data_stores_details
                        .first()
                        .map(|d| d.datastore_type.clone())
                        .unwrap_or_default(),
                    human_bytes(p.logical_size_in_bytes),
                    human_bytes(p.added_size_in_bytes),
                    p.file_count.to_string(),
                    p.recovery_point_state.clone(),
                ]);
            }
            t.render()
        });
    }

    pub(crate) fn job(&self, j: &JobResource) {
        self.emit(j, || {
            let p = &j.properties;
            let mut f = vec![
                ("Job id", j.name.clone()),
                ("Operation", p.operation.clone()),
                ("Status", p.status.clone()),
                (
                    "Backup instance",
                    p.backup_instance_friendly_name.clone().unwrap_or_default(),
                ),
                ("Start", p.start_time.clone()),
                ("End", p.end_time.clone().unwrap_or_default()),
                ("Duration", p.duration.clone()),
                (
                    "Bytes",
                    human_bytes(p.extended_info.data_transferred_in_bytes),
                ),
            ];
            if let Some(rp) = &p.extended_info.recovery_point {
                f.push(("Recovery point", rp.recovery_point_id.clone()));
            }
            for e in &p.error_details {
                f.push(("Error", format!("{}: {}", e.code, e.message)));
                for a in &e.recommended_action {
                    f.push(("Recommended action", a.clone()));
                }
            }
            for w in &p.extended_info.warning_details {
                f.push(("Warning", w.warning.clone()));
            }
            fields(&f)
        });
    }

    pub(crate) fn jobs(&self, js: &[JobResource]) {
        self.emit(js, || {
            let mut t = Table::new(&[
                "JobId",
                "Operation",
                "Status",
                "BackupInstance",
                "Start",
                "Duration",
                "Bytes",
                "Error",
            ]);
            for j in js {
                let p = &j.properties;
                t.row(vec![
                    j.name.clone(),
                    p.operation.clone(),
                    p.status.clone(),
                    p.backup_instance_friendly_name.clone().unwrap_or_default(),
                    p.start_time.clone(),
                    p.duration.clone(),
                    human_bytes(p.extended_info.data_transferred_in_bytes),
                    p.error_details
                        .first()
                        .map(|e| e.code.clone())
                        .unwrap_or_default(),
                ]);
            }
            t.render()
        });
    }

    pub(crate) fn backup(&self, b: &BackupResult) {
        self.emit(b, || {
            let p = &b.recovery_point.properties;
            let mut f = vec![
                ("Job id", b.job_id.clone()),
                ("Status", b.status.clone()),
                ("Recovery point", p.recovery_point_id.clone()),
                ("Time", p.recovery_point_time.clone()),
                ("Logical size", human_bytes(p.logical_size_in_bytes)),
                ("Added to vault", human_bytes(p.added_size_in_bytes)),
                ("Files", p.file_count.to_string()),
            ];
            for w in &b.warnings {
                f.push(("Warning", w.clone()));
            }
            fields(&f)
        });
    }

    fn restore_fields(r: &RestoreResult) -> String {
        let mut f = vec![
            ("Job id", r.job_id.clone()),
            ("Status", r.status.clone()),
            ("Recovery point", r.recovery_point_id.clone()),
            ("Files", r.files.to_string()),
            ("Bytes", human_bytes(r.bytes)),
        ];
        for w in &r.warnings {
            f.push(("Warning", w.clone()));
        }
        fields(&f)
    }

    pub(crate) fn restore(&self, r: &RestoreResult) {
        self.emit(r, || Self::restore_fields(r));
    }

    /// Restore summary when stdout carries the restored data.
    pub(crate) fn restore_to_stderr(&self, r: &RestoreResult) {
        let s = match self.format {
            OutputFormat::Json => serde_json::to_string(r).unwrap_or_default() + "\n",
            OutputFormat::Table => Self::restore_fields(r),
        };
        let _ = std::io::stderr().write_all(s.as_bytes());
    }

    pub(crate) fn check(&self, c: &CheckResult) {
        self.emit(c, || {
            let mut f = vec![
                ("Vault", c.id.clone()),
                (
                    "Result",
                    if c.clean { "clean" } else { "DAMAGED" }.to_owned(),
                ),
                (
                    "Mode",
                    if c.read_data {
                        "structure and data (--read-data)"
                    } else {
                        "structure only"
                    }
                    .to_owned(),
                ),
                ("Objects checked", c.objects_checked.to_string()),
                ("Chunks verified", c.chunks_verified.to_string()),
            ];
            for o in &c.damaged_objects {
                f.push(("Damaged object", o.clone()));
            }
            for d in &c.damaged_recovery_points {
                f.push((
                    "Damaged recovery point",
                    format!(
                        "{}{}: {}",
                        d.recovery_point_id,
                        d.backup_instance
                            .as_ref()
                            .map(|b| format!(" ({b})"))
                            .unwrap_or_default(),
                        d.files.join(", ")
                    ),
                ));
            }
            fields(&f)
        });
    }

    pub(crate) fn deleted(&self, d: &DeleteResult) {
        self.emit(d, || {
            let mut f = vec![("Deleted", d.id.clone())];
            if let Some(j) = &d.job_id {
                f.push(("Job id", j.clone()));
            }
            if d.reclaimed_bytes > 0 {
                f.push(("Reclaimed", human_bytes(d.reclaimed_bytes)));
            }
            fields(&f)
        });
    }
}

/// The resource group segment of an ARM id.
/// A column of the table of a JSON-shaped (part-2) resource: header and cell.
pub(crate) type Column = (&'static str, fn(&Value) -> String);

/// The value at `ptr` as a cell: strings as they are, arrays of scalars joined by
/// `, `, nothing for null or missing.
fn at(v: &Value, ptr: &str) -> String {
    cell(v.pointer(ptr).unwrap_or(&Value::Null))
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A boolean that the resource leaves out (null) when false.
fn flag(v: &Value, ptr: &str) -> String {
    (v.pointer(ptr) == Some(&Value::Bool(true))).to_string()
}

/// The last `/` segment of the string at `ptr` (a version from a kid, a name from an id).
fn last(v: &Value, ptr: &str) -> String {
    at(v, ptr).rsplit('/').next().unwrap_or_default().to_owned()
}

/// The key name of a key id (`{vaultUri}/keys/{name}[/{version}]`).
fn key_name(v: &Value, ptr: &str) -> String {
    let kid = at(v, ptr);
    let mut parts = kid
        .split('/')
        .skip_while(|p| *p != "keys" && *p != "deletedkeys");
    parts.nth(1).unwrap_or_default().to_owned()
}

/// Unix seconds at `ptr` as UTC `YYYY-MM-DDTHH:MM:SSZ` (Key Vault attributes).
fn unix_time(v: &Value, ptr: &str) -> String {
    let Some(secs) = v.pointer(ptr).and_then(Value::as_i64) else {
        return String::new();
    };
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// RSA size in bits or EC curve of a JWK at `ptr`.
fn key_size(v: &Value, ptr: &str) -> String {
    let Some(k) = v.pointer(ptr) else {
        return String::new();
    };
    match (k["n"].as_str(), k["crv"].as_str()) {
        (Some(n), _) => (n.trim_end_matches('=').len() * 3 / 4 * 8).to_string(),
        (None, Some(crv)) => crv.to_owned(),
        _ => String::new(),
    }
}

/// `keyvault list|show|create|update|recover|set-policy|delete-policy`.
pub(crate) const KEY_VAULTS: &[Column] = &[
    ("Name", |v| at(v, "/name")),
    ("ResourceGroup", |v| at(v, "/resourceGroup")),
    ("Location", |v| at(v, "/location")),
    ("Type", |v| last(v, "/type")),
    ("VaultUri", |v| at(v, "/properties/vaultUri")),
    ("RbacAuthorization", |v| {
        at(v, "/properties/enableRbacAuthorization")
    }),
    ("SoftDeleteDays", |v| {
        at(v, "/properties/softDeleteRetentionInDays")
    }),
    ("PurgeProtection", |v| {
        flag(v, "/properties/enablePurgeProtection")
    }),
];

/// `keyvault list-deleted|delete` (a purged vault shows its id's name and status).
pub(crate) const DELETED_VAULTS: &[Column] = &[
    ("Name", |v| last(v, "/id")),
    ("Location", |v| at(v, "/properties/location")),
    ("DeletionDate", |v| at(v, "/properties/deletionDate")),
    ("ScheduledPurgeDate", |v| {
        at(v, "/properties/scheduledPurgeDate")
    }),
    ("PurgeProtection", |v| {
        flag(v, "/properties/purgeProtectionEnabled")
    }),
    ("Status", |v| at(v, "/status")),
];

/// `keyvault key list` (KeyItems).
pub(crate) const KEY_ITEMS: &[Column] = &[
    ("Name", |v| at(v, "/name")),
    ("Enabled", |v| at(v, "/attributes/enabled")),
    ("NotBefore", |v| unix_time(v, "/attributes/nbf")),
    ("Expires", |v| unix_time(v, "/attributes/exp")),
    ("Updated", |v| unix_time(v, "/attributes/updated")),
    ("Kid", |v| at(v, "/kid")),
];

/// `keyvault key list-versions`.
pub(crate) const KEY_VERSIONS: &[Column] = &[
    ("Version", |v| last(v, "/kid")),
    ("Enabled", |v| at(v, "/attributes/enabled")),
    ("Created", |v| unix_time(v, "/attributes/created")),
    ("Expires", |v| unix_time(v, "/attributes/exp")),
    ("Kid", |v| at(v, "/kid")),
];

/// A KeyBundle (`key create|import|show|set-attributes|rotate|recover`).
pub(crate) const KEYS: &[Column] = &[
    ("Name", |v| key_name(v, "/key/kid")),
    ("Version", |v| last(v, "/key/kid")),
    ("Kty", |v| at(v, "/key/kty")),
    ("SizeOrCurve", |v| key_size(v, "/key")),
    ("Enabled", |v| at(v, "/attributes/enabled")),
    ("Expires", |v| unix_time(v, "/attributes/exp")),
    ("KeyOps", |v| at(v, "/key/key_ops")),
];

/// `keyvault key list-deleted|delete`.
pub(crate) const DELETED_KEYS: &[Column] = &[
    ("Name", |v| key_name(v, "/key/kid")),
    ("DeletedDate", |v| unix_time(v, "/deletedDate")),
    ("ScheduledPurgeDate", |v| {
        unix_time(v, "/scheduledPurgeDate")
    }),
    ("RecoveryId", |v| at(v, "/recoveryId")),
];

/// `keyvault purge`, `keyvault key purge`, `identity delete`.
pub(crate) const STATUS: &[Column] = &[
    ("Id", |v| {
        let id = at(v, "/id");
        if id.is_empty() {
            at(v, "/recoveryId")
        } else {
            id
        }
    }),
    ("Status", |v| at(v, "/status")),
];

/// `keyvault key wrap|unwrap|encrypt|decrypt|sign`.
pub(crate) const KEY_RESULTS: &[Column] = &[
    ("Kid", |v| at(v, "/kid")),
    ("Alg", |v| at(v, "/alg")),
    ("Value", |v| at(v, "/value")),
];

/// `keyvault key verify`.
pub(crate) const VERIFY_RESULTS: &[Column] = &[("Value", |v| at(v, "/value"))];

/// `keyvault key rotation-policy show|update`.
pub(crate) const ROTATION_POLICIES: &[Column] = &[
    ("Id", |v| at(v, "/id")),
    ("LifetimeActions", |v| {
        let actions = v["lifetimeActions"].as_array().cloned().unwrap_or_default();
        actions
            .iter()
            .map(|a| {
                let t = &a["trigger"];
                match (
                    t["timeAfterCreate"].as_str(),
                    t["timeBeforeExpiry"].as_str(),
                ) {
                    (Some(d), _) => format!("{} {d} after create", cell(&a["action"]["type"])),
                    (None, Some(d)) => format!("{} {d} before expiry", cell(&a["action"]["type"])),
                    _ => cell(&a["action"]["type"]),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }),
    ("ExpiryTime", |v| at(v, "/attributes/expiryTime")),
];

/// `keyvault audit list`.
pub(crate) const AUDIT: &[Column] = &[
    ("Time", |v| at(v, "/time")),
    ("Caller", |v| at(v, "/callerPrincipalId")),
    ("Operation", |v| at(v, "/operationName")),
    ("Key", |v| at(v, "/keyName")),
    ("Version", |v| at(v, "/keyVersion")),
    ("Result", |v| at(v, "/result")),
    ("ErrorCode", |v| at(v, "/errorCode")),
];

/// `identity create|show|list`.
pub(crate) const IDENTITIES: &[Column] = &[
    ("Name", |v| at(v, "/name")),
    ("ResourceGroup", |v| at(v, "/resourceGroup")),
    ("Location", |v| at(v, "/location")),
    ("PrincipalId", |v| at(v, "/principalId")),
    ("ClientId", |v| at(v, "/clientId")),
];

/// `role definition list`.
pub(crate) const ROLE_DEFINITIONS: &[Column] = &[
    ("RoleName", |v| at(v, "/roleName")),
    ("Name", |v| at(v, "/name")),
    ("RoleType", |v| at(v, "/roleType")),
];

/// `role assignment create|list|delete` and the managed HSM's local ones.
pub(crate) const ROLE_ASSIGNMENTS: &[Column] = &[
    ("Principal", |v| at(v, "/principalId")),
    ("Role", |v| at(v, "/roleDefinitionName")),
    ("Scope", |v| at(v, "/scope")),
    ("Name", |v| at(v, "/name")),
];

fn resource_group_of(id: &str) -> String {
    let mut it = id.split('/');
    while let Some(seg) = it.next() {
        if seg.eq_ignore_ascii_case("resourceGroups") {
            return it.next().unwrap_or_default().to_owned();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_tables() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        let mut t = Table::new(&["A", "Bee"]);
        t.row(vec!["long value".into(), "x".into()]);
        assert_eq!(
            t.render(),
            "A           Bee\n----------  ---\nlong value  x\n"
        );
        assert_eq!(
            resource_group_of("/subscriptions/s/resourceGroups/rg1/providers/x"),
            "rg1"
        );
    }
}

//! Data operations on a vault: ad-hoc backup, restore, recovery points (list,
//! show, delete), backup instance deletion, and vault check.
//!
//! Storage is the source of truth for recovery points: before listing them, and
//! after every backup or deletion, the catalog is reconciled with
//! `Repository::list_recovery_points` (missing rows added, stale rows dropped).

use std::{
    collections::{HashMap, HashSet},
    io::{Read, Write},
    path::PathBuf,
};

use coffer_catalog::{DatasourceType, InstanceItemRow, JobOperation, RecoveryPointRow, VaultRow};
use coffer_engine::{
    BackupRequest, BackupSource, Progress, RecoveryPointInfo, Repository, RestoreRequest,
    SourceKind,
};

use crate::{
    Error, ErrorCode, Instance, Result,
    jobs::JobSuccess,
    resources::{
        BackupResult, CheckResult, DamagedRecoveryPoint, DeleteResult, RECOVERY_POINT_TYPE,
        RecoveryPointDataStoreDetails, RecoveryPointProperties, RecoveryPointResource,
        RestoreResult,
    },
    util::rfc3339_secs,
    vaults::action,
};

/// `--recovery-option` of a restore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryOption {
    /// Fail if any item to restore already exists (default).
    #[default]
    FailIfExists,
    /// Replace existing items.
    Overwrite,
}

impl RecoveryOption {
    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailIfExists => "FailIfExists",
            Self::Overwrite => "Overwrite",
        }
    }
}

/// Where a restore writes.
pub enum RestoreTarget {
    /// A directory (Directory recovery points) or a file (Stream recovery points).
    Path(PathBuf),
    /// A writer, e.g. stdout (Stream recovery points only).
    Writer(Box<dyn Write + Send>),
}

/// A restore to run.
pub struct RestoreSpec {
    /// Recovery point id.
    pub recovery_point: String,
    /// Destination.
    pub target: RestoreTarget,
    /// Sub-path inside a Directory recovery point.
    pub subpath: Option<String>,
    /// FailIfExists or Overwrite.
    pub recovery_option: RecoveryOption,
}

const DATASTORE: &str = "VaultStore";

fn rp_row(info: &RecoveryPointInfo) -> RecoveryPointRow {
    RecoveryPointRow {
        id: info.id.clone(),
        instance_guid: info.instance_id.clone(),
        time: info.time,
        datastore: DATASTORE.to_owned(),
        logical_bytes: info.logical_bytes,
        added_bytes: info.added_bytes,
        file_count: info.file_count,
        dir_count: info.dir_count,
        source_kind: match info.source_kind {
            SourceKind::Directory => "Directory",
            SourceKind::Stream => "Stream",
        }
        .to_owned(),
        state: "Completed".to_owned(),
    }
}

fn now_secs() -> i64 {
    crate::util::now_ms() / 1000
}

impl Instance {
    fn rp_resource(
        &self,
        v: &VaultRow,
        bi: &InstanceItemRow,
        rp: &RecoveryPointRow,
    ) -> RecoveryPointResource {
        let time = rfc3339_secs(rp.time);
        RecoveryPointResource {
            id: format!("{}/recoveryPoints/{}", self.instance_id(v, bi), rp.id),
            name: rp.id.clone(),
            resource_type: RECOVERY_POINT_TYPE.to_owned(),
            properties: RecoveryPointProperties {
                object_type: "AzureBackupDiscreteRecoveryPoint".to_owned(),
                recovery_point_id: rp.id.clone(),
                recovery_point_time: time.clone(),
                recovery_point_type: "Incremental".to_owned(),
                recovery_point_state: rp.state.clone(),
                recovery_point_data_stores_details: vec![RecoveryPointDataStoreDetails {
                    id: v.guid.clone(),
                    datastore_type: rp.datastore.clone(),
                    state: rp.state.clone(),
                    visible: true,
                    creation_time: time,
                }],
                datasource_type: rp.source_kind.clone(),
                logical_size_in_bytes: rp.logical_bytes,
                added_size_in_bytes: rp.added_bytes,
                file_count: rp.file_count,
                directory_count: rp.dir_count,
            },
        }
    }

    /// Brings the vault's recovery point rows in line with storage.
    ///
    /// `Repository::list_recovery_points` omits recovery points whose manifest
    /// cannot be read (damage). Such a point must not vanish from the catalog: a
    /// row is dropped only when its manifest object is really gone from storage,
    /// so that using it reports the damage (`DataCorrupted`) instead of
    /// `RecoveryPointNotFound`.
    fn reconcile(&self, v: &VaultRow, repo: &Repository) -> Result<Vec<RecoveryPointInfo>> {
        // Storage is the source of truth: readable points are (re)recorded, points
        // gone from storage are dropped, and damaged ones stay listed so that a
        // restore reports the damage instead of "not found".
        let (infos, damaged) = repo.scan_recovery_points()?;
        let rows: Vec<RecoveryPointRow> = infos.iter().map(rp_row).collect();
        let damaged: HashSet<&str> = damaged.iter().map(String::as_str).collect();
        let keep: Vec<String> = self
            .catalog
            .vault_recovery_point_ids(&v.guid)?
            .into_iter()
            .filter(|id| damaged.contains(id.as_str()))
            .collect();
        self.catalog
            .reconcile_recovery_points(&v.guid, &rows, &keep)?;
        Ok(infos)
    }

    fn find_rp(&self, bi: &InstanceItemRow, id: &str) -> Result<RecoveryPointRow> {
        self.catalog.recovery_point(&bi.guid, id)?.ok_or_else(|| {
            Error::new(
                ErrorCode::RecoveryPointNotFound,
                format!(
                    "recovery point '{id}' does not exist for backup instance '{}'",
                    bi.name
                ),
            )
        })
    }

    // ---------------------------------------------------------------- backup

    /// Runs an ad-hoc backup of a backup instance into its vault's `VaultStore`.
    ///
    /// `stdin` must be given for Stream instances (the data) and must not be given
    /// for Directory instances.
    pub fn adhoc_backup(
        &self,
        rg: &str,
        vault: &str,
        name: &str,
        stdin: Option<Box<dyn Read + Send>>,
        progress: &dyn Progress,
    ) -> Result<BackupResult> {
        self.authorize_action(&self.instance_scope(rg, vault, name), action::BACKUP)?;
        let v = self.vault_row_current(rg, vault)?;
        let bi = self.instance_row(&v, name)?;
        let source = match (bi.datasource_type, stdin) {
            (DatasourceType::Directory, None) => BackupSource::Directory(PathBuf::from(
                bi.datasource_path.clone().unwrap_or_default(),
            )),
            (DatasourceType::Directory, Some(_)) => {
                return Err(Error::invalid(format!(
                    "backup instance '{}' protects a directory; --stdin is only for Stream instances",
                    bi.name
                )));
            }
            (DatasourceType::Stream, Some(r)) => BackupSource::Stream(r),
            (DatasourceType::Stream, None) => {
                return Err(Error::invalid(format!(
                    "backup instance '{}' is a Stream instance: pass --stdin and pipe the data in",
                    bi.name
                )));
            }
        };
        let job = self.start_job(&v, Some(&bi), JobOperation::Backup, None)?;
        let run = |progress: &dyn Progress| -> Result<_> {
            if let BackupSource::Directory(p) = &source {
                check_source_dir(p)?;
            }
            let repo = self.open_repository(&v)?;
            let out = repo.backup(
                BackupRequest {
                    instance_id: bi.guid.clone(),
                    source,
                    time: now_secs(),
                },
                progress,
            )?;
            Ok((repo, out))
        };
        let (repo, out) = self
            .with_key_watch(&v, progress, run)
            .map_err(|e| self.fail_job(&job, e))?;
        let row = rp_row(&out.recovery_point);
        let done = (|| {
            self.catalog.upsert_recovery_point(&row)?;
            self.complete_job(
                &job,
                &JobSuccess {
                    bytes: out.recovery_point.logical_bytes,
                    warnings: out.warnings.clone(),
                    recovery_point: Some((row.id.clone(), row.time)),
                },
            )
        })();
        let status = done.map_err(|e| self.fail_job(&job, e))?;
        // The recovery point is durable; a failed reconcile only delays the catalog.
        let _ = self.reconcile(&v, &repo);
        Ok(BackupResult {
            job_id: job,
            status: status.as_str().to_owned(),
            recovery_point: self.rp_resource(&v, &bi, &row),
            warnings: out.warnings,
        })
    }

    // --------------------------------------------------------------- restore

    /// Restores a recovery point of a backup instance.
    pub fn restore(
        &self,
        rg: &str,
        vault: &str,
        name: &str,
        spec: RestoreSpec,
        progress: &dyn Progress,
    ) -> Result<RestoreResult> {
        self.authorize_action(&self.instance_scope(rg, vault, name), action::RESTORE)?;
        let v = self.vault_row_current(rg, vault)?;
        let bi = self.instance_row(&v, name)?;
        let overwrite = spec.recovery_option == RecoveryOption::Overwrite;
        let target = match (bi.datasource_type, spec.target) {
            (DatasourceType::Directory, RestoreTarget::Path(p)) => {
                let p = absolute(&p)?;
                if p.exists() && !p.is_dir() {
                    return Err(Error::new(
                        ErrorCode::RestoreTargetInvalid,
                        format!(
                            "the restore target {} exists and is not a directory",
                            p.display()
                        ),
                    ));
                }
                coffer_engine::RestoreTarget::Directory(p)
            }
            (DatasourceType::Directory, RestoreTarget::Writer(_)) => {
                return Err(Error::new(
                    ErrorCode::RestoreTargetInvalid,
                    format!(
                        "backup instance '{}' protects a directory; restore it to a directory, not to stdout",
                        bi.name
                    ),
                ));
            }
            (DatasourceType::Stream, RestoreTarget::Path(p)) => {
                let p = absolute(&p)?;
                if p.is_dir() {
                    return Err(Error::new(
                        ErrorCode::RestoreTargetInvalid,
                        format!(
                            "the restore target {} is a directory; a Stream recovery point restores to a file or '-' (stdout)",
                            p.display()
                        ),
                    ));
                }
                if p.symlink_metadata().is_ok() && !overwrite {
                    return Err(Error::new(
                        ErrorCode::RestoreTargetExists,
                        format!("the restore target {} already exists", p.display()),
                    ));
                }
                coffer_engine::RestoreTarget::File(p)
            }
            (DatasourceType::Stream, RestoreTarget::Writer(w)) => {
                coffer_engine::RestoreTarget::Writer(w)
            }
        };
        if spec.subpath.is_some() && bi.datasource_type == DatasourceType::Stream {
            return Err(Error::invalid(
                "--path is only for Directory backup instances",
            ));
        }
        let rp_id = spec.recovery_point.trim().to_ascii_lowercase();
        let known = self.catalog.recovery_point(&bi.guid, &rp_id)?;
        let job = self.start_job(
            &v,
            Some(&bi),
            JobOperation::Restore,
            Some((&rp_id, known.as_ref().map(|r| r.time))),
        )?;
        let run = |progress: &dyn Progress| -> Result<_> {
            let repo = self.open_repository(&v)?;
            self.reconcile(&v, &repo)?;
            let rp = self.find_rp(&bi, &rp_id)?;
            let out = repo.restore(
                RestoreRequest {
                    recovery_point: rp.id.clone(),
                    target,
                    subpath: spec.subpath,
                    overwrite,
                },
                progress,
            )?;
            Ok((rp, out))
        };
        let (rp, out) = self
            .with_key_watch(&v, progress, run)
            .map_err(|e| self.fail_job(&job, e))?;
        let status = self
            .complete_job(
                &job,
                &JobSuccess {
                    bytes: out.bytes,
                    warnings: out.warnings.clone(),
                    recovery_point: Some((rp.id.clone(), rp.time)),
                },
            )
            .map_err(|e| self.fail_job(&job, e))?;
        Ok(RestoreResult {
            job_id: job,
            status: status.as_str().to_owned(),
            recovery_point_id: rp.id,
            files: out.files,
            bytes: out.bytes,
            warnings: out.warnings,
        })
    }

    // ------------------------------------------------------- recovery points

    /// Lists the recovery points of a backup instance, oldest first (reconciled with storage).
    pub fn list_recovery_points(
        &self,
        rg: &str,
        vault: &str,
        instance: &str,
    ) -> Result<Vec<RecoveryPointResource>> {
        self.authorize_action(&self.instance_scope(rg, vault, instance), action::RP_READ)?;
        let v = self.vault_row_current(rg, vault)?;
        let bi = self.instance_row(&v, instance)?;
        let repo = self.open_repository(&v)?;
        self.reconcile(&v, &repo)?;
        Ok(self
            .catalog
            .recovery_points(&bi.guid)?
            .iter()
            .map(|rp| self.rp_resource(&v, &bi, rp))
            .collect())
    }

    /// Shows one recovery point of a backup instance.
    pub fn show_recovery_point(
        &self,
        rg: &str,
        vault: &str,
        instance: &str,
        id: &str,
    ) -> Result<RecoveryPointResource> {
        self.authorize_action(&self.instance_scope(rg, vault, instance), action::RP_READ)?;
        let v = self.vault_row_current(rg, vault)?;
        let bi = self.instance_row(&v, instance)?;
        let repo = self.open_repository(&v)?;
        self.reconcile(&v, &repo)?;
        let rp = self.find_rp(&bi, &id.trim().to_ascii_lowercase())?;
        Ok(self.rp_resource(&v, &bi, &rp))
    }

    /// Deletes one recovery point and reclaims the space no other recovery point uses.
    pub fn delete_recovery_point(
        &self,
        rg: &str,
        vault: &str,
        instance: &str,
        id: &str,
    ) -> Result<DeleteResult> {
        self.authorize_action(&self.instance_scope(rg, vault, instance), action::RP_DELETE)?;
        let v = self.vault_row_current(rg, vault)?;
        let bi = self.instance_row(&v, instance)?;
        let id = id.trim().to_ascii_lowercase();
        let known = self.catalog.recovery_point(&bi.guid, &id)?;
        let job = self.start_job(
            &v,
            Some(&bi),
            JobOperation::DeleteRecoveryPoint,
            Some((&id, known.as_ref().map(|r| r.time))),
        )?;
        let run = || -> Result<_> {
            let repo = self.open_repository(&v)?;
            self.reconcile(&v, &repo)?;
            let rp = self.find_rp(&bi, &id)?;
            let out = repo.delete_recovery_point(&rp.id)?;
            self.catalog.delete_recovery_point(&rp.id)?;
            let _ = self.reconcile(&v, &repo);
            Ok((rp, out))
        };
        let r = run();
        let resource_id = format!("{}/recoveryPoints/{id}", self.instance_id(&v, &bi));
        self.audit(
            "Microsoft.DataProtection/backupVaults/backupInstances/recoveryPoints/delete",
            &resource_id,
            &r,
        );
        let (rp, out) = r.map_err(|e| self.fail_job(&job, e))?;
        self.complete_job(
            &job,
            &JobSuccess {
                bytes: out.reclaimed_bytes,
                warnings: Vec::new(),
                recovery_point: Some((rp.id.clone(), rp.time)),
            },
        )
        .map_err(|e| self.fail_job(&job, e))?;
        Ok(DeleteResult {
            job_id: Some(job),
            id: resource_id,
            reclaimed_bytes: out.reclaimed_bytes,
        })
    }

    /// Deletes a backup instance together with all its recovery points.
    pub fn delete_backup_instance(
        &self,
        rg: &str,
        vault: &str,
        name: &str,
    ) -> Result<DeleteResult> {
        self.authorize_action(
            &self.instance_scope(rg, vault, name),
            action::INSTANCE_DELETE,
        )?;
        let v = self.vault_row_current(rg, vault)?;
        let bi = self.instance_row(&v, name)?;
        let resource_id = self.instance_id(&v, &bi);
        let job = self.start_job(&v, Some(&bi), JobOperation::DeleteBackupInstance, None)?;
        let run = || -> Result<u64> {
            let repo = self.open_repository(&v)?;
            self.reconcile(&v, &repo)?;
            let mut reclaimed = 0;
            for rp in self.catalog.recovery_points(&bi.guid)? {
                reclaimed += repo.delete_recovery_point(&rp.id)?.reclaimed_bytes;
                self.catalog.delete_recovery_point(&rp.id)?;
            }
            // A backup that finished meanwhile may have added one: check storage again.
            let left: Vec<_> = repo
                .list_recovery_points()?
                .into_iter()
                .filter(|r| r.instance_id == bi.guid)
                .collect();
            for rp in left {
                reclaimed += repo.delete_recovery_point(&rp.id)?.reclaimed_bytes;
            }
            self.catalog.delete_instance_item(&bi.guid)?;
            Ok(reclaimed)
        };
        let r = run();
        self.audit(
            "Microsoft.DataProtection/backupVaults/backupInstances/delete",
            &resource_id,
            &r,
        );
        let reclaimed = r.map_err(|e| self.fail_job(&job, e))?;
        self.complete_job(
            &job,
            &JobSuccess {
                bytes: reclaimed,
                warnings: Vec::new(),
                recovery_point: None,
            },
        )
        .map_err(|e| self.fail_job(&job, e))?;
        Ok(DeleteResult {
            job_id: Some(job),
            id: resource_id,
            reclaimed_bytes: reclaimed,
        })
    }

    // ----------------------------------------------------------------- check

    /// Verifies a vault's storage; with `read_data`, decrypts and verifies every
    /// stored chunk. Damage is reported in the result (`clean == false`), not as an error.
    pub fn check_vault(
        &self,
        rg: &str,
        vault: &str,
        read_data: bool,
        progress: &dyn Progress,
    ) -> Result<CheckResult> {
        self.authorize_action(&self.vault_scope(rg, vault), action::VAULT_READ)?;
        let v = self.vault_row_current(rg, vault)?;
        let repo = self.open_repository(&v)?;
        let mut report = self.with_key_watch(&v, progress, |p| Ok(repo.check(read_data, p)?))?;
        // The wrapped DEK kept next to the data is what makes storage + KEK enough
        // to recover the vault: it must match the catalog's copy.
        let trusted =
            coffer_crypto::WrappedKey::from_json(v.wrapped_key_json.as_bytes()).map_err(|e| {
                Error::new(
                    ErrorCode::CatalogError,
                    format!("unreadable wrapped key in the catalog: {e}"),
                )
            })?;
        report
            .damaged_objects
            .extend(repo.verify_wrapped_keys(&[trusted])?);
        let names: HashMap<String, String> = self
            .catalog
            .instance_items(&v.guid)?
            .into_iter()
            .map(|i| (i.guid, i.name))
            .collect();
        let owners: HashMap<String, String> = repo
            .list_recovery_points()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|rp| names.get(&rp.instance_id).map(|n| (rp.id, n.clone())))
            .collect();
        Ok(CheckResult {
            id: self.vault_id(&v),
            clean: report.is_clean(),
            read_data,
            objects_checked: report.objects_checked,
            chunks_verified: report.chunks_verified,
            damaged_objects: report.damaged_objects,
            damaged_recovery_points: report
                .damaged_recovery_points
                .into_iter()
                .map(|d| DamagedRecoveryPoint {
                    backup_instance: owners.get(&d.id).cloned(),
                    recovery_point_id: d.id,
                    files: d.files,
                })
                .collect(),
        })
    }
}

/// Whether the manifest object of recovery point `id` still exists in storage
/// (`points/{id}`, see docs/format.md), readable or not.
fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| {
        Error::new(
            ErrorCode::RestoreTargetInvalid,
            format!("invalid restore target {}: {e}", p.display()),
        )
    })
}

fn check_source_dir(p: &std::path::Path) -> Result<()> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(format!(
            "the datasource path {} is no longer a directory",
            p.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::new(
            ErrorCode::DatasourceNotFound,
            format!("the datasource path {} does not exist", p.display()),
        )),
        Err(e) => Err(Error::new(
            ErrorCode::DatasourceNotReadable,
            format!("cannot access the datasource path {}: {e}", p.display()),
        )),
    }
}

//! Jobs: every backup, restore and deletion is recorded as a job row — created
//! `InProgress` with the running process id, then finished as `Completed`,
//! `CompletedWithWarnings` or `Failed` (with code, message, recommended action).

use coffer_catalog::{InstanceItemRow, JobFinish, JobOperation, JobRow, JobStatus, VaultRow};

use crate::{
    Error, ErrorCode, Instance, Result, procinfo,
    resources::{
        JOB_TYPE, JobExtendedInfo, JobProperties, JobRecoveryPoint, JobResource, UserFacingError,
        WarningDetail,
    },
    util::{self, iso_duration_ms, now_ms, rfc3339_ms, rfc3339_secs},
};

/// A successful job's outcome, as recorded.
pub(crate) struct JobSuccess {
    pub(crate) bytes: u64,
    pub(crate) warnings: Vec<String>,
    pub(crate) recovery_point: Option<(String, i64)>,
}

impl Instance {
    /// Records a new `InProgress` job and returns its id.
    pub(crate) fn start_job(
        &self,
        v: &VaultRow,
        bi: Option<&InstanceItemRow>,
        operation: JobOperation,
        recovery_point: Option<(&str, Option<i64>)>,
    ) -> Result<String> {
        let guid = util::new_guid();
        let pid = std::process::id();
        self.catalog.insert_job(&JobRow {
            guid: guid.clone(),
            vault_guid: v.guid.clone(),
            instance_guid: bi.map(|b| b.guid.clone()),
            instance_name: bi.map(|b| b.name.clone()),
            datasource_type: bi.map(|b| b.datasource_type),
            operation,
            status: JobStatus::InProgress,
            start_ms: now_ms(),
            end_ms: None,
            bytes: 0,
            pid: Some(i64::from(pid)),
            pid_start: procinfo::process_start(pid),
            error_code: None,
            error_message: None,
            recommended_action: None,
            warnings_json: "[]".to_owned(),
            principal: self.principal().to_owned(),
            recovery_point_id: recovery_point.map(|(id, _)| id.to_owned()),
            recovery_point_time: recovery_point.and_then(|(_, t)| t),
        })?;
        Ok(guid)
    }

    /// Marks a job completed (with warnings if there are any).
    pub(crate) fn complete_job(&self, job: &str, ok: &JobSuccess) -> Result<JobStatus> {
        let status = if ok.warnings.is_empty() {
            JobStatus::Completed
        } else {
            JobStatus::CompletedWithWarnings
        };
        self.catalog.finish_job(
            job,
            &JobFinish {
                status,
                end_ms: now_ms(),
                bytes: ok.bytes,
                error_code: None,
                error_message: None,
                recommended_action: None,
                warnings_json: serde_json::to_string(&ok.warnings)
                    .unwrap_or_else(|_| "[]".to_owned()),
                recovery_point_id: ok.recovery_point.as_ref().map(|(id, _)| id.clone()),
                recovery_point_time: ok.recovery_point.as_ref().map(|(_, t)| *t),
            },
        )?;
        Ok(status)
    }

    /// Marks a job failed with `err` and returns `err` tagged with the job id. A
    /// failure to record is ignored: the job is then reaped as `JobInterrupted`.
    pub(crate) fn fail_job(&self, job: &str, err: Error) -> Error {
        let _ = self.catalog.finish_job(
            job,
            &JobFinish {
                status: JobStatus::Failed,
                end_ms: now_ms(),
                bytes: 0,
                error_code: Some(err.code.as_str().to_owned()),
                error_message: Some(err.message.clone()),
                recommended_action: err.recommended_action.clone(),
                warnings_json: "[]".to_owned(),
                recovery_point_id: None,
                recovery_point_time: None,
            },
        );
        err.with_job(job)
    }

    fn job_resource(&self, v: &VaultRow, j: &JobRow) -> JobResource {
        let warnings: Vec<String> = serde_json::from_str(&j.warnings_json).unwrap_or_default();
        let end = j.end_ms.unwrap_or_else(now_ms);
        let error_details = match (&j.error_code, &j.error_message) {
            (Some(code), msg) => vec![UserFacingError {
                code: code.clone(),
                message: msg.clone().unwrap_or_default(),
                recommended_action: j.recommended_action.iter().cloned().collect(),
            }],
            _ => Vec::new(),
        };
        JobResource {
            id: format!("{}/backupJobs/{}", self.vault_id(v), j.guid),
            name: j.guid.clone(),
            resource_type: JOB_TYPE.to_owned(),
            properties: JobProperties {
                activity_id: j.guid.clone(),
                operation: j.operation.as_str().to_owned(),
                operation_category: match j.operation {
                    JobOperation::Backup => "Backup",
                    JobOperation::Restore => "Restore",
                    JobOperation::DeleteRecoveryPoint | JobOperation::DeleteBackupInstance => {
                        "Management"
                    }
                }
                .to_owned(),
                status: j.status.as_str().to_owned(),
                start_time: rfc3339_ms(j.start_ms),
                end_time: j.end_ms.map(rfc3339_ms),
                duration: iso_duration_ms(end - j.start_ms),
                vault_name: v.name.clone(),
                backup_instance_friendly_name: j.instance_name.clone(),
                data_source_type: j.datasource_type.map(|d| d.as_str().to_owned()),
                is_user_triggered: true,
                initiated_by: j.principal.clone(),
                process_id: j.pid,
                error_details,
                extended_info: JobExtendedInfo {
                    data_transferred_in_bytes: j.bytes,
                    recovery_point: j.recovery_point_id.as_ref().map(|id| JobRecoveryPoint {
                        recovery_point_id: id.clone(),
                        recovery_point_time: j.recovery_point_time.map(rfc3339_secs),
                    }),
                    warning_details: warnings
                        .into_iter()
                        .map(|w| WarningDetail {
                            resource_name: j.instance_name.clone().unwrap_or_default(),
                            warning: w,
                        })
                        .collect(),
                },
            },
        }
    }

    /// Lists the jobs of a vault, newest first.
    pub fn list_jobs(&self, rg: &str, vault: &str) -> Result<Vec<JobResource>> {
        let v = self.vault_for(rg, vault, crate::vaults::action::JOB_READ)?;
        Ok(self
            .catalog
            .jobs(&v.guid)?
            .iter()
            .map(|j| self.job_resource(&v, j))
            .collect())
    }

    /// Shows one job of a vault.
    pub fn show_job(&self, rg: &str, vault: &str, job_id: &str) -> Result<JobResource> {
        let v = self.vault_for(rg, vault, crate::vaults::action::JOB_READ)?;
        let j = self.catalog.job(&v.guid, job_id)?.ok_or_else(|| {
            Error::new(
                ErrorCode::JobNotFound,
                format!("job '{job_id}' does not exist in backup vault '{}'", v.name),
            )
        })?;
        Ok(self.job_resource(&v, &j))
    }
}

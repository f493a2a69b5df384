//! `coffer`: the command-line interface of the Coffer backup vault.
//!
//! Command and flag names follow `az dataprotection`. This binary only parses
//! arguments, calls the control plane (`coffer-control`) and prints results
//! (`-o json` or `-o table`) or errors (stable codes, non-zero exit).

mod args;
mod kvargs;
mod kvcmd;
mod output;
mod progress;

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
};

use clap::Parser;
use coffer_control::{
    DatasourceSpec, Error, ErrorCode, Instance, RestoreSpec, RestoreTarget, Result,
    VaultCreateOptions,
};

use crate::{
    args::{Cli, Command, GroupCmd, InstanceCmd, JobCmd, OutputFormat, RpCmd, VaultCmd},
    output::Printer,
};

fn main() -> ExitCode {
    // Test builds only: fail points named in `FAILPOINTS` (e.g. `cmk-after-storage-write=return`).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return args::usage_error(e),
    };
    let format = cli.output.unwrap_or_else(|| {
        if std::io::stdout().is_terminal() {
            OutputFormat::Table
        } else {
            OutputFormat::Json
        }
    });
    let printer = Printer::new(format);
    match run(cli, &printer) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            printer.error(&e);
            ExitCode::from(1)
        }
    }
}

/// The home directory: `--home`, `COFFER_HOME`, `$XDG_DATA_HOME/coffer`, `~/.local/share/coffer`.
fn resolve_home(home: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(h) = home.filter(|h| !h.as_os_str().is_empty()) {
        return Ok(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from)
        && x.is_absolute()
    {
        return Ok(x.join("coffer"));
    }
    if let Some(h) = std::env::var_os("HOME").map(PathBuf::from)
        && h.is_absolute()
    {
        return Ok(h.join(".local/share/coffer"));
    }
    Err(Error::new(
        ErrorCode::HomeDirectoryError,
        "cannot determine the home directory: pass --home DIR or set COFFER_HOME",
    ))
}

fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>> {
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(Error::new(
                ErrorCode::InvalidArgument,
                format!("invalid tag {t:?}: tags are written KEY=VALUE"),
            )),
        })
        .collect()
}

fn run(cli: Cli, p: &Printer) -> Result<()> {
    let home = resolve_home(cli.home)?;
    let mut inst = Instance::open(home, cli.master_key_file)?;
    if let Some(principal) = cli.as_principal.as_deref().filter(|s| !s.is_empty()) {
        inst.act_as(principal)?;
    }
    // Coffer's background work: scheduled purges, key rotation policies, autorotation.
    inst.run_background()?;
    match cli.command {
        Command::Identity(cmd) => kvcmd::identity(&inst, cmd, p)?,
        Command::Role(cmd) => kvcmd::role(&inst, cmd, p)?,
        Command::Keyvault(cmd) => kvcmd::keyvault(&inst, cmd, p)?,
        Command::ActivityLog(args::ActivityCmd::List { resource_id }) => {
            p.value(&inst.list_activity(resource_id.as_deref())?)
        }
        Command::Config(cmd) => match cmd {
            args::ConfigCmd::List => p.settings(&inst.list_settings()?),
            args::ConfigCmd::Set { name, value } => p.settings(&[inst.set_setting(&name, &value)?]),
            args::ConfigCmd::Unset { name } => p.settings(&[inst.unset_setting(&name)?]),
        },
        Command::Group(cmd) => match cmd {
            GroupCmd::Create {
                name,
                location,
                tags,
            } => p.group(&inst.create_resource_group(
                &name,
                location.as_deref(),
                parse_tags(&tags)?,
            )?),
            GroupCmd::Show { name } => p.group(&inst.show_resource_group(&name)?),
            GroupCmd::List => p.groups(&inst.list_resource_groups()?),
            GroupCmd::Delete { name } => p.deleted(&inst.delete_resource_group(&name)?),
        },
        Command::BackupVault(cmd) => match cmd {
            VaultCmd::Create {
                vault,
                location,
                tags,
                identity,
                cmk,
            } => p.vault(&inst.create_vault(
                &vault.resource_group,
                &vault.vault_name,
                VaultCreateOptions {
                    location,
                    tags: parse_tags(&tags)?,
                    identity: identity.into(),
                    cmk: cmk.into(),
                },
            )?),
            VaultCmd::Update {
                vault,
                identity,
                cmk,
                force,
            } => p.vault(&inst.update_vault(
                &vault.resource_group,
                &vault.vault_name,
                coffer_control::VaultUpdateOptions {
                    identity: identity.into(),
                    cmk: cmk.into(),
                    force,
                },
            )?),
            VaultCmd::Move {
                vault,
                target_resource_group,
            } => p.vault(&inst.move_vault(
                &vault.resource_group,
                &vault.vault_name,
                &target_resource_group,
            )?),
            VaultCmd::Show { vault } => {
                p.vault(&inst.show_vault(&vault.resource_group, &vault.vault_name)?)
            }
            VaultCmd::List { resource_group } => {
                p.vaults(&inst.list_vaults(resource_group.as_deref())?)
            }
            VaultCmd::Delete { vault } => {
                p.deleted(&inst.delete_vault(&vault.resource_group, &vault.vault_name)?)
            }
            VaultCmd::Check { vault, read_data } => {
                let bar = progress::for_stderr("checking");
                let r = inst.check_vault(
                    &vault.resource_group,
                    &vault.vault_name,
                    read_data,
                    bar.as_progress(),
                );
                bar.finish();
                let r = r?;
                p.check(&r);
                if !r.clean {
                    return Err(Error::new(
                        ErrorCode::DataCorrupted,
                        format!(
                            "backup vault '{}' is damaged: {} damaged object(s), {} damaged recovery point(s); see the report",
                            vault.vault_name,
                            r.damaged_objects.len(),
                            r.damaged_recovery_points.len()
                        ),
                    ));
                }
            }
        },
        Command::BackupInstance(cmd) => match cmd {
            InstanceCmd::Create {
                vault,
                name,
                datasource_type,
                datasource_path,
            } => p.instance(&inst.create_backup_instance(
                &vault.resource_group,
                &vault.vault_name,
                &name,
                DatasourceSpec {
                    datasource_type: datasource_type.into(),
                    path: datasource_path,
                },
            )?),
            InstanceCmd::Show { vault, name } => p.instance(&inst.show_backup_instance(
                &vault.resource_group,
                &vault.vault_name,
                &name,
            )?),
            InstanceCmd::List { vault } => {
                p.instances(&inst.list_backup_instances(&vault.resource_group, &vault.vault_name)?)
            }
            InstanceCmd::Delete { vault, name } => p.deleted(&inst.delete_backup_instance(
                &vault.resource_group,
                &vault.vault_name,
                &name,
            )?),
            InstanceCmd::AdhocBackup { vault, name, stdin } => {
                let input: Option<Box<dyn std::io::Read + Send>> = if stdin {
                    Some(Box::new(std::io::stdin()))
                } else {
                    None
                };
                let bar = progress::for_stderr("backing up");
                if !stdin
                    && let Ok(bi) =
                        inst.show_backup_instance(&vault.resource_group, &vault.vault_name, &name)
                    && bi.properties.data_source_info.datasource_type == "Directory"
                {
                    let path = PathBuf::from(bi.properties.data_source_info.resource_id);
                    bar.estimate_directory(path);
                }
                let r = inst.adhoc_backup(
                    &vault.resource_group,
                    &vault.vault_name,
                    &name,
                    input,
                    bar.as_progress(),
                );
                bar.finish();
                p.backup(&r?);
            }
            InstanceCmd::Restore {
                vault,
                name,
                recovery_point,
                target,
                path,
                recovery_option,
            } => {
                let to_stdout = target.as_os_str() == "-";
                let target = if to_stdout {
                    RestoreTarget::Writer(Box::new(std::io::stdout()))
                } else {
                    RestoreTarget::Path(target)
                };
                let bar = progress::for_stderr("restoring");
                let r = inst.restore(
                    &vault.resource_group,
                    &vault.vault_name,
                    &name,
                    RestoreSpec {
                        recovery_point,
                        target,
                        subpath: path,
                        recovery_option: recovery_option.into(),
                    },
                    bar.as_progress(),
                );
                bar.finish();
                if to_stdout {
                    let _ = std::io::stdout().flush();
                }
                let r = r?;
                if to_stdout {
                    // stdout carries the data: report on stderr, and only to a person.
                    if std::io::stderr().is_terminal() {
                        p.restore_to_stderr(&r);
                    }
                } else {
                    p.restore(&r);
                }
            }
        },
        Command::RecoveryPoint(cmd) => match cmd {
            RpCmd::List {
                vault,
                backup_instance,
            } => p.recovery_points(&inst.list_recovery_points(
                &vault.resource_group,
                &vault.vault_name,
                &backup_instance,
            )?),
            RpCmd::Show {
                vault,
                backup_instance,
                recovery_point,
            } => p.recovery_point(&inst.show_recovery_point(
                &vault.resource_group,
                &vault.vault_name,
                &backup_instance,
                &recovery_point,
            )?),
            RpCmd::Delete {
                vault,
                backup_instance,
                recovery_point,
            } => p.deleted(&inst.delete_recovery_point(
                &vault.resource_group,
                &vault.vault_name,
                &backup_instance,
                &recovery_point,
            )?),
        },
        Command::Job(cmd) => match cmd {
            JobCmd::List { vault } => {
                p.jobs(&inst.list_jobs(&vault.resource_group, &vault.vault_name)?)
            }
            JobCmd::Show { vault, job_id } => {
                p.job(&inst.show_job(&vault.resource_group, &vault.vault_name, &job_id)?)
            }
        },
    }
    Ok(())
}

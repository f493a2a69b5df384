//! Command-line arguments (clap derive). Names follow `az dataprotection`.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};
use coffer_control::{DEFAULT_RESOURCE_GROUP, DatasourceType, RecoveryOption};

const AFTER_HELP: &str = "\
Quick start:
  coffer backup-vault create -v my-vault
  coffer backup-instance create -v my-vault -n docs --datasource-type Directory --datasource-path /home/me/docs
  coffer backup-instance adhoc-backup -v my-vault -n docs
  coffer recovery-point list -v my-vault --backup-instance docs
  coffer backup-instance restore -v my-vault -n docs --recovery-point ID --target /tmp/restored

  pg_dump db | coffer backup-instance adhoc-backup -v my-vault -n db --stdin   (a Stream instance)
  coffer backup-instance restore -v my-vault -n db --recovery-point ID --target - | psql db

State lives in the home directory (--home, COFFER_HOME, default $XDG_DATA_HOME/coffer or
~/.local/share/coffer): the catalog, the vaults' encrypted storage and the instance master key
file master.key (mode 0600). Back up master.key separately: without it no vault can be opened.

Output: -o json (default when stdout is not a terminal) prints camelCase resources on stdout;
-o table prints columns. Errors go to stderr as {\"error\":{\"code\",\"message\",...}} (json) or
`error[CODE]: message` (table), with exit status 1. Error codes: docs/errors.md.";

/// Coffer: a self-hosted backup vault with envelope encryption.
///
/// Back up directories and streams into encrypted, deduplicated backup vaults and
/// restore any recovery point byte for byte. No server: everything runs in this
/// process against the instance home directory.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, after_help = AFTER_HELP, propagate_version = true)]
pub(crate) struct Cli {
    /// Instance home directory (catalog, vault storage, master key).
    #[arg(long, global = true, env = "COFFER_HOME", value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,
    /// Instance master key file (default: HOME/master.key, created on first use with mode 0600).
    #[arg(
        long,
        global = true,
        env = "COFFER_MASTER_KEY_FILE",
        value_name = "FILE"
    )]
    pub(crate) master_key_file: Option<PathBuf>,
    /// Output format [default: table if stdout is a terminal, else json].
    #[arg(short = 'o', long, global = true, value_enum, ignore_case = true)]
    pub(crate) output: Option<OutputFormat>,
    /// Act as this principal (object id) for authorization; default: the instance administrator.
    #[arg(long, global = true, env = "COFFER_PRINCIPAL", value_name = "ID")]
    pub(crate) as_principal: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// camelCase JSON resources.
    Json,
    /// Readable columns.
    Table,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage resource groups (containers of backup vaults).
    #[command(subcommand)]
    Group(GroupCmd),
    /// Manage backup vaults.
    #[command(subcommand)]
    BackupVault(VaultCmd),
    /// Manage backup instances (protected directories or streams); back up and restore.
    #[command(subcommand)]
    BackupInstance(InstanceCmd),
    /// List, show and delete recovery points.
    #[command(subcommand)]
    RecoveryPoint(RpCmd),
    /// List and show jobs (backups, restores, deletions).
    #[command(subcommand)]
    Job(JobCmd),
    /// Manage user-assigned managed identities.
    #[command(subcommand)]
    Identity(crate::kvargs::IdentityCmd),
    /// Role definitions and role assignments (Azure RBAC).
    #[command(subcommand)]
    Role(crate::kvargs::RoleCmd),
    /// Key vaults, keys and their cryptographic operations.
    #[command(subcommand)]
    Keyvault(crate::kvargs::KeyVaultCmd),
    /// The activity log: every write to a resource (who, what, when, outcome).
    #[command(subcommand)]
    ActivityLog(ActivityCmd),
    /// Instance-wide settings (DEK cache bound, autorotation check interval).
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCmd {
    /// List the settings with their values and defaults.
    List,
    /// Set a setting (administrator only).
    Set {
        /// Setting name (see `coffer config list`).
        name: String,
        /// New value.
        value: String,
    },
    /// Return a setting to its default (administrator only).
    Unset {
        /// Setting name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ActivityCmd {
    /// List activity log entries, newest first.
    List {
        /// Only this resource (ARM id) and the resources below it.
        #[arg(long, value_name = "ID")]
        resource_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCmd {
    /// Create a resource group.
    Create {
        /// Name of the resource group.
        #[arg(short = 'n', long)]
        name: String,
        /// Location label.
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// Tags, KEY=VALUE (repeatable).
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
    },
    /// Show a resource group.
    Show {
        /// Name of the resource group.
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List resource groups.
    List,
    /// Delete an empty resource group.
    Delete {
        /// Name of the resource group.
        #[arg(short = 'n', long)]
        name: String,
    },
}

/// Selects a backup vault.
#[derive(Debug, Args)]
pub(crate) struct VaultSel {
    /// Name of the backup vault.
    #[arg(short = 'v', long)]
    pub(crate) vault_name: String,
    /// Resource group of the vault.
    #[arg(short = 'g', long, default_value = DEFAULT_RESOURCE_GROUP)]
    pub(crate) resource_group: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum VaultCmd {
    /// Create a backup vault (its data is encrypted under a new key wrapped by the platform-managed key).
    Create {
        #[command(flatten)]
        vault: VaultSel,
        /// Location label.
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// Tags, KEY=VALUE (repeatable).
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        #[command(flatten)]
        identity: IdentityArgs,
        #[command(flatten)]
        cmk: CmkArgs,
    },
    /// Change a vault's managed identities or its customer-managed key (docs/cmk.md).
    Update {
        #[command(flatten)]
        vault: VaultSel,
        #[command(flatten)]
        identity: IdentityArgs,
        #[command(flatten)]
        cmk: CmkArgs,
        /// Allow an identity change that cuts the vault off its customer-managed key.
        #[arg(long)]
        force: bool,
    },
    /// Move a vault to another resource group (its id changes, its data stays; refused for CMK vaults).
    Move {
        #[command(flatten)]
        vault: VaultSel,
        /// The resource group to move it to.
        #[arg(long, value_name = "RG")]
        target_resource_group: String,
    },
    /// Show a backup vault (BackupVaultResource).
    Show {
        #[command(flatten)]
        vault: VaultSel,
    },
    /// List backup vaults (of one resource group with -g, else of all).
    List {
        /// Resource group.
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// Delete a backup vault and its storage (refused while it has backup instances).
    Delete {
        #[command(flatten)]
        vault: VaultSel,
    },
    /// Verify the vault's storage; with --read-data decrypt and verify every stored object.
    Check {
        #[command(flatten)]
        vault: VaultSel,
        /// Decrypt and verify all data, not only the structure.
        #[arg(long)]
        read_data: bool,
    },
}

/// Managed identities of a backup vault.
#[derive(Debug, Args)]
pub(crate) struct IdentityArgs {
    /// Identity type: None, SystemAssigned, UserAssigned or "SystemAssigned,UserAssigned".
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) identity_type: Option<String>,
    /// User-assigned identities to attach, as JSON: '{"<identity-id>":{}}'.
    #[arg(long, value_name = "JSON")]
    pub(crate) user_assigned_identities: Option<String>,
}

impl From<IdentityArgs> for coffer_control::IdentityOptions {
    fn from(a: IdentityArgs) -> Self {
        Self {
            identity_type: a.identity_type,
            user_assigned_identities: a.user_assigned_identities,
        }
    }
}

/// Customer-managed key of a backup vault.
#[derive(Debug, Args)]
pub(crate) struct CmkArgs {
    /// Key URI: https://KV.vault.coffer.local/keys/NAME[/VERSION] (versionless: follows new versions).
    #[arg(long, value_name = "URI")]
    pub(crate) cmk_encryption_key_uri: Option<String>,
    /// Enabled (Disabled is refused once enabled: no return to the platform key).
    #[arg(long, value_name = "STATE")]
    pub(crate) cmk_encryption_state: Option<String>,
    /// Identity that uses the key: SystemAssigned or UserAssigned.
    #[arg(long, value_name = "TYPE")]
    pub(crate) cmk_identity_type: Option<String>,
    /// ARM id of the user-assigned identity that uses the key.
    #[arg(long, value_name = "ID")]
    pub(crate) cmk_user_assigned_identity_id: Option<String>,
    /// Infrastructure encryption: Enabled only at creation with a customer-managed key (recorded; the second layer is not implemented yet).
    #[arg(long, value_name = "STATE")]
    pub(crate) cmk_infrastructure_encryption: Option<String>,
}

impl From<CmkArgs> for coffer_control::CmkOptions {
    fn from(a: CmkArgs) -> Self {
        Self {
            key_uri: a.cmk_encryption_key_uri,
            state: a.cmk_encryption_state,
            identity_type: a.cmk_identity_type,
            user_assigned_identity_id: a.cmk_user_assigned_identity_id,
            infrastructure_encryption: a.cmk_infrastructure_encryption,
        }
    }
}

/// Datasource types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum DatasourceTypeArg {
    /// A directory tree (--datasource-path /absolute/dir).
    #[value(name = "Directory")]
    Directory,
    /// A byte stream read from stdin at backup time (adhoc-backup --stdin).
    #[value(name = "Stream")]
    Stream,
}

impl From<DatasourceTypeArg> for DatasourceType {
    fn from(d: DatasourceTypeArg) -> Self {
        match d {
            DatasourceTypeArg::Directory => DatasourceType::Directory,
            DatasourceTypeArg::Stream => DatasourceType::Stream,
        }
    }
}

/// Restore recovery options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum RecoveryOptionArg {
    /// Fail if anything to restore already exists; nothing is overwritten.
    #[default]
    #[value(name = "FailIfExists")]
    FailIfExists,
    /// Replace existing items.
    #[value(name = "Overwrite")]
    Overwrite,
}

impl From<RecoveryOptionArg> for RecoveryOption {
    fn from(r: RecoveryOptionArg) -> Self {
        match r {
            RecoveryOptionArg::FailIfExists => RecoveryOption::FailIfExists,
            RecoveryOptionArg::Overwrite => RecoveryOption::Overwrite,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum InstanceCmd {
    /// Protect a directory or a stream in a vault.
    Create {
        #[command(flatten)]
        vault: VaultSel,
        /// Name of the backup instance.
        #[arg(short = 'n', long)]
        name: String,
        /// What to protect.
        #[arg(long, value_enum, ignore_case = true)]
        datasource_type: DatasourceTypeArg,
        /// Absolute path of the directory to protect (Directory only).
        #[arg(long, value_name = "PATH")]
        datasource_path: Option<PathBuf>,
    },
    /// Show a backup instance.
    Show {
        #[command(flatten)]
        vault: VaultSel,
        /// Name of the backup instance.
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List the backup instances of a vault.
    List {
        #[command(flatten)]
        vault: VaultSel,
    },
    /// Delete a backup instance and all its recovery points.
    Delete {
        #[command(flatten)]
        vault: VaultSel,
        /// Name of the backup instance.
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Back up now: make a recovery point in VaultStore. Prints the job id and recovery point id.
    AdhocBackup {
        #[command(flatten)]
        vault: VaultSel,
        /// Name of the backup instance.
        #[arg(short = 'n', long)]
        name: String,
        /// Read the data from stdin (Stream instances).
        #[arg(long)]
        stdin: bool,
    },
    /// Restore a recovery point to a directory, a file, or stdout ('-', Stream only).
    Restore {
        #[command(flatten)]
        vault: VaultSel,
        /// Name of the backup instance.
        #[arg(short = 'n', long)]
        name: String,
        /// Recovery point id.
        #[arg(long, value_name = "ID")]
        recovery_point: String,
        /// Target directory (Directory), file or '-' for stdout (Stream).
        #[arg(long, value_name = "DIR|FILE|-")]
        target: PathBuf,
        /// Restore only this path inside the recovery point (Directory only).
        #[arg(long, value_name = "SUBPATH")]
        path: Option<String>,
        /// What to do when an item already exists.
        #[arg(long, value_enum, ignore_case = true, default_value_t = RecoveryOptionArg::FailIfExists)]
        recovery_option: RecoveryOptionArg,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RpCmd {
    /// List the recovery points of a backup instance.
    List {
        #[command(flatten)]
        vault: VaultSel,
        /// Name of the backup instance.
        #[arg(long)]
        backup_instance: String,
    },
    /// Show a recovery point.
    Show {
        #[command(flatten)]
        vault: VaultSel,
        /// Name of the backup instance.
        #[arg(long)]
        backup_instance: String,
        /// Recovery point id.
        #[arg(long, value_name = "ID")]
        recovery_point: String,
    },
    /// Delete a recovery point and reclaim the space no other recovery point uses.
    Delete {
        #[command(flatten)]
        vault: VaultSel,
        /// Name of the backup instance.
        #[arg(long)]
        backup_instance: String,
        /// Recovery point id.
        #[arg(long, value_name = "ID")]
        recovery_point: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobCmd {
    /// List the jobs of a vault, newest first.
    List {
        #[command(flatten)]
        vault: VaultSel,
    },
    /// Show a job.
    Show {
        #[command(flatten)]
        vault: VaultSel,
        /// Job id.
        #[arg(long, value_name = "ID")]
        job_id: String,
    },
}

/// Reports a command-line usage error. Help and version go to stdout with exit 0;
/// other errors use the error format of the requested output (exit 1).
pub(crate) fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }
    if wants_json() {
        let msg = e.render().to_string();
        let msg = msg.trim().trim_start_matches("error: ").to_owned();
        let env = serde_json::json!({"error": {
            "code": "InvalidArgument",
            "message": msg,
            "recommendedAction": "See `coffer --help` or `coffer <command> --help`."
        }});
        eprintln!("{env}");
    } else {
        let _ = e.print();
    }
    ExitCode::from(1)
}

/// Whether the raw arguments (or the terminal) ask for JSON output.
fn wants_json() -> bool {
    let args: Vec<String> = std::env::args().collect();
    for (i, a) in args.iter().enumerate() {
        let val = if a == "-o" || a == "--output" {
            args.get(i + 1).map(String::as_str)
        } else if let Some(v) = a.strip_prefix("--output=") {
            Some(v)
        } else {
            a.strip_prefix("-o").filter(|v| !v.is_empty())
        };
        if let Some(v) = val {
            return v.eq_ignore_ascii_case("json");
        }
    }
    !std::io::stdout().is_terminal()
}

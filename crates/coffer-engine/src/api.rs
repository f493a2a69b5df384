//! Public API of the engine (the contract used by the control plane).

use std::{
    io::{Read, Write},
    path::PathBuf,
    sync::Arc,
};

use serde::{Deserialize, Serialize};

/// Engine failures. Each maps to one stable public error code in the control plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Storage failed (I/O, missing object).
    #[error(transparent)]
    Store(#[from] coffer_store::StoreError),
    /// A stored object failed authentication or is malformed: data damage.
    #[error("damaged object {object}: {reason}")]
    Damaged { object: String, reason: String },
    /// The caller asked the job to stop ([`Progress::stop_requested`]); nothing
    /// partial became visible.
    #[error("the job was stopped by its caller")]
    Stopped,
    /// No recovery point with this id.
    #[error("recovery point {0} not found")]
    RecoveryPointNotFound(String),
    /// The datasource (directory) cannot be read at all.
    #[error("cannot read datasource {path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path inside a recovery point that does not exist (restore `--path`).
    #[error("path {0:?} does not exist in the recovery point")]
    PathNotFound(String),
    /// Restore would overwrite an existing item and the recovery option is FailIfExists.
    #[error(
        "restore target already contains {0}; use recovery option Overwrite or an empty target"
    )]
    TargetExists(PathBuf),
    /// Restore target problems (not a directory, not writable, ...).
    #[error("cannot write restore target {path}: {source}")]
    Target {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Some files could not be restored because their data is damaged; all others were restored.
    #[error("{} file(s) could not be restored because their stored data is damaged: {}", .0.len(), .0.join(", "))]
    RestoreIncomplete(Vec<String>),
    /// Anything else that indicates a bug or an unexpected state.
    #[error("internal engine error: {0}")]
    Internal(String),
}

/// Content-defined chunk sizes in bytes: minimum, average (a power of two) and maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSizes {
    /// No chunk is shorter, except a file's or stream's last.
    pub min: u32,
    /// The average the cut-point masks aim at.
    pub avg: u32,
    /// No chunk is longer.
    pub max: u32,
}

/// Tunables of a repository, fixed at creation and stored (encrypted) in its config.
///
/// Chunk sizes depend on the size of the file, a trade-off between dedup and compression:
/// small chunks find more of a changed file in the vault, large chunks compress better
/// (each chunk is compressed on its own) and cost less index memory. Large files (disk
/// images, databases) are the ones changed in place, so they get fine chunks; a file up to
/// `whole_file_max` is one chunk, as it usually changes as a whole; files in between get
/// medium chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoParams {
    /// Files up to this many bytes are stored as one chunk (0: none is).
    pub whole_file_max: u32,
    /// Chunk sizes of files larger than `whole_file_max` and smaller than `large_file_min`.
    pub medium_chunks: ChunkSizes,
    /// Files at least this large, and streams (of unknown size), get `large_chunks`.
    pub large_file_min: u64,
    /// Chunk sizes of large files and streams.
    pub large_chunks: ChunkSizes,
    /// zstd level for compressible chunks.
    pub zstd_level: i32,
    /// Target size of a pack object in bytes.
    pub pack_target: u32,
}

impl Default for RepoParams {
    fn default() -> Self {
        Self {
            whole_file_max: 1 << 20,
            medium_chunks: ChunkSizes {
                min: 64 << 10,
                avg: 256 << 10,
                max: 1 << 20,
            },
            large_file_min: 64 << 20,
            large_chunks: ChunkSizes {
                min: 16 << 10,
                avg: 64 << 10,
                max: 256 << 10,
            },
            zstd_level: 3,
            pack_target: 16 * 1024 * 1024,
        }
    }
}

impl RepoParams {
    /// The longest chunk any file can give (the longest blob a pack holds).
    pub fn max_chunk(&self) -> u32 {
        self.whole_file_max
            .max(self.medium_chunks.max)
            .max(self.large_chunks.max)
    }
}

/// What a backup reads.
pub enum BackupSource {
    /// A directory tree (absolute path).
    Directory(PathBuf),
    /// A byte stream (e.g. stdin carrying a database dump).
    Stream(Box<dyn Read + Send>),
}

/// Kind of data a recovery point holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    /// A directory tree.
    Directory,
    /// A single byte stream.
    Stream,
}

/// A backup to run.
pub struct BackupRequest {
    /// The backup instance this recovery point belongs to (its immutable id).
    pub instance_id: String,
    /// What to read.
    pub source: BackupSource,
    /// Recovery point time, unix seconds (UTC).
    pub time: i64,
}

/// A recovery point as recorded in storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPointInfo {
    /// 32 lowercase hex characters.
    pub id: String,
    /// Owning backup instance id.
    pub instance_id: String,
    /// Unix seconds (UTC).
    pub time: i64,
    /// Directory or Stream.
    pub source_kind: SourceKind,
    /// Total bytes of file content (logical size).
    pub logical_bytes: u64,
    /// Bytes newly stored in the vault by this backup (after dedup, compression, encryption).
    pub added_bytes: u64,
    /// Number of regular files (1 for a stream).
    pub file_count: u64,
    /// Number of directories.
    pub dir_count: u64,
}

/// Result of a backup.
#[derive(Clone, Debug)]
pub struct BackupOutcome {
    /// The new recovery point (durable when this is returned).
    pub recovery_point: RecoveryPointInfo,
    /// Items skipped, each `CODE: path: reason` with a stable code
    /// ([`WARN_FILE_NOT_READABLE`](crate::WARN_FILE_NOT_READABLE), ...).
    pub warnings: Vec<String>,
}

/// Where a restore writes.
pub enum RestoreTarget {
    /// A directory (created if missing).
    Directory(PathBuf),
    /// A file path for a stream recovery point, or a writer (stdout).
    Writer(Box<dyn Write + Send>),
    /// A file path for a stream recovery point.
    File(PathBuf),
}

/// A restore to run.
pub struct RestoreRequest {
    /// Recovery point id.
    pub recovery_point: String,
    /// Destination.
    pub target: RestoreTarget,
    /// Optional sub-path inside the recovery point (`a/b`), directory recovery points only.
    pub subpath: Option<String>,
    /// Overwrite existing items (true) or fail if any exists (false, FailIfExists).
    pub overwrite: bool,
}

/// Result of a restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOutcome {
    /// Regular files restored.
    pub files: u64,
    /// Bytes of content written.
    pub bytes: u64,
    /// Items skipped with a reason.
    pub warnings: Vec<String>,
}

/// Result of deleting a recovery point.
#[derive(Clone, Debug, Default)]
pub struct DeleteOutcome {
    /// Bytes of storage reclaimed.
    pub reclaimed_bytes: u64,
    /// Pack objects deleted.
    pub packs_deleted: u64,
}

/// A recovery point found damaged by [`Repository::check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedRecoveryPoint {
    /// Recovery point id.
    pub id: String,
    /// Paths of the affected files (or `<stream>`, or `<metadata>` when the tree itself is damaged).
    pub files: Vec<String>,
}

/// Result of [`Repository::check`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Objects (packs, index files, manifests) examined.
    pub objects_checked: u64,
    /// Chunks decrypted and verified (with `read_data`).
    pub chunks_verified: u64,
    /// Keys of objects that are damaged or missing.
    pub damaged_objects: Vec<String>,
    /// Recovery points affected by the damage, with their affected files.
    pub damaged_recovery_points: Vec<DamagedRecoveryPoint>,
}

impl CheckReport {
    /// True when nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.damaged_objects.is_empty() && self.damaged_recovery_points.is_empty()
    }
}

/// Receives progress of long operations (for progress bars). Must be cheap.
pub trait Progress: Send + Sync {
    /// Totals, when known up front (restore knows them; backup of a stream does not).
    fn set_total(&self, _bytes: Option<u64>, _files: Option<u64>) {}
    /// Bytes and files processed since the last call.
    fn advance(&self, _bytes: u64, _files: u64) {}
    /// Polled between chunks and files: `true` makes backup and restore stop with
    /// [`EngineError::Stopped`] (a backup then publishes no recovery point). Must be cheap.
    fn stop_requested(&self) -> bool {
        false
    }
}

/// A progress sink that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// An opened vault storage: the unit of deduplication.
pub struct Repository {
    pub(crate) inner: Arc<crate::repo::Inner>,
}

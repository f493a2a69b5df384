//! Directory listings ("trees") and recovery-point manifests.
//!
//! A tree is one blob (kind `Tree`) listing a directory's entries sorted by name,
//! with all their metadata; sub-directories point to their own tree by chunk id,
//! so an unchanged sub-tree is stored once across all recovery points. Names are
//! raw bytes (any Unix name round-trips). Everything here is encrypted at rest.

use coffer_crypto::ChunkId;
use serde::{Deserialize, Serialize};

use crate::{RecoveryPointInfo, SourceKind};

/// What kind of item a node is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum NodeKind {
    /// A regular file with its content chunks in order.
    File { content: Vec<ChunkId> },
    /// A directory and its tree.
    Dir { tree: ChunkId },
    /// A symbolic link and its target bytes.
    Symlink { target: Vec<u8> },
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    /// File name bytes (never empty, `.`, `..`, or containing `/` or NUL).
    pub(crate) name: Vec<u8>,
    pub(crate) kind: NodeKind,
    /// Permission bits (and setuid/setgid/sticky).
    pub(crate) mode: u32,
    /// Modification time, nanoseconds since the epoch.
    pub(crate) mtime_ns: i64,
    /// Change time, nanoseconds since the epoch (incremental backups only).
    pub(crate) ctime_ns: i64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Size in bytes (files), 0 otherwise.
    pub(crate) size: u64,
    /// Inode and device (incremental backups only).
    pub(crate) inode: u64,
    pub(crate) dev: u64,
}

impl Node {
    /// A file node with no inode information (streams).
    pub(crate) fn stream_file(
        name: &[u8],
        content: Vec<ChunkId>,
        size: u64,
        mtime_ns: i64,
    ) -> Self {
        Self {
            name: name.to_vec(),
            kind: NodeKind::File { content },
            mode: 0o600,
            mtime_ns,
            ctime_ns: 0,
            uid: 0,
            gid: 0,
            size,
            inode: 0,
            dev: 0,
        }
    }
}

/// A directory listing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tree {
    pub(crate) nodes: Vec<Node>,
}

/// Is `name` safe to create inside a directory?
pub(crate) fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    /// Checks names are valid, unique and sorted (what restore relies on).
    pub(crate) fn validate(&self) -> Result<(), String> {
        for w in self.nodes.windows(2) {
            if w[0].name >= w[1].name {
                return Err("tree entries are not sorted and unique".into());
            }
        }
        match self.nodes.iter().find(|n| !valid_name(&n.name)) {
            Some(n) => Err(format!(
                "unsafe entry name {:?}",
                String::from_utf8_lossy(&n.name)
            )),
            None => Ok(()),
        }
    }
}

/// The sealed manifest of a recovery point (`points/{id}`): written last, it makes
/// the recovery point exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) info: RecoveryPointInfo,
    /// Root tree. For a stream, a tree with one file node named `stream`.
    pub(crate) root: ChunkId,
    /// The recovery point this one was made incrementally from, if any.
    pub(crate) parent: Option<String>,
}

/// Name of the single node of a stream recovery point.
pub(crate) const STREAM_NODE: &[u8] = b"stream";

/// Convenience: the kind of a recovery point.
impl Manifest {
    pub(crate) fn is_stream(&self) -> bool {
        self.info.source_kind == SourceKind::Stream
    }
}

//! Coffer's storage engine: turns a directory tree or a byte stream into an
//! encrypted, deduplicated recovery point in an [`coffer_store::ObjectStore`], and back.
//!
//! The engine is given an unwrapped [`coffer_crypto::DataKey`] and never learns what
//! wrapped it. See `docs/format.md` for every object it writes and `ARCHITECTURE.md`
//! for the data flow. Public entry point: [`Repository`].
//!
//! Modules: [`chunker`](crate) (keyed FastCDC), `format` (object headers, sealing,
//! blob codec), `pack` (pack writer and reader), `index` (chunk → location),
//! `tree` (directory listings, manifests), `backup`, `restore`, `check`, `gc`
//! (deletion and space reclamation), `lock` (inter-process vault locks).

mod api;
mod backup;
mod check;
mod chunker;
mod format;
mod gc;
mod index;
mod lock;
mod pack;
mod prefetch;
pub mod primitives;
mod repo;
mod restore;
mod tree;

pub use api::*;
pub use backup::{WARN_DIRECTORY_NOT_READABLE, WARN_FILE_NOT_READABLE, WARN_SPECIAL_FILE_SKIPPED};

/// The cores this process may use, read once: on Linux each
/// `available_parallelism` call reads the cgroup's CPU quota from `/proc` and `/sys`,
/// too slow for a per-file decision.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Spawns a scoped thread named `name` (shown by `top -H`, `perf` and debuggers),
/// panicking as [`std::thread::Scope::spawn`] does if the thread cannot be created.
pub(crate) fn spawn_named<'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, T> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn_scoped(s, f)
        .expect("failed to spawn a thread")
}

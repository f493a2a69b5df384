//! When a cache of catalog rows must read the catalog again. Each cache keeps the
//! catalog's change counter of its tables (moved by triggers in the transaction of
//! every change, by any process) as of its rows; reading that counter takes a read
//! transaction. [`Checked`] skips that read while the catalog's settled commit count
//! ([`coffer_catalog::Catalog::settled_commits`], shared memory) has not moved since
//! the counter was last read: no process committed anything since.

use coffer_catalog::Catalog;

/// What a cache's rows were last checked against.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Checked {
    /// The change counter of the cached rows' tables when they were read.
    generation: Option<i64>,
    /// The settled commit count at which `generation` was last read.
    at_commit: Option<u64>,
}

impl Checked {
    /// Nothing was committed since the change counter was last read (`now`: the
    /// settled commit count): the cached rows are the catalog's.
    pub(crate) fn is_current(&self, now: Option<u64>) -> bool {
        now.is_some() && now == self.at_commit
    }

    /// Records `generation`, the change counter read after `before` (the settled
    /// commit count read first); true if it moved, when the cached rows must go.
    pub(crate) fn confirm(
        &mut self,
        catalog: &Catalog,
        generation: i64,
        before: Option<u64>,
    ) -> bool {
        let moved = self.generation != Some(generation);
        self.generation = Some(generation);
        // Unchanged around the read: the counter read is the one at `before`.
        let after = catalog.settled_commits();
        self.at_commit = before.filter(|_| after == before);
        moved
    }
}

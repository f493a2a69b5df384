//! Restore's pack reads. A restore thread knows which chunks it writes next, so
//! [`Prefetch`] reads a batch of them from their packs in a few large reads (sorted by
//! pack and offset, neighbours merged into one read) into one reused buffer, through
//! [`ObjectStore::read_once`](coffer_store::ObjectStore::read_once): on a local store
//! that is `O_DIRECT`, so a restore neither fills the page cache with packs it reads
//! once nor pays for the fresh cache pages (on the measured VMs, each one a host
//! fault; see `docs/performance.md`).
//!
//! The prefetched bytes are only a faster path: a chunk that was not prefetched, whose
//! read failed, or whose bytes fail to decode is read again alone by
//! [`Inner::read_chunk`], which gives the error a restore reports.

use coffer_crypto::ChunkId;
use coffer_store::DIRECT_IO_ALIGN;

use crate::{
    EngineError,
    format::{self, BlobKind, ObjectId, ObjectType},
    index::{BlobLoc, IdMap, Index},
    pack::{self, PackEntry},
    repo::Inner,
};

/// A batch's chunks are read in one read per run of neighbours at most this far apart
/// in a pack (the gap is read and thrown away: cheaper than another request).
const MERGE_GAP: u64 = 64 << 10;
/// No single read is longer (a run is split).
const READ_MAX: u64 = 8 << 20;
/// Raw bytes of chunks per batch that restore hands to [`Prefetch::load`]; a thread's
/// buffer holds about this much (compressed chunks take less).
pub(crate) const BATCH_RAW: u64 = 4 << 20;

/// Where a prefetched chunk's ciphertext sits in the buffer.
struct Slot {
    at: usize,
    pack: ObjectId,
    kind: BlobKind,
    entry: PackEntry,
}

/// One thread's prefetched chunks (see the module docs).
#[derive(Default)]
pub(crate) struct Prefetch {
    /// The allocation; the reads go to `buf[base..]`, aligned to [`DIRECT_IO_ALIGN`].
    buf: Vec<u8>,
    base: usize,
    slots: IdMap<Slot>,
}

impl Prefetch {
    /// Replaces the prefetched chunks with `ids` (repeats and chunks missing from the
    /// index are skipped). Read failures are not reported here: those chunks are
    /// read again by [`Prefetch::read`].
    pub(crate) fn load<'a>(
        &mut self,
        inner: &Inner,
        index: &Index,
        ids: impl IntoIterator<Item = &'a ChunkId>,
    ) {
        self.slots.clear();
        let mut wanted: Vec<(BlobLoc, &ChunkId)> = ids
            .into_iter()
            .filter_map(|id| index.get(id).map(|loc| (loc, id)))
            .collect();
        wanted.sort_unstable_by_key(|(loc, _)| (loc.pack_number(), loc.offset()));
        wanted.dedup_by_key(|(loc, _)| (loc.pack_number(), loc.offset()));
        // Runs of neighbours, each read as one aligned span.
        let mut runs: Vec<(std::ops::Range<usize>, u64, u64)> = Vec::new();
        for (i, (loc, _)) in wanted.iter().enumerate() {
            let (start, end) = (u64::from(loc.offset()), loc.end());
            match runs.last_mut() {
                Some((r, first, last))
                    if wanted[r.start].0.pack_number() == loc.pack_number()
                        && start <= *last + MERGE_GAP
                        && end - *first <= READ_MAX =>
                {
                    r.end = i + 1;
                    *last = (*last).max(end);
                }
                _ => runs.push((i..i + 1, start, end)),
            }
        }
        let align = DIRECT_IO_ALIGN as u64;
        let span = |first: u64, last: u64| last.next_multiple_of(align) - first / align * align;
        let total: u64 = runs.iter().map(|&(_, f, l)| span(f, l)).sum();
        self.reserve(usize::try_from(total).expect("a batch fits in memory"));
        let mut pos = self.base;
        for (r, first, last) in runs {
            let from = first / align * align;
            let len = span(first, last) as usize;
            let (loc0, id0) = wanted[r.start];
            let (pack_id, _) = index.entry(id0, loc0);
            let key = format::object_key(ObjectType::Pack, &pack_id);
            let got = inner
                .store
                .read_once(&key, from, &mut self.buf[pos..pos + len])
                .unwrap_or(0) as u64;
            for &(loc, id) in &wanted[r] {
                if loc.end() <= from + got {
                    let (pack, entry) = index.entry(id, loc);
                    let at = pos + (u64::from(loc.offset()) - from) as usize;
                    let kind = loc.kind();
                    self.slots.insert(
                        *id,
                        Slot {
                            at,
                            pack,
                            kind,
                            entry,
                        },
                    );
                }
            }
            pos += len;
        }
    }

    /// Loads `ids` unless every one of them that the index knows is loaded already.
    pub(crate) fn ensure(&mut self, inner: &Inner, index: &Index, ids: &[ChunkId]) {
        if !ids
            .iter()
            .all(|id| self.slots.contains_key(id) || !index.contains(id))
        {
            self.load(inner, index, ids);
        }
    }

    /// Makes room for `len` bytes of aligned reads.
    fn reserve(&mut self, len: usize) {
        if self.buf.len() < self.base + len {
            self.buf = vec![0; len + DIRECT_IO_ALIGN];
            self.base = self.buf.as_ptr().align_offset(DIRECT_IO_ALIGN);
        }
    }

    /// Reads and verifies chunk `id`, from the prefetched bytes when it can.
    pub(crate) fn read(
        &self,
        inner: &Inner,
        index: &Index,
        id: &ChunkId,
    ) -> Result<Vec<u8>, EngineError> {
        if let Some(s) = self.slots.get(id) {
            let ct = self.buf[s.at..s.at + s.entry.len as usize].to_vec();
            if let Ok(data) =
                pack::open_blob(&inner.dek, &inner.id_key, &s.pack, s.kind, &s.entry, ct)
            {
                return Ok(data);
            }
        }
        inner.read_chunk(index, id)
    }
}

/// Splits `content` into batches of about [`BATCH_RAW`] raw bytes (by the index's
/// lengths; a chunk missing from the index counts as empty).
pub(crate) fn batches<'a>(
    index: &'a Index,
    content: &'a [ChunkId],
) -> impl Iterator<Item = &'a [ChunkId]> + 'a {
    let mut rest = content;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut raw = 0u64;
        let mut n = 0;
        while n < rest.len() && (n == 0 || raw < BATCH_RAW) {
            raw += index.get(&rest[n]).map_or(0, |l| u64::from(l.raw_len()));
            n += 1;
        }
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        Some(batch)
    })
}

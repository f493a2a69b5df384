//! Entry points into the engine's hot primitives, for benchmarks only (the bench
//! harness's "hardware limit" and the criterion micro-benchmarks). They run the
//! exact code the backup and restore paths run, without storage.

use coffer_crypto::{ChunkIdKey, DataKey};

use crate::{
    RepoParams,
    chunker::{BlockCut, Chunker, ScanLanes},
    format::{self, BlobKind},
    index::Index,
    pack::{PackDirectory, PackEntry, PackWriter},
};

/// The per-vault primitives of one DEK.
pub struct Primitives {
    dek: DataKey,
    id_key: ChunkIdKey,
    chunker: Chunker,
    params: RepoParams,
}

impl Primitives {
    /// Primitives of a fresh random vault key with `params`.
    pub fn new(params: RepoParams) -> Self {
        let dek = DataKey::generate().expect("system RNG");
        let id_key = ChunkIdKey::derive(&dek);
        // Large files' chunking: the hardware limit is measured for a large image.
        let c = params.large_chunks;
        let chunker = Chunker::new(&dek, c.min, c.avg, c.max);
        Self {
            dek,
            id_key,
            chunker,
            params,
        }
    }

    /// Chunking only: returns the number of chunks of `data`.
    pub fn chunk(&self, data: &[u8]) -> usize {
        let mut n = 0;
        self.chunker.for_each_chunk_in(data, |_| n += 1);
        n
    }

    /// Chunking of a large file as the backup workers do it, on one core: block by
    /// block, each copied into a reused buffer (as `pread` does), scanned, then cut.
    /// Returns the number of chunks.
    pub fn chunk_in_blocks(&self, data: &[u8]) -> usize {
        let (head_max, fresh) = self.chunker.block_layout();
        let (mut cut, mut lanes, mut out) = (BlockCut::default(), ScanLanes::default(), Vec::new());
        let mut buf = vec![0u8; head_max + fresh];
        let mut n = 0;
        for k in 0..data.len().div_ceil(fresh).max(1) as u64 {
            let (from, head) = self.chunker.block_span(k);
            let (from, offset) = (from as usize, from as usize + head);
            let block = &data[from..(offset + fresh).min(data.len())];
            let buf = &mut buf[..block.len()];
            buf.copy_from_slice(block);
            let candidates = self
                .chunker
                .scan_block(buf, head, offset as u64, &mut lanes);
            let ended = offset + fresh >= data.len();
            out.clear();
            self.chunker
                .cut_block(&mut cut, candidates, buf, from as u64, ended, &mut out);
            n += out.len();
        }
        n
    }

    /// Chunking of a stream as a backup reads it: into shared blocks (recycled, as the
    /// backup does), with the candidate scan run ahead on every core. Returns the
    /// number of chunks.
    pub fn chunk_stream(&self, data: &[u8]) -> usize {
        let mut n = 0;
        let pool = std::cell::RefCell::new(Vec::new());
        self.chunker
            .for_each_shared_chunk::<_, std::io::Error>(
                data,
                || pool.borrow_mut().pop().unwrap_or_default(),
                |block| pool.borrow_mut().push(block),
                |_, _| {
                    n += 1;
                    Ok(())
                },
            )
            .expect("reading memory cannot fail");
        n
    }

    /// Keyed hashing only, over `data` in pieces of the average chunk size.
    pub fn hash(&self, data: &[u8]) -> u8 {
        data.chunks(self.params.large_chunks.avg as usize)
            .fold(0u8, |acc, c| acc ^ self.id_key.id(c).0[0])
    }

    /// Compression only (with the incompressibility test): returns encoded bytes.
    pub fn compress(&self, data: &[u8]) -> usize {
        let avg = self.params.large_chunks.avg as usize;
        let mut out = vec![0u8; 1 + avg];
        data.chunks(avg)
            .map(|c| {
                format::compress_blob_into(c, self.params.zstd_level, &mut out)
                    .unwrap_or(1 + c.len())
            })
            .sum()
    }

    /// The whole single-pass cost of a backup of `data` without I/O: chunk, keyed
    /// hash, compress, encrypt into packs. Returns the bytes that would be stored.
    pub fn backup_pass(&self, data: &[u8]) -> u64 {
        let target = self.params.pack_target as usize;
        let mut w = Some(PackWriter::new(&self.dek, BlobKind::Data, target).expect("system RNG"));
        let mut stored = 0u64;
        self.chunker.for_each_chunk_in(data, |chunk| {
            let id = self.id_key.id(chunk);
            let open = w.as_mut().expect("a pack is open");
            stored += u64::from(open.add_chunk(id, chunk, self.params.zstd_level));
            if open.is_full() {
                // As the backup workers do: finish the pack, reuse its buffer.
                let full = w.take().expect("a pack is open");
                let buf = full.finish().expect("directory").into_buffer();
                w = Some(
                    PackWriter::with_buffer(&self.dek, BlobKind::Data, target, buf)
                        .expect("system RNG"),
                );
            }
        });
        stored
    }
}

/// Builds an index of `n` synthetic chunks and returns it with a probe closure; used to
/// measure memory per indexed chunk (the caller reads RSS before and after).
pub fn synthetic_index(n: usize) -> impl Fn(u64) -> bool {
    let mut index = Index::default();
    let per_pack = 256usize;
    let mut blobs = Vec::with_capacity(per_pack);
    let mut i = 0u64;
    while (i as usize) < n {
        blobs.clear();
        for _ in 0..per_pack.min(n - i as usize) {
            let id = coffer_crypto::ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes());
            blobs.push(PackEntry {
                id,
                offset: 24 + (i as u32 % 65536) * 64,
                len: 65536,
                raw_len: 65536,
            });
            i += 1;
        }
        let mut pack_id = [0u8; 16];
        pack_id[..8].copy_from_slice(&i.to_le_bytes());
        index.add_pack(&PackDirectory {
            pack_id,
            kind: BlobKind::Data,
            blobs: std::mem::take(&mut blobs),
        });
    }
    index.finish();
    move |k: u64| {
        index.contains(&coffer_crypto::ChunkId(
            *blake3::hash(&k.to_le_bytes()).as_bytes(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmarked_chunking_paths_cut_alike() {
        let p = Primitives::new(RepoParams::default());
        let mut data = vec![0u8; (9 << 20) + 4321];
        blake3::Hasher::new()
            .finalize_xof()
            .fill(&mut data[..6 << 20]);
        for d in [&data[..], &data[..4 << 20], &[][..]] {
            let n = p.chunk(d);
            assert_eq!(p.chunk_in_blocks(d), n);
            assert_eq!(p.chunk_stream(d), n);
        }
    }
}

//! Packs: many encrypted blobs in one object, with an encrypted directory at the end.
//!
//! Layout: header (24 bytes) ‖ blob* ‖ sealed directory ‖ directory length (u32 LE) ‖ `CFRT`.
//! Each blob is AES-256-GCM under the pack key HKDF(DEK, `coffer/v1/pack`, pack id)
//! with nonce = its offset in the pack and associated data = pack id ‖ offset ‖ kind ‖ chunk id.

use coffer_crypto::{AeadKey, ChunkId, ChunkIdKey, DataKey, aead::TAG_LEN};
use coffer_store::{ObjectKey, ObjectStore};
use serde::{Deserialize, Serialize};

use crate::{
    EngineError,
    format::{self, BlobKind, HEADER_LEN, ObjectId, ObjectType},
};

/// Magic at the very end of a pack.
const TRAILER_MAGIC: &[u8; 4] = b"CFRT";

/// One blob in a pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PackEntry {
    /// Chunk id (keyed hash of the plaintext chunk).
    pub(crate) id: ChunkId,
    /// Offset of the ciphertext from the start of the pack object.
    pub(crate) offset: u32,
    /// Ciphertext length including the tag.
    pub(crate) len: u32,
    /// Length of the chunk before compression.
    pub(crate) raw_len: u32,
}

/// The directory of a pack: which blobs it holds, where. Stored encrypted in the
/// pack's trailer and, for fast loading, in index objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PackDirectory {
    /// The pack's object id.
    pub(crate) pack_id: ObjectId,
    /// Whether it holds file data or trees.
    pub(crate) kind: BlobKind,
    /// Its blobs in offset order.
    pub(crate) blobs: Vec<PackEntry>,
}

/// The longest chunk a pack holds (see [`crate::RepoParams::max_chunk`]).
pub(crate) const MAX_CHUNK: u32 = 1 << 20;

/// Alignment of a pack's first byte in its buffer, so that the store can write it
/// with direct I/O without a bounce copy.
const BUF_ALIGN: usize = 4096;

/// Builds one pack in memory. The pack's bytes are `buf[base..end]`. The buffer keeps
/// its whole length (zero-filled once, lazily, when allocated), so blobs are written
/// into it in place: it never grows, never moves (it stays aligned) and is never
/// zeroed again. It can be taken back from the finished pack and reused for the next.
pub(crate) struct PackWriter {
    id: ObjectId,
    kind: BlobKind,
    key: AeadKey,
    buf: Vec<u8>,
    base: usize,
    end: usize,
    blobs: Vec<PackEntry>,
    target: usize,
}

/// A finished pack: its storage key, bytes (`buf[base..end]`) and directory.
pub(crate) struct FinishedPack {
    pub(crate) key: ObjectKey,
    buf: Vec<u8>,
    base: usize,
    end: usize,
    pub(crate) dir: PackDirectory,
}

impl FinishedPack {
    /// The pack object's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.base..self.end]
    }

    /// The buffer, for the next [`PackWriter::with_buffer`].
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// The directory, and the buffer for reuse.
    pub(crate) fn into_parts(self) -> (PackDirectory, Vec<u8>) {
        (self.dir, self.buf)
    }
}

impl PackWriter {
    pub(crate) fn new(dek: &DataKey, kind: BlobKind, target: usize) -> Result<Self, EngineError> {
        Self::with_buffer(dek, kind, target, Vec::new())
    }

    /// A new pack built in `buf` (a buffer of an earlier pack, or empty; a new one is
    /// allocated unless it is big enough).
    pub(crate) fn with_buffer(
        dek: &DataKey,
        kind: BlobKind,
        target: usize,
        mut buf: Vec<u8>,
    ) -> Result<Self, EngineError> {
        let id = format::new_object_id()?;
        // Room for the target, one more blob (at most MAX_CHUNK, with its codec byte and
        // tag), the trailer (about 50 bytes a blob; it grows the buffer in the rare
        // case it does not fit) and alignment.
        let size = target + 2 * MAX_CHUNK as usize + 2 * BUF_ALIGN;
        if buf.len() < size {
            // Zeroed by the allocator: pages are only touched (resident) once written.
            buf = vec![0u8; size];
        }
        let base = buf.as_ptr().align_offset(BUF_ALIGN).min(BUF_ALIGN);
        let end = base + HEADER_LEN;
        buf[base..end].copy_from_slice(&format::header(ObjectType::Pack, &id));
        Ok(Self {
            id,
            kind,
            key: format::pack_key(dek, &id),
            buf,
            base,
            end,
            blobs: Vec::new(),
            target,
        })
    }

    /// Length of the pack so far (the next blob's offset).
    fn len(&self) -> usize {
        self.end - self.base
    }

    /// Room for `n` more bytes at the end of the pack (only the trailer of a pack of
    /// very many blobs can need it: the buffer is then grown, and may lose its
    /// alignment, which costs the store a bounce copy, not correctness).
    fn make_room(&mut self, n: usize) {
        if self.end + n > self.buf.len() {
            self.buf.resize(self.end + n, 0);
        }
    }

    /// Encodes (compressing unless incompressible) and encrypts `chunk` straight into
    /// the pack: compressed into the buffer and sealed there, or, stored raw, sealed
    /// from `chunk` into the buffer (no copy first). Returns its stored length.
    pub(crate) fn add_chunk(&mut self, id: ChunkId, chunk: &[u8], level: i32) -> u32 {
        let raw_len = u32::try_from(chunk.len()).expect("chunks stay below 4 GiB");
        let offset = u32::try_from(self.len()).expect("packs stay below 4 GiB");
        let (nonce, aad) = (
            format::blob_nonce(offset),
            format::blob_aad(&self.id, offset, self.kind, &id),
        );
        self.make_room(1 + chunk.len() + TAG_LEN);
        let start = self.end;
        let room = &mut self.buf[start..start + 1 + chunk.len()];
        let len = match format::compress_blob_into(chunk, level, room) {
            Some(plain) => {
                let sealed = &mut self.buf[start..start + plain + TAG_LEN];
                self.key.seal_in_slice(nonce, &aad, sealed);
                sealed.len()
            }
            None => {
                let sealed = &mut self.buf[start..start + 1 + chunk.len() + TAG_LEN];
                self.key
                    .seal_concat_into(nonce, &aad, &[format::CODEC_RAW], chunk, sealed);
                sealed.len()
            }
        };
        self.end += len;
        let len = u32::try_from(len).expect("blobs stay below 4 GiB");
        self.blobs.push(PackEntry {
            id,
            offset,
            len,
            raw_len,
        });
        len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.target
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Seals the directory and returns the finished object.
    pub(crate) fn finish(mut self) -> Result<FinishedPack, EngineError> {
        let dir = PackDirectory {
            pack_id: self.id,
            kind: self.kind,
            blobs: std::mem::take(&mut self.blobs),
        };
        let trailer =
            postcard::to_stdvec(&dir).map_err(|e| EngineError::Internal(e.to_string()))?;
        let sealed_len = trailer.len() + TAG_LEN;
        self.make_room(sealed_len + 4 + TRAILER_MAGIC.len());
        let start = self.end;
        let sealed = &mut self.buf[start..start + sealed_len];
        sealed[..trailer.len()].copy_from_slice(&trailer);
        self.key
            .seal_in_slice(format::trailer_nonce(), &trailer_aad(&self.id), sealed);
        let tail = start + sealed_len;
        let sealed_len = u32::try_from(sealed_len).expect("small trailer");
        self.buf[tail..tail + 4].copy_from_slice(&sealed_len.to_le_bytes());
        self.buf[tail + 4..tail + 8].copy_from_slice(TRAILER_MAGIC);
        Ok(FinishedPack {
            key: format::object_key(ObjectType::Pack, &self.id),
            buf: self.buf,
            base: self.base,
            end: tail + 8,
            dir,
        })
    }
}

fn trailer_aad(id: &ObjectId) -> Vec<u8> {
    let mut aad = format::header(ObjectType::Pack, id).to_vec();
    aad.extend_from_slice(b"trailer");
    aad
}

/// Decrypts, decodes and verifies one blob given its ciphertext bytes.
pub(crate) fn open_blob(
    dek: &DataKey,
    id_key: &ChunkIdKey,
    pack_id: &ObjectId,
    kind: BlobKind,
    entry: &PackEntry,
    mut ct: Vec<u8>,
) -> Result<Vec<u8>, String> {
    if ct.len() < TAG_LEN {
        return Err("truncated blob".into());
    }
    format::pack_key(dek, pack_id)
        .open_in_place(
            format::blob_nonce(entry.offset),
            &format::blob_aad(pack_id, entry.offset, kind, &entry.id),
            &mut ct,
        )
        .map_err(|_| "authentication failed".to_string())?;
    let data = format::decode_blob(&ct, entry.raw_len as usize)?;
    if data.len() != entry.raw_len as usize || id_key.id(&data) != entry.id {
        return Err("content does not match its chunk id".into());
    }
    Ok(data)
}

/// Reads one blob from storage.
pub(crate) fn read_blob(
    store: &dyn ObjectStore,
    dek: &DataKey,
    id_key: &ChunkIdKey,
    pack_id: &ObjectId,
    kind: BlobKind,
    entry: &PackEntry,
) -> Result<Vec<u8>, EngineError> {
    let key = format::object_key(ObjectType::Pack, pack_id);
    let ct = store.get_range(&key, u64::from(entry.offset), u64::from(entry.len))?;
    open_blob(dek, id_key, pack_id, kind, entry, ct).map_err(|reason| EngineError::Damaged {
        object: key.to_string(),
        reason: format!("chunk {}: {reason}", &entry.id.to_hex()[..16]),
    })
}

/// Parses and authenticates a whole pack's header and directory.
pub(crate) fn read_directory(
    dek: &DataKey,
    key: &ObjectKey,
    bytes: &[u8],
) -> Result<PackDirectory, EngineError> {
    let damaged = |reason: &str| EngineError::Damaged {
        object: key.to_string(),
        reason: reason.into(),
    };
    let id = format::id_from_key(key).ok_or_else(|| damaged("bad pack name"))?;
    format::check_header(bytes, ObjectType::Pack, &id, key)?;
    if bytes.len() < HEADER_LEN + 8 || &bytes[bytes.len() - 4..] != TRAILER_MAGIC {
        return Err(damaged("missing trailer"));
    }
    let tlen = u32::from_le_bytes(
        bytes[bytes.len() - 8..bytes.len() - 4]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    let end = bytes.len() - 8;
    if tlen > end - HEADER_LEN {
        return Err(damaged("bad trailer length"));
    }
    let mut trailer = bytes[end - tlen..end].to_vec();
    format::pack_key(dek, &id)
        .open_in_place(format::trailer_nonce(), &trailer_aad(&id), &mut trailer)
        .map_err(|_| damaged("trailer authentication failed"))?;
    let dir: PackDirectory =
        postcard::from_bytes(&trailer).map_err(|_| damaged("undecodable trailer"))?;
    if dir.pack_id != id {
        return Err(damaged("trailer names another pack"));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip_and_tamper_detection() {
        let dek = DataKey::generate().unwrap();
        let idk = ChunkIdKey::derive(&dek);
        let mut w = PackWriter::new(&dek, BlobKind::Data, 1 << 20).unwrap();
        // Compressible, too short to gain, all zeros, and incompressible (stored raw,
        // sealed from the chunk straight into the pack).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..70_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let chunks: Vec<Vec<u8>> = vec![
            b"alpha".repeat(100),
            b"beta".to_vec(),
            vec![0u8; 4096],
            random,
        ];
        for c in &chunks {
            w.add_chunk(idk.id(c), c, 3);
        }
        let done = w.finish().unwrap();
        let (key, bytes, dir) = (done.key.clone(), done.bytes().to_vec(), done.dir.clone());
        assert_eq!(
            dir.blobs[3].len as usize,
            1 + 70_000 + TAG_LEN,
            "random is stored raw"
        );
        assert!(dir.blobs[0].len < 100, "text is compressed");
        // The pack starts aligned for direct I/O, and a reused buffer is not reallocated.
        assert_eq!(done.bytes().as_ptr().align_offset(BUF_ALIGN), 0);
        let at = done.bytes().as_ptr();
        // A reused buffer builds an identical-format pack.
        let mut w =
            PackWriter::with_buffer(&dek, BlobKind::Data, 1 << 20, done.into_buffer()).unwrap();
        w.add_chunk(idk.id(&chunks[0]), &chunks[0], 3);
        let again = w.finish().unwrap();
        assert_eq!(again.bytes().as_ptr(), at);
        let e = &again.dir.blobs[0];
        let ct = again.bytes()[e.offset as usize..(e.offset + e.len) as usize].to_vec();
        let pid = again.dir.pack_id;
        assert_eq!(
            open_blob(&dek, &idk, &pid, BlobKind::Data, e, ct).unwrap(),
            chunks[0]
        );
        assert_eq!(
            read_directory(&dek, &again.key, again.bytes()).unwrap(),
            again.dir
        );
        assert_eq!(read_directory(&dek, &key, &bytes).unwrap(), dir);
        for (c, e) in chunks.iter().zip(&dir.blobs) {
            let ct = bytes[e.offset as usize..(e.offset + e.len) as usize].to_vec();
            assert_eq!(
                &open_blob(&dek, &idk, &dir.pack_id, BlobKind::Data, e, ct.clone()).unwrap(),
                c
            );
            // Wrong kind (tree vs data) or wrong offset: refused.
            assert!(open_blob(&dek, &idk, &dir.pack_id, BlobKind::Tree, e, ct.clone()).is_err());
            let mut moved = e.clone();
            moved.offset += 1;
            assert!(open_blob(&dek, &idk, &dir.pack_id, BlobKind::Data, &moved, ct).is_err());
        }
        // Flip every byte in turn: the directory or the affected blob fails.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            let dir_ok = read_directory(&dek, &key, &b).is_ok();
            let blobs_ok = dir.blobs.iter().all(|e| {
                let ct = b[e.offset as usize..(e.offset + e.len) as usize].to_vec();
                open_blob(&dek, &idk, &dir.pack_id, BlobKind::Data, e, ct).is_ok()
            });
            assert!(!(dir_ok && blobs_ok), "flip at {i} undetected");
        }
    }
}

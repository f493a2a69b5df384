//! On-disk object formats (documented in `docs/format.md`).
//!
//! Every object starts with a 24-byte header: magic `CFFR`, format version, object
//! type, two reserved zero bytes and a random 128-bit object id that also names
//! the object in storage. Metadata objects (config, index, recovery-point
//! manifests) are sealed whole with AES-256-GCM under a per-object subkey
//! HKDF(DEK, `coffer/v1/meta`, salt = type ‖ object id) and a random nonce; the
//! header and the object's storage key are the associated data, so an object moved,
//! renamed, replayed under another name or type fails authentication.

use coffer_crypto::{AeadKey, ChunkId, CryptoError, DataKey, aead, kdf, labels};
use coffer_store::ObjectKey;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::EngineError;

/// Magic bytes at the start of every object.
pub(crate) const MAGIC: &[u8; 4] = b"CFFR";
/// Current format version.
pub(crate) const VERSION: u8 = 1;
/// Header length.
pub(crate) const HEADER_LEN: usize = 24;

/// Object types (header byte 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ObjectType {
    Config = 1,
    Pack = 2,
    Index = 3,
    Manifest = 4,
}

impl ObjectType {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Config,
            2 => Self::Pack,
            3 => Self::Index,
            4 => Self::Manifest,
            _ => return None,
        })
    }
}

/// A random 128-bit object id.
pub(crate) type ObjectId = [u8; 16];

pub(crate) fn new_object_id() -> Result<ObjectId, EngineError> {
    coffer_crypto::random_array().map_err(|e| EngineError::Internal(e.to_string()))
}

/// Storage key of an object.
pub(crate) fn object_key(ty: ObjectType, id: &ObjectId) -> ObjectKey {
    let h = hex::encode(id);
    let s = match ty {
        ObjectType::Config => "config".to_owned(),
        ObjectType::Pack => format!("data/{}/{h}", &h[..2]),
        ObjectType::Index => format!("index/{h}"),
        ObjectType::Manifest => format!("points/{h}"),
    };
    ObjectKey::new(s).expect("generated keys are valid")
}

/// Parses the id from the last segment of a storage key.
pub(crate) fn id_from_key(key: &ObjectKey) -> Option<ObjectId> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(key.name(), &mut id).ok()?;
    Some(id)
}

pub(crate) fn header(ty: ObjectType, id: &ObjectId) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[5] = ty as u8;
    h[8..].copy_from_slice(id);
    h
}

/// Checks an object's header against its expected type and id.
pub(crate) fn check_header(
    bytes: &[u8],
    ty: ObjectType,
    id: &ObjectId,
    what: &ObjectKey,
) -> Result<(), EngineError> {
    let damaged = |reason: &str| EngineError::Damaged {
        object: what.to_string(),
        reason: reason.into(),
    };
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(damaged("bad magic or truncated header"));
    }
    if bytes[4] != VERSION {
        return Err(damaged("unsupported format version"));
    }
    if ObjectType::from_u8(bytes[5]) != Some(ty) || bytes[6..8] != [0, 0] {
        return Err(damaged("unexpected object type"));
    }
    if &bytes[8..HEADER_LEN] != id {
        return Err(damaged("object id does not match its name"));
    }
    Ok(())
}

fn meta_key(dek: &DataKey, ty: ObjectType, id: &ObjectId) -> AeadKey {
    let mut salt = [0u8; 17];
    salt[0] = ty as u8;
    salt[1..].copy_from_slice(id);
    AeadKey::new(&kdf::derive(dek.secret(), labels::META, &salt))
}

fn meta_aad(header: &[u8], key: &ObjectKey) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(key.as_str().as_bytes());
    aad
}

/// Serialises and seals a metadata object; returns (storage key, bytes).
pub(crate) fn seal_meta<T: Serialize>(
    dek: &DataKey,
    ty: ObjectType,
    id: &ObjectId,
    value: &T,
) -> Result<(ObjectKey, Vec<u8>), EngineError> {
    let key = object_key(ty, id);
    let h = header(ty, id);
    let body = postcard::to_stdvec(value).map_err(|e| EngineError::Internal(e.to_string()))?;
    let body = zstd::bulk::compress(&body, 3).map_err(|e| EngineError::Internal(e.to_string()))?;
    let sealed = meta_key(dek, ty, id)
        .seal_random(&meta_aad(&h, &key), &body)
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&sealed);
    Ok((key, out))
}

/// Opens a metadata object read from `key`.
pub(crate) fn open_meta<T: DeserializeOwned>(
    dek: &DataKey,
    ty: ObjectType,
    key: &ObjectKey,
    bytes: &[u8],
) -> Result<T, EngineError> {
    let body = open_meta_plain(dek, ty, key, bytes)?;
    postcard::from_bytes(&body).map_err(|e| EngineError::Damaged {
        object: key.to_string(),
        reason: format!("undecodable contents: {e}"),
    })
}

/// Authenticates and decrypts a metadata object; returns its serialised value.
pub(crate) fn open_meta_plain(
    dek: &DataKey,
    ty: ObjectType,
    key: &ObjectKey,
    bytes: &[u8],
) -> Result<Vec<u8>, EngineError> {
    let id = if ty == ObjectType::Config {
        [0u8; 16]
    } else {
        id_from_key(key).unwrap_or([0xff; 16])
    };
    check_header(bytes, ty, &id, key)?;
    let damaged = |reason: String| EngineError::Damaged {
        object: key.to_string(),
        reason,
    };
    let body = meta_key(dek, ty, &id)
        .open_random(&meta_aad(&bytes[..HEADER_LEN], key), &bytes[HEADER_LEN..])
        .map_err(|e| match e {
            CryptoError::Authentication => damaged("authentication failed".into()),
            other => damaged(other.to_string()),
        })?;
    zstd::stream::decode_all(&body[..]).map_err(|e| damaged(format!("decompression failed: {e}")))
}

/// Kind of a blob stored in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum BlobKind {
    /// File or stream content.
    Data,
    /// A directory listing ([`crate::tree::Tree`]).
    Tree,
}

/// Blob payload codec (first plaintext byte of every blob).
pub(crate) const CODEC_RAW: u8 = 0;
pub(crate) const CODEC_ZSTD: u8 = 1;

/// Associated data of a blob: pack id ‖ offset ‖ kind ‖ chunk id.
pub(crate) fn blob_aad(pack_id: &ObjectId, offset: u32, kind: BlobKind, id: &ChunkId) -> [u8; 53] {
    let mut aad = [0u8; 53];
    aad[..16].copy_from_slice(pack_id);
    aad[16..20].copy_from_slice(&offset.to_be_bytes());
    aad[20] = kind as u8;
    aad[21..].copy_from_slice(&id.0);
    aad
}

/// The AEAD key of a pack: HKDF(DEK, `coffer/v1/pack`, salt = pack id).
pub(crate) fn pack_key(dek: &DataKey, pack_id: &ObjectId) -> AeadKey {
    AeadKey::new(&kdf::derive(dek.secret(), labels::PACK, pack_id))
}

/// Nonce of a blob: its offset in the pack (unique within the pack by construction).
pub(crate) fn blob_nonce(offset: u32) -> [u8; aead::NONCE_BYTES] {
    aead::counter_nonce(u64::from(offset))
}

/// Nonce of a pack's trailer (never an offset).
pub(crate) fn trailer_nonce() -> [u8; aead::NONCE_BYTES] {
    aead::counter_nonce(u64::MAX)
}

/// Compresses `data` into `out` as a blob plaintext (codec byte ‖ zstd frame) when it
/// looks compressible and compression saves at least 1/32; returns the plaintext's
/// length. `None` means the chunk is stored raw (codec byte [`CODEC_RAW`] ‖ `data`),
/// and `out` then holds nothing of use. The frame goes straight into `out` (a pack
/// buffer): no per-chunk buffer, no copy; compression stops early once its output
/// would not be smaller than `data`.
pub(crate) fn compress_blob_into(data: &[u8], level: i32, out: &mut [u8]) -> Option<usize> {
    if out.is_empty() || !looks_compressible(data) {
        return None;
    }
    out[0] = CODEC_ZSTD;
    let room = (out.len() - 1).min(data.len());
    let c = with_compressor(level, |z| z.compress_to_buffer(data, &mut out[1..=room])).ok()?;
    // Keep compression only when it saves at least 1/32.
    (c + c / 32 < data.len()).then_some(1 + c)
}

/// Decodes a blob plaintext back into chunk data.
pub(crate) fn decode_blob(plain: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    match plain.split_first() {
        Some((&CODEC_RAW, rest)) => Ok(rest.to_vec()),
        Some((&CODEC_ZSTD, rest)) => DECOMPRESSOR
            .with(|d| d.borrow_mut().decompress(rest, raw_len))
            .map_err(|e| format!("decompression failed: {e}")),
        _ => Err("unknown blob codec".into()),
    }
}

thread_local! {
    /// One zstd compression context per thread and level (creating one per chunk
    /// costs more than compressing a small chunk).
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    /// One zstd decompression context per thread.
    static DECOMPRESSOR: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("zstd decompression context"));
}

fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        f(&mut slot.as_mut().expect("just set").1)
    })
}

/// Bytes of a chunk the incompressibility test looks at: 64 runs of 16 bytes, spread
/// evenly over the chunk (all of it when it is shorter).
const ENTROPY_SAMPLE: usize = 1024;
const ENTROPY_RUN: usize = 16;

/// Cheap incompressibility test: order-0 entropy of an evenly strided sample of at most
/// [`ENTROPY_SAMPLE`] bytes. Random or already-compressed data (≥ 7.5 bits per byte)
/// skips zstd entirely.
fn looks_compressible(data: &[u8]) -> bool {
    if data.len() < 512 {
        return true;
    }
    let mut hist = [0u32; 256];
    let runs = ENTROPY_SAMPLE / ENTROPY_RUN;
    // Distance between run starts: at most `runs` runs, so at most ENTROPY_SAMPLE bytes.
    let stride = data.len().div_ceil(runs).max(ENTROPY_RUN);
    let mut n = 0usize;
    for run in data.chunks(stride) {
        // Runs of 16 bytes, so that local structure (text, repeats) shows up.
        for &b in &run[..run.len().min(ENTROPY_RUN)] {
            hist[b as usize] += 1;
        }
        n += run.len().min(ENTROPY_RUN);
    }
    // H = log2(n) - (1/n) sum c log2 c, with c log2 c from a table (n <= ENTROPY_SAMPLE).
    let table = c_log2_c();
    let sum: f32 = hist.iter().map(|&c| table[c as usize]).sum();
    let entropy = (n as f32).log2() - sum / n as f32;
    // A sample of 1,024 bytes of uniform data shows about 7.8 bits (the estimate is biased
    // low for small samples); the threshold leaves room for that bias.
    entropy < 7.5
}

/// `c * log2(c)` for every count a sample can hold (0 for 0).
fn c_log2_c() -> &'static [f32; ENTROPY_SAMPLE + 1] {
    static TABLE: std::sync::OnceLock<[f32; ENTROPY_SAMPLE + 1]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0f32; ENTROPY_SAMPLE + 1];
        for (c, v) in t.iter_mut().enumerate().skip(1) {
            let c = c as f32;
            *v = c * c.log2();
        }
        t
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blob plaintext of `data` (codec byte ‖ payload) in a buffer of its own.
    fn encode_blob(data: &[u8], level: i32) -> Vec<u8> {
        let mut out = vec![0u8; 1 + data.len()];
        match compress_blob_into(data, level, &mut out) {
            Some(n) => out.truncate(n),
            None => {
                out[0] = CODEC_RAW;
                out[1..].copy_from_slice(data);
            }
        }
        out
    }

    #[test]
    fn meta_round_trip_and_binding() {
        let dek = DataKey::generate().unwrap();
        let id = new_object_id().unwrap();
        let (key, bytes) = seal_meta(&dek, ObjectType::Index, &id, &vec![1u32, 2, 3]).unwrap();
        let v: Vec<u32> = open_meta(&dek, ObjectType::Index, &key, &bytes).unwrap();
        assert_eq!(v, [1, 2, 3]);
        // Same bytes under another name or type: refused.
        let other = object_key(ObjectType::Index, &new_object_id().unwrap());
        assert!(open_meta::<Vec<u32>>(&dek, ObjectType::Index, &other, &bytes).is_err());
        assert!(
            open_meta::<Vec<u32>>(
                &dek,
                ObjectType::Manifest,
                &object_key(ObjectType::Manifest, &id),
                &bytes
            )
            .is_err()
        );
        // Any flipped byte: refused.
        for i in [0, 5, 10, HEADER_LEN, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(
                open_meta::<Vec<u32>>(&dek, ObjectType::Index, &key, &b).is_err(),
                "byte {i}"
            );
        }
        // Another key: refused.
        assert!(
            open_meta::<Vec<u32>>(
                &DataKey::generate().unwrap(),
                ObjectType::Index,
                &key,
                &bytes
            )
            .is_err()
        );
    }

    /// `n` bytes that look random (a 64-bit LCG's high bits).
    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect()
    }

    #[test]
    fn blob_codec() {
        let text = b"hello hello hello hello ".repeat(1000);
        let enc = encode_blob(&text, 3);
        assert_eq!(enc[0], CODEC_ZSTD);
        assert!(enc.len() < text.len() / 10);
        assert_eq!(decode_blob(&enc, text.len()).unwrap(), text);
        let random = pseudo_random(65536, 1);
        let enc = encode_blob(&random, 3);
        assert_eq!(enc[0], CODEC_RAW);
        assert_eq!(decode_blob(&enc, random.len()).unwrap(), random);
    }

    #[test]
    fn incompressibility_test_on_every_size() {
        let random = pseudo_random(300_000, 7);
        let text = b"fn main() { println!(\"coffer backup vault\"); }\n".repeat(7000);
        let sizes = (0..5000).chain((5000..300_000).step_by(997));
        for len in sizes {
            assert!(looks_compressible(&text[..len]), "text of {len} bytes");
            // Below 512 bytes every chunk is tried (zstd decides).
            assert_eq!(
                looks_compressible(&random[..len]),
                len < 512,
                "random, {len} bytes"
            );
        }
    }
}

//! Content-defined chunking with a secret gear table.
//!
//! FastCDC (v2020, normalisation level 1) from the `fastcdc` crate, but with a gear
//! table of 256 random 64-bit words derived from the vault's DEK (label
//! `coffer/v1/chunker`) instead of the public table: chunk boundaries, and so
//! chunk sizes, depend on a per-vault secret. Together with packing (an observer
//! sees only whole packs, whose directory is encrypted) this defeats the published
//! chunk-size fingerprinting attacks on unkeyed CDC.

use std::io::{self, Read};

use coffer_crypto::{DataKey, kdf, labels};
use fastcdc::v2020::{Normalization, cut_gear, select_masks};

/// The chunking parameters and secret gear tables of one vault.
pub(crate) struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Chunker {
    /// Builds the chunker of the vault whose DEK is `dek`.
    pub(crate) fn new(dek: &DataKey, min: u32, avg: u32, max: u32) -> Self {
        let seed = kdf::derive(dek.secret(), labels::CHUNKER, &[]);
        let mut stream = blake3::Hasher::new_keyed(seed.expose()).finalize_xof();
        let mut gear = Box::new([0u64; 256]);
        let mut buf = [0u8; 8];
        for g in gear.iter_mut() {
            stream.fill(&mut buf);
            *g = u64::from_le_bytes(buf);
        }
        let mut gear_ls = Box::new([0u64; 256]);
        for (ls, g) in gear_ls.iter_mut().zip(gear.iter()) {
            *ls = g << 1;
        }
        let (mask_s, mask_l) = select_masks(avg as usize, Normalization::Level1);
        Self {
            min: min as usize,
            avg: avg as usize,
            max: max as usize,
            mask_s,
            mask_l,
            gear,
            gear_ls,
        }
    }

    /// Length of the next chunk at the start of `data` (`data` holds at least
    /// `max` bytes unless it is the end of the input).
    pub(crate) fn cut(&self, data: &[u8]) -> usize {
        let (_, len) = cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        len.max(1).min(data.len())
    }

    /// Splits a reader into chunks, calling `f` for each; memory stays bounded by a
    /// few maximum chunk sizes. `buf` is a reusable read window (grown once, never
    /// zeroed again: reusing it across many small files matters). Returns the total
    /// number of bytes read.
    pub(crate) fn for_each_chunk<R: Read, E: From<io::Error>>(
        &self,
        mut reader: R,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let window = (self.max * 4).max(1 << 20);
        if buf.len() < window {
            buf.resize(window, 0);
        }
        let mut start = 0usize;
        let mut end = 0usize;
        let mut eof = false;
        let mut total = 0u64;
        loop {
            // Refill so that at least `max` bytes are available (or we hit EOF).
            if !eof && end - start < self.max {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < buf.len() {
                    match reader.read(&mut buf[end..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => {
                            end += n;
                            total += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if start == end {
                return Ok(total);
            }
            let len = self.cut(&buf[start..end]);
            f(&buf[start..start + len])?;
            start += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x1234_5678_9abc_def0u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn cuts(c: &Chunker, d: &[u8]) -> Vec<usize> {
        let mut v = Vec::new();
        c.for_each_chunk::<_, io::Error>(d, &mut Vec::new(), |ch| {
            v.push(ch.len());
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn chunks_cover_input_within_bounds_and_depend_on_key() {
        let d = data(4 << 20);
        let k1 = DataKey::generate().unwrap();
        let k2 = DataKey::generate().unwrap();
        let c1 = Chunker::new(&k1, 16 << 10, 64 << 10, 256 << 10);
        let c2 = Chunker::new(&k2, 16 << 10, 64 << 10, 256 << 10);
        let a = cuts(&c1, &d);
        assert_eq!(a.iter().sum::<usize>(), d.len());
        assert!(
            a[..a.len() - 1]
                .iter()
                .all(|&l| (16 << 10..=256 << 10).contains(&l))
        );
        let avg = d.len() / a.len();
        assert!((32 << 10..=128 << 10).contains(&avg), "avg {avg}");
        assert_ne!(a, cuts(&c2, &d), "boundaries must depend on the vault key");
        assert_eq!(
            a,
            cuts(&Chunker::new(&k1, 16 << 10, 64 << 10, 256 << 10), &d)
        );
    }

    #[test]
    fn boundaries_resynchronise_after_an_insertion() {
        let d = data(2 << 20);
        let c = Chunker::new(&DataKey::generate().unwrap(), 16 << 10, 64 << 10, 256 << 10);
        let mut e = d.clone();
        e.splice(1 << 20..1 << 20, b"inserted bytes".iter().copied());
        let a = cuts(&c, &d);
        let b = cuts(&c, &e);
        let common = a
            .iter()
            .rev()
            .zip(b.iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        assert!(
            common >= a.len() / 3,
            "tail chunks should match: {common} of {}",
            a.len()
        );
    }
}

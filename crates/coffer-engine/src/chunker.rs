//! Content-defined chunking with a secret gear table.
//!
//! FastCDC (v2020, normalisation level 1) from the `fastcdc` crate, but with a gear
//! table of 256 random 64-bit words derived from the vault's DEK (label
//! `coffer/v1/chunker`) instead of the public table: chunk boundaries, and so
//! chunk sizes, depend on a per-vault secret. Together with packing (an observer
//! sees only whole packs, whose directory is encrypted) this defeats the published
//! chunk-size fingerprinting attacks on unkeyed CDC.

//!
//! The cut points are exactly those of the crate's `cut_gear` (a test checks it on
//! many inputs and keys), but found differently, for speed: the gear hash only
//! depends on the last 48 bytes once the masks are applied (bit k of the rolling
//! hash depends on the last k+1 bytes, and both masks stop at bit 47), so every
//! position whose hash could match either mask is found by one scan over the read
//! window in four independent lanes (instruction-level parallelism instead of one
//! long shift-add dependency chain); choosing a cut then only looks at those few
//! candidates, plus the first 48 positions after the minimum size, where the
//! chunk's own hash (started at the minimum) still differs from the rolling one.
//! Since the scan only needs the 48 bytes before a position, a large input is scanned
//! in blocks on every core (a file's blocks by the backup workers that read them, a
//! stream's by scanner threads) and cut once in order, with the same cut points.

use std::{
    collections::VecDeque,
    io::{self, Read},
    ops::Range,
    sync::Arc,
    thread,
};

use coffer_crypto::{DataKey, kdf, labels};
use fastcdc::v2020::{Normalization, select_masks};

use crate::{ChunkSizes, RepoParams};

/// How one vault splits its inputs, by their size (see [`RepoParams`]).
pub(crate) struct ChunkPolicy {
    whole_file_max: u64,
    large_file_min: u64,
    medium: Chunker,
    large: Chunker,
}

/// How an input of a given size is split.
pub(crate) enum Split<'a> {
    /// Kept whole: one chunk.
    Whole,
    /// Cut by this chunker.
    Chunks(&'a Chunker),
}

impl ChunkPolicy {
    pub(crate) fn new(dek: &DataKey, params: &RepoParams) -> Self {
        let make = |s: ChunkSizes| Chunker::new(dek, s.min, s.avg, s.max);
        Self {
            whole_file_max: u64::from(params.whole_file_max),
            large_file_min: params.large_file_min,
            medium: make(params.medium_chunks),
            large: make(params.large_chunks),
        }
    }

    /// How to split a file of `size` bytes (`u64::MAX` for a stream of unknown size).
    pub(crate) fn split(&self, size: u64) -> Split<'_> {
        if size <= self.whole_file_max {
            Split::Whole
        } else if size < self.large_file_min {
            Split::Chunks(&self.medium)
        } else {
            Split::Chunks(&self.large)
        }
    }

    /// Files up to this size are one chunk.
    pub(crate) fn whole_file_max(&self) -> u64 {
        self.whole_file_max
    }
}

/// The chunking parameters and secret gear table of one vault.
pub(crate) struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    /// Bits set in both masks: a position can only cut if its hash has none of them.
    mask_both: u64,
    /// Positions this far past a chunk's hashing start see the rolling hash.
    settle: usize,
    gear: Box<[u64; 256]>,
}

/// A position whose rolling hash has none of `mask_both`: (absolute offset, hash).
pub(crate) type Candidate = (u64, u64);

/// A scanner's reusable per-lane candidate lists.
pub(crate) type ScanLanes = [Vec<Candidate>; LANES];

/// Scanning state over one input: the rolling hash after the last scanned byte and
/// the candidates not yet passed by a cut.
#[derive(Default)]
struct Scan {
    hash: u64,
    /// Absolute offset of the next byte to scan.
    scanned: u64,
    candidates: VecDeque<Candidate>,
    lanes: [Vec<Candidate>; LANES],
}

const LANES: usize = 4;

/// Where the cutting of a file cut block by block stands: the offset where its next
/// chunk starts and the candidates after it (see [`Chunker::cut_block`]).
#[derive(Default)]
pub(crate) struct BlockCut {
    start: u64,
    scan: Scan,
}

impl BlockCut {
    /// Offset of the next chunk's start: once the input has ended, its length.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }
}

/// A scanner thread is gone (it could only have panicked): the input cannot be cut.
fn scanners_stopped() -> io::Error {
    io::Error::other("the chunker's scanning threads stopped")
}

/// How many blocks of a large input are read and waiting for (or in) their scan.
const SCAN_AHEAD: usize = 3;

/// A block to scan: its fresh bytes are `block[max..max + len]`, at absolute offset
/// `offset`; the answer goes to `reply`.
struct ScanJob {
    warm: Warm,
    block: Vec<u8>,
    len: usize,
    offset: u64,
    reply: crossbeam_channel::Sender<Scanned>,
}

/// A scanned block, its fresh length and its candidates.
type Scanned = (Vec<u8>, usize, Vec<Candidate>);

/// The last bytes read (up to 64: the rolling hash's warm-up needs `settle` < 64).
#[derive(Clone)]
struct Warm {
    bytes: [u8; 64],
    len: usize,
}

impl Default for Warm {
    fn default() -> Self {
        Self {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl Warm {
    /// Appends `data`, keeping the last `keep` (at most 64) bytes.
    fn push(&mut self, data: &[u8], keep: usize) {
        let data = &data[data.len().saturating_sub(keep)..];
        let old = (keep - data.len()).min(self.len);
        self.bytes.copy_within(self.len - old..self.len, 0);
        self.bytes[old..old + data.len()].copy_from_slice(data);
        self.len = old + data.len();
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Reads into `buf[*end..]` until it is full or the input ends; returns whether it
/// ended.
pub(crate) fn fill(reader: &mut impl Read, buf: &mut [u8], end: &mut usize) -> io::Result<bool> {
    while *end < buf.len() {
        match reader.read(&mut buf[*end..]) {
            Ok(0) => return Ok(true),
            Ok(n) => *end += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Rolls the four lanes' hashes `h` from lane offset `i` up to the first offset
/// where any lane has a candidate (its hashes then include that byte), or to the
/// lanes' end; returns that offset. Lane `k` is `region[k * lane_len..][..lane_len]`.
///
/// Never inlined, and given only plain values: its code is the same whatever calls it
/// (inlined, it differed between `coffer` and `coffer-bench`, one of them reloading a
/// lane pointer from the stack on every byte). Its speed also depends on its address:
/// 2.8 or 4.3 GB/s a core by where the loop starts in a 64-byte line, which
/// `.cargo/config.toml`'s function alignment pins (docs/performance.md, "The scan
/// loop's speed depended on its address"); after editing it, check that its first
/// `movzbl` still lands at 0x23 (mod 0x40) with `objdump -d`.
#[inline(never)]
fn run_lanes(
    region: &[u8],
    lane_len: usize,
    i: usize,
    gear: &[u64; 256],
    mb: u64,
    h: &mut [u64; LANES],
) -> usize {
    let (l0, rest) = region.split_at(lane_len);
    let (l1, rest) = rest.split_at(lane_len);
    let (l2, rest) = rest.split_at(lane_len);
    let l3 = &rest[..lane_len];
    let [mut h0, mut h1, mut h2, mut h3] = *h;
    let mut i = i;
    while i < lane_len {
        h0 = (h0 << 1).wrapping_add(gear[l0[i] as usize]);
        h1 = (h1 << 1).wrapping_add(gear[l1[i] as usize]);
        h2 = (h2 << 1).wrapping_add(gear[l2[i] as usize]);
        h3 = (h3 << 1).wrapping_add(gear[l3[i] as usize]);
        if (h0 & mb == 0) | (h1 & mb == 0) | (h2 & mb == 0) | (h3 & mb == 0) {
            break;
        }
        i += 1;
    }
    *h = [h0, h1, h2, h3];
    i
}

/// Records the lanes whose hash is a candidate at lane offset `i` (rare: out of line).
#[cold]
#[inline(never)]
fn record(lanes: &mut [Vec<Candidate>; LANES], h: [u64; LANES], mb: u64, pos0: u64, lane_len: u64) {
    for (k, lane) in lanes.iter_mut().enumerate() {
        if h[k] & mb == 0 {
            lane.push((pos0 + k as u64 * lane_len, h[k]));
        }
    }
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
        let (mask_s, mask_l) = select_masks(avg as usize, Normalization::Level1);
        // The highest masked bit: hashes agree on the masked bits once they share the
        // last `settle` bytes. (Bit 63 is never used by the crate's masks, which its
        // two-bytes-at-a-time loop relies on too.)
        let settle = 64 - (mask_s | mask_l).leading_zeros() as usize;
        assert!(settle < 64, "chunker masks must leave bit 63 clear");
        Self {
            min: min as usize,
            avg: avg as usize,
            max: max as usize,
            mask_s,
            mask_l,
            mask_both: mask_s & mask_l,
            settle,
            gear,
        }
    }

    /// Scans `data[from..]` (absolute offset of `data[0]`: `base`), appending its
    /// candidates to `scan`.
    fn scan(&self, data: &[u8], from: usize, base: u64, scan: &mut Scan) {
        debug_assert_eq!(base + from as u64, scan.scanned);
        let mut out = Vec::new();
        scan.hash = self.scan_range(data, from, base, scan.hash, &mut scan.lanes, &mut out);
        scan.candidates.extend(out);
        scan.scanned = base + data.len() as u64;
    }

    /// Scans `data[from..]` in four lanes, appending its candidates (in order) to
    /// `out`; returns the rolling hash after its end. The first lane continues `hash`;
    /// the others warm up on the `settle` bytes before them.
    fn scan_range(
        &self,
        data: &[u8],
        from: usize,
        base: u64,
        mut hash: u64,
        lanes: &mut [Vec<Candidate>; LANES],
        out: &mut Vec<Candidate>,
    ) -> u64 {
        let gear: &[u64; 256] = &self.gear;
        let mb = self.mask_both;
        let warm = |end: usize| self.rolled(&data[end - self.settle..end]);
        let region = &data[from..];
        let lane_len = region.len() / LANES;
        let mut tail_from = 0;
        if lane_len >= 4 * self.settle {
            // Four lanes in lock step (independent dependency chains), in a tight loop
            // that only stops at a (rare) candidate.
            let mut h = [
                hash,
                warm(from + lane_len),
                warm(from + 2 * lane_len),
                warm(from + 3 * lane_len),
            ];
            for lane in lanes.iter_mut() {
                lane.clear();
            }
            let mut i = 0;
            loop {
                i = run_lanes(region, lane_len, i, gear, mb, &mut h);
                if i == lane_len {
                    break;
                }
                record(lanes, h, mb, base + (from + i) as u64, lane_len as u64);
                i += 1;
            }
            for lane in lanes.iter() {
                out.extend_from_slice(lane);
            }
            hash = h[3];
            tail_from = LANES * lane_len;
        }
        for (i, &b) in region[tail_from..].iter().enumerate() {
            hash = (hash << 1).wrapping_add(gear[b as usize]);
            if hash & mb == 0 {
                out.push((base + (from + tail_from + i) as u64, hash));
            }
        }
        hash
    }

    /// Length of the chunk starting at `data[0]` (absolute offset `at`), where `data`
    /// holds at least `max` bytes unless it is the end of the input, and every byte
    /// of it has been scanned. Exactly `fastcdc::v2020::cut_gear`'s result.
    fn next_cut(&self, data: &[u8], at: u64, scan: &mut Scan) -> usize {
        let n = data.len();
        if n <= self.min {
            return n;
        }
        let (remaining, center) = if n > self.max {
            (self.max, self.avg)
        } else {
            (n, self.avg.min(n))
        };
        // cut_gear tests positions in pairs: [m0, lim1) against the strict mask,
        // [lim1, lim2) against the loose one; its hash starts at m0.
        let (m0, lim1, lim2) = (self.min & !1, center & !1, remaining & !1);
        let mask = |p: usize| if p < lim1 { self.mask_s } else { self.mask_l };
        let settled = (m0 + self.settle).min(lim2.max(m0));
        let gear: &[u64; 256] = &self.gear;
        let mut hash = 0u64;
        for (p, &b) in data.iter().enumerate().take(settled).skip(m0) {
            hash = (hash << 1).wrapping_add(gear[b as usize]);
            if hash & mask(p) == 0 {
                return p;
            }
        }
        let from = at + settled as u64;
        while scan.candidates.front().is_some_and(|&(pos, _)| pos < from) {
            scan.candidates.pop_front();
        }
        for &(pos, hash) in &scan.candidates {
            let p = (pos - at) as usize;
            if p >= lim2 {
                break;
            }
            if hash & mask(p) == 0 {
                return p;
            }
        }
        remaining
    }

    /// Splits a reader into chunks, calling `f` for each; memory stays bounded by a
    /// few maximum chunk sizes. `buf` is a reusable read window (grown once, never
    /// zeroed again: reusing it across many small files matters). Returns the total
    /// number of bytes read. (A large file: [`Self::scan_block`] and
    /// [`Self::cut_block`]; a stream: [`Self::for_each_shared_chunk`].)
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
        let mut scan = Scan::default();
        let mut base = 0u64; // absolute offset of buf[0]
        let mut start = 0usize;
        let mut end = 0usize;
        let mut eof = false;
        loop {
            // Refill so that at least `max` bytes are available (or we hit EOF).
            if !eof && end - start < self.max {
                buf.copy_within(start..end, 0);
                base += start as u64;
                end -= start;
                start = 0;
                let fresh = end;
                eof = fill(&mut reader, buf, &mut end)?;
                // A last chunk no longer than the minimum is cut without hashing.
                if !(eof && end <= self.min) {
                    self.scan(&buf[..end], fresh, base, &mut scan);
                }
            }
            if start == end {
                return Ok(base + end as u64);
            }
            let len = self.next_cut(&buf[start..end], base + start as u64, &mut scan);
            f(&buf[start..start + len])?;
            start += len;
        }
    }

    /// Splits a stream into chunks without copying them: the input is read into
    /// blocks of a few MiB, shared (`Arc`) with every chunk cut from them, and `f`
    /// gets each chunk as its block and range. A block has room at its front for the
    /// previous one's uncut tail (less than `max` bytes), copied there when the cutting
    /// reaches it. Blocks come from `new_block` (a recycled buffer, or an empty one);
    /// when this function drops the last reference to a block it hands it to
    /// `recycle`. Returns the total number of bytes read.
    ///
    /// The caller's thread reads and cuts; the scan for cut candidates, most of the
    /// work, runs ahead on one thread a core ([`SCAN_AHEAD`] blocks at most), each
    /// block's scan warmed up on the bytes before it, so that blocks are scanned in
    /// parallel with the same candidates as one scan of the whole input.
    pub(crate) fn for_each_shared_chunk<R: Read, E: From<io::Error>>(
        &self,
        mut reader: R,
        mut new_block: impl FnMut() -> Vec<u8>,
        mut recycle: impl FnMut(Vec<u8>),
        mut f: impl FnMut(&Arc<Vec<u8>>, Range<usize>) -> Result<(), E>,
    ) -> Result<u64, E> {
        let head = self.max;
        let block_len = head + (self.max * 8).max(2 << 20);
        let (job_tx, job_rx) = crossbeam_channel::bounded::<ScanJob>(SCAN_AHEAD);
        thread::scope(|s| {
            for _ in 0..crate::cores().clamp(1, 8) {
                let job_rx = job_rx.clone();
                crate::spawn_named(s, "coffer-scan", move || {
                    let mut lanes = Default::default();
                    for job in job_rx {
                        let fresh = &job.block[head..head + job.len];
                        let candidates =
                            self.scan_detached(job.warm.as_slice(), fresh, job.offset, &mut lanes);
                        // The cutting may have stopped (an error): nobody waits then.
                        let _ = job.reply.send((job.block, job.len, candidates));
                    }
                });
            }
            drop(job_rx);
            let job_tx = job_tx; // dropped when the cutting ends: the scanners then stop
            let mut ahead = VecDeque::with_capacity(SCAN_AHEAD);
            let mut read = 0u64; // bytes read so far
            let mut warm = Warm::default();
            let mut eof = false;
            let mut scan = Scan::default();
            let mut cur = Arc::new(Vec::new());
            // Absolute offset of cur[0], wrapping: a block's tail room lies before the
            // input's first byte.
            let mut base = 0u64;
            let mut start = 0usize;
            let mut end = 0usize;
            loop {
                // Keep the scanners busy: read blocks until SCAN_AHEAD wait for them.
                while !eof && ahead.len() < SCAN_AHEAD {
                    let mut block = new_block();
                    // Recycled blocks keep their length: no zeroing after the first use.
                    if block.len() != block_len {
                        block.resize(block_len, 0);
                    }
                    let mut filled = head;
                    eof = fill(&mut reader, &mut block, &mut filled)?;
                    let len = filled - head;
                    let (reply, rx) = crossbeam_channel::bounded(1);
                    let job = ScanJob {
                        warm: warm.clone(),
                        block,
                        len,
                        offset: read,
                        reply,
                    };
                    warm.push(&job.block[head..filled], self.settle);
                    read += len as u64;
                    job_tx.send(job).map_err(|_| scanners_stopped())?;
                    ahead.push_back(rx);
                }
                if end - start < self.max
                    && let Some(rx) = ahead.pop_front()
                {
                    let (mut block, len, candidates): Scanned =
                        rx.recv().map_err(|_| scanners_stopped())?;
                    let tail = end - start;
                    block[head - tail..head].copy_from_slice(&cur[start..end]);
                    let fresh_at = base.wrapping_add(end as u64);
                    let old = std::mem::replace(&mut cur, Arc::new(block));
                    if let Some(old) = Arc::into_inner(old).filter(|b| b.len() == block_len) {
                        recycle(old);
                    }
                    base = fresh_at.wrapping_sub(head as u64);
                    (start, end) = (head - tail, head + len);
                    scan.candidates.extend(candidates);
                    continue;
                }
                if start == end {
                    return Ok(read);
                }
                let len =
                    self.next_cut(&cur[start..end], base.wrapping_add(start as u64), &mut scan);
                f(&cur, start..start + len)?;
                start += len;
            }
        })
    }

    /// How a file cut in parallel ([`BlockCut`]) is read: `(head, fresh)`. Block `k`
    /// holds the input's bytes `[k * fresh - head, (k + 1) * fresh)` (the first block no
    /// head): the head re-reads the end of the block before, where the chunk cut across
    /// their boundary starts and the rolling hash warms up. Blocks are small (two
    /// maximum chunks, at least 2 MiB) so that a file of a few blocks keeps every core
    /// busy to its end: a directory of 24 MiB files (1 MiB maximum chunks) backed up in
    /// 0.95–0.98 s with 2 MiB blocks, 1.12–1.16 s with 8 MiB ones.
    pub(crate) fn block_layout(&self) -> (usize, usize) {
        (self.max, (self.max * 2).max(2 << 20))
    }

    /// Where block `k` ([`Self::block_layout`]) lies: `(from, head)`, the offset of its
    /// first byte and the length of its head; it reads `head + fresh` bytes from `from`,
    /// its fresh bytes start at `from + head`.
    pub(crate) fn block_span(&self, k: u64) -> (u64, usize) {
        let (head_max, fresh) = self.block_layout();
        let offset = k * fresh as u64;
        let head = offset.min(head_max as u64) as usize;
        (offset - head as u64, head)
    }

    /// The cut candidates of a block's fresh bytes `block[head..]`, at absolute offset
    /// `offset` (the head's bytes warm the rolling hash up): the same as a scan of the
    /// whole input finds there.
    pub(crate) fn scan_block(
        &self,
        block: &[u8],
        head: usize,
        offset: u64,
        lanes: &mut ScanLanes,
    ) -> Vec<Candidate> {
        let warm = &block[head.saturating_sub(self.settle)..head];
        self.scan_detached(warm, &block[head..], offset, lanes)
    }

    /// Cuts a block ([`Self::block_layout`]) once the blocks before it are cut: its
    /// bytes `block` start at absolute offset `block_offset`, `candidates` are its
    /// [`Self::scan_block`], and `cut` holds where the chunk being cut starts. Pushes
    /// the ranges (in `block`) of the chunks its bytes decide: all of them up to its end
    /// with `ended` (the input ends there), else those that end a chunk's maximum
    /// before it (the next block's head holds the rest).
    pub(crate) fn cut_block(
        &self,
        cut: &mut BlockCut,
        candidates: Vec<Candidate>,
        block: &[u8],
        block_offset: u64,
        ended: bool,
        out: &mut Vec<Range<usize>>,
    ) {
        cut.scan.candidates.extend(candidates);
        let end = block_offset + block.len() as u64;
        while cut.start < end && (ended || end - cut.start >= self.max as u64) {
            let from = (cut.start - block_offset) as usize;
            let len = self.next_cut(&block[from..], cut.start, &mut cut.scan);
            out.push(from..from + len);
            cut.start += len as u64;
        }
    }

    /// The candidates of `data` (absolute offset of `data[0]`: `offset`), whose rolling
    /// hash starts from the bytes before it, `warm` (at least `settle` of them, or all
    /// since the input's start): the same as a scan from the start of the input.
    fn scan_detached(
        &self,
        warm: &[u8],
        data: &[u8],
        offset: u64,
        lanes: &mut [Vec<Candidate>; LANES],
    ) -> Vec<Candidate> {
        let mut out = Vec::new();
        self.scan_range(data, 0, offset, self.rolled(warm), lanes, &mut out);
        out
    }

    /// The rolling hash after `bytes`, starting from 0 (a warm-up: only its last
    /// `settle` bytes decide its masked bits).
    fn rolled(&self, bytes: &[u8]) -> u64 {
        bytes
            .iter()
            .fold(0u64, |h, &b| (h << 1).wrapping_add(self.gear[b as usize]))
    }

    /// Splits an in-memory input into chunks (the same cut points as
    /// [`Self::for_each_chunk`], without copying).
    pub(crate) fn for_each_chunk_in(&self, data: &[u8], mut f: impl FnMut(&[u8])) {
        let step = (self.max * 4).max(1 << 20);
        let mut scan = Scan::default();
        let mut start = 0;
        while start < data.len() {
            let scanned = scan.scanned as usize;
            if scanned < data.len() && scanned - start < self.max {
                let to = (start + step).min(data.len());
                self.scan(&data[..to], scanned, 0, &mut scan);
            }
            let end = (scan.scanned as usize).min(data.len());
            let len = self.next_cut(&data[start..end], start as u64, &mut scan);
            f(&data[start..start + len]);
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

    /// The crate's own loop with the same table: the reference for cut points.
    fn reference_cuts(c: &Chunker, d: &[u8]) -> Vec<usize> {
        let gear_ls: Vec<u64> = c.gear.iter().map(|g| g << 1).collect();
        let mut v = Vec::new();
        let mut pos = 0;
        while pos < d.len() {
            let (_, len) = fastcdc::v2020::cut_gear(
                &d[pos..],
                c.min,
                c.avg,
                c.max,
                c.mask_s,
                c.mask_l,
                c.mask_s << 1,
                c.mask_l << 1,
                &c.gear[..],
                &gear_ls,
            );
            let len = len.max(1).min(d.len() - pos);
            v.push(len);
            pos += len;
        }
        v
    }

    /// A reader that returns at most `n` bytes per call (like a pipe).
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn cut_points_are_exactly_fastcdc_v2020() {
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![7],
            data(100),
            data(16 << 10),
            data((16 << 10) + 1),
            data((64 << 10) + 3),
            data(256 << 10),
            data((256 << 10) + 1),
            data(3 << 20),
            data((5 << 20) + 12345),
            data(4 << 20),
            vec![0u8; 3 << 20],
        ];
        // Low-entropy data: many positions close to matching.
        inputs.push(data(2 << 20).iter().map(|b| b & 3).collect());
        inputs.push(b"coffer backup vault 0123456789\n".repeat(70_000));
        let mut mixed = data(1 << 20);
        mixed.extend(vec![0u8; 300 << 10]);
        mixed.extend(data(777_777));
        inputs.push(mixed);
        let params = [
            (16 << 10, 64 << 10, 256 << 10),
            (2 << 10, 8 << 10, 32 << 10),
            (64 << 10, 256 << 10, 1 << 20),
            (4096, 16384, 65536),
            (64, 256, 1024),
        ];
        for (i, &(min, avg, max)) in params.iter().enumerate() {
            let c = Chunker::new(&DataKey::generate().unwrap(), min, avg, max);
            for (j, d) in inputs.iter().enumerate() {
                let want = reference_cuts(&c, d);
                assert_eq!(cuts(&c, d), want, "params {i}, input {j}");
                let mut got = Vec::new();
                c.for_each_chunk_in(d, |ch| got.push(ch.len()));
                assert_eq!(got, want, "in-memory, params {i}, input {j}");
                assert_eq!(
                    shared_cuts(&c, d, d.len()),
                    want,
                    "shared, params {i}, input {j}"
                );
                assert_eq!(block_cuts(&c, d), want, "blocks, params {i}, input {j}");
                if j % 4 == 0 {
                    let mut got = Vec::new();
                    c.for_each_chunk::<_, io::Error>(Trickle(d, 10_007), &mut Vec::new(), |ch| {
                        got.push(ch.len());
                        Ok(())
                    })
                    .unwrap();
                    assert_eq!(got, want, "trickle, params {i}, input {j}");
                    let got = shared_cuts(&c, d, 10_007);
                    assert_eq!(got, want, "shared trickle, params {i}, input {j}");
                }
            }
        }
    }

    /// Cut lengths through [`Chunker::for_each_shared_chunk`] (reading at most `step`
    /// bytes per call, recycling blocks), checking each chunk's bytes.
    fn shared_cuts(c: &Chunker, d: &[u8], step: usize) -> Vec<usize> {
        let mut v = Vec::new();
        let mut pos = 0;
        let pool = std::cell::RefCell::new(Vec::<Vec<u8>>::new());
        let mut held = Vec::new();
        let n = c
            .for_each_shared_chunk::<_, io::Error>(
                Trickle(d, step),
                || pool.borrow_mut().pop().unwrap_or_default(),
                |b| pool.borrow_mut().push(b),
                |block, range| {
                    assert_eq!(&block[range.clone()], &d[pos..pos + range.len()]);
                    pos += range.len();
                    v.push(range.len());
                    // Hold a few blocks for a while, as queued jobs do.
                    held.push(Arc::clone(block));
                    if held.len() > 3 {
                        held.remove(0);
                    }
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(n, d.len() as u64);
        v
    }

    /// Cut lengths through [`Chunker::scan_block`] and [`Chunker::cut_block`], block by
    /// block as the backup workers read a file, checking each chunk's bytes.
    fn block_cuts(c: &Chunker, d: &[u8]) -> Vec<usize> {
        let (_, fresh) = c.block_layout();
        let (mut cut, mut lanes, mut v) = (BlockCut::default(), Default::default(), Vec::new());
        let mut pos = 0;
        for k in 0.. {
            let (from, head) = c.block_span(k);
            let (from, offset) = (from as usize, from as usize + head);
            let block = &d[from.min(d.len())..(offset + fresh).min(d.len())];
            // As the workers find it: nothing past the block.
            let ended = offset + fresh >= d.len();
            let candidates = if block.len() > head {
                c.scan_block(block, head, offset as u64, &mut lanes)
            } else {
                Vec::new()
            };
            let mut out = Vec::new();
            c.cut_block(&mut cut, candidates, block, from as u64, ended, &mut out);
            for r in out {
                assert_eq!(&block[r.clone()], &d[pos..pos + r.len()]);
                pos += r.len();
                v.push(r.len());
            }
            if ended {
                break;
            }
        }
        assert_eq!(cut.start(), d.len() as u64);
        v
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
    fn a_scan_warmed_up_on_the_bytes_before_finds_the_same_candidates() {
        // Small chunk sizes: many candidates, so a wrong hash at a block's start shows.
        for (min, avg, max) in [(64, 256, 1024), (2 << 10, 8 << 10, 32 << 10)] {
            let c = Chunker::new(&DataKey::generate().unwrap(), min, avg, max);
            let d = data(300_000);
            let mut lanes = Default::default();
            let whole = c.scan_detached(&[], &d, 0, &mut lanes);
            assert!(whole.len() > 20, "{}", whole.len());
            for at in [1usize, 7, 47, 48, 63, 64, 1000, 99_999, 250_001] {
                let mut warm = Warm::default();
                // Pushed in pieces, as blocks are read.
                warm.push(&d[..at / 2], c.settle);
                warm.push(&d[at / 2..at], c.settle);
                assert!(warm.len == at.min(c.settle));
                let mut got =
                    c.scan_detached(&d[..at][at - warm.len..], &d[at..], at as u64, &mut lanes);
                let mut want: Vec<_> = whole
                    .iter()
                    .copied()
                    .filter(|&(p, _)| p >= at as u64)
                    .collect();
                // Only the masked bits are the same (the rest depends on older bytes).
                for v in [&mut got, &mut want] {
                    v.iter_mut().for_each(|x| x.1 &= c.mask_s | c.mask_l);
                }
                assert_eq!(got, want, "split at {at}, sizes {avg}");
                assert_eq!(warm.as_slice(), &d[at - warm.len..at]);
            }
        }
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

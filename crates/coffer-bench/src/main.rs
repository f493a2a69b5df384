//! `coffer-bench`: figures the benchmark harness (`bench/run`) needs that no CLI
//! command gives — measured with the engine's own primitives, in the same run.
//!
//! * `hwlimit PATH`: the page-cache read rate of a dataset, and the single-pass cost
//!   of chunking, keyed hashing, compression and AES-256-GCM over all cores: the
//!   ceiling for Coffer's backup throughput on this machine (see [`hardware_limit`]).
//! * `warm PATH`: reads every file of a dataset (many readers a core), so that a tool starts
//!   with it in page cache (what ran before may have evicted part of it).
//! * `index-memory N`: resident bytes per chunk of an index of N chunks.
//! * `keyvault-ops`: wrapKey / unwrapKey per second (and p50/p99 latency) through
//!   Coffer's key vault, authorised and audited as a CMK backup vault calls it, next
//!   to raw aws-lc-rs RSA-OAEP-256, on one thread and on all cores
//!   ([`keyvault_ops`]; the table goes to stderr).
//!
//! Output is one JSON object on stdout.

mod keyvault_ops;

use std::{
    fs,
    io::Read,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    thread,
    time::Instant,
};

use clap::{Parser, Subcommand};
use coffer_engine::{RepoParams, primitives};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Coffer benchmark measurements (used by bench/run)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Page-cache read rate and the pipeline's single-pass cost over all cores.
    Hwlimit {
        /// Dataset directory or file.
        path: PathBuf,
        /// Threads for the pipeline pass (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Read at most this many bytes of the dataset into memory.
        #[arg(long, default_value_t = 4 << 30)]
        max_bytes: u64,
        /// Leave out the single-core rate of each stage (`single_core_gbps`: chunking,
        /// keyed hashing, compression, the whole pass, over the first 256 MiB), which
        /// the limit does not use.
        #[arg(long)]
        no_breakdown: bool,
    },
    /// Reads every file of PATH (all cores) so that it is in page cache.
    Warm {
        /// Dataset directory or file.
        path: PathBuf,
    },
    /// Resident memory per chunk of an in-memory index of N chunks.
    IndexMemory {
        /// Number of synthetic chunks.
        chunks: usize,
    },
    /// Key vault wrapKey/unwrapKey through Coffer next to raw aws-lc-rs RSA-OAEP-256.
    KeyvaultOps {
        /// RSA sizes (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "2048,3072,4096")]
        sizes: Vec<u32>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        /// Threads of the all-cores measurements (default: available parallelism).
        #[arg(long)]
        threads: Option<usize>,
        /// Concurrent callers of the server-like Coffer measurements (comma-separated;
        /// the best of their rates over the raw rate at `--threads` is the "over both
        /// cores" figure). 8 callers, once a default, always fell between 2 and 32.
        #[arg(long, value_delimiter = ',', default_value = "32")]
        callers: Vec<usize>,
        /// Rounds each measurement is split into: Coffer and raw alternate, and the
        /// ratios are medians of per-round ratios (cancels drift of the machine's speed).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// unwrapKey calls each pipelined worker (one a core) keeps begun: a server's
        /// worker begins the next call while the audit records of the earlier ones are
        /// synced (0: no pipelined measurement).
        #[arg(long, default_value_t = 32)]
        pipeline_depth: usize,
        /// Directory for the temporary Coffer home (default: /var/tmp, a disk, so the
        /// catalog's fsyncs cost what they cost in a real home).
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
    },
}

/// Every regular file under `path` (or `path` itself), in path order, with its size.
fn files(path: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_file() {
        out.push((path.to_owned(), meta.len()));
    } else if meta.is_dir()
        && let Ok(rd) = fs::read_dir(path)
    {
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            files(&e, out);
        }
    }
}

/// Reads the file at `path` to its end through `buf`; returns the bytes read (0 if it
/// cannot be opened).
fn read_through(path: &Path, buf: &mut [u8]) -> u64 {
    let Ok(mut h) = fs::File::open(path) else {
        return 0;
    };
    let mut n = 0u64;
    while let Ok(k) = h.read(buf) {
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    n
}

/// Concurrent readers of [`warm`] a core: reading files the host evicted is waiting on the
/// disk, and more requests in flight read faster (the small-files dataset, 1.7 GB in 200k
/// files, after `drop_caches`: 12.3 s with one reader a core, 6.7 s with 16 readers).
const WARM_READERS_PER_CORE: usize = 8;

/// Reads every file under `path` into the page cache ([`read_all`]); returns the files
/// and bytes read.
fn warm(path: &Path) -> serde_json::Value {
    let t = Instant::now();
    let mut list = Vec::new();
    files(path, &mut list);
    let bytes = read_all(&list);
    json!({ "files": list.len(), "bytes": bytes, "seconds": t.elapsed().as_secs_f64() })
}

/// Reads every file of `list` to its end, [`WARM_READERS_PER_CORE`] threads a core each
/// taking every n-th file; returns the bytes read.
fn read_all(list: &[(PathBuf, u64)]) -> u64 {
    let threads = cores() * WARM_READERS_PER_CORE;
    thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|i| {
                s.spawn(move || {
                    let mut buf = vec![0u8; 1 << 20];
                    list.iter()
                        .skip(i)
                        .step_by(threads)
                        .map(|(f, _)| read_through(f, &mut buf))
                        .sum::<u64>()
                })
            })
            .collect();
        parts.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

/// The first whole files of `list` up to `max_bytes` (the last one whole), read into one
/// anonymous mapping of their listed size by one thread a core, each reading its share of
/// the bytes (a file may be split between threads). A fresh 2 GiB buffer took 1.7-3.7 s to
/// fill from one thread on this VM, nearly all of it the kernel (and its host) faulting in
/// new pages: longer than the pass it feeds. A file that shrank since it was listed leaves
/// zeros at the end of its place. Returns the mapping and the bytes it holds.
fn fill(list: &[(PathBuf, u64)], max_bytes: u64) -> (memmap2::MmapMut, usize) {
    // (file, its offset in the buffer, its length), while the buffer is under max_bytes.
    let mut pieces = Vec::new();
    let mut len = 0usize;
    for (f, size) in list {
        if len as u64 >= max_bytes {
            break;
        }
        let size = usize::try_from(*size).expect("fits in memory");
        pieces.push((f, len, size));
        len += size;
    }
    let mut map = memmap2::MmapMut::map_anon(len.max(1)).expect("anonymous mapping");
    let threads = cores();
    let share = len.div_ceil(threads).max(1);
    thread::scope(|s| {
        for (k, part) in map[..len].chunks_mut(share).enumerate() {
            let (from, pieces) = (k * share, &pieces);
            s.spawn(move || {
                let to = from + part.len();
                // Every piece overlapping [from, to): read its overlap.
                for &(f, at, size) in pieces.iter().filter(|p| p.1 < to && p.1 + p.2 > from) {
                    let (lo, hi) = (at.max(from), (at + size).min(to));
                    if let Ok(h) = fs::File::open(f) {
                        let mut done = lo;
                        while done < hi {
                            match h.read_at(&mut part[done - from..hi - from], (done - at) as u64) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => done += n,
                            }
                        }
                    }
                }
            });
        }
    });
    (map, len)
}

fn rss_bytes() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn cores() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get())
}

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

/// How much of the dataset the single-core rate of each stage is measured on (`hwlimit`'s
/// breakdown): enough for a stable rate, a few seconds at most on compressible text.
const BREAKDOWN_BYTES: usize = 256 << 20;

fn hwlimit(
    path: &Path,
    threads: Option<usize>,
    max_bytes: u64,
    breakdown: bool,
) -> serde_json::Value {
    let mut phases = serde_json::Map::new();
    let mut lap = |name: &str, since: &mut Instant| {
        phases.insert(name.to_owned(), json!(since.elapsed().as_secs_f64()));
        *since = Instant::now();
    };
    let mut since = Instant::now();
    let mut list = Vec::new();
    files(path, &mut list);
    lap("list", &mut since);
    // Warm the page cache with every file (many readers: some may have to come from the
    // disk), read whole files into memory for the pipeline pass until they reach
    // `max_bytes` (the last one whole: a single large file, as the VM image, is passed
    // whole; see `fill`), then time a second read of every file.
    read_all(&list);
    lap("warm", &mut since);
    let (map, filled) = fill(&list, max_bytes);
    let data: &[u8] = &map[..filled];
    lap("fill", &mut since);
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let read_bytes: u64 = list.iter().map(|(f, _)| read_through(f, &mut buf)).sum();
    let read_s = t.elapsed().as_secs_f64();
    lap("read", &mut since);
    let threads = threads.unwrap_or_else(cores);
    let p = primitives::Primitives::new(RepoParams::default());
    // Each stage alone on one core, over the first BREAKDOWN_BYTES.
    let sample = &data[..data.len().min(BREAKDOWN_BYTES)];
    let one = |name: &str, f: &dyn Fn(&[u8])| {
        let t = Instant::now();
        f(sample);
        (
            name.to_owned(),
            gbps(sample.len() as u64, t.elapsed().as_secs_f64()),
        )
    };
    let single = breakdown.then(|| {
        [
            one("chunk", &|d| {
                p.chunk(d);
            }),
            one("keyed_hash", &|d| {
                p.hash(d);
            }),
            one("compress", &|d| {
                p.compress(d);
            }),
            one("full_pass", &|d| {
                p.backup_pass(d);
            }),
        ]
    });
    lap("breakdown", &mut since);
    // The whole pass over all cores: each thread takes a contiguous share.
    let share = data.len().div_ceil(threads).max(1);
    let t = Instant::now();
    thread::scope(|s| {
        for part in data.chunks(share) {
            s.spawn(move || primitives::Primitives::new(RepoParams::default()).backup_pass(part));
        }
    });
    let all = gbps(data.len() as u64, t.elapsed().as_secs_f64());
    lap("pipeline", &mut since);
    let bytes = data.len();
    drop(map);
    lap("free", &mut since);
    let read = gbps(read_bytes, read_s);
    json!({
        "dataset": path.display().to_string(),
        "files": list.len(),
        "bytes": bytes,
        "page_cache_read_gbps": read,
        "single_core_gbps": single.iter().flatten().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "threads": threads,
        "pipeline_all_cores_gbps": all,
        "hardware_limit_gbps": hardware_limit(all, read, threads),
        "read_or_pipeline_min_gbps": all.min(read),
        "phase_seconds": phases,
    })
}

/// The fastest a backup can go on `threads` cores that must both read its bytes from
/// page cache (one core's copy rate: `read`) and pass them through the pipeline (all
/// cores: `pipeline`), all in GB/s: both are CPU work on the same cores, so their CPU
/// seconds per byte add up. (Until 2026-12-03 the harness took the lower of the two
/// rates, as if reading cost no CPU; that figure is kept as `read_or_pipeline_min_gbps`.)
fn hardware_limit(pipeline: f64, read: f64, threads: usize) -> f64 {
    1.0 / (1.0 / pipeline + 1.0 / (read * threads as f64))
}

fn index_memory(n: usize) -> serde_json::Value {
    let before = rss_bytes();
    let probe = primitives::synthetic_index(n);
    let after = rss_bytes();
    let t = Instant::now();
    let hits = (0..1_000_000u64)
        .filter(|&k| probe(k * 7 % n as u64))
        .count();
    let lookup_ns = t.elapsed().as_nanos() as f64 / 1e6;
    let per_chunk = (after.saturating_sub(before)) as f64 / n as f64;
    let avg_chunk = f64::from(RepoParams::default().large_chunks.avg);
    json!({
        "chunks": n,
        "bytes_per_chunk": per_chunk,
        "bytes_per_tib_unique_at_default_chunk": per_chunk * (1u64 << 40) as f64 / avg_chunk,
        "lookup_ns": lookup_ns,
        "lookup_hits": hits,
    })
}

fn main() {
    let out = match Cli::parse().cmd {
        Cmd::Hwlimit {
            path,
            threads,
            max_bytes,
            no_breakdown,
        } => hwlimit(&path, threads, max_bytes, !no_breakdown),
        Cmd::Warm { path } => warm(&path),
        Cmd::IndexMemory { chunks } => index_memory(chunks),
        Cmd::KeyvaultOps {
            sizes,
            secs,
            threads,
            callers,
            rounds,
            pipeline_depth,
            dir,
        } => {
            let o = keyvault_ops::Options {
                sizes,
                secs,
                threads: threads.unwrap_or_else(cores),
                callers,
                rounds: rounds.max(1),
                pipeline_depth,
                dir,
            };
            let doc = keyvault_ops::run(&o);
            eprint!("{}", keyvault_ops::table(&doc));
            doc
        }
    };
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_and_the_pipeline_share_the_cores() {
        // 2 GB/s of pipeline on two cores costs 1 CPU-second per GB; reading at 8 GB/s
        // on one core adds 0.125: 2 cores / 1.125 s per GB.
        let limit = hardware_limit(2.0, 8.0, 2);
        assert!((limit - 2.0 / 1.125).abs() < 1e-9, "{limit}");
        assert!(limit < 2.0_f64.min(8.0));
    }

    #[test]
    fn fill_holds_the_first_whole_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0usize, 1, 4095, 4096, 70_001, 3, 200_000, 17];
        let mut list = Vec::new();
        let mut all = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let bytes: Vec<u8> = (0..n).map(|k| (k * 31 + i * 7) as u8).collect();
            let p = dir.path().join(format!("f{i}"));
            fs::write(&p, &bytes).unwrap();
            list.push((p, n as u64));
            all.push(bytes);
        }
        // Whole files until the buffer reaches max_bytes, the one crossing it included.
        for (max, files) in [(1u64, 2), (4096, 3), (4097, 4), (80_000, 7), (1 << 30, 8)] {
            let (map, len) = fill(&list, max);
            let want = all[..files].concat();
            assert_eq!(len, want.len(), "max {max}");
            assert!(map[..len] == want[..], "max {max}");
        }
    }
}

//! `keyvault-ops`: wrapKey / unwrapKey operations per second through Coffer's key vault,
//! next to the raw aws-lc-rs RSA-OAEP-256 operations, measured in the same run.
//!
//! The Coffer path is the one a backup vault with a customer-managed key takes
//! (`CmkWrapper` in `coffer-control/src/cmk.rs`): `Instance::key_vault_client()`
//! `.wrap_key` / `.unwrap_key` as the vault's user-assigned identity, which authorises
//! the call (RBAC: "Key Vault Crypto Service Encryption User" on the key vault), checks
//! the key's state, opens the sealed key version, runs the RSA operation and writes the
//! audit record; the unwrapped bytes become a `DataKey` as the wrapper makes them.
//! Each thread opens its own `Instance` on the shared home, as concurrent `coffer`
//! processes (or the workers of a future server) would.
//!
//! "Over both cores": the raw path cannot beat the cores, so its all-cores rate is
//! measured with one thread a core (`threads`); Coffer's path is measured with as many
//! callers, and as a server would run it, with more concurrent callers than cores
//! (`callers`, default 32), so the RSA work of some overlaps the audit commit
//! (fsync) others wait for, and one commit serves the records of many. The document's
//! `summary[].over_both_cores` is the best of those rates over raw at `threads` (the key
//! vault's capacity), with each in `by_callers`.
//!
//! A server's worker need not sleep while a call's audit record is synced: with
//! `KeyVaultClient::begin_unwrap_key` it begins the next call and finishes each one
//! (gets its key) once the record is durable. The pipelined measurement runs one such
//! worker a core, each keeping `pipeline_depth` calls begun; every call of the steady
//! window begins one unwrap and finishes the oldest (its p50/p99 are a call's, not an
//! unwrap's, which takes about `pipeline_depth` calls). It is one more entry of
//! `by_callers` (with its `pipeline_depth`): blocking callers spend a context switch
//! and a wake-up on every unwrap, and leave the cores idle whenever all of them wait
//! for a sync.
//!
//! The raw path is aws-lc-rs alone with an already-parsed key: OAEP-SHA256 public
//! encryption of a 32-byte DEK, and private decryption of its ciphertext.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Barrier,
    thread,
    time::{Duration, Instant},
};

use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey,
};
use coffer_control::{Instance, KeyCreateOptions, KeyVaultOptions};
use coffer_crypto::{DataKey, SecretKey};
use serde_json::{Value, json};

const KEY_VAULT: &str = "benchkv";
const IDENTITY: &str = "bench-vault-identity";
const ROLE: &str = "Key Vault Crypto Service Encryption User";
const ALG: &str = "RSA-OAEP-256";
/// A DEK-sized value (the wrapped payload of every backup vault).
const DEK: [u8; 32] = [0x5a; 32];
/// Untimed operations each thread runs before a measurement starts.
const WARM_UP: usize = 3;

/// Options of the subcommand.
pub(crate) struct Options {
    /// RSA sizes to measure.
    pub(crate) sizes: Vec<u32>,
    /// Seconds per measurement (each op, path and thread count).
    pub(crate) secs: f64,
    /// Threads of the "all cores" measurements.
    pub(crate) threads: usize,
    /// Concurrent callers of the server-like Coffer measurements.
    pub(crate) callers: Vec<usize>,
    /// Rounds each measurement is split into (alternating Coffer and raw).
    pub(crate) rounds: usize,
    /// unwrapKey calls each pipelined worker (one a core) has begun and not finished
    /// (0: no pipelined measurement).
    pub(crate) pipeline_depth: usize,
    /// Directory in which the temporary Coffer home is created.
    pub(crate) dir: PathBuf,
}

/// Latency and throughput of one measurement.
struct Stats {
    /// Every operation run (for the CPU per operation).
    ops: usize,
    /// From the start until the last thread finished its last operation.
    wall_s: f64,
    /// Operations per second in the steady window ([`steady_rate`]).
    rate: f64,
    /// Length of the steady window.
    window_s: f64,
    lat_ns: Vec<u64>,
    cpu: CpuUse,
}

/// The rate of a measurement is taken from the operations that began between these
/// shares of its duration (the steady window): all threads begin at once, which is
/// not the steady state, and operations that began near the end finish while other
/// threads have stopped. See [`steady_rate`].
const STEADY_FROM: f64 = 0.2;
const STEADY_UNTIL: f64 = 0.8;

/// Seconds of the raw RSA decryption run that tells how long unwraps take.
const CALIBRATION_S: f64 = 0.2;

/// The fewest operation latencies an unwrap measurement slice lasts (80: RSA-2048 at
/// 32 callers, 0.3 s slices, agreed with 5 s ones; RSA-4096 at 32 callers in 0.3 s
/// slices, 14 latencies, did not).
const MIN_LATENCIES: f64 = 80.0;

/// Where the machine's CPU time went during a measurement (from `/proc`; zero where
/// `/proc` cannot be read).
#[derive(Default, Clone, Copy)]
struct CpuUse {
    /// Share of all cores' time that was busy (any process, kernel threads included).
    busy: f64,
    /// This process's CPU seconds (user + system, every thread).
    process_s: f64,
}

/// CPU clock ticks: (busy, total) of all cores, and this process's user + system.
#[derive(Default, Clone, Copy)]
struct CpuTicks {
    busy: u64,
    total: u64,
    process: u64,
}

/// Clock ticks per second of `/proc/stat` and `/proc/self/stat` (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

impl CpuTicks {
    fn now() -> Self {
        let all: Vec<u64> = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|f| f.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // user nice system idle iowait irq softirq steal ...
        let idle = all.get(3).copied().unwrap_or(0) + all.get(4).copied().unwrap_or(0);
        let total: u64 = all.iter().take(8).sum();
        // Fields 14 and 15 (utime, stime), after the parenthesised command name.
        let process = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_owned();
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                Some(f.iter().sum())
            })
            .unwrap_or(0);
        Self {
            busy: total.saturating_sub(idle),
            total,
            process,
        }
    }

    fn since(self, start: Self) -> CpuUse {
        let total = self.total.saturating_sub(start.total);
        CpuUse {
            busy: if total == 0 {
                0.0
            } else {
                self.busy.saturating_sub(start.busy) as f64 / total as f64
            },
            process_s: self.process.saturating_sub(start.process) as f64 / USER_HZ,
        }
    }
}

impl Stats {
    fn rate(&self) -> f64 {
        self.rate
    }

    /// One measurement of several rounds: their rates weighted by their steady windows,
    /// all their latencies, CPU use weighted by wall time.
    fn merge(parts: impl Iterator<Item = Stats>) -> Stats {
        let mut all = Stats {
            ops: 0,
            wall_s: 0.0,
            rate: 0.0,
            window_s: 0.0,
            lat_ns: Vec::new(),
            cpu: CpuUse::default(),
        };
        for p in parts {
            all.ops += p.ops;
            all.cpu.busy += p.cpu.busy * p.wall_s;
            all.cpu.process_s += p.cpu.process_s;
            all.wall_s += p.wall_s;
            all.rate += p.rate * p.window_s;
            all.window_s += p.window_s;
            all.lat_ns.extend(p.lat_ns);
        }
        if all.wall_s > 0.0 {
            all.cpu.busy /= all.wall_s;
        }
        if all.window_s > 0.0 {
            all.rate /= all.window_s;
        }
        all.lat_ns.sort_unstable();
        all
    }

    fn json(&self, path: &str, op: &str, bits: u32, threads: usize) -> Value {
        let pct = |p: f64| {
            let i = ((self.lat_ns.len() as f64 - 1.0) * p).round() as usize;
            self.lat_ns.get(i).map_or(0.0, |&ns| ns as f64 / 1e3)
        };
        json!({
            "bits": bits,
            "path": path,
            "op": op,
            "threads": threads,
            "ops": self.ops,
            "wall_s": self.wall_s,
            "window_s": self.window_s,
            "ops_per_s": self.rate(),
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
            "cores_busy": self.cpu.busy,
            "process_cpu_us_per_op": 1e6 * self.cpu.process_s / self.ops.max(1) as f64,
        })
    }
}

/// The unwrapped bytes as the backup vault's key, made as `CmkWrapper::unwrap` makes it.
fn into_dek(r: coffer_control::UnwrapResult) -> DataKey {
    DataKey::from_secret(SecretKey::from_slice(r.value.expose()).expect("a 32-byte DEK"))
}

/// A pipelined worker's instance and the unwraps it has begun, oldest first.
struct PipelinedWorker {
    inst: Instance,
    begun: std::collections::VecDeque<coffer_control::PendingUnwrap>,
}

impl Drop for PipelinedWorker {
    /// The calls still begun when the measurement ends are finished (their records
    /// durable) before the worker's thread ends.
    fn drop(&mut self) {
        for pending in self.begun.drain(..) {
            let _ = pending.finish();
        }
    }
}

/// One kind of measurement of a round.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Step {
    CofferWrap,
    CofferUnwrap,
    /// unwrapKey by server-like workers, each with several calls begun
    /// ([`Options::pipeline_depth`]).
    CofferUnwrapPipelined,
    RawEncrypt,
    RawDecrypt,
}

impl Step {
    const ALL: [Step; 5] = [
        Step::CofferWrap,
        Step::CofferUnwrap,
        Step::CofferUnwrapPipelined,
        Step::RawEncrypt,
        Step::RawDecrypt,
    ];

    fn is_raw(self) -> bool {
        matches!(self, Step::RawEncrypt | Step::RawDecrypt)
    }

    /// (path, op) of the result document.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Step::CofferWrap => ("coffer", "wrapKey"),
            Step::CofferUnwrap => ("coffer", "unwrapKey"),
            Step::CofferUnwrapPipelined => ("coffer-pipelined", "unwrapKey"),
            Step::RawEncrypt => ("raw", "public-encrypt"),
            Step::RawDecrypt => ("raw", "private-decrypt"),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs `op` on `threads` threads (named `{name}-{threads}`, for profiles) for `secs`
/// seconds. Each thread builds its state with `setup` and warms up (untimed) before all
/// start together; the rate is [`steady_rate`]'s.
fn measure<S>(
    name: &str,
    threads: usize,
    secs: f64,
    setup: impl Fn() -> S + Sync,
    op: impl Fn(&mut S) + Sync,
) -> Stats {
    // Every thread warmed up (`ready`), the common start is taken and the CPU counters
    // read while all wait, then all go at once (`go`): a thread's own clock, read once
    // it is first scheduled after a single barrier, started up to a whole round of
    // operations late with 32 callers on 2 cores, and its window slid into the others'
    // overrun; the counters, read by a main thread waiting for a core, missed the work
    // done meanwhile.
    let (ready, go) = (Barrier::new(threads + 1), Barrier::new(threads + 1));
    let start_at = std::sync::OnceLock::new();
    let mut cpu = CpuUse::default();
    let end = Duration::from_secs_f64(secs);
    // Per thread: (start, completion) of each operation since the common start.
    let per_thread: Vec<Vec<(Duration, Duration)>> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                thread::Builder::new()
                    .name(format!("{name}-{threads}"))
                    .spawn_scoped(s, || {
                        let mut state = setup();
                        for _ in 0..WARM_UP {
                            op(&mut state);
                        }
                        ready.wait();
                        go.wait();
                        let start: Instant = *start_at.get().expect("the common start");
                        let mut ops = Vec::with_capacity(4096);
                        loop {
                            let began = start.elapsed();
                            if began >= end {
                                break;
                            }
                            op(&mut state);
                            ops.push((began, start.elapsed()));
                        }
                        ops
                    })
                    .expect("spawn a bench thread")
            })
            .collect();
        ready.wait();
        let start = CpuTicks::now();
        let _ = start_at.set(Instant::now());
        go.wait();
        let per_thread = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect();
        cpu = CpuTicks::now().since(start);
        per_thread
    });
    let (rate, window_s) = steady_rate(&per_thread, end);
    let wall_s = per_thread
        .iter()
        .filter_map(|ops| ops.last())
        .map(|(_, done)| done.as_secs_f64())
        .fold(0.0, f64::max);
    let mut lat_ns: Vec<u64> = per_thread
        .iter()
        .flatten()
        .map(|(began, done)| (*done - *began).as_nanos() as u64)
        .collect();
    lat_ns.sort_unstable();
    Stats {
        ops: lat_ns.len(),
        wall_s,
        rate,
        window_s,
        lat_ns,
        cpu,
    }
}

/// The rate in the steady window of a measurement that ended at `end`
/// ([`STEADY_FROM`], [`STEADY_UNTIL`]), and the window's length; `per_thread` holds
/// each thread's (start, completion) times.
///
/// Each thread runs one operation after another, so its rate is the inverse of the
/// mean latency of its operations (Little's law with one operation in flight), taken
/// over those that began in the window; the measurement's rate is their sum. Counting
/// the operations completed within a window over its length instead is biased when
/// operations complete in waves: 32 callers sharing 2 cores progress together, and
/// all complete within a short time of each other, so whether a window holds 11 or 12
/// waves moved the rate by 9% (RSA-4096: more than both cores can compute, as the
/// CPU time per operation showed).
fn steady_rate(per_thread: &[Vec<(Duration, Duration)>], end: Duration) -> (f64, f64) {
    let window = end.mul_f64(STEADY_FROM)..end.mul_f64(STEADY_UNTIL);
    let rate = per_thread
        .iter()
        .map(|ops| {
            let (n, busy) = ops
                .iter()
                .filter(|(began, _)| window.contains(began))
                .fold((0usize, Duration::ZERO), |(n, t), (b, d)| {
                    (n + 1, t + (*d - *b))
                });
            if n == 0 {
                0.0
            } else {
                n as f64 / busy.as_secs_f64()
            }
        })
        .sum();
    (rate, (window.end - window.start).as_secs_f64())
}

fn must<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The key vault set-up a CMK backup vault uses: an RBAC key vault with soft delete and
/// purge protection, one RSA key per size, a user-assigned identity holding the Crypto
/// Service Encryption User role on the key vault. Returns (principal id, versionless
/// kid and versioned kid per size).
fn set_up(home: &Path, sizes: &[u32]) -> (String, Vec<(u32, String, String)>) {
    let inst = must("open the instance", Instance::open(home.to_owned(), None));
    let group = coffer_control::DEFAULT_RESOURCE_GROUP;
    let ident = must("create the identity", inst.create_identity(group, IDENTITY));
    let principal = ident["principalId"]
        .as_str()
        .expect("principalId")
        .to_owned();
    let kv = must(
        "create the key vault",
        inst.create_key_vault(
            group,
            KEY_VAULT,
            KeyVaultOptions {
                enable_purge_protection: Some(true),
                enable_rbac_authorization: Some(true),
                ..KeyVaultOptions::default()
            },
        ),
    );
    let scope = kv["id"].as_str().expect("key vault id");
    must(
        "grant the role",
        inst.create_role_assignment(ROLE, &principal, scope),
    );
    let keys = sizes
        .iter()
        .map(|&bits| {
            let k = must(
                "create the key",
                inst.create_key(
                    KEY_VAULT,
                    &format!("rsa{bits}"),
                    KeyCreateOptions {
                        kty: "RSA".into(),
                        size: Some(bits),
                        ..KeyCreateOptions::default()
                    },
                ),
            );
            let kid = k["key"]["kid"].as_str().expect("kid").to_owned();
            let versionless = kid.rsplit_once('/').expect("versioned kid").0.to_owned();
            (bits, versionless, kid)
        })
        .collect();
    (principal, keys)
}

/// What one durable commit costs on the home's file system: append 4 KiB and fsync,
/// as SQLite commits an audit record to its write-ahead log (`synchronous=FULL`).
fn durable_append(dir: &Path, secs: f64) -> Stats {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let stats = measure(
        "fsync",
        1,
        secs,
        || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("fsync probe file")
        },
        |f| {
            f.write_all(&[0u8; 4096]).expect("write");
            f.sync_all().expect("fsync");
        },
    );
    let _ = std::fs::remove_file(&path);
    stats
}

fn key_size(bits: u32) -> KeySize {
    match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        _ => panic!("unsupported RSA size {bits}: use 2048, 3072 or 4096"),
    }
}

/// Runs the whole measurement; returns the JSON document.
pub(crate) fn run(o: &Options) -> Value {
    let tmp = must(
        "create the temporary home",
        tempfile::Builder::new()
            .prefix("coffer-bench-kv-")
            .tempdir_in(&o.dir),
    );
    let home = tmp.path().join("home");
    let (principal, keys) = set_up(&home, &o.sizes);
    // Held for the whole run, as a server process holds its catalog: the audit
    // committer and the catalog's WAL stay as they are between measurements instead
    // of starting afresh with each one.
    let _process = must("open the instance", Instance::open(home.clone(), None));
    let fsync = durable_append(tmp.path(), o.secs.min(1.0));
    // Raw RSA at one thread a core; Coffer at as many callers, then at each of
    // `callers` (more than cores, as a server runs).
    let mut coffer_counts = vec![o.threads];
    coffer_counts.extend(o.callers.iter().filter(|&&c| c > o.threads));
    coffer_counts.sort_unstable();
    coffer_counts.dedup();
    let mut results = Vec::new();
    let mut summary = Vec::new();
    // Coffer operations run (set-up, warm-up, timed): each must leave one audit record.
    let mut coffer_ops = 0;
    for (bits, versionless, kid) in &keys {
        let bits = *bits;
        eprintln!("  RSA-{bits}");
        // The ciphertext every unwrap opens: a DEK wrapped through the key vault.
        let wrapped = {
            let inst = must("open", Instance::open(home.clone(), None));
            let r = must(
                "wrapKey",
                inst.key_vault_client()
                    .wrap_key(&principal, versionless, ALG, &DEK),
            );
            assert_eq!(&r.kid, kid, "wrap used the current version");
            coffer_ops += 1;
            r.value
        };
        let open = || must("open", Instance::open(home.clone(), None));
        let raw_key = must(
            "generate",
            PrivateDecryptingKey::generate(key_size(bits)).map_err(|_| "RSA generation failed"),
        );
        let raw_pub = must(
            "public key",
            OaepPublicEncryptingKey::new(raw_key.public_key()).map_err(|_| "unusable key"),
        );
        let raw_dec = must(
            "private key",
            OaepPrivateDecryptingKey::new(raw_key).map_err(|_| "unusable key"),
        );
        let mut raw_ct = vec![0u8; raw_pub.ciphertext_size()];
        let n = must(
            "encrypt",
            raw_pub
                .encrypt(&OAEP_SHA256_MGF1SHA256, &DEK, &mut raw_ct, None)
                .map_err(|_| "RSA-OAEP encryption failed"),
        )
        .len();
        raw_ct.truncate(n);

        // Every measurement runs in `rounds` slices of secs / rounds; a round measures
        // each path and thread count once (raw decryption once more than there are
        // unwrap arrangements, around each), in an order that reverses from one round
        // to the next, so that a drift of the machine's speed during the run (other
        // guests of the host) falls on Coffer and raw alike. Ratios are medians of
        // per-round ratios.
        let slice = o.secs / o.rounds as f64;
        let raw_decrypt = |t: usize, secs: f64| {
            measure(
                "raw-dec",
                t,
                secs,
                || zeroize::Zeroizing::new(vec![0u8; raw_dec.min_output_size()]),
                |out| {
                    raw_dec
                        .decrypt(&OAEP_SHA256_MGF1SHA256, &raw_ct, out, None)
                        .expect("raw decrypt");
                },
            )
        };
        // An unwrap slice holds at least MIN_LATENCIES operation latencies of its
        // callers (each latency about callers / raw rate at best): a few waves of
        // operations per slice made a rate of their count.
        let raw_rate = raw_decrypt(o.threads, CALIBRATION_S.min(slice)).rate();
        let unwrap_slice =
            |t: usize| slice.max(MIN_LATENCIES * t as f64 / raw_rate.max(f64::MIN_POSITIVE));
        // Unwraps are compared with raw decryption measured right before and right
        // after each of them (the mean of the two), so that the host's speed, which
        // moved by a third from one second to the next in some runs, falls on both
        // sides of each ratio; the other steps alternate as a round's plan.
        let is_unwrap = |s: Step| matches!(s, Step::CofferUnwrap | Step::CofferUnwrapPipelined);
        let mut plan: Vec<(Step, usize)> = coffer_counts
            .iter()
            .flat_map(|&t| Step::ALL.into_iter().map(move |s| (s, t)))
            .filter(|(s, t)| match s {
                Step::CofferWrap | Step::CofferUnwrap => true,
                Step::CofferUnwrapPipelined => *t == o.threads && o.pipeline_depth > 0,
                Step::RawEncrypt | Step::RawDecrypt => *t == o.threads,
            })
            .collect();
        let (mut unwraps, mut others): (Vec<_>, Vec<_>) =
            plan.iter().partition(|(s, _)| is_unwrap(*s));
        others.retain(|&(s, _)| s != Step::RawDecrypt);
        let mut run_step = |step: Step, t: usize| -> Stats {
            let stats = match step {
                Step::CofferWrap => measure("wrap", t, slice, open, |inst| {
                    let r = inst
                        .key_vault_client()
                        .wrap_key(&principal, versionless, ALG, &DEK)
                        .expect("wrapKey through the key vault");
                    assert!(!r.value.is_empty());
                }),
                Step::CofferUnwrap => measure("unwrap", t, unwrap_slice(t), open, |inst| {
                    let r = inst
                        .key_vault_client()
                        .unwrap_key(&principal, kid, ALG, &wrapped)
                        .expect("unwrapKey through the key vault");
                    drop(into_dek(r));
                }),
                Step::CofferUnwrapPipelined => {
                    // Each call begins one unwrap and, once `depth` are begun,
                    // finishes the oldest: in the steady window every call
                    // completes one unwrap, so the rate is the completed calls'.
                    let depth = o.pipeline_depth;
                    measure(
                        "unwrap-pipelined",
                        t,
                        unwrap_slice(t),
                        || PipelinedWorker {
                            inst: open(),
                            begun: std::collections::VecDeque::new(),
                        },
                        |w| {
                            let pending = w
                                .inst
                                .key_vault_client()
                                .begin_unwrap_key(&principal, kid, ALG, &wrapped)
                                .expect("unwrapKey through the key vault");
                            w.begun.push_back(pending);
                            if w.begun.len() > depth {
                                let r = w
                                    .begun
                                    .pop_front()
                                    .expect("a begun call")
                                    .finish()
                                    .expect("unwrapKey through the key vault");
                                drop(into_dek(r));
                            }
                        },
                    )
                }
                Step::RawEncrypt => measure(
                    "raw-enc",
                    t,
                    slice,
                    || vec![0u8; raw_pub.ciphertext_size()],
                    |out| {
                        raw_pub
                            .encrypt(&OAEP_SHA256_MGF1SHA256, &DEK, out, None)
                            .expect("raw encrypt");
                    },
                ),
                Step::RawDecrypt => raw_decrypt(t, slice),
            };
            if !step.is_raw() {
                coffer_ops += stats.ops + WARM_UP * t;
            }
            stats
        };

        let mut rounds: Vec<HashMap<(Step, usize), Stats>> = Vec::new();
        // Per round, the raw decryption rate each unwrap is compared with.
        let mut paired_raw: Vec<HashMap<(Step, usize), f64>> = Vec::new();
        for _ in 0..o.rounds {
            let mut m = HashMap::new();
            for &(step, t) in &others {
                m.insert((step, t), run_step(step, t));
            }
            let mut pairs = HashMap::new();
            let mut raws = vec![run_step(Step::RawDecrypt, o.threads)];
            for &(step, t) in &unwraps {
                m.insert((step, t), run_step(step, t));
                let after = run_step(Step::RawDecrypt, o.threads);
                let before = raws.last().expect("measured").rate();
                pairs.insert((step, t), (before + after.rate()) / 2.0);
                raws.push(after);
            }
            m.insert(
                (Step::RawDecrypt, o.threads),
                Stats::merge(raws.into_iter()),
            );
            others.reverse();
            unwraps.reverse();
            rounds.push(m);
            paired_raw.push(pairs);
        }
        // Coffer's rate (`coffer` at `t`) over raw's (`raw` at `raw_t`) in each round,
        // and their median.
        let per_round = |coffer: Step, t: usize, raw: Step, raw_t: usize| -> Vec<f64> {
            rounds
                .iter()
                .zip(&paired_raw)
                .map(|(m, pairs)| {
                    let raw_rate = match pairs.get(&(coffer, t)) {
                        Some(&r) if raw == Step::RawDecrypt => r,
                        _ => m[&(raw, raw_t)].rate(),
                    };
                    m[&(coffer, t)].rate() / raw_rate
                })
                .collect()
        };
        let ratio = |coffer, t, raw, raw_t| median(per_round(coffer, t, raw, raw_t));
        // Per number of concurrent callers; the figure is the best of them (the key
        // vault's capacity: a server's callers queue as these do).
        let mut by_callers: Vec<Value> = coffer_counts
            .iter()
            .map(|&t| {
                json!({
                    "coffer_callers": t,
                    "wrap": ratio(Step::CofferWrap, t, Step::RawEncrypt, o.threads),
                    "unwrap": ratio(Step::CofferUnwrap, t, Step::RawDecrypt, o.threads),
                    "unwrap_per_round": per_round(Step::CofferUnwrap, t, Step::RawDecrypt, o.threads),
                })
            })
            .collect();
        if o.pipeline_depth > 0 {
            let (p, t) = (Step::CofferUnwrapPipelined, o.threads);
            by_callers.push(json!({
                "coffer_callers": t,
                "pipeline_depth": o.pipeline_depth,
                "unwrap": ratio(p, t, Step::RawDecrypt, t),
                "unwrap_per_round": per_round(p, t, Step::RawDecrypt, t),
            }));
        }
        let best = |what: &str| {
            by_callers
                .iter()
                .max_by(|a, b| {
                    a[what]
                        .as_f64()
                        .unwrap_or(0.0)
                        .total_cmp(&b[what].as_f64().unwrap_or(0.0))
                })
                .cloned()
                .unwrap_or(Value::Null)
        };
        let (best_unwrap, best_wrap) = (best("unwrap"), best("wrap"));
        let over_both_cores = json!({
            "coffer_callers": best_unwrap["coffer_callers"],
            "pipeline_depth": best_unwrap["pipeline_depth"],
            "raw_threads": o.threads,
            "rounds": o.rounds,
            "wrap": best_wrap["wrap"],
            "wrap_callers": best_wrap["coffer_callers"],
            "unwrap": best_unwrap["unwrap"],
            "unwrap_per_round": best_unwrap["unwrap_per_round"],
            "by_callers": by_callers,
        });
        plan.sort_by_key(|&(s, t)| (t, s));
        for (step, t) in plan {
            let (path, op) = step.names();
            let merged = Stats::merge(rounds.iter_mut().filter_map(|m| m.remove(&(step, t))));
            results.push(merged.json(path, op, bits, t));
        }
        summary.push(json!({
            "bits": bits,
            "over_both_cores": over_both_cores,
        }));
    }
    // The identity's successful wrapKey/unwrapKey records in the key vault's audit log.
    let audit_records = must(
        "audit",
        Instance::open(home.clone(), None).and_then(|i| i.key_vault_audit(KEY_VAULT)),
    )
    .iter()
    .filter(|a| {
        a["callerPrincipalId"] == principal.as_str()
            && a["result"] == "Succeeded"
            && matches!(a["operationName"].as_str(), Some("wrapKey" | "unwrapKey"))
    })
    .count();
    json!({
        "algorithm": ALG,
        "secs_per_measurement": o.secs,
        "threads_all_cores": o.threads,
        "coffer_callers": o.callers,
        "pipeline_depth": o.pipeline_depth,
        "permission_model": "rbac",
        "home": o.dir.display().to_string(),
        "durable_append_4k": fsync.json("disk", "append 4 KiB + fsync", 0, 1),
        "coffer_ops": coffer_ops,
        "audit_records": audit_records,
        "results": results,
        "summary": summary,
    })
}

/// How the Coffer callers of a figure were arranged (a `by_callers` entry, or the best).
fn callers_label(c: &Value) -> String {
    match c["pipeline_depth"].as_u64() {
        Some(depth) => format!(
            "{} pipelined workers ({depth} calls begun each)",
            c["coffer_callers"]
        ),
        None => format!("{} callers", c["coffer_callers"]),
    }
}

/// The human-readable table of [`run`]'s document (on stderr; stdout carries the JSON).
pub(crate) fn table(doc: &Value) -> String {
    let mut s = format!(
        "{:>6} {:>16} {:<16} {:>7} {:>10} {:>9} {:>9} {:>6} {:>10}\n",
        "bits", "path", "op", "threads", "ops/s", "p50 us", "p99 us", "busy", "cpu us/op"
    );
    for r in doc["results"].as_array().into_iter().flatten() {
        s += &format!(
            "{:>6} {:>16} {:<16} {:>7} {:>10.0} {:>9.0} {:>9.0} {:>5.0}% {:>10.0}\n",
            r["bits"],
            r["path"].as_str().unwrap_or(""),
            r["op"].as_str().unwrap_or(""),
            r["threads"],
            r["ops_per_s"].as_f64().unwrap_or(0.0),
            r["p50_us"].as_f64().unwrap_or(0.0),
            r["p99_us"].as_f64().unwrap_or(0.0),
            100.0 * r["cores_busy"].as_f64().unwrap_or(0.0),
            r["process_cpu_us_per_op"].as_f64().unwrap_or(0.0),
        );
    }
    let f = &doc["durable_append_4k"];
    s += &format!(
        "durable commit on {}: 4 KiB append + fsync p50 {:.0} us, p99 {:.0} us\n",
        doc["home"].as_str().unwrap_or(""),
        f["p50_us"].as_f64().unwrap_or(0.0),
        f["p99_us"].as_f64().unwrap_or(0.0),
    );
    for x in doc["summary"].as_array().into_iter().flatten() {
        let b = &x["over_both_cores"];
        for c in b["by_callers"].as_array().into_iter().flatten() {
            let wrap = c["wrap"]
                .as_f64()
                .map_or(String::new(), |w| format!("wrap {:.0}%, ", 100.0 * w));
            s += &format!(
                "RSA-{} coffer, {} / raw at {} threads: {wrap}unwrap {:.0}%\n",
                x["bits"],
                callers_label(c),
                b["raw_threads"],
                100.0 * c["unwrap"].as_f64().unwrap_or(0.0),
            );
        }
        s += &format!(
            "RSA-{} over both cores (best: coffer, {} / raw at {} threads): unwrap {:.0}%\n",
            x["bits"],
            callers_label(b),
            b["raw_threads"],
            100.0 * b["unwrap"].as_f64().unwrap_or(0.0),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One thread of short operations (100/s) and one of long ones (9.09/s): the rate
    /// is the sum of each thread's inverse mean latency over the operations that began
    /// in the steady window (109.09/s).
    #[test]
    fn the_rate_is_each_threads_rate_in_the_steady_window() {
        let ms = Duration::from_millis;
        let every = |step: u64, until: u64| -> Vec<(Duration, Duration)> {
            (0..)
                .map(|i| (ms(i * step), ms((i + 1) * step)))
                .take_while(|(began, _)| *began < ms(until))
                .collect()
        };
        // 10 ms operations (100/s) and 110 ms ones (9.09/s), for 300 ms.
        let threads = [every(10, 300), every(110, 300)];
        let (rate, secs) = steady_rate(&threads, ms(300));
        assert!((secs - 0.18).abs() < 1e-9);
        assert!((rate - (100.0 + 1000.0 / 110.0)).abs() < 0.01, "{rate}");
        // Waves: 4 threads whose operations all complete together every 40 ms (a
        // core shared by 4 operations of 10 ms each): 100/s whatever the window.
        let wave: Vec<_> = (0..4).map(|_| every(40, 300)).collect();
        for end in [300, 310, 325, 337] {
            let (rate, _) = steady_rate(&wave, ms(end));
            assert!((rate - 100.0).abs() < 0.01, "{end}: {rate}");
        }
    }

    /// The measurement runs end to end and every Coffer operation it made is in the key
    /// vault's audit log (a functional check: no timing is asserted).
    #[test]
    fn every_coffer_operation_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let doc = run(&Options {
            sizes: vec![2048],
            secs: 0.05,
            threads: 2,
            callers: vec![8, 32],
            rounds: 2,
            pipeline_depth: 4,
            dir: dir.path().to_owned(),
        });
        assert_eq!(doc["audit_records"], doc["coffer_ops"]);
        let results = doc["results"].as_array().unwrap();
        assert_eq!(
            results.len(),
            9,
            "4 operations x 2 threads, pipelined unwrap x 2 workers, \
             2 Coffer operations x 8 and x 32 callers"
        );
        for n in [8, 32] {
            let callers: Vec<_> = results.iter().filter(|r| r["threads"] == n).collect();
            assert_eq!(callers.len(), 2, "{callers:?}");
            assert!(callers.iter().all(|r| r["path"] == "coffer"));
        }
        let pipelined: Vec<_> = results
            .iter()
            .filter(|r| r["path"] == "coffer-pipelined")
            .collect();
        assert_eq!(pipelined.len(), 1, "{results:?}");
        assert_eq!(
            (&pipelined[0]["op"], &pipelined[0]["threads"]),
            (&json!("unwrapKey"), &json!(2))
        );
        let b = &doc["summary"][0]["over_both_cores"];
        let by: Vec<_> = b["by_callers"].as_array().unwrap().iter().collect();
        assert_eq!(
            by.iter()
                .map(|c| (
                    c["coffer_callers"].as_u64().unwrap(),
                    c["pipeline_depth"].as_u64()
                ))
                .collect::<Vec<_>>(),
            [(2, None), (8, None), (32, None), (2, Some(4))]
        );
        // The figure is the best of the caller counts.
        let best = by
            .iter()
            .map(|c| c["unwrap"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert_eq!(b["unwrap"].as_f64().unwrap(), best, "{b}");
        assert!(best > 0.0, "{b}");
        assert_eq!(b["raw_threads"].as_u64(), Some(2));
        let t = table(&doc);
        assert!(t.contains("coffer, 32 callers / raw at 2 threads"), "{t}");
        assert!(
            t.contains("coffer, 2 pipelined workers (4 calls begun each) / raw at 2 threads"),
            "{t}"
        );
        assert!(t.contains("over both cores (best: coffer, "), "{t}");
        for r in results {
            assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
        }
        assert!(table(&doc).contains("unwrapKey"));
        assert!(doc["durable_append_4k"]["ops"].as_u64().unwrap() > 0);
    }
}

#!/usr/bin/env python3
"""Coffer benchmark harness: Coffer against restic, rustic, borg and bupstash on the
same data, on the same machine, in the same run (called by bench/run).

For each dataset and tool: first backup, second backup with no change, backup after a
change, full restore, stored bytes and peak RSS. Repetitions alternate the tool order
to cancel machine drift; medians are reported, and Coffer's figures as ratios against
each peer. The hardware limit (page-cache read rate plus the single-pass cost of
Coffer's pipeline over all cores) and the index memory come from `coffer-bench`.

Coffer-only stages: `rotation` times a key rotation of a customer-managed key on a
vault holding 1 GiB against an empty vault (no data is re-encrypted, so both take the
same time); `keyvault` measures wrapKey/unwrapKey through Coffer's key vault next to raw
aws-lc-rs RSA-OAEP-256 (`coffer-bench keyvault-ops`), with the Coffer home on disk;
`keyvault-tmpfs` (not run by default) adds RSA-2048 with the home on tmpfs, a diagnostic
of everything but the audit record's fsync.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COFFER = os.path.join(ROOT, "target/release/coffer")
COFFER_BENCH = os.path.join(ROOT, "target/release/coffer-bench")
WORK = os.environ.get("BENCH_WORK", "/var/tmp/coffer-bench")
PASSWORD = "coffer-bench-password"
MIB = 1 << 20


# ----------------------------------------------------------------------------- datasets

def mixed_bytes(rng, n):
    """Half text-like (compressible), half random, in 64 KiB runs."""
    words = [b"coffer", b"backup", b"vault", b"key", b"chunk", b"index", b"restore", b"0123456789"]
    out = bytearray()
    while len(out) < n:
        if rng.random() < 0.5:
            out += rng.randbytes(64 * 1024)
        else:
            line = b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
            out += (line * (64 * 1024 // len(line) + 1))[: 64 * 1024]
    return bytes(out[:n])


class Dataset:
    """A directory to back up, plus a reversible change."""

    def __init__(self, name, path):
        self.name, self.path = name, path
        self.changes = []  # (relative path, changed bytes, pristine bytes)

    def size(self):
        total = 0
        for d, _, files in os.walk(self.path):
            for f in files:
                p = os.path.join(d, f)
                if os.path.isfile(p) and not os.path.islink(p):
                    total += os.path.getsize(p)
        return total

    def _write_in_place(self, rel, data):
        # Same inode: rewrite the content, as an editor or a VM would.
        with open(os.path.join(self.path, rel), "r+b") as f:
            f.write(data)
            f.truncate()

    def change(self):
        for rel, changed, _ in self.changes:
            self._put(rel, changed)

    def revert(self):
        for rel, _, pristine in self.changes:
            self._put(rel, pristine)

    def _put(self, rel, version):
        # bytes: rewritten in place. A path: a prepared version of a large file, linked into
        # place (the same content as rewriting it, without writing gigabytes per step).
        if isinstance(version, bytes):
            self._write_in_place(rel, version)
        else:
            dst = os.path.join(self.path, rel)
            tmp = dst + ".bench-swap"
            os.link(version, tmp)
            os.replace(tmp, dst)


def dataset_kernel(scale):
    dst = os.path.join(WORK, "data/kernel")
    marker = dst + ".done"
    if not os.path.exists(marker):
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(dst)
        with tarfile.open("/usr/src/linux-source-6.1.tar.xz") as t:
            t.extractall(dst, filter="tar")
        open(marker, "w").close()
    ds = Dataset("kernel", dst)
    # Change: append a line to 1% of the C files.
    files = sorted(os.path.relpath(os.path.join(d, f), dst) for d, _, fs in os.walk(dst) for f in fs if f.endswith(".c"))
    rng = random.Random(1)
    for rel in rng.sample(files, max(1, len(files) // 100)):
        with open(os.path.join(dst, rel), "rb") as f:
            pristine = f.read()
        ds.changes.append((rel, pristine + b"/* changed by bench */\n", pristine))
    return ds


def dataset_small(scale):
    count = int(200_000 * scale)
    dst = os.path.join(WORK, f"data/small-{count}")
    marker = dst + ".done"
    rng = random.Random(2)
    if not os.path.exists(marker):
        shutil.rmtree(dst, ignore_errors=True)
        for i in range(count):
            d = os.path.join(dst, f"d{i // 1000:03}")
            if i % 1000 == 0:
                os.makedirs(d)
            n = rng.randint(1024, 16 * 1024)
            data = rng.randbytes(n) if rng.random() < 0.5 else mixed_bytes(rng, n)
            with open(os.path.join(d, f"f{i:06}"), "wb") as f:
                f.write(data)
        open(marker, "w").close()
    ds = Dataset("small", dst)
    rng = random.Random(3)
    for i in rng.sample(range(count), max(1, count // 100)):
        rel = f"d{i // 1000:03}/f{i:06}"
        with open(os.path.join(dst, rel), "rb") as f:
            pristine = f.read()
        ds.changes.append((rel, pristine[: len(pristine) // 2] + rng.randbytes(512) + pristine[len(pristine) // 2 :], pristine))
    return ds


def vm_image(size):
    """A directory holding one VM-like image of `size` bytes (made once, deterministic)."""
    dst = os.path.join(WORK, f"data/large-{size // MIB}")
    path = os.path.join(dst, "vm.img")
    marker = dst + ".done"
    rng = random.Random(4)
    if not os.path.exists(marker):
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(dst)
        with open(path, "wb") as f:
            for _ in range(max(1, size // (64 * MIB))):
                f.write(mixed_bytes(rng, 64 * MIB))
        open(marker, "w").close()
    return dst, path


def dataset_large(scale):
    size = int(2048 * scale) * MIB
    dst, path = vm_image(size)
    # Both versions are kept beside the dataset (hard links, made once); a change links the
    # second version into place and a revert links the first back.
    versions = dst + ".versions"
    v1, v2 = os.path.join(versions, "v1.img"), os.path.join(versions, "v2.img")
    if os.path.exists(v2) and os.path.samefile(path, v2):
        os.link(v1, path + ".bench-swap")  # an interrupted run left the second version in place
        os.replace(path + ".bench-swap", path)
    if not (os.path.exists(v2) and os.path.samefile(path, v1)):
        shutil.rmtree(versions, ignore_errors=True)
        os.makedirs(versions)
        with open(path, "rb") as f:
            pristine = f.read()
        # Second version: 1% of the 64 KiB blocks changed in place, and 1 MiB inserted.
        changed = bytearray(pristine)
        blocks = size // (64 * 1024)
        crng = random.Random(5)
        for b in crng.sample(range(blocks), max(1, blocks // 100)):
            changed[b * 65536 : (b + 1) * 65536] = crng.randbytes(65536)
        at = size // 2
        changed[at:at] = crng.randbytes(MIB)
        with open(v2 + ".tmp", "wb") as f:
            f.write(changed)
        os.link(path, v1)
        os.replace(v2 + ".tmp", v2)
    ds = Dataset("large", dst)
    ds.changes.append(("vm.img", v2, v1))
    return ds


DATASETS = {"kernel": dataset_kernel, "small": dataset_small, "large": dataset_large}


# -------------------------------------------------------------------------------- tools

def run(cmd, env=None, cwd=None):
    """Runs cmd under /usr/bin/time; returns (seconds, peak RSS bytes, stdout)."""
    timefile = os.path.join(WORK, "time.out")
    full = ["/usr/bin/time", "-o", timefile, "-f", "%e %M"] + cmd
    e = dict(os.environ, **(env or {}))
    p = subprocess.run(full, env=e, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode(errors='replace')[-2000:]}")
    with open(timefile) as f:
        secs, kb = f.read().split()[-2:]
    return float(secs), int(kb) * 1024, p.stdout


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_size
            except FileNotFoundError:
                pass
    return total


class Tool:
    name = "?"

    def __init__(self, repo):
        self.repo = repo

    def available(self):
        return shutil.which(self.binary) is not None


class Coffer(Tool):
    name, binary = "coffer", COFFER

    def available(self):
        return os.path.exists(COFFER)

    def c(self, *args):
        return [COFFER, "--home", self.repo, "-o", "json", *args]

    def init(self, src):
        subprocess.run(self.c("backup-vault", "create", "-v", "bench"), check=True, stdout=subprocess.DEVNULL)
        subprocess.run(self.c("backup-instance", "create", "-v", "bench", "-n", "data", "--datasource-type", "Directory",
                              "--datasource-path", src), check=True, stdout=subprocess.DEVNULL)

    def backup(self, src):
        return run(self.c("backup-instance", "adhoc-backup", "-v", "bench", "-n", "data"))

    def restore(self, target):
        out = subprocess.run(self.c("recovery-point", "list", "-v", "bench", "--backup-instance", "data"),
                             check=True, stdout=subprocess.PIPE).stdout
        rp = max(json.loads(out), key=lambda r: r["properties"]["recoveryPointTime"])["name"]
        return run(self.c("backup-instance", "restore", "-v", "bench", "-n", "data", "--recovery-point", rp, "--target", target))

    def stored(self):
        return du(os.path.join(self.repo, "storage"))


def from_template(tool, repo, init):
    """Makes `repo` a copy of an empty repository that `init(path)` made once in this run.
    `restic init` takes about 3 s (its key derivation), `borg init` 0.4-1 s, 9 times a run
    each; a copy of the empty repository (its config, key and empty directories) takes
    milliseconds. Every repetition still starts from an empty repository and an empty cache."""
    template = os.path.join(WORK, f"template-{tool}")
    if template not in TEMPLATES:
        shutil.rmtree(template, ignore_errors=True)
        init(template)
        TEMPLATES.add(template)
    shutil.copytree(template, repo, symlinks=True)


TEMPLATES = set()  # the template repositories made in this run


class Restic(Tool):
    name, binary = "restic", "restic"
    env = {"RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": os.path.join(WORK, "cache/restic")}

    def init(self, src):
        from_template(self.name, self.repo, lambda path: subprocess.run(
            ["restic", "-r", path, "init", "--repository-version", "2"], env=dict(os.environ, **self.env),
            check=True, stdout=subprocess.DEVNULL))

    def backup(self, src):
        return run(["restic", "-r", self.repo, "backup", "--compression", "auto", "-q", src], self.env)

    def restore(self, target):
        return run(["restic", "-r", self.repo, "restore", "latest", "--target", target, "-q"], self.env)

    def stored(self):
        return du(self.repo)


class Rustic(Restic):
    name, binary = "rustic", "rustic"
    env = {"RUSTIC_PASSWORD": PASSWORD, "RUSTIC_CACHE_DIR": os.path.join(WORK, "cache/rustic")}

    def init(self, src):
        from_template(self.name, self.repo, lambda path: subprocess.run(
            ["rustic", "-r", path, "init"], env=dict(os.environ, **self.env), check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def backup(self, src):
        return run(["rustic", "-r", self.repo, "backup", src], self.env)

    def restore(self, target):
        return run(["rustic", "-r", self.repo, "restore", "latest", target], self.env)


class Borg(Tool):
    name, binary = "borg", "borg"
    # The security directory (where borg remembers each repository's location and newest
    # manifest) lives in the cache, which every repetition starts without: the copies of the
    # template share its repository id.
    env = {"BORG_PASSPHRASE": PASSWORD, "BORG_CACHE_DIR": os.path.join(WORK, "cache/borg"),
           "BORG_SECURITY_DIR": os.path.join(WORK, "cache/borg-security"),
           "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
    n = 0

    def init(self, src):
        from_template(self.name, self.repo, lambda path: subprocess.run(
            ["borg", "init", "--encryption=repokey-blake2", path], env=dict(os.environ, **self.env),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def backup(self, src):
        self.n += 1
        return run(["borg", "create", "--compression", "zstd,3", f"{self.repo}::a{self.n}", src], self.env)

    def restore(self, target):
        os.makedirs(target, exist_ok=True)
        return run(["borg", "extract", f"{self.repo}::a{self.n}"], self.env, cwd=target)

    def stored(self):
        return du(self.repo)


class Bupstash(Tool):
    name, binary = "bupstash", "bupstash"

    def __init__(self, repo):
        super().__init__(repo)
        self.key = repo + ".key"
        self.env = {"BUPSTASH_REPOSITORY": repo, "BUPSTASH_KEY": self.key,
                    "BUPSTASH_SEND_LOG": repo + ".send-log"}
        self.ids = []

    def init(self, src):
        e = dict(os.environ, **self.env)
        subprocess.run(["bupstash", "init"], env=e, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["bupstash", "new-key", "-o", self.key], env=e, check=True, stdout=subprocess.DEVNULL)

    def backup(self, src):
        r = run(["bupstash", "put", src], self.env)
        self.ids.append(r[2].decode().strip())
        return r

    def restore(self, target):
        os.makedirs(target, exist_ok=True)
        return run(["bupstash", "restore", "--into", target, f"id={self.ids[-1]}"], self.env)

    def stored(self):
        return du(self.repo)


TOOLS = {"coffer": Coffer, "restic": Restic, "rustic": Rustic, "borg": Borg, "bupstash": Bupstash}


# ------------------------------------------------------------------- key rotation (CMK)

def rotation(scale, reps):
    """Key rotation on a customer-managed-key vault holding 1 GiB vs an empty one.

    Set up as a user would: a key vault (RBAC, purge protection), one RSA key per backup
    vault, a user-assigned identity with the Crypto Service Encryption User role on the
    key vault, two backup vaults with that identity and a versionless key URI (so they
    follow the key), and one backup of a 1 GiB image into the first. Then, alternating
    the two vaults: time `keyvault key rotate` and the next `backup-vault show`, which
    notices the new version and rewraps the vault's DEK with it (docs/cmk.md,
    autorotation); a `show` without rotation is the baseline.
    """
    home = os.path.join(WORK, "rotation-home")
    shutil.rmtree(home, ignore_errors=True)

    def c(*args, timed=False):
        # Sub-second commands: timed here (wall clock, process start included), not by /usr/bin/time.
        t = time.perf_counter()
        out = subprocess.run([COFFER, "--home", home, "-o", "json", *args], check=True, stdout=subprocess.PIPE).stdout
        secs = time.perf_counter() - t
        return (secs, json.loads(out)) if timed else json.loads(out)

    ident = c("identity", "create", "-n", "bench-uami")
    kv = c("keyvault", "create", "-n", "benchrot", "--enable-purge-protection", "true")
    c("role", "assignment", "create", "--role", "Key Vault Crypto Service Encryption User",
      "--assignee", ident["principalId"], "--scope", kv["id"])
    vaults = {"1gib": "rot-full", "empty": "rot-empty"}
    for v in vaults.values():
        key = c("keyvault", "key", "create", "--vault-name", "benchrot", "-n", v, "--kty", "RSA", "--size", "2048")
        uri = key["key"]["kid"].rsplit("/", 1)[0]  # versionless: the vault follows the key
        c("backup-vault", "create", "-v", v, "--type", "UserAssigned",
          "--user-assigned-identities", json.dumps({ident["id"]: {}}), "--cmk-encryption-key-uri", uri,
          "--cmk-encryption-state", "Enabled", "--cmk-identity-type", "UserAssigned",
          "--cmk-user-assigned-identity-id", ident["id"])
    src, _ = vm_image(int(1024 * scale) * MIB)
    c("backup-instance", "create", "-v", vaults["1gib"], "-n", "data", "--datasource-type", "Directory",
      "--datasource-path", src)
    backup_s, _, _ = run([COFFER, "--home", home, "-o", "json", "backup-instance", "adhoc-backup", "-v",
                          vaults["1gib"], "-n", "data"])
    stored = du(os.path.join(home, "storage"))

    def enc(v):
        return v["properties"]["securitySettings"]["encryptionSettings"]["keyVaultProperties"]

    runs = {k: [] for k in vaults}
    for rep in range(reps * 2 + 1):  # more repetitions: each run takes well under a second
        order = list(vaults.items()) if rep % 2 == 0 else list(vaults.items())[::-1]
        for label, v in order:
            show_s, _ = c("backup-vault", "show", "-v", v, timed=True)
            rotate_s, key = c("keyvault", "key", "rotate", "--vault-name", "benchrot", "-n", v, timed=True)
            new_version = key["key"]["kid"].rsplit("/", 1)[1]
            rewrap_s, shown = c("backup-vault", "show", "-v", v, timed=True)
            if enc(shown)["currentKeyVersion"] != new_version:
                raise RuntimeError(f"{v}: show did not rewrap to {new_version}: {enc(shown)}")
            runs[label].append({"rotate_s": rotate_s, "show_rewrap_s": rewrap_s, "show_s": show_s,
                                "rotate_and_rewrap_s": rotate_s + rewrap_s})
    med = {k: {m: statistics.median(r[m] for r in rs) for m in rs[0]} for k, rs in runs.items()}
    shutil.rmtree(home, ignore_errors=True)
    return {"data_bytes": os.path.getsize(os.path.join(src, "vm.img")), "stored_bytes": stored,
            "backup_s": backup_s, "key_size": 2048, "median": med, "runs": runs,
            "ratio_1gib_over_empty": med["1gib"]["rotate_and_rewrap_s"] / med["empty"]["rotate_and_rewrap_s"],
            "rewrap_ratio_1gib_over_empty": med["1gib"]["show_rewrap_s"] / med["empty"]["show_rewrap_s"]}


# ----------------------------------------------------------------------------- measure

# Restores go to tmpfs when there is one. On this machine's ext4 (no journal), creating
# files just after many were deleted makes the kernel scan recently freed inodes: a restore
# of the kernel tree took 4.7 s into a fresh directory and 22-27 s within minutes after another
# restored tree had been deleted, for every tool, depending on what ran before it. A restore
# into tmpfs measures each tool's own work (read, decrypt, verify, decompress, write).
RESTORE_DIR = os.environ.get("BENCH_RESTORE_DIR", "/dev/shm" if os.path.isdir("/dev/shm") else WORK)


def warm_in_background(path):
    """Starts reading every file of `path` (`coffer-bench warm`, on all cores), so that each tool
    starts with the dataset in page cache (whatever ran before it: the host's DAMON reclaim pages
    out what was idle for a minute). `settle` waits for it. In Python this took 10 s on the
    small-files dataset, 45 times a run."""
    PENDING.append(subprocess.Popen([COFFER_BENCH, "warm", path], stdout=subprocess.DEVNULL))


def hwlimit(path, breakdown=False):
    """`coffer-bench hwlimit` of the dataset at `path` (its JSON document); the single-core rate
    of each stage (`breakdown`, not part of the limit) takes most of its time on compressible data."""
    cmd = [COFFER_BENCH, "hwlimit", "--max-bytes", str(1 << 30), path] + ([] if breakdown else ["--no-breakdown"])
    return json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout)


def mean_limit(before, after):
    """The mean of two `hwlimit` documents (each rate), with both kept as measured; `before`
    alone when there is no `after`."""
    if after is None:
        return {**before, "before": before, "after": None}
    keys = ("page_cache_read_gbps", "pipeline_all_cores_gbps", "hardware_limit_gbps", "read_or_pipeline_min_gbps")
    return {**before, **{k: (before[k] + after[k]) / 2 for k in keys}, "before": before, "after": after}


# The dataset whose fraction of the hardware limit is a target (issue 5: the large image) has
# its limit measured before and after Coffer's run, each repetition; the others (their fraction
# is reported, not judged) once, before Coffer's first run: 45 s less a run.
LIMIT_EACH_REP = {"large"}


PENDING = []  # clean-ups running in the background (rm processes)


def clean_up_later(*paths):
    """Moves `paths` aside and deletes them in the background, while the next untimed steps
    run (the next tool's set-up and warming): deleting a restored tree of 200,000 files and a
    repository took 2-3 s a call, 45 calls a run. `settle` waits for it."""
    trash = []
    for p in paths:
        if os.path.lexists(p):
            aside = f"{p}.deleting-{len(PENDING)}-{time.monotonic_ns()}"
            os.rename(p, aside)
            trash.append(aside)
    delete_in_background(trash)


def delete_in_background(paths):
    if paths:
        PENDING.append(subprocess.Popen(["rm", "-rf", "--", *paths]))


def settle():
    """Waits for the background clean-ups and warming, so that nothing else runs during a
    measurement."""
    while PENDING:
        p = PENDING.pop()
        if p.wait() != 0 and p.args[0] == COFFER_BENCH:  # a warming that failed (rm's are not judged)
            sys.exit(f"{' '.join(p.args)} failed ({p.returncode})")


def measure(tool_cls, ds, warmed=False):
    began = time.monotonic()
    spent = {"setup": 0.0, "warm": 0.0, "sync": 0.0, "stored": 0.0, "change": 0.0, "cleanup": 0.0}
    mark = [began]

    def lap(what):  # charges the time since the last lap to `what`
        now = time.monotonic()
        spent[what] += now - mark[0]
        mark[0] = now

    name = tool_cls.name
    repo = os.path.join(WORK, f"repo-{name}")
    target = os.path.join(RESTORE_DIR, f"coffer-bench-restore-{name}")
    clean_up_later(repo, target, repo + ".key", repo + ".send-log", os.path.join(WORK, "cache"))
    if not warmed:  # hwlimit, just before Coffer's run, has read every file twice
        # Warming runs while the tool's repository is set up (and the clean-ups go on):
        # all of it is done before the first timed step (`settle`).
        warm_in_background(ds.path)
    t = tool_cls(repo)
    t.init(ds.path)
    lap("setup")
    r = {}
    # Every timed step starts with the earlier steps' writes on disk (os.sync), so no
    # tool pays for another step's (or another tool's) write-back.
    settle()
    lap("warm")  # the warming and the clean-ups that outlasted the set-up
    os.sync()
    lap("sync")
    r["load1"] = os.getloadavg()[0]  # machine load as the tool starts (other jobs would show here)
    r["first_s"], rss1, _ = t.backup(ds.path)
    mark[0] = time.monotonic()
    r["first_stored"] = t.stored()
    lap("stored")
    os.sync()
    lap("sync")
    r["unchanged_s"], rss2, _ = t.backup(ds.path)
    mark[0] = time.monotonic()
    ds.change()
    lap("change")
    try:
        before = t.stored()
        lap("stored")
        os.sync()
        lap("sync")
        r["changed_s"], rss3, _ = t.backup(ds.path)
        mark[0] = time.monotonic()
        r["changed_added"] = t.stored() - before
        lap("stored")
    finally:
        ds.revert()
        lap("change")
    os.sync()
    lap("sync")
    r["restore_s"], rss4, _ = t.restore(target)
    mark[0] = time.monotonic()
    r["stored"] = t.stored()
    lap("stored")
    r["peak_rss"] = max(rss1, rss2, rss3, rss4)
    clean_up_later(repo, target)
    lap("cleanup")
    r["overhead_s"] = spent
    # The whole call, set-up, warming, syncing, size queries and clean-up included.
    r["measure_wall_s"] = time.monotonic() - began
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default="kernel,small,large")
    ap.add_argument("--tools", default="coffer,restic,rustic,borg,bupstash")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--stages", default="tools,rotation,keyvault",
                    help="tools: every tool on every dataset; rotation: CMK key rotation, 1 GiB vs empty vault; "
                         "keyvault: wrapKey/unwrapKey through Coffer's key vault vs raw RSA; "
                         "keyvault-tmpfs: RSA-2048 with the Coffer home on tmpfs (not by default)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="size of the generated datasets (small, large) relative to the issue's (200k files, 2 GiB)")
    ap.add_argument("--quick", action="store_true", help="one repetition, datasets at 1/8 size (smoke run)")
    args = ap.parse_args()
    started = time.monotonic()
    # Where the run's time goes (seconds): printed at the end.
    spent = {"tools_timed_steps": 0.0, "tools_measure_calls": 0.0, "hwlimit": 0.0, "rotation": 0.0,
             "keyvault": 0.0}
    overhead = {}  # the measure calls' time outside the timed steps, by phase
    scale = 0.125 if args.quick else args.scale
    reps = 1 if args.quick else args.reps
    os.makedirs(WORK, exist_ok=True)
    # What an interrupted run had moved aside to delete.
    delete_in_background([os.path.join(d, n) for d in {WORK, RESTORE_DIR} for n in os.listdir(d) if ".deleting-" in n])
    tools = [TOOLS[n] for n in args.tools.split(",")]
    missing = [t.name for t in tools if not t(WORK).available()]
    tools = [t for t in tools if t.name not in missing]
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": os.uname().machine, "cores": os.cpu_count(),
               "restore_dir": RESTORE_DIR,
               "reps": reps, "scale": scale, "missing_tools": missing, "datasets": {}}

    stages = args.stages.split(",")
    for dname in args.datasets.split(",") if "tools" in stages else []:
        ds = DATASETS[dname](scale)
        size = ds.size()
        print(f"== {dname}: {size / 1e9:.2f} GB at {ds.path}", file=sys.stderr)
        runs = {t.name: [] for t in tools}
        hws = []
        for rep in range(reps):
            order = tools[rep % len(tools):] + tools[: rep % len(tools)]
            for t in order:
                print(f"   rep {rep + 1}/{reps} {t.name}", file=sys.stderr)
                h0 = time.monotonic()
                limit_now = t.name == "coffer" and (dname in LIMIT_EACH_REP or not hws)
                if limit_now:
                    settle()
                    before = hwlimit(ds.path, breakdown=not hws)
                h1 = time.monotonic()
                runs[t.name].append(measure(t, ds, warmed=limit_now))
                m = runs[t.name][-1]
                spent["tools_measure_calls"] += m["measure_wall_s"]
                for k, v in m["overhead_s"].items():
                    overhead[k] = overhead.get(k, 0.0) + v
                spent["tools_timed_steps"] += m["first_s"] + m["unchanged_s"] + m["changed_s"] + m["restore_s"]
                h2 = time.monotonic()
                spent["hwlimit"] += h1 - h0
                if t.name == "coffer":
                    # The hardware limit of this repetition: measured just before and just
                    # after Coffer's run (page-cache read of the whole dataset, and the
                    # single-pass pipeline cost over all cores on its first whole files up
                    # to 1 GiB: all of the large image, one 2 GiB file), and
                    # averaged, so that a quiet or busy minute of the host on one side of
                    # the run weighs half (LIMIT_EACH_REP; the others before the first run
                    # only, that limit serving every repetition).
                    if limit_now:
                        settle()
                        after = hwlimit(ds.path) if dname in LIMIT_EACH_REP else None
                        hws.append(mean_limit(before, after))
                    spent["hwlimit"] += time.monotonic() - h2
                    r, hw = runs["coffer"][-1], hws[-1]
                    gbps = size / r["first_s"] / 1e9
                    r["hw_limit_gbps"] = hw["hardware_limit_gbps"]
                    r["fraction_of_hw_limit"] = gbps / hw["hardware_limit_gbps"]
                    # Against the lower of the read rate and the pipeline rate (the limit
                    # before 2026-12-03, as if reading cost no CPU), for comparison.
                    r["fraction_of_min_read_pipeline"] = gbps / hw["read_or_pipeline_min_gbps"]
        med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "overhead_s"}
               for n, rs in runs.items() if rs}
        settle()
        hw = sorted(hws, key=lambda h: h["hardware_limit_gbps"])[len(hws) // 2] if hws else hwlimit(ds.path)
        entry = {"bytes": size, "hardware": hw, "hardware_per_rep": hws, "median": med, "runs": runs}
        if "coffer" in med:
            c = med["coffer"]
            entry["coffer_first_gbps"] = size / c["first_s"] / 1e9
            # Median over repetitions of (throughput / that repetition's limit).
            entry["coffer_fraction_of_hw_limit"] = c["fraction_of_hw_limit"]
            entry["coffer_fraction_of_min_read_pipeline"] = c["fraction_of_min_read_pipeline"]
            entry["coffer_vs"] = {
                n: {"first_speedup": m["first_s"] / c["first_s"], "unchanged_speedup": m["unchanged_s"] / c["unchanged_s"],
                    "restore_speedup": m["restore_s"] / c["restore_s"], "stored_ratio": c["stored"] / m["stored"],
                    "rss_ratio": c["peak_rss"] / m["peak_rss"]}
                for n, m in med.items() if n != "coffer"}
        results["datasets"][dname] = entry

    if "rotation" in stages and os.path.exists(COFFER):
        print("== key rotation: vault holding 1 GiB vs empty vault", file=sys.stderr)
        r0 = time.monotonic()
        results["rotation"] = rotation(scale, reps)
        spent["rotation"] = time.monotonic() - r0
    if "keyvault" in stages or "keyvault-tmpfs" in stages:
        k0 = time.monotonic()
        results["keyvault"] = {}
        homes = ([("disk", WORK)] if "keyvault" in stages else []) + (
            [("tmpfs", "/dev/shm")] if "keyvault-tmpfs" in stages and os.path.isdir("/dev/shm") else [])
        for label, d in homes:
            print(f"== key vault operations, Coffer home on {label} ({d})", file=sys.stderr)
            # On tmpfs (what the durable audit write costs, by difference) RSA-2048 alone:
            # the size where that cost weighs most.
            sizes = ["--sizes", "2048"] if label == "tmpfs" else []
            results["keyvault"][label] = json.loads(subprocess.run(
                [COFFER_BENCH, "keyvault-ops", "--secs", "0.5" if args.quick else "1.5", "--dir", d, *sizes],
                check=True, stdout=subprocess.PIPE).stdout)
        spent["keyvault"] = time.monotonic() - k0
    results["index_memory"] = json.loads(
        subprocess.run([COFFER_BENCH, "index-memory", "10000000"], check=True, stdout=subprocess.PIPE).stdout)
    results["elapsed_s"] = time.monotonic() - started
    # Every dataset, tool and stage at the sizes and repetitions: the run-time target applies.
    results["complete"] = (not args.quick and args.scale == 1.0 and reps >= 3 and not missing
                           and set(args.datasets.split(",")) == set(DATASETS) and len(tools) == len(TOOLS)
                           and {"tools", "rotation", "keyvault"} <= set(stages))
    spent["other"] = results["elapsed_s"] - sum(v for k, v in spent.items() if k != "tools_timed_steps")
    results["time_spent_s"] = spent
    results["tools_overhead_s"] = overhead
    results["targets"] = targets(results)
    out_dir = os.path.join(ROOT, "bench/out")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print_table(results)


def targets(res):
    """Issue 5's targets, each with its figure from this run and whether it is met; a target
    whose figures were not measured (a dataset, tool or stage left out) is left out."""
    out = []

    def add(what, figure, met):
        out.append({"target": what, "figure": figure, "met": bool(met)})

    ds = res["datasets"]
    for d in ("kernel", "large"):
        vs = ds.get(d, {}).get("coffer_vs", {})
        for peer, factor in (("restic", 2), ("borg", 4), ("rustic", 1), ("bupstash", 1)):
            if peer in vs:
                x = vs[peer]["first_speedup"]
                add(f"{d}: first backup {'faster than' if factor == 1 else f'>= {factor}x'} {peer}", f"x{x:.2f}",
                    x > factor if factor == 1 else x >= factor)
    if "coffer_fraction_of_hw_limit" in ds.get("large", {}):
        f = ds["large"]["coffer_fraction_of_hw_limit"]
        add("large: first backup >= 70% of the hardware limit", f"{100 * f:.1f}%", f >= 0.70)
    for d in ("kernel", "small"):
        x = ds.get(d, {}).get("coffer_vs", {}).get("restic", {}).get("unchanged_speedup")
        if x is not None:
            add(f"{d}: unchanged backup <= 1/2 restic's time", f"x{x:.2f}", x >= 2)
    for d, e in ds.items():
        r = e.get("coffer_vs", {}).get("restic")
        if r:
            add(f"{d}: restore >= 1.5x restic", f"x{r['restore_speedup']:.2f}", r["restore_speedup"] >= 1.5)
            add(f"{d}: stored <= restic", f"{r['stored_ratio']:.2f}", r["stored_ratio"] <= 1)
            add(f"{d}: peak RSS <= restic", f"{r['rss_ratio']:.2f}", r["rss_ratio"] <= 1)
    if "coffer" in ds.get("large", {}).get("median", {}):
        f = ds["large"]["median"]["coffer"]["changed_added"] / ds["large"]["bytes"]
        add("large: the second version adds <= 3% of its size", f"{100 * f:.1f}%", f <= 0.03)
    if "index_memory" in res:
        b = res["index_memory"]["bytes_per_chunk"]
        add("index memory <= 64 B/chunk", f"{b:.1f}", b <= 64)
    for x in res.get("keyvault", {}).get("disk", {}).get("summary", []):
        b = x.get("over_both_cores")
        if b:
            add(f"key vault RSA-{x['bits']} unwrap >= 90% of raw", f"{100 * b['unwrap']:.1f}%", b["unwrap"] >= 0.90)
    if res.get("complete"):
        m = res["elapsed_s"] / 60
        add("whole run < 20 minutes (this harness; bench/run's build and installs not counted)", f"{m:.1f} min", m < 20)
    return out


def callers_label(c):
    """How the Coffer callers of a key vault figure were arranged (`by_callers` entry)."""
    if c.get("pipeline_depth"):
        return f"{c['coffer_callers']} pipelined workers ({c['pipeline_depth']} calls begun each)"
    return f"{c['coffer_callers']} callers"


def print_table(res):
    print(f"\nCoffer benchmark {res['date']} ({res['cores']} cores, median of {res['reps']}, dataset scale "
          f"{res.get('scale', 1.0)}, {res.get('elapsed_s', 0) / 60:.1f} min)")
    sp = res.get("time_spent_s")
    if sp:
        print(f"time (min): tools' timed steps {sp['tools_timed_steps'] / 60:.1f} of their runs "
              f"{sp['tools_measure_calls'] / 60:.1f} (with set-up, warming, syncs, sizes, clean-up); "
              f"hwlimit {sp['hwlimit'] / 60:.1f}; rotation {sp['rotation'] / 60:.1f}; key vault "
              f"{sp['keyvault'] / 60:.1f}; other {sp['other'] / 60:.1f}")
    oh = res.get("tools_overhead_s")
    if oh:
        print("outside the tools' timed steps (s): " + ", ".join(f"{k} {v:.0f}" for k, v in oh.items()))
    if res["missing_tools"]:
        print(f"not installed: {', '.join(res['missing_tools'])}")
    for dname, e in res["datasets"].items():
        med = e["median"]
        names = list(med)
        how = ("median repetition, mean of before and after Coffer's run" if e["hardware"].get("after")
               else "measured before Coffer's first run")
        print(f"\n[{dname}] {e['bytes'] / 1e9:.2f} GB; hardware limit ({how}) {e['hardware']['hardware_limit_gbps']:.2f} GB/s "
              f"(page cache read {e['hardware']['page_cache_read_gbps']:.2f} on one core, pipeline on {e['hardware']['threads']} cores "
              f"{e['hardware']['pipeline_all_cores_gbps']:.2f}, both on the same cores)")
        print(f"{'':24}" + "".join(f"{n:>12}" for n in names))
        rows = [("first backup (s)", "first_s", "{:.2f}"), ("unchanged backup (s)", "unchanged_s", "{:.2f}"),
                ("backup after change (s)", "changed_s", "{:.2f}"), ("added by change (MB)", "changed_added", "{:.1f}"),
                ("restore (s)", "restore_s", "{:.2f}"), ("stored (MB)", "stored", "{:.1f}"),
                ("peak RSS (MB)", "peak_rss", "{:.0f}"), ("load at start", "load1", "{:.1f}")]
        for label, k, fmt in rows:
            vals = [med[n][k] / (1e6 if k in ("changed_added", "stored", "peak_rss") else 1) for n in names]
            print(f"{label:24}" + "".join(f"{fmt.format(v):>12}" for v in vals))
        if "coffer_vs" in e:
            per_rep = ", ".join(f"{100 * r['fraction_of_hw_limit']:.0f}%" for r in e["runs"]["coffer"] if "fraction_of_hw_limit" in r)
            spread = ", ".join(f"{h['before']['hardware_limit_gbps']:.2f}/"
                               + (f"{h['after']['hardware_limit_gbps']:.2f}" if h.get("after") else "-")
                               for h in e["hardware_per_rep"] if "before" in h)
            print(f"coffer first backup {e['coffer_first_gbps']:.2f} GB/s = {100 * e['coffer_fraction_of_hw_limit']:.0f}% of the "
                  f"hardware limit (median of each repetition's fraction: {per_rep}; "
                  f"{100 * e['coffer_fraction_of_min_read_pipeline']:.0f}% of the lower of read and pipeline rates; "
                  f"limit before/after " + ("each run" if len(e["hardware_per_rep"]) > 1 else "the first run")
                  + f", GB/s: {spread})")
            for n, v in e["coffer_vs"].items():
                print(f"  vs {n:9} first x{v['first_speedup']:.2f}  unchanged x{v['unchanged_speedup']:.2f}  "
                      f"restore x{v['restore_speedup']:.2f}  stored {v['stored_ratio']:.2f}  RSS {v['rss_ratio']:.2f}")
    if "rotation" in res:
        r = res["rotation"]
        print(f"\nkey rotation (CMK, RSA-{r['key_size']}, versionless key URI): `keyvault key rotate` + the next "
              f"`backup-vault show` (rewrap), median of {len(r['runs']['empty'])}")
        print(f"{'':24}{'rotate (s)':>12}{'show+rewrap':>12}{'total (s)':>12}{'show alone':>12}")
        for label, name in (("1gib", f"vault {r['data_bytes'] / 2**30:.2f} GiB"), ("empty", "empty vault")):
            m = r["median"][label]
            print(f"{name:24}{m['rotate_s']:>12.3f}{m['show_rewrap_s']:>12.3f}{m['rotate_and_rewrap_s']:>12.3f}"
                  f"{m['show_s']:>12.3f}")
        print(f"{r['data_bytes'] / 2**30:.2f} GiB / empty: total x{r['ratio_1gib_over_empty']:.2f}, rewrap "
              f"x{r['rewrap_ratio_1gib_over_empty']:.2f} (no data is re-encrypted; backing that data up took "
              f"{r['backup_s']:.2f} s; rotate's time is mostly RSA key generation)")
    for label, kv in res.get("keyvault", {}).items():
        f = kv["durable_append_4k"]
        print(f"\nkey vault {kv['algorithm']} ops/s, Coffer home on {label} ({kv['home']}; 4 KiB append + fsync "
              f"p50 {f['p50_us']:.0f} us): Coffer wrapKey/unwrapKey as a CMK backup vault calls them "
              f"(authorised, audited) vs raw aws-lc-rs")
        print(f"{'':10}{'threads':>8}{'wrapKey':>10}{'raw enc':>10}{'unwrapKey':>10}{'raw dec':>10}{'unwrap %':>9}"
              f"{'p50/p99 unwrap us':>20}{'p50/p99 raw dec us':>20}")
        rows = {(r["bits"], r["threads"], r["path"], r["op"]): r for r in kv["results"]}
        raw_threads = kv.get("threads_all_cores")
        for bits, threads, path, _ in sorted(k for k in rows if k[3] == "unwrapKey"):
            u = rows[(bits, threads, path, "unwrapKey")]
            w = rows.get((bits, threads, path, "wrapKey"))
            # Raw RSA is measured at one thread a core; Coffer's rows with more
            # concurrent callers than cores compare with raw at all cores.
            raw = threads if (bits, threads, "raw", "private-decrypt") in rows else raw_threads
            d, e = rows[(bits, raw, "raw", "private-decrypt")], rows[(bits, raw, "raw", "public-encrypt")]
            mark = "" if raw == threads else f" (vs raw at {raw})"
            # Pipelined workers: p50/p99 are of a call (begin one, finish the oldest).
            who = f"{threads}" if path == "coffer" else f"{threads}x{kv.get('pipeline_depth')}p"
            wrap = f"{w['ops_per_s']:.0f}" if w else "-"
            print(f"{'RSA-' + str(bits):10}{who:>8}{wrap:>10}"
                  f"{e['ops_per_s']:>10.0f}{u['ops_per_s']:>10.0f}{d['ops_per_s']:>10.0f}"
                  f"{100 * u['ops_per_s'] / d['ops_per_s']:>8.0f}%{u['p50_us']:>11.0f}/{u['p99_us']:<8.0f}"
                  f"{d['p50_us']:>11.0f}/{d['p99_us']:<8.0f}{mark}")
        for x in kv.get("summary", []):
            b = x.get("over_both_cores")
            if b:
                each = ", ".join(f"{callers_label(c)} {100 * c['unwrap']:.0f}%" for c in b.get("by_callers", []))
                print(f"RSA-{x['bits']} over both cores (Coffer / raw at {b['raw_threads']} threads, median of "
                      f"{b['rounds']} alternating rounds): unwrap {100 * b['unwrap']:.0f}% (best; {each}), "
                      f"wrap {100 * b['wrap']:.0f}%")
    im = res["index_memory"]
    print(f"\nindex memory: {im['bytes_per_chunk']:.1f} bytes/chunk at {im['chunks']:,} chunks "
          f"= {im['bytes_per_tib_unique_at_default_chunk'] / 2**30:.2f} GiB per TiB of unique data at 64 KiB chunks")
    t = res.get("targets") or targets(res)
    if t:
        missed = [x for x in t if not x["met"]]
        print(f"\ntargets (issue 5): {len(t) - len(missed)} of {len(t)} met" + ("; missed:" if missed else ""))
        for x in missed:
            print(f"  {x['target']}: {x['figure']}")


if __name__ == "__main__":
    main()

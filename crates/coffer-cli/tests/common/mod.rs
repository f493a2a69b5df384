//! Shared black-box test harness: runs the built `coffer` binary against a
//! temporary home directory and parses its output.

#![allow(dead_code, unreachable_pub)]

use std::{
    fs,
    io::{Read, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long one `coffer` invocation may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// The result of one `coffer` run.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// stdout parsed as JSON (`Value::Null` if empty or not JSON).
    pub json: Value,
    pub stderr: String,
}

impl Out {
    /// Asserts success and returns the JSON result.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!(
            self.status.success(),
            "coffer failed ({:?})\nstdout: {}\nstderr: {}",
            self.status,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        &self.json
    }

    /// Asserts failure with exit status 1 and returns the JSON error object
    /// (`{"code","message",...}`) printed on stderr.
    #[track_caller]
    pub fn err(&self) -> Value {
        assert_eq!(
            self.status.code(),
            Some(1),
            "expected exit status 1\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        let v: Value = serde_json::from_str(self.stderr.trim()).unwrap_or_else(|e| {
            panic!("stderr is not a JSON error envelope ({e}): {}", self.stderr)
        });
        let e = v
            .get("error")
            .cloned()
            .expect("error envelope has an `error` object");
        assert!(e["code"].is_string(), "{v}");
        assert!(e["message"].is_string(), "{v}");
        e
    }

    /// Asserts failure and returns the error code.
    #[track_caller]
    pub fn code(&self) -> String {
        self.err()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// A `coffer` instance in a temporary home directory.
pub struct Coffer {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub master_key_file: Option<PathBuf>,
}

impl Coffer {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        Self {
            dir,
            home,
            master_key_file: None,
        }
    }

    /// A scratch path inside the test's temporary directory (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_coffer"));
        c.env_remove("COFFER_HOME")
            .env_remove("COFFER_MASTER_KEY_FILE")
            .arg("--home")
            .arg(&self.home);
        if let Some(k) = &self.master_key_file {
            c.arg("--master-key-file").arg(k);
        }
        c.args(args);
        c
    }

    /// Runs `coffer --home HOME ARGS` with empty stdin.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_with(self.command(args), None)
    }

    /// Runs `coffer --home HOME ARGS` feeding `input` on stdin.
    #[track_caller]
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Out {
        self.run_with(self.command(args), Some(input.to_vec()))
    }

    #[track_caller]
    pub fn run_with(&self, mut cmd: Command, input: Option<Vec<u8>>) -> Out {
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn coffer");
        let feeder = input.map(|data| {
            let mut stdin = child.stdin.take().expect("stdin");
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            })
        });
        let mut so = child.stdout.take().expect("stdout");
        let mut se = child.stderr.take().expect("stderr");
        let t_out = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = so.read_to_end(&mut b);
            b
        });
        let t_err = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = se.read_to_end(&mut b);
            b
        });
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("coffer did not finish within {TIMEOUT:?}: {cmd:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(f) = feeder {
            let _ = f.join();
        }
        let stdout = t_out.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
        let json = serde_json::from_slice(&stdout).unwrap_or(Value::Null);
        Out {
            status,
            stdout,
            json,
            stderr,
        }
    }

    /// Creates a vault in the default group and returns its JSON.
    #[track_caller]
    pub fn vault(&self, name: &str) -> Value {
        self.run(&["backup-vault", "create", "-v", name])
            .ok()
            .clone()
    }

    /// Creates a Directory backup instance.
    #[track_caller]
    pub fn dir_instance(&self, vault: &str, name: &str, dir: &Path) -> Value {
        self.run(&[
            "backup-instance",
            "create",
            "-v",
            vault,
            "-n",
            name,
            "--datasource-type",
            "Directory",
            "--datasource-path",
            dir.to_str().expect("utf-8 path"),
        ])
        .ok()
        .clone()
    }

    /// Creates a Stream backup instance.
    #[track_caller]
    pub fn stream_instance(&self, vault: &str, name: &str) -> Value {
        self.run(&[
            "backup-instance",
            "create",
            "-v",
            vault,
            "-n",
            name,
            "--datasource-type",
            "Stream",
        ])
        .ok()
        .clone()
    }
}

/// The id of the recovery point in an `adhoc-backup` result.
pub fn rp_id(backup_result: &Value) -> String {
    backup_result["recoveryPoint"]["properties"]["recoveryPointId"]
        .as_str()
        .expect("recovery point id")
        .to_owned()
}

impl Coffer {
    /// `backup-instance adhoc-backup`; asserts success and returns the result.
    #[track_caller]
    pub fn backup(&self, vault: &str, instance: &str) -> Value {
        self.run(&[
            "backup-instance",
            "adhoc-backup",
            "-v",
            vault,
            "-n",
            instance,
        ])
        .ok()
        .clone()
    }

    /// The argument list of `backup-instance restore` with the default recovery option.
    pub fn restore_args<'a>(
        vault: &'a str,
        instance: &'a str,
        rp: &'a str,
        target: &'a str,
    ) -> Vec<&'a str> {
        vec![
            "backup-instance",
            "restore",
            "-v",
            vault,
            "-n",
            instance,
            "--recovery-point",
            rp,
            "--target",
            target,
        ]
    }

    /// `backup-instance restore … --target TARGET` (FailIfExists).
    #[track_caller]
    pub fn restore(&self, vault: &str, instance: &str, rp: &str, target: &Path) -> Out {
        self.run(&Self::restore_args(
            vault,
            instance,
            rp,
            target.to_str().expect("utf-8 path"),
        ))
    }
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough for tests.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One entry of a [`Snapshot`]: relative path, kind (`file`, `dir`, `symlink`),
/// mode, mtime seconds (files), content or link target.
pub type Entry = (PathBuf, String, u32, i64, Vec<u8>);

/// A directory tree as comparable data, see [`snapshot`].
pub type Snapshot = Vec<Entry>;

/// Every entry under `root`, sorted by path.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).expect("metadata");
            let rel = p.strip_prefix(root).expect("prefix").to_path_buf();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).expect("readlink");
                out.push((
                    rel,
                    "symlink".into(),
                    0,
                    0,
                    t.into_os_string().into_encoded_bytes(),
                ));
            } else if m.is_dir() {
                out.push((rel, "dir".into(), mode, 0, Vec::new()));
                walk(root, &p, out);
            } else {
                out.push((
                    rel,
                    "file".into(),
                    mode,
                    m.mtime(),
                    fs::read(&p).expect("read"),
                ));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// The SoftHSM2 PKCS#11 module.
pub const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The user PIN of [`softhsm_token`]: not hex digits, so that a test can check it
/// never appears in output (a random GUID can contain any run of hex digits).
pub const TOKEN_PIN: &str = "pin-Rq7w";

/// A fresh SoftHSM2 token `coffer-test` (user PIN [`TOKEN_PIN`]) in the test's directory:
/// (SOFTHSM2_CONF path, PIN file). `None` (test skipped) when SoftHSM2 is not installed.
pub fn softhsm_token(c: &Coffer) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    if !std::path::Path::new(SOFTHSM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs softhsm2 (.ci/run installs it)"
        );
        eprintln!("skipping: SoftHSM2 is not installed");
        return None;
    }
    let tokens = c.path("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = c.path("softhsm2.conf");
    let text = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
        tokens.display()
    );
    std::fs::write(&conf, text).unwrap();
    let st = std::process::Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "coffer-test",
            "--pin",
            TOKEN_PIN,
            "--so-pin",
            "8765",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let pin = c.path("pin");
    std::fs::write(&pin, format!("{TOKEN_PIN}\n")).unwrap();
    Some((conf, pin))
}

//! Progress bars on stderr (bytes, files, rate, ETA), shown only when stderr is a
//! terminal; otherwise progress is ignored and only the result is printed.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use coffer_control::{NoProgress, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress sink: an indicatif bar, or nothing.
pub(crate) enum Bar {
    /// Drawing on stderr.
    Shown(Arc<BarProgress>),
    /// Not a terminal.
    Hidden(NoProgress),
}

impl Bar {
    pub(crate) fn as_progress(&self) -> &dyn Progress {
        match self {
            Bar::Shown(b) => b.as_ref(),
            Bar::Hidden(n) => n,
        }
    }

    /// For directory backups, whose size the engine learns only as it goes: walks
    /// `dir` in the background and sets the totals (for the bar and its ETA) unless
    /// the engine set them first.
    pub(crate) fn estimate_directory(&self, dir: PathBuf) {
        if let Bar::Shown(b) = self {
            let b = Arc::clone(b);
            std::thread::spawn(move || {
                let (mut bytes, mut files) = (0u64, 0u64);
                walk(&dir, &mut bytes, &mut files, &b.done);
                if !b.done.load(Ordering::Relaxed) && !b.total_set.load(Ordering::Relaxed) {
                    b.apply_total(Some(bytes), Some(files));
                }
            });
        }
    }

    /// Clears the bar.
    pub(crate) fn finish(&self) {
        if let Bar::Shown(b) = self {
            b.done.store(true, Ordering::Relaxed);
            b.bar.finish_and_clear();
        }
    }
}

/// A progress bar for an operation called `what`, if stderr is a terminal.
pub(crate) fn for_stderr(what: &'static str) -> Bar {
    if !std::io::stderr().is_terminal() {
        return Bar::Hidden(NoProgress);
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(spinner_style());
    bar.set_prefix(what);
    bar.enable_steady_tick(Duration::from_millis(120));
    Bar::Shown(Arc::new(BarProgress {
        bar,
        files: AtomicU64::new(0),
        total_files: AtomicU64::new(0),
        total_set: AtomicBool::new(false),
        done: AtomicBool::new(false),
    }))
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} {prefix} {bytes} ({binary_bytes_per_sec}) {msg} [{elapsed_precise}]",
    )
    .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, ETA {eta}) {msg}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// The indicatif-backed [`Progress`].
pub(crate) struct BarProgress {
    bar: ProgressBar,
    files: AtomicU64,
    total_files: AtomicU64,
    /// The engine reported a byte total itself.
    total_set: AtomicBool,
    /// The operation finished (stop estimating).
    done: AtomicBool,
}

impl BarProgress {
    fn apply_total(&self, bytes: Option<u64>, files: Option<u64>) {
        if let Some(b) = bytes {
            self.bar.set_length(b);
            self.bar.set_style(bar_style());
        }
        if let Some(f) = files {
            self.total_files.store(f, Ordering::Relaxed);
        }
        self.update_message();
    }

    fn update_message(&self) {
        let files = self.files.load(Ordering::Relaxed);
        let total = self.total_files.load(Ordering::Relaxed);
        if total > 0 {
            self.bar.set_message(format!("{files}/{total} files"));
        } else {
            self.bar.set_message(format!("{files} files"));
        }
    }
}

impl Progress for BarProgress {
    fn set_total(&self, bytes: Option<u64>, files: Option<u64>) {
        if bytes.is_some() {
            self.total_set.store(true, Ordering::Relaxed);
        }
        self.apply_total(bytes, files);
    }

    fn advance(&self, bytes: u64, files: u64) {
        self.bar.inc(bytes);
        if files > 0 {
            self.files.fetch_add(files, Ordering::Relaxed);
            self.update_message();
        }
    }
}

/// Sums the sizes and count of regular files under `dir` (not following symlinks).
fn walk(dir: &Path, bytes: &mut u64, files: &mut u64, stop: &AtomicBool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            walk(&entry.path(), bytes, files, stop);
        } else if ft.is_file() {
            *files += 1;
            *bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
}

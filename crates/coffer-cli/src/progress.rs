//! Progress bars on stderr (bytes, files, rate, ETA), shown only when stderr is a
//! terminal; otherwise progress is ignored and only the result is printed.

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use coffer_control::{NoProgress, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress sink: an indicatif bar, or nothing.
pub(crate) enum Bar {
    /// Drawing on stderr.
    Shown(BarProgress),
    /// Not a terminal.
    Hidden(NoProgress),
}

impl Bar {
    pub(crate) fn as_progress(&self) -> &dyn Progress {
        match self {
            Bar::Shown(b) => b,
            Bar::Hidden(n) => n,
        }
    }

    /// Clears the bar.
    pub(crate) fn finish(&self) {
        if let Bar::Shown(b) = self {
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
    Bar::Shown(BarProgress {
        bar,
        files: AtomicU64::new(0),
        total_files: AtomicU64::new(0),
    })
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
}

impl BarProgress {
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
        if let Some(b) = bytes {
            self.bar.set_length(b);
            self.bar.set_style(bar_style());
        }
        if let Some(f) = files {
            self.total_files.store(f, Ordering::Relaxed);
        }
        self.update_message();
    }

    fn advance(&self, bytes: u64, files: u64) {
        self.bar.inc(bytes);
        if files > 0 {
            self.files.fetch_add(files, Ordering::Relaxed);
            self.update_message();
        }
    }
}

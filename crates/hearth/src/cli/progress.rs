//! How a pull shows its progress on stderr: one bar per layer (bytes, rate) on a terminal, one
//! line per step otherwise, nothing with `--quiet`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use hearth_engine::{human_size, Digest, NoReporter, PullReporter};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The reporter for this process's stderr.
pub fn pull_reporter(quiet: bool) -> Box<dyn PullReporter> {
    if quiet {
        Box::new(NoReporter)
    } else if std::io::stderr().is_terminal() {
        Box::new(BarReporter::default())
    } else {
        Box::new(LineReporter)
    }
}

/// One line per step on stderr; stdout stays for the digest.
struct LineReporter;

impl PullReporter for LineReporter {
    fn on_layer_start(&self, digest: &Digest, size: u64) {
        eprintln!("{}: downloading {}", digest.short(), human_size(size));
    }

    fn on_layer_cached(&self, digest: &Digest, _size: u64) {
        eprintln!("{}: already cached", digest.short());
    }

    fn on_layer_progress(&self, _: &Digest, _: u64) {}

    fn on_layer_done(&self, digest: &Digest) {
        eprintln!("{}: done", digest.short());
    }

    fn on_build(&self, digest: &Digest) {
        eprintln!("{}: building base image", digest.short());
    }
}

/// indicatif bars, one per layer, drawn on stderr.
struct BarReporter {
    bars: MultiProgress,
    layers: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Default for BarReporter {
    fn default() -> Self {
        BarReporter {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            layers: Mutex::new(HashMap::new()),
        }
    }
}

impl BarReporter {
    fn add(&self, digest: &Digest, bar: ProgressBar) {
        let bar = self.bars.add(bar.with_prefix(digest.short().to_owned()));
        if let Ok(mut layers) = self.layers.lock() {
            layers.insert(digest.clone(), bar);
        }
    }

    fn with_bar(&self, digest: &Digest, f: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.layers.lock().ok().and_then(|l| l.get(digest).cloned()) {
            f(&bar);
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a bad one would be a bug caught by the first pull, and the
    // default style is a fine fallback.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl PullReporter for BarReporter {
    fn on_layer_start(&self, digest: &Digest, size: u64) {
        let bar = ProgressBar::new(size).with_style(
            style("{prefix} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec}")
                .progress_chars("=> "),
        );
        self.add(digest, bar);
    }

    fn on_layer_cached(&self, digest: &Digest, size: u64) {
        let bar = ProgressBar::new(size).with_style(style("{prefix} {msg}"));
        self.add(digest, bar.clone());
        bar.finish_with_message(format!("already cached ({})", human_size(size)));
    }

    fn on_layer_progress(&self, digest: &Digest, bytes: u64) {
        self.with_bar(digest, |bar| bar.set_position(bytes));
    }

    fn on_layer_done(&self, digest: &Digest) {
        self.with_bar(digest, |bar| {
            bar.set_style(style("{prefix} {msg}"));
            bar.finish_with_message(format!(
                "done ({} in {:.1}s)",
                human_size(bar.length().unwrap_or(0)),
                bar.elapsed().as_secs_f64()
            ));
        });
    }

    fn on_build(&self, digest: &Digest) {
        let spinner = ProgressBar::new_spinner()
            .with_style(style("{prefix} {spinner} {msg}"))
            .with_message("building base image");
        self.add(digest, spinner.clone());
        spinner.enable_steady_tick(Duration::from_millis(120));
    }
}

impl Drop for BarReporter {
    fn drop(&mut self) {
        // Whatever is still spinning (the build, or a download cut short by an error) ends here
        // so the terminal gets its cursor back before the error or the digest is printed.
        if let Ok(layers) = self.layers.lock() {
            for bar in layers.values().filter(|b| !b.is_finished()) {
                bar.abandon();
            }
        }
    }
}

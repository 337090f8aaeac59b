//! Progress on long jobs: a bar on a terminal, and a line at every tenth of the work when
//! stderr is a file or a pipe (CI logs, `2> log`), so a long job is never silent.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Jobs shorter than this many steps print no progress lines (they end before one matters).
const MIN_LINED_TOTAL: u64 = 100;

/// The progress of one job of `total` steps.
pub struct Progress {
    bar: ProgressBar,
    label: String,
    unit: &'static str,
    total: u64,
    done: u64,
    next_line: u64,
    started: Instant,
}

impl Progress {
    /// A job called `label` of `total` `unit`s (`"images"`); `show = false` hides it entirely.
    pub fn new(label: &str, total: u64, unit: &'static str, show: bool) -> Self {
        let bar = if show {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{label} [{{elapsed_precise}}] [{{bar:30}}] {{pos}}/{{len}} {unit}, ETA {{eta}} {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self {
            // Lines are printed only for a job that shows progress but has no terminal.
            next_line: if show && bar.is_hidden() && total >= MIN_LINED_TOTAL {
                total.div_ceil(10)
            } else {
                u64::MAX
            },
            bar,
            label: label.to_string(),
            unit,
            total,
            done: 0,
            started: Instant::now(),
        }
    }

    /// `steps` more are done.
    pub fn inc(&mut self, steps: u64) {
        self.done += steps;
        self.bar.inc(steps);
        if self.done >= self.next_line {
            eprintln!(
                "{}: {}/{} {} ({:.0} s)",
                self.label,
                self.done,
                self.total,
                self.unit,
                self.started.elapsed().as_secs_f64()
            );
            let step = self.total.div_ceil(10).max(1);
            self.next_line = (self.done / step + 1) * step;
        }
    }

    /// Sets the message after the bar.
    pub fn message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Prints `line` above the bar, or as a line of its own without a terminal.
    pub fn say(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.abandon();
        }
    }
}

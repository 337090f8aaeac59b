//! What a run shows while it trains: the progress bar, lines above it, and the sample grids.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use super::TrainConfig;
use mcugan_model_tools::picture::{self, GridLayout};

/// Prints a line above the bar, or on stderr when the bar is hidden (not a terminal).
pub(super) fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

pub(super) fn progress_bar(config: &TrainConfig, batches_per_epoch: usize) -> ProgressBar {
    let total = (config.epochs * batches_per_epoch) as u64;
    if !config.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} batches, ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// The reference's sample grid: the batch's first 25 fakes (`values`, row-major
/// `[n, side²]`), 5 per row, min-max normalised.
pub(super) fn save_sample_grid(values: &[f32], side: usize, path: &Path) -> anyhow::Result<()> {
    let pixels = side * side;
    let values = &values[..values.len().min(25 * pixels)];
    let gray = picture::normalize_min_max(values);
    let images: Vec<&[u8]> = gray.chunks(pixels).collect();
    picture::save_png(path, &picture::grid(&images, side, GridLayout::REFERENCE))
}

//! Helpers shared by the host's integration tests.

use std::path::Path;
use std::process::Output;

use mcugan_model_tools::data::{write_split, Dataset, Split};

/// `n` images of bright vertical or horizontal bars (labelled by orientation) as a training
/// split in `dir`.
#[allow(dead_code)] // not every test binary trains
pub fn bars(dir: &Path, n: usize) {
    write_split(dir, Split::Train, &bars_dataset(n)).unwrap();
}

/// The same images as [`bars`], as the test split.
#[allow(dead_code)]
pub fn bars_test_split(dir: &Path, n: usize) {
    write_split(dir, Split::Test, &bars_dataset(n)).unwrap();
}

fn bars_dataset(n: usize) -> Dataset {
    let mut pixels = Vec::with_capacity(n * 784);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let vertical = i % 2 == 0;
        let at = 4 + (i / 2) % 20;
        for y in 0..28 {
            for x in 0..28 {
                let on = if vertical {
                    x == at || x == at + 1
                } else {
                    y == at || y == at + 1
                };
                pixels.push(if on { 255 } else { (i * 7 % 40) as u8 });
            }
        }
        labels.push(u8::from(vertical));
    }
    Dataset {
        rows: 28,
        cols: 28,
        pixels,
        labels,
    }
}

/// Requires a command to have succeeded, showing its stderr when it did not.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

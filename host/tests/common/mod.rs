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
#[allow(dead_code)]
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `mcugan` binary run with `args` in the current directory (backtraces off, one thread).
#[allow(dead_code)]
pub fn mcugan(args: &[&str]) -> Output {
    mcugan_in(Path::new("."), args)
}

/// [`mcugan`] in `dir`.
#[allow(dead_code)]
pub fn mcugan_in(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mcugan"))
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("the binary runs")
}

/// A command's standard error as text.
#[allow(dead_code)]
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Requires a failure whose message contains every one of `words` and no Rust internals.
#[allow(dead_code)]
pub fn assert_refused(output: &Output, words: &[&str]) {
    let text = stderr(output);
    assert!(!output.status.success(), "exit 0; stderr:\n{text}");
    for word in words {
        assert!(text.contains(word), "no {word:?} in:\n{text}");
    }
    for internal in ["panicked", "Some(", "None", "RUST_BACKTRACE"] {
        assert!(!text.contains(internal), "{internal:?} in:\n{text}");
    }
}

/// A path in the repository.
#[allow(dead_code)]
pub fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The shipped int8 digits blob.
#[allow(dead_code)]
pub fn shipped_blob() -> std::path::PathBuf {
    repo("models/mnist-digits/generator-int8.mcg")
}

/// The shipped float digits generator.
#[allow(dead_code)]
pub fn shipped_generator() -> std::path::PathBuf {
    repo("models/mnist-digits/generator.safetensors")
}

/// A path as `&str` (the tests' paths are UTF-8).
#[allow(dead_code)]
pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

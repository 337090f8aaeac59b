//! The data sets a user is promised: the offline digits `cargo xtask setup` makes, and Debian's
//! Fashion-MNIST. Under `cargo xtask test` (which installs both) they must be present; a plain
//! `cargo test` on a machine without them says so and skips.

use std::path::{Path, PathBuf};

use mcugan_e2e::repo_root;
use mcugan_model_tools::data::{load_split, Split};

fn required() -> bool {
    std::env::var_os("MCUGAN_REQUIRE_DATASETS").is_some()
}

fn present(dir: &Path) -> bool {
    if dir.is_dir() {
        return true;
    }
    assert!(
        !required(),
        "{} is missing (run `cargo xtask setup`)",
        dir.display()
    );
    eprintln!(
        "skipped: {} is missing (run `cargo xtask setup`)",
        dir.display()
    );
    false
}

#[test]
fn debian_fashion_mnist_loads() {
    let dir = PathBuf::from("/usr/share/datasets/fashion-mnist");
    if !present(&dir) {
        return;
    }
    let train = load_split(&dir, Split::Train).unwrap();
    let test = load_split(&dir, Split::Test).unwrap();
    assert_eq!((train.len(), train.rows, train.cols), (60_000, 28, 28));
    assert_eq!(test.len(), 10_000);
    assert_eq!(train.class_counts(), vec![6_000; 10]);
}

#[test]
fn the_offline_digits_hold_out_100_of_each() {
    let dir = repo_root().join("data/mnist-digits");
    if !present(&dir) {
        return;
    }
    let train = load_split(&dir, Split::Train).unwrap();
    let test = load_split(&dir, Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (9_000, 1_000));
    assert_eq!(test.class_counts(), vec![100; 10]);
    // Real digits: mostly dark background, some bright strokes.
    let bright = train.pixels.iter().filter(|&&p| p > 200).count() as f64;
    let share = bright / train.pixels.len() as f64;
    assert!((0.05..0.3).contains(&share), "bright pixel share {share}");
}

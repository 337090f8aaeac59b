//! Golden tests: what a user sees must not change when the code moves. The CLI's `--help` texts are compared byte for byte with
//! `tests/golden/help/*.txt`; a short training's losses, for every CPU engine, with
//! `tests/golden/losses-*.csv` to a tolerance that allows another CPU's floating-point order
//! but not a changed step.
//!
//! After a deliberate change, `MCUGAN_BLESS=1 cargo test -p mcugan --test golden` rewrites
//! the files; the diff is then reviewed like code.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_success, bars};

/// Every subcommand, and the top level (`""`).
const COMMANDS: [&str; 12] = [
    "",
    "data",
    "train",
    "quantize",
    "classifier",
    "eval",
    "inspect",
    "simulate",
    "qemu",
    "bench-firmware",
    "sizes",
    "report",
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn blessing() -> bool {
    std::env::var_os("MCUGAN_BLESS").is_some()
}

fn mcugan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mcugan"))
}

/// Compares `actual` with the golden file `name` (or writes it when blessing).
fn check_text(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if blessing() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (MCUGAN_BLESS=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{} changed:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[test]
fn help_texts_are_unchanged() {
    for command in COMMANDS {
        let mut cli = mcugan();
        if !command.is_empty() {
            cli.arg(command);
        }
        let output = cli.arg("--help").output().unwrap();
        assert_success(&output);
        let name = if command.is_empty() {
            "mcugan"
        } else {
            command
        };
        check_text(
            &format!("help/{name}.txt"),
            &String::from_utf8(output.stdout).unwrap(),
        );
    }
}

/// Trains two epochs of 192 bar images (three batches each) and returns `losses.csv`.
fn short_training(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("run");
    bars(&data, 192);
    let output = mcugan()
        .args([
            "train",
            "--epochs",
            "2",
            "--sample-interval",
            "0",
            "--quiet",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert_success(&output);
    std::fs::read_to_string(out.join("losses.csv")).unwrap()
}

/// Compares two loss logs: the same rows, the same counters, losses within `1e-3` relative
/// (a changed step moves them far more; another CPU's summation order far less).
fn check_losses(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if blessing() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (MCUGAN_BLESS=1 writes it)", path.display()));
    let (expected_rows, actual_rows): (Vec<_>, Vec<_>) =
        (expected.lines().collect(), actual.lines().collect());
    assert_eq!(expected_rows.len(), actual_rows.len(), "{name}: rows");
    assert_eq!(expected_rows[0], actual_rows[0], "{name}: header");
    for (e, a) in expected_rows[1..].iter().zip(&actual_rows[1..]) {
        let (e, a): (Vec<&str>, Vec<&str>) = (e.split(',').collect(), a.split(',').collect());
        assert_eq!(e.len(), a.len(), "{name}: columns");
        assert_eq!(e[..3], a[..3], "{name}: epoch, batch, batches_done");
        for (e, a) in e[3..].iter().zip(&a[3..]) {
            let (e, a): (f64, f64) = (e.parse().unwrap(), a.parse().unwrap());
            assert!(
                (e - a).abs() <= 1e-3 * e.abs().max(1e-3),
                "{name}: loss {a} where the golden run had {e}"
            );
        }
    }
}

#[test]
fn short_training_losses_are_unchanged_fused() {
    check_losses("losses-fused.csv", &short_training(&["--engine", "fused"]));
}

#[test]
fn short_training_losses_are_unchanged_candle() {
    check_losses(
        "losses-candle.csv",
        &short_training(&["--engine", "candle"]),
    );
}

#[test]
fn short_training_losses_are_unchanged_small_data_recipe() {
    check_losses(
        "losses-small-data.csv",
        &short_training(&["--recipe", "small-data"]),
    );
}

#[test]
fn short_training_losses_are_unchanged_conditional() {
    check_losses(
        "losses-conditional.csv",
        &short_training(&["--conditional"]),
    );
}

#[test]
fn short_training_losses_are_unchanged_kernels_emulated() {
    check_losses(
        "losses-kernels.csv",
        &short_training(&["--engine", "kernels"]),
    );
}

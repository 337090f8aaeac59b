//! The `kernels` engine through the real `mcugan train`, emulated on the CPU: its loss log
//! matches the fused engine's batch by batch, its checkpoint resumes on the fused engine, and
//! a recipe it does not run is refused with a clear message.

mod common;

use common::assert_success;

use std::path::Path;
use std::process::{Command, Output};

fn train(data: &Path, out: &Path, engine: &str, epochs: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcugan"))
        .args(["train", "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args([
            "--epochs",
            epochs,
            "--batch-size",
            "16",
            "--sample-interval",
            "3",
        ])
        .args(["--seed", "4", "--quiet", "--engine", engine])
        .args(extra)
        .output()
        .unwrap()
}

/// The `(d, g)` losses of a run's log.
fn losses(out: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(out.join("losses.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<f64> = line.split(',').map(|f| f.parse().unwrap()).collect();
            (fields[3], fields[4])
        })
        .collect()
}

#[test]
fn the_kernel_engine_trains_as_the_fused_one_and_hands_over_its_checkpoint() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 72);
    let (kernels, fused) = (work.path().join("kernels"), work.path().join("fused"));
    assert_success(&train(&data, &kernels, "kernels", "2", &[]));
    assert_success(&train(&data, &fused, "fused", "2", &[]));
    let (a, b) = (losses(&kernels), losses(&fused));
    assert_eq!(
        a.len(),
        10,
        "5 batches (the last one short) in each of 2 epochs"
    );
    assert_eq!(a.len(), b.len());
    for (i, ((d1, g1), (d2, g2))) in a.iter().zip(&b).enumerate() {
        assert!(
            (d1 - d2).abs() < 1e-4 && (g1 - g2).abs() < 1e-4,
            "batch {i}: kernels D {d1} G {g1}, fused D {d2} G {g2}"
        );
    }
    assert!(kernels.join("samples/3.png").exists());
    let summary = std::fs::read_to_string(kernels.join("train-summary.json")).unwrap();
    assert!(summary.contains("kernel step, emulated"), "{summary}");

    // The kernel engine's checkpoint continues on the fused engine.
    let output = Command::new(env!("CARGO_BIN_EXE_mcugan"))
        .args([
            "train", "--resume", "--epochs", "3", "--quiet", "--engine", "fused", "--out",
        ])
        .arg(&kernels)
        .output()
        .unwrap();
    assert_success(&output);
    assert_eq!(losses(&kernels).len(), 15);
}

#[test]
fn the_kernel_engine_refuses_recipes_it_does_not_run() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 32);
    let output = train(
        &data,
        &work.path().join("out"),
        "kernels",
        "1",
        &["--recipe", "small-data"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("candle engine"), "{stderr}");
}

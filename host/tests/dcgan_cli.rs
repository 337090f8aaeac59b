//! `mcugan train --arch dcgan` from the command line: it trains, resumes with the run's own
//! networks, refuses what it cannot train, and `eval` reads its 32x32 images (resized for the
//! 28x28 classifier, with the calibration row that shows what the resize alone costs).

mod common;

use common::*;

#[test]
fn dcgan_trains_resumes_and_evaluates_from_the_command_line() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    bars(&data, 32);
    bars_test_split(&data, 32);
    let out = work.path().join("run");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--arch",
            "dcgan",
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--batch-size",
            "16",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        mcugan(&args)
    };
    assert_success(&train(&["--epochs", "1"]));
    // --resume keeps the run's networks; a different --arch is named and ignored.
    let output = mcugan(&[
        "train",
        "--resume",
        "--out",
        s(&out),
        "--epochs",
        "2",
        "--arch",
        "gan",
        "--quiet",
    ]);
    assert_success(&output);
    assert!(
        stderr(&output).contains("dcgan.py's convolutional GAN"),
        "{}",
        stderr(&output)
    );
    let summary = std::fs::read_to_string(out.join("train-summary.json")).unwrap();
    assert!(summary.contains("\"epochs\": 2"), "{summary}");

    // Refused before --force replaces the run.
    let output = train(&["--epochs", "1", "--conditional", "--force"]);
    assert_refused(&output, &["unconditional"]);
    let output = train(&["--epochs", "1", "--engine", "fused", "--force"]);
    assert_refused(&output, &["candle"]);
    assert!(out.join("checkpoint.safetensors").exists());

    let output = mcugan(&[
        "eval",
        s(&out.join("generator.safetensors")),
        "--data",
        s(&data),
        "--classifier",
        s(&repo("models/mnist-digits/classifier.safetensors")),
        "--images",
        "20",
    ]);
    assert_success(&output);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("(32x32, resized to 28x28)"), "{table}");
    assert!(
        table.contains("real train images resized to 32x32 and back"),
        "{table}"
    );
}

//! `mcugan train --arch dcgan` from the command line: it trains, resumes with the run's own
//! networks, refuses what it cannot train, and `eval` reads its 32x32 images (resized for the
//! 28x28 classifier, with the calibration row that shows what the resize alone costs). The
//! compact `--arch dcgan-256k` resumes to the same bytes; `--spec FILE` trains the network a
//! file describes and refuses files that describe none.

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

#[test]
fn a_spec_file_trains_its_network_and_bad_ones_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    bars(&data, 28);
    let out = work.path().join("run");
    let spec = work.path().join("spec.json");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--batch-size",
            "16",
            "--epochs",
            "1",
            "--quiet",
            "--force",
        ];
        args.extend_from_slice(extra);
        mcugan(&args)
    };
    // A narrow 28x28 network with transposed blocks, trained with the small-data recipe.
    std::fs::write(
        &spec,
        r#"{"generator": {"latent": 100, "init_side": 7, "channels": [8, 8, 4],
            "first_norm_eps": 1e-5, "norm_eps": 0.8, "kernel": 3, "image_channels": 1,
            "upsampling": "transposed"},
          "discriminator": {"channels": [4, 8], "dropout": 0.25, "norm_eps": 0.8, "kernel": 3}}"#,
    )
    .unwrap();
    assert_success(&train(&["--spec", s(&spec), "--recipe", "small-data"]));
    let generator = std::fs::read(out.join("generator.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&generator).unwrap();
    // ConvTranspose2d's weight, PyTorch's layout [in, out, 4, 4].
    assert_eq!(
        tensors.tensor("conv_blocks.2.weight").unwrap().shape(),
        &[8, 8, 4, 4]
    );

    // Not JSON, not a spec, a spec that cannot be built, and --spec with --arch.
    std::fs::write(&spec, "not json").unwrap();
    assert_refused(&train(&["--spec", s(&spec)]), &["is not a GAN spec"]);
    std::fs::write(&spec, r#"{"generator": {}}"#).unwrap();
    assert_refused(&train(&["--spec", s(&spec)]), &["is not a GAN spec"]);
    std::fs::write(
        &spec,
        r#"{"generator": {"latent": 100, "init_side": 7, "channels": [8, 8, 4],
            "first_norm_eps": 1e-5, "norm_eps": 0.8, "kernel": 4, "image_channels": 1},
          "discriminator": {"channels": [4, 8], "dropout": 0.25, "norm_eps": 0.8, "kernel": 3}}"#,
    )
    .unwrap();
    assert_refused(&train(&["--spec", s(&spec)]), &["a kernel of 4"]);
    assert_refused(
        &train(&["--spec", s(&spec), "--arch", "dcgan"]),
        &["cannot be used with"],
    );
    let missing = work.path().join("missing.json");
    assert_refused(&train(&["--spec", s(&missing)]), &["missing.json"]);
}

#[test]
fn the_compact_arch_trains_and_resumes_to_the_same_bytes_from_the_command_line() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    bars(&data, 28);
    let train = |out: &std::path::Path, epochs: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--arch",
            "dcgan-256k",
            "--data",
            s(&data),
            "--out",
            s(out),
            "--batch-size",
            "16",
            "--epochs",
            epochs,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        mcugan(&args)
    };
    let straight = work.path().join("straight");
    assert_success(&train(&straight, "2", &[]));
    let resumed = work.path().join("resumed");
    assert_success(&train(&resumed, "1", &[]));
    assert_success(&train(&resumed, "2", &["--resume"]));
    let generator =
        |dir: &std::path::Path| std::fs::read(dir.join("generator.safetensors")).unwrap();
    assert!(
        generator(&straight) == generator(&resumed),
        "a resumed dcgan-256k run differs from a straight one"
    );
}

//! Safe by default, through the real binary: nothing a user made is overwritten without asking,
//! no broken result exits 0, a run resumes from anywhere, long jobs are bounded, and the image
//! folders other tools read are written byte for byte the same.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::assert_success;

use common::{assert_refused, mcugan, mcugan_in, repo, s, shipped_blob, shipped_generator, stderr};

/// A short training run's arguments (96 bar images, batch 16, 1 epoch).
fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        s(data),
        "--out",
        s(out),
        "--batch-size",
        "16",
        "--quiet",
    ];
    if !extra.contains(&"--sample-interval") {
        args.extend_from_slice(&["--sample-interval", "0"]);
    }
    if !extra.contains(&"--epochs") {
        args.extend_from_slice(&["--epochs", "1"]);
    }
    args.extend_from_slice(extra);
    mcugan(&args)
}

#[test]
fn a_finished_run_is_not_replaced_without_force() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 96);
    let out = work.path().join("run");
    assert_success(&train(&data, &out, &["--sample-interval", "2"]));
    let generator = std::fs::read(out.join("generator.safetensors")).unwrap();
    std::fs::write(out.join("mine.mcg"), b"kept").unwrap();

    assert_refused(
        &train(&data, &out, &["--seed", "9"]),
        &["already holds a training run", "--resume", "--force"],
    );
    assert_eq!(
        std::fs::read(out.join("generator.safetensors")).unwrap(),
        generator
    );

    let replaced = train(&data, &out, &["--seed", "9", "--force"]);
    assert_success(&replaced);
    assert!(
        stderr(&replaced).contains("mine.mcg"),
        "{}",
        stderr(&replaced)
    );
    assert!(!out.join("samples").read_dir().unwrap().any(|_| true));
    assert_ne!(
        std::fs::read(out.join("generator.safetensors")).unwrap(),
        generator
    );
}

#[test]
fn the_classifier_default_is_outside_models_and_a_classifier_is_kept() {
    let help = mcugan(&["classifier", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("runs/classifier/classifier.safetensors"),
        "{text}"
    );
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("classifier.safetensors");
    std::fs::write(&out, b"mine").unwrap();
    let output = mcugan(&["classifier", "--out", s(&out), "--data", "/nonexistent"]);
    assert_refused(&output, &["exists", "--force"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
}

#[test]
fn an_output_is_never_one_of_the_inputs() {
    let work = tempfile::tempdir().unwrap();
    let generator = work.path().join("g.safetensors");
    std::fs::copy(shipped_generator(), &generator).unwrap();
    let before = std::fs::read(&generator).unwrap();
    let output = mcugan(&[
        "quantize",
        "--generator",
        s(&generator),
        "--out",
        &format!("{}/./g.safetensors", work.path().display()),
        "--force",
    ]);
    assert_refused(&output, &["--generator", "choose another --out"]);
    assert_eq!(std::fs::read(&generator).unwrap(), before);

    let blob = work.path().join("m.mcg");
    std::fs::copy(shipped_blob(), &blob).unwrap();
    let output = mcugan(&["simulate", "--model", s(&blob), "--png", s(&blob)]);
    assert_refused(&output, &["--model", "--png"]);
    // A picture over a blob that is not an input: refused unless --force.
    let other = work.path().join("other.mcg");
    std::fs::copy(shipped_blob(), &other).unwrap();
    let output = mcugan(&["simulate", "--model", s(&blob), "--png", s(&other)]);
    assert_refused(&output, &["a model blob", "--force"]);
    assert_eq!(
        std::fs::read(&other).unwrap(),
        std::fs::read(shipped_blob()).unwrap()
    );
}

/// Writes the shipped generator with one value of `tensor` replaced by `value`.
fn broken_generator(dir: &Path, tensor: &str, value: f32) -> PathBuf {
    use candle_core::{Device, Tensor};
    let tensors =
        candle_core::safetensors::load(shipped_generator(), &Device::Cpu).expect("shipped");
    let mut changed = Vec::new();
    for (name, t) in tensors {
        let t = if name == tensor {
            let mut values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            values[3] = value;
            Tensor::from_vec(values, t.shape(), &Device::Cpu).unwrap()
        } else {
            t
        };
        changed.push((name, t));
    }
    let path = dir.join(format!("broken-{}.safetensors", tensor.replace('.', "-")));
    let bytes = safetensors::serialize(changed, None).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn quantize_refuses_a_broken_generator_and_names_the_tensor() {
    let work = tempfile::tempdir().unwrap();
    for (tensor, value, words) in [
        ("model.2.weight", f32::NAN, vec!["model.2.weight", "NaN"]),
        ("model.5.bias", f32::INFINITY, vec!["model.5.bias", "inf"]),
        (
            "model.3.running_var",
            -0.5,
            vec!["model.3.running_var", "negative variance"],
        ),
    ] {
        let generator = broken_generator(work.path(), tensor, value);
        let out = work.path().join("out.mcg");
        let output = mcugan(&[
            "quantize",
            "--generator",
            s(&generator),
            "--out",
            s(&out),
            "--calibration-images",
            "16",
        ]);
        assert_refused(&output, &words);
        assert!(!out.exists(), "{tensor}: a blob was written");
    }
}

#[test]
fn a_diverging_run_stops_with_an_error_and_says_there_is_no_checkpoint() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 96);
    let out = work.path().join("run");
    let output = train(&data, &out, &["--lr", "1e9"]);
    assert_refused(&output, &["diverged", "no checkpoint was written yet"]);
    assert!(!out.join("checkpoint.safetensors").exists());
    assert!(!out.join("generator.safetensors").exists());
}

#[test]
fn empty_and_oversized_requests_are_errors() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 32);
    let blob = shipped_blob();
    assert_refused(
        &train(&data, &work.path().join("run"), &["--epochs", "0"]),
        &["--epochs must be at least 1"],
    );
    let png = work.path().join("x.png");
    for seeds in ["3..3", "5..2", ""] {
        let output = mcugan(&[
            "simulate",
            "--model",
            s(&blob),
            "--seeds",
            seeds,
            "--png",
            s(&png),
        ]);
        assert_refused(&output, &["empty set"]);
        let output = mcugan(&["qemu", "no-such.elf", "--seeds", seeds]);
        assert_refused(&output, &["empty set"]);
        let output = mcugan(&[
            "bench-firmware",
            "no-such.elf",
            "--model",
            s(&blob),
            "--seeds",
            seeds,
        ]);
        assert_refused(&output, &["empty set"]);
    }
    assert!(!png.exists());
    // More seeds than the firmware's list: refused on the host before QEMU starts.
    let output = mcugan(&["qemu", "no-such.elf", "--seeds", "0..300"]);
    assert_refused(&output, &["300 seeds", "at most 256"]);
    let output = mcugan(&["simulate", "--model", s(&blob), "--seeds", "0..10000000"]);
    assert_refused(&output, &["PNG grid", "--out-dir"]);
    let output = mcugan(&["simulate", "--model", s(&blob), "--seeds", "0..4294967297"]);
    assert_refused(&output, &["32-bit"]);
}

#[test]
fn eval_shows_the_blob_readers_own_error() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 32);
    common::bars_test_split(&data, 32);
    let mut blob = std::fs::read(shipped_blob()).unwrap();
    let at = blob.len() / 2;
    blob[at] ^= 0x40;
    let damaged = work.path().join("damaged.mcg");
    std::fs::write(&damaged, &blob).unwrap();
    let classifier = repo("models/mnist-digits/classifier.safetensors");
    let output = mcugan(&[
        "eval",
        s(&damaged),
        "--data",
        s(&data),
        "--classifier",
        s(&classifier),
        "--no-calibration",
    ]);
    assert_refused(&output, &["damaged.mcg", "checksum mismatch"]);
    assert!(
        !stderr(&output).contains("safetensors"),
        "{}",
        stderr(&output)
    );

    let output = mcugan(&[
        "eval",
        s(&shipped_blob()),
        "--data",
        s(&data),
        "--classifier",
        s(&classifier),
        "--images",
        "100000000",
    ]);
    assert_refused(&output, &["--images 100000000", "100000"]);

    let pngs = work.path().join("pngs");
    std::fs::create_dir(&pngs).unwrap();
    std::fs::write(pngs.join("a.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let output = mcugan(&[
        "eval",
        s(&pngs),
        "--data",
        s(&data),
        "--classifier",
        s(&classifier),
        "--no-calibration",
    ]);
    assert_refused(&output, &["a.png"]);
}

/// `mcugan train --resume --out RUN --epochs 2 --quiet EXTRA...`, run in `dir`.
fn resume_in(dir: &Path, run: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--resume",
        "--out",
        s(run),
        "--epochs",
        "2",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    mcugan_in(dir, &args)
}

#[test]
fn a_run_resumes_from_another_directory_with_its_data_moved() {
    let work = tempfile::tempdir().unwrap();
    common::bars(&work.path().join("data"), 96);
    // Started with relative paths from `work`.
    let output = mcugan_in(
        work.path(),
        &[
            "train",
            "--data",
            "data",
            "--out",
            "run",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--sample-interval",
            "0",
            "--quiet",
        ],
    );
    assert_success(&output);
    let moved = work.path().join("moved-data");
    std::fs::rename(work.path().join("data"), &moved).unwrap();
    let elsewhere = work.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let run = work.path().join("run");

    // Without --data, the stored (absolute) path no longer exists: the error says where.
    assert_refused(&resume_in(&elsewhere, &run, &[]), &["data"]);

    // Other data: refused by content.
    let other = work.path().join("other-data");
    common::bars(&other, 96);
    let mut pixels = std::fs::read(other.join("train-images-idx3-ubyte")).unwrap();
    let last = pixels.len() - 1;
    pixels[last] ^= 1;
    std::fs::write(other.join("train-images-idx3-ubyte"), pixels).unwrap();
    let output = resume_in(&elsewhere, &run, &["--data", s(&other)]);
    assert_refused(&output, &["differ", "same data"]);

    // The moved copy: resumes, and the ignored settings are reported.
    let output = resume_in(
        &elsewhere,
        &run,
        &["--data", s(&moved), "--seed", "7", "--batch-size", "32"],
    );
    assert_success(&output);
    let text = stderr(&output);
    assert!(
        text.contains("--seed is ignored") && text.contains("--batch-size is ignored"),
        "{text}"
    );

    // Nothing left to train: an error, not a silent success.
    let output = resume_in(&elsewhere, &run, &["--data", s(&moved)]);
    assert_refused(&output, &["nothing to resume"]);
}

#[test]
fn simulate_writes_a_folder_of_images_byte_for_byte_the_same() {
    let work = tempfile::tempdir().unwrap();
    let blob = shipped_blob();
    let first = work.path().join("a");
    let second = work.path().join("b");
    for dir in [&first, &second] {
        let output = mcugan(&[
            "simulate",
            "--model",
            s(&blob),
            "--seeds",
            "10..14",
            "--out-dir",
            s(dir),
        ]);
        assert_success(&output);
    }
    let names: Vec<String> = {
        let mut n: Vec<String> = std::fs::read_dir(&first)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names,
        [
            "seed-0000000010.png",
            "seed-0000000011.png",
            "seed-0000000012.png",
            "seed-0000000013.png"
        ]
    );
    for name in &names {
        assert_eq!(
            std::fs::read(first.join(name)).unwrap(),
            std::fs::read(second.join(name)).unwrap()
        );
    }
    // The pixels are the simulation's.
    let expected =
        mcugan_model_tools::simulate::simulate(&std::fs::read(&blob).unwrap(), &[12]).unwrap();
    let picture =
        mcugan_model_tools::picture::load_png(&first.join("seed-0000000012.png")).unwrap();
    assert_eq!(picture.pixels, expected[0]);
    // Again into the same folder: refused without --force.
    let output = mcugan(&[
        "simulate",
        "--model",
        s(&blob),
        "--seeds",
        "10..14",
        "--out-dir",
        s(&first),
    ]);
    assert_refused(&output, &["already holds", "--force"]);
    // Raw bytes and .npy.
    let raw = work.path().join("raw");
    assert_success(&mcugan(&[
        "simulate",
        "--model",
        s(&blob),
        "--seeds",
        "12",
        "--out-dir",
        s(&raw),
        "--format",
        "raw",
    ]));
    assert_eq!(
        std::fs::read(raw.join("seed-0000000012.raw")).unwrap(),
        expected[0]
    );
    let npy = work.path().join("npy");
    assert_success(&mcugan(&[
        "simulate",
        "--model",
        s(&blob),
        "--seeds",
        "12",
        "--out-dir",
        s(&npy),
        "--format",
        "npy",
    ]));
    let bytes = std::fs::read(npy.join("seed-0000000012.npy")).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY"));
    assert!(bytes.ends_with(&expected[0]));
}

#[test]
fn a_training_run_writes_the_same_bytes_twice() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 64);
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    assert_success(&train(&data, &a, &[]));
    assert_success(&train(&data, &b, &[]));
    for file in ["generator.safetensors", "checkpoint.safetensors"] {
        assert!(
            std::fs::read(a.join(file)).unwrap() == std::fs::read(b.join(file)).unwrap(),
            "{file} differs between two runs of the same command"
        );
    }
}

//! Inputs that used to hang, run on or train nonsense, each refused at once through the real
//! binary with a plain sentence: unreadable firmware ELFs (before QEMU starts), devices that
//! never end, a firmware built around another model, class counts that do not fit the labels,
//! impossible walks and thread counts, a diverged checkpoint, and no backtrace for any of them.

mod common;

use std::path::Path;

use common::{assert_refused, mcugan, s, shipped_blob};

/// Runs `mcugan` with backtraces asked for, as many Rust users have them on.
fn mcugan_with_backtraces(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mcugan"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("the binary runs")
}

#[test]
fn an_elf_qemu_cannot_run_is_refused_before_qemu_starts() {
    let work = tempfile::tempdir().unwrap();
    let blob = shipped_blob();
    // A header only, an x86-64 program (this test itself), text.
    let truncated = work.path().join("truncated.elf");
    std::fs::write(&truncated, b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0").unwrap();
    let x86 = std::env::current_exe().unwrap();
    let text = work.path().join("notes.elf");
    std::fs::write(&text, b"not a program").unwrap();
    for (elf, words) in [
        (&truncated, "is not an ELF file"),
        (&x86, "not an Arm Cortex-M firmware"),
        (&text, "is not an ELF file"),
    ] {
        // A one-second limit: had QEMU started, the refusal would be its timeout instead.
        for args in [
            vec!["qemu", s(elf), "--timeout", "1"],
            vec![
                "bench-firmware",
                s(elf),
                "--model",
                s(&blob),
                "--timeout",
                "1",
            ],
        ] {
            assert_refused(&mcugan_with_backtraces(&args), &[words]);
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_device_that_never_ends_is_refused() {
    for args in [
        vec!["inspect", "/dev/zero"],
        vec![
            "simulate",
            "--model",
            "/dev/zero",
            "--png",
            "/nonexistent/x.png",
        ],
        vec![
            "quantize",
            "--generator",
            "/dev/zero",
            "--out",
            "/nonexistent/x.mcg",
        ],
    ] {
        let output = mcugan(&args);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("/dev/zero") && stderr.lines().count() <= 2,
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_firmware_built_around_another_model_is_named() {
    let work = tempfile::tempdir().unwrap();
    let firmware = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware");
    let elf = mcugan_device_tools::build::build_qemu_firmware(
        &firmware,
        &shipped_blob(),
        mcugan_device_tools::build::Kernels::Dsp,
        &[],
        &work.path().join("fw.elf"),
    )
    .unwrap();
    let other = common::repo("models/mnist-digits-conditional/generator-int8.mcg");
    for args in [
        vec!["bench-firmware", s(&elf), "--model", s(&other)],
        vec!["qemu", s(&elf), "--check", s(&other)],
    ] {
        assert_refused(
            &mcugan_with_backtraces(&args),
            &[
                "embeds another model",
                "model 'mnist-digits' of 1537888 bytes",
                "MCUGAN_MODEL=",
            ],
        );
    }
}

#[test]
fn class_counts_that_do_not_fit_the_labels_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    // 60 images of labels 0, 1, 2 in turn.
    let labels: Vec<u8> = (0..60).map(|i| (i % 3) as u8).collect();
    let pixels: Vec<u8> = (0..60 * 784).map(|i| (i % 251) as u8).collect();
    mcugan_model_tools::data::write_split(
        &data,
        mcugan_model_tools::data::Split::Train,
        &mcugan_model_tools::data::Dataset {
            rows: 28,
            cols: 28,
            pixels,
            labels,
        },
    )
    .unwrap();
    let train = |extra: &[&str]| {
        let out = work.path().join("run");
        let mut args = vec![
            "train",
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--epochs",
            "1",
            "--quiet",
            "--force",
            "--conditional",
        ];
        args.extend_from_slice(extra);
        mcugan_with_backtraces(&args)
    };
    // Labels beyond the classes asked for.
    assert_refused(&train(&["--classes", "2"]), &["label 2", "--classes 3"]);
    // Classes that no image has.
    assert_refused(&train(&["--classes", "5"]), &["classes 3, 4 have no image"]);
    // A --limit that keeps the images of two labels only (the first 2 images).
    assert_refused(
        &train(&["--limit", "2", "--batch-size", "2"]),
        &["class 2 has no image", "the first 2"],
    );
}

#[test]
fn impossible_walks_and_thread_counts_are_refused() {
    let blob = shipped_blob();
    let png = "/nonexistent/walk.png";
    for (args, words) in [
        (
            vec!["simulate", "--model", s(&blob), "--walk", "5", "--png", png],
            vec!["A..B"],
        ),
        (
            vec![
                "simulate",
                "--model",
                s(&blob),
                "--walk",
                "3..8",
                "--frames",
                "1",
                "--png",
                png,
            ],
            vec!["--frames must be 2"],
        ),
        (
            vec![
                "simulate",
                "--model",
                s(&blob),
                "--frames",
                "4",
                "--png",
                png,
            ],
            vec!["--walk"],
        ),
        (
            vec!["--threads", "0", "inspect", s(&blob)],
            vec!["0 is not in 1..=4096"],
        ),
    ] {
        let output = mcugan(&args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for word in words {
            assert!(stderr.contains(word), "{args:?}: no {word:?} in {stderr}");
        }
    }
}

/// Overwrites the first value of the first tensor of a safetensors file with NaN, keeping its
/// header (and metadata) as it was.
fn poison_first_tensor(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let (_, tensor) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(name, t)| *name != "__metadata__" && t["dtype"] == "F32")
        .unwrap();
    let start = 8 + header_len + tensor["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_checkpoint_of_a_diverged_run_is_not_resumed() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 64);
    let out = work.path().join("run");
    let train = mcugan(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--epochs",
        "1",
        "--quiet",
        "--batch-size",
        "16",
        "--sample-interval",
        "0",
    ]);
    common::assert_success(&train);
    poison_first_tensor(&out.join("checkpoint.safetensors"));
    let output = mcugan_with_backtraces(&[
        "train",
        "--resume",
        "--out",
        s(&out),
        "--epochs",
        "2",
        "--quiet",
    ]);
    assert_refused(&output, &["a diverged run, it cannot be resumed", "NaN"]);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("last good checkpoint"));
}

#[test]
fn the_cuda_refusal_is_one_plain_sentence() {
    let output = mcugan_with_backtraces(&[
        "train",
        "--data",
        "/nonexistent",
        "--out",
        "/nonexistent/run",
        "--device",
        "cuda",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    if stderr.contains("built without CUDA") {
        assert!(!stderr.contains('\\'), "{stderr}");
        assert!(!stderr.contains("  "), "broken indentation: {stderr}");
    }
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
}

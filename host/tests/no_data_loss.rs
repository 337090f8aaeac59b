//! No output of any command replaces one of its inputs, a file of another kind, or another
//! output of the same command, and a killed writer's temporary does not stay behind: each
//! case through the real binary.

mod common;

use std::path::Path;

use common::{assert_refused, assert_success, mcugan, repo, s, shipped_blob, shipped_generator};

/// A data folder with a test split, and the bytes of its label file.
fn data_folder(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    common::bars(&data, 16);
    common::bars_test_split(&data, 16);
    data
}

#[test]
fn text_outputs_replace_neither_inputs_nor_binary_files() {
    let work = tempfile::tempdir().unwrap();
    let data = data_folder(work.path());
    let blob = shipped_blob();
    let labels = data.join("t10k-labels-idx1-ubyte");
    let train_labels = data.join("train-labels-idx1-ubyte");
    let before = (
        std::fs::read(&labels).unwrap(),
        std::fs::read(&train_labels).unwrap(),
    );
    // A data set's own files are inputs of the command that reads the folder.
    for (flag, target) in [("--markdown", &labels), ("--json", &train_labels)] {
        let output = mcugan(&["eval", s(&blob), "--data", s(&data), flag, s(target)]);
        assert_refused(&output, &["--data", flag]);
    }
    assert_eq!(
        (
            std::fs::read(&labels).unwrap(),
            std::fs::read(&train_labels).unwrap()
        ),
        before
    );

    // A binary file that is no input (an ONNX model) is not replaced by text without --force.
    let onnx = work.path().join("m.onnx");
    std::fs::copy(repo("tests/fixtures/onnx/small-gemm-opset11.onnx"), &onnx).unwrap();
    let onnx_bytes = std::fs::read(&onnx).unwrap();
    let elf = work.path().join("fw.elf");
    let generator = shipped_generator();
    for args in [
        vec!["eval", s(&blob), "--data", s(&data), "--json", s(&onnx)],
        vec![
            "bench-firmware",
            s(&elf),
            "--model",
            s(&blob),
            "--json",
            s(&onnx),
        ],
        vec![
            "report",
            "--generator",
            s(&generator),
            "--model",
            s(&blob),
            "--elf",
            s(&elf),
            "--out",
            s(&onnx),
        ],
    ] {
        assert_refused(&mcugan(&args), &["not text", "--force"]);
    }
    assert_eq!(std::fs::read(&onnx).unwrap(), onnx_bytes);

    // The report's JSON beside --out is an output too: never the training summary it reads.
    let summary = work.path().join("ts.json");
    std::fs::write(&summary, b"{\"epochs\": 1}").unwrap();
    let output = mcugan(&[
        "report",
        "--generator",
        s(&generator),
        "--model",
        s(&blob),
        "--elf",
        s(&elf),
        "--train-summary",
        s(&summary),
        "--out",
        s(&work.path().join("ts.md")),
    ]);
    assert_refused(&output, &["--train-summary", "its .json"]);
    assert_eq!(std::fs::read(&summary).unwrap(), b"{\"epochs\": 1}");
}

#[test]
fn two_outputs_of_one_command_on_one_path_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let data = data_folder(work.path());
    let blob = shipped_blob();
    let generator = shipped_generator();
    let same = work.path().join("out.md");
    let output = mcugan(&[
        "eval",
        s(&blob),
        "--data",
        s(&data),
        "--markdown",
        s(&same),
        "--json",
        s(&same),
    ]);
    assert_refused(&output, &["both --markdown and --json"]);
    let output = mcugan(&[
        "report",
        "--generator",
        s(&generator),
        "--model",
        s(&blob),
        "--elf",
        s(&work.path().join("fw.elf")),
        "--out",
        s(&same),
        "--png",
        s(&same),
    ]);
    assert_refused(&output, &["both --out and --png"]);
    assert!(!same.exists());
}

#[test]
fn a_killed_quantizers_temporary_is_cleaned_by_the_next_run() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("g.mcg");
    // What `kill -9` during a write leaves: the hidden temporary of a process that is gone.
    let leftover = work.path().join(".g.mcg.4194399.Xy12Zw.tmp");
    std::fs::write(&leftover, b"half a blob").unwrap();
    let output = mcugan(&[
        "quantize",
        "--generator",
        s(&repo("tests/fixtures/onnx/small-gemm-opset11.onnx")),
        "--out",
        s(&out),
        "--calibration-images",
        "16",
    ]);
    assert_success(&output);
    assert!(!leftover.exists(), "the stale temporary is still there");
    let names: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["g.mcg".to_string()]);
}

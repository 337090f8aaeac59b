//! Damaged and hostile ONNX files through the real binary (the seeds of the ONNX fuzz target,
//! `fuzz/corpus/onnx_import`: files that made tract panic or abort, files outside the ONNX
//! specification, declarations of gigabytes): each is imported or refused with a sentence that
//! names the file, never a panic, a signal or a backtrace, and no refusal takes more than
//! 200 MB of memory. Only these tests in this binary, so that the children's peak memory is
//! theirs (every child here imports a small file).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::repo;

/// The most memory a refusal may take, importer child included.
const REFUSAL_PEAK_BYTES: i64 = 200 << 20;

fn seeds() -> Vec<PathBuf> {
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(repo("fuzz/corpus/onnx_import"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    seeds.sort();
    seeds
}

/// The peak resident memory of every child this process has waited for, in bytes.
fn children_peak() -> i64 {
    // SAFETY: getrusage writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss * 1024
}

#[test]
fn every_hostile_onnx_file_is_refused_by_name_within_200_mb() {
    let seeds = seeds();
    assert!(seeds.len() >= 15, "the corpus lost its seeds: {seeds:?}");
    let work = tempfile::tempdir().unwrap();
    for seed in &seeds {
        let name = seed.file_name().unwrap().to_string_lossy().into_owned();
        let out = work.path().join("out.mcg");
        let output = Command::new(env!("CARGO_BIN_EXE_mcugan"))
            .args([
                "quantize",
                "--calibration-images",
                "16",
                "--force",
                "--generator",
            ])
            .arg(seed)
            .arg("--out")
            .arg(&out)
            // A user who keeps backtraces on still sees none for a refused file.
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.code().is_some(),
            "{name}: mcugan ended on a signal: {stderr}"
        );
        for internal in [
            "panicked at",
            "stack backtrace",
            "RUST_BACKTRACE",
            "Val(",
            "os error",
        ] {
            assert!(
                !stderr.contains(internal),
                "{name}: {internal:?} in:\n{stderr}"
            );
        }
        if name.starts_with("valid-") && output.status.success() {
            assert!(out.is_file(), "{name}");
            continue;
        }
        assert!(!output.status.success(), "{name} was imported:\n{stderr}");
        assert!(
            stderr.starts_with("Error: ") && stderr.contains(&name),
            "{name}: not a refusal that names the file:\n{stderr}"
        );
        let peak = children_peak();
        assert!(
            peak <= REFUSAL_PEAK_BYTES,
            "{name}: refusing took {} MB",
            peak >> 20
        );
    }
}

/// What the crashes and spec breaks are refused with: the rule, or the crash named.
#[test]
fn each_kind_of_hostile_file_gets_its_own_reason() {
    let quantize = |seed: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_mcugan"))
            .args(["quantize", "--force", "--generator"])
            .arg(repo("fuzz/corpus/onnx_import").join(seed))
            .args(["--out", "/nonexistent/never.mcg"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    for (seed, reason) in [
        (
            "crash-batchnorm-of-a-1d-constant.onnx",
            "tract-onnx crashed",
        ),
        ("panic-shape-of-a-scalar.onnx", "tract-onnx panicked"),
        ("panic-output-of-no-node.onnx", "(graph outputs)"),
        ("panic-string-initializer.onnx", "(initializer type)"),
        ("panic-unsqueeze-axis-2-31.onnx", "(attribute range)"),
        ("panic-flatten-axis-2-31.onnx", "(attribute range)"),
        ("spec-opset-99.onnx", "(opset_import)"),
        ("spec-opset-minus-1.onnx", "(opset_import)"),
        ("spec-no-opset-import.onnx", "(opset_import)"),
        ("spec-ir-version-0.onnx", "(ir_version)"),
        ("spec-duplicate-node-output.onnx", "(single assignment)"),
        ("memory-external-2gib.onnx", "2147483648 bytes"),
        ("memory-hidden-5000-wide.onnx", "5000 inputs"),
    ] {
        let stderr = quantize(seed);
        assert!(
            stderr.contains(reason),
            "{seed}: no {reason:?} in:\n{stderr}"
        );
    }
}

//! The book's "bring your own model" commands through the real binary: an ONNX generator
//! quantized, simulated and inspected; an unsupported graph refused with its nodes named.
//! (The build without ONNX import is `without_onnx.rs`.)
#![cfg(feature = "onnx")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::assert_success;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/onnx")
        .join(name)
}

fn mcugan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mcugan"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the binary runs")
}

/// `mcugan quantize --generator ONNX --out BLOB`.
fn quantize(onnx: &Path, blob: &Path) -> std::process::Output {
    mcugan(&[
        "quantize",
        "--generator",
        onnx.to_str().unwrap(),
        "--out",
        blob.to_str().unwrap(),
    ])
}

#[test]
fn an_onnx_generator_quantizes_simulates_and_inspects() {
    let work = tempfile::tempdir().unwrap();
    let blob = work.path().join("my.mcg");
    let png = work.path().join("my.png");
    let out = quantize(&fixture("small-gemm-opset11.onnx"), &blob);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("PSNR") && stdout.contains("Tanh to pixels"),
        "{stdout}"
    );
    let out = mcugan(&[
        "simulate",
        "--model",
        blob.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    assert_success(&out);
    assert!(png.is_file());
    let out = mcugan(&["inspect", blob.to_str().unwrap()]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("latent 16 -> image 8x8x1"), "{stdout}");
}

#[test]
fn an_unsupported_graph_is_refused_with_its_nodes_and_nothing_written() {
    let work = tempfile::tempdir().unwrap();
    let blob = work.path().join("never.mcg");
    let out = quantize(&fixture("refuse-conv-grouped.onnx"), &blob);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refuse-conv-grouped.onnx"), "{stderr}");
    assert!(stderr.contains("'/conv/Conv' (Conv): 2 groups"), "{stderr}");
    assert!(stderr.contains("supported: Gemm"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!blob.exists());

    // A truncated file: named, not a panic.
    let bytes = std::fs::read(fixture("small-gemm-opset11.onnx")).unwrap();
    let cut = work.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let out = quantize(&cut, &blob);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cut.onnx") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

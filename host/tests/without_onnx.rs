//! The CLI built without the `onnx` feature, as `cargo xtask demo` builds it: an ONNX graph
//! is refused with what to do instead, and nothing is written. Run by `cargo xtask test` as
//! `cargo test -p mcugan --no-default-features --test without_onnx`.
#![cfg(not(feature = "onnx"))]

use std::path::Path;
use std::process::Command;

#[test]
fn an_onnx_graph_is_refused_with_how_to_get_onnx_import_and_nothing_written() {
    let work = tempfile::tempdir().unwrap();
    let blob = work.path().join("never.mcg");
    let graph = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/onnx/small-gemm-opset11.onnx");
    let out = Command::new(env!("CARGO_BIN_EXE_mcugan"))
        .args(["quantize", "--generator"])
        .arg(&graph)
        .arg("--out")
        .arg(&blob)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the binary runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("small-gemm-opset11.onnx"), "{stderr}");
    assert!(stderr.contains("no ONNX import"), "{stderr}");
    assert!(
        stderr.contains("cargo build --release -p mcugan"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!blob.exists());
}

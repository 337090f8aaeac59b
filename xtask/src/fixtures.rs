//! `cargo xtask onnx-fixtures`: the ONNX test fixtures, rewritten with PyTorch.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::util::*;

/// What the ONNX fixtures' virtual environment holds: PyTorch (and its exporters'
/// onnxscript), onnx, onnxruntime.
pub(crate) const ONNX_PACKAGES: [&str; 6] = [
    "torch",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "numpy",
    "safetensors",
];

/// Rewrites the ONNX fixtures: `bench/onnx_fixtures.py` in a virtual environment with
/// PyTorch (and its exporters' onnxscript), onnx and onnxruntime.
pub(crate) fn onnx_fixtures(root: &Path) -> Result<()> {
    let python = python_venv(
        root,
        ".venv-onnx",
        "PyTorch, onnx and onnxruntime, for the ONNX fixtures",
        &ONNX_PACKAGES,
    )?;
    step("writing tests/fixtures/onnx (bench/onnx_fixtures.py)");
    run(Command::new(python).arg(root.join("bench/onnx_fixtures.py")))
}

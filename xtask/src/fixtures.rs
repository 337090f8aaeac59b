//! `cargo xtask onnx-fixtures`: the ONNX test fixtures, rewritten with PyTorch.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::util::*;

/// Rewrites the ONNX fixtures: `bench/onnx_fixtures.py` in a virtual environment with
/// PyTorch (and its exporters' onnxscript), onnx and onnxruntime.
pub(crate) fn onnx_fixtures(root: &Path) -> Result<()> {
    let python = python_venv(
        root,
        ".venv-onnx",
        "PyTorch, onnx and onnxruntime, for the ONNX fixtures",
        &[
            "torch",
            "onnx",
            "onnxruntime",
            "onnxscript",
            "numpy",
            "safetensors",
        ],
    )?;
    step("writing tests/fixtures/onnx (bench/onnx_fixtures.py)");
    run(Command::new(python).arg(root.join("bench/onnx_fixtures.py")))
}

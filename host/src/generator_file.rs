//! One loader for every float generator a command takes, so that `quantize`, `simulate`,
//! `eval` and `report` accept the same files: a generator or training checkpoint in
//! safetensors (BatchNorm folded), or an ONNX graph (imported with tract; the graph itself is
//! then the float reference).

use std::path::Path;

use anyhow::Context;
use candle_core::Device;

use crate::quantize::{self, FloatGenerator};
use crate::train;

/// Whether `path` names an ONNX file (by its extension, as ONNX has no magic bytes).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Loads the float generator in `path`: `.onnx` through the ONNX importer, anything else as
/// a safetensors generator or checkpoint.
pub fn load_float_generator(path: &Path) -> anyhow::Result<FloatGenerator> {
    if is_onnx(path) {
        let imported = mcugan_onnx::import(path)?;
        return Ok(imported.generator);
    }
    let generator = train::load_generator(path, &Device::Cpu)?;
    quantize::fold(&generator).with_context(|| format!("folding {}", path.display()))
}

//! One loader for every float generator a command takes, so that `quantize`, `simulate`,
//! `eval` and `report` accept the same files: a generator or training checkpoint in
//! safetensors (BatchNorm folded), or an ONNX graph (imported with tract; the graph itself is
//! then the float reference).

use std::path::Path;

use anyhow::Context;
use candle_core::Device;

use mcugan_model_tools::quantize::FloatGenerator;
use mcugan_train::run;

/// Whether `path` names an ONNX file (by its extension, as ONNX has no magic bytes).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Loads the float generator in `path`: `.onnx` through the ONNX importer, anything else as
/// a safetensors generator or checkpoint.
pub fn load_float_generator(path: &Path) -> anyhow::Result<FloatGenerator> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!(
            "{} is not a regular file (a generator is a .safetensors or .onnx file)",
            path.display()
        );
    }
    if meta.len() > mcugan_device_tools::elf::MAX_FILE_BYTES {
        anyhow::bail!(
            "{} is larger than any generator the chip holds ({} bytes)",
            path.display(),
            mcugan_device_tools::elf::MAX_FILE_BYTES
        );
    }
    if is_onnx(path) {
        return import_onnx(path);
    }
    let generator = run::load_generator(path, &Device::Cpu)?;
    mcugan_train::model::fold(&generator).with_context(|| format!("folding {}", path.display()))
}

#[cfg(feature = "onnx")]
fn import_onnx(path: &Path) -> anyhow::Result<FloatGenerator> {
    Ok(mcugan_onnx::import(path)?.generator)
}

/// [`load_float_generator`] for the CLI: an ONNX file is imported first in a child process
/// (this executable's `check-onnx`), so that whatever tract does on a damaged or hostile file
/// — a panic, an overflowed stack, memory without end — ends the child, not the command,
/// which then refuses the file by name. A file the child imports is imported again here.
pub fn load_float_generator_contained(path: &Path) -> anyhow::Result<FloatGenerator> {
    if is_onnx(path) && cfg!(feature = "onnx") {
        crate::contained::check_in_child(path)?;
    }
    load_float_generator(path)
}

#[cfg(not(feature = "onnx"))]
fn import_onnx(path: &Path) -> anyhow::Result<FloatGenerator> {
    anyhow::bail!(
        "{} is an ONNX graph, and this build of mcugan has no ONNX import (it was built \
         without the `onnx` feature, as `cargo xtask demo` does to build faster): build it \
         with `cargo build --release -p mcugan`",
        path.display()
    )
}

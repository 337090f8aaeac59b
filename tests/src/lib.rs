//! Helpers for the end-to-end tests: where things are, and building the firmware around a
//! given model blob.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// The int8 digits model that ships in `models/`.
pub fn shipped_model() -> PathBuf {
    repo_root().join("models/mnist-digits/generator-int8.mcg")
}

/// The float generator it was quantized from.
pub fn shipped_generator() -> PathBuf {
    repo_root().join("models/mnist-digits/generator.safetensors")
}

/// Builds serialise: they share the firmware's target directory and its output path.
static FIRMWARE_BUILD: Mutex<()> = Mutex::new(());

/// Builds the firmware (release) around `model` and copies the ELF to `dest`.
pub fn build_firmware(model: &Path, dest: &Path) -> Result<PathBuf> {
    let _guard = FIRMWARE_BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let model =
        std::fs::canonicalize(model).with_context(|| format!("finding {}", model.display()))?;
    let firmware = repo_root().join("firmware");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .current_dir(&firmware)
        .env("MCUGAN_MODEL", &model)
        .output()
        .context("running cargo for the firmware")?;
    if !output.status.success() {
        bail!(
            "firmware build failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let elf = firmware.join("target/thumbv7em-none-eabihf/release/mcugan-firmware");
    std::fs::copy(&elf, dest).with_context(|| format!("copying {}", elf.display()))?;
    Ok(dest.to_path_buf())
}

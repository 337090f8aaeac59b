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

/// The int4 digits model (first layer int8) that ships in `models/`, for 1 MB parts.
pub fn shipped_int4_model() -> PathBuf {
    repo_root().join("models/mnist-digits/generator-int4.mcg")
}

/// The float generator they were quantized from.
pub fn shipped_generator() -> PathBuf {
    repo_root().join("models/mnist-digits/generator.safetensors")
}

/// The class-conditional digits model (`cgan.py`'s) that ships in `models/`, int8.
pub fn shipped_conditional_model() -> PathBuf {
    repo_root().join("models/mnist-digits-conditional/generator-int8.mcg")
}

/// The float conditional generator it was quantized from.
pub fn shipped_conditional_generator() -> PathBuf {
    repo_root().join("models/mnist-digits-conditional/generator.safetensors")
}

/// The offline digits' test split (`cargo xtask setup` makes it), or `None` when it is missing
/// and the run does not require it (`MCUGAN_REQUIRE_DATASETS` unset; `cargo xtask test` sets it).
pub fn test_digits() -> Option<mcugan_model_tools::data::Dataset> {
    let dir = repo_root().join("data/mnist-digits");
    if !dir.is_dir() {
        assert!(
            std::env::var_os("MCUGAN_REQUIRE_DATASETS").is_none(),
            "{} is missing (run `cargo xtask setup`)",
            dir.display()
        );
        eprintln!("skipped: {} is missing", dir.display());
        return None;
    }
    Some(
        mcugan_model_tools::data::load_split(&dir, mcugan_model_tools::data::Split::Test)
            .expect("the test digits load"),
    )
}

/// Builds serialise: they share the firmware's target directory and its output path.
static FIRMWARE_BUILD: Mutex<()> = Mutex::new(());

/// Which inner kernels a firmware build runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// The Cortex-M DSP-extension assembly (the default build).
    Dsp,
    /// The portable Rust kernels (`--no-default-features`), as on cores without DSP.
    Portable,
}

/// Builds the default firmware (release, DSP kernels) around `model` and copies the ELF to
/// `dest`.
pub fn build_firmware(model: &Path, dest: &Path) -> Result<PathBuf> {
    build_firmware_with(model, dest, Kernels::Dsp)
}

/// Builds the firmware (release) with the given kernels around `model` and copies the ELF to
/// `dest`.
pub fn build_firmware_with(model: &Path, dest: &Path, kernels: Kernels) -> Result<PathBuf> {
    build_firmware_with_features(model, dest, kernels, &[])
}

/// [`build_firmware_with`], with the QEMU board's cargo `features` (e.g. `walk`) on.
pub fn build_firmware_with_features(
    model: &Path,
    dest: &Path,
    kernels: Kernels,
    features: &[&str],
) -> Result<PathBuf> {
    let _guard = FIRMWARE_BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let model =
        std::fs::canonicalize(model).with_context(|| format!("finding {}", model.display()))?;
    let firmware = repo_root().join("firmware");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "--release", "--quiet"];
    if kernels == Kernels::Portable {
        args.push("--no-default-features");
    }
    let features = features.join(",");
    if !features.is_empty() {
        args.extend(["--features", &features]);
    }
    let output = Command::new(cargo)
        .args(&args)
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

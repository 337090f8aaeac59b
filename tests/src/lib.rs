//! Helpers for the end-to-end tests: where things are, and building the firmware around a
//! given model blob.

use std::path::{Path, PathBuf};

use anyhow::Result;

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

/// The compact convolutional digits model (`--arch dcgan-256k`) that ships in `models/`, int8.
pub fn shipped_compact_model() -> PathBuf {
    repo_root().join("models/mnist-digits-256k/generator-int8.mcg")
}

/// The compact model with its first layer in int4 (the rest int8), for 256 KB-flash parts.
pub fn shipped_compact_int4_model() -> PathBuf {
    repo_root().join("models/mnist-digits-256k/generator-int4.mcg")
}

/// The float compact generator they were quantized from.
pub fn shipped_compact_generator() -> PathBuf {
    repo_root().join("models/mnist-digits-256k/generator.safetensors")
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

pub use mcugan_device_tools::build::{Kernels, QemuMachine, MACHINES};

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
    Ok(mcugan_device_tools::build::build_qemu_firmware(
        &repo_root().join("firmware"),
        model,
        kernels,
        features,
        dest,
    )?)
}

/// Builds the QEMU firmware (release, DSP kernels where the core has them) for `machine`
/// around `model` and copies the ELF to `dest`.
pub fn build_firmware_on(machine: &QemuMachine, model: &Path, dest: &Path) -> Result<PathBuf> {
    Ok(mcugan_device_tools::build::build_qemu_firmware_on(
        machine,
        &repo_root().join("firmware"),
        model,
        Kernels::Dsp,
        &[],
        dest,
    )?)
}

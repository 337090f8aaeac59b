//! Building the QEMU firmware around a model blob: one function for the project's tasks
//! (`cargo xtask`) and the end-to-end tests alike. The firmware is its own cargo workspace
//! (thumbv7em, its `.cargo/config.toml`); the blob goes in through `MCUGAN_MODEL`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The firmware's target triple (Cortex-M4F).
pub const FIRMWARE_TARGET: &str = "thumbv7em-none-eabihf";

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

/// Why a firmware build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The model blob could not be found.
    #[error("finding the model blob {path}: {source}")]
    Model {
        /// The blob's path as given.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// cargo could not be started.
    #[error("running cargo for the firmware: {0}")]
    Cargo(std::io::Error),
    /// cargo ran and failed.
    #[error("firmware build failed:\n{0}")]
    Failed(String),
    /// The built ELF could not be copied to where it was asked for.
    #[error("copying the firmware to {path}: {source}")]
    Copy {
        /// Where it was to go.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
}

/// Builds the QEMU firmware (release) in `firmware_dir` around the blob `model`, with
/// `kernels` and the board's cargo `features` (e.g. `walk`), and copies the ELF to `dest`
/// (which later builds do not overwrite).
pub fn build_qemu_firmware(
    firmware_dir: &Path,
    model: &Path,
    kernels: Kernels,
    features: &[&str],
    dest: &Path,
) -> Result<PathBuf, BuildError> {
    let _guard = FIRMWARE_BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let model = std::fs::canonicalize(model).map_err(|source| BuildError::Model {
        path: model.to_path_buf(),
        source,
    })?;
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
        .current_dir(firmware_dir)
        .env("MCUGAN_MODEL", &model)
        .output()
        .map_err(BuildError::Cargo)?;
    if !output.status.success() {
        return Err(BuildError::Failed(
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
    let elf = firmware_dir.join(format!("target/{FIRMWARE_TARGET}/release/mcugan-firmware"));
    std::fs::copy(&elf, dest).map_err(|source| BuildError::Copy {
        path: dest.to_path_buf(),
        source,
    })?;
    Ok(dest.to_path_buf())
}

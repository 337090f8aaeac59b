//! Building the QEMU firmware around a model blob: one function for the project's tasks
//! (`cargo xtask`) and the end-to-end tests alike, for any of the QEMU machines. The firmware is
//! its own cargo workspace (its `.cargo/config.toml`); the blob goes in through `MCUGAN_MODEL`,
//! the machine through `MCUGAN_QEMU_MACHINE`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub use mcugan_firmware_build::machines::{default_machine, machine, QemuMachine, MACHINES};
use mcugan_firmware_build::QEMU_MACHINE_VAR;

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
/// (which later builds do not overwrite). For the default machine, the MPS2 AN386
/// (Cortex-M4F); [`build_qemu_firmware_on`] builds for any machine of the table.
pub fn build_qemu_firmware(
    firmware_dir: &Path,
    model: &Path,
    kernels: Kernels,
    features: &[&str],
    dest: &Path,
) -> Result<PathBuf, BuildError> {
    build_qemu_firmware_on(
        default_machine(),
        firmware_dir,
        model,
        kernels,
        features,
        dest,
    )
}

/// [`build_qemu_firmware`] for `machine`: its target and `-C target-cpu`, its memory map (the
/// board's build script reads `MCUGAN_QEMU_MACHINE`), in a target directory of its own
/// (`firmware/target/machines/NAME`), so that builds for different cores do not invalidate
/// each other. A core without the DSP extension gets the portable kernels whatever `kernels`
/// says.
pub fn build_qemu_firmware_on(
    machine: &QemuMachine,
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
    let mut args: Vec<String> = ["build", "--release", "--quiet"].map(String::from).to_vec();
    if kernels == Kernels::Portable || !machine.dsp {
        args.push("--no-default-features".into());
    }
    let features = features.join(",");
    if !features.is_empty() {
        args.extend(["--features".into(), features]);
    }
    let mut command = Command::new(cargo);
    command
        .current_dir(firmware_dir)
        .env("MCUGAN_MODEL", &model)
        .env(QEMU_MACHINE_VAR, machine.name);
    let elf = if machine == default_machine() {
        firmware_dir.join(format!("target/{FIRMWARE_TARGET}/release/mcugan-firmware"))
    } else {
        let target_dir = format!("target/machines/{}", machine.name);
        args.extend([
            "--target".into(),
            machine.target.into(),
            "--target-dir".into(),
            target_dir.clone(),
        ]);
        // The link scripts as in .cargo/config.toml, and the machine's core.
        let flags = [
            "-Clink-arg=-Tlink.x".to_string(),
            "-Clink-arg=-Tdefmt.x".to_string(),
            format!("-Ctarget-cpu={}", machine.target_cpu),
        ];
        command.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
        firmware_dir.join(format!(
            "{target_dir}/{}/release/mcugan-firmware",
            machine.target
        ))
    };
    let output = command.args(&args).output().map_err(BuildError::Cargo)?;
    if !output.status.success() {
        return Err(BuildError::Failed(
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
    std::fs::copy(&elf, dest).map_err(|source| BuildError::Copy {
        path: dest.to_path_buf(),
        source,
    })?;
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_machine_is_found_by_name_and_lays_out_its_memory() {
        for m in MACHINES {
            assert_eq!(machine(m.name), Some(m));
            let memory_x = m.memory_x();
            assert!(memory_x.contains(&format!("LENGTH = {}", m.flash.length)));
            assert!(memory_x.contains(&format!("ORIGIN = {:#010x}", m.ram.origin)));
            assert_eq!(
                memory_x.contains("MODEL :"),
                m.model.is_some(),
                "{}",
                m.name
            );
        }
        assert_eq!(default_machine().name, "mps2-an386");
        assert_eq!(default_machine().target, FIRMWARE_TARGET);
        assert!(machine("mps2-an999").is_none());
    }
}

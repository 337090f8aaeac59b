//! Firmware builds (the QEMU board and the real boards) and `cargo xtask bench-firmware`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::*;

use crate::setup::*;
pub(crate) use mcugan_device_tools::build::FIRMWARE_TARGET;
use mcugan_device_tools::build::{build_qemu_firmware, Kernels};

/// Builds the QEMU firmware (DSP kernels) around `model` into `dest`; returns `dest`.
pub fn build_firmware(root: &Path, model: &Path, dest: &Path) -> Result<PathBuf> {
    build_firmware_with(root, model, Kernels::Dsp, dest)
}

/// Builds the QEMU firmware around `model`, with the DSP kernels or the portable ones, into
/// `dest` (the same build the end-to-end tests make).
pub(crate) fn build_firmware_with(
    root: &Path,
    model: &Path,
    kernels: Kernels,
    dest: &Path,
) -> Result<PathBuf> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(build_qemu_firmware(
        &root.join("firmware"),
        model,
        kernels,
        &[],
        dest,
    )?)
}

/// The real boards: (directory under firmware/boards, package name).
pub(crate) const BOARDS: [(&str, &str); 2] = [
    ("nucleo-f429zi", "mcugan-nucleo-f429zi"),
    ("nrf52840-dk", "mcugan-nrf52840-dk"),
];

/// Builds every real board (from its own directory, so that its `.cargo/config.toml` applies),
/// with `features`; returns the ELFs.
pub(crate) fn build_boards(root: &Path, features: &[&str]) -> Result<Vec<PathBuf>> {
    let mut elfs = Vec::new();
    for (dir, package) in BOARDS {
        let mut args = vec!["build", "--release", "--quiet"];
        let joined = features.join(",");
        if !features.is_empty() {
            args.extend(["--features", &joined]);
        }
        run(cargo(&args).current_dir(root.join("firmware/boards").join(dir)))?;
        elfs.push(root.join(format!(
            "firmware/target/{FIRMWARE_TARGET}/release/{package}"
        )));
    }
    Ok(elfs)
}

pub(crate) fn bench_firmware(root: &Path) -> Result<()> {
    setup(root, false)?;
    build_host_cli(root)?;
    let out = root.join("runs/bench");
    std::fs::create_dir_all(&out)?;
    let models = [
        ("int8", root.join("models/mnist-digits/generator-int8.mcg")),
        ("int4", root.join("models/mnist-digits/generator-int4.mcg")),
    ];
    let mut report =
        String::from("## Firmware benchmark (QEMU mps2-an386, Cortex-M4F, -icount shift=0)\n\n");
    for (name, model) in &models {
        for (build, kernels) in [(Kernels::Dsp, "dsp"), (Kernels::Portable, "portable")] {
            step(&format!(
                "{name} model, {kernels} kernels: building and running under QEMU"
            ));
            let kept = out.join(format!("mcugan-firmware-{name}-{kernels}.elf"));
            build_firmware_with(root, model, build, &kept)?;
            let json = out.join(format!("firmware-{name}-{kernels}.json"));
            let output = mcugan(
                root,
                &[
                    "bench-firmware",
                    &kept.to_string_lossy(),
                    "--model",
                    &model.to_string_lossy(),
                    "--json",
                    &json.to_string_lossy(),
                ],
            )
            .output()
            .context("running mcugan bench-firmware")?;
            let text = String::from_utf8_lossy(&output.stdout);
            eprint!("{text}{}", String::from_utf8_lossy(&output.stderr));
            if !output.status.success() {
                bail!("the {name}/{kernels} benchmark failed");
            }
            report += &text;
            report += "\n";
        }
    }
    step("real boards (build only: they run on hardware)");
    let elfs = build_boards(root, &[])?;
    let mut args = vec!["sizes".to_string()];
    args.extend(elfs.iter().map(|e| e.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = mcugan(root, &args)
        .output()
        .context("running mcugan sizes")?;
    let sizes = String::from_utf8_lossy(&output.stdout);
    eprint!("{sizes}");
    report += "## Real-board builds\n\n";
    report += &sizes;
    report +=
        "\nFor comparison: CMSIS-NN's `arm_nn_vec_mat_mult_t_s8` DSP inner loop does 8 MACs with \
               3 loads, 6 SXTAB16 and 4 SMLAD = 1.625 instructions per MAC before loop overhead.\n";
    std::fs::write(out.join("firmware.md"), &report)?;
    eprintln!(
        "\nCMSIS-NN arm_nn_vec_mat_mult_t_s8 inner loop: 1.625 instructions per MAC (13 per 8 MACs) before loop overhead\nreport written to {}",
        out.join("firmware.md").display()
    );
    Ok(())
}

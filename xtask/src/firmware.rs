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

/// The real boards: (directory under firmware/boards, package name, target).
pub(crate) const BOARDS: [(&str, &str, &str); 4] = [
    ("nucleo-f429zi", "mcugan-nucleo-f429zi", FIRMWARE_TARGET),
    ("nrf52840-dk", "mcugan-nrf52840-dk", FIRMWARE_TARGET),
    ("pico", "mcugan-pico", "thumbv6m-none-eabi"),
    ("pico2", "mcugan-pico2", "thumbv8m.main-none-eabihf"),
];

/// Builds every real board (from its own directory, so that its `.cargo/config.toml` applies),
/// with `features`; returns the ELFs.
pub(crate) fn build_boards(root: &Path, features: &[&str]) -> Result<Vec<PathBuf>> {
    let mut elfs = Vec::new();
    for (dir, package, target) in BOARDS {
        let mut args = vec!["build", "--release", "--quiet"];
        let joined = features.join(",");
        if !features.is_empty() {
            args.extend(["--features", &joined]);
        }
        run(cargo(&args).current_dir(root.join("firmware/boards").join(dir)))?;
        elfs.push(root.join(format!("firmware/target/{target}/release/{package}")));
    }
    Ok(elfs)
}

/// The convolutional ONNX fixtures the firmware benchmark quantizes and runs: (name, file).
const CONV_BENCH_MODELS: [(&str, &str); 3] = [
    (
        "dcgan-digits",
        "tests/fixtures/onnx/dcgan-digits-dynamo.onnx",
    ),
    (
        "dcganpy-digits",
        "tests/fixtures/onnx/readme/my_generator.onnx",
    ),
    ("rgb-shapes", "tests/fixtures/onnx/rgb-shapes-dynamo.onnx"),
];

/// `cargo xtask bench-firmware`'s options.
#[derive(clap::Args)]
pub(crate) struct BenchFirmwareArgs {
    /// Also export PyTorch-GAN dcgan.py's generator at full size (untrained; PyTorch from
    /// PyPI into .venv-onnx) and benchmark it.
    #[arg(long)]
    dcgan_py: bool,
}

/// Builds the firmware around `model` with `kernels`, runs `mcugan bench-firmware` on it and
/// returns its table.
fn bench_one(
    root: &Path,
    out: &Path,
    name: &str,
    model: &Path,
    kernels: Kernels,
) -> Result<String> {
    let label = match kernels {
        Kernels::Dsp => "dsp",
        Kernels::Portable => "portable",
    };
    step(&format!(
        "{name} model, {label} kernels: building and running under QEMU"
    ));
    let kept = out.join(format!("mcugan-firmware-{name}-{label}.elf"));
    build_firmware_with(root, model, kernels, &kept)?;
    let json = out.join(format!("firmware-{name}-{label}.json"));
    let output = mcugan(
        root,
        &[
            "bench-firmware",
            &kept.to_string_lossy(),
            "--model",
            &model.to_string_lossy(),
            "--json",
            &json.to_string_lossy(),
            "--timeout",
            "600",
            "--force",
        ],
    )
    .output()
    .context("running mcugan bench-firmware")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    eprint!("{text}{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("the {name}/{label} benchmark failed");
    }
    Ok(text + "\n")
}

/// Quantizes the ONNX generator `onnx` into `blob`, named `name`, with the ONNX-enabled CLI.
pub(crate) fn quantize_onnx(root: &Path, onnx: &Path, name: &str, blob: &Path) -> Result<()> {
    let status = cargo(&[
        "run",
        "--release",
        "--quiet",
        "-p",
        "mcugan",
        "--",
        "quantize",
    ])
    .args(["--name", name])
    .arg("--generator")
    .arg(onnx)
    .arg("--out")
    .arg(blob)
    .arg("--force")
    .current_dir(root)
    .status()
    .context("running mcugan quantize")?;
    if !status.success() {
        bail!("quantizing {} failed", onnx.display());
    }
    Ok(())
}

pub(crate) fn bench_firmware(root: &Path, args: BenchFirmwareArgs) -> Result<()> {
    setup(root, false)?;
    // The real boards span the M0+ to the M33.
    for target in every_core_target() {
        rustup_target(root, target)?;
    }
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
        for kernels in [Kernels::Dsp, Kernels::Portable] {
            report += &bench_one(root, &out, name, model, kernels)?;
        }
    }
    step("convolutional generators (the ONNX fixtures, quantized int8)");
    let mut conv: Vec<(String, PathBuf)> = CONV_BENCH_MODELS
        .iter()
        .map(|(name, file)| (name.to_string(), root.join(file)))
        .collect();
    if args.dcgan_py {
        let python = python_venv(
            root,
            ".venv-onnx",
            "PyTorch, onnx and onnxruntime, for the ONNX fixtures",
            &crate::fixtures::ONNX_PACKAGES,
        )?;
        let onnx = out.join("dcgan-py.onnx");
        run(std::process::Command::new(python)
            .arg(root.join("bench/dcgan_py_export.py"))
            .arg(&onnx))?;
        conv.push(("dcgan-py".into(), onnx));
    }
    for (name, onnx) in &conv {
        let blob = out.join(format!("{name}-int8.mcg"));
        quantize_onnx(root, onnx, name, &blob)?;
        report += &bench_one(root, &out, name, &blob, Kernels::Dsp)?;
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

//! `cargo xtask bench-cores`: the firmware on every core of the machine table under QEMU —
//! one small convolutional digits model on all of them (the same work, so the figures compare
//! across cores), and the largest shipped digits model each one's memory holds. Writes
//! `docs/generated/cores.md`, which the book includes (the ELFs and JSON go to `runs/bench/`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mcugan_device_tools::build::{build_qemu_firmware_on, Kernels, QemuMachine, MACHINES};

use crate::firmware::quantize_onnx;
use crate::setup::*;
use crate::util::*;

/// The model every core runs: a small convolutional digits generator (an ONNX fixture).
const SMALL_MODEL_ONNX: &str = "tests/fixtures/onnx/dcgan-digits-dynamo.onnx";

/// The largest of `models` that fits `machine`'s model memory beside the runtime.
fn largest_fitting(machine: &QemuMachine, models: &[PathBuf]) -> Result<PathBuf> {
    for model in models {
        let len = std::fs::metadata(model)
            .with_context(|| format!("reading {}", model.display()))?
            .len();
        if machine.holds_model(len) {
            return Ok(model.clone());
        }
    }
    bail!("no model fits the {}", machine.name)
}

/// Builds the firmware for `machine` around `model`, runs `mcugan bench-firmware` on it and
/// returns the table row.
fn bench_row(root: &Path, out: &Path, machine: &QemuMachine, model: &Path) -> Result<String> {
    let stem = model
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    step(&format!("{} ({}): {stem}", machine.name, machine.core));
    let elf = out.join(format!("mcugan-firmware-{}-{stem}.elf", machine.name));
    build_qemu_firmware_on(
        machine,
        &root.join("firmware"),
        model,
        Kernels::Dsp,
        &[],
        &elf,
    )?;
    let json = out.join(format!("core-{}-{stem}.json", machine.name));
    let output = mcugan(
        root,
        &[
            "bench-firmware",
            &elf.to_string_lossy(),
            "--model",
            &model.to_string_lossy(),
            "--json",
            &json.to_string_lossy(),
            "--seeds",
            "0..4",
            "--timeout",
            "600",
            "--force",
        ],
    )
    .output()
    .context("running mcugan bench-firmware")?;
    if !output.status.success() {
        bail!(
            "the {} benchmark failed:\n{}",
            machine.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let bench = read_json(&json)?;
    let number = |key: &str| bench[key].as_f64().unwrap_or(f64::NAN);
    let size = |key: &str| bench["sizes"][key].as_u64().unwrap_or(0);
    let instructions = number("instructions_per_image");
    let macs = number("macs");
    let runtime = size("vector_table") + size("text") + size("rodata") + size("data");
    let ram = size("data")
        + size("bss")
        + size("uninit")
        + bench["stack_peak_bytes"].as_u64().unwrap_or(0);
    Ok(format!(
        "| {} | {} | `{}` | {} | {} | {:.0} | {:.3} | {runtime} | {} | {ram} | {:.0} |\n",
        machine.name,
        machine.core,
        machine.target,
        stem,
        bench["kernels"].as_str().unwrap_or("?"),
        instructions,
        instructions / macs,
        size("model"),
        number("validation_instructions"),
    ))
}

pub(crate) fn bench_cores(root: &Path) -> Result<()> {
    setup(root, false)?;
    build_host_cli(root)?;
    let out = root.join("runs/bench");
    std::fs::create_dir_all(&out)?;
    step("quantizing the small convolutional digits model (int8) from its ONNX fixture");
    let small = out.join("dcgan-digits-small-int8.mcg");
    quantize_onnx(
        root,
        &root.join(SMALL_MODEL_ONNX),
        "dcgan-digits-small",
        &small,
    )?;
    let header = "| machine | core | target | model | kernels | instructions per image | per MAC \
                  | runtime flash (B) | model (B) | RAM: static + peak stack (B) | boot check \
                  (instructions) |\n|---|---|---|---|---|---:|---:|---:|---:|---:|---:|\n";
    let mut same = String::from(header);
    let mut largest = String::from(header);
    let shipped = [
        root.join("models/mnist-digits/generator-int8.mcg"),
        root.join("models/mnist-digits/generator-int4.mcg"),
        small.clone(),
    ];
    for machine in MACHINES {
        same += &bench_row(root, &out, machine, &small)?;
        let model = largest_fitting(machine, &shipped)?;
        if model != small {
            largest += &bench_row(root, &out, machine, &model)?;
        }
    }
    let report = format!(
        "<!-- written by `cargo xtask bench-cores`; QEMU 7.2, -icount shift=0 -->\n\n\
         **One model on every core**: `{SMALL_MODEL_ONNX}` quantized to int8\n\n{same}\n\
         **The largest shipped digits model each core's memory holds**\n\n{largest}"
    );
    let path = root.join("docs/generated/cores.md");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, &report)?;
    eprintln!("\n{report}\nwritten to {}", path.display());
    Ok(())
}

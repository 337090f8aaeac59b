//! `cargo xtask eval-shipped`: the quality of the shipped models.

use std::path::Path;

use anyhow::Result;

use crate::firmware::*;
use crate::setup::*;
use crate::util::*;

pub(crate) fn eval_shipped(root: &Path) -> Result<()> {
    setup(root, false)?;
    build_host_cli(root)?;
    make_data(root, Profile::Release)?;
    let dir = root.join("models/mnist-digits");
    step("building the firmware around the shipped int8 model");
    let kept = Path::new("runs/eval/mcugan-firmware-int8.elf");
    build_firmware(root, &dir.join("generator-int8.mcg"), &root.join(kept))?;
    step("measuring float, int8 and int4 host simulation, and the int8 firmware under QEMU");
    run(mcugan(
        root,
        &[
            "eval",
            "models/mnist-digits/generator.safetensors",
            "models/mnist-digits/generator-int8.mcg",
            "models/mnist-digits/generator-int4.mcg",
            &kept.to_string_lossy(),
            "--markdown",
            "models/mnist-digits/eval.md",
            "--json",
            "models/mnist-digits/eval.json",
            "--png",
            "docs/eval-digits-by-class.png",
        ],
    ))
}

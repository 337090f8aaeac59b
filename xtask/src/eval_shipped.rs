//! `cargo xtask eval-shipped`: the quality of the shipped unconditional digits models — the
//! MLP (`models/mnist-digits`: float, int8, int4, the int8 firmware) and the compact
//! convolutional one (`models/mnist-digits-256k`: float, int8, int4, the int8 firmware).

use std::path::Path;

use anyhow::Result;

use crate::firmware::*;
use crate::setup::*;
use crate::util::*;

pub(crate) fn eval_shipped(root: &Path) -> Result<()> {
    setup(root, false)?;
    build_host_cli(root)?;
    make_data(root, Profile::Release)?;
    for (dir, blobs, picture) in [
        (
            "models/mnist-digits",
            &["generator-int8.mcg", "generator-int4.mcg"][..],
            "docs/src/images/eval-digits-by-class.png",
        ),
        (
            "models/mnist-digits-256k",
            &["generator-int8.mcg", "generator-int4.mcg"][..],
            "docs/src/images/eval-digits-256k-by-class.png",
        ),
    ] {
        step(&format!(
            "{dir}: building the firmware around the int8 model"
        ));
        let name = Path::new(dir)
            .file_name()
            .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
        let kept = format!("runs/eval/{name}-firmware-int8.elf");
        build_firmware(
            root,
            &root.join(dir).join("generator-int8.mcg"),
            &root.join(&kept),
        )?;
        step(&format!(
            "{dir}: measuring float, the blobs' host simulation and the int8 firmware under QEMU"
        ));
        let mut args = vec!["eval".to_string(), format!("{dir}/generator.safetensors")];
        args.extend(blobs.iter().map(|b| format!("{dir}/{b}")));
        args.push(kept);
        for (flag, value) in [
            ("--markdown", format!("{dir}/eval.md")),
            ("--json", format!("{dir}/eval.json")),
            ("--png", picture.to_string()),
        ] {
            args.extend([flag.to_string(), value]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(mcugan(root, &args))?;
    }
    Ok(())
}

//! Puts `memory.x` on the linker's path and embeds the model blob named by `MCUGAN_MODEL`
//! (default: the shipped digits model).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const DEFAULT_MODEL: &str = "../models/mnist-digits/generator-int8.mcg";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));

    fs::copy(manifest_dir.join("memory.x"), out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    println!("cargo:rerun-if-env-changed=MCUGAN_MODEL");
    let model = match env::var_os("MCUGAN_MODEL") {
        Some(path) => PathBuf::from(path),
        None => manifest_dir.join(DEFAULT_MODEL),
    };
    let model = absolute(&model, &manifest_dir);
    println!("cargo:rerun-if-changed={}", model.display());
    let len = match fs::metadata(&model) {
        Ok(meta) => meta.len(),
        Err(err) => {
            eprintln!(
                "error: no model blob at {} ({err}).\n\
                 Set MCUGAN_MODEL to an int8 blob made by `mcugan quantize`, \
                 or run `cargo xtask demo` from the repository root.",
                model.display()
            );
            std::process::exit(1);
        }
    };
    let source = format!(
        "/// The model blob, in flash, 16-byte aligned.\n\
         #[link_section = \".model\"]\n\
         #[used]\n\
         pub static MODEL: crate::Aligned<[u8; {len}]> = crate::Aligned(*include_bytes!({path:?}));\n",
        path = model.display().to_string(),
    );
    fs::write(out.join("model.rs"), source).expect("write model.rs");
}

/// `MCUGAN_MODEL` may be absolute or relative to the firmware directory.
fn absolute(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

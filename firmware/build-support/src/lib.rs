//! Build-script helpers shared by every mcugan firmware binary (the QEMU board and the real
//! boards): put the crate's `memory.x` on the linker's path, and embed the model blob named by
//! `MCUGAN_MODEL` (or the board's default) as `MODEL`, 16-byte aligned in the `.model` section,
//! with the sizes of the RAM buffers that model needs.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

pub mod machines;

use machines::QemuMachine;

/// The environment variable that names the QEMU machine a QEMU firmware is built for.
pub const QEMU_MACHINE_VAR: &str = "MCUGAN_QEMU_MACHINE";

fn var(name: &str) -> PathBuf {
    PathBuf::from(env::var_os(name).unwrap_or_else(|| panic!("cargo sets {name}")))
}

/// Copies the crate's memory layout `file` (relative to the crate) to `OUT_DIR/memory.x`, which
/// cortex-m-rt's `link.x` includes, and adds it to the linker search path.
///
/// No crate of this workspace keeps a file named `memory.x` in the workspace root: the linker
/// runs there and would find it before any other board's.
pub fn link_memory_x(file: &str) {
    let out = var("OUT_DIR");
    let manifest_dir = var("CARGO_MANIFEST_DIR");
    if let Err(err) = fs::copy(manifest_dir.join(file), out.join("memory.x")) {
        eprintln!("error: cannot copy {file}: {err}");
        std::process::exit(1);
    }
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={file}");
}

/// For the QEMU board: reads the machine named by `MCUGAN_QEMU_MACHINE` (default: the MPS2
/// AN386), checks that the build's target is that machine's, writes its `memory.x` to
/// `OUT_DIR` (on the linker's path) and `OUT_DIR/machine.rs`, which defines `RAM_START` and
/// `RAM_END` (`usize`) and the machine's name as `MACHINE_NAME` (`&[u8]`).
pub fn link_qemu_machine() -> &'static QemuMachine {
    println!("cargo:rerun-if-env-changed={QEMU_MACHINE_VAR}");
    let name = env::var(QEMU_MACHINE_VAR).unwrap_or_default();
    let machine = if name.is_empty() {
        machines::default_machine()
    } else {
        machines::machine(&name).unwrap_or_else(|| {
            let known: Vec<&str> = machines::MACHINES.iter().map(|m| m.name).collect();
            eprintln!(
                "error: {QEMU_MACHINE_VAR}={name}: not a machine the firmware knows ({})",
                known.join(", ")
            );
            std::process::exit(1);
        })
    };
    let target = env::var("TARGET").unwrap_or_default();
    if target != machine.target {
        eprintln!(
            "error: the {} ({}) is built for {}, not {target}: \
             cargo build --release --target {}",
            machine.name, machine.core, machine.target, machine.target
        );
        std::process::exit(1);
    }
    let out = var("OUT_DIR");
    let written = fs::write(out.join("memory.x"), machine.memory_x()).and_then(|()| {
        fs::write(
            out.join("machine.rs"),
            format!(
                "/// Where the machine's RAM starts.\npub const RAM_START: usize = {:#x};\n\
                 /// Where it ends (exclusive).\npub const RAM_END: usize = {:#x};\n\
                 /// The QEMU machine this firmware is built for.\npub const MACHINE_NAME: &[u8] = b\"{}\";\n",
                machine.ram.origin,
                u64::from(machine.ram.origin) + u64::from(machine.ram.length),
                machine.name
            ),
        )
    });
    if let Err(err) = written {
        eprintln!("error: cannot write the machine's memory.x: {err}");
        std::process::exit(1);
    }
    println!("cargo:rustc-link-search={}", out.display());
    machine
}

/// Writes an empty `device.x` next to `memory.x`, for a board without a device crate whose
/// firmware defines its own (small) `__INTERRUPTS` table (cortex-m-rt's `device` feature).
pub fn empty_device_x() {
    let out = var("OUT_DIR");
    if let Err(err) = fs::write(out.join("device.x"), "/* no device interrupt handlers */\n") {
        eprintln!("error: cannot write device.x: {err}");
        std::process::exit(1);
    }
}

/// Writes `OUT_DIR/model.rs`, which defines
/// `pub static MODEL: mcugan_firmware_app::Aligned<[u8; N]>` from the blob at `MCUGAN_MODEL`
/// (absolute, or relative to the crate) or else `default` (relative to the crate), in the
/// `.model` output section (which the crate's `memory.x` must place). The
/// binary `include!`s it. A missing blob stops the build with a clear message.
pub fn embed_model(default: &str) {
    embed_model_in(default, Some(".model"));
}

/// [`embed_model`], in `section`, or in `.rodata` with `None` (for boards whose `memory.x`
/// comes from their HAL).
pub fn embed_model_in(default: &str, section: Option<&str>) {
    let out = var("OUT_DIR");
    let manifest_dir = var("CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-env-changed=MCUGAN_MODEL");
    let model = match env::var_os("MCUGAN_MODEL") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(default),
    };
    let model = absolute(&model, &manifest_dir);
    println!("cargo:rerun-if-changed={}", model.display());
    let len = match fs::metadata(&model) {
        Ok(meta) => meta.len(),
        Err(err) => {
            eprintln!(
                "error: no model blob at {} ({err}).\n\
                 Set MCUGAN_MODEL to a blob made by `mcugan quantize`, \
                 or run `cargo xtask demo` from the repository root.",
                model.display()
            );
            std::process::exit(1);
        }
    };
    let placement = match section {
        Some(section) => format!("#[link_section = {section:?}]\n"),
        None => String::new(),
    };
    let (arena_len, scratch_len, image_pixels) = buffer_sizes(&model);
    let source = format!(
        "/// The model blob, in flash, 16-byte aligned.\n\
         {placement}\
         #[used]\n\
         pub static MODEL: mcugan_firmware_app::Aligned<[u8; {len}]> = mcugan_firmware_app::Aligned(*include_bytes!({path:?}));\n\
         /// Bytes of the activation arena the embedded model needs.\n\
         pub const ARENA_LEN: usize = {arena_len};\n\
         /// Entries (`i16`) of the scratch row the embedded model needs.\n\
         pub const SCRATCH_LEN: usize = {scratch_len};\n\
         /// Bytes of one image of the embedded model.\n\
         pub const IMAGE_PIXELS: usize = {image_pixels};\n",
        path = model.display().to_string(),
    );
    if let Err(err) = fs::write(out.join("model.rs"), source) {
        eprintln!("error: cannot write model.rs: {err}");
        std::process::exit(1);
    }
}

/// The arena, scratch-row and image sizes of the blob at `model`, so that the firmware's RAM
/// fits the model it embeds (the digits model: a 1,024-byte arena and a 1,024-entry scratch
/// row; a convolutional generator: its largest input and output tensors side by side). A
/// blob that does not parse gets the smallest buffers: the firmware refuses it at start-up
/// anyway, with the error logged (the tests build such firmware on purpose).
fn buffer_sizes(model: &Path) -> (usize, usize, usize) {
    const FOR_A_BAD_BLOB: (usize, usize, usize) = (8, 8, 1);
    let Ok(bytes) = fs::read(model) else {
        return FOR_A_BAD_BLOB;
    };
    let sizes = match mcugan_shared::Model::parse(&bytes) {
        Ok(parsed) => (
            parsed.arena_len(),
            parsed.scratch_len(),
            parsed.pixel_count(),
        ),
        Err(_) => FOR_A_BAD_BLOB,
    };
    sizes
}

fn absolute(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

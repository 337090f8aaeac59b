//! What a firmware ELF is before QEMU runs it: an Arm executable with a loadable image and the
//! `MODEL` blob mcugan's firmware embeds. A truncated file, another architecture's program or
//! somebody else's firmware is refused at once, by name, instead of running QEMU to its
//! timeout; and the embedded blob tells which model the firmware holds.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use object::{Architecture, Object, ObjectKind, ObjectSection, ObjectSymbol};

/// The most bytes a firmware ELF or a model blob may have for the tools to read it (the blob
/// of the largest model a microcontroller's flash holds is a few MiB).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Reads `path` whole, refusing what is larger than `max` bytes after reading at most one byte
/// more: a device such as `/dev/zero` ends in an error, not in a read without end.
pub fn read_bounded(path: &Path, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!(
            "{} is larger than any {what} ({max} bytes): not one",
            path.display()
        );
    }
    Ok(bytes)
}

/// The model blob a firmware ELF embeds (its `MODEL` static), after checking that the ELF is
/// an Arm executable with something to load.
pub fn embedded_model(elf: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = read_bounded(elf, MAX_FILE_BYTES, "firmware ELF")?;
    let name = elf.display();
    let file = object::File::parse(bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("{name} is not an ELF file ({e})"))?;
    if file.architecture() != Architecture::Arm {
        bail!(
            "{name} is a program for {:?}, not an Arm Cortex-M firmware",
            file.architecture()
        );
    }
    if file.kind() != ObjectKind::Executable {
        bail!("{name} is not an executable (an object file or a library?)");
    }
    if file.segments().next().is_none() {
        bail!("{name} has no loadable segment: nothing for QEMU to run");
    }
    let symbol = file
        .symbols()
        .find(|s| {
            s.name().ok().is_some_and(|raw| {
                let demangled = rustc_demangle::demangle(raw).to_string();
                let bare = demangled
                    .rsplit_once("::h")
                    .map_or(demangled.as_str(), |(b, _)| b);
                bare == "MODEL" || bare.ends_with("::MODEL")
            })
        })
        .with_context(|| {
            format!("{name} holds no MODEL: not an mcugan firmware (build one in firmware/)")
        })?;
    let section = symbol
        .section_index()
        .and_then(|index| file.section_by_index(index).ok())
        .with_context(|| format!("{name}: its MODEL lies in no section"))?;
    let data = section
        .data()
        .with_context(|| format!("{name}: its model's section cannot be read"))?;
    let start = symbol
        .address()
        .checked_sub(section.address())
        .and_then(|s| usize::try_from(s).ok());
    let len = usize::try_from(symbol.size()).ok();
    match (start, len) {
        (Some(start), Some(len)) => data
            .get(start..start.saturating_add(len))
            .map(<[u8]>::to_vec)
            .with_context(|| format!("{name}: its MODEL lies outside its section")),
        _ => bail!("{name}: its MODEL lies outside its section"),
    }
}

/// The QEMU machine a firmware ELF was built for (its `.mcugan_machine` section, which the
/// QEMU board writes), or `None` for an ELF without one (a real board's, or an older build).
pub fn built_for_machine(
    elf: &Path,
) -> anyhow::Result<Option<&'static mcugan_firmware_build::machines::QemuMachine>> {
    let bytes = read_bounded(elf, MAX_FILE_BYTES, "firmware ELF")?;
    let file = object::File::parse(bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("{} is not an ELF file ({e})", elf.display()))?;
    let Some(section) = file.section_by_name(".mcugan_machine") else {
        return Ok(None);
    };
    let data = section
        .data()
        .with_context(|| format!("{}: its machine section cannot be read", elf.display()))?;
    let name = String::from_utf8_lossy(data);
    match mcugan_firmware_build::machines::machine(name.trim_end_matches('\0')) {
        Some(machine) => Ok(Some(machine)),
        None => bail!(
            "{} was built for a QEMU machine this mcugan does not know: '{name}'",
            elf.display()
        ),
    }
}

/// A model blob in words: its name and size, for saying which model a firmware holds.
fn describe(blob: &[u8]) -> String {
    match mcugan_shared::Model::parse(blob) {
        Ok(model) => format!("model '{}' of {} bytes", model.name(), blob.len()),
        Err(e) => format!("{} bytes that are no valid model ({e})", blob.len()),
    }
}

/// Refuses `elf` unless it embeds `blob` (the file `blob_path`) byte for byte, saying which
/// model it holds instead.
pub fn check_embeds(elf: &Path, blob: &[u8], blob_path: &Path) -> anyhow::Result<()> {
    let embedded = embedded_model(elf)?;
    // The firmware keeps the blob 16-byte aligned in an array of its own length.
    if embedded != blob {
        bail!(
            "{} embeds another model than {}: it holds the {}, the file the {} (build the \
             firmware with MCUGAN_MODEL={})",
            elf.display(),
            blob_path.display(),
            describe(&embedded),
            describe(blob),
            blob_path.display()
        );
    }
    Ok(())
}

//! `mcugan sizes`: section sizes of firmware ELFs.

use std::path::PathBuf;

use anyhow::Result;
use mcugan_device_tools::firmware::{self};

use super::Global;

/// The command line of `mcugan sizes`.
#[derive(clap::Args)]
pub struct Args {
    /// The ELFs.
    #[arg(required = true)]
    pub elfs: Vec<PathBuf>,
}

/// Runs `mcugan sizes`.
pub fn run(args: Args, _global: &Global) -> Result<()> {
    let Args { elfs } = args;
    println!("| ELF | runtime flash (vector+.text+.rodata+.data) | .text | .rodata | model | static RAM |");
    println!("|---|---:|---:|---:|---:|---:|");
    for elf in elfs {
        let sizes = firmware::elf_sizes(&elf)?;
        let name = elf.file_name().map_or_else(
            || elf.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            sizes.runtime_flash(),
            sizes.text,
            sizes.rodata,
            sizes.model,
            sizes.static_ram()
        );
    }
    Ok(())
}

//! `mcugan bench-firmware`: instructions per layer and per MAC, flash read, budgets.

use std::path::PathBuf;

use anyhow::{Context, Result};
use mcugan::overwrite::{FileKind, OutputCheck};
use mcugan_device_tools::firmware::{self, QemuOptions};

use super::common::*;
use super::Global;

/// The command line of `mcugan benchfirmware`.
#[derive(clap::Args)]
pub struct Args {
    /// The firmware ELF.
    pub elf: PathBuf,
    /// The model blob it was built around.
    #[arg(long)]
    pub model: PathBuf,
    /// Seeds to draw.
    #[arg(long, default_value = "0..8")]
    pub seeds: String,
    /// Also write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Wall-clock limit in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// Runs `mcugan benchfirmware`.
pub fn run(args: Args, global: &Global) -> Result<()> {
    let force = global.force;
    let Args {
        elf,
        model,
        seeds,
        json,
        timeout,
    } = args;
    let seeds = parse_seeds(
        &seeds,
        firmware::MAX_SEEDS_PER_RUN as u64,
        "one firmware run (the firmware's seed list)",
    )?;
    if let Some(path) = &json {
        OutputCheck::new(force)
            .input(&elf, "ELF")
            .input(&model, "--model")
            .output(path, "--json", FileKind::Text)?;
    }
    let options = QemuOptions::with_timeout(timeout);
    let bench = mcugan::bench::bench_firmware(&elf, &model, &seeds, &options)?;
    println!("{}", bench.markdown());
    if let Some(path) = json {
        mcugan_model_tools::fsutil::write_atomically(&path, &serde_json::to_vec_pretty(&bench)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

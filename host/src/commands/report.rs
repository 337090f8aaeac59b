//! `mcugan report`: a model and its firmware measured, as Markdown and a picture.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use mcugan::overwrite::{FileKind, OutputCheck};
use mcugan::{generator_file, report};
use mcugan_device_tools::firmware::{self, QemuOptions};
use mcugan_shared::Model;

use super::common::*;
use super::Global;

/// The command line of `mcugan report`.
#[derive(clap::Args)]
pub struct Args {
    /// The float generator (`.safetensors` or `.onnx`).
    #[arg(long)]
    pub generator: PathBuf,
    /// The int8 blob.
    #[arg(long)]
    pub model: PathBuf,
    /// The firmware ELF built with that blob.
    #[arg(long)]
    pub elf: PathBuf,
    /// The training summary (`train-summary.json`), for seconds per epoch.
    #[arg(long)]
    pub train_summary: Option<PathBuf>,
    /// Seeds the firmware draws.
    #[arg(long, default_value = "0..25")]
    pub seeds: String,
    /// Seeds for the float-vs-int8 PSNR.
    #[arg(long, default_value = "0..256")]
    pub psnr_seeds: String,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "report.md")]
    pub out: PathBuf,
    /// Where to write the PNG grid of the chip's digits.
    #[arg(long, default_value = "chip-digits.png")]
    pub png: PathBuf,
}

/// Runs `mcugan report`.
pub fn run(args: Args, global: &Global) -> Result<()> {
    let force = global.force;
    let Args {
        generator,
        model,
        elf,
        train_summary,
        seeds,
        psnr_seeds,
        out,
        png,
    } = args;
    let mut outputs = OutputCheck::new(force);
    outputs
        .input(&generator, "--generator")
        .input(&model, "--model")
        .input(&elf, "--elf");
    if let Some(summary) = &train_summary {
        outputs.input(summary, "--train-summary");
    }
    outputs.output(&out, "--out", FileKind::Text)?;
    outputs.output(
        &out.with_extension("json"),
        "--out (its .json beside it)",
        FileKind::Text,
    )?;
    outputs.output(&png, "--png", FileKind::Png)?;
    let blob = read(&model)?;
    mcugan_device_tools::elf::check_embeds(&elf, &blob, &model)?;
    let float = generator_file::load_float_generator_contained(&generator)?;
    let training = match train_summary {
        Some(path) => Some(
            serde_json::from_slice(&read(&path)?)
                .with_context(|| format!("{} is not a training summary", path.display()))?,
        ),
        None => None,
    };
    let firmware_seeds = parse_seeds(
        &seeds,
        firmware::MAX_SEEDS_PER_RUN as u64,
        "one firmware run (the firmware's seed list)",
    )?;
    let psnr_seeds = parse_seeds(&psnr_seeds, MAX_LISTED_SEEDS, "--psnr-seeds")?;
    let qemu = QemuOptions::default();
    let (report, run) = report::build_report(&report::ReportInputs {
        float: &float,
        blob: &blob,
        elf: &elf,
        firmware_seeds: &firmware_seeds,
        psnr_seeds: &psnr_seeds,
        training,
        qemu: &qemu,
    })?;
    let image = Model::parse(&blob)?.image();
    let refs: Vec<&[u8]> = run.images.iter().map(|i| i.pixels.as_slice()).collect();
    save_digits(&png, &refs, image)?;
    let markdown = format!(
        "{}\n![digits drawn by the emulated chip]({})\n",
        report.to_markdown(),
        png.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    mcugan_model_tools::fsutil::write_atomically(&out, markdown.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    let json = out.with_extension("json");
    mcugan_model_tools::fsutil::write_atomically(&json, &serde_json::to_vec_pretty(&report)?)?;
    print!("{}", report.to_markdown());
    println!(
        "\nreport: {} ({}), picture: {}",
        out.display(),
        json.display(),
        png.display()
    );
    if !report.firmware.identical_to_host {
        bail!("the chip's images differ from the host simulation");
    }
    Ok(())
}

//! `mcugan quantize`: a float generator into the int8 (or int4) model blob, with its float-vs-int8 PSNR.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mcugan::generator_file;
use mcugan::overwrite::{FileKind, OutputCheck};
use mcugan_model_tools::quantize::{self, QuantizeOptions};
use mcugan_model_tools::simulate;

use super::common::*;
use super::Global;

/// The command line of `mcugan quantize`.
#[derive(clap::Args)]
pub struct Args {
    /// The generator: `generator.safetensors`, a training checkpoint, or an ONNX graph
    /// (`.onnx`, dense or convolutional; see docs/src/onnx.md).
    #[arg(long)]
    pub generator: PathBuf,
    /// Where to write the blob.
    #[arg(long)]
    pub out: PathBuf,
    /// The model's name in the blob.
    #[arg(long, default_value = "generator")]
    pub name: String,
    /// Generated images used to calibrate activation ranges.
    #[arg(long, default_value_t = 1024)]
    pub calibration_images: u32,
    /// Seeds to compare float and int8 on (PSNR).
    #[arg(long, default_value = "0..256")]
    pub psnr_seeds: String,
    /// Bits per weight: `8`, `4`, or one per layer (`8,4,4,4,4`).
    #[arg(long, default_value = "8", value_delimiter = ',')]
    pub bits: Vec<u8>,
    /// Store int8 weights row-major instead of the DSP kernels' blocked layout.
    #[arg(long)]
    pub row_major: bool,
    /// Leave the biases as they are (no correction of the weights' mean rounding error).
    #[arg(long)]
    pub no_bias_correction: bool,
}

/// Runs `mcugan quantize`.
pub fn run(args: Args, global: &Global) -> Result<()> {
    let force = global.force;
    let Args {
        generator,
        out,
        name,
        calibration_images,
        psnr_seeds,
        bits,
        row_major,
        no_bias_correction,
    } = args;
    let mut outputs = OutputCheck::new(force);
    outputs.input(&generator, "--generator");
    if generator.extension().is_some_and(|e| e == "onnx") {
        // The weights PyTorch's default exporter writes beside the graph.
        let mut data = generator.clone().into_os_string();
        data.push(".data");
        outputs.input(Path::new(&data), "--generator (its external data)");
    }
    outputs.output(&out, "--out", FileKind::ModelBlob)?;
    let seeds = parse_seeds(&psnr_seeds, MAX_LISTED_SEEDS, "--psnr-seeds")?;
    let float = generator_file::load_float_generator_contained(&generator)?;
    let options = QuantizeOptions {
        name,
        calibration_images,
        weight_bits: bits,
        row_major,
        bias_correction: !no_bias_correction,
        ..QuantizeOptions::default()
    };
    let quantized = quantize::quantize(&float, &options)?;
    if let Some(classes) = &float.classes {
        println!(
            "class table: {} classes of {} int8 codes at the latent's scale (1/32)",
            classes.classes, classes.width
        );
    }
    if quantized.class_codes_clipped > 0 {
        eprintln!(
            "note: {} class-embedding values lie beyond ±127/32 and were clipped to it",
            quantized.class_codes_clipped
        );
    }
    for (l, layer) in quantized.layers.iter().enumerate() {
        let weights = format!("{:?} weights", layer.weight_format);
        match layer.output {
            Some(q) => println!(
                "layer {l}: {weights}, output scale {:.5} zero point {:4}, calibrated range [{:.3}, {:.3}]",
                q.scale, q.zero_point, layer.calibrated_range.0, layer.calibrated_range.1
            ),
            None => println!(
                "layer {l}: {weights}, {:?} to pixels through the lookup table",
                float.output_activation()
            ),
        }
    }
    let comparison = simulate::compare(&float, &quantized.blob, &seeds)?;
    if comparison.psnr_db.is_nan() {
        bail!(
            "comparing the quantized model with the float generator gave no number (the \
             float images are not finite); {} was not written",
            out.display()
        );
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    mcugan_model_tools::fsutil::write_atomically(&out, &quantized.blob)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: {} bytes; float vs quantized PSNR {} over {} images",
        out.display(),
        quantized.blob.len(),
        if comparison.psnr_db.is_infinite() {
            "infinite (identical images)".to_string()
        } else {
            format!("{:.2} dB", comparison.psnr_db)
        },
        comparison.images
    );
    Ok(())
}

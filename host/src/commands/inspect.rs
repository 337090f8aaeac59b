//! `mcugan inspect`: validate a model blob and describe it.

use std::path::PathBuf;

use anyhow::Result;
use mcugan_shared::Model;

use super::common::*;
use super::Global;

/// The command line of `mcugan inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The blob.
    pub model: PathBuf,
}

/// Runs `mcugan inspect`.
pub fn run(args: Args, _global: &Global) -> Result<()> {
    let Args { model } = args;
    let blob = read(&model)?;
    let parsed = Model::parse(&blob)
        .map_err(|e| anyhow::anyhow!("{}: invalid model: {e}", model.display()))?;
    let image = parsed.image();
    println!(
        "{}: model '{}', {} bytes, valid",
        model.display(),
        parsed.name(),
        blob.len()
    );
    println!(
        "latent {} -> image {}x{}x{}; {} parameters, {} MACs per image",
        parsed.latent_dim(),
        image.width,
        image.height,
        image.channels,
        parsed.parameter_count(),
        parsed.macs()
    );
    if let Some(table) = parsed.class_table() {
        println!(
            "conditional: {} classes, a class row of {} int8 codes before the latent \
             vector (format version 4)",
            table.classes(),
            table.width()
        );
    }
    for (i, layer) in parsed.layers().iter().enumerate() {
        let stage = match layer.output {
            mcugan_shared::LayerOutput::LeakyRelu { zero_point, .. } => {
                format!("LeakyReLU -> int8 (zero point {zero_point})")
            }
            mcugan_shared::LayerOutput::Linear { zero_point } => {
                format!("no activation -> int8 (zero point {zero_point})")
            }
            mcugan_shared::LayerOutput::TanhPixels { lut } => {
                format!("pixel lookup table -> u8 ({} entries)", lut.len())
            }
        };
        println!(
            "  layer {i}: {}, {:?} weights ({} bytes), {stage}",
            mcugan::bench::layer_shape(layer),
            layer.weight_format,
            layer.weights.len()
        );
    }
    println!(
        "RAM for inference: an activation arena of {} B and a scratch row of {} B",
        parsed.arena_len(),
        2 * parsed.scratch_len()
    );
    Ok(())
}

//! Quantization: from the float generator to the int8 model blob the chip runs.
//!
//! 1. **Calibrate** activations on generated batches: the latent vectors are the very ones the
//!    chip draws ([`mcugan_shared::latent`]) for a block of calibration seeds; each hidden
//!    layer's output range is chosen by minimising the int8 round-trip error ([`calibrate`]).
//! 2. **Quantize** ([`weights`]): weights symmetric int8 (or int4, two per byte) per output
//!    channel, stored in the blocked layout the Cortex-M DSP kernels read (see
//!    [`WeightFormat`]); activations asymmetric int8 per tensor; the input zero point folded
//!    into an `i32` bias; each channel's real scale as a fixed-point multiplier and shift;
//!    LeakyReLU's negative side as a Q31 slope; Tanh and the pixel mapping as a lookup table
//!    indexed by the requantized accumulator. A convolution is stored in the chip's phased
//!    form ([`mcugan_shared::conv`]), tensors channels last.
//!
//! The float model's BatchNorms were folded into their layers before (the trainer's
//! `fold`, the ONNX importer).

use anyhow::{bail, ensure, Context};
use mcugan_shared::encode::{encode, ClassTableSpec, LayerSpec, ModelSpec, OutputSpec};
use mcugan_shared::format::{
    WeightFormat, MAX_IMAGE_PIXELS, MAX_LAYERS, MAX_LUT_LEN, MAX_TENSOR, MAX_WIDTH, ROW_BLOCK,
};
use mcugan_shared::latent::LATENT_SCALE;

pub use mcugan_float_model::{
    latent_for_seed, tanh_output_to_gray, Activation, ClassEmbedding, Conv2d, FloatGenerator,
    FloatLayer,
};

mod calibrate;
#[cfg(test)]
mod tests;
mod weights;

pub use calibrate::{choose_range, ActivationQuant};
pub use weights::{requant_from_real, requant_to_real, weight_scale};

use calibrate::{calibrate, channel_means, feature_means};
use weights::{channels_last_order, ChipWeights, LayerQuantization};

/// A conditional model's class embedding as int8 codes at the latent's scale (the first
/// layer reads both alike), and how many values were beyond the codes' range and clipped.
pub fn class_codes(classes: &ClassEmbedding) -> (Vec<i8>, usize) {
    let mut clipped = 0;
    let codes = classes
        .table
        .iter()
        .map(|&v| {
            let code = (f64::from(v) / f64::from(LATENT_SCALE)).round();
            if code.abs() > 127.0 {
                clipped += 1;
            }
            code.clamp(-127.0, 127.0) as i8
        })
        .collect();
    (codes, clipped)
}

/// A LeakyReLU slope stored as `f32` read as the decimal it was written as (0.2, not
/// 0.200000003), so that a slope from an ONNX attribute and one from this crate's constant
/// quantize to the same Q31 value.
fn slope_as_written(slope: f32) -> f64 {
    slope.to_string().parse().unwrap_or(f64::from(slope))
}

/// Settings of the quantizer.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// The model's name in the blob.
    pub name: String,
    /// Generated images used to calibrate activation ranges.
    pub calibration_images: u32,
    /// First calibration seed; calibration uses seeds `base..base + calibration_images`, away
    /// from the small seeds used to evaluate.
    pub calibration_seed_base: u32,
    /// Entries of the tanh lookup table (even, at most 4096).
    pub lut_len: usize,
    /// The table covers pre-activations in `[-lut_range, lut_range)`.
    pub lut_range: f32,
    /// Bits per weight, 8 or 4: one entry for every layer, or one per layer.
    pub weight_bits: Vec<u8>,
    /// Take each channel's mean weight-rounding error (times the mean calibration input) out
    /// of its bias.
    pub bias_correction: bool,
    /// Store int8 weights row-major instead of in the blocked layout of the DSP kernels
    /// (same images, slower on Cortex-M4/M7; int4 is always blocked).
    pub row_major: bool,
}

impl QuantizeOptions {
    /// The weight format of layer `index` of `layers`.
    pub fn weight_format(&self, index: usize, layers: usize) -> anyhow::Result<WeightFormat> {
        let bits = match self.weight_bits.as_slice() {
            [] => 8,
            [all] => *all,
            per_layer => {
                ensure!(
                    per_layer.len() == layers,
                    "--bits lists {} layers, the generator has {layers}",
                    per_layer.len()
                );
                per_layer[index]
            }
        };
        match (bits, self.row_major) {
            (8, false) => Ok(WeightFormat::I8Blocked),
            (8, true) => Ok(WeightFormat::I8RowMajor),
            (4, _) => Ok(WeightFormat::I4Blocked),
            (other, _) => bail!("{other}-bit weights are not supported (use 8 or 4)"),
        }
    }
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self {
            name: "generator".into(),
            calibration_images: 1024,
            calibration_seed_base: 1_000_000,
            lut_len: 1024,
            lut_range: 4.0,
            weight_bits: vec![8],
            bias_correction: true,
            row_major: false,
        }
    }
}

/// What the quantizer chose, layer by layer (for reports).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerQuantReport {
    /// Input quantization.
    pub input: ActivationQuant,
    /// Output quantization (`None` for the pixel layer).
    pub output: Option<ActivationQuant>,
    /// How the weights are stored.
    pub weight_format: WeightFormat,
    /// Smallest and largest per-channel weight scale.
    pub weight_scale_range: (f64, f64),
    /// Calibrated output range before clipping (min, max).
    pub calibrated_range: (f32, f32),
}

/// The quantizer's result.
#[derive(Clone, Debug)]
pub struct Quantized {
    /// The model blob.
    pub blob: Vec<u8>,
    /// Per-layer choices.
    pub layers: Vec<LayerQuantReport>,
    /// Class-embedding values of a conditional model beyond the codes' range (±127/32),
    /// clipped to it.
    pub class_codes_clipped: usize,
}

/// LeakyReLU's slope in Q31.
pub fn slope_q31(slope: f64) -> i32 {
    (slope * 2f64.powi(31)).round() as i32
}

/// Calibrates, quantizes and encodes `model`.
pub fn quantize(model: &FloatGenerator, options: &QuantizeOptions) -> anyhow::Result<Quantized> {
    let slopes = check_quantizable(model, options)?;
    let layers = &model.layers;
    let last = layers.len() - 1;
    let observed = calibrate(model, options)?;
    let output_quants: Vec<ActivationQuant> = observed.iter().map(|v| choose_range(v)).collect();
    let (lut, lut_step) = pixel_lut(model.output_activation(), options);

    let mut quantized: Vec<(ChipWeights, LayerQuantReport)> = Vec::with_capacity(layers.len());
    let mut input = ActivationQuant::LATENT;
    for (l, layer) in layers.iter().enumerate() {
        let is_last = l == last;
        let output_scale = if is_last {
            lut_step
        } else {
            output_quants[l].scale
        };
        // The mean of each input (a dense layer) or input channel (a convolution) over the
        // calibration images (the latent's is zero), for bias correction; empty when off.
        let input_means: Vec<f64> = match (options.bias_correction, l.checked_sub(1)) {
            (true, Some(previous)) => match &layer.conv {
                Some(conv) => channel_means(
                    &observed[previous],
                    conv.in_channels,
                    conv.input[0] * conv.input[1],
                ),
                None => feature_means(&observed[previous], layer.inputs),
            },
            _ => Vec::new(),
        };
        let format = match options.weight_format(l, layers.len())? {
            // A convolution of fewer output channels than a row group of the blocked layout
            // (an image's last layer) runs faster row-major, without gathering patches.
            WeightFormat::I8Blocked
                if layer
                    .conv
                    .as_ref()
                    .is_some_and(|c| c.out_channels < ROW_BLOCK) =>
            {
                WeightFormat::I8RowMajor
            }
            format => format,
        };
        let quantization = LayerQuantization {
            index: l,
            format,
            input,
            output_scale,
            input_means: &input_means,
        };
        let mut chip = match layer.conv {
            Some(_) => quantization.conv(layer)?,
            None => quantization.dense(layer)?,
        };
        if layer.conv.is_none() {
            to_channels_last(model, l, &mut chip);
        }
        let calibrated = observed
            .get(l)
            .map(|v| {
                v.iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                        (a.min(x), b.max(x))
                    })
            })
            .unwrap_or((-1.0, 1.0));
        let report = LayerQuantReport {
            input,
            output: output_quants.get(l).copied(),
            weight_format: format,
            weight_scale_range: chip.scale_range,
            calibrated_range: calibrated,
        };
        quantized.push((chip, report));
        if !is_last {
            input = output_quants[l];
        }
    }

    let specs: Vec<LayerSpec> = layers
        .iter()
        .zip(&quantized)
        .enumerate()
        .map(|(l, (layer, (chip, report)))| LayerSpec {
            inputs: layer.inputs as u32,
            outputs: layer.outputs as u32,
            conv: chip.conv.clone(),
            weights: &chip.weights,
            weight_format: report.weight_format,
            channels: &chip.channels,
            output: match (l == last, slopes[l]) {
                (true, _) => OutputSpec::TanhPixels { lut: &lut },
                (false, Some(negative_slope_q31)) => OutputSpec::LeakyRelu {
                    zero_point: output_quants[l].zero_point,
                    negative_slope_q31,
                },
                (false, None) => OutputSpec::Linear {
                    zero_point: output_quants[l].zero_point,
                },
            },
        })
        .collect();
    let (codes, class_codes_clipped) = match &model.classes {
        Some(classes) => {
            let (codes, clipped) = class_codes(classes);
            (Some(codes), clipped)
        }
        None => (None, 0),
    };
    let blob = encode(&ModelSpec {
        name: &options.name,
        latent_dim: model.latent_dim() as u16,
        image: model.image,
        layers: &specs,
        classes: match (&model.classes, &codes) {
            (Some(classes), Some(codes)) => Some(ClassTableSpec {
                width: u16::try_from(classes.width).context("the class embedding is too wide")?,
                codes,
            }),
            _ => None,
        },
    })?;
    Ok(Quantized {
        blob,
        layers: quantized.into_iter().map(|(_, report)| report).collect(),
        class_codes_clipped,
    })
}

/// Puts dense layer `l`'s rows and columns in the chip's channels-last order where it meets
/// a tensor of several channels: columns when a convolution feeds it, rows when it feeds a
/// convolution or draws an image of several channels (the float model is channels first).
fn to_channels_last(model: &FloatGenerator, l: usize, chip: &mut ChipWeights) {
    let layers = &model.layers;
    let columns = layers[l].inputs;
    if let Some(conv) = l.checked_sub(1).and_then(|p| layers[p].conv.as_ref()) {
        let [h, w] = conv.output;
        chip.permute_columns(&channels_last_order(conv.out_channels, h, w));
    }
    let fed = match layers.get(l + 1).and_then(|next| next.conv.as_ref()) {
        Some(next) => Some((next.in_channels, next.input[0], next.input[1])),
        None if l + 1 == layers.len() && model.image.channels > 1 => Some((
            usize::from(model.image.channels),
            usize::from(model.image.height),
            usize::from(model.image.width),
        )),
        None => None,
    };
    if let Some((c, h, w)) = fed {
        chip.permute_rows(&channels_last_order(c, h, w), columns);
    }
}

/// Checks that `model` is one the chip runs and `options` fit the format: finite
/// parameters, LeakyReLU (or no activation) in hidden layers and a pixel output, widths and
/// tensors, layer count, image, class embedding. Returns each hidden layer's slope in Q31
/// (`None`: no activation).
fn check_quantizable(
    model: &FloatGenerator,
    options: &QuantizeOptions,
) -> anyhow::Result<Vec<Option<i32>>> {
    let layers = &model.layers;
    ensure!(layers.len() >= 2, "the generator needs at least two layers");
    for (l, layer) in layers.iter().enumerate() {
        for (what, values) in [("weights", &layer.weight), ("biases", &layer.bias)] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                bail!(
                    "layer {l} ({} -> {}): its {what} hold {} at index {i}: the generator is \
                     broken (a diverged training?) and cannot be quantized",
                    layer.inputs,
                    layer.outputs,
                    values[i]
                );
            }
        }
    }
    let output_activation = model.output_activation();
    ensure!(
        output_activation.makes_pixels(),
        "the last layer must end in Tanh or Sigmoid (the chip's pixel output)"
    );
    let mut slopes = Vec::with_capacity(layers.len());
    for (l, layer) in layers[..layers.len() - 1].iter().enumerate() {
        match layer.activation {
            Activation::LeakyRelu(slope) if (0.0..1.0).contains(&slope) => {
                slopes.push(Some(slope_q31(slope_as_written(slope))));
            }
            Activation::Identity => slopes.push(None),
            other => bail!(
                "layer {l} ends in {other:?}; hidden layers must use LeakyReLU (slope in [0, 1)) \
                 or ReLU, or no activation"
            ),
        }
    }
    slopes.push(None);
    ensure!(
        (2..=MAX_LUT_LEN).contains(&options.lut_len) && options.lut_len.is_multiple_of(2),
        "the lookup table length must be even and at most {MAX_LUT_LEN}"
    );
    ensure!(
        layers.len() <= MAX_LAYERS,
        "the generator has {} layers; the model format holds at most {MAX_LAYERS}",
        layers.len()
    );
    // Every width and tensor must fit the format and the chip's buffers: check them here,
    // before any narrowing, so that no width can wrap into a smaller valid one.
    for (l, layer) in layers.iter().enumerate() {
        for (what, width) in [("inputs", layer.inputs), ("outputs", layer.outputs)] {
            ensure!(
                (1..=MAX_TENSOR).contains(&width),
                "layer {l} has {width} {what}; the model format holds tensors of 1..={MAX_TENSOR}"
            );
        }
        if layer.conv.is_none() {
            ensure!(
                layer.inputs <= MAX_WIDTH,
                "layer {l} is a dense layer of {} inputs; the chip's dense layers take at most \
                 {MAX_WIDTH}",
                layer.inputs
            );
        }
        if let Some(conv) = &layer.conv {
            conv.check()
                .map_err(|e| anyhow::anyhow!("layer {l}: {e}"))?;
            ensure!(
                layer.weight.len() == conv.out_channels * conv.row_len()
                    && layer.bias.len() == conv.out_channels,
                "layer {l}: {} weights and {} biases for a convolution of {} output channels \
                 of {} weights",
                layer.weight.len(),
                layer.bias.len(),
                conv.out_channels,
                conv.row_len()
            );
        }
    }
    let pixels = layers[layers.len() - 1].outputs;
    let image = model.image;
    ensure!(
        image.checked_pixel_count() == Some(pixels),
        "the image {}x{}x{} does not hold the last layer's {pixels} outputs \
         (at most {MAX_IMAGE_PIXELS} pixels)",
        image.width,
        image.height,
        image.channels
    );
    if let Some(classes) = &model.classes {
        ensure!(
            classes.classes >= 1
                && classes.table.len() == classes.classes * classes.width
                && classes.width < layers[0].inputs,
            "the class embedding ({} classes of {} values, {} in all) does not fit the first \
             layer's {} inputs",
            classes.classes,
            classes.width,
            classes.table.len(),
            layers[0].inputs
        );
        ensure!(
            classes.table.iter().all(|v| v.is_finite()),
            "the class embedding holds a value that is not finite: the generator is broken"
        );
    }
    Ok(slopes)
}

/// The output activation and the pixel mapping as the lookup table the chip indexes by the
/// requantized accumulator, and the accumulator scale of one table step.
fn pixel_lut(output_activation: Activation, options: &QuantizeOptions) -> (Vec<u8>, f64) {
    let half = options.lut_len / 2;
    let lut_step = f64::from(options.lut_range) / half as f64;
    let lut: Vec<u8> = (0..options.lut_len)
        .map(|i| {
            let pre = (i as f64 - half as f64) * lut_step;
            output_activation
                .to_gray(output_activation.apply(pre) as f32)
                .round() as u8
        })
        .collect();
    (lut, lut_step)
}

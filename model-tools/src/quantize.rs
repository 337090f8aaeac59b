//! Quantization: from the trained float generator to the int8 model blob the chip runs.
//!
//! 1. **Fold** each BatchNorm (running statistics) into the Linear before it:
//!    `w' = w·γ/√(var+ε)`, `b' = (b − mean)·γ/√(var+ε) + β`. The result, [`FloatGenerator`], is
//!    a plain-Rust float model: the reference the int8 model is measured against.
//! 2. **Calibrate** activations on generated batches: the latent vectors are the very ones the
//!    chip draws ([`mcugan_shared::latent`]) for a block of calibration seeds; each hidden
//!    layer's output range is chosen by minimising the int8 round-trip error.
//! 3. **Quantize**: weights symmetric int8 (or int4, two per byte) per output channel, stored
//!    in the blocked layout the Cortex-M DSP kernels read (see [`WeightFormat`]); activations asymmetric int8 per
//!    tensor; the input zero point folded into an `i32` bias; each channel's real scale as a
//!    fixed-point multiplier and shift; LeakyReLU's negative side as a Q31 slope; Tanh and the
//!    pixel mapping as a lookup table indexed by the requantized accumulator.

use anyhow::{bail, ensure, Context};
use mcugan_shared::encode::{encode, LayerSpec, ModelSpec, OutputSpec};
use mcugan_shared::format::{
    ChannelRequant, WeightFormat, MAX_ABS_BIAS, MAX_IMAGE_PIXELS, MAX_LAYERS, MAX_LUT_LEN,
    MAX_WIDTH,
};
use mcugan_shared::latent::LATENT_SCALE;
use mcugan_shared::requant::{MAX_SHIFT, MIN_SHIFT};
use mcugan_shared::Requant;

pub use mcugan_float_model::{
    latent_for_seed, tanh_output_to_gray, Activation, ClassEmbedding, FloatGenerator, FloatLayer,
};
use mcugan_shared::encode::ClassTableSpec;
use mcugan_shared::ImageRequest;

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

/// The mean of each of `width` features over rows of `values` (row-major, `width` per row).
fn feature_means(values: &[f32], width: usize) -> Vec<f64> {
    let mut sums = vec![0f64; width];
    let rows = values.len() / width.max(1);
    for row in values.chunks_exact(width.max(1)) {
        for (sum, &v) in sums.iter_mut().zip(row) {
            *sum += f64::from(v);
        }
    }
    sums.iter().map(|s| s / rows.max(1) as f64).collect()
}

/// The per-channel weight scale: the largest magnitude maps to the largest code for int8;
/// for int4, where the largest weight would waste most of the 15 levels, the clip that
/// minimises the squared rounding error.
pub fn weight_scale(row: &[f32], format: WeightFormat) -> f64 {
    let max_abs = f64::from(row.iter().fold(0f32, |m, &w| m.max(w.abs())));
    if max_abs == 0.0 {
        return 1.0;
    }
    let levels = f64::from(format.range().1);
    if format.bits() == 8 {
        return max_abs / levels;
    }
    let error = |scale: f64| -> f64 {
        row.iter()
            .map(|&w| {
                let w = f64::from(w);
                let q = (w / scale).round().clamp(-levels, levels);
                (w - q * scale).powi(2)
            })
            .sum()
    };
    (0..=60)
        .map(|step| max_abs * (0.4 + 0.01 * f64::from(step)) / levels)
        .map(|scale| (error(scale), scale))
        .fold((f64::INFINITY, max_abs / levels), |best, candidate| {
            if candidate.0 < best.0 {
                candidate
            } else {
                best
            }
        })
        .1
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

/// An int8 activation quantization: `real = (q − zero_point) · scale`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ActivationQuant {
    /// Real value of one step.
    pub scale: f64,
    /// The code of real zero.
    pub zero_point: i8,
}

impl ActivationQuant {
    /// The latent vector's fixed quantization.
    pub const LATENT: ActivationQuant = ActivationQuant {
        scale: LATENT_SCALE as f64,
        zero_point: 0,
    };

    /// The quantization that covers `[lo, hi]` (widened to include 0) with 256 codes.
    pub fn covering(lo: f32, hi: f32) -> Self {
        let lo = f64::from(lo.min(0.0));
        let hi = f64::from(hi.max(0.0));
        let scale = ((hi - lo) / 255.0).max(1e-8);
        let zero_point = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i8;
        Self { scale, zero_point }
    }

    /// Quantize then dequantize.
    pub fn round_trip(&self, value: f32) -> f32 {
        let q = (f64::from(value) / self.scale).round() + f64::from(self.zero_point);
        let q = q.clamp(-128.0, 127.0);
        ((q - f64::from(self.zero_point)) * self.scale) as f32
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

/// A real factor as the chip's fixed-point `(multiplier, shift)`, rounded to 31 bits.
pub fn requant_from_real(factor: f64) -> anyhow::Result<Requant> {
    ensure!(
        factor.is_finite() && factor > 0.0,
        "requantization factor {factor} is not positive"
    );
    // factor = fraction · 2^exponent with fraction in [0.5, 1).
    let mut exponent = factor.log2().floor() as i32 + 1;
    let mut fraction = factor / 2f64.powi(exponent);
    while fraction >= 1.0 {
        fraction /= 2.0;
        exponent += 1;
    }
    while fraction < 0.5 {
        fraction *= 2.0;
        exponent -= 1;
    }
    let mut multiplier = (fraction * 2f64.powi(31)).round() as i64;
    if multiplier == 1 << 31 {
        multiplier /= 2;
        exponent += 1;
    }
    let shift = -exponent;
    if !(MIN_SHIFT..=MAX_SHIFT).contains(&shift) {
        bail!("requantization factor {factor:e} is outside the chip's range");
    }
    Ok(Requant {
        multiplier: multiplier as i32,
        shift,
    })
}

/// The value a `Requant` stands for.
pub fn requant_to_real(r: Requant) -> f64 {
    f64::from(r.multiplier) / 2f64.powi(31 + r.shift)
}

/// LeakyReLU's slope in Q31.
pub fn slope_q31(slope: f64) -> i32 {
    (slope * 2f64.powi(31)).round() as i32
}

/// The range for a layer's output that minimises the int8 round-trip error over `values`.
/// Candidates clip the top at a few high percentiles (the rare largest activations otherwise
/// spend the codes); the bottom is the minimum.
pub fn choose_range(values: &[f32]) -> ActivationQuant {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let lo = sorted.first().copied().unwrap_or(0.0);
    let n = sorted.len();
    let mut best: Option<(f64, ActivationQuant)> = None;
    for keep in [1.0, 0.99999, 0.9999, 0.9995, 0.999, 0.998, 0.995] {
        let at = ((n as f64 * keep).ceil() as usize).clamp(1, n.max(1)) - 1;
        let hi = sorted.get(at).copied().unwrap_or(0.0);
        let quant = ActivationQuant::covering(lo, hi);
        let error: f64 = values
            .iter()
            .map(|&v| {
                let d = f64::from(v - quant.round_trip(v));
                d * d
            })
            .sum();
        if best.is_none_or(|(e, _)| error < e) {
            best = Some((error, quant));
        }
    }
    best.map_or(ActivationQuant::covering(0.0, 1.0), |(_, q)| q)
}

/// Calibrates, quantizes and encodes `model`.
pub fn quantize(model: &FloatGenerator, options: &QuantizeOptions) -> anyhow::Result<Quantized> {
    let slopes = check_quantizable(model, options)?;
    let layers = &model.layers;
    let hidden = layers.len() - 1;
    let observed = calibrate(model, options)?;
    let output_quants: Vec<ActivationQuant> = observed.iter().map(|v| choose_range(v)).collect();
    let (lut, lut_step) = pixel_lut(model.output_activation(), options);

    let mut quantized = Vec::with_capacity(layers.len());
    let mut input = ActivationQuant::LATENT;
    for (l, layer) in layers.iter().enumerate() {
        let is_last = l == hidden;
        let output_scale = if is_last {
            lut_step
        } else {
            output_quants[l].scale
        };
        // The mean of each input over the calibration images (the latent's is zero), used for
        // bias correction; empty when it is off.
        let input_means: Vec<f64> = match (options.bias_correction, l.checked_sub(1)) {
            (true, Some(previous)) => feature_means(&observed[previous], layer.inputs),
            _ => Vec::new(),
        };
        let format = options.weight_format(l, layers.len())?;
        let QuantizedWeights {
            weights,
            channels,
            scale_range: weight_scale_range,
        } = quantize_weights(l, layer, format, input, output_scale, &input_means)?;
        let calibrated = observed
            .get(l)
            .map(|v| {
                v.iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                        (a.min(x), b.max(x))
                    })
            })
            .unwrap_or((-1.0, 1.0));
        quantized.push((
            weights,
            channels,
            LayerQuantReport {
                input,
                output: output_quants.get(l).copied(),
                weight_format: format,
                weight_scale_range,
                calibrated_range: calibrated,
            },
        ));
        if !is_last {
            input = output_quants[l];
        }
    }

    let specs: Vec<LayerSpec> = layers
        .iter()
        .zip(&quantized)
        .enumerate()
        .map(|(l, (layer, (weights, channels, report)))| LayerSpec {
            inputs: layer.inputs as u32,
            outputs: layer.outputs as u32,
            conv: None,
            weights,
            weight_format: report.weight_format,
            channels,
            output: if l == hidden {
                OutputSpec::TanhPixels { lut: &lut }
            } else {
                OutputSpec::LeakyRelu {
                    zero_point: output_quants[l].zero_point,
                    negative_slope_q31: slopes[l],
                }
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
        layers: quantized.into_iter().map(|(_, _, report)| report).collect(),
        class_codes_clipped,
    })
}

/// Checks that `model` is one the chip runs and `options` fit the format: finite
/// parameters, LeakyReLU hidden layers and a pixel output, widths, layer count, image, class
/// embedding. Returns the hidden layers' slopes in Q31.
fn check_quantizable(
    model: &FloatGenerator,
    options: &QuantizeOptions,
) -> anyhow::Result<Vec<i32>> {
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
    let mut slopes = Vec::with_capacity(layers.len() - 1);
    for (l, layer) in layers[..layers.len() - 1].iter().enumerate() {
        match layer.activation {
            Activation::LeakyRelu(slope) if (0.0..1.0).contains(&slope) => {
                slopes.push(slope_q31(slope_as_written(slope)));
            }
            other => bail!(
                "layer {l} ends in {other:?}; hidden layers must use LeakyReLU (slope in [0, 1)) \
                 or ReLU"
            ),
        }
    }
    ensure!(
        (2..=MAX_LUT_LEN).contains(&options.lut_len) && options.lut_len.is_multiple_of(2),
        "the lookup table length must be even and at most {MAX_LUT_LEN}"
    );
    ensure!(
        layers.len() <= MAX_LAYERS,
        "the generator has {} layers; the model format holds at most {MAX_LAYERS}",
        layers.len()
    );
    // Every width is stored as a u16 and must fit the chip's activation buffers: check them
    // here, before any narrowing, so that no width can wrap into a smaller valid one.
    for (l, layer) in layers.iter().enumerate() {
        for (what, width) in [("inputs", layer.inputs), ("outputs", layer.outputs)] {
            ensure!(
                (1..=MAX_WIDTH).contains(&width),
                "layer {l} has {width} {what}; the model format holds widths 1..={MAX_WIDTH}"
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

/// Calibration: every hidden layer's outputs over the calibration images, from the model's
/// float reference.
fn calibrate(model: &FloatGenerator, options: &QuantizeOptions) -> anyhow::Result<Vec<Vec<f32>>> {
    let layers = &model.layers;
    let hidden = layers.len() - 1;
    let mut observed: Vec<Vec<f32>> = vec![Vec::new(); hidden];
    for i in 0..options.calibration_images {
        // A conditional model is calibrated on every class alike (seed i draws class i mod C).
        let request = ImageRequest::default_for(
            options.calibration_seed_base.wrapping_add(i),
            model.class_count(),
        );
        let z = model.input_for(request)?;
        let outputs = model.forward_all(&z)?;
        ensure!(
            outputs.len() == layers.len(),
            "the float reference returned {} layer outputs for {} layers",
            outputs.len(),
            layers.len()
        );
        for (l, out) in outputs.iter().take(hidden).enumerate() {
            ensure!(
                out.len() == layers[l].outputs,
                "the float reference's layer {l} output has {} values, the layer {}",
                out.len(),
                layers[l].outputs
            );
            observed[l].extend_from_slice(out);
        }
    }
    Ok(observed)
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

/// Layer `l`'s weights in `format` (per output channel, symmetric), each channel's `i32`
/// bias (the input zero point folded in, and with `input_means` the weights' rounding drift
/// taken out) and its requantization to `output_scale`; also the smallest and largest
/// channel weight scale.
fn quantize_weights(
    l: usize,
    layer: &FloatLayer,
    format: WeightFormat,
    input: ActivationQuant,
    output_scale: f64,
    input_means: &[f64],
) -> anyhow::Result<QuantizedWeights> {
    let levels = f64::from(format.range().1);
    let mut w_q = Vec::with_capacity(layer.weight.len());
    let mut channels = Vec::with_capacity(layer.outputs);
    let (mut min_ws, mut max_ws) = (f64::INFINITY, 0f64);
    for (o, row) in layer.weight.chunks_exact(layer.inputs).enumerate() {
        let w_scale = weight_scale(row, format);
        min_ws = min_ws.min(w_scale);
        max_ws = max_ws.max(w_scale);
        let mut sum_q: i64 = 0;
        // Bias correction: the rounding error of the weights times the mean input, taken
        // back out of the bias so the channel's mean output does not drift.
        let mut drift = 0f64;
        for (i, &w) in row.iter().enumerate() {
            let q = (f64::from(w) / w_scale).round().clamp(-levels, levels) as i8;
            sum_q += i64::from(q);
            w_q.push(q);
            if let Some(mean) = input_means.get(i) {
                drift += (f64::from(q) * w_scale - f64::from(w)) * mean;
            }
        }
        let acc_scale = input.scale * w_scale;
        let corrected_bias = f64::from(layer.bias[o]) - drift;
        let bias =
            (corrected_bias / acc_scale).round() as i64 - i64::from(input.zero_point) * sum_q;
        ensure!(
            bias.abs() <= i64::from(MAX_ABS_BIAS),
            "layer {l}, channel {o}: bias {bias} does not fit the accumulator"
        );
        let requant = requant_from_real(acc_scale / output_scale)
            .with_context(|| format!("layer {l}, channel {o}"))?;
        channels.push(ChannelRequant {
            bias: bias as i32,
            requant,
        });
    }
    Ok(QuantizedWeights {
        weights: w_q,
        channels,
        scale_range: (min_ws, max_ws),
    })
}

/// One layer's quantized weights and channel records.
struct QuantizedWeights {
    weights: Vec<i8>,
    channels: Vec<ChannelRequant>,
    /// The smallest and largest channel weight scale.
    scale_range: (f64, f64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcugan_shared::ImageShape;

    #[test]
    fn requant_from_real_is_accurate_and_normalised() {
        for factor in [
            1e-6,
            0.000_123_4,
            0.01,
            0.5,
            0.999_999_999_9,
            1.0,
            3.7,
            1234.5,
        ] {
            let r = requant_from_real(factor).unwrap();
            assert!(
                (1 << 30..=i32::MAX).contains(&r.multiplier),
                "{factor}: {r:?}"
            );
            let back = requant_to_real(r);
            assert!(
                ((back - factor) / factor).abs() < 1e-9,
                "{factor} -> {back}"
            );
        }
        assert!(requant_from_real(0.0).is_err());
        assert!(requant_from_real(f64::NAN).is_err());
        assert!(requant_from_real(1e30).is_err());
    }

    #[test]
    fn requantization_rounds_like_the_real_product() {
        // The chip's integer requantization against round-half-up of the exact real product.
        let r = requant_from_real(0.013_7).unwrap();
        let exact = requant_to_real(r);
        for acc in -100_000..100_000 {
            let expected = (f64::from(acc) * exact + 0.5).floor() as i32;
            assert_eq!(r.apply(acc), expected, "acc {acc}");
        }
    }

    #[test]
    fn activation_quant_covers_its_range() {
        let q = ActivationQuant::covering(-0.4, 5.0);
        assert!((q.round_trip(0.0)).abs() < 1e-9, "zero is exact");
        assert!((q.round_trip(5.0) - 5.0).abs() <= q.scale as f32);
        assert!((q.round_trip(-0.4) + 0.4).abs() <= q.scale as f32);
        // Clipping above the range.
        assert!((q.round_trip(50.0) - 5.0).abs() <= q.scale as f32);
    }

    fn dense(inputs: usize, outputs: usize, activation: Activation) -> FloatLayer {
        FloatLayer {
            inputs,
            outputs,
            weight: vec![0.01; inputs * outputs],
            bias: vec![0.0; outputs],
            activation,
        }
    }

    fn quantize_err(layers: Vec<FloatLayer>, image: ImageShape) -> String {
        let model = FloatGenerator::new(layers, image);
        let options = QuantizeOptions {
            calibration_images: 2,
            ..QuantizeOptions::default()
        };
        quantize(&model, &options).unwrap_err().to_string()
    }

    /// Widths are checked against the format before they are narrowed to `u16`: 65,536 + 16
    /// outputs would otherwise wrap to a valid 16.
    #[test]
    fn widths_and_images_beyond_the_format_are_refused_before_narrowing() {
        let image = |w: u16, h: u16| ImageShape {
            width: w,
            height: h,
            channels: 1,
        };
        let text = quantize_err(
            vec![
                dense(2, 65_536 + 16, Activation::LeakyRelu(0.2)),
                dense(65_536 + 16, 16, Activation::Tanh),
            ],
            image(4, 4),
        );
        assert!(
            text.contains("65552 outputs") && text.contains("1..=4096"),
            "{text}"
        );
        let text = quantize_err(
            vec![
                dense(2, 8, Activation::LeakyRelu(0.2)),
                dense(8, 4097, Activation::Tanh),
            ],
            image(4097, 1),
        );
        assert!(text.contains("4097 outputs"), "{text}");
        // An image shape that does not hold the last layer's outputs.
        let text = quantize_err(
            vec![
                dense(2, 8, Activation::LeakyRelu(0.2)),
                dense(8, 16, Activation::Tanh),
            ],
            image(5, 5),
        );
        assert!(
            text.contains("5x5x1") && text.contains("16 outputs"),
            "{text}"
        );
        // A hidden Tanh, a LeakyReLU slope of 1 or more.
        let text = quantize_err(
            vec![
                dense(2, 8, Activation::Tanh),
                dense(8, 16, Activation::Tanh),
            ],
            image(4, 4),
        );
        assert!(text.contains("hidden layers must use LeakyReLU"), "{text}");
        let text = quantize_err(
            vec![
                dense(2, 8, Activation::LeakyRelu(1.5)),
                dense(8, 16, Activation::Sigmoid),
            ],
            image(4, 4),
        );
        assert!(text.contains("layer 0"), "{text}");
    }

    #[test]
    fn lut_and_slope_constants() {
        assert_eq!(slope_q31(0.2), 429_496_730);
        assert_eq!(slope_q31(slope_as_written(0.2f32)), 429_496_730);
        assert_eq!(tanh_output_to_gray(-1.0), 0.0);
        assert_eq!(tanh_output_to_gray(1.0), 255.0);
    }
}

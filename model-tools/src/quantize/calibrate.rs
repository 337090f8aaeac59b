//! Calibration: what the float model's activations look like on the latent vectors the chip
//! draws, and the int8 quantization of each hidden layer's output chosen from them.

use mcugan_shared::latent::LATENT_SCALE;
use mcugan_shared::ImageRequest;

use super::{FloatGenerator, QuantizeOptions};
use anyhow::ensure;

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

/// Calibration: every hidden layer's outputs over the calibration images, from the model's
/// float reference.
pub(super) fn calibrate(
    model: &FloatGenerator,
    options: &QuantizeOptions,
) -> anyhow::Result<Vec<Vec<f32>>> {
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

/// The mean of each of `width` features over rows of `values` (row-major, `width` per row).
pub(super) fn feature_means(values: &[f32], width: usize) -> Vec<f64> {
    let mut sums = vec![0f64; width];
    let rows = values.len() / width.max(1);
    for row in values.chunks_exact(width.max(1)) {
        for (sum, &v) in sums.iter_mut().zip(row) {
            *sum += f64::from(v);
        }
    }
    sums.iter().map(|s| s / rows.max(1) as f64).collect()
}

/// The mean of each of `channels` channels of channels-first tensors in `values` (row after
/// row of `channels * pixels` entries): a convolution's input means, for bias correction.
pub(super) fn channel_means(values: &[f32], channels: usize, pixels: usize) -> Vec<f64> {
    let mut sums = vec![0f64; channels];
    let per_image = (channels * pixels).max(1);
    let images = values.len() / per_image;
    for image in values.chunks_exact(per_image) {
        for (sum, channel) in sums.iter_mut().zip(image.chunks_exact(pixels.max(1))) {
            *sum += channel.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
    }
    sums.iter()
        .map(|s| s / (images * pixels).max(1) as f64)
        .collect()
}

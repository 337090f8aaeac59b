//! Weights: each output channel's int8 or int4 weights and scale, its `i32` bias (input zero
//! point folded in, rounding drift corrected) and its fixed-point requantization; and the
//! order the chip keeps tensors in (channels last), into which a dense layer's rows or
//! columns are permuted where it meets a convolution or an RGB image.

use anyhow::{bail, ensure, Context};
use mcugan_shared::conv::ConvHeader;
use mcugan_shared::format::{ChannelRequant, WeightFormat, MAX_ABS_BIAS};
use mcugan_shared::requant::{MAX_SHIFT, MIN_SHIFT};
use mcugan_shared::Requant;

use super::calibrate::ActivationQuant;
use super::FloatLayer;

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

/// One layer's weights and channel records as the chip stores them.
pub(super) struct ChipWeights {
    /// A dense layer's matrix (rows and columns in the chip's order), or a convolution's
    /// phases' matrices one after another.
    pub weights: Vec<i8>,
    /// One record per output channel (a convolution: per phase and output channel).
    pub channels: Vec<ChannelRequant>,
    /// A convolution's phased geometry.
    pub conv: Option<ConvHeader>,
    /// The smallest and largest channel weight scale.
    pub scale_range: (f64, f64),
}

/// What quantizing one layer needs besides the layer: its input's quantization, the real
/// value of one output step, and (bias correction) the mean of each input feature (a dense
/// layer) or input channel (a convolution) over the calibration images, or nothing.
pub(super) struct LayerQuantization<'a> {
    /// Layer index, for messages.
    pub index: usize,
    /// How the weights are stored.
    pub format: WeightFormat,
    /// The input's quantization.
    pub input: ActivationQuant,
    /// The output's scale (a hidden layer's step, the pixel table's step).
    pub output_scale: f64,
    /// Input means for bias correction; empty when it is off.
    pub input_means: &'a [f64],
}

impl LayerQuantization<'_> {
    /// One output channel: its `row` of float weights quantized with `w_scale` into `out`,
    /// and its record (`bias` with the rounding drift over the input means taken out, where
    /// `mean_of(k)` is column `k`'s input mean, and the input zero point folded in).
    fn channel(
        &self,
        channel: usize,
        row: &[f32],
        w_scale: f64,
        bias: f32,
        mean_of: impl Fn(usize) -> Option<f64>,
        out: &mut Vec<i8>,
    ) -> anyhow::Result<ChannelRequant> {
        let levels = f64::from(self.format.range().1);
        let mut sum_q: i64 = 0;
        // Bias correction: the rounding error of the weights times the mean input, taken
        // back out of the bias so the channel's mean output does not drift.
        let mut drift = 0f64;
        for (k, &w) in row.iter().enumerate() {
            let q = (f64::from(w) / w_scale).round().clamp(-levels, levels) as i8;
            sum_q += i64::from(q);
            out.push(q);
            if let Some(mean) = mean_of(k) {
                drift += (f64::from(q) * w_scale - f64::from(w)) * mean;
            }
        }
        let l = self.index;
        let acc_scale = self.input.scale * w_scale;
        let corrected_bias = f64::from(bias) - drift;
        let bias =
            (corrected_bias / acc_scale).round() as i64 - i64::from(self.input.zero_point) * sum_q;
        ensure!(
            bias.abs() <= i64::from(MAX_ABS_BIAS),
            "layer {l}, channel {channel}: bias {bias} does not fit the accumulator"
        );
        let requant = requant_from_real(acc_scale / self.output_scale)
            .with_context(|| format!("layer {l}, channel {channel}"))?;
        Ok(ChannelRequant {
            bias: bias as i32,
            requant,
        })
    }

    /// A dense layer's weights, per output channel, in the float layer's order.
    pub(super) fn dense(&self, layer: &FloatLayer) -> anyhow::Result<ChipWeights> {
        let mut weights = Vec::with_capacity(layer.weight.len());
        let mut channels = Vec::with_capacity(layer.outputs);
        let (mut min_ws, mut max_ws) = (f64::INFINITY, 0f64);
        for (o, row) in layer.weight.chunks_exact(layer.inputs).enumerate() {
            let w_scale = weight_scale(row, self.format);
            min_ws = min_ws.min(w_scale);
            max_ws = max_ws.max(w_scale);
            let means = self.input_means;
            channels.push(self.channel(
                o,
                row,
                w_scale,
                layer.bias[o],
                |k| means.get(k).copied(),
                &mut weights,
            )?);
        }
        Ok(ChipWeights {
            weights,
            channels,
            conv: None,
            scale_range: (min_ws, max_ws),
        })
    }

    /// A convolution's phased weights (see [`mcugan_shared::conv`]): one scale per output
    /// channel over all its phases, a record per phase and channel (the zero point folds into
    /// each phase's own weight sum).
    pub(super) fn conv(&self, layer: &FloatLayer) -> anyhow::Result<ChipWeights> {
        let Some(conv) = &layer.conv else {
            bail!("layer {} is not a convolution", self.index);
        };
        let (header, phased) = conv
            .phased(&layer.weight)
            .map_err(|e| anyhow::anyhow!("layer {}: {e}", self.index))?;
        let cin = conv.in_channels;
        let cout = conv.out_channels;
        // Each phase's patch width, in order.
        let patches: Vec<usize> = header
            .row_taps
            .iter()
            .flat_map(|row| {
                header
                    .col_taps
                    .iter()
                    .map(move |col| usize::from(row.count) * usize::from(col.count) * cin)
            })
            .collect();
        // Each channel's weights over all phases share one scale.
        let mut by_channel: Vec<Vec<f32>> = vec![Vec::new(); cout];
        let mut start = 0;
        for &patch in &patches {
            for (o, all) in by_channel.iter_mut().enumerate() {
                all.extend_from_slice(&phased[start + o * patch..start + (o + 1) * patch]);
            }
            start += patch * cout;
        }
        let scales: Vec<f64> = by_channel
            .iter()
            .map(|all| weight_scale(all, self.format))
            .collect();
        let mut weights = Vec::with_capacity(phased.len());
        let mut channels = Vec::with_capacity(patches.len() * cout);
        let means = self.input_means;
        let mut start = 0;
        for &patch in &patches {
            for (o, &w_scale) in scales.iter().enumerate() {
                let row = &phased[start + o * patch..start + (o + 1) * patch];
                // Column k reads input channel k mod C_in.
                channels.push(self.channel(
                    o,
                    row,
                    w_scale,
                    layer.bias[o],
                    |k| means.get(k % cin).copied(),
                    &mut weights,
                )?);
            }
            start += patch * cout;
        }
        let (min_ws, max_ws) = scales
            .iter()
            .fold((f64::INFINITY, 0f64), |(a, b), &s| (a.min(s), b.max(s)));
        Ok(ChipWeights {
            weights,
            channels,
            conv: Some(header),
            scale_range: (min_ws, max_ws),
        })
    }
}

/// The channels-first index of each channels-last entry of a `[channels, height, width]`
/// tensor: the chip's order from PyTorch's.
pub(super) fn channels_last_order(channels: usize, height: usize, width: usize) -> Vec<usize> {
    let pixels = height * width;
    (0..channels * pixels)
        .map(|i| (i % channels) * pixels + i / channels)
        .collect()
}

impl ChipWeights {
    /// A dense layer's rows (outputs) in `order` (see [`channels_last_order`]), with their
    /// records.
    pub(super) fn permute_rows(&mut self, order: &[usize], columns: usize) {
        let rows: Vec<&[i8]> = self.weights.chunks_exact(columns).collect();
        self.weights = order
            .iter()
            .flat_map(|&r| rows[r].iter().copied())
            .collect();
        self.channels = order.iter().map(|&r| self.channels[r]).collect();
    }

    /// A dense layer's columns (inputs) in `order`.
    pub(super) fn permute_columns(&mut self, order: &[usize]) {
        let columns = order.len();
        self.weights = self
            .weights
            .chunks_exact(columns)
            .flat_map(|row| order.iter().map(move |&c| row[c]))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_order_interleaves_the_channels() {
        // 2 channels of 3 pixels: c0 = [0 1 2], c1 = [3 4 5] -> [0 3 1 4 2 5].
        assert_eq!(channels_last_order(2, 1, 3), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(channels_last_order(1, 2, 2), vec![0, 1, 2, 3]);
    }
}

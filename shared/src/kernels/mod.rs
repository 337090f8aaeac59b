//! The integer kernels inference is built from.
//!
//! Every kernel here is portable Rust and defines the result bit for bit. On Cortex-M cores with
//! the DSP extension, the `dsp` feature swaps the inner dot products of the blocked layouts for
//! hand-scheduled assembly ([`crate::dsp`]); integer sums do not depend on their order, so both
//! give the same accumulators, and the QEMU tests check that they do. The convolutions
//! ([`conv`]) are built on the dense kernel.

mod conv;

pub use conv::conv;

use crate::format::{ChannelParams, ChannelRequant, CHANNEL_RECORD_LEN};
use crate::layout::{WeightFormat, COL_BLOCK, ROW_BLOCK};

/// `Σ w·x` over one row of row-major `i8` weights (stored as raw bytes).
///
/// With at most [`crate::format::MAX_WIDTH`] terms of at most 128·128 the sum stays far inside
/// `i32`.
#[inline]
pub fn dot_i8(weights: &[u8], activations: &[i16]) -> i32 {
    weights
        .iter()
        .zip(activations)
        .map(|(&w, &x)| i32::from(w as i8) * i32::from(x))
        .sum()
}

/// Sign-extends the low nibble of `byte`.
#[inline]
pub fn low_nibble(byte: u8) -> i32 {
    i32::from(((byte << 4) as i8) >> 4)
}

/// Sign-extends the high nibble of `byte`.
#[inline]
pub fn high_nibble(byte: u8) -> i32 {
    i32::from((byte as i8) >> 4)
}

/// The four row sums of one row group of [`WeightFormat::I8Blocked`] weights, portable.
///
/// `group` holds `4 * padded_inputs` bytes, `activations` the `padded_inputs` inputs and
/// `sum_x` their sum. Each column of a row pair holds `(u, w)`: `u = w_even + 128` and the odd
/// row's `w`. The even rows are summed as `Σ u·x` and corrected by `128·Σx` once at the end, so
/// each multiply-accumulate is one load of its weight and one `MLA` (on a Cortex-M3; a `MULS`
/// and an `ADDS` on the M0), the activation loaded once per column for the four rows. The sums
/// are exact (`Σ u·x` stays below 255·128·4,096 < 2³¹) and equal the DSP kernel's.
pub fn group_sums_i8_portable(group: &[u8], activations: &[i16], sum_x: i32) -> [i32; 4] {
    let (mut u0, mut w1, mut u2, mut w3) = (0i32, 0i32, 0i32, 0i32);
    for (block, x) in group
        .chunks_exact(ROW_BLOCK * COL_BLOCK)
        .zip(activations.chunks_exact(COL_BLOCK))
    {
        // Fixed-size views: no bounds check inside the unrolled columns.
        let (Ok(block), Ok(x)) = (
            <&[u8; ROW_BLOCK * COL_BLOCK]>::try_from(block),
            <&[i16; COL_BLOCK]>::try_from(x),
        ) else {
            continue;
        };
        macro_rules! column {
            ($c:expr) => {{
                let x = i32::from(x[$c]);
                u0 += i32::from(block[2 * $c]) * x;
                w1 += i32::from(block[2 * $c + 1] as i8) * x;
                u2 += i32::from(block[2 * COL_BLOCK + 2 * $c]) * x;
                w3 += i32::from(block[2 * COL_BLOCK + 2 * $c + 1] as i8) * x;
            }};
        }
        column!(0);
        column!(1);
        column!(2);
        column!(3);
        column!(4);
        column!(5);
        column!(6);
        column!(7);
    }
    let offset = sum_x.wrapping_mul(128);
    [u0.wrapping_sub(offset), w1, u2.wrapping_sub(offset), w3]
}

/// The four row sums of one row group of [`WeightFormat::I4Blocked`] weights, portable.
///
/// `group` holds `2 * padded_inputs` bytes, `activations` the `padded_inputs` inputs.
pub fn group_sums_i4_portable(group: &[u8], activations: &[i16]) -> [i32; ROW_BLOCK] {
    let mut sums = [0i32; ROW_BLOCK];
    for (block, x) in group
        .chunks_exact(ROW_BLOCK * COL_BLOCK / 2)
        .zip(activations.chunks_exact(COL_BLOCK))
    {
        for (sum, w) in sums.iter_mut().zip(block.chunks_exact(COL_BLOCK / 2)) {
            let x = |i: usize| i32::from(x[i]);
            // Bytes hold columns (0,4) (2,6) (1,5) (3,7) as (low, high) nibbles.
            *sum += low_nibble(w[0]) * x(0)
                + low_nibble(w[2]) * x(1)
                + low_nibble(w[1]) * x(2)
                + low_nibble(w[3]) * x(3)
                + high_nibble(w[0]) * x(4)
                + high_nibble(w[2]) * x(5)
                + high_nibble(w[1]) * x(6)
                + high_nibble(w[3]) * x(7);
        }
    }
    sums
}

/// The four row sums of one blocked row group, portable.
#[inline]
#[cfg_attr(mcugan_dsp_kernels, allow(dead_code))]
fn portable_group_sums(
    format: WeightFormat,
    group: &[u8],
    x: &[i16],
    sum_x: i32,
) -> [i32; ROW_BLOCK] {
    match format {
        WeightFormat::I4Blocked => group_sums_i4_portable(group, x),
        _ => group_sums_i8_portable(group, x, sum_x),
    }
}

/// Runs `per_group(sums)` for each row group of a blocked layer, by the fastest kernel this
/// build has.
#[inline(always)]
fn for_each_group(
    format: WeightFormat,
    weights: &[u8],
    x: &[i16],
    x_sum: Option<i32>,
    group_len: usize,
    mut per_group: impl FnMut([i32; ROW_BLOCK]),
) {
    // The activations' sum, once per layer (the int8 kernel corrects its even rows by it).
    #[cfg(not(mcugan_dsp_kernels))]
    let sum_x = x_sum.unwrap_or_else(|| x.iter().map(|&v| i32::from(v)).sum());
    // One call site for `per_group`, so that it inlines into the loop.
    #[cfg(mcugan_dsp_kernels)]
    let kernel = crate::dsp::GroupKernel::new(format, weights, x, x_sum);
    for group in weights.chunks_exact(group_len) {
        #[cfg(mcugan_dsp_kernels)]
        // `Model::parse` rejects, on DSP builds, weights the assembly cannot read (see
        // `format::check_dsp_alignment`), so a validated model always has a kernel; the
        // portable kernels are not linked into DSP builds at all.
        let sums = match &kernel {
            Some(kernel) => kernel.sums(group),
            None => [0; ROW_BLOCK],
        };
        #[cfg(not(mcugan_dsp_kernels))]
        let sums = portable_group_sums(format, group, x, sum_x);
        per_group(sums);
    }
}

/// Whether this build runs the blocked layouts through the Cortex-M DSP kernels.
pub const fn dsp_kernels() -> bool {
    cfg!(mcugan_dsp_kernels)
}

/// The accumulators of a dense layer, one per output channel, handed to `emit` in order:
/// `emit(channel_params, bias + Σ w·x)`.
///
/// `activations` holds the layer's inputs padded with zeros to a multiple of [`COL_BLOCK`]
/// (the blocked layouts read whole blocks); `x_sum`, when known, is their sum (the DSP
/// kernels need it and then skip computing it).
#[inline(always)]
pub fn dense(
    format: WeightFormat,
    weights: &[u8],
    channels: ChannelParams<'_>,
    inputs: usize,
    activations: &[i16],
    x_sum: Option<i32>,
    mut emit: impl FnMut(ChannelRequant, i32),
) {
    if inputs == 0 {
        return;
    }
    match format {
        WeightFormat::I8RowMajor => {
            let activations = activations.get(..inputs).unwrap_or(activations);
            for (row, params) in weights.chunks_exact(inputs).zip(channels.iter()) {
                emit(params, params.bias + dot_i8(row, activations));
            }
        }
        WeightFormat::I8Blocked | WeightFormat::I4Blocked => {
            let padded_inputs = crate::format::padded(inputs, COL_BLOCK);
            let group_len = ROW_BLOCK * padded_inputs * format.bits() as usize / 8;
            let activations = activations.get(..padded_inputs).unwrap_or(activations);
            let mut records = channels.bytes();
            for_each_group(format, weights, activations, x_sum, group_len, |sums| {
                for sum in sums {
                    // The padded rows of the last group have no record and are dropped.
                    let Some((record, rest)) = records.split_first_chunk::<CHANNEL_RECORD_LEN>()
                    else {
                        return;
                    };
                    records = rest;
                    let params = ChannelRequant::from_record(record);
                    emit(params, params.bias.wrapping_add(sum));
                }
            });
        }
    }
}

/// [`dense`] with the accumulators requantized into `outputs` from index `base` on: the one
/// instance of the dense loop that both dense layers and convolutions run (one copy in flash).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub fn dense_into(
    format: WeightFormat,
    weights: &[u8],
    channels: ChannelParams<'_>,
    inputs: usize,
    activations: &[i16],
    x_sum: Option<i32>,
    outputs: &mut Outputs<'_, '_>,
    base: usize,
) {
    // The output stage is matched once per call, outside the loop over the rows.
    match outputs {
        Outputs::Hidden {
            out,
            zero_point,
            negative_slope_q31,
        } => {
            let mut out = out.get_mut(base..).unwrap_or_default().iter_mut();
            let (zero_point, slope) = (*zero_point, *negative_slope_q31);
            dense(
                format,
                weights,
                channels,
                inputs,
                activations,
                x_sum,
                |params, acc| {
                    if let Some(slot) = out.next() {
                        *slot = hidden_requant(acc, params, slope, zero_point);
                    }
                },
            );
        }
        Outputs::Pixels { pixels, lut } => {
            let mut out = pixels.get_mut(base..).unwrap_or_default().iter_mut();
            let lut = *lut;
            dense(
                format,
                weights,
                channels,
                inputs,
                activations,
                x_sum,
                |params, acc| {
                    if let Some(slot) = out.next() {
                        *slot = tanh_pixel(acc, params, lut);
                    }
                },
            );
        }
    }
}

/// LeakyReLU fused into requantization: `zero_point + round(acc · M)` for `acc ≥ 0`, with
/// `M · slope` instead of `M` for `acc < 0`, saturated to `i8`; with no slope (`None`: a layer
/// without activation) `M` on both sides.
#[inline]
pub fn hidden_requant(
    acc: i32,
    params: ChannelRequant,
    negative_slope_q31: Option<i32>,
    zero_point: i8,
) -> i8 {
    let factor = match negative_slope_q31 {
        Some(slope) if acc < 0 => params.requant.scaled_by_q31(slope),
        _ => params.requant,
    };
    let value = factor.apply(acc).saturating_add(i32::from(zero_point));
    value.clamp(i32::from(i8::MIN), i32::from(i8::MAX)) as i8
}

/// Where a layer's requantized outputs go: int8 activations for the next layer, or pixels.
pub enum Outputs<'o, 'a> {
    /// A hidden layer's int8 outputs (see [`hidden_requant`]).
    Hidden {
        /// The outputs, in order.
        out: &'o mut [i8],
        /// The output's zero point.
        zero_point: i8,
        /// LeakyReLU's slope; `None` for no activation.
        negative_slope_q31: Option<i32>,
    },
    /// The last layer's pixels through the lookup table (see [`tanh_pixel`]).
    Pixels {
        /// The image.
        pixels: &'o mut [u8],
        /// The table.
        lut: &'a [u8],
    },
}

impl Outputs<'_, '_> {
    /// Writes the output at `at` of the accumulator `acc` of a channel with `params`.
    #[inline]
    pub fn set(&mut self, at: usize, params: ChannelRequant, acc: i32) {
        match self {
            Outputs::Hidden {
                out,
                zero_point,
                negative_slope_q31,
            } => {
                if let Some(slot) = out.get_mut(at) {
                    *slot = hidden_requant(acc, params, *negative_slope_q31, *zero_point);
                }
            }
            Outputs::Pixels { pixels, lut } => {
                if let Some(slot) = pixels.get_mut(at) {
                    *slot = tanh_pixel(acc, params, lut);
                }
            }
        }
    }
}

/// Tanh and pixel mapping: the requantized accumulator indexes the lookup table, clamped to its
/// ends. `lut` must have even, non-zero length (the model validator checks).
#[inline]
pub fn tanh_pixel(acc: i32, params: ChannelRequant, lut: &[u8]) -> u8 {
    let half = (lut.len() / 2) as i32;
    // max/min rather than clamp: no panic path even for an empty table.
    let index = params.requant.apply(acc).max(-half).min(half - 1) + half;
    lut.get(index as usize).copied().unwrap_or(0)
}

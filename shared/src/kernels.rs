//! The integer kernels inference is built from.
//!
//! Every kernel here is portable Rust and defines the result bit for bit. On Cortex-M cores with
//! the DSP extension, the `dsp` feature swaps the inner dot products of the blocked layouts for
//! hand-scheduled assembly ([`crate::dsp`]); integer sums do not depend on their order, so both
//! give the same accumulators, and the QEMU tests check that they do.

use crate::conv::ConvGeometry;
use crate::format::{padded, ChannelParams, ChannelRequant, Layer, CHANNEL_RECORD_LEN};
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
/// `group` holds `4 * padded_inputs` bytes, `activations` the `padded_inputs` inputs. Computes
/// the sums directly; they equal the DSP kernel's shifted ones for any weights because that
/// kernel sums wide layers in chunks short enough to stay exact (`dsp::I8_CHUNK_BLOCKS`).
pub fn group_sums_i8_portable(group: &[u8], activations: &[i16]) -> [i32; 4] {
    let mut sums = [0i32; 4];
    for (block, x) in group
        .chunks_exact(ROW_BLOCK * COL_BLOCK)
        .zip(activations.chunks_exact(COL_BLOCK))
    {
        for (pair, columns) in block.chunks_exact(2 * COL_BLOCK).enumerate() {
            let (mut even, mut odd) = (0i32, 0i32);
            // Each column holds (u = w + 128 of the even row, w of the odd row).
            for (column, &x) in columns.chunks_exact(2).zip(x) {
                even += (i32::from(column[0]) - 128) * i32::from(x);
                odd += i32::from(column[1] as i8) * i32::from(x);
            }
            sums[2 * pair] += even;
            sums[2 * pair + 1] += odd;
        }
    }
    sums
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
fn portable_group_sums(format: WeightFormat, group: &[u8], x: &[i16]) -> [i32; ROW_BLOCK] {
    match format {
        WeightFormat::I4Blocked => group_sums_i4_portable(group, x),
        _ => group_sums_i8_portable(group, x),
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
    #[cfg(not(mcugan_dsp_kernels))]
    let _ = x_sum;
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
        let sums = portable_group_sums(format, group, x);
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

/// Writes `src` widened into `dst` and returns their sum (the DSP assembly where the build
/// has it).
#[inline]
fn widen_sum(dst: &mut [i16], src: &[i8]) -> i32 {
    #[cfg(mcugan_dsp_kernels)]
    {
        crate::dsp::widen_sum(dst, src)
    }
    #[cfg(not(mcugan_dsp_kernels))]
    {
        let mut sum = 0;
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = i16::from(s);
            sum += i32::from(s);
        }
        sum
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

/// A phased convolution (see [`crate::conv`]) of `layer` over `input`, a channels-last int8
/// tensor whose real zero is the code `zero_point`: for each output pixel the patch is
/// gathered into `scratch` (widened to `i16`; taps outside the input read `zero_point`, so the
/// bias, which has the zero point folded in, stays exact at the borders) and multiplied like a
/// dense layer's input. Every output entry goes to `outputs` at its channels-last index
/// `(row · width + column) · channels + channel`.
///
/// `scratch` must hold the widest phase's patch rounded up to a column block
/// ([`crate::format::Model::scratch_len`]); the model validator guarantees the rest.
#[inline(never)]
pub fn conv(
    geometry: &ConvGeometry,
    layer: &Layer<'_>,
    input: &[i8],
    zero_point: i8,
    scratch: &mut [i16],
    outputs: &mut Outputs<'_, '_>,
) {
    if layer.weight_format == WeightFormat::I8RowMajor {
        return conv_row_major(geometry, layer, input, zero_point, outputs);
    }
    let in_channels = usize::from(geometry.input.channels);
    let (in_height, in_width) = (
        isize::from(geometry.input.height as i16),
        usize::from(geometry.input.width),
    );
    let out_channels = usize::from(geometry.output.channels);
    let out_width = usize::from(geometry.output.width);
    let (row_phases, col_phases) = (geometry.rows.phases(), geometry.cols.phases());
    let [stride_y, stride_x] = geometry.stride.map(usize::from);
    let pad = i16::from(zero_point);
    let mut weights = layer.weights;
    let mut records = layer.channels.bytes();
    for (py, px) in geometry.phases() {
        let patch_len = geometry.patch_len(py, px);
        let matrix_len = layer.weight_format.stored_len(patch_len, out_channels);
        let (Some((matrix, rest)), Some((phase_records, other_records))) = (
            weights.split_at_checked(matrix_len),
            records.split_at_checked(out_channels * CHANNEL_RECORD_LEN),
        ) else {
            return;
        };
        weights = rest;
        records = other_records;
        let Some(patch) = scratch.get_mut(..padded(patch_len, COL_BLOCK)) else {
            return;
        };
        if let Some(tail) = patch.get_mut(patch_len..) {
            tail.fill(0);
        }
        let (taps_y, taps_x) = (geometry.rows.of(py), geometry.cols.of(px));
        let (rows, cols) = geometry.phase_grid(py, px);
        for my in 0..rows {
            let out_row = (my * row_phases + py) * out_width;
            let first_y = (my * stride_y) as isize + isize::from(taps_y.first);
            for mx in 0..cols {
                let first_x = (mx * stride_x) as isize + isize::from(taps_x.first);
                // Row by row of taps: the taps inside the input are one run of memory.
                let (before, inside, after) =
                    split_run(first_x, usize::from(taps_x.count), in_width);
                let row_len = usize::from(taps_x.count) * in_channels;
                let mut x_sum = 0i32;
                for (y, slots) in (first_y..).zip(patch.chunks_exact_mut(row_len.max(1))) {
                    if y >= first_y + isize::from(taps_y.count) {
                        break;
                    }
                    let from = if (0..in_height).contains(&y) {
                        (y as usize * in_width + first_x.max(0) as usize) * in_channels
                    } else {
                        usize::MAX
                    };
                    let Some((left, rest)) = slots.split_at_mut_checked(before * in_channels)
                    else {
                        return;
                    };
                    let Some((middle, right)) = rest.split_at_mut_checked(inside * in_channels)
                    else {
                        return;
                    };
                    match input.get(from..from.saturating_add(middle.len())) {
                        Some(values) => {
                            x_sum += widen_sum(middle, values);
                            left.fill(pad);
                            right.fill(pad);
                            x_sum += i32::from(pad) * ((before + after) * in_channels) as i32;
                        }
                        None => {
                            slots.fill(pad);
                            x_sum += i32::from(pad) * row_len as i32;
                        }
                    }
                }
                let base = (out_row + mx * col_phases + px) * out_channels;
                let params = ChannelParams::from_bytes(phase_records);
                dense_into(
                    layer.weight_format,
                    matrix,
                    params,
                    patch_len,
                    patch,
                    Some(x_sum),
                    outputs,
                    base,
                );
            }
        }
    }
}

/// A phased convolution of row-major int8 weights, computed directly: for each output pixel,
/// channel and tap, the dot product of the tap's weights and the input pixel's channels, both
/// int8 as stored (a tap outside the input adds the zero point times the tap's weight sum).
/// No patch is gathered, which is what a layer of few output channels (an image's last layer)
/// needs: a gather would cost as much as the multiplications it serves. Same sums as the
/// gathered form, so the same bytes.
fn conv_row_major(
    geometry: &ConvGeometry,
    layer: &Layer<'_>,
    input: &[i8],
    zero_point: i8,
    outputs: &mut Outputs<'_, '_>,
) {
    let in_channels = usize::from(geometry.input.channels);
    let (in_height, in_width) = (
        isize::from(geometry.input.height as i16),
        usize::from(geometry.input.width),
    );
    let out_channels = usize::from(geometry.output.channels);
    let out_width = usize::from(geometry.output.width);
    let (row_phases, col_phases) = (geometry.rows.phases(), geometry.cols.phases());
    let [stride_y, stride_x] = geometry.stride.map(usize::from);
    let mut weights = layer.weights;
    let mut records = layer.channels.bytes();
    for (py, px) in geometry.phases() {
        let patch_len = geometry.patch_len(py, px);
        let (Some((matrix, rest)), Some((phase_records, other_records))) = (
            weights.split_at_checked(patch_len * out_channels),
            records.split_at_checked(out_channels * CHANNEL_RECORD_LEN),
        ) else {
            return;
        };
        weights = rest;
        records = other_records;
        let (taps_y, taps_x) = (geometry.rows.of(py), geometry.cols.of(px));
        let (rows, cols) = geometry.phase_grid(py, px);
        for my in 0..rows {
            let out_row = (my * row_phases + py) * out_width;
            let first_y = (my * stride_y) as isize + isize::from(taps_y.first);
            for mx in 0..cols {
                let first_x = (mx * stride_x) as isize + isize::from(taps_x.first);
                let (before, inside, _) = split_run(first_x, usize::from(taps_x.count), in_width);
                let row_len = usize::from(taps_x.count) * in_channels;
                let base = (out_row + mx * col_phases + px) * out_channels;
                let channels = phase_records.chunks_exact(CHANNEL_RECORD_LEN);
                for ((channel, row), record) in matrix
                    .chunks_exact(patch_len.max(1))
                    .enumerate()
                    .zip(channels)
                {
                    let Ok(record) = <&[u8; CHANNEL_RECORD_LEN]>::try_from(record) else {
                        return;
                    };
                    let params = ChannelRequant::from_record(record);
                    let mut acc = params.bias;
                    // Row by row of taps: those inside the input are one dot product over
                    // consecutive memory; those outside read the zero point.
                    let weight_sum =
                        |w: &[u8]| -> i32 { w.iter().map(|&w| i32::from(w as i8)).sum() };
                    for (y, tap_row) in (first_y..).zip(row.chunks_exact(row_len.max(1))) {
                        let from = if (0..in_height).contains(&y) {
                            (y as usize * in_width + first_x.max(0) as usize) * in_channels
                        } else {
                            usize::MAX
                        };
                        let Some((left, rest)) = tap_row.split_at_checked(before * in_channels)
                        else {
                            return;
                        };
                        let Some((middle, right)) = rest.split_at_checked(inside * in_channels)
                        else {
                            return;
                        };
                        acc = acc.wrapping_add(
                            match input.get(from..from.saturating_add(middle.len())) {
                                Some(values) => {
                                    dot_i8_i8(middle, values)
                                        + (weight_sum(left) + weight_sum(right))
                                            * i32::from(zero_point)
                                }
                                None => weight_sum(tap_row) * i32::from(zero_point),
                            },
                        );
                    }
                    outputs.set(base + channel, params, acc);
                }
            }
        }
    }
}

/// A run of `count` taps from column `first` split at the edges of an input `width` wide: how
/// many fall before column 0, inside, and from column `width` on.
#[inline]
fn split_run(first: isize, count: usize, width: usize) -> (usize, usize, usize) {
    let (count_i, width_i) = (count as isize, width as isize);
    // max/min rather than clamp: no panic path.
    let before = (-first).max(0).min(count_i);
    let inside = ((first + count_i).min(width_i) - first.max(0))
        .min(count_i - before)
        .max(0);
    (
        before as usize,
        inside as usize,
        (count_i - before - inside) as usize,
    )
}

/// `Σ w·x` over int8 weights (as stored bytes) and int8 activations (the DSP assembly where
/// the build has it).
#[inline]
fn dot_i8_i8(weights: &[u8], x: &[i8]) -> i32 {
    #[cfg(mcugan_dsp_kernels)]
    {
        crate::dsp::dot_i8_i8(weights, x)
    }
    #[cfg(not(mcugan_dsp_kernels))]
    {
        weights
            .iter()
            .zip(x)
            .map(|(&w, &v)| i32::from(w as i8) * i32::from(v))
            .sum()
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

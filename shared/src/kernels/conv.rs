//! The phased convolution (see [`crate::conv`]) on the chip: one walk over the phases and
//! their output pixels, and two ways to compute a pixel — a gathered patch through the dense
//! kernel (any layout), or direct int8 dot products (row-major layers of few output channels).

use super::{dense_into, Outputs};
use crate::conv::{ConvGeometry, TapRun};
use crate::format::{padded, ChannelParams, ChannelRequant, Layer, CHANNEL_RECORD_LEN};
use crate::layout::{WeightFormat, COL_BLOCK};

/// A phased convolution of `layer` over `input`, a channels-last int8 tensor whose real zero is
/// the code `zero_point`. Every output entry goes to `outputs` at its channels-last index
/// `(row · width + column) · channels + channel`.
///
/// A blocked layer gathers each output pixel's patch into `scratch` (widened to `i16`; taps
/// outside the input read `zero_point`, so the bias, which has the zero point folded in, stays
/// exact at the borders) and multiplies it like a dense layer's input. A row-major layer (the
/// quantizer stores layers of fewer than four output channels so, an image's last) computes each
/// output directly, one int8 dot product per tap row, no patch gathered: for it a gather would
/// cost as much as the multiplications it serves. Both give the same sums, so the same bytes.
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
    let walk = Walk::of(geometry, input);
    let direct = layer.weight_format == WeightFormat::I8RowMajor;
    let mut weights = layer.weights;
    let mut records = layer.channels.bytes();
    for (py, px) in geometry.phases() {
        let patch_len = geometry.patch_len(py, px);
        let matrix_len = layer.weight_format.stored_len(patch_len, walk.out_channels);
        let (Some((matrix, rest)), Some((phase_records, other_records))) = (
            weights.split_at_checked(matrix_len),
            records.split_at_checked(walk.out_channels * CHANNEL_RECORD_LEN),
        ) else {
            return;
        };
        weights = rest;
        records = other_records;
        let phase = Phase {
            py,
            px,
            taps_y: geometry.rows.of(py),
            taps_x: geometry.cols.of(px),
            patch_len,
            matrix,
            records: phase_records,
        };
        if direct {
            walk.direct(&phase, zero_point, outputs);
        } else {
            let Some(patch) = scratch.get_mut(..padded(patch_len, COL_BLOCK)) else {
                return;
            };
            if let Some(tail) = patch.get_mut(patch_len..) {
                tail.fill(0);
            }
            walk.gathered(&phase, layer.weight_format, zero_point, patch, outputs);
        }
    }
}

/// What every pixel of a convolution shares: its geometry, as numbers, and its input.
struct Walk<'g, 'i> {
    geometry: &'g ConvGeometry,
    input: &'i [i8],
    in_channels: usize,
    in_height: isize,
    in_width: usize,
    out_channels: usize,
}

/// One phase: its taps, its weight matrix and its channel records.
struct Phase<'w> {
    py: usize,
    px: usize,
    taps_y: TapRun,
    taps_x: TapRun,
    patch_len: usize,
    matrix: &'w [u8],
    records: &'w [u8],
}

/// One output pixel of a phase: where its taps start, how a row of them splits at the input's
/// left and right edges (`before`, `inside`, `after` taps), and where its outputs go.
struct Pixel {
    first_y: isize,
    first_x: isize,
    before: usize,
    inside: usize,
    after: usize,
    base: usize,
}

impl<'g, 'i> Walk<'g, 'i> {
    fn of(geometry: &'g ConvGeometry, input: &'i [i8]) -> Self {
        Self {
            geometry,
            input,
            in_channels: usize::from(geometry.input.channels),
            in_height: isize::from(geometry.input.height as i16),
            in_width: usize::from(geometry.input.width),
            out_channels: usize::from(geometry.output.channels),
        }
    }

    /// Calls `per_pixel` for every output pixel of `phase`, in order.
    #[inline(always)]
    fn pixels(&self, phase: &Phase<'_>, mut per_pixel: impl FnMut(&Pixel)) {
        let geometry = self.geometry;
        let (rows, cols) = geometry.phase_grid(phase.py, phase.px);
        let (row_phases, col_phases) = (geometry.rows.phases(), geometry.cols.phases());
        let [stride_y, stride_x] = geometry.stride.map(usize::from);
        let out_width = usize::from(geometry.output.width);
        for my in 0..rows {
            let out_row = (my * row_phases + phase.py) * out_width;
            let first_y = (my * stride_y) as isize + isize::from(phase.taps_y.first);
            for mx in 0..cols {
                let first_x = (mx * stride_x) as isize + isize::from(phase.taps_x.first);
                let (before, inside, after) =
                    split_run(first_x, usize::from(phase.taps_x.count), self.in_width);
                per_pixel(&Pixel {
                    first_y,
                    first_x,
                    before,
                    inside,
                    after,
                    base: (out_row + mx * col_phases + phase.px) * self.out_channels,
                });
            }
        }
    }

    /// The input values a row of taps of `pixel` reads at row `y`: the channels of its taps
    /// inside the input, one run of memory; `None` for a row outside the input.
    #[inline(always)]
    fn tap_row(&self, pixel: &Pixel, y: isize) -> Option<&'i [i8]> {
        if !(0..self.in_height).contains(&y) {
            return None;
        }
        let from = (y as usize * self.in_width + pixel.first_x.max(0) as usize) * self.in_channels;
        self.input
            .get(from..from.saturating_add(pixel.inside * self.in_channels))
    }

    /// Each pixel's patch gathered into `patch` and multiplied by the dense kernel.
    fn gathered(
        &self,
        phase: &Phase<'_>,
        format: WeightFormat,
        zero_point: i8,
        patch: &mut [i16],
        outputs: &mut Outputs<'_, '_>,
    ) {
        let pad = i16::from(zero_point);
        let cin = self.in_channels;
        let row_len = usize::from(phase.taps_x.count) * cin;
        let rows = usize::from(phase.taps_y.count);
        let params = ChannelParams::from_bytes(phase.records);
        self.pixels(phase, |pixel| {
            // Row by row of taps: the taps inside the input are one run of memory, widened and
            // summed on the way (the DSP kernel needs the sum).
            let mut x_sum = 0i32;
            let rows_of_patch = patch.chunks_exact_mut(row_len.max(1)).take(rows);
            for (y, slots) in (pixel.first_y..).zip(rows_of_patch) {
                let (Some((left, rest)), Some(values)) = (
                    slots.split_at_mut_checked(pixel.before * cin),
                    self.tap_row(pixel, y),
                ) else {
                    slots.fill(pad);
                    x_sum += i32::from(pad) * row_len as i32;
                    continue;
                };
                let Some((middle, right)) = rest.split_at_mut_checked(pixel.inside * cin) else {
                    return;
                };
                x_sum += widen_sum(middle, values);
                left.fill(pad);
                right.fill(pad);
                x_sum += i32::from(pad) * ((pixel.before + pixel.after) * cin) as i32;
            }
            dense_into(
                format,
                phase.matrix,
                params,
                phase.patch_len,
                patch,
                Some(x_sum),
                outputs,
                pixel.base,
            );
        });
    }

    /// Each output computed directly from row-major weights: per channel and tap row, the
    /// dot product of the taps inside the input, plus the zero point times the weights of the
    /// taps outside.
    fn direct(&self, phase: &Phase<'_>, zero_point: i8, outputs: &mut Outputs<'_, '_>) {
        let cin = self.in_channels;
        let row_len = usize::from(phase.taps_x.count) * cin;
        let weight_sum = |w: &[u8]| -> i32 { w.iter().map(|&w| i32::from(w as i8)).sum() };
        let zero = i32::from(zero_point);
        self.pixels(phase, |pixel| {
            let rows = phase.matrix.chunks_exact(phase.patch_len.max(1));
            let records = phase.records.chunks_exact(CHANNEL_RECORD_LEN);
            for ((channel, row), record) in rows.enumerate().zip(records) {
                let Ok(record) = <&[u8; CHANNEL_RECORD_LEN]>::try_from(record) else {
                    return;
                };
                let params = ChannelRequant::from_record(record);
                let mut acc = params.bias;
                for (y, taps) in (pixel.first_y..).zip(row.chunks_exact(row_len.max(1))) {
                    let split =
                        taps.split_at_checked(pixel.before * cin)
                            .and_then(|(left, rest)| {
                                rest.split_at_checked(pixel.inside * cin)
                                    .map(|(middle, right)| (left, middle, right))
                            });
                    acc = acc.wrapping_add(match (split, self.tap_row(pixel, y)) {
                        (Some((left, middle, right)), Some(values)) => {
                            dot_i8_i8(middle, values)
                                + (weight_sum(left) + weight_sum(right)) * zero
                        }
                        _ => weight_sum(taps) * zero,
                    });
                }
                outputs.set(pixel.base + channel, params, acc);
            }
        });
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

//! The integer kernels inference is built from. Portable Rust: the same code, and so the same
//! bytes, on the host and on any Cortex-M core.

use crate::format::{ChannelParams, ChannelRequant};

/// `Σ w·x` over one row of `i8` weights (stored as raw bytes) and `i8` activations.
///
/// With at most [`crate::format::MAX_WIDTH`] terms of at most 128·128 the sum stays far inside
/// `i32`.
#[inline]
pub fn dot_i8(weights: &[u8], activations: &[i8]) -> i32 {
    weights
        .iter()
        .zip(activations)
        .map(|(&w, &x)| i32::from(w as i8) * i32::from(x))
        .sum()
}

/// The accumulators of a dense layer, one per output channel, handed to `emit` in order:
/// `emit(channel_params, bias + Σ w·x)`.
#[inline]
pub fn dense_i8(
    weights: &[u8],
    channels: ChannelParams<'_>,
    activations: &[i8],
    mut emit: impl FnMut(ChannelRequant, i32),
) {
    let inputs = activations.len();
    if inputs == 0 {
        return;
    }
    for (row, params) in weights.chunks_exact(inputs).zip(channels.iter()) {
        emit(params, params.bias + dot_i8(row, activations));
    }
}

/// LeakyReLU fused into requantization: `zero_point + round(acc · M)` for `acc ≥ 0`, with
/// `M · slope` instead of `M` for `acc < 0`, saturated to `i8`.
#[inline]
pub fn leaky_relu_requant(
    acc: i32,
    params: ChannelRequant,
    negative_slope_q31: i32,
    zero_point: i8,
) -> i8 {
    let factor = if acc >= 0 {
        params.requant
    } else {
        params.requant.scaled_by_q31(negative_slope_q31)
    };
    let value = factor.apply(acc).saturating_add(i32::from(zero_point));
    value.clamp(i32::from(i8::MIN), i32::from(i8::MAX)) as i8
}

/// Tanh and pixel mapping: the requantized accumulator indexes the lookup table, clamped to its
/// ends. `lut` must have even, non-zero length (the model validator checks).
#[inline]
pub fn tanh_pixel(acc: i32, params: ChannelRequant, lut: &[u8]) -> u8 {
    let half = (lut.len() / 2) as i32;
    let index = params.requant.apply(acc).clamp(-half, half - 1) + half;
    lut.get(index as usize).copied().unwrap_or(0)
}

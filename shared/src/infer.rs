//! Inference: one seed in, one image out, in fixed buffers.

use crate::format::{padded, LayerOutput, Model, COL_BLOCK, MAX_WIDTH};
use crate::kernels::{dense, leaky_relu_requant, tanh_pixel};
use crate::latent::sample_latent;

/// Why [`generate`] could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InferenceError {
    /// The pixel buffer's length differs from the model's image size.
    #[error("pixel buffer holds {found} bytes, the model draws {expected}")]
    PixelBufferSize {
        /// The model's pixel count.
        expected: usize,
        /// The buffer's length.
        found: usize,
    },
    /// The latent vector's length differs from the model's latent dimension.
    #[error("latent vector has {found} codes, the model takes {expected}")]
    LatentSize {
        /// The model's latent dimension.
        expected: usize,
        /// The vector's length.
        found: usize,
    },
}

/// Watches inference layer by layer; the firmware times each layer with it. `()` watches
/// nothing.
pub trait LayerObserver {
    /// Called right before layer `index` starts (after its inputs are ready).
    fn layer_started(&mut self, index: usize);
    /// Called right after layer `index` has written its outputs.
    fn layer_finished(&mut self, index: usize);
}

impl LayerObserver for () {
    #[inline(always)]
    fn layer_started(&mut self, _index: usize) {}
    #[inline(always)]
    fn layer_finished(&mut self, _index: usize) {}
}

/// Activations widened to `i16`, 8-byte aligned for the DSP kernels' double-word loads.
#[repr(C, align(8))]
struct WideActivations([i16; MAX_WIDTH]);

/// Draws the latent vector for `seed` and runs the model, writing one `u8` per pixel.
///
/// Works in fixed stack buffers (one `i16` and one `i8` activation buffer of [`MAX_WIDTH`]
/// entries, 3 KiB) and the borrowed model: no heap, no float. The host simulation and the
/// firmware both call this function.
pub fn generate(model: &Model<'_>, seed: u32, pixels: &mut [u8]) -> Result<(), InferenceError> {
    run(model, pixels, &mut (), Latent::Seed(seed))
}

/// [`generate`], telling `observer` when each layer starts and ends.
///
/// Not generic (the observer is a trait object), so that the inference loop is compiled once,
/// in this crate, with this crate's optimisation settings, whatever the caller's.
pub fn generate_observed(
    model: &Model<'_>,
    seed: u32,
    pixels: &mut [u8],
    observer: &mut dyn LayerObserver,
) -> Result<(), InferenceError> {
    run(model, pixels, observer, Latent::Seed(seed))
}

/// Where the latent vector comes from.
#[derive(Clone, Copy)]
enum Latent<'a> {
    /// Drawn from a seed.
    Seed(u32),
    /// Given.
    Codes(&'a [i8]),
}

/// Runs the model on a given int8 latent vector (codes at [`crate::latent::LATENT_SCALE`]).
/// [`generate`] is this after [`sample_latent`]; the host calls it directly to feed its own
/// latent vectors.
pub fn run_from_latent(
    model: &Model<'_>,
    latent: &[i8],
    pixels: &mut [u8],
) -> Result<(), InferenceError> {
    if latent.len() != model.latent_dim() {
        return Err(InferenceError::LatentSize {
            expected: model.latent_dim(),
            found: latent.len(),
        });
    }
    run(model, pixels, &mut (), Latent::Codes(latent))
}

/// Copies `narrow` into the front of `wide` and zeroes the rest up to the next column block.
#[inline]
fn widen(narrow: &[i8], wide: &mut [i16; MAX_WIDTH]) {
    for (w, &n) in wide.iter_mut().zip(narrow) {
        *w = i16::from(n);
    }
    let padded_end = padded(narrow.len(), COL_BLOCK).min(MAX_WIDTH);
    if let Some(tail) = wide.get_mut(narrow.len()..padded_end) {
        tail.fill(0);
    }
}

/// Runs the layers on the latent vector `latent` stands for.
#[inline(never)]
fn run(
    model: &Model<'_>,
    pixels: &mut [u8],
    observer: &mut dyn LayerObserver,
    latent: Latent<'_>,
) -> Result<(), InferenceError> {
    if pixels.len() != model.pixel_count() {
        return Err(InferenceError::PixelBufferSize {
            expected: model.pixel_count(),
            found: pixels.len(),
        });
    }
    let mut narrow = [0i8; MAX_WIDTH];
    let mut wide = WideActivations([0i16; MAX_WIDTH]);
    let mut width = model.latent_dim().min(MAX_WIDTH);
    match latent {
        Latent::Seed(seed) => sample_latent(seed, &mut narrow[..width]),
        Latent::Codes(codes) => {
            for (slot, &code) in narrow[..width].iter_mut().zip(codes) {
                *slot = code;
            }
        }
    }

    for (index, layer) in model.layers().iter().enumerate() {
        // The previous layer's int8 outputs become this layer's i16 inputs.
        widen(&narrow[..width], &mut wide.0);
        observer.layer_started(index);
        let inputs = &wide.0[..];
        match layer.output {
            LayerOutput::LeakyRelu {
                zero_point,
                negative_slope_q31,
            } => {
                let mut out = narrow.iter_mut();
                dense(
                    layer.weight_format,
                    layer.weights,
                    layer.channels,
                    layer.inputs,
                    inputs,
                    |params, acc| {
                        if let Some(slot) = out.next() {
                            *slot = leaky_relu_requant(acc, params, negative_slope_q31, zero_point);
                        }
                    },
                );
                width = layer.outputs.min(MAX_WIDTH);
            }
            LayerOutput::TanhPixels { lut } => {
                let mut out = pixels.iter_mut();
                dense(
                    layer.weight_format,
                    layer.weights,
                    layer.channels,
                    layer.inputs,
                    inputs,
                    |params, acc| {
                        if let Some(slot) = out.next() {
                            *slot = tanh_pixel(acc, params, lut);
                        }
                    },
                );
            }
        }
        observer.layer_finished(index);
    }
    Ok(())
}

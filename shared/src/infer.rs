//! Inference: one seed in, one image out, in fixed buffers.

use crate::format::{LayerOutput, Model, MAX_WIDTH};
use crate::kernels::{dense_i8, leaky_relu_requant, tanh_pixel};
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

/// Draws the latent vector for `seed` and runs the model, writing one `u8` per pixel.
///
/// Works in two stack buffers of [`MAX_WIDTH`] bytes and the borrowed model: no heap, no float.
/// The host simulation and the firmware both call this function.
pub fn generate(model: &Model<'_>, seed: u32, pixels: &mut [u8]) -> Result<(), InferenceError> {
    run(model, pixels, |input| sample_latent(seed, input))
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
    run(model, pixels, |input| input.copy_from_slice(latent))
}

/// Runs the layers; `fill_latent` writes the latent codes into the first activation buffer.
fn run(
    model: &Model<'_>,
    pixels: &mut [u8],
    fill_latent: impl FnOnce(&mut [i8]),
) -> Result<(), InferenceError> {
    if pixels.len() != model.pixel_count() {
        return Err(InferenceError::PixelBufferSize {
            expected: model.pixel_count(),
            found: pixels.len(),
        });
    }
    let mut ping = [0i8; MAX_WIDTH];
    let mut pong = [0i8; MAX_WIDTH];
    let mut width = model.latent_dim().min(MAX_WIDTH);
    fill_latent(&mut ping[..width]);
    let (mut input, mut output) = (&mut ping, &mut pong);

    for layer in model.layers() {
        let activations = &input[..width];
        match layer.output {
            LayerOutput::LeakyRelu {
                zero_point,
                negative_slope_q31,
            } => {
                let mut out = output.iter_mut();
                dense_i8(layer.weights, layer.channels, activations, |params, acc| {
                    if let Some(slot) = out.next() {
                        *slot = leaky_relu_requant(acc, params, negative_slope_q31, zero_point);
                    }
                });
                width = layer.outputs.min(MAX_WIDTH);
                core::mem::swap(&mut input, &mut output);
            }
            LayerOutput::TanhPixels { lut } => {
                let mut out = pixels.iter_mut();
                dense_i8(layer.weights, layer.channels, activations, |params, acc| {
                    if let Some(slot) = out.next() {
                        *slot = tanh_pixel(acc, params, lut);
                    }
                });
            }
        }
    }
    Ok(())
}

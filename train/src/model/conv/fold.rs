//! The convolutional generator as float layers for the quantizer: `l1` with the first
//! BatchNorm folded per channel (each channel is `s·s` of its outputs) and no activation (or a
//! LeakyReLU, when the spec asks for one),
//! each block's upsampling convolution with its BatchNorm folded and LeakyReLU, and the last
//! convolution with Tanh.

use anyhow::Context;
use candle_core::Tensor;
use mcugan_float_model::{Activation, FloatGenerator, FloatLayer};
use mcugan_shared::ImageShape;

use super::layers::BatchNorm2d;
use super::ConvGenerator;
use crate::model::LEAKY_SLOPE;

/// `scale = γ/√(var+ε)` and `shift = β − mean·scale` of `norm`, per channel.
fn norm_factors(norm: &BatchNorm2d) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let gamma = norm.weight.as_tensor().to_vec1::<f32>()?;
    let beta = norm.bias.as_tensor().to_vec1::<f32>()?;
    let mean = norm.running_mean.to_vec1::<f32>()?;
    let var = norm.running_var.to_vec1::<f32>()?;
    let scale: Vec<f64> = gamma
        .iter()
        .zip(&var)
        .map(|(&g, &v)| f64::from(g) / (f64::from(v) + norm.eps).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((&b, &m), &s)| f64::from(b) - f64::from(m) * s)
        .collect();
    Ok((scale, shift))
}

/// Folds `norm` into a layer whose outputs come in `scale.len()` channels of `per_channel`
/// consecutive outputs, each output's weights a row of `row` values.
fn fold_into(
    weight: &mut [f32],
    bias: &mut [f32],
    row: usize,
    norm: &BatchNorm2d,
) -> anyhow::Result<()> {
    let (scale, shift) = norm_factors(norm)?;
    let per_channel = bias.len() / scale.len();
    for (output, b) in bias.iter_mut().enumerate() {
        let channel = output / per_channel;
        let (s, t) = (scale[channel], shift[channel]);
        for w in &mut weight[output * row..(output + 1) * row] {
            *w = (f64::from(*w) * s) as f32;
        }
        *b = (f64::from(*b) * s + t) as f32;
    }
    Ok(())
}

fn values(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// The generator in evaluation mode as float layers.
pub fn fold(generator: &ConvGenerator) -> anyhow::Result<FloatGenerator> {
    let spec = &generator.spec;
    let latent = spec.latent;
    let mut layers = Vec::new();

    let mut weight = values(generator.l1.weight.as_tensor())?;
    let mut bias = values(generator.l1.bias.as_tensor())?;
    fold_into(&mut weight, &mut bias, latent, &generator.norms[0])?;
    let outputs = bias.len();
    let first_activation = if spec.first_leaky_relu {
        Activation::LeakyRelu(LEAKY_SLOPE as f32)
    } else {
        Activation::Identity
    };
    layers.push(FloatLayer::dense(
        latent,
        outputs,
        weight,
        bias,
        first_activation,
    ));

    for (i, conv) in generator.convs.iter().enumerate() {
        let geometry = conv.geometry().clone();
        let mut weight = values(&conv.weight_out_in()?)?;
        let mut bias = values(conv.bias.as_tensor())?;
        let activation = match generator.norms.get(i + 1) {
            Some(norm) => {
                fold_into(&mut weight, &mut bias, geometry.row_len(), norm)?;
                Activation::LeakyRelu(LEAKY_SLOPE as f32)
            }
            None => Activation::Tanh,
        };
        layers.push(FloatLayer::convolution(geometry, weight, bias, activation));
    }
    let side = u16::try_from(spec.image_side()).context("the image side")?;
    let image = ImageShape {
        width: side,
        height: side,
        channels: u8::try_from(spec.image_channels).context("the image channels")?,
    };
    Ok(FloatGenerator::new(layers, image))
}

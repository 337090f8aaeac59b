//! From the trained candle generator to the plain float model the quantizer takes: each
//! BatchNorm (running statistics) folded into the layer before it,
//! `w' = w·γ/√(var+ε)`, `b' = (b − mean)·γ/√(var+ε) + β`, per output (a convolution's: per
//! output channel, `conv/fold.rs`). Here, beside the candle model, so that the model tools
//! know nothing of candle.

use anyhow::{bail, Context};
use mcugan_float_model::{Activation, ClassEmbedding, FloatGenerator, FloatLayer};

use super::mlp::MlpGenerator;
use super::{Generator, LEAKY_SLOPE};

/// The generator in evaluation mode as plain float layers: its BatchNorm layers (running
/// statistics) folded into the layers before them.
pub fn fold(generator: &Generator) -> anyhow::Result<FloatGenerator> {
    // Every stored tensor by the name it has in the file, checked before any arithmetic.
    for (name, tensor) in generator.state()? {
        if tensor.dtype() != candle_core::DType::F32 {
            continue;
        }
        let values = tensor.flatten_all()?.to_vec1::<f32>()?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            bail!("the tensor {name} holds {bad}: the generator is broken and cannot be used");
        }
        if name.ends_with("running_var") {
            if let Some(bad) = values.iter().find(|&&v| v < 0.0) {
                bail!(
                    "the tensor {name} holds the negative variance {bad}: the generator is \
                     broken and cannot be used"
                );
            }
        }
    }
    match generator {
        Generator::Mlp(mlp) => fold_mlp(mlp),
        Generator::Conv(conv) => super::conv::fold(conv),
    }
}

/// `gan.py`'s (or `cgan.py`'s) generator: BatchNorm1d (eps 0.8) folded into the Linears.
fn fold_mlp(generator: &MlpGenerator) -> anyhow::Result<FloatGenerator> {
    let mut layers = Vec::new();
    for (index, linear) in generator.linears.iter().enumerate() {
        let weight = linear.weight.as_tensor().to_vec2::<f32>()?;
        let mut bias = linear.bias.as_tensor().to_vec1::<f32>()?;
        let (outputs, inputs) = (weight.len(), weight.first().map_or(0, Vec::len));
        let mut weight: Vec<f32> = weight.into_iter().flatten().collect();
        // Linears 1..=3 are followed by norms 0..=2.
        if (1..=3).contains(&index) {
            let norm = &generator.norms[index - 1];
            let gamma = norm.weight.as_tensor().to_vec1::<f32>()?;
            let beta = norm.bias.as_tensor().to_vec1::<f32>()?;
            let mean = norm.running_mean.to_vec1::<f32>()?;
            let var = norm.running_var.to_vec1::<f32>()?;
            for o in 0..outputs {
                let scale = f64::from(gamma[o]) / (f64::from(var[o]) + norm.eps).sqrt();
                for w in &mut weight[o * inputs..(o + 1) * inputs] {
                    *w = (f64::from(*w) * scale) as f32;
                }
                bias[o] =
                    ((f64::from(bias[o]) - f64::from(mean[o])) * scale + f64::from(beta[o])) as f32;
            }
        }
        let activation = if index == 4 {
            Activation::Tanh
        } else {
            Activation::LeakyRelu(LEAKY_SLOPE as f32)
        };
        layers.push(FloatLayer::dense(inputs, outputs, weight, bias, activation));
    }
    let pixels = layers.last().map_or(0, |l| l.outputs);
    let image = FloatGenerator::square_image(pixels)
        .with_context(|| format!("the generator makes {pixels} pixels, not a square image"))?;
    let float = FloatGenerator::new(layers, image);
    Ok(match &generator.label_embedding {
        Some(table) => {
            let rows = table.as_tensor().to_vec2::<f32>()?;
            let classes = rows.len();
            let width = rows.first().map_or(0, Vec::len);
            float.with_classes(ClassEmbedding {
                classes,
                width,
                table: rows.into_iter().flatten().collect(),
            })
        }
        None => float,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use mcugan_float_model::latent_for_seed;
    use rand::SeedableRng;

    #[test]
    fn folding_batch_norm_matches_eval_mode() {
        let device = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut g = MlpGenerator::new(&mut rng, &device).unwrap();
        // Move the running statistics and affine parameters away from their defaults.
        for _ in 0..3 {
            let z = Tensor::randn(0f32, 1., (16, 100), &device).unwrap();
            g.forward_train(&z).unwrap();
        }
        for norm in &g.norms {
            let n = norm.weight.as_tensor().dim(0).unwrap();
            norm.weight
                .set(&Tensor::rand(0.5f32, 1.5, n, &device).unwrap())
                .unwrap();
            norm.bias
                .set(&Tensor::rand(-0.5f32, 0.5, n, &device).unwrap())
                .unwrap();
        }
        let folded = fold_mlp(&g).unwrap();
        let z = latent_for_seed(9, 100);
        let expected = g
            .forward_eval(&Tensor::from_slice(&z, (1, 100), &device).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = folded.forward(&z).unwrap();
        let worst = expected
            .iter()
            .zip(&got)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-4, "folded model differs by {worst}");
    }
}

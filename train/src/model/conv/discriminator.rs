//! The convolutional discriminator of `dcgan.py` (and its variants), with `dcgan.py`'s tensor
//! names: `model.N.*` for the layers of its `nn.Sequential` (per block Conv, LeakyReLU,
//! Dropout2d, then BatchNorm except in the first block) and `adv_layer.0.*` for the Linear.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor, Var};
use mcugan_float_model::conv::Conv2d as Geometry;
use rand_chacha::ChaCha8Rng;

use super::layers::{normal, BatchNorm2d, Conv2d};
use super::spec::ConvGanSpec;
use crate::model::init::take;
use crate::model::layers::{leaky_relu, Linear};

/// The discriminator; see [`super::DiscriminatorSpec`] for its layers.
pub struct ConvDiscriminator {
    /// Both networks' spec (the image comes from the generator's).
    pub spec: ConvGanSpec,
    /// Each block's strided convolution.
    pub convs: Vec<Conv2d>,
    /// Each block's BatchNorm (`None` in the first block).
    pub norms: Vec<Option<BatchNorm2d>>,
    /// `adv_layer.0`: the last feature map → one logit.
    pub adv: Linear,
}

impl ConvDiscriminator {
    /// A fresh discriminator: PyTorch's default initialisation, then `weights_init_normal`
    /// (convolution weights `N(0, 0.02)`, BatchNorm γ `N(1, 0.02)`).
    pub fn new(spec: &ConvGanSpec, rng: &mut ChaCha8Rng, device: &Device) -> anyhow::Result<Self> {
        let d = &spec.discriminator;
        let k = d.kernel;
        let mut side = spec.generator.image_side();
        let mut input = spec.generator.image_channels;
        let (mut convs, mut norms) = (Vec::new(), Vec::new());
        for (i, &output) in d.channels.iter().enumerate() {
            let geometry = Geometry {
                transposed: false,
                in_channels: input,
                out_channels: output,
                input: [side, side],
                output: [side.div_ceil(2), side.div_ceil(2)],
                kernel: [k, k],
                stride: [2, 2],
                padding: [k / 2, k / 2],
                upsample: 1,
            };
            convs.push(Conv2d::new(geometry, rng, device)?);
            norms.push(if i == 0 {
                None
            } else {
                Some(BatchNorm2d::new(output, d.norm_eps, rng, device)?)
            });
            input = output;
            side = side.div_ceil(2);
        }
        let adv = Linear::new(input * side * side, 1, rng, device)?;
        for conv in &convs {
            conv.weight
                .set(&normal(rng, conv.weight.dims(), 0.0, 0.02, device)?)?;
        }
        Ok(Self {
            spec: spec.clone(),
            convs,
            norms,
            adv,
        })
    }

    /// Output channels of each block: the shapes of its `Dropout2d` masks are
    /// `[batch, channels, 1, 1]`.
    pub fn dropout_channels(&self) -> Vec<usize> {
        self.spec.discriminator.channels.clone()
    }

    /// The logits (before the sigmoid) of `images` (`[batch, channels · side²]`), in training
    /// mode as `dcgan.py` always runs it (batch statistics, running statistics updated), with
    /// one `Dropout2d` mask per block (none: no dropout). `frozen`: the weights cut out of the
    /// gradient graph (the generator's step), gradients still flowing to `images`.
    pub fn logits(&mut self, images: &Tensor, masks: &[Tensor], frozen: bool) -> Result<Tensor> {
        let g = &self.spec.generator;
        let batch = images.dim(0)?;
        let side = g.image_side();
        let mut x = images.reshape((batch, g.image_channels, side, side))?;
        for (i, conv) in self.convs.iter().enumerate() {
            x = if frozen {
                conv.forward_frozen(&x)?
            } else {
                conv.forward(&x)?
            };
            x = leaky_relu(&x)?;
            if let Some(mask) = masks.get(i) {
                x = x.broadcast_mul(mask)?;
            }
            if let Some(norm) = &mut self.norms[i] {
                x = norm.forward_train(&x, frozen, None)?;
            }
        }
        let x = x.flatten_from(1)?;
        if frozen {
            self.adv.forward_frozen(&x)
        } else {
            self.adv.forward(&x)
        }
    }

    /// The `model` index of block `i`'s convolution.
    fn conv_index(i: usize) -> usize {
        if i == 0 {
            0
        } else {
            4 * i - 1
        }
    }

    /// The trainable variables with `dcgan.py`'s names.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut vars = Vec::new();
        for (i, (conv, norm)) in self.convs.iter().zip(&self.norms).enumerate() {
            let index = Self::conv_index(i);
            vars.push((format!("model.{index}.weight"), conv.weight.clone()));
            vars.push((format!("model.{index}.bias"), conv.bias.clone()));
            if let Some(norm) = norm {
                vars.push((format!("model.{}.weight", index + 3), norm.weight.clone()));
                vars.push((format!("model.{}.bias", index + 3), norm.bias.clone()));
            }
        }
        vars.push(("adv_layer.0.weight".to_string(), self.adv.weight.clone()));
        vars.push(("adv_layer.0.bias".to_string(), self.adv.bias.clone()));
        vars
    }

    /// Every tensor of the state, as `state_dict()` lists them.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut state: Vec<(String, Tensor)> = self
            .vars()
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().clone()))
            .collect();
        for (i, norm) in self.norms.iter().enumerate() {
            if let Some(norm) = norm {
                norm.push_statistics(&format!("model.{}", Self::conv_index(i) + 3), &mut state)?;
            }
        }
        Ok(state)
    }

    /// Restores the state saved by [`ConvDiscriminator::state`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        for (name, var) in self.vars() {
            var.set(&take(tensors, prefix, &name, var.dims())?.to_device(var.device())?)?;
        }
        for (i, norm) in self.norms.iter_mut().enumerate() {
            if let Some(norm) = norm {
                norm.load_statistics(
                    tensors,
                    prefix,
                    &format!("model.{}", Self::conv_index(i) + 3),
                )?;
            }
        }
        Ok(())
    }
}

//! The convolutional generator of `dcgan.py` (and its narrower variants), with `dcgan.py`'s
//! tensor names: `l1.0.*` for the first Linear, `conv_blocks.N.*` for the layers of its
//! `nn.Sequential` (BatchNorm at 0; per block Upsample, Conv, BatchNorm, LeakyReLU; then the
//! last Conv and Tanh).

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor, Var};
use mcugan_float_model::conv::Conv2d as Geometry;
use rand_chacha::ChaCha8Rng;

use super::layers::{normal, BatchNorm2d, Conv2d};
use super::spec::{GeneratorSpec, Upsampling};
use crate::model::init::take;
use crate::model::layers::{leaky_relu, Linear};
use crate::model::LEAKY_SLOPE;

/// The generator; see [`GeneratorSpec`] for its layers.
pub struct ConvGenerator {
    /// What it is.
    pub spec: GeneratorSpec,
    /// `l1.0`: latent → first feature map.
    pub l1: Linear,
    /// The BatchNorm after `l1`, then each block's.
    pub norms: Vec<BatchNorm2d>,
    /// Each block's upsampling convolution, then the last convolution.
    pub convs: Vec<Conv2d>,
}

/// A `kernel`-sized convolution of stride 1 and same padding from `input` channels at `side`
/// (before an upsampling by `upsample`) to `output` channels.
fn same_conv(input: usize, output: usize, side: usize, upsample: usize, kernel: usize) -> Geometry {
    Geometry {
        transposed: false,
        in_channels: input,
        out_channels: output,
        input: [side, side],
        output: [side * upsample, side * upsample],
        kernel: [kernel, kernel],
        stride: [1, 1],
        padding: [kernel / 2, kernel / 2],
        upsample,
    }
}

/// ConvTranspose2d(4, stride 2, padding 1) from `input` channels at `side` to `output`
/// channels at twice the side.
pub(super) fn doubling_transposed_conv(input: usize, output: usize, side: usize) -> Geometry {
    Geometry {
        transposed: true,
        in_channels: input,
        out_channels: output,
        input: [side, side],
        output: [2 * side, 2 * side],
        kernel: [4, 4],
        stride: [2, 2],
        padding: [1, 1],
        upsample: 1,
    }
}

impl ConvGenerator {
    /// A fresh generator: PyTorch's default initialisation, then `dcgan.py`'s
    /// `weights_init_normal` (convolution weights `N(0, 0.02)`, BatchNorm γ `N(1, 0.02)`).
    pub fn new(
        spec: &GeneratorSpec,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let s = spec.init_side;
        let l1 = Linear::new(spec.latent, spec.channels[0] * s * s, rng, device)?;
        let mut norms = vec![BatchNorm2d::new(
            spec.channels[0],
            spec.first_norm_eps,
            rng,
            device,
        )?];
        let mut convs = Vec::new();
        let mut side = s;
        for pair in spec.channels.windows(2) {
            let geometry = match spec.upsampling {
                Upsampling::Nearest => same_conv(pair[0], pair[1], side, 2, spec.kernel),
                Upsampling::Transposed => doubling_transposed_conv(pair[0], pair[1], side),
            };
            convs.push(Conv2d::new(geometry, rng, device)?);
            norms.push(BatchNorm2d::new(pair[1], spec.norm_eps, rng, device)?);
            side *= 2;
        }
        let last = spec.channels[spec.channels.len() - 1];
        let geometry = same_conv(last, spec.image_channels, side, 1, spec.kernel);
        convs.push(Conv2d::new(geometry, rng, device)?);
        // `weights_init_normal`, after every module exists (as `generator.apply` runs).
        for conv in &convs {
            conv.weight
                .set(&normal(rng, conv.weight.dims(), 0.0, 0.02, device)?)?;
        }
        Ok(Self {
            spec: spec.clone(),
            l1,
            norms,
            convs,
        })
    }

    /// Training-mode forward pass (batch statistics; running statistics updated): images
    /// `[batch, channels · side²]` in `[-1, 1]`.
    pub fn forward_train(&mut self, z: &Tensor) -> Result<Tensor> {
        let mut x = self.first_map(z)?;
        let slope = self.spec.first_leaky_relu.then_some(LEAKY_SLOPE as f32);
        x = self.norms[0].forward_train(&x, false, slope)?;
        for i in 0..self.spec.blocks() {
            let y = self.convs[i].forward(&x)?;
            x = self.norms[i + 1].forward_train(&y, false, Some(LEAKY_SLOPE as f32))?;
        }
        self.image(&x, z.dim(0)?)
    }

    /// Evaluation-mode forward pass (running statistics).
    pub fn forward_eval(&self, z: &Tensor) -> Result<Tensor> {
        let mut x = self.first_map(z)?;
        x = self.norms[0].forward_eval(&x)?;
        if self.spec.first_leaky_relu {
            x = leaky_relu(&x)?;
        }
        for i in 0..self.spec.blocks() {
            let y = self.convs[i].forward(&x)?;
            x = leaky_relu(&self.norms[i + 1].forward_eval(&y)?)?;
        }
        self.image(&x, z.dim(0)?)
    }

    /// `l1(z)` viewed as the first feature map, `[batch, C0, s, s]`.
    fn first_map(&self, z: &Tensor) -> Result<Tensor> {
        let s = self.spec.init_side;
        self.l1
            .forward(z)?
            .reshape((z.dim(0)?, self.spec.channels[0], s, s))
    }

    /// The last convolution and Tanh, flattened to `[batch, channels · side²]`.
    fn image(&self, x: &Tensor, batch: usize) -> Result<Tensor> {
        self.convs[self.spec.blocks()]
            .forward(x)?
            .tanh()?
            .reshape((batch, self.spec.image_len()))
    }

    /// The `conv_blocks` index of block `i`'s convolution (`i == blocks`: the last one).
    fn conv_index(&self, i: usize) -> usize {
        4 * i + 2 - usize::from(i == self.spec.blocks())
    }

    /// The `conv_blocks` index of BatchNorm `i` (0: the first; then each block's).
    fn norm_index(i: usize) -> usize {
        if i == 0 {
            0
        } else {
            4 * i - 1
        }
    }

    /// The trainable variables with `dcgan.py`'s names.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut vars = vec![
            ("l1.0.weight".to_string(), self.l1.weight.clone()),
            ("l1.0.bias".to_string(), self.l1.bias.clone()),
        ];
        for (i, norm) in self.norms.iter().enumerate() {
            let index = Self::norm_index(i);
            vars.push((format!("conv_blocks.{index}.weight"), norm.weight.clone()));
            vars.push((format!("conv_blocks.{index}.bias"), norm.bias.clone()));
        }
        for (i, conv) in self.convs.iter().enumerate() {
            let index = self.conv_index(i);
            vars.push((format!("conv_blocks.{index}.weight"), conv.weight.clone()));
            vars.push((format!("conv_blocks.{index}.bias"), conv.bias.clone()));
        }
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
            norm.push_statistics(&format!("conv_blocks.{}", Self::norm_index(i)), &mut state)?;
        }
        Ok(state)
    }

    /// Restores the state saved by [`ConvGenerator::state`] (extra tensors are ignored;
    /// missing or misshapen ones are errors).
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        for (name, var) in self.vars() {
            var.set(&take(tensors, prefix, &name, var.dims())?.to_device(var.device())?)?;
        }
        for (i, norm) in self.norms.iter_mut().enumerate() {
            norm.load_statistics(
                tensors,
                prefix,
                &format!("conv_blocks.{}", Self::norm_index(i)),
            )?;
        }
        Ok(())
    }
}

//! The float description of a generator: what the quantizer takes, whatever the network came
//! from.
//!
//! A trained checkpoint (`generator.safetensors`, with its BatchNorm folded) and an imported
//! ONNX graph both become a [`FloatGenerator`]: dense or convolutional layers ([`conv`]) of
//! `f32` weights and biases, each followed by an [`Activation`]. Tensors are channels first
//! here, as PyTorch and ONNX store them; the quantizer lays them out for the chip. The quantizer needs nothing else, so quantizing, simulating
//! and evaluating do not depend on how the network was trained. A generator may also carry a
//! [`FloatReference`], the model's own float implementation (for ONNX: the graph run by
//! tract), which then is the reference for calibration and comparisons instead of this
//! crate's f64 forward pass.

use std::fmt;
use std::sync::Arc;

use mcugan_shared::latent::{sample_latent, LATENT_SCALE};
use mcugan_shared::{ImageRequest, ImageShape};

pub mod conv;

pub use conv::Conv2d;

/// What a layer applies after `W x + b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// LeakyReLU with this negative slope (`0.0` is ReLU).
    LeakyRelu(f32),
    /// None: a hidden layer whose output the next layer takes as it is (a dense layer before
    /// a convolution, with only a BatchNorm between them).
    Identity,
    /// Tanh: an output layer whose values in `[-1, 1]` map to gray levels `0..=255`.
    Tanh,
    /// The logistic sigmoid: an output layer whose values in `[0, 1]` map to `0..=255`.
    Sigmoid,
}

impl Activation {
    /// The activation of a pre-activation, in f64.
    pub fn apply(self, pre: f64) -> f64 {
        match self {
            Activation::LeakyRelu(slope) => {
                if pre >= 0.0 {
                    pre
                } else {
                    pre * f64::from(slope)
                }
            }
            Activation::Tanh => pre.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-pre).exp()),
            Activation::Identity => pre,
        }
    }

    /// Whether this activation makes pixels (the last layer's), rather than hidden features.
    pub fn makes_pixels(self) -> bool {
        matches!(self, Activation::Tanh | Activation::Sigmoid)
    }

    /// The gray level in `[0, 255]` (unrounded) of an output value of this pixel activation;
    /// hidden activations have no gray level and map through Tanh's convention.
    pub fn to_gray(self, value: f32) -> f32 {
        match self {
            Activation::Sigmoid => (value * 255.0).clamp(0.0, 255.0),
            Activation::Tanh | Activation::LeakyRelu(_) | Activation::Identity => {
                tanh_output_to_gray(value)
            }
        }
    }
}

/// Maps a tanh output in `[-1, 1]` to a gray level in `[0, 255]`.
pub fn tanh_output_to_gray(value: f32) -> f32 {
    ((value + 1.0) * 0.5 * 255.0).clamp(0.0, 255.0)
}

/// A float layer, dense or convolutional (BatchNorm, if any, already folded in).
#[derive(Clone, Debug, PartialEq)]
pub struct FloatLayer {
    /// Input entries (a dense layer's width, a convolution's input tensor).
    pub inputs: usize,
    /// Output entries.
    pub outputs: usize,
    /// A dense layer's row-major `[outputs][inputs]`; a convolution's `[out][in][kh][kw]`.
    pub weight: Vec<f32>,
    /// One per output channel.
    pub bias: Vec<f32>,
    /// The activation.
    pub activation: Activation,
    /// A convolution's geometry; `None` for a dense layer.
    pub conv: Option<Conv2d>,
}

impl FloatLayer {
    /// A dense layer.
    pub fn dense(
        inputs: usize,
        outputs: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        activation: Activation,
    ) -> Self {
        Self {
            inputs,
            outputs,
            weight,
            bias,
            activation,
            conv: None,
        }
    }

    /// A convolutional layer.
    pub fn convolution(
        conv: Conv2d,
        weight: Vec<f32>,
        bias: Vec<f32>,
        activation: Activation,
    ) -> Self {
        Self {
            inputs: conv.input_len(),
            outputs: conv.output_len(),
            weight,
            bias,
            activation,
            conv: Some(conv),
        }
    }

    /// Weights per output channel.
    pub fn row_len(&self) -> usize {
        match &self.conv {
            Some(conv) => conv.row_len(),
            None => self.inputs,
        }
    }

    /// Output channels (a dense layer's outputs).
    pub fn out_channels(&self) -> usize {
        match &self.conv {
            Some(conv) => conv.out_channels,
            None => self.outputs,
        }
    }

    /// `activation(W x + b)` (a convolution for a convolutional layer), accumulated in f64.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        if let Some(conv) = &self.conv {
            return conv
                .forward(&self.weight, &self.bias, x)
                .into_iter()
                .map(|pre| self.activation.apply(pre) as f32)
                .collect();
        }
        self.weight
            .chunks_exact(self.inputs)
            .zip(&self.bias)
            .map(|(row, &b)| {
                let pre = row
                    .iter()
                    .zip(x)
                    .map(|(&w, &v)| f64::from(w) * f64::from(v))
                    .sum::<f64>()
                    + f64::from(b);
                self.activation.apply(pre) as f32
            })
            .collect()
    }
}

/// Why a float reference could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReferenceError(pub String);

/// A model's own float implementation, run on one latent vector.
pub trait FloatReference: Send + Sync {
    /// What runs it, for reports (e.g. `tract-onnx 0.23`).
    fn describe(&self) -> String;

    /// Every layer's output (after its activation) for the latent vector `z`; the last is the
    /// image in the output activation's range.
    fn forward_all(&self, z: &[f32]) -> Result<Vec<Vec<f32>>, ReferenceError>;
}

/// The class embedding of a conditional generator (`cgan.py`'s `label_emb`): the first
/// layer's input is `[row of the class, latent vector]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassEmbedding {
    /// Classes.
    pub classes: usize,
    /// Values per class.
    pub width: usize,
    /// `classes * width` values, row per class.
    pub table: Vec<f32>,
}

impl ClassEmbedding {
    /// The row of `class`, or `None` beyond the table.
    pub fn row(&self, class: usize) -> Option<&[f32]> {
        let start = class.checked_mul(self.width)?;
        self.table.get(start..start + self.width)
    }
}

/// A generator as float layers, first to last, and the shape of the image the last draws.
#[derive(Clone)]
pub struct FloatGenerator {
    /// First to last.
    pub layers: Vec<FloatLayer>,
    /// The shape of a generated image (its pixel count is the last layer's outputs).
    pub image: ImageShape,
    /// The class embedding of a conditional generator; `None` for an unconditional one.
    pub classes: Option<ClassEmbedding>,
    reference: Option<Arc<dyn FloatReference>>,
}

impl fmt::Debug for FloatGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FloatGenerator")
            .field("layers", &self.layers)
            .field("image", &self.image)
            .field("classes", &self.classes)
            .field("reference", &self.reference.as_ref().map(|r| r.describe()))
            .finish()
    }
}

impl FloatGenerator {
    /// Layers whose float reference is this crate's f64 forward pass.
    pub fn new(layers: Vec<FloatLayer>, image: ImageShape) -> Self {
        Self {
            layers,
            image,
            classes: None,
            reference: None,
        }
    }

    /// Layers whose float reference is `reference` (the model's own implementation).
    pub fn with_reference(
        layers: Vec<FloatLayer>,
        image: ImageShape,
        reference: Arc<dyn FloatReference>,
    ) -> Self {
        Self {
            layers,
            image,
            classes: None,
            reference: Some(reference),
        }
    }

    /// A square grayscale image shape for `pixels` outputs, when `pixels` is a square that
    /// fits the header's `u16` sides.
    pub fn square_image(pixels: usize) -> Option<ImageShape> {
        let side = (pixels as f64).sqrt().round() as usize;
        let side16 = u16::try_from(side).ok()?;
        (pixels > 0 && side * side == pixels).then_some(ImageShape {
            width: side16,
            height: side16,
            channels: 1,
        })
    }

    /// What computes the float reference: the model's own implementation, or this crate's f64
    /// forward pass over the layers.
    pub fn reference_name(&self) -> String {
        match &self.reference {
            Some(reference) => reference.describe(),
            None => "f64 forward pass over the float layers".into(),
        }
    }

    /// This generator, conditioned on `classes`: its first layer takes the class row before
    /// the latent vector.
    pub fn with_classes(mut self, classes: ClassEmbedding) -> Self {
        self.classes = Some(classes);
        self
    }

    /// Classes of a conditional generator; `None` for an unconditional one.
    pub fn class_count(&self) -> Option<usize> {
        self.classes.as_ref().map(|c| c.classes)
    }

    /// Latent vector length: the first layer's inputs after the class row, if any.
    pub fn latent_dim(&self) -> usize {
        let inputs = self.layers.first().map_or(0, |l| l.inputs);
        inputs.saturating_sub(self.classes.as_ref().map_or(0, |c| c.width))
    }

    /// The first layer's input for `request`: the class's embedding row (conditional models)
    /// and the latent vector the chip draws for the seed.
    pub fn input_for(&self, request: ImageRequest) -> Result<Vec<f32>, ReferenceError> {
        let z = latent_for_seed(request.seed, self.latent_dim());
        match (&self.classes, request.class) {
            (None, None) => Ok(z),
            (Some(classes), Some(class)) => {
                let row = classes.row(usize::from(class)).ok_or_else(|| {
                    ReferenceError(format!(
                        "class {class} is beyond the model's {} classes",
                        classes.classes
                    ))
                })?;
                Ok(row.iter().copied().chain(z).collect())
            }
            (Some(classes), None) => Err(ReferenceError(format!(
                "the model is conditional: ask for one of its {} classes",
                classes.classes
            ))),
            (None, Some(_)) => Err(ReferenceError(
                "the model is unconditional: it draws no class".into(),
            )),
        }
    }

    /// The output layer's activation (`Tanh` for an empty generator).
    pub fn output_activation(&self) -> Activation {
        self.layers
            .last()
            .map_or(Activation::Tanh, |l| l.activation)
    }

    /// Runs this crate's f64 forward pass over the layers; returns every layer's output.
    pub fn layers_forward_all(&self, z: &[f32]) -> Vec<Vec<f32>> {
        let mut outputs: Vec<Vec<f32>> = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let input = outputs.last().map_or(z, |v| v.as_slice());
            let out = layer.forward(input);
            outputs.push(out);
        }
        outputs
    }

    /// Every layer's output for `z` from the float reference (see [`FloatGenerator::new`]).
    pub fn forward_all(&self, z: &[f32]) -> Result<Vec<Vec<f32>>, ReferenceError> {
        match &self.reference {
            Some(reference) => reference.forward_all(z),
            None => Ok(self.layers_forward_all(z)),
        }
    }

    /// The image for `z`, in the output activation's range.
    pub fn forward(&self, z: &[f32]) -> Result<Vec<f32>, ReferenceError> {
        Ok(self.forward_all(z)?.pop().unwrap_or_default())
    }

    /// The image the float model draws for `seed`, from the same latent vector the chip draws
    /// (codes times [`LATENT_SCALE`]), as gray levels in `[0, 255]` (unrounded). A conditional
    /// model draws the seed's default class ([`ImageRequest::default_for`]), as the chip does.
    pub fn draw(&self, seed: u32) -> Result<Vec<f32>, ReferenceError> {
        self.draw_request(ImageRequest::default_for(seed, self.class_count()))
    }

    /// The image the float model draws for `request`, as gray levels (see [`Self::draw`]),
    /// channels last as the chip draws them (RGB pixel by pixel).
    pub fn draw_request(&self, request: ImageRequest) -> Result<Vec<f32>, ReferenceError> {
        let activation = self.output_activation();
        let gray: Vec<f32> = self
            .forward(&self.input_for(request)?)?
            .into_iter()
            .map(|v| activation.to_gray(v))
            .collect();
        Ok(match self.image.channels {
            0 | 1 => gray,
            channels => conv::channels_last(&gray, usize::from(channels)),
        })
    }
}

/// The real latent vector the chip draws for `seed`.
pub fn latent_for_seed(seed: u32, dim: usize) -> Vec<f32> {
    let mut codes = vec![0i8; dim];
    sample_latent(seed, &mut codes);
    codes.iter().map(|&c| f32::from(c) * LATENT_SCALE).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Doubling;
    impl FloatReference for Doubling {
        fn describe(&self) -> String {
            "doubling".into()
        }
        fn forward_all(&self, z: &[f32]) -> Result<Vec<Vec<f32>>, ReferenceError> {
            Ok(vec![z.iter().map(|v| v * 2.0).collect()])
        }
    }

    fn one_layer(activation: Activation) -> FloatGenerator {
        let layer = FloatLayer::dense(2, 1, vec![1.0, -2.0], vec![0.5], activation);
        FloatGenerator::new(vec![layer], FloatGenerator::square_image(1).unwrap())
    }

    #[test]
    fn activations_and_gray_levels() {
        assert_eq!(Activation::LeakyRelu(0.2).apply(-1.0), -f64::from(0.2f32));
        assert_eq!(Activation::LeakyRelu(0.0).apply(-1.0), 0.0);
        assert_eq!(Activation::Sigmoid.apply(0.0), 0.5);
        assert_eq!(Activation::Tanh.to_gray(1.0), 255.0);
        assert_eq!(Activation::Tanh.to_gray(-1.0), 0.0);
        assert_eq!(Activation::Sigmoid.to_gray(1.0), 255.0);
        assert_eq!(Activation::Sigmoid.to_gray(0.0), 0.0);
        assert!(!Activation::LeakyRelu(0.2).makes_pixels());
    }

    #[test]
    fn the_reference_replaces_the_layers_forward_pass() {
        let plain = one_layer(Activation::Sigmoid);
        // sigmoid(1 * 1 - 2 * 2 + 0.5) = sigmoid(-2.5)
        let out = plain.forward(&[1.0, 2.0]).unwrap();
        assert!((out[0] - 0.075_858_18).abs() < 1e-6, "{out:?}");
        let referenced =
            FloatGenerator::with_reference(plain.layers.clone(), plain.image, Arc::new(Doubling));
        assert_eq!(referenced.forward(&[1.0, 2.0]).unwrap(), vec![2.0, 4.0]);
        assert_eq!(referenced.reference_name(), "doubling");
    }

    #[test]
    fn square_images_only() {
        assert_eq!(FloatGenerator::square_image(784).unwrap().width, 28);
        assert!(FloatGenerator::square_image(785).is_none());
        assert!(FloatGenerator::square_image(0).is_none());
    }
}

//! The convolutional GAN of PyTorch-GAN's `dcgan.py` and its narrower variants, in candle:
//! its [`spec`](ConvGanSpec), layers (a convolution in the chip's phased form on the CPU,
//! BatchNorm2d, `Dropout2d`), the [`ConvGenerator`] and the [`ConvDiscriminator`].

mod direct;
mod discriminator;
mod fold;
mod generator;
mod layers;
mod norm_op;
pub(crate) mod phased;
mod spec;
#[cfg(test)]
mod tests;

pub use discriminator::ConvDiscriminator;
pub use fold::fold;
pub use generator::ConvGenerator;
pub use layers::{channel_dropout_mask, BatchNorm2d, Conv2d};
pub use phased::PhasedGeometry;
pub use spec::{ConvGanSpec, DiscriminatorSpec, GeneratorSpec, SpecError, Upsampling};

//! The networks of PyTorch-GAN's `gan.py` (and `cgan.py`'s conditional ones), in candle.
//!
//! Layers are written out rather than taken from candle-nn so that every detail the reference
//! depends on is visible and tested: PyTorch's default initialisation, BatchNorm1d with
//! `eps = 0.8` (the script's quirk) and momentum 0.1 with unbiased running variance, and tensor
//! names that match the PyTorch `state_dict` (`model.0.weight`, …), so a generator trained in
//! PyTorch and saved as safetensors loads here too.
//!
//! One concept per file: [`layers`](Linear) and their initialisation, the [`Generator`], the
//! [`Discriminator`], the losses, the latent vectors, and the [`fold`] into the float model the
//! quantizer takes.

pub mod conv;
mod fold;
mod init;
mod latent;
mod layers;
mod loss;
pub mod mlp;
mod networks;
#[cfg(test)]
mod tests;

pub use fold::fold;
pub use latent::{latent_batch, sample_z};
pub use layers::{leaky_relu, BatchNorm1d, Linear};
pub use loss::{bce_with_logit_targets, bce_with_logits, mse, mse_targets};
pub use networks::{Architecture, Discriminator, Generator};

/// Latent vector length.
pub const LATENT_DIM: usize = 100;
/// Pixels of one 28x28 image.
pub const IMAGE_PIXELS: usize = 784;
/// LeakyReLU's negative slope.
pub const LEAKY_SLOPE: f64 = 0.2;
/// BatchNorm1d's eps as the reference passes it (positionally, as if it were momentum).
pub const BATCH_NORM_EPS: f64 = 0.8;
/// BatchNorm1d's momentum (PyTorch's default).
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;
/// Widths of the generator, latent first.
pub const GENERATOR_WIDTHS: [usize; 6] = [LATENT_DIM, 128, 256, 512, 1024, IMAGE_PIXELS];
/// Widths of the discriminator, image first.
pub const DISCRIMINATOR_WIDTHS: [usize; 4] = [IMAGE_PIXELS, 512, 256, 1];
/// Widths of `cgan.py`'s discriminator after its input (image and label embedding).
pub const CONDITIONAL_DISCRIMINATOR_WIDTHS: [usize; 4] = [512, 512, 512, 1];
/// `cgan.py`'s dropout probability, on the discriminator's second and third hidden layers.
pub const CONDITIONAL_DROPOUT: f32 = 0.4;
/// The PyTorch `nn.Sequential` indices of the discriminator's Linear layers in `cgan.py`.
pub const CONDITIONAL_DISCRIMINATOR_LINEAR_INDICES: [usize; 4] = [0, 2, 5, 8];
/// The generator's label embedding in `cgan.py`'s `state_dict`.
pub const GENERATOR_EMBEDDING: &str = "label_emb.weight";
/// The discriminator's label embedding in `cgan.py`'s `state_dict`.
pub const DISCRIMINATOR_EMBEDDING: &str = "label_embedding.weight";

/// The PyTorch `nn.Sequential` indices of the generator's Linear layers in `gan.py`.
pub const GENERATOR_LINEAR_INDICES: [usize; 5] = [0, 2, 5, 8, 11];
/// The PyTorch `nn.Sequential` indices of the generator's BatchNorm layers in `gan.py`.
pub const GENERATOR_NORM_INDICES: [usize; 3] = [3, 6, 9];
/// The PyTorch `nn.Sequential` indices of the discriminator's Linear layers in `gan.py`.
pub const DISCRIMINATOR_LINEAR_INDICES: [usize; 3] = [0, 2, 4];

//! The MLP GAN of PyTorch-GAN's `gan.py` (and `cgan.py`'s conditional one).

mod discriminator;
mod generator;

pub use discriminator::MlpDiscriminator;
pub use generator::MlpGenerator;

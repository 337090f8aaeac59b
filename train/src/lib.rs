//! # mcugan-train
//!
//! Training mcugan's generators: the reference MLP GAN of PyTorch-GAN's `gan.py` (and
//! `cgan.py`'s conditional one) in candle, with three training steps (candle's autograd, the
//! fused CPU step, the kernel step for GPUs), the small-data recipe, checkpoints and resume;
//! also the digit classifier whose feature space the quality metrics use, and the folding of
//! a trained generator into the float model that the quantizer takes.

pub mod adam;
pub mod classifier;
pub mod cpu;
pub mod device;
pub mod engine;
pub mod fold;
pub mod fused;
pub mod gan;
pub mod kernel_trainer;
pub mod latent;
pub mod recipe;
pub mod state;
pub mod train;

#[cfg(test)]
mod test_support;

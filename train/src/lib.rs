//! # mcugan-train
//!
//! Training mcugan's generators: the reference MLP GAN of PyTorch-GAN's `gan.py` (and
//! `cgan.py`'s conditional one) in candle, with three engines for the training step (candle's
//! autograd, the fused CPU step, the kernel step for GPUs), the small-data recipe, checkpoints
//! and resume; also the digit classifier whose feature space the quality metrics use, and the
//! folding of a trained generator into the float model that the quantizer takes.
//!
//! The layout, by role:
//! - [`model`]: the networks, their layers and losses, latent vectors, the fold for export;
//! - [`state`]: what a run trains (networks, optimisers, random generator) and its checkpoint;
//! - [`engine`]: the training step's interface, its three engines and the one factory;
//! - [`run`]: the training loop, its configuration and the files it writes;
//! - [`adam`], [`recipe`]: the optimiser and the small-data recipe every engine follows;
//! - [`classifier`]: the digit classifier of the metrics; [`cpu`], [`device`]: where it runs.

pub mod adam;
pub mod classifier;
pub mod cpu;
pub mod device;
pub mod engine;
pub mod model;
pub mod recipe;
pub mod run;
pub mod state;

#[cfg(test)]
mod test_support;

//! The training engines. Three compute the same step of the reference: candle's autograd
//! ([`CandleStep`]), the fused CPU step ([`fused`]) and the kernel step ([`kernels`], for GPUs).
//! The training loop drives any of them through [`TrainingStep`], built by the one factory
//! [`build`]; one conformance suite (`tests/faithful.rs`, `tests/engines.rs`) holds every
//! engine to the reference and to each other.
//!
//! An engine may keep its own copy of the networks (the fused and kernel steps do, in the
//! shared parameter store of `params.rs`); it brings [`TrainState`] up to date in
//! [`TrainingStep::store_into`], which the loop calls before a checkpoint or an exported
//! generator.

mod candle;
mod candle_conv;
pub mod fused;
pub mod kernels;
mod params;

pub use candle::CandleStep;

use candle_core::{Device, Tensor};

use crate::model::LATENT_DIM;
use crate::state::TrainState;

/// One batch as every engine receives it: where its images and latent vectors lie in the
/// epoch's order and latents (the ones given to [`TrainingStep::begin_epoch`]).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// The epoch's image order (indices into the training images).
    pub order: &'a [u32],
    /// The latent vectors of the epoch's remaining batches, row-major `[rows, 100]`.
    pub latents: &'a [f32],
    /// Position in `order` of the batch's first image.
    pub start: usize,
    /// Images in the batch.
    pub len: usize,
    /// Row of `latents` of the batch's first latent vector.
    pub latent_row: usize,
}

impl Batch<'_> {
    /// The batch's latent vectors, row-major `[len, 100]`.
    pub fn z(&self) -> &[f32] {
        &self.latents[self.latent_row * LATENT_DIM..(self.latent_row + self.len) * LATENT_DIM]
    }
}

/// A training step: the generator step, then the discriminator step on the same fakes, as
/// `gan.py` (or `cgan.py`) takes them, batch by batch.
pub trait TrainingStep {
    /// Where and how it trains, for the run's summary (`cpu (fused step, 2 threads …)`).
    fn describe(&self, device: &Device) -> String;

    /// Starts an epoch (or the rest of one, after a resume): its image order and the latent
    /// vectors of its remaining batches, which [`Batch`] then points into.
    fn begin_epoch(&mut self, order: &[u32], latents: &[f32]) -> anyhow::Result<()>;

    /// Trains one batch; `state` is the run's (its random generator draws what the step
    /// needs beyond the batch, such as dropout masks and the conditional GAN's labels).
    fn train_batch(&mut self, state: &mut TrainState, batch: &Batch) -> anyhow::Result<()>;

    /// The `(D, G)` losses of every batch trained since the last call, in order. Reading
    /// them may wait for the device, so the loop reads them in groups.
    fn take_losses(&mut self) -> anyhow::Result<Vec<(f32, f32)>>;

    /// The last batch's fakes, row-major `[batch, 784]`, in the generator's `[-1, 1]`.
    fn fakes(&mut self) -> anyhow::Result<Vec<f32>>;

    /// Brings `state` up to date with the engine's own copy of the networks, if it keeps one.
    fn store_into(&mut self, state: &mut TrainState) -> anyhow::Result<()>;
}

/// Which implementation runs the training step; both compute the same thing (tests compare
/// them batch by batch) and write the same checkpoints, so a run may change engine on resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// candle's autograd, on any device.
    Candle,
    /// The hand-fused CPU step of [`crate::engine::fused`], on this many threads.
    Fused {
        /// Threads of its matrix products and Adam pass.
        threads: usize,
    },
    /// The step as kernels over one device arena ([`kernels`]): on a CUDA
    /// device its GPU backend, on the CPU its emulator (slow; it exists to check the step).
    Kernels,
}

impl Engine {
    /// The fast choice for `device`: the fused step on the CPU (on `threads` threads), candle
    /// elsewhere.
    pub fn for_device(device: &Device, threads: usize) -> Self {
        if device.is_cpu() {
            Engine::Fused { threads }
        } else {
            Engine::Candle
        }
    }
}

/// The engine `engine`, starting from `state`, over the training images `images` (`[n, 784]`
/// in `[-1, 1]`, on the run's device) with their class labels (`u32`, `[n]`, for the
/// conditional GAN), for batches of up to `batch_size`: the one place an engine is built, for
/// the training loop and the conformance suite alike.
pub fn build(
    engine: Engine,
    state: &TrainState,
    images: &Tensor,
    labels: Option<&Tensor>,
    batch_size: usize,
) -> anyhow::Result<Box<dyn TrainingStep>> {
    let device = images.device();
    Ok(match engine {
        Engine::Candle => Box::new(CandleStep::new(images.clone(), labels.cloned(), device)),
        // The hand-written engines read the images as plain floats.
        Engine::Fused { threads } => Box::new(fused::FusedStep::new(
            fused::FusedTrainer::new(state, threads)?,
            images.flatten_all()?.to_vec1()?,
        )),
        Engine::Kernels => Box::new(kernels::for_device(
            state,
            &images.flatten_all()?.to_vec1::<f32>()?,
            batch_size,
            device,
        )?),
    })
}

//! The training step of the reference GAN written out by hand for the CPU: the same arithmetic
//! as the candle engine's [`TrainState::train_batch`], several times faster.
//!
//! At the reference's batch of 64, candle's autograd builds some 150 tensors per batch, allocates
//! each, and runs the element-wise ones on one thread; that bookkeeping costs more than the
//! matrix products. Here every buffer is allocated once, the forward and backward passes are
//! written out layer by layer (matrix products by the `gemm` crate, the one candle's CPU backend
//! uses, on a thread pool of our own), element-wise work is fused into single passes, and Adam
//! updates each generator layer as soon as its gradient is complete, beside the rest of the
//! backward pass and the discriminator's step. The discriminator's pass over the fakes is shared
//! by both steps: its weights do not change between the generator's step and its own, so the
//! reference computes the same thing twice.
//!
//! The state lives in [`TrainState`] (checkpoints, export, resume); [`FusedTrainer::new`] copies
//! it in and [`FusedTrainer::store_into`] copies it back. Random draws (dropout masks, shifts)
//! come from the state's generator in the same order as in candle's path, so both trainers follow
//! the same run; tests compare them batch by batch.

//! The trainer is [`FusedTrainer`]; its passes are in `passes.rs`, the element-wise and matrix
//! arithmetic in `math.rs`, its buffers in `buffers.rs`.

mod buffers;
mod math;
mod passes;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::{bail, Context};
use rand_chacha::ChaCha8Rng;

use super::params::{store, HostCopy, Network, RunningStats, WeightAverage};
use super::{Batch, TrainingStep};
use crate::adam::AdamConfig;
use crate::model::{IMAGE_PIXELS, LATENT_DIM};
use crate::recipe::Recipe;
use crate::state::TrainState;
use buffers::Buffers;

/// Side of the square images.
const SIDE: usize = 28;

/// The reference GAN's training step on the CPU, with its own buffers and thread pool.
pub struct FusedTrainer {
    generator: Network,
    discriminator: Network,
    norms: [RunningStats; 3],
    /// The generator's weight average and its decay, when the recipe keeps one.
    average: WeightAverage,
    adam: AdamConfig,
    recipe: Recipe,
    buffers: Buffers,
    last_batch: usize,
    pool: Arc<rayon::ThreadPool>,
    threads: usize,
}

/// The losses of one batch, as [`crate::state::BatchLosses`] has them.
#[derive(Clone, Copy, Debug)]
pub struct StepLosses {
    /// `(BCE(D(real), real label) + BCE(D(fake), 0)) / 2`.
    pub d_loss: f32,
    /// `BCE(D(G(z)), 1)`.
    pub g_loss: f32,
}

impl FusedTrainer {
    /// Copies `state` (networks, optimisers, running statistics, weight average) into a
    /// trainer that runs on `threads` CPU threads.
    pub fn new(state: &TrainState, threads: usize) -> anyhow::Result<Self> {
        let HostCopy {
            generator,
            discriminator,
            norms,
            average,
        } = HostCopy::copy_in(state)?;
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mcugan-train-{i}"))
            .build()
            .context("starting the training threads")?;
        Ok(Self {
            generator,
            discriminator,
            norms,
            average,
            adam: state.opt_g.config(),
            recipe: state.recipe,
            buffers: Buffers::default(),
            last_batch: 0,
            pool: Arc::new(pool),
            threads,
        })
    }

    /// Threads the trainer runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Copies the trained state back into `state`, ready for a checkpoint or an export.
    pub fn store_into(&self, state: &mut TrainState) -> anyhow::Result<()> {
        store(
            state,
            &self.generator,
            &self.discriminator,
            &self.norms,
            &self.average,
        )
    }

    /// The fakes of the last batch, `[batch, 784]` row-major in `[-1, 1]`.
    pub fn fakes(&self) -> &[f32] {
        &self.buffers.fakes[..self.last_batch * IMAGE_PIXELS]
    }

    /// One batch of the reference loop on `real` (`[batch, 784]` in `[-1, 1]`) with latent
    /// vectors `z` (`[batch, 100]`): the generator's step, then the discriminator's on the same
    /// fakes; `rng` is the run's generator (dropout masks and shifts, when the recipe has them).
    pub fn train_batch(
        &mut self,
        rng: &mut ChaCha8Rng,
        real: &[f32],
        z: &[f32],
    ) -> anyhow::Result<StepLosses> {
        let batch = z.len() / LATENT_DIM;
        if z.len() != batch * LATENT_DIM || real.len() != batch * IMAGE_PIXELS {
            bail!(
                "{} latent values and {} pixels do not make one batch",
                z.len(),
                real.len()
            );
        }
        if batch < 2 {
            bail!("BatchNorm1d in training mode needs more than one sample");
        }
        let pool = Arc::clone(&self.pool);
        Ok(pool.install(|| self.step(rng, real, z, batch)))
    }
}

/// The fused step as a [`TrainingStep`]: the trainer and the training images it gathers
/// each batch from.
pub struct FusedStep {
    trainer: FusedTrainer,
    images: Vec<f32>,
    real_batch: Vec<f32>,
    losses: Vec<(f32, f32)>,
}

impl FusedStep {
    /// The step of `trainer` over `images` (`[n, 784]` row-major in `[-1, 1]`).
    pub fn new(trainer: FusedTrainer, images: Vec<f32>) -> Self {
        Self {
            trainer,
            images,
            real_batch: Vec::new(),
            losses: Vec::new(),
        }
    }
}

impl TrainingStep for FusedStep {
    fn describe(&self, _device: &candle_core::Device) -> String {
        let threads = self.trainer.threads();
        format!(
            "cpu (fused step, {threads} thread{} of {} cores)",
            if threads == 1 { "" } else { "s" },
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )
    }

    fn begin_epoch(&mut self, _order: &[u32], _latents: &[f32]) -> anyhow::Result<()> {
        // Batches read the epoch's order and latents where they lie.
        Ok(())
    }

    fn train_batch(&mut self, state: &mut TrainState, batch: &Batch) -> anyhow::Result<()> {
        self.real_batch.clear();
        for &i in &batch.order[batch.start..batch.start + batch.len] {
            let i = i as usize;
            let image = self
                .images
                .get(i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS)
                .context("an image index beyond the training images")?;
            self.real_batch.extend_from_slice(image);
        }
        let losses = self
            .trainer
            .train_batch(&mut state.rng, &self.real_batch, batch.z())?;
        self.losses.push((losses.d_loss, losses.g_loss));
        Ok(())
    }

    fn take_losses(&mut self) -> anyhow::Result<Vec<(f32, f32)>> {
        Ok(std::mem::take(&mut self.losses))
    }

    fn fakes(&mut self) -> anyhow::Result<Vec<f32>> {
        Ok(self.trainer.fakes().to_vec())
    }

    fn store_into(&mut self, state: &mut TrainState) -> anyhow::Result<()> {
        self.trainer.store_into(state)
    }
}

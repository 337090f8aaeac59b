//! The reference GAN's training step as a fixed sequence of kernels and matrix products over
//! one block of device memory: the shape a GPU needs to run the step without per-operation
//! allocations and host round trips.
//!
//! candle on CUDA allocates every intermediate tensor and launches each element-wise operation
//! on its own; at batch 64 that bookkeeping, not arithmetic, sets the pace. Here the data set,
//! the epoch's latent vectors, the parameters with their gradients and Adam moments, and every
//! activation live in one arena allocated once. A batch is some 60 launches — cuBLAS matrix
//! products and the kernels of `kernels.h` (bias with activation, BatchNorm forward and
//! backward each as one kernel, one Adam kernel per network) — and the host reads nothing back
//! until it asks for the losses.
//!
//! The step is written against [`Backend`]: `CudaBackend` (with the `cuda` feature) runs it on
//! an NVIDIA GPU, and [`Emulator`] runs the same kernel source, compiled for the CPU, one thread
//! at a time. The tests train the emulated step beside
//! [`FusedTrainer`](crate::engine::fused::FusedTrainer) and require
//! the same losses, fakes and parameters, so the kernels and the order of the step are checked
//! on any machine; the CUDA backend adds only the launches and cuBLAS calls.

mod backend;
#[cfg(feature = "cuda")]
mod cuda;
mod emulator;
mod layout;
mod passes;
#[cfg(test)]
mod tests;

pub use backend::{Backend, ColumnMajorGemm, Kernel, KernelArgs};
#[cfg(feature = "cuda")]
pub use cuda::CudaBackend;
pub use emulator::Emulator;

use anyhow::{bail, ensure, Context};

use super::params::{store, HostCopy};
use super::{Batch, TrainingStep};
use crate::adam::AdamConfig;
use crate::model::{IMAGE_PIXELS, LATENT_DIM, LEAKY_SLOPE};
use crate::recipe::Recipe;
use crate::state::TrainState;
use layout::*;

/// A kernel trainer on whichever backend serves `device`: the GPU's for CUDA (with the
/// `cuda` feature), the emulator for the CPU (slow; it exists to check the step).
pub fn for_device(
    state: &TrainState,
    data: &[f32],
    batch: usize,
    device: &candle_core::Device,
) -> anyhow::Result<KernelTrainer<Box<dyn Backend>>> {
    match device {
        candle_core::Device::Cpu => KernelTrainer::new(state, data, batch, |floats, words| {
            Ok(Box::new(emulator::Emulator::new(floats, words)?) as Box<dyn Backend>)
        }),
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(cuda_device) => {
            KernelTrainer::new(state, data, batch, |floats, words| {
                Ok(
                    Box::new(cuda::CudaBackend::new(cuda_device, floats, words)?)
                        as Box<dyn Backend>,
                )
            })
        }
        other => bail!("the kernel trainer does not run on {other:?}"),
    }
}

/// The training step as kernels on a [`Backend`]; see the module documentation.
pub struct KernelTrainer<B: Backend> {
    backend: B,
    layout: Layout,
    host: HostCopy,
    adam: AdamConfig,
    recipe: Recipe,
    images: usize,
    batch: usize,
    /// Latent rows written by the last [`KernelTrainer::begin_epoch`].
    latent_rows: usize,
    /// Loss slots used since the last read, and the losses read but not yet taken.
    slots_used: usize,
    losses_read: Vec<(f32, f32)>,
    last_batch: usize,
}

/// What a pass back through the discriminator computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gradients {
    /// Its parameters' gradients (the discriminator's step).
    OfWeights,
    /// The gradient at its input (the generator's step).
    OfInput,
}

/// The slope of every LeakyReLU.
const SLOPE: f32 = LEAKY_SLOPE as f32;

impl<B: Backend> KernelTrainer<B> {
    /// Copies `state` and the data set (`[images, 784]` in `[-1, 1]`) into an arena that
    /// `backend` makes for it (`floats`, `words` long) for batches of up to `batch` images.
    pub fn new(
        state: &TrainState,
        data: &[f32],
        batch: usize,
        backend: impl FnOnce(usize, usize) -> anyhow::Result<B>,
    ) -> anyhow::Result<Self> {
        let recipe = state.recipe;
        if recipe.d_dropout > 0.0 || recipe.translate > 0 {
            bail!(
                "the kernel trainer runs the reference step (label smoothing and the weight \
                 average allowed); train with dropout or random shifts on the candle engine"
            );
        }
        if !data.len().is_multiple_of(IMAGE_PIXELS) {
            bail!("{} pixels are not whole 28x28 images", data.len());
        }
        let images = data.len() / IMAGE_PIXELS;
        if batch < 2 || images < 2 {
            bail!("BatchNorm1d in training mode needs batches of at least two images");
        }
        let host = HostCopy::copy_in(state)?;
        let layout = Layout::new(&host, images, batch)?;
        let mut backend =
            backend(layout.floats, layout.words).context("allocating the trainer's memory")?;
        backend.write_floats(layout.data, data)?;
        let mut trainer = Self {
            backend,
            layout,
            host,
            adam: state.opt_g.config(),
            recipe,
            images,
            batch,
            latent_rows: 0,
            slots_used: 0,
            losses_read: Vec::new(),
            last_batch: 0,
        };
        trainer.upload_state()?;
        Ok(trainer)
    }

    /// Copies the host copy of the parameters, moments, statistics and average to the arena.
    fn upload_state(&mut self) -> anyhow::Result<()> {
        let b = &mut self.backend;
        for (network, layout) in [
            (&self.host.generator, &self.layout.generator),
            (&self.host.discriminator, &self.layout.discriminator),
        ] {
            for (param, &start) in network.params.iter().zip(&layout.starts) {
                b.write_floats(layout.values + start, &param.value)?;
                b.write_floats(layout.m + start, &param.m)?;
                b.write_floats(layout.v + start, &param.v)?;
            }
        }
        if let (Some((_, values)), Some(average)) =
            (&self.host.average, self.layout.generator.average)
        {
            for (value, &start) in values.iter().zip(&self.layout.generator.starts) {
                b.write_floats(average + start, value)?;
            }
        }
        for (j, stats) in self.host.norms.iter().enumerate() {
            b.write_floats(self.layout.running_mean[j], &stats.mean)?;
            b.write_floats(self.layout.running_var[j], &stats.var)?;
        }
        Ok(())
    }

    /// Reads the arena's parameters, moments, statistics and average into the host copy.
    fn download_state(&mut self) -> anyhow::Result<()> {
        let b = &mut self.backend;
        for (network, layout) in [
            (&mut self.host.generator, &self.layout.generator),
            (&mut self.host.discriminator, &self.layout.discriminator),
        ] {
            for (param, &start) in network.params.iter_mut().zip(&layout.starts) {
                b.read_floats(layout.values + start, &mut param.value)?;
                b.read_floats(layout.m + start, &mut param.m)?;
                b.read_floats(layout.v + start, &mut param.v)?;
            }
        }
        if let (Some((_, values)), Some(average)) =
            (&mut self.host.average, self.layout.generator.average)
        {
            for (value, &start) in values.iter_mut().zip(&self.layout.generator.starts) {
                b.read_floats(average + start, value)?;
            }
        }
        for (j, stats) in self.host.norms.iter_mut().enumerate() {
            b.read_floats(self.layout.running_mean[j], &mut stats.mean)?;
            b.read_floats(self.layout.running_var[j], &mut stats.var)?;
        }
        Ok(())
    }

    /// Copies the trained state back into `state`, ready for a checkpoint or an export.
    pub fn store_into(&mut self, state: &mut TrainState) -> anyhow::Result<()> {
        self.download_state()?;
        let host = &self.host;
        store(
            state,
            &host.generator,
            &host.discriminator,
            &host.norms,
            &host.average,
        )
    }

    /// Starts an epoch: the order of the images and the latent vectors of its batches, one
    /// after another (`[rows, 100]`).
    pub fn begin_epoch(&mut self, order: &[u32], latents: &[f32]) -> anyhow::Result<()> {
        ensure!(
            order.len() == self.images && order.iter().all(|&i| (i as usize) < self.images),
            "the epoch's order is not an order of the {} images",
            self.images
        );
        ensure!(
            latents.len().is_multiple_of(LATENT_DIM) && latents.len() <= self.images * LATENT_DIM,
            "{} latent values do not fit the epoch",
            latents.len()
        );
        self.backend.write_words(0, order)?;
        self.backend.write_floats(self.layout.latents, latents)?;
        self.latent_rows = latents.len() / LATENT_DIM;
        Ok(())
    }

    /// Queues one batch of the reference loop: the images at positions `first..first + len`
    /// of the epoch's order, with latent rows `latent_row..latent_row + len`. Losses stay on
    /// the device until [`KernelTrainer::take_losses`].
    pub fn train_batch(
        &mut self,
        first: usize,
        len: usize,
        latent_row: usize,
    ) -> anyhow::Result<()> {
        ensure!(
            (2..=self.batch).contains(&len),
            "a batch of {len} images (this trainer takes 2 to {})",
            self.batch
        );
        ensure!(
            first + len <= self.images && latent_row + len <= self.latent_rows,
            "batch outside the epoch"
        );
        if self.slots_used == LOSS_SLOTS {
            self.read_losses()?;
        }
        self.step(first, len, latent_row, self.slots_used)?;
        self.slots_used += 1;
        self.host.generator.steps += 1;
        self.host.discriminator.steps += 1;
        for stats in &mut self.host.norms {
            stats.batches_tracked += 1;
        }
        self.last_batch = len;
        Ok(())
    }

    /// Reads the losses queued since the last read.
    fn read_losses(&mut self) -> anyhow::Result<()> {
        let mut values = vec![0.0; 2 * self.slots_used];
        self.backend.read_floats(self.layout.losses, &mut values)?;
        self.losses_read
            .extend(values.chunks_exact(2).map(|pair| (pair[0], pair[1])));
        self.slots_used = 0;
        Ok(())
    }

    /// The losses `(D, G)` of every batch since the last call, in order; waits for them.
    pub fn take_losses(&mut self) -> anyhow::Result<Vec<(f32, f32)>> {
        self.read_losses()?;
        Ok(std::mem::take(&mut self.losses_read))
    }

    /// The fakes of the last batch, `[batch, 784]` row-major in `[-1, 1]`; waits for them.
    pub fn fakes(&mut self) -> anyhow::Result<Vec<f32>> {
        let b = self.last_batch;
        let mut out = vec![0.0; b * IMAGE_PIXELS];
        self.backend
            .read_floats(self.layout.d_input + b * IMAGE_PIXELS, &mut out)?;
        Ok(out)
    }

    fn args(&mut self) -> Args {
        Args {
            args: KernelArgs::default(),
            buffers: 0,
            ints: 0,
            reals: 0,
            base: self.backend.float_base(),
        }
    }

    fn launch(&mut self, kernel: Kernel, threads: usize, args: Args) -> anyhow::Result<()> {
        self.backend.launch(kernel, threads, &args.args)
    }

    /// Row-major `c[m×n] = op(a)[m×k] · op(b)[k×n]`.
    fn matmul(
        &mut self,
        c: usize,
        a: Operand,
        b: Operand,
        m: usize,
        n: usize,
        k: usize,
    ) -> anyhow::Result<()> {
        self.backend.gemm(&row_major_gemm(c, a, b, m, n, k))
    }
}

/// The kernel step as a [`TrainingStep`] (the trainer holds the images on its device).
impl<B: Backend> TrainingStep for KernelTrainer<B> {
    fn describe(&self, device: &candle_core::Device) -> String {
        if device.is_cpu() {
            "cpu (kernel step, emulated)".to_string()
        } else {
            format!("{} (kernel step)", crate::device::device_name(device))
        }
    }

    fn begin_epoch(&mut self, order: &[u32], latents: &[f32]) -> anyhow::Result<()> {
        KernelTrainer::begin_epoch(self, order, latents)
    }

    fn train_batch(&mut self, _state: &mut TrainState, batch: &Batch) -> anyhow::Result<()> {
        KernelTrainer::train_batch(self, batch.start, batch.len, batch.latent_row)
    }

    fn take_losses(&mut self) -> anyhow::Result<Vec<(f32, f32)>> {
        KernelTrainer::take_losses(self)
    }

    fn fakes(&mut self) -> anyhow::Result<Vec<f32>> {
        KernelTrainer::fakes(self)
    }

    fn store_into(&mut self, state: &mut TrainState) -> anyhow::Result<()> {
        KernelTrainer::store_into(self, state)
    }
}

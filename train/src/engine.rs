//! The one interface of a training step. Three engines compute the same step of the
//! reference (candle's autograd here, the fused CPU step in [`crate::fused`], the kernel step
//! in [`crate::kernel_trainer`]); the training loop drives any of them through
//! [`TrainingStep`], and one conformance suite (`tests/faithful.rs`, `tests/engines.rs`)
//! holds every engine to the reference and to each other.
//!
//! An engine may keep its own copy of the networks (the fused and kernel steps do); it
//! brings [`TrainState`] up to date in [`TrainingStep::store_into`], which the loop calls
//! before a checkpoint or an exported generator.

use candle_core::{Device, Tensor};

use crate::gan::LATENT_DIM;
use crate::state::{BatchLabels, TrainState};

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

/// candle's autograd, on any device: the step is [`TrainState::train_batch`] itself.
pub struct CandleStep {
    images: Tensor,
    labels: Option<Tensor>,
    device: Device,
    order: Option<Tensor>,
    latents: Option<Tensor>,
    d_losses: Vec<Tensor>,
    g_losses: Vec<Tensor>,
    last_fakes: Option<Tensor>,
}

impl CandleStep {
    /// A step over `images` (`[n, 784]` in `[-1, 1]`, on `device`), with the images' class
    /// labels (`u32`, `[n]`) for the conditional GAN.
    pub fn new(images: Tensor, labels: Option<Tensor>, device: &Device) -> Self {
        Self {
            images,
            labels,
            device: device.clone(),
            order: None,
            latents: None,
            d_losses: Vec::new(),
            g_losses: Vec::new(),
            last_fakes: None,
        }
    }
}

impl TrainingStep for CandleStep {
    fn describe(&self, device: &Device) -> String {
        crate::device::device_name(device)
    }

    fn begin_epoch(&mut self, order: &[u32], latents: &[f32]) -> anyhow::Result<()> {
        // The epoch's order and latent vectors go to the device once, not batch by batch.
        self.order = Some(Tensor::from_slice(order, order.len(), &self.device)?);
        self.latents = Some(Tensor::from_slice(
            latents,
            (latents.len() / LATENT_DIM, LATENT_DIM),
            &self.device,
        )?);
        Ok(())
    }

    fn train_batch(&mut self, state: &mut TrainState, batch: &Batch) -> anyhow::Result<()> {
        let (Some(order), Some(latents)) = (&self.order, &self.latents) else {
            anyhow::bail!("a batch before its epoch began");
        };
        let indices = order.narrow(0, batch.start, batch.len)?;
        let real = self.images.index_select(&indices, 0)?;
        let z = latents.narrow(0, batch.latent_row, batch.len)?;
        let labels = match &self.labels {
            Some(labels) => {
                let real = labels.index_select(&indices, 0)?;
                state
                    .fake_labels(batch.len, &self.device)?
                    .map(|fake| BatchLabels { real, fake })
            }
            None => None,
        };
        let losses = state.train_batch(&real, &z, labels.as_ref())?;
        self.d_losses.push(losses.d_loss);
        self.g_losses.push(losses.g_loss);
        self.last_fakes = Some(losses.fakes);
        Ok(())
    }

    fn take_losses(&mut self) -> anyhow::Result<Vec<(f32, f32)>> {
        if self.d_losses.is_empty() {
            return Ok(Vec::new());
        }
        let d = Tensor::stack(&self.d_losses, 0)?.to_vec1::<f32>()?;
        let g = Tensor::stack(&self.g_losses, 0)?.to_vec1::<f32>()?;
        self.d_losses.clear();
        self.g_losses.clear();
        Ok(d.into_iter().zip(g).collect())
    }

    fn fakes(&mut self) -> anyhow::Result<Vec<f32>> {
        match &self.last_fakes {
            Some(fakes) => Ok(fakes.flatten_all()?.to_vec1()?),
            None => Ok(Vec::new()),
        }
    }

    fn store_into(&mut self, _state: &mut TrainState) -> anyhow::Result<()> {
        // The state is the model: nothing to bring back.
        Ok(())
    }
}

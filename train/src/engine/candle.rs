//! candle's autograd as a training engine, on any device: the reference step written with
//! tensors ([`TrainState::train_batch`]), and [`CandleStep`], which feeds it batches.

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};

use super::{Batch, TrainingStep};
use crate::model::mlp::{MlpDiscriminator, MlpGenerator};
use crate::model::{
    bce_with_logit_targets, bce_with_logits, mse, mse_targets, CONDITIONAL_DROPOUT, LATENT_DIM,
};
use crate::model::{Discriminator, Generator};
use crate::recipe::{dropout_mask, translate};
use crate::state::{BatchLabels, BatchLosses, TrainState};

impl TrainState {
    /// The images as the discriminator sees them: shifted, if the recipe says so.
    fn augment(&mut self, images: &Tensor) -> anyhow::Result<Tensor> {
        Ok(translate(
            images,
            1,
            28,
            self.recipe.translate,
            &mut self.rng,
        )?)
    }

    /// Fresh dropout masks for the discriminator's hidden layers, one per layer that drops:
    /// both of `gan.py`'s when the recipe uses dropout, `cgan.py`'s own two otherwise.
    fn dropout(&mut self, batch: usize, device: &Device) -> anyhow::Result<Vec<Option<Tensor>>> {
        let Discriminator::Mlp(discriminator) = &self.discriminator else {
            bail!("the MLP's dropout asked of a convolutional discriminator");
        };
        let widths = discriminator.dropout_widths();
        let p = if discriminator.label_embedding.is_some() {
            CONDITIONAL_DROPOUT
        } else {
            self.recipe.d_dropout
        };
        if p <= 0.0 {
            return Ok(Vec::new());
        }
        widths
            .into_iter()
            .map(|width| match width {
                Some(width) => Ok(Some(dropout_mask(
                    (batch, width),
                    p,
                    &mut self.rng,
                    device,
                )?)),
                None => Ok(None),
            })
            .collect()
    }

    /// One batch of the reference loop on `real` with latent vectors `z`; returns the losses
    /// (still on the device: reading them would wait for it) and the fakes. A convolutional GAN
    /// takes `dcgan.py`'s step (see `engine/candle_conv.rs`), the MLP `gan.py`'s (or
    /// `cgan.py`'s) below.
    pub fn train_batch(
        &mut self,
        real: &Tensor,
        z: &Tensor,
        labels: Option<&BatchLabels>,
    ) -> anyhow::Result<BatchLosses> {
        let batch = real.dim(0)?;
        if z.dim(0)? != batch {
            bail!("{} latent vectors for a batch of {batch}", z.dim(0)?);
        }
        match (&self.generator, labels) {
            (Generator::Conv(_), None) => self.train_conv_batch(real, z),
            (Generator::Conv(_), Some(_)) => bail!("the convolutional GANs take no labels"),
            (Generator::Mlp(_), _) => self.train_mlp_batch(real, z, labels),
        }
    }

    /// `gan.py`'s batch (or `cgan.py`'s).
    ///
    /// The discriminator's step runs real and fake images through it as one batch: it has no
    /// BatchNorm, so each image's output is the same as in two passes, and the mean of the
    /// per-image losses over both halves is `(BCE(D(real), 1) + BCE(D(fake), 0)) / 2`.
    ///
    /// The conditional GAN (`labels` given) is `cgan.py`'s step: the generator draws the
    /// asked classes, the discriminator judges each image with its label, and both losses are
    /// mean squared errors against the same targets.
    fn train_mlp_batch(
        &mut self,
        real: &Tensor,
        z: &Tensor,
        labels: Option<&BatchLabels>,
    ) -> anyhow::Result<BatchLosses> {
        let batch = real.dim(0)?;
        let device = real.device();
        let least_squares = labels.is_some();

        // Generator step: make the discriminator call the fakes real. The discriminator's
        // weights are frozen here: their gradients would be discarded anyway.
        let fakes = {
            let generator = self.mlp_generator()?;
            let input = generator.input(z, labels.map(|l| &l.fake))?;
            generator.forward_train(&input)?
        };
        let seen = self.augment(&fakes)?;
        let masks = self.dropout(batch, device)?;
        let g_logits =
            self.mlp_discriminator()?
                .forward(&seen, labels.map(|l| &l.fake), true, &masks)?;
        let g_loss = if least_squares {
            mse(&g_logits, 1.0)?
        } else {
            bce_with_logits(&g_logits, 1.0)?
        };
        self.opt_g.step(&g_loss.backward()?)?;
        if let Some(average) = &mut self.average {
            average.update(&self.generator)?;
        }

        // Discriminator step on the real images and the same fakes, detached.
        let seen_real = self.augment(real)?;
        let masks_real = self.dropout(batch, device)?;
        let seen_fake = self.augment(&fakes.detach())?;
        let masks_fake = self.dropout(batch, device)?;
        let seen = Tensor::cat(&[&seen_real, &seen_fake], 0)?;
        let masks = masks_real
            .into_iter()
            .zip(masks_fake)
            .map(|pair| match pair {
                (Some(real), Some(fake)) => Ok(Some(Tensor::cat(&[&real, &fake], 0)?)),
                _ => Ok(None),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let both_labels = match labels {
            Some(labels) => Some(Tensor::cat(&[&labels.real, &labels.fake], 0)?),
            None => None,
        };
        let logits =
            self.mlp_discriminator()?
                .forward(&seen, both_labels.as_ref(), false, &masks)?;
        let targets = self.d_targets(batch, device)?;
        let d_loss = if least_squares {
            mse_targets(&logits, &targets)?
        } else {
            bce_with_logit_targets(&logits, &targets)?
        };
        self.opt_d.step(&d_loss.backward()?)?;

        Ok(BatchLosses {
            d_loss: d_loss.detach(),
            g_loss: g_loss.detach(),
            fakes: fakes.detach(),
        })
    }

    /// The MLP generator; an error for a convolutional one.
    fn mlp_generator(&mut self) -> anyhow::Result<&mut MlpGenerator> {
        self.generator
            .mlp_mut()
            .context("gan.py's step asked of a convolutional generator")
    }

    /// The MLP discriminator; an error for a convolutional one.
    fn mlp_discriminator(&self) -> anyhow::Result<&MlpDiscriminator> {
        self.discriminator
            .mlp()
            .context("gan.py's step asked of a convolutional discriminator")
    }

    /// `[2·batch, 1]` targets of the discriminator's step: the real label, then 0; kept
    /// between batches of the same size.
    fn d_targets(&mut self, batch: usize, device: &Device) -> anyhow::Result<Tensor> {
        if let Some(t) = &self.targets {
            if t.dim(0)? == 2 * batch {
                return Ok(t.clone());
            }
        }
        let mut values = vec![self.recipe.real_label as f32; batch];
        values.resize(2 * batch, 0.0);
        let t = Tensor::from_vec(values, (2 * batch, 1), device)?;
        self.targets = Some(t.clone());
        Ok(t)
    }
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

//! `dcgan.py`'s training step with candle's autograd: the generator step, then the
//! discriminator step on the real images and the same fakes, detached.
//!
//! Unlike `gan.py`'s discriminator, `dcgan.py`'s has BatchNorm, always in training mode: each
//! of its three passes per batch (the fakes in the generator's step, then the real images,
//! then the fakes again) normalises with its own batch's statistics and moves the running
//! statistics, so the passes stay separate as in the reference. Each pass draws fresh
//! `Dropout2d` masks (one value per image and channel) from the run's random generator.

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};

use crate::model::bce_with_logits;
use crate::model::conv::{channel_dropout_mask, ConvDiscriminator, ConvGenerator};
use crate::model::{Discriminator, Generator};
use crate::state::{BatchLosses, TrainState};

impl TrainState {
    /// One batch of `dcgan.py`'s loop on `real` (`[batch, channels · side²]`) with latent
    /// vectors `z`.
    pub(crate) fn train_conv_batch(
        &mut self,
        real: &Tensor,
        z: &Tensor,
    ) -> anyhow::Result<BatchLosses> {
        let batch = real.dim(0)?;
        let device = real.device().clone();
        let real_label = self.recipe.real_label;

        // Generator step: BCE(D(G(z)), 1), the discriminator's weights out of the graph.
        let fakes = self.conv_generator()?.forward_train(z)?;
        let masks = self.channel_masks(batch, &device)?;
        let g_logits = self.conv_discriminator()?.logits(&fakes, &masks, true)?;
        let g_loss = bce_with_logits(&g_logits, 1.0)?;
        self.opt_g.step(&g_loss.backward()?)?;

        // Discriminator step: (BCE(D(real), 1) + BCE(D(fake), 0)) / 2, two passes.
        let masks = self.channel_masks(batch, &device)?;
        let real_logits = self.conv_discriminator()?.logits(real, &masks, false)?;
        let masks = self.channel_masks(batch, &device)?;
        let fake_logits = self
            .conv_discriminator()?
            .logits(&fakes.detach(), &masks, false)?;
        let d_loss = ((bce_with_logits(&real_logits, real_label)?
            + bce_with_logits(&fake_logits, 0.0)?)?
            / 2.0)?;
        self.opt_d.step(&d_loss.backward()?)?;

        Ok(BatchLosses {
            d_loss: d_loss.detach(),
            g_loss: g_loss.detach(),
            fakes: fakes.detach(),
        })
    }

    /// Fresh `Dropout2d` masks for one pass of the discriminator, one per block.
    fn channel_masks(&mut self, batch: usize, device: &Device) -> anyhow::Result<Vec<Tensor>> {
        let (p, channels) = match &self.discriminator {
            Discriminator::Conv(d) => (d.spec.discriminator.dropout, d.dropout_channels()),
            Discriminator::Mlp(_) => bail!("dcgan.py's step asked of an MLP discriminator"),
        };
        if p <= 0.0 {
            return Ok(Vec::new());
        }
        channels
            .into_iter()
            .map(|c| Ok(channel_dropout_mask(batch, c, p, &mut self.rng, device)?))
            .collect()
    }

    fn conv_generator(&mut self) -> anyhow::Result<&mut ConvGenerator> {
        match &mut self.generator {
            Generator::Conv(g) => Ok(g),
            Generator::Mlp(_) => None.context("dcgan.py's step asked of an MLP generator"),
        }
    }

    fn conv_discriminator(&mut self) -> anyhow::Result<&mut ConvDiscriminator> {
        match &mut self.discriminator {
            Discriminator::Conv(d) => Ok(d),
            Discriminator::Mlp(_) => None.context("dcgan.py's step asked of an MLP discriminator"),
        }
    }
}

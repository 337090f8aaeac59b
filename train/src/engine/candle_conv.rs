//! `dcgan.py`'s training step with candle's autograd: the generator step, then the
//! discriminator step on the real images and the same fakes, detached.
//!
//! Unlike `gan.py`'s discriminator, `dcgan.py`'s has BatchNorm, always in training mode: each
//! of its three passes per batch (the fakes in the generator's step, then the real images,
//! then the fakes again) normalises with its own batch's statistics and moves the running
//! statistics, so the passes stay separate as in the reference. Each pass draws fresh
//! `Dropout2d` masks (one value per image and channel) from the run's random generator.
//!
//! A recipe other than the reference adds its translation of every image the discriminator
//! sees, its real-image target and its weight average of the generator; the discriminator's
//! dropout stays the spec's `Dropout2d` (the recipe's dropout is for the MLP's hidden layers).

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};

use crate::model::bce_with_logits;
use crate::model::conv::{channel_dropout_mask, ConvDiscriminator, ConvGenerator};
use crate::model::{Discriminator, Generator};
use crate::recipe::translate;
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
        let seen = self.augment_conv(&fakes)?;
        let masks = self.channel_masks(batch, &device)?;
        let g_logits = self.conv_discriminator()?.logits(&seen, &masks, true)?;
        let g_loss = bce_with_logits(&g_logits, 1.0)?;
        self.opt_g.step(&g_loss.backward()?)?;
        if let Some(average) = &mut self.average {
            average.update(&self.generator)?;
        }

        // Discriminator step: (BCE(D(real), 1) + BCE(D(fake), 0)) / 2, two passes.
        let seen = self.augment_conv(real)?;
        let masks = self.channel_masks(batch, &device)?;
        let real_logits = self.conv_discriminator()?.logits(&seen, &masks, false)?;
        let seen = self.augment_conv(&fakes.detach())?;
        let masks = self.channel_masks(batch, &device)?;
        let fake_logits = self.conv_discriminator()?.logits(&seen, &masks, false)?;
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

    /// The images as the discriminator sees them: shifted, if the recipe says so.
    fn augment_conv(&mut self, images: &Tensor) -> anyhow::Result<Tensor> {
        let shift = self.recipe.translate;
        if shift == 0 {
            return Ok(images.clone());
        }
        let spec = &self.conv_discriminator()?.spec.generator;
        let (channels, side) = (spec.image_channels, spec.image_side());
        Ok(translate(images, channels, side, shift, &mut self.rng)?)
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

//! The training state every engine shares: both networks, their optimisers, the run's
//! random generator and position, and its checkpoint (what a resumed run restores). Also the
//! latent sampling, so that every engine draws the same z for the same batch. Candle's own
//! training step (autograd) is [`TrainState::train_batch`].

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::adam::{Adam, AdamConfig};
use crate::gan::{
    bce_with_logit_targets, bce_with_logits, mse, mse_targets, Discriminator, Generator,
    CONDITIONAL_DROPOUT, IMAGE_PIXELS,
};
use crate::recipe::{dropout_mask, translate, Recipe, WeightAverage};
use mcugan_model_tools::data::Dataset;

/// The whole training state: networks, optimisers, random generator and position.
pub struct TrainState {
    /// The generator.
    pub generator: Generator,
    /// The discriminator.
    pub discriminator: Discriminator,
    /// The generator's optimiser.
    pub opt_g: Adam,
    /// The discriminator's optimiser.
    pub opt_d: Adam,
    /// The run's random generator.
    pub rng: ChaCha8Rng,
    /// Epochs completed.
    pub epoch: usize,
    /// Batches completed.
    pub batches_done: u64,
    /// The recipe.
    pub recipe: Recipe,
    /// The generator's weight average, when the recipe keeps one.
    pub average: Option<WeightAverage>,
    /// The seed the run started from.
    pub seed: u64,
    /// The discriminator's targets for the last batch size.
    targets: Option<Tensor>,
}

/// The class labels of one batch of the conditional GAN (`u32` tensors of the batch's length).
pub struct BatchLabels {
    /// The real images' labels.
    pub real: Tensor,
    /// The labels the generator is asked to draw, uniform over the classes.
    pub fake: Tensor,
}

/// What one batch leaves: the two losses (scalars on the device) and the generated images.
pub struct BatchLosses {
    /// `(BCE(D(real), real label) + BCE(D(fake), 0)) / 2`.
    pub d_loss: Tensor,
    /// `BCE(D(G(z)), 1)`.
    pub g_loss: Tensor,
    /// The batch's fakes, `[batch, 784]`, detached.
    pub fakes: Tensor,
}

impl TrainState {
    /// A fresh state: generator then discriminator initialised from `seed`.
    pub fn new(seed: u64, adam: AdamConfig, device: &Device) -> anyhow::Result<Self> {
        Self::with_recipe(seed, adam, Recipe::REFERENCE, device)
    }

    /// A fresh state for `cgan.py`'s conditional GAN (`classes: Some`) or `gan.py`'s.
    pub fn for_model(
        seed: u64,
        adam: AdamConfig,
        recipe: Recipe,
        classes: Option<usize>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (generator, discriminator) = match classes {
            Some(classes) => (
                Generator::conditional(classes, &mut rng, device)?,
                Discriminator::conditional(classes, &mut rng, device)?,
            ),
            None => (
                Generator::new(&mut rng, device)?,
                Discriminator::new(&mut rng, device)?,
            ),
        };
        Self::assemble(generator, discriminator, rng, seed, adam, recipe)
    }

    /// The state `checkpoint` holds, on the CPU: what `--resume` restores (every tensor's
    /// name and shape checked). Also the target of the checkpoint fuzzer.
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> anyhow::Result<Self> {
        let settings = checkpoint.settings()?;
        let mut state = Self::for_model(
            settings.seed,
            settings.adam,
            settings.recipe,
            settings.classes,
            &Device::Cpu,
        )?;
        state
            .restore(checkpoint)
            .context("restoring the checkpoint")?;
        Ok(state)
    }

    /// A fresh state trained with `recipe`.
    pub fn with_recipe(
        seed: u64,
        adam: AdamConfig,
        recipe: Recipe,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Self::for_model(seed, adam, recipe, None, device)
    }

    fn assemble(
        generator: Generator,
        discriminator: Discriminator,
        rng: ChaCha8Rng,
        seed: u64,
        adam: AdamConfig,
        recipe: Recipe,
    ) -> anyhow::Result<Self> {
        let opt_g = Adam::new(generator.vars(), adam)?;
        let opt_d = Adam::new(discriminator.vars(), adam)?;
        let average = match recipe.g_ema {
            Some(decay) => Some(WeightAverage::new(&generator, decay)?),
            None => None,
        };
        Ok(Self {
            generator,
            discriminator,
            opt_g,
            opt_d,
            rng,
            epoch: 0,
            batches_done: 0,
            recipe,
            average,
            seed,
            targets: None,
        })
    }

    /// The images as the discriminator sees them: shifted, if the recipe says so.
    fn augment(&mut self, images: &Tensor) -> anyhow::Result<Tensor> {
        Ok(translate(images, 28, self.recipe.translate, &mut self.rng)?)
    }

    /// Fresh dropout masks for the discriminator's hidden layers, one per layer that drops:
    /// both of `gan.py`'s when the recipe uses dropout, `cgan.py`'s own two otherwise.
    fn dropout(&mut self, batch: usize, device: &Device) -> anyhow::Result<Vec<Option<Tensor>>> {
        let p = if self.discriminator.label_embedding.is_some() {
            CONDITIONAL_DROPOUT
        } else {
            self.recipe.d_dropout
        };
        if p <= 0.0 {
            return Ok(Vec::new());
        }
        self.discriminator
            .dropout_widths()
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

    /// Labels the generator is asked to draw for a batch of `batch`: uniform over the
    /// classes, from the run's random generator (`None` for the unconditional GAN).
    pub fn fake_labels(&mut self, batch: usize, device: &Device) -> anyhow::Result<Option<Tensor>> {
        let Some(classes) = self.generator.classes() else {
            return Ok(None);
        };
        let labels: Vec<u32> = (0..batch)
            .map(|_| self.rng.random_range(0..classes as u32))
            .collect();
        Ok(Some(Tensor::from_vec(labels, batch, device)?))
    }

    /// The generator to export: the weight average (BatchNorm statistics recomputed for it,
    /// from a random stream of its own) when the recipe keeps one, else the live generator.
    pub fn exported_generator(&self) -> anyhow::Result<Option<Generator>> {
        let Some(average) = &self.average else {
            return Ok(None);
        };
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5eed_e3a0);
        Ok(Some(average.export(&self.generator, 40, 256, &mut rng)?))
    }

    /// One batch of the reference loop on `real` with latent vectors `z`; returns the losses
    /// (still on the device: reading them would wait for it) and the fakes.
    ///
    /// The discriminator's step runs real and fake images through it as one batch: it has no
    /// BatchNorm, so each image's output is the same as in two passes, and the mean of the
    /// per-image losses over both halves is `(BCE(D(real), 1) + BCE(D(fake), 0)) / 2`.
    ///
    /// The conditional GAN (`labels` given) is `cgan.py`'s step: the generator draws the
    /// asked classes, the discriminator judges each image with its label, and both losses are
    /// mean squared errors against the same targets.
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
        let device = real.device();
        let least_squares = labels.is_some();

        // Generator step: make the discriminator call the fakes real. The discriminator's
        // weights are frozen here: their gradients would be discarded anyway.
        let input = self.generator.input(z, labels.map(|l| &l.fake))?;
        let fakes = self.generator.forward_train(&input)?;
        let seen = self.augment(&fakes)?;
        let masks = self.dropout(batch, device)?;
        let g_logits = self
            .discriminator
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
        let logits = self
            .discriminator
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

    /// Every tensor of the state, under `generator.`, `discriminator.`, `optimizer_g.` and
    /// `optimizer_d.`, the epoch's image order, and the metadata that completes it.
    pub(crate) fn to_checkpoint(
        &self,
        config_json: &str,
        position: &EpochPosition,
    ) -> anyhow::Result<Vec<u8>> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (name, t) in self.generator.state()? {
            tensors.push((format!("generator.{name}"), t));
        }
        for (name, var) in self.discriminator.vars() {
            tensors.push((format!("discriminator.{name}"), var.as_tensor().clone()));
        }
        if let Some(average) = &self.average {
            for (name, t) in average.tensors() {
                tensors.push((format!("generator_average.{name}"), t));
            }
        }
        tensors.extend(self.opt_g.state("optimizer_g.")?);
        tensors.extend(self.opt_d.state("optimizer_d.")?);
        tensors.push((
            EPOCH_ORDER_TENSOR.to_string(),
            Tensor::from_slice(&position.order, position.order.len(), &Device::Cpu)?,
        ));
        let mut meta = HashMap::new();
        meta.insert("format".into(), CHECKPOINT_FORMAT.into());
        meta.insert("epoch".into(), self.epoch.to_string());
        meta.insert("batch_in_epoch".into(), position.next_batch.to_string());
        meta.insert("batches_done".into(), self.batches_done.to_string());
        meta.insert("adam_steps_g".into(), self.opt_g.steps().to_string());
        meta.insert("adam_steps_d".into(), self.opt_d.steps().to_string());
        meta.insert("rng_seed".into(), hex(&self.rng.get_seed()));
        meta.insert("rng_stream".into(), self.rng.get_stream().to_string());
        meta.insert("rng_word_pos".into(), self.rng.get_word_pos().to_string());
        meta.insert("config".into(), config_json.to_string());
        meta.insert("recipe".into(), serde_json::to_string(&self.recipe)?);
        mcugan_model_tools::fsutil::safetensors_bytes(tensors, meta)
    }

    /// Restores a state written by [`TrainState::to_checkpoint`] into this freshly built one
    /// (same recipe); returns where in its epoch the run stopped.
    pub(crate) fn restore(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<EpochPosition> {
        let tensors = &checkpoint.tensors;
        let meta = |key: &str| -> anyhow::Result<&str> {
            checkpoint
                .meta
                .get(key)
                .map(String::as_str)
                .with_context(|| format!("the checkpoint has no {key}"))
        };
        let number = |key: &str| -> anyhow::Result<u64> {
            meta(key)?
                .parse()
                .with_context(|| format!("the checkpoint's {key} is not a number"))
        };
        self.generator.load_state(tensors, "generator.")?;
        self.discriminator.load_state(tensors, "discriminator.")?;
        if let Some(average) = &mut self.average {
            average.load(tensors, "generator_average.")?;
        }
        self.opt_g
            .load_state(tensors, "optimizer_g.", number("adam_steps_g")?)?;
        self.opt_d
            .load_state(tensors, "optimizer_d.", number("adam_steps_d")?)?;
        let seed = unhex(meta("rng_seed")?).context("the checkpoint's rng_seed")?;
        self.rng = ChaCha8Rng::from_seed(seed);
        self.rng.set_stream(number("rng_stream")?);
        self.rng.set_word_pos(
            meta("rng_word_pos")?
                .parse::<u128>()
                .context("the checkpoint's rng_word_pos")?,
        );
        self.epoch = usize::try_from(number("epoch")?)?;
        self.batches_done = number("batches_done")?;
        let order = tensors
            .get(EPOCH_ORDER_TENSOR)
            .context("the checkpoint has no epoch order")?
            .to_vec1::<u32>()?;
        Ok(EpochPosition {
            order,
            next_batch: usize::try_from(number("batch_in_epoch")?)?,
        })
    }
}

/// The checkpoint's format tag.
pub const CHECKPOINT_FORMAT: &str = "mcugan-checkpoint-2";

/// The checkpoint tensor that holds the current epoch's image order.
const EPOCH_ORDER_TENSOR: &str = "epoch_order";

/// Where a run is inside an epoch: the epoch's image order and the next batch to train.
#[derive(Clone, Debug, Default)]
pub struct EpochPosition {
    /// The epoch's image order (empty before the epoch is shuffled).
    pub order: Vec<u32>,
    /// The next batch of the epoch to train.
    pub next_batch: usize,
}

/// A training checkpoint as read from disk.
pub struct Checkpoint {
    /// Every tensor, on the CPU.
    pub tensors: HashMap<String, Tensor>,
    /// The metadata.
    pub meta: HashMap<String, String>,
}

impl Checkpoint {
    /// Reads `path`; a file that is not a complete training checkpoint is an error.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes(&bytes, path)
    }

    /// Decodes the checkpoint `bytes` read from `path` (named in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> anyhow::Result<Self> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .with_context(|| format!("{} is not a safetensors file", path.display()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        match meta.get("format").map(String::as_str) {
            Some(CHECKPOINT_FORMAT) => {}
            Some(other) => bail!(
                "{} is a {other} file; resuming needs a {CHECKPOINT_FORMAT} training checkpoint",
                path.display()
            ),
            None => bail!("{} is not an mcugan training checkpoint", path.display()),
        }
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .with_context(|| format!("reading the tensors of {}", path.display()))?;
        Ok(Self { tensors, meta })
    }

    /// The run's settings as saved with it.
    pub fn settings(&self) -> anyhow::Result<RunSettings> {
        let json = self
            .meta
            .get("config")
            .context("the checkpoint has no config")?;
        serde_json::from_str(json).context("the checkpoint's config")
    }
}

/// The settings of a run that a resumed run must keep, as saved in its checkpoint.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RunSettings {
    /// The data directory, absolute (checkpoints before this field was added store the path as
    /// given, relative to where the run was started).
    pub data_dir: PathBuf,
    /// SHA-256 of the training images and labels (after `limit`), in hex: a resumed run refuses
    /// data that differs, wherever it lies.
    #[serde(default)]
    pub data_hash: Option<String>,
    /// Training images (after `limit`).
    pub images: usize,
    /// The first N images only.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Epochs asked for.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Seed.
    pub seed: u64,
    /// Optimiser settings.
    pub adam: AdamConfig,
    /// Recipe.
    pub recipe: Recipe,
    /// Classes of the conditional GAN (`None`: the unconditional one).
    #[serde(default)]
    pub classes: Option<usize>,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        bail!("expected 64 hex digits, found {}", text.len());
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// The training split as one `[n, 784]` tensor in `[-1, 1]`: `(x/255 − 0.5) / 0.5`.
pub fn dataset_tensor(data: &Dataset, device: &Device) -> anyhow::Result<Tensor> {
    if data.image_len() != IMAGE_PIXELS {
        bail!(
            "images are {}x{}, the reference GAN needs 28x28",
            data.rows,
            data.cols
        );
    }
    let bytes = Tensor::from_vec(data.pixels.clone(), (data.len(), IMAGE_PIXELS), device)?;
    Ok(bytes.to_dtype(DType::F32)?.affine(2.0 / 255.0, -1.0)?)
}

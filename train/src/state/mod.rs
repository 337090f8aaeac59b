//! The training state every engine shares: both networks, their optimisers, the run's
//! random generator and position, and its checkpoint (what a resumed run restores).
//! Candle's own training step (autograd) is in `engine/candle.rs`.

mod checkpoint;

pub(crate) use checkpoint::hex;
pub use checkpoint::{Checkpoint, EpochPosition, RunSettings, CHECKPOINT_FORMAT};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::adam::{Adam, AdamConfig};
use crate::model::{Architecture, Discriminator, Generator};
use crate::recipe::{Recipe, WeightAverage};
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
    pub(crate) targets: Option<Tensor>,
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

    /// A fresh state for `architecture`: `gan.py`'s MLP (`cgan.py`'s conditional one with
    /// `classes`), or a convolutional GAN.
    pub fn for_model(
        seed: u64,
        adam: AdamConfig,
        recipe: Recipe,
        architecture: &Architecture,
        classes: Option<usize>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (generator, discriminator) = architecture.networks(classes, &mut rng, device)?;
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
            &settings.architecture,
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
        Self::for_model(seed, adam, recipe, &Architecture::Mlp, None, device)
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
}

/// The training split as one `[n, side²]` tensor in `[-1, 1]`: `(x/255 − 0.5) / 0.5`. The
/// images must already be `side`×`side` (see [`Dataset::resized`]).
pub fn dataset_tensor(data: &Dataset, side: usize, device: &Device) -> anyhow::Result<Tensor> {
    if data.rows != side || data.cols != side {
        bail!(
            "images are {}x{}, the model needs {side}x{side}",
            data.rows,
            data.cols
        );
    }
    let bytes = Tensor::from_vec(data.pixels.clone(), (data.len(), side * side), device)?;
    Ok(bytes.to_dtype(DType::F32)?.affine(2.0 / 255.0, -1.0)?)
}

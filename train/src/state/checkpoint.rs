//! The training checkpoint: every tensor of a [`TrainState`] with the metadata that resumes
//! it, and the run's settings saved with it.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::TrainState;
use crate::adam::AdamConfig;
use crate::model::Architecture;
use crate::recipe::Recipe;

impl TrainState {
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
        for (name, t) in self.discriminator.state()? {
            tensors.push((format!("discriminator.{name}"), t));
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
    /// The networks (`gan.py`'s MLP when absent).
    #[serde(default)]
    pub architecture: Architecture,
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

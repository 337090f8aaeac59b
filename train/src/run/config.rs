//! What a run trains and how: [`TrainConfig`] (the reference's settings, or a resumed run's),
//! and the [`TrainSummary`] a finished run reports.

use std::path::PathBuf;

use candle_core::Device;

use super::files::CHECKPOINT_FILE;
use crate::adam::AdamConfig;
use crate::engine::Engine;
use crate::model::Architecture;
use crate::recipe::Recipe;
use crate::state::Checkpoint;

/// What to train and how.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// A directory of IDX files; the training split is used.
    pub data_dir: PathBuf,
    /// Where checkpoints, samples and logs go.
    pub out_dir: PathBuf,
    /// Passes over the training split.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Save a 5x5 sample grid every this many batches (0: never).
    pub sample_interval: u64,
    /// Train on the first this many images only.
    pub limit: Option<usize>,
    /// Also keep the generator of every this many epochs as `generators/epoch-N.safetensors`
    /// (0: only the last).
    pub save_every: usize,
    /// Optimiser settings, for both networks.
    pub adam: AdamConfig,
    /// The training recipe: the reference, or small-data improvements.
    pub recipe: Recipe,
    /// Where the tensors live.
    pub device: Device,
    /// Show a progress bar (it is hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Continue the run whose checkpoint is in `out_dir` (see [`TrainConfig::resume`]).
    pub resume: bool,
    /// Which implementation runs the training step.
    pub engine: Engine,
    /// Train `cgan.py`'s class-conditional GAN with this many classes (`None`: `gan.py`'s).
    pub classes: Option<usize>,
    /// The networks: `gan.py`'s MLP, or a convolutional GAN.
    pub architecture: Architecture,
}

impl TrainConfig {
    /// The reference's settings (batch 64, Adam 2e-4 (0.5, 0.999), samples every 400
    /// batches) for `epochs` epochs on the CPU.
    pub fn reference(data_dir: PathBuf, out_dir: PathBuf, epochs: usize) -> Self {
        Self {
            data_dir,
            out_dir,
            epochs,
            batch_size: 64,
            seed: 0,
            sample_interval: 400,
            limit: None,
            save_every: 0,
            adam: AdamConfig::REFERENCE,
            recipe: Recipe::REFERENCE,
            device: Device::Cpu,
            progress: true,
            resume: false,
            engine: Engine::for_device(&Device::Cpu, crate::cpu::training_threads(None)),
            classes: None,
            architecture: Architecture::Mlp,
        }
    }
}

/// What a finished run reports (also written as `train-summary.json`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainSummary {
    /// The data directory.
    pub data_dir: String,
    /// Training images used.
    pub images: usize,
    /// Epochs run.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Seed.
    pub seed: u64,
    /// Device, in words.
    pub device: String,
    /// Wall time of each epoch, seconds.
    pub epoch_seconds: Vec<f64>,
    /// The recipe's name.
    #[serde(default)]
    pub recipe: String,
    /// Mean of `epoch_seconds`.
    pub mean_epoch_seconds: f64,
    /// Training images processed per second, over the whole run.
    pub images_per_second: f64,
    /// Discriminator loss of the last batch.
    pub final_d_loss: f32,
    /// Generator loss of the last batch.
    pub final_g_loss: f32,
}

impl TrainConfig {
    /// The configuration that resumes the run whose checkpoint is in `out_dir`, trained to
    /// `epochs` epochs in all (`None`: the number the run was started with).
    pub fn resume(out_dir: PathBuf, epochs: Option<usize>) -> anyhow::Result<Self> {
        let checkpoint = Checkpoint::read(&out_dir.join(CHECKPOINT_FILE))?;
        let settings = checkpoint.settings()?;
        let mut config = TrainConfig::reference(
            settings.data_dir,
            out_dir,
            epochs.unwrap_or(settings.epochs),
        );
        config.limit = settings.limit;
        config.batch_size = settings.batch_size;
        config.seed = settings.seed;
        config.adam = settings.adam;
        config.recipe = settings.recipe;
        config.classes = settings.classes;
        config.architecture = settings.architecture;
        config.resume = true;
        Ok(config)
    }
}

//! Training the reference GAN: the loop of `gan.py`, with a progress bar, a CSV loss log, sample
//! grids, and checkpoints written atomically.
//!
//! Each batch, as in the reference: sample z ~ N(0, 1); generator step on
//! `BCE(D(G(z)), 1)`; then discriminator step on `(BCE(D(real), 1) + BCE(D(G(z)), 0)) / 2`
//! with the same fakes, detached. All randomness (initialisation, shuffling, z) comes from one
//! seeded ChaCha8 generator, so a run is reproducible from its seed.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::adam::AdamConfig;
use crate::engine::{Batch, CandleStep, TrainingStep};
use crate::fused::{FusedStep, FusedTrainer};
use crate::gan::{Generator, CONDITIONAL_DROPOUT, IMAGE_PIXELS, LATENT_DIM};
use crate::kernel_trainer;
use crate::recipe::Recipe;
use mcugan_model_tools::data::{self, Dataset, Split};
use mcugan_model_tools::picture::{self, GridLayout};

pub use crate::latent::{latent_batch, sample_z};
use crate::state::EpochPosition;
pub use crate::state::{
    dataset_tensor, BatchLabels, BatchLosses, Checkpoint, RunSettings, TrainState,
    CHECKPOINT_FORMAT,
};

/// File name of the full training checkpoint in the output directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// File name of the generator alone (PyTorch names) in the output directory.
pub const GENERATOR_FILE: &str = "generator.safetensors";
/// File name of the per-batch loss log.
pub const LOSS_LOG_FILE: &str = "losses.csv";
/// File name of the run summary.
pub const SUMMARY_FILE: &str = "train-summary.json";
/// Directory of the sample grids saved during training.
pub const SAMPLES_DIR: &str = "samples";
/// Directory of the generators kept every `save_every` epochs.
pub const GENERATORS_DIR: &str = "generators";

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
}

/// Which implementation runs the training step; both compute the same thing (tests compare
/// them batch by batch) and write the same checkpoints, so a run may change engine on resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// candle's autograd, on any device.
    Candle,
    /// The hand-fused CPU step of [`crate::fused`], on this many threads.
    Fused {
        /// Threads of its matrix products and Adam pass.
        threads: usize,
    },
    /// The step as kernels over one device arena ([`crate::kernel_trainer`]): on a CUDA
    /// device its GPU backend, on the CPU its emulator (slow; it exists to check the step).
    Kernels,
}

impl Engine {
    /// The fast choice for `device`: the fused step on the CPU (on `threads` threads), candle
    /// elsewhere.
    pub fn for_device(device: &Device, threads: usize) -> Self {
        if device.is_cpu() {
            Engine::Fused { threads }
        } else {
            Engine::Candle
        }
    }
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

/// The least time between two end-of-epoch checkpoints. A checkpoint (about 30 MB: both
/// networks and their Adam moments) takes a noticeable share of a short epoch to store; the
/// first and the last epoch and an interrupted one are always saved, so a `kill -9` costs at
/// most this much training.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

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
        config.resume = true;
        Ok(config)
    }
}

/// SHA-256 of a data set's images and labels, in hex: what identifies the training data of a
/// run, wherever its files lie and however they are compressed.
pub fn content_hash(data: &Dataset) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update((data.rows as u64).to_le_bytes());
    hasher.update((data.cols as u64).to_le_bytes());
    hasher.update(&data.pixels);
    hasher.update(&data.labels);
    crate::state::hex(&hasher.finalize())
}

/// Writes the generator alone with PyTorch names, atomically.
pub fn save_generator(
    generator: &Generator,
    path: &Path,
    meta: HashMap<String, String>,
) -> anyhow::Result<()> {
    let bytes = mcugan_model_tools::fsutil::safetensors_bytes(generator.state()?, meta)?;
    mcugan_model_tools::fsutil::write_atomically(path, &bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Asks a running [`train_until`] to stop after its current batch and save a checkpoint; the
/// CLI's Ctrl-C handler holds a clone.
#[derive(Clone, Debug, Default)]
pub struct StopToken(Arc<AtomicBool>);

impl StopToken {
    /// A token no one has used yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop; returns whether a stop had been asked for already.
    pub fn request(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }

    /// Whether a stop has been asked for.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every epoch trained; the generator and the summary are written.
    Finished(TrainSummary),
    /// Stopped by its [`StopToken`], after writing a checkpoint that resumes it.
    Interrupted(Interrupted),
}

/// Where a run stopped by its [`StopToken`] stands; the checkpoint it names resumes it.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted after {batches_done} batches (epoch {epoch}); checkpoint saved to {}",
    checkpoint.display()
)]
pub struct Interrupted {
    /// The checkpoint written on the way out.
    pub checkpoint: PathBuf,
    /// Batches trained in all.
    pub batches_done: u64,
    /// The epoch it stopped in, from 1.
    pub epoch: usize,
}

/// The largest loss a sound run reports: the reference's `BCELoss` clamps the log at −100, so
/// it can never report more than 100; a larger loss (or one that is not finite) means the run
/// diverged.
pub const MAX_PLAUSIBLE_LOSS: f32 = 100.0;

/// The largest parameter magnitude a sound run reaches (the reference's weights stay below 10).
pub const MAX_PLAUSIBLE_WEIGHT: f32 = 1.0e6;

/// Where a diverged run can go on from: its last checkpoint, if one was written.
fn last_good(checkpoint: &Path) -> String {
    if checkpoint.is_file() {
        format!(
            "the last good checkpoint is {} (resume it with a lower --lr)",
            checkpoint.display()
        )
    } else {
        "no checkpoint was written yet (it diverged in the first epoch): start again with a \
         lower --lr"
            .to_string()
    }
}

/// The first parameter of `state` that is not finite or has exploded, with its value.
fn implausible_parameter(state: &TrainState) -> anyhow::Result<Option<(String, f32)>> {
    let mut tensors = state.generator.state()?;
    for (name, var) in state.discriminator.vars() {
        tensors.push((format!("discriminator.{name}"), var.as_tensor().clone()));
    }
    for (name, tensor) in tensors {
        if tensor.dtype() != candle_core::DType::F32 {
            continue;
        }
        let values = tensor.flatten_all()?.to_vec1::<f32>()?;
        if let Some(&bad) = values
            .iter()
            .find(|v| !v.is_finite() || v.abs() > MAX_PLAUSIBLE_WEIGHT)
        {
            return Ok(Some((name, bad)));
        }
    }
    Ok(None)
}

/// Refuses a state with a parameter that is not finite or has exploded, naming the tensor; run
/// before a checkpoint is written, so the last checkpoint stays a good one.
fn check_parameters(state: &TrainState, checkpoint: &Path) -> anyhow::Result<()> {
    if let Some((name, bad)) = implausible_parameter(state)? {
        bail!(
            "the parameter {name} reached {bad}: training diverged and was stopped; {}",
            last_good(checkpoint)
        );
    }
    Ok(())
}

/// Batches whose losses are read back together: reading a loss waits for the device, so on a
/// GPU they are read in groups (the log still has every batch).
const LOSS_READ_INTERVAL: usize = 50;

/// The batches trained but not yet in the loss log, as `(epoch, batch, batches_done)`; their
/// losses wait in the engine until [`PendingLosses::flush`] reads them.
struct PendingLosses {
    rows: Vec<(usize, usize, u64)>,
}

impl PendingLosses {
    /// Reads the pending batches' losses from `step`, writes them to the log, and returns the
    /// last pair; a loss that is not finite is an error that names its batch.
    fn flush(
        &mut self,
        step: &mut dyn TrainingStep,
        log: &mut impl Write,
        checkpoint: &Path,
    ) -> anyhow::Result<Option<(f32, f32)>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        let losses = step.take_losses()?;
        if losses.len() != self.rows.len() {
            bail!(
                "{} losses came back for {} batches",
                losses.len(),
                self.rows.len()
            );
        }
        for (&(epoch, batch, done), &(d, g)) in self.rows.iter().zip(&losses) {
            let diverged = if !d.is_finite() || !g.is_finite() {
                Some("is not finite")
            } else if d.abs() > MAX_PLAUSIBLE_LOSS || g.abs() > MAX_PLAUSIBLE_LOSS {
                Some("exploded")
            } else {
                None
            };
            if let Some(how) = diverged {
                log.flush()?;
                bail!(
                    "the loss {how} at epoch {}, batch {batch} (D {d}, G {g}): training diverged \
                     and was stopped; {}",
                    epoch + 1,
                    last_good(checkpoint)
                );
            }
            writeln!(log, "{epoch},{batch},{done},{d},{g}")?;
        }
        self.rows.clear();
        Ok(losses.last().copied())
    }
}

/// Opens the loss log: a fresh one, or on resume the old one cut back to the batches the
/// checkpoint holds, so a killed run leaves no rows that will be trained again.
fn open_loss_log(path: &Path, resume_at: Option<u64>) -> anyhow::Result<fs::File> {
    const HEADER: &str = "epoch,batch,batches_done,d_loss,g_loss\n";
    let mut kept = String::from(HEADER);
    if let Some(done) = resume_at {
        if let Ok(old) = fs::read_to_string(path) {
            for line in old.lines().skip(1) {
                let row_done = line.split(',').nth(2).and_then(|v| v.parse::<u64>().ok());
                if matches!(row_done, Some(n) if n < done) {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
    }
    mcugan_model_tools::fsutil::write_atomically(path, kept.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Trains per `config` (or resumes, when `config.resume`); returns the run's summary.
///
/// A checkpoint is written atomically after the first and the last epoch, after any epoch that
/// ends [`CHECKPOINT_INTERVAL`] or more after the last one, and when a [`StopToken`] stops
/// the run ([`train_until`]); a loss that is not finite stops it with an error and leaves the last checkpoint
/// as it was.
pub fn train(config: &TrainConfig) -> anyhow::Result<TrainSummary> {
    match train_until(config, &StopToken::new())? {
        Outcome::Finished(summary) => Ok(summary),
        Outcome::Interrupted(stop) => Err(stop.into()),
    }
}

/// [`train`], stopping early (after a checkpoint) once `stop` is requested.
pub fn train_until(config: &TrainConfig, stop: &StopToken) -> anyhow::Result<Outcome> {
    let data = load_training_data(config)?;
    let device = &config.device;
    let images = dataset_tensor(&data, device)?;
    let out = &config.out_dir;
    let checkpoint_path = out.join(CHECKPOINT_FILE);
    fs::create_dir_all(out.join(SAMPLES_DIR))
        .with_context(|| format!("creating {}", out.display()))?;

    let mut state = TrainState::for_model(
        config.seed,
        config.adam,
        config.recipe,
        config.classes,
        device,
    )?;
    let data_hash = content_hash(&data);
    let position = if config.resume {
        resume(config, &data, &data_hash, &mut state)?
    } else {
        EpochPosition::default()
    };
    let settings = RunSettings {
        data_dir: std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone()),
        data_hash: Some(data_hash),
        images: data.len(),
        limit: config.limit,
        epochs: config.epochs,
        batch_size: config.batch_size,
        seed: config.seed,
        adam: config.adam,
        recipe: config.recipe,
        classes: config.classes,
    };
    let step = training_step(config, &state, &data, images)?;
    let resume_at = config.resume.then_some(state.batches_done);
    let log = open_loss_log(&out.join(LOSS_LOG_FILE), resume_at)?;
    // A final batch of one image cannot go through BatchNorm in training mode; it is dropped.
    let batches_per_epoch =
        data.len().div_ceil(config.batch_size) - usize::from(data.len() % config.batch_size == 1);
    let progress = progress_bar(config, batches_per_epoch);
    progress.set_position((state.epoch * batches_per_epoch + position.next_batch) as u64);
    progress.reset_eta();
    let mut run = Run {
        config,
        data: &data,
        state,
        step,
        position,
        checkpoint_path,
        config_json: serde_json::to_string(&settings)?,
        log,
        pending: PendingLosses { rows: Vec::new() },
        progress,
        batches_per_epoch,
        last_losses: (f32::NAN, f32::NAN),
        // Not `with_capacity(epochs)`: a huge --epochs must not allocate up front.
        epoch_seconds: Vec::new(),
        images_trained: 0,
        started: Instant::now(),
        last_checkpoint: None,
        stop: stop.clone(),
    };
    while run.state.epoch < config.epochs {
        if let Some(stopped) = run.train_epoch()? {
            return Ok(Outcome::Interrupted(stopped));
        }
    }
    Ok(Outcome::Finished(run.finish()?))
}

/// The training split of `config`'s data (the first `--limit` images), checked against the
/// run's settings.
fn load_training_data(config: &TrainConfig) -> anyhow::Result<Dataset> {
    let mut data = data::load_split(&config.data_dir, Split::Train).with_context(|| {
        format!(
            "loading the training split of {}",
            config.data_dir.display()
        )
    })?;
    if let Some(limit) = config.limit {
        data = data.truncated(limit);
    }
    if data.len() < 2 {
        bail!("need at least 2 training images, found {}", data.len());
    }
    if config.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if config.batch_size < 2 {
        bail!("batch size must be at least 2 (BatchNorm needs two samples)");
    }
    let device = &config.device;
    if matches!(config.engine, Engine::Fused { .. }) && !device.is_cpu() {
        bail!(
            "the fused trainer runs on the CPU; train on {} with the kernels or candle engine",
            crate::device::device_name(device)
        );
    }
    if let Some(classes) = config.classes {
        check_conditional(config, &data, classes)?;
    }
    Ok(data)
}

/// Restores the run's checkpoint into `state` (after checking that it is this run's, on the
/// same data, with epochs left to train); returns where in its epoch the run stopped.
fn resume(
    config: &TrainConfig,
    data: &Dataset,
    data_hash: &str,
    state: &mut TrainState,
) -> anyhow::Result<EpochPosition> {
    let checkpoint = Checkpoint::read(&config.out_dir.join(CHECKPOINT_FILE))?;
    let settings = checkpoint.settings()?;
    if let Some(stored) = &settings.data_hash {
        if stored != data_hash {
            bail!(
                "the training images in {} differ from the ones the run was trained on (content \
                 hash {} there, {} here): resume needs the same data; point --data at a copy \
                 of it",
                config.data_dir.display(),
                &stored[..stored.len().min(16)],
                &data_hash[..16]
            );
        }
    }
    if settings.classes != config.classes {
        bail!(
            "the checkpoint holds {}, not {}",
            describe_model(settings.classes),
            describe_model(config.classes)
        );
    }
    if settings.images != data.len() {
        bail!(
            "the checkpoint was trained on {} images, {} has {}",
            settings.images,
            config.data_dir.display(),
            data.len()
        );
    }
    let position = state
        .restore(&checkpoint)
        .context("restoring the checkpoint")?;
    if let Some((name, bad)) = implausible_parameter(state)? {
        bail!(
            "{} holds the parameter {name} at {bad}: a diverged run, it cannot be resumed; \
             start a new run (--force replaces it)",
            config.out_dir.join(CHECKPOINT_FILE).display()
        );
    }
    if state.epoch >= config.epochs {
        bail!(
            "the run in {} has trained {} of its {} epochs already: nothing to resume; give \
             --epochs more than {} to train it further",
            config.out_dir.display(),
            state.epoch,
            settings.epochs,
            state.epoch
        );
    }
    if position.next_batch > 0 && position.order.len() != data.len() {
        bail!("the checkpoint's epoch order does not match the data");
    }
    Ok(position)
}

/// The engine `config` asks for, over the training images (`images`, `[n, 784]` on the
/// run's device), starting from `state`.
fn training_step(
    config: &TrainConfig,
    state: &TrainState,
    data: &Dataset,
    images: Tensor,
) -> anyhow::Result<Box<dyn TrainingStep>> {
    let device = &config.device;
    Ok(match config.engine {
        Engine::Candle => {
            let labels = match config.classes {
                Some(_) => {
                    let labels: Vec<u32> = data.labels.iter().map(|&l| u32::from(l)).collect();
                    Some(Tensor::from_vec(labels, data.len(), device)?)
                }
                None => None,
            };
            Box::new(CandleStep::new(images, labels, device))
        }
        // The hand-written engines read the images as plain floats.
        Engine::Fused { threads } => Box::new(FusedStep::new(
            FusedTrainer::new(state, threads)?,
            images.flatten_all()?.to_vec1()?,
        )),
        Engine::Kernels => Box::new(kernel_trainer::for_device(
            state,
            &images.flatten_all()?.to_vec1::<f32>()?,
            config.batch_size,
            device,
        )?),
    })
}

/// A run in progress: the state, the engine that trains it, and what the loop keeps
/// between batches (loss log, progress, timings).
struct Run<'a> {
    config: &'a TrainConfig,
    data: &'a Dataset,
    state: TrainState,
    step: Box<dyn TrainingStep>,
    position: EpochPosition,
    checkpoint_path: PathBuf,
    config_json: String,
    log: fs::File,
    pending: PendingLosses,
    progress: ProgressBar,
    batches_per_epoch: usize,
    last_losses: (f32, f32),
    epoch_seconds: Vec<f64>,
    images_trained: usize,
    started: Instant,
    last_checkpoint: Option<Instant>,
    stop: StopToken,
}

impl Run<'_> {
    /// Trains the rest of the current epoch, then ends it (loss log, checkpoint, kept
    /// generator); a stop request ends it early, after a checkpoint, with [`Interrupted`].
    fn train_epoch(&mut self) -> anyhow::Result<Option<Interrupted>> {
        let epoch = self.state.epoch;
        let epoch_start = Instant::now();
        let (data_len, batch_size) = (self.data.len(), self.config.batch_size);
        if self.position.next_batch == 0 {
            self.position.order = (0..data_len as u32).collect();
            self.position.order.shuffle(&mut self.state.rng);
        }
        let first_batch = self.position.next_batch;
        let (latents, latent_rows) = self.epoch_latents(first_batch);
        self.step.begin_epoch(&self.position.order, &latents)?;
        for batch_index in first_batch..self.batches_per_epoch {
            let start = batch_index * batch_size;
            let len = batch_size.min(data_len - start);
            self.pending
                .rows
                .push((epoch, batch_index, self.state.batches_done));
            let batch = Batch {
                order: &self.position.order,
                latents: &latents,
                start,
                len,
                latent_row: latent_rows[batch_index - first_batch],
            };
            self.step.train_batch(&mut self.state, &batch)?;
            let interval = self.config.sample_interval;
            if interval > 0 && self.state.batches_done.is_multiple_of(interval) {
                let path = self
                    .config
                    .out_dir
                    .join(SAMPLES_DIR)
                    .join(format!("{}.png", self.state.batches_done));
                save_sample_grid(&self.step.fakes()?, &path)?;
            }
            self.state.batches_done += 1;
            self.position.next_batch = batch_index + 1;
            self.images_trained += len;
            self.progress.inc(1);
            let interrupted = self.stop.is_requested();
            if self.pending.rows.len() >= LOSS_READ_INTERVAL || interrupted {
                self.read_losses(epoch)?;
            }
            if interrupted && self.position.next_batch < self.batches_per_epoch {
                self.log.flush()?;
                self.save_checkpoint()?;
                return Ok(Some(self.stopped(epoch + 1)));
            }
        }
        self.end_epoch(epoch, epoch_start)
    }

    /// The latent vectors of the epoch's batches from `first_batch` on, one after another,
    /// and each batch's first row. Each batch has its own random stream, so the epoch's
    /// batches are drawn in parallel.
    fn epoch_latents(&self, first_batch: usize) -> (Vec<f32>, Vec<usize>) {
        let (data_len, batch_size) = (self.data.len(), self.config.batch_size);
        let batches_done = self.state.batches_done;
        let seed = self.config.seed;
        let per_batch: Vec<Vec<f32>> = (first_batch..self.batches_per_epoch)
            .into_par_iter()
            .map(|batch_index| {
                let start = batch_index * batch_size;
                let len = batch_size.min(data_len - start);
                let number = batches_done + (batch_index - first_batch) as u64;
                let mut values = Vec::with_capacity(len * LATENT_DIM);
                latent_batch(seed, number, len, &mut values);
                values
            })
            .collect();
        let mut latents = Vec::with_capacity(per_batch.iter().map(Vec::len).sum());
        let mut rows = Vec::with_capacity(per_batch.len());
        for values in &per_batch {
            rows.push(latents.len() / LATENT_DIM);
            latents.extend_from_slice(values);
        }
        (latents, rows)
    }

    /// Writes the pending batches' losses to the log and shows the last on the bar.
    fn read_losses(&mut self, epoch: usize) -> anyhow::Result<()> {
        if let Some((d, g)) = self.flush_losses()? {
            self.progress.set_message(format!(
                "epoch {}/{} D {d:.3} G {g:.3}",
                epoch + 1,
                self.config.epochs
            ));
        }
        Ok(())
    }

    fn flush_losses(&mut self) -> anyhow::Result<Option<(f32, f32)>> {
        let last = self
            .pending
            .flush(self.step.as_mut(), &mut self.log, &self.checkpoint_path)
            .inspect_err(|_| self.progress.abandon())?;
        if let Some(losses) = last {
            self.last_losses = losses;
        }
        Ok(last)
    }

    /// The end of an epoch: the loss log, a checkpoint when one is due (or the run ends or
    /// is interrupted), the generator kept every `--save-every` epochs, a line of progress.
    fn end_epoch(
        &mut self,
        epoch: usize,
        epoch_start: Instant,
    ) -> anyhow::Result<Option<Interrupted>> {
        self.flush_losses()?;
        self.state.epoch = epoch + 1;
        self.position = EpochPosition::default();
        let seconds = epoch_start.elapsed().as_secs_f64();
        self.epoch_seconds.push(seconds);
        self.log.flush()?;
        let config = self.config;
        let due = self
            .last_checkpoint
            .is_none_or(|at| at.elapsed() >= CHECKPOINT_INTERVAL);
        let keep_generator =
            config.save_every > 0 && self.state.epoch.is_multiple_of(config.save_every);
        // Read once: an interrupted run stops below only after this epoch's checkpoint.
        let interrupted = self.stop.is_requested();
        if due || self.state.epoch == config.epochs || interrupted {
            self.save_checkpoint()?;
            self.last_checkpoint = Some(Instant::now());
        } else if keep_generator {
            // The fused and kernel engines hold the live weights; bring them into `state`.
            self.step.store_into(&mut self.state)?;
        }
        if keep_generator {
            let dir = config.out_dir.join(GENERATORS_DIR);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!("epoch-{}.safetensors", self.state.epoch));
            self.save_generator(&path)?;
        }
        let (d, g) = self.last_losses;
        say(
            &self.progress,
            format!(
                "epoch {}/{}: D {d:.4} G {g:.4} ({seconds:.1} s)",
                epoch + 1,
                config.epochs
            ),
        );
        if interrupted && self.state.epoch < config.epochs {
            return Ok(Some(self.stopped(self.state.epoch)));
        }
        Ok(None)
    }

    /// Brings `state` up to date from the engine and writes it atomically as the checkpoint.
    fn save_checkpoint(&mut self) -> anyhow::Result<()> {
        self.step.store_into(&mut self.state)?;
        check_parameters(&self.state, &self.checkpoint_path)?;
        let checkpoint = self
            .state
            .to_checkpoint(&self.config_json, &self.position)?;
        mcugan_model_tools::fsutil::write_atomically(&self.checkpoint_path, &checkpoint)
            .context("writing the checkpoint")
    }

    /// The generator as trained so far (the weight average, when the recipe keeps one),
    /// written to `path`; `state` must be up to date.
    fn save_generator(&self, path: &Path) -> anyhow::Result<()> {
        let exported = self.state.exported_generator()?;
        save_generator(
            exported.as_ref().unwrap_or(&self.state.generator),
            path,
            generator_metadata(self.config, self.data, self.state.epoch),
        )
    }

    /// Where an interrupted run stopped, in epoch `epoch` (from 1).
    fn stopped(&self, epoch: usize) -> Interrupted {
        self.progress.abandon();
        Interrupted {
            checkpoint: self.checkpoint_path.clone(),
            batches_done: self.state.batches_done,
            epoch,
        }
    }

    /// The end of the run: the generator and the summary, written to the output folder.
    fn finish(self) -> anyhow::Result<TrainSummary> {
        self.progress.finish_and_clear();
        let total = self.started.elapsed().as_secs_f64();
        let config = self.config;
        self.save_generator(&config.out_dir.join(GENERATOR_FILE))?;
        let epoch_seconds = self.epoch_seconds;
        let summary = TrainSummary {
            data_dir: config.data_dir.display().to_string(),
            images: self.data.len(),
            epochs: config.epochs,
            batch_size: config.batch_size,
            seed: config.seed,
            device: self.step.describe(&config.device),
            recipe: config.recipe.name().to_string(),
            mean_epoch_seconds: epoch_seconds.iter().sum::<f64>()
                / epoch_seconds.len().max(1) as f64,
            epoch_seconds,
            images_per_second: self.images_trained as f64 / total.max(1e-9),
            final_d_loss: self.last_losses.0,
            final_g_loss: self.last_losses.1,
        };
        let json = serde_json::to_vec_pretty(&summary)?;
        mcugan_model_tools::fsutil::write_atomically(&config.out_dir.join(SUMMARY_FILE), &json)?;
        Ok(summary)
    }
}

/// "the conditional GAN of N classes" or "the unconditional GAN", for messages.
pub fn describe_model(classes: Option<usize>) -> String {
    match classes {
        Some(classes) => format!("the conditional GAN of {classes} classes"),
        None => "the unconditional GAN".to_string(),
    }
}

/// Checks what the conditional GAN needs of the run: candle's engine, no dropout of the
/// recipe's (`cgan.py`'s discriminator has its own), and labels below `classes`.
fn check_conditional(config: &TrainConfig, data: &Dataset, classes: usize) -> anyhow::Result<()> {
    if config.engine != Engine::Candle {
        bail!(
            "the conditional GAN trains on candle's engine only: pass --engine candle (or leave \
             --engine out)"
        );
    }
    if config.recipe.d_dropout > 0.0 {
        bail!(
            "the conditional discriminator has cgan.py's own dropout ({CONDITIONAL_DROPOUT}): \
             the recipe's dropout does not apply to it"
        );
    }
    if !(2..=256).contains(&classes) {
        bail!("a conditional GAN needs 2 to 256 classes, not {classes}");
    }
    if let Some(&label) = data.labels.iter().find(|&&l| usize::from(l) >= classes) {
        bail!(
            "the data holds label {label}, beyond the {classes} classes of the model: give \
             --classes {} (or leave it out: the labels decide)",
            data.class_counts().len()
        );
    }
    let counts = data.class_counts();
    let empty: Vec<String> = (0..classes)
        .filter(|&c| counts.get(c).copied().unwrap_or(0) == 0)
        .map(|c| c.to_string())
        .collect();
    if !empty.is_empty() {
        bail!(
            "class{} {} {} no image among the {} training images{}: a conditional model would \
             learn nothing for {}; train on images of every class (a --limit takes the first \
             images, which may all be of a few classes)",
            if empty.len() == 1 { "" } else { "es" },
            empty.join(", "),
            if empty.len() == 1 { "has" } else { "have" },
            data.len(),
            config
                .limit
                .map_or(String::new(), |l| format!(" (the first {l})")),
            if empty.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

fn generator_metadata(
    config: &TrainConfig,
    data: &Dataset,
    epoch: usize,
) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), "mcugan-generator-1".to_string()),
        ("epochs".to_string(), epoch.to_string()),
        ("images".to_string(), data.len().to_string()),
        (
            "data_dir".to_string(),
            config.data_dir.display().to_string(),
        ),
        ("seed".to_string(), config.seed.to_string()),
        ("recipe".to_string(), config.recipe.name().to_string()),
        (
            "classes".to_string(),
            config.classes.map_or("none".to_string(), |c| c.to_string()),
        ),
    ])
}

/// Prints a line above the bar, or on stderr when the bar is hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn progress_bar(config: &TrainConfig, batches_per_epoch: usize) -> ProgressBar {
    let total = (config.epochs * batches_per_epoch) as u64;
    if !config.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} batches, ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// The reference's sample grid: the batch's first 25 fakes (`values`, row-major `[n, 784]`),
/// 5 per row, min-max normalised.
fn save_sample_grid(values: &[f32], path: &Path) -> anyhow::Result<()> {
    let values = &values[..values.len().min(25 * IMAGE_PIXELS)];
    let gray = picture::normalize_min_max(values);
    let images: Vec<&[u8]> = gray.chunks(IMAGE_PIXELS).collect();
    picture::save_png(path, &picture::grid(&images, 28, GridLayout::REFERENCE))
}

/// Loads a generator from a safetensors file: either a generator file (PyTorch names, as
/// written here or by `safetensors.torch.save_file(generator.state_dict(), …)` in PyTorch) or a
/// full training checkpoint.
pub fn load_generator(path: &Path, device: &Device) -> anyhow::Result<Generator> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let prefix = if tensors.contains_key("generator.model.0.weight") {
        "generator."
    } else {
        ""
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let embedding = format!("{prefix}{}", crate::gan::GENERATOR_EMBEDDING);
    let mut generator = match tensors.get(&embedding).map(|t| t.dims().to_vec()) {
        Some(dims) if dims.len() == 2 && dims[0] == dims[1] && dims[0] >= 2 => {
            Generator::conditional(dims[0], &mut rng, device)?
        }
        Some(dims) => bail!(
            "{}: its label embedding has shape {dims:?}; cgan.py's is [classes, classes]",
            path.display()
        ),
        None => Generator::new(&mut rng, device)?,
    };
    generator
        .load_state(&tensors, prefix)
        .with_context(|| format!("{} does not hold the reference generator", path.display()))?;
    Ok(generator)
}

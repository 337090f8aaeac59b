//! A training run: the loop of `gan.py` (or `cgan.py`), with a progress bar, a CSV loss log,
//! sample grids, checkpoints written atomically, resume, and a stop on divergence.
//!
//! Each batch, as in the reference: sample z ~ N(0, 1); generator step on
//! `BCE(D(G(z)), 1)`; then discriminator step on `(BCE(D(real), 1) + BCE(D(G(z)), 0)) / 2`
//! with the same fakes, detached. All randomness (initialisation, shuffling, z) comes from one
//! seeded ChaCha8 generator, so a run is reproducible from its seed.
//!
//! The files: `config.rs` (what to train), `start.rs` (the data and the checks before the
//! first batch, resume), `epoch.rs` (the loop), `loss_log.rs`, `divergence.rs`,
//! `progress.rs` and `files.rs` (what a run writes and reads).

mod config;
mod divergence;
mod epoch;
mod files;
mod loss_log;
mod progress;
mod start;

pub use config::{TrainConfig, TrainSummary};
pub use divergence::{MAX_PLAUSIBLE_LOSS, MAX_PLAUSIBLE_WEIGHT};
pub use files::{
    content_hash, load_generator, save_generator, CHECKPOINT_FILE, GENERATORS_DIR, GENERATOR_FILE,
    LOSS_LOG_FILE, SAMPLES_DIR, SUMMARY_FILE,
};
pub use start::describe_model;

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle_core::Tensor;

use crate::engine;
use crate::state::{dataset_tensor, EpochPosition, RunSettings, TrainState};
use epoch::Run;
use loss_log::{open_loss_log, PendingLosses};
use progress::progress_bar;
use start::{load_training_data, resume};

/// Trains per `config` (or resumes, when `config.resume`); returns the run's summary.
///
/// A checkpoint is written atomically after the first and the last epoch, after any epoch that
/// ends a minute or more after the last checkpoint, and when a [`StopToken`] stops the run
/// ([`train_until`]); a loss that is not finite stops it with an error and leaves the last
/// checkpoint as it was.
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
    let images = dataset_tensor(&data, config.architecture.image_side(), device)?;
    let out = &config.out_dir;
    let checkpoint_path = out.join(CHECKPOINT_FILE);
    fs::create_dir_all(out.join(SAMPLES_DIR))
        .with_context(|| format!("creating {}", out.display()))?;

    let mut state = TrainState::for_model(
        config.seed,
        config.adam,
        config.recipe,
        &config.architecture,
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
        architecture: config.architecture.clone(),
    };
    let labels = match config.classes {
        Some(_) => {
            let labels: Vec<u32> = data.labels.iter().map(|&l| u32::from(l)).collect();
            Some(Tensor::from_vec(labels, data.len(), device)?)
        }
        None => None,
    };
    let step = engine::build(
        config.engine,
        &state,
        &images,
        labels.as_ref(),
        config.batch_size,
    )?;
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

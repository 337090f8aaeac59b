//! The loop over an epoch's batches: latent vectors, the engine's step, samples, the loss log,
//! checkpoints, kept generators, and a stop request.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::divergence::check_parameters;
use super::files::{generator_metadata, save_generator};
use super::loss_log::{PendingLosses, LOSS_READ_INTERVAL};
use super::progress::{save_sample_grid, say};
use super::{Interrupted, StopToken, TrainConfig, TrainSummary};
use super::{GENERATORS_DIR, GENERATOR_FILE, SAMPLES_DIR, SUMMARY_FILE};
use crate::engine::{Batch, TrainingStep};
use crate::model::{latent_batch, LATENT_DIM};
use crate::state::{EpochPosition, TrainState};
use mcugan_model_tools::data::Dataset;

/// The least time between two end-of-epoch checkpoints. A checkpoint (about 30 MB: both
/// networks and their Adam moments) takes a noticeable share of a short epoch to store; the
/// first and the last epoch and an interrupted one are always saved, so a `kill -9` costs at
/// most this much training.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A run in progress: the state, the engine that trains it, and what the loop keeps
/// between batches (loss log, progress, timings).
pub(super) struct Run<'a> {
    pub(super) config: &'a TrainConfig,
    pub(super) data: &'a Dataset,
    pub(super) state: TrainState,
    pub(super) step: Box<dyn TrainingStep>,
    pub(super) position: EpochPosition,
    pub(super) checkpoint_path: PathBuf,
    pub(super) config_json: String,
    pub(super) log: fs::File,
    pub(super) pending: PendingLosses,
    pub(super) progress: ProgressBar,
    pub(super) batches_per_epoch: usize,
    pub(super) last_losses: (f32, f32),
    pub(super) epoch_seconds: Vec<f64>,
    pub(super) images_trained: usize,
    pub(super) started: Instant,
    pub(super) last_checkpoint: Option<Instant>,
    pub(super) stop: StopToken,
}

impl Run<'_> {
    /// Trains the rest of the current epoch, then ends it (loss log, checkpoint, kept
    /// generator); a stop request ends it early, after a checkpoint, with [`Interrupted`].
    pub(super) fn train_epoch(&mut self) -> anyhow::Result<Option<Interrupted>> {
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
                save_sample_grid(
                    &self.step.fakes()?,
                    self.config.architecture.image_side(),
                    &path,
                )?;
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
    pub(super) fn finish(self) -> anyhow::Result<TrainSummary> {
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

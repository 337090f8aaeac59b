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
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::adam::{Adam, AdamConfig};
use crate::data::{self, Dataset, Split};
use crate::gan::{bce_with_logits, Discriminator, Generator, IMAGE_PIXELS, LATENT_DIM};
use crate::picture::{self, GridLayout};
use crate::recipe::{dropout_mask, translate, Recipe, WeightAverage};

/// File name of the full training checkpoint in the output directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// File name of the generator alone (PyTorch names) in the output directory.
pub const GENERATOR_FILE: &str = "generator.safetensors";
/// File name of the per-batch loss log.
pub const LOSS_LOG_FILE: &str = "losses.csv";
/// File name of the run summary.
pub const SUMMARY_FILE: &str = "train-summary.json";

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
}

impl TrainState {
    /// A fresh state: generator then discriminator initialised from `seed`.
    pub fn new(seed: u64, adam: AdamConfig, device: &Device) -> anyhow::Result<Self> {
        Self::with_recipe(seed, adam, Recipe::REFERENCE, device)
    }

    /// A fresh state trained with `recipe`.
    pub fn with_recipe(
        seed: u64,
        adam: AdamConfig,
        recipe: Recipe,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let generator = Generator::new(&mut rng, device)?;
        let discriminator = Discriminator::new(&mut rng, device)?;
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
        })
    }

    /// The images as the discriminator sees them: shifted, if the recipe says so.
    fn augment(&mut self, images: &Tensor) -> anyhow::Result<Tensor> {
        Ok(translate(images, 28, self.recipe.translate, &mut self.rng)?)
    }

    /// Fresh dropout masks for the discriminator's hidden layers, if the recipe uses dropout.
    fn dropout(&mut self, batch: usize, device: &Device) -> anyhow::Result<Option<[Tensor; 2]>> {
        let p = self.recipe.d_dropout;
        if p <= 0.0 {
            return Ok(None);
        }
        Ok(Some([
            dropout_mask((batch, 512), p, &mut self.rng, device)?,
            dropout_mask((batch, 256), p, &mut self.rng, device)?,
        ]))
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

    /// One batch of the reference loop; returns `(d_loss, g_loss)` and the fakes.
    pub fn train_batch(&mut self, real: &Tensor) -> anyhow::Result<(f32, f32, Tensor)> {
        let batch = real.dim(0)?;
        let z = sample_z(&mut self.rng, batch, real.device())?;

        let device = real.device();

        // Generator step: make the discriminator call the fakes real. The discriminator's
        // weights are frozen here: their gradients would be discarded anyway.
        let fakes = self.generator.forward_train(&z)?;
        let seen = self.augment(&fakes)?;
        let masks = self.dropout(batch, device)?;
        let g_logits = self.discriminator.forward(&seen, true, masks.as_ref())?;
        let g_loss = bce_with_logits(&g_logits, 1.0)?;
        self.opt_g.step(&g_loss.backward()?)?;
        if let Some(average) = &mut self.average {
            average.update(&self.generator)?;
        }

        // Discriminator step on the same fakes, detached.
        let seen = self.augment(real)?;
        let masks = self.dropout(batch, device)?;
        let real_logits = self.discriminator.forward(&seen, false, masks.as_ref())?;
        let real_loss = bce_with_logits(&real_logits, self.recipe.real_label)?;
        let seen = self.augment(&fakes.detach())?;
        let masks = self.dropout(batch, device)?;
        let fake_logits = self.discriminator.forward(&seen, false, masks.as_ref())?;
        let fake_loss = bce_with_logits(&fake_logits, 0.0)?;
        let d_loss = ((real_loss + fake_loss)? / 2.0)?;
        self.opt_d.step(&d_loss.backward()?)?;

        Ok((
            d_loss.to_scalar::<f32>()?,
            g_loss.to_scalar::<f32>()?,
            fakes,
        ))
    }

    /// Every tensor of the state, under `generator.`, `discriminator.`, `optimizer_g.` and
    /// `optimizer_d.`, plus the metadata that completes it.
    fn to_checkpoint(&self, config_json: &str) -> anyhow::Result<Vec<u8>> {
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
        let mut meta = HashMap::new();
        meta.insert("format".into(), "mcugan-checkpoint-1".into());
        meta.insert("epoch".into(), self.epoch.to_string());
        meta.insert("batches_done".into(), self.batches_done.to_string());
        meta.insert("adam_steps_g".into(), self.opt_g.steps().to_string());
        meta.insert("adam_steps_d".into(), self.opt_d.steps().to_string());
        meta.insert("rng_seed".into(), hex(&self.rng.get_seed()));
        meta.insert("rng_stream".into(), self.rng.get_stream().to_string());
        meta.insert("rng_word_pos".into(), self.rng.get_word_pos().to_string());
        meta.insert("config".into(), config_json.to_string());
        meta.insert("recipe".into(), serde_json::to_string(&self.recipe)?);
        Ok(safetensors::serialize(tensors, Some(meta))?)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `batch x 100` standard normal samples from the run's generator.
pub fn sample_z(rng: &mut ChaCha8Rng, batch: usize, device: &Device) -> anyhow::Result<Tensor> {
    let values: Vec<f32> = (0..batch * LATENT_DIM)
        .map(|_| StandardNormal.sample(rng))
        .collect();
    Ok(Tensor::from_vec(values, (batch, LATENT_DIM), device)?)
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

/// Writes the generator alone with PyTorch names, atomically.
pub fn save_generator(
    generator: &Generator,
    path: &Path,
    meta: HashMap<String, String>,
) -> anyhow::Result<()> {
    let bytes = safetensors::serialize(generator.state()?, Some(meta))?;
    crate::fsutil::write_atomically(path, &bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Trains per `config`; returns the run's summary.
pub fn train(config: &TrainConfig) -> anyhow::Result<TrainSummary> {
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
    if config.batch_size < 2 {
        bail!("batch size must be at least 2 (BatchNorm needs two samples)");
    }
    let device = &config.device;
    let images = dataset_tensor(&data, device)?;
    let out = &config.out_dir;
    fs::create_dir_all(out.join("samples"))
        .with_context(|| format!("creating {}", out.display()))?;

    let mut state = TrainState::with_recipe(config.seed, config.adam, config.recipe, device)?;
    let config_json = serde_json::json!({
        "data_dir": config.data_dir.display().to_string(),
        "images": data.len(),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "adam": config.adam,
        "recipe": config.recipe,
    })
    .to_string();

    let mut log = fs::File::create(out.join(LOSS_LOG_FILE)).context("creating the loss log")?;
    writeln!(log, "epoch,batch,batches_done,d_loss,g_loss")?;

    // A final batch of one image cannot go through BatchNorm in training mode; it is dropped.
    let batches_per_epoch =
        data.len().div_ceil(config.batch_size) - usize::from(data.len() % config.batch_size == 1);
    let progress = progress_bar(config, batches_per_epoch);
    let mut indices: Vec<u32> = (0..data.len() as u32).collect();
    let mut epoch_seconds = Vec::with_capacity(config.epochs);
    let (mut last_d, mut last_g) = (f32::NAN, f32::NAN);
    let run_start = Instant::now();

    for epoch in 0..config.epochs {
        let epoch_start = Instant::now();
        indices.shuffle(&mut state.rng);
        for (batch_index, chunk) in indices.chunks(config.batch_size).enumerate() {
            if chunk.len() < 2 {
                continue;
            }
            let batch_ids = Tensor::from_slice(chunk, chunk.len(), device)?;
            let real = images.index_select(&batch_ids, 0)?;
            let (d_loss, g_loss, fakes) = state.train_batch(&real)?;
            if !d_loss.is_finite() || !g_loss.is_finite() {
                progress.abandon();
                bail!(
                    "loss is not finite at epoch {epoch}, batch {batch_index} (D {d_loss}, G {g_loss}); \
                     the last good checkpoint is {}",
                    out.join(CHECKPOINT_FILE).display()
                );
            }
            writeln!(
                log,
                "{epoch},{batch_index},{},{d_loss},{g_loss}",
                state.batches_done
            )?;
            if config.sample_interval > 0 && state.batches_done % config.sample_interval == 0 {
                save_sample_grid(
                    &fakes,
                    &out.join(format!("samples/{}.png", state.batches_done)),
                )?;
            }
            state.batches_done += 1;
            (last_d, last_g) = (d_loss, g_loss);
            progress.set_message(format!(
                "epoch {}/{} D {d_loss:.3} G {g_loss:.3}",
                epoch + 1,
                config.epochs
            ));
            progress.inc(1);
        }
        state.epoch = epoch + 1;
        let seconds = epoch_start.elapsed().as_secs_f64();
        epoch_seconds.push(seconds);
        log.flush()?;
        let checkpoint = state.to_checkpoint(&config_json)?;
        crate::fsutil::write_atomically(&out.join(CHECKPOINT_FILE), &checkpoint)
            .context("writing the checkpoint")?;
        if config.save_every > 0 && state.epoch % config.save_every == 0 {
            let dir = out.join("generators");
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!("epoch-{}.safetensors", state.epoch));
            let exported = state.exported_generator()?;
            let generator = exported.as_ref().unwrap_or(&state.generator);
            save_generator(
                generator,
                &path,
                generator_metadata(config, &data, state.epoch),
            )?;
        }
        say(
            &progress,
            format!(
                "epoch {}/{}: D {last_d:.4} G {last_g:.4} ({seconds:.1} s)",
                epoch + 1,
                config.epochs
            ),
        );
    }
    progress.finish_and_clear();

    let total = run_start.elapsed().as_secs_f64();
    let exported = state.exported_generator()?;
    save_generator(
        exported.as_ref().unwrap_or(&state.generator),
        &out.join(GENERATOR_FILE),
        generator_metadata(config, &data, state.epoch),
    )?;

    let summary = TrainSummary {
        data_dir: config.data_dir.display().to_string(),
        images: data.len(),
        epochs: config.epochs,
        batch_size: config.batch_size,
        seed: config.seed,
        device: device_name(device),
        recipe: config.recipe.name().to_string(),
        mean_epoch_seconds: epoch_seconds.iter().sum::<f64>() / epoch_seconds.len().max(1) as f64,
        epoch_seconds,
        images_per_second: (data.len() * config.epochs) as f64 / total.max(1e-9),
        final_d_loss: last_d,
        final_g_loss: last_g,
    };
    let json = serde_json::to_vec_pretty(&summary)?;
    crate::fsutil::write_atomically(&out.join(SUMMARY_FILE), &json)?;
    Ok(summary)
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
    ])
}

/// The device in words, with the CPU thread count.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => format!(
            "cpu ({} GEMM thread{} of {} cores)",
            crate::cpu::gemm_threads(),
            if crate::cpu::gemm_threads() == 1 {
                ""
            } else {
                "s"
            },
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        other => format!("{other:?}"),
    }
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

/// The reference's sample grid: the batch's first 25 fakes, 5 per row, min-max normalised.
fn save_sample_grid(fakes: &Tensor, path: &Path) -> anyhow::Result<()> {
    let n = fakes.dim(0)?.min(25);
    let values = fakes.narrow(0, 0, n)?.flatten_all()?.to_vec1::<f32>()?;
    let gray = picture::normalize_min_max(&values);
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
    let mut generator = Generator::new(&mut rng, device)?;
    generator
        .load_state(&tensors, prefix)
        .with_context(|| format!("{} does not hold the reference generator", path.display()))?;
    Ok(generator)
}

//! Before the first batch: the training data, the checks a run makes of its settings, and the
//! restore of a resumed run's checkpoint.

use anyhow::{bail, Context};

use super::divergence::implausible_parameter;
use super::{TrainConfig, CHECKPOINT_FILE};
use crate::engine::Engine;
use crate::model::conv::ConvGanSpec;
use crate::model::{Architecture, CONDITIONAL_DROPOUT};
use crate::state::{Checkpoint, EpochPosition, TrainState};
use mcugan_model_tools::data::{self, Dataset, Split};

/// The training split of `config`'s data (the first `--limit` images), checked against the
/// run's settings.
pub(super) fn load_training_data(config: &TrainConfig) -> anyhow::Result<Dataset> {
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
    if let Architecture::Conv(spec) = &config.architecture {
        check_convolutional(config, spec)?;
        let side = spec.generator.image_side();
        if data.rows != side || data.cols != side {
            data = data.resized(side);
        }
    }
    if let Some(classes) = config.classes {
        check_conditional(config, &data, classes)?;
    }
    Ok(data)
}

/// Checks what a convolutional GAN needs of the run: candle's engine, no classes. Any recipe
/// applies (its dropout excepted: the discriminator has the spec's own `Dropout2d`).
fn check_convolutional(config: &TrainConfig, spec: &ConvGanSpec) -> anyhow::Result<()> {
    spec.check()?;
    if config.engine != Engine::Candle {
        bail!(
            "the convolutional GANs train on candle's engine only: pass --engine candle (or \
             leave --engine out)"
        );
    }
    if config.classes.is_some() {
        bail!("the convolutional GANs are unconditional: leave --conditional out");
    }
    Ok(())
}

/// Restores the run's checkpoint into `state` (after checking that it is this run's, on the
/// same data, with epochs left to train); returns where in its epoch the run stopped.
pub(super) fn resume(
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
    if settings.architecture != config.architecture {
        bail!(
            "the checkpoint holds {}, not {}: resume with the run's own --arch",
            settings.architecture.describe(),
            config.architecture.describe()
        );
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

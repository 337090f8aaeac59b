//! `mcugan classifier`: the digit classifier whose feature space `eval` measures in.

use std::path::PathBuf;

use anyhow::{Context, Result};
use mcugan::overwrite::{refuse_existing, FileKind, OutputCheck};

use super::Global;

/// The command line of `mcugan classifier`.
#[derive(clap::Args)]
pub struct Args {
    /// Directory of MNIST-style IDX files (train and test splits).
    #[arg(long, default_value = "data/mnist-digits")]
    pub data: PathBuf,
    /// Where to write the classifier (to replace the shipped one, give its path and
    /// --force).
    #[arg(long, default_value = "runs/classifier/classifier.safetensors")]
    pub out: PathBuf,
    /// Passes over the training split.
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    /// Seed of initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `mcugan classifier`.
pub fn run(args: Args, global: &Global) -> Result<()> {
    let force = global.force;
    let Args {
        data,
        out,
        epochs,
        seed,
        quiet,
    } = args;
    refuse_existing(&out, "--out", "a classifier", force)?;
    OutputCheck::new(force)
        .input(&data, "--data")
        .output(&out, "--out", FileKind::Safetensors)?;
    let train_split =
        mcugan_model_tools::data::load_split(&data, mcugan_model_tools::data::Split::Train)?;
    let test_split =
        mcugan_model_tools::data::load_split(&data, mcugan_model_tools::data::Split::Test)?;
    let settings = mcugan_train::classifier::ClassifierTraining {
        epochs,
        seed,
        progress: !quiet,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let mut classifier = mcugan_train::classifier::Classifier::train(&train_split, &settings)?;
    let accuracy = classifier.accuracy(&test_split)?;
    classifier
        .meta
        .insert("test_accuracy".into(), format!("{accuracy:.4}"));
    classifier
        .meta
        .insert("test_images".into(), test_split.len().to_string());
    classifier
        .meta
        .insert("data".into(), data.display().to_string());
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    classifier.save(&out)?;
    println!(
        "classifier trained on {} images in {:.0} s: test accuracy {:.2} % on {} images; written to {}",
        train_split.len(),
        started.elapsed().as_secs_f64(),
        accuracy * 100.0,
        test_split.len(),
        out.display()
    );
    Ok(())
}

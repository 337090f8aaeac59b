//! Trains a convolutional GAN of any spec, for architecture research before a spec gets an
//! `--arch` name: `cargo run --release -p mcugan-train --example train_spec -- SPEC.json DATA OUT
//! EPOCHS [SEED] [RECIPE] [LR]` (SPEC.json: a `ConvGanSpec`, as a checkpoint's run settings
//! store it; RECIPE: `reference`, the default, or `small-data`; LR: Adam's learning rate, 2e-4
//! by default).

use std::path::PathBuf;

use anyhow::Context;
use mcugan_train::engine::Engine;
use mcugan_train::model::conv::ConvGanSpec;
use mcugan_train::model::Architecture;
use mcugan_train::run::{train, TrainConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec, data, out, epochs, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: train_spec SPEC.json DATA OUT EPOCHS [SEED] [RECIPE] [LR]");
    };
    let spec: ConvGanSpec = serde_json::from_str(
        &std::fs::read_to_string(spec).with_context(|| format!("reading {spec}"))?,
    )?;
    let threads = mcugan_train::cpu::training_threads(None);
    mcugan_train::cpu::set_conv_threads(threads);
    let mut config =
        TrainConfig::reference(PathBuf::from(data), PathBuf::from(out), epochs.parse()?);
    config.architecture = Architecture::Conv(spec);
    config.engine = Engine::Candle;
    config.seed = rest.first().map_or(Ok(0), |s| s.parse())?;
    if let Some(name) = rest.get(1) {
        config.recipe = mcugan_train::recipe::Recipe::by_name(name)
            .with_context(|| format!("no recipe called {name}"))?;
    }
    if let Some(lr) = rest.get(2) {
        config.adam.lr = lr.parse()?;
    }
    let summary = train(&config)?;
    println!(
        "{} epochs, {:.2} s/epoch, D {:.3} G {:.3}",
        summary.epochs, summary.mean_epoch_seconds, summary.final_d_loss, summary.final_g_loss
    );
    Ok(())
}

//! Dumps one training step for a side-by-side check against PyTorch
//! (`bench/pytorch_reference.py check-step`): the initial weights, a real batch, the latent
//! batch, the losses, and every weight after the step.
//!
//! `cargo run --release -p mcugan-train --example dump_step -- DATA_DIR OUT.safetensors [STEPS] [candle|fused]`
//! (the trainer that takes the steps: candle's autograd, the default, or the fused CPU step).

use std::collections::HashMap;

use anyhow::Context;
use candle_core::{Device, Tensor};
use mcugan_model_tools::data::{load_split, Split};
use mcugan_train::adam::AdamConfig;
use mcugan_train::engine::fused::FusedTrainer;
use mcugan_train::model::sample_z;
use mcugan_train::state::{dataset_tensor, TrainState};

fn snapshot(
    state: &TrainState,
    prefix: &str,
    out: &mut Vec<(String, Tensor)>,
) -> anyhow::Result<()> {
    for (name, t) in state.generator.state()? {
        out.push((format!("{prefix}generator.{name}"), t.copy()?));
    }
    for (name, var) in state.discriminator.vars() {
        out.push((
            format!("{prefix}discriminator.{name}"),
            var.as_tensor().copy()?,
        ));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (data_dir, out) = match args.as_slice() {
        [d, o, ..] => (d, o),
        _ => anyhow::bail!("usage: dump_step DATA_DIR OUT.safetensors [STEPS] [candle|fused]"),
    };
    let fused_engine = match args.get(3).map(String::as_str) {
        None | Some("candle") => false,
        Some("fused") => true,
        Some(other) => anyhow::bail!("unknown engine {other:?} (candle or fused)"),
    };
    let steps: usize = args.get(2).map_or(Ok(1), |s| s.parse()).context("STEPS")?;
    let device = Device::Cpu;
    let data = load_split(std::path::Path::new(data_dir), Split::Train)?;
    let images = dataset_tensor(&data, 28, &device)?;
    let mut state = TrainState::new(7, AdamConfig::REFERENCE, &device)?;
    let mut tensors = Vec::new();
    snapshot(&state, "init.", &mut tensors)?;
    let mut fused = if fused_engine {
        Some(FusedTrainer::new(&state, 2)?)
    } else {
        None
    };
    let mut losses = Vec::new();
    for step in 0..steps {
        let real = images.narrow(0, step * 64, 64)?;
        let z = sample_z(&mut state.rng.clone(), 64, &device)?;
        tensors.push((format!("real.{step}"), real.clone()));
        tensors.push((format!("z.{step}"), z.clone()));
        match &mut fused {
            Some(fused) => {
                let real = real.flatten_all()?.to_vec1::<f32>()?;
                let z = z.flatten_all()?.to_vec1::<f32>()?;
                let step_losses = fused.train_batch(&mut state.rng, &real, &z)?;
                losses.extend([step_losses.d_loss, step_losses.g_loss]);
            }
            None => {
                let step_losses = state.train_batch(&real, &z, None)?;
                losses.extend([
                    step_losses.d_loss.to_scalar::<f32>()?,
                    step_losses.g_loss.to_scalar::<f32>()?,
                ]);
            }
        }
    }
    if let Some(fused) = &fused {
        fused.store_into(&mut state)?;
    }
    tensors.push(("losses".into(), Tensor::new(losses.as_slice(), &device)?));
    snapshot(&state, "after.", &mut tensors)?;
    let bytes = safetensors::serialize(tensors, None::<HashMap<String, String>>)?;
    std::fs::write(out, bytes)?;
    println!("losses (D, G per step): {losses:?}");
    Ok(())
}

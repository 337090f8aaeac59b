//! How a run notices that it diverged (a loss or a parameter out of bounds) and says where it
//! can go on from.

use std::path::Path;

use anyhow::bail;

use crate::state::TrainState;

/// The largest loss a sound run reports: the reference's `BCELoss` clamps the log at −100, so
/// it can never report more than 100; a larger loss (or one that is not finite) means the run
/// diverged.
pub const MAX_PLAUSIBLE_LOSS: f32 = 100.0;

/// The largest parameter magnitude a sound run reaches (the reference's weights stay below 10).
pub const MAX_PLAUSIBLE_WEIGHT: f32 = 1.0e6;

/// Where a diverged run can go on from: its last checkpoint, if one was written.
pub(super) fn last_good(checkpoint: &Path) -> String {
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
pub(super) fn implausible_parameter(state: &TrainState) -> anyhow::Result<Option<(String, f32)>> {
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
pub(super) fn check_parameters(state: &TrainState, checkpoint: &Path) -> anyhow::Result<()> {
    if let Some((name, bad)) = implausible_parameter(state)? {
        bail!(
            "the parameter {name} reached {bad}: training diverged and was stopped; {}",
            last_good(checkpoint)
        );
    }
    Ok(())
}

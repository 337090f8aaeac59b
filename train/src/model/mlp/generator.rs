//! The generator of `gan.py` (and `cgan.py`'s conditional one).

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::model::init::{embed, label_embedding, take};
use crate::model::layers::{leaky_relu, BatchNorm1d, Linear};
use crate::model::*;

/// The generator: `100 → 128 → 256 → 512 → 1024 → 784`, BatchNorm on the three middle blocks,
/// LeakyReLU(0.2) after every hidden layer, Tanh at the end.
///
/// The class-conditional generator of `cgan.py` ([`MlpGenerator::conditional`]) is the same
/// network on `[label embedding, z]`: its first layer takes `classes` more inputs.
pub struct MlpGenerator {
    /// The five linear layers.
    pub linears: [Linear; 5],
    /// BatchNorm after linears 1, 2 and 3.
    pub norms: [BatchNorm1d; 3],
    /// `cgan.py`'s `label_emb`, `[classes, classes]`: `None` for the unconditional generator.
    pub label_embedding: Option<Var>,
}

impl MlpGenerator {
    /// A freshly initialised generator; layers are initialised in the reference's order.
    pub fn new(rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        Self::build(None, rng, device)
    }

    /// `cgan.py`'s generator for `classes` classes: the label embedding is initialised first,
    /// then the layers, as in the reference.
    pub fn conditional(classes: usize, rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        Self::build(Some(classes), rng, device)
    }

    fn build(classes: Option<usize>, rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        let label_embedding = match classes {
            Some(classes) => Some(label_embedding(classes, rng, device)?),
            None => None,
        };
        let w = GENERATOR_WIDTHS;
        let linears = [
            Linear::new(w[0] + classes.unwrap_or(0), w[1], rng, device)?,
            Linear::new(w[1], w[2], rng, device)?,
            Linear::new(w[2], w[3], rng, device)?,
            Linear::new(w[3], w[4], rng, device)?,
            Linear::new(w[4], w[5], rng, device)?,
        ];
        let norms = [
            BatchNorm1d::new(w[2], device)?,
            BatchNorm1d::new(w[3], device)?,
            BatchNorm1d::new(w[4], device)?,
        ];
        Ok(Self {
            linears,
            norms,
            label_embedding,
        })
    }

    /// Classes of a conditional generator; `None` for the unconditional one.
    pub fn classes(&self) -> Option<usize> {
        self.label_embedding
            .as_ref()
            .map(|table| table.as_tensor().dims()[0])
    }

    /// The first layer's input for latent vectors `z` and, for a conditional generator, class
    /// `labels` (`u32`, one per row): `[label embedding, z]`, as `cgan.py` concatenates them.
    pub fn input(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        match (&self.label_embedding, labels) {
            (None, None) => Ok(z.clone()),
            (Some(table), Some(labels)) => Tensor::cat(&[&embed(table, labels)?, z], 1),
            (Some(_), None) => candle_core::bail!("the conditional generator needs class labels"),
            (None, Some(_)) => candle_core::bail!("the unconditional generator takes no labels"),
        }
    }

    /// Training-mode forward pass (batch statistics; running statistics updated) of the
    /// first layer's input `z` (see [`MlpGenerator::input`]).
    pub fn forward_train(&mut self, z: &Tensor) -> Result<Tensor> {
        let mut x = leaky_relu(&self.linears[0].forward(z)?)?;
        for i in 0..3 {
            x = self.linears[i + 1].forward(&x)?;
            x = leaky_relu(&self.norms[i].forward_train(&x)?)?;
        }
        self.linears[4].forward(&x)?.tanh()
    }

    /// Evaluation-mode forward pass (running statistics).
    pub fn forward_eval(&self, z: &Tensor) -> Result<Tensor> {
        let mut x = leaky_relu(&self.linears[0].forward(z)?)?;
        for i in 0..3 {
            x = self.linears[i + 1].forward(&x)?;
            x = leaky_relu(&self.norms[i].forward_eval(&x)?)?;
        }
        self.linears[4].forward(&x)?.tanh()
    }

    /// The trainable variables with their PyTorch names.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut vars = Vec::new();
        if let Some(table) = &self.label_embedding {
            vars.push((GENERATOR_EMBEDDING.to_string(), table.clone()));
        }
        for (linear, index) in self.linears.iter().zip(GENERATOR_LINEAR_INDICES) {
            vars.push((format!("model.{index}.weight"), linear.weight.clone()));
            vars.push((format!("model.{index}.bias"), linear.bias.clone()));
        }
        for (norm, index) in self.norms.iter().zip(GENERATOR_NORM_INDICES) {
            vars.push((format!("model.{index}.weight"), norm.weight.clone()));
            vars.push((format!("model.{index}.bias"), norm.bias.clone()));
        }
        vars
    }

    /// Every tensor of the state, PyTorch names, as `state_dict()` would list them.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut state: Vec<(String, Tensor)> = self
            .vars()
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().clone()))
            .collect();
        for (norm, index) in self.norms.iter().zip(GENERATOR_NORM_INDICES) {
            state.push((
                format!("model.{index}.running_mean"),
                norm.running_mean.clone(),
            ));
            state.push((
                format!("model.{index}.running_var"),
                norm.running_var.clone(),
            ));
            let tracked = Tensor::new(&[norm.num_batches_tracked], norm.running_mean.device())?;
            state.push((format!("model.{index}.num_batches_tracked"), tracked));
        }
        Ok(state)
    }

    /// Restores the state saved by [`MlpGenerator::state`] (extra tensors are ignored; missing or
    /// misshapen ones are errors).
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        for (name, var) in self.vars() {
            var.set(&take(tensors, prefix, &name, var.dims())?.to_device(var.device())?)?;
        }
        for (norm, index) in self.norms.iter_mut().zip(GENERATOR_NORM_INDICES) {
            let dims = norm.running_mean.dims().to_vec();
            let device = norm.running_mean.device().clone();
            norm.running_mean = take(
                tensors,
                prefix,
                &format!("model.{index}.running_mean"),
                &dims,
            )?
            .to_device(&device)?;
            norm.running_var = take(
                tensors,
                prefix,
                &format!("model.{index}.running_var"),
                &dims,
            )?
            .to_device(&device)?;
            let tracked = format!("{prefix}model.{index}.num_batches_tracked");
            norm.num_batches_tracked = match tensors.get(&tracked) {
                Some(t) => t
                    .flatten_all()?
                    .to_dtype(DType::I64)?
                    .to_vec1::<i64>()?
                    .first()
                    .copied()
                    .unwrap_or(0),
                None => 0,
            };
        }
        Ok(())
    }
}

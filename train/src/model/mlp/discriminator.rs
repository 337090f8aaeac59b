//! The discriminator of `gan.py` (and `cgan.py`'s conditional one).

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::model::init::{label_embedding, take};
use crate::model::layers::{leaky_relu, Linear};
use crate::model::*;

/// The discriminator: `784 → 512 → 256 → 1`, LeakyReLU(0.2) between, Sigmoid at the end.
/// [`MlpDiscriminator::logits`] stops before the sigmoid; the loss folds it in.
///
/// [`MlpDiscriminator::conditional`] is `cgan.py`'s: `[image, label embedding] → 512 → 512 →
/// 512 → 1`, dropout 0.4 on the second and third hidden layers, no sigmoid (its loss is MSE).
pub struct MlpDiscriminator {
    /// The linear layers, first to last.
    pub linears: Vec<Linear>,
    /// `cgan.py`'s `label_embedding`, `[classes, classes]`: `None` when unconditional.
    pub label_embedding: Option<Var>,
}

impl MlpDiscriminator {
    /// A freshly initialised discriminator.
    pub fn new(rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        let w = DISCRIMINATOR_WIDTHS;
        Ok(Self {
            linears: vec![
                Linear::new(w[0], w[1], rng, device)?,
                Linear::new(w[1], w[2], rng, device)?,
                Linear::new(w[2], w[3], rng, device)?,
            ],
            label_embedding: None,
        })
    }

    /// `cgan.py`'s discriminator for `classes` classes (embedding initialised first).
    pub fn conditional(classes: usize, rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        let label_embedding = Some(label_embedding(classes, rng, device)?);
        let mut linears = Vec::new();
        let mut inputs = IMAGE_PIXELS + classes;
        for outputs in CONDITIONAL_DISCRIMINATOR_WIDTHS {
            linears.push(Linear::new(inputs, outputs, rng, device)?);
            inputs = outputs;
        }
        Ok(Self {
            linears,
            label_embedding,
        })
    }

    /// The widths of the hidden layers that dropout applies to, by hidden layer (`None`: that
    /// layer has none): `cgan.py`'s second and third, or every hidden layer of `gan.py`'s
    /// (when the recipe asks for dropout). The training step draws one mask per `Some`.
    pub fn dropout_widths(&self) -> Vec<Option<usize>> {
        let conditional = self.label_embedding.is_some();
        self.linears[..self.linears.len() - 1]
            .iter()
            .enumerate()
            .map(|(i, linear)| {
                let width = linear.bias.as_tensor().dims()[0];
                (!conditional || i > 0).then_some(width)
            })
            .collect()
    }

    /// The pre-sigmoid output, `[batch, 1]` (unconditional discriminator).
    pub fn logits(&self, images: &Tensor) -> Result<Tensor> {
        self.forward(images, None, false, &[])
    }

    /// [`MlpDiscriminator::logits`] with the weights frozen: for the generator's step, where only
    /// the gradient with respect to the images is needed.
    pub fn logits_frozen(&self, images: &Tensor) -> Result<Tensor> {
        self.forward(images, None, true, &[])
    }

    /// The pre-sigmoid output of `images` (with their class `labels` when conditional);
    /// `frozen` cuts the weights out of the gradient graph, `dropout` multiplies hidden
    /// layer `i`'s activations by `dropout[i]` when there is one. (`cgan.py` drops before its
    /// LeakyReLU; a mask of non-negative scales commutes with it, so the result is the same.)
    pub fn forward(
        &self,
        images: &Tensor,
        labels: Option<&Tensor>,
        frozen: bool,
        dropout: &[Option<Tensor>],
    ) -> Result<Tensor> {
        let layer = |i: usize, x: &Tensor| {
            if frozen {
                self.linears[i].forward_frozen(x)
            } else {
                self.linears[i].forward(x)
            }
        };
        let mut x = match (&self.label_embedding, labels) {
            (None, None) => images.clone(),
            (Some(table), Some(labels)) => {
                let table = if frozen {
                    table.as_tensor().detach()
                } else {
                    table.as_tensor().clone()
                };
                Tensor::cat(&[images, &table.index_select(labels, 0)?], 1)?
            }
            (Some(_), None) => {
                candle_core::bail!("the conditional discriminator needs class labels")
            }
            (None, Some(_)) => {
                candle_core::bail!("the unconditional discriminator takes no labels")
            }
        };
        let last = self.linears.len() - 1;
        for i in 0..last {
            x = leaky_relu(&layer(i, &x)?)?;
            if let Some(Some(mask)) = dropout.get(i) {
                x = (x * mask)?;
            }
        }
        layer(last, &x)
    }

    /// The trainable variables with their PyTorch names.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut vars = Vec::new();
        let indices: &[usize] = match &self.label_embedding {
            Some(table) => {
                vars.push((DISCRIMINATOR_EMBEDDING.to_string(), table.clone()));
                &CONDITIONAL_DISCRIMINATOR_LINEAR_INDICES
            }
            None => &DISCRIMINATOR_LINEAR_INDICES,
        };
        for (linear, index) in self.linears.iter().zip(indices) {
            vars.push((format!("model.{index}.weight"), linear.weight.clone()));
            vars.push((format!("model.{index}.bias"), linear.bias.clone()));
        }
        vars
    }

    /// Restores the variables from `tensors` under `prefix`.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        for (name, var) in self.vars() {
            var.set(&take(tensors, prefix, &name, var.dims())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

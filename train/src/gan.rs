//! The reference MLP GAN of PyTorch-GAN's `gan.py`, in candle.
//!
//! Layers are written out rather than taken from candle-nn so that every detail the reference
//! depends on is visible and tested: PyTorch's default initialisation, BatchNorm1d with
//! `eps = 0.8` (the script's quirk) and momentum 0.1 with unbiased running variance, and tensor
//! names that match the PyTorch `state_dict` (`model.0.weight`, …), so a generator trained in
//! PyTorch and saved as safetensors loads here too.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Latent vector length.
pub const LATENT_DIM: usize = 100;
/// Pixels of one 28x28 image.
pub const IMAGE_PIXELS: usize = 784;
/// LeakyReLU's negative slope.
pub const LEAKY_SLOPE: f64 = 0.2;
/// BatchNorm1d's eps as the reference passes it (positionally, as if it were momentum).
pub const BATCH_NORM_EPS: f64 = 0.8;
/// BatchNorm1d's momentum (PyTorch's default).
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;
/// Widths of the generator, latent first.
pub const GENERATOR_WIDTHS: [usize; 6] = [LATENT_DIM, 128, 256, 512, 1024, IMAGE_PIXELS];
/// Widths of the discriminator, image first.
pub const DISCRIMINATOR_WIDTHS: [usize; 4] = [IMAGE_PIXELS, 512, 256, 1];
/// Widths of `cgan.py`'s discriminator after its input (image and label embedding).
pub const CONDITIONAL_DISCRIMINATOR_WIDTHS: [usize; 4] = [512, 512, 512, 1];
/// `cgan.py`'s dropout probability, on the discriminator's second and third hidden layers.
pub const CONDITIONAL_DROPOUT: f32 = 0.4;
/// The PyTorch `nn.Sequential` indices of the discriminator's Linear layers in `cgan.py`.
pub const CONDITIONAL_DISCRIMINATOR_LINEAR_INDICES: [usize; 4] = [0, 2, 5, 8];
/// The generator's label embedding in `cgan.py`'s `state_dict`.
pub const GENERATOR_EMBEDDING: &str = "label_emb.weight";
/// The discriminator's label embedding in `cgan.py`'s `state_dict`.
pub const DISCRIMINATOR_EMBEDDING: &str = "label_embedding.weight";

/// `U(-bound, bound)` samples as a tensor; all randomness comes from the caller's seeded RNG
/// (candle's CPU backend cannot be seeded).
fn uniform(rng: &mut ChaCha8Rng, shape: &[usize], bound: f32, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Tensor::from_vec(values, shape, device)
}

/// `N(0, 1)` samples as a tensor: PyTorch's initialisation of `nn.Embedding`.
fn standard_normal(rng: &mut ChaCha8Rng, shape: &[usize], device: &Device) -> Result<Tensor> {
    use rand_distr::{Distribution, StandardNormal};
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_vec(values, shape, device)
}

/// An `Embedding(classes, classes)` table, `[classes, classes]`, initialised as PyTorch does.
fn label_embedding(classes: usize, rng: &mut ChaCha8Rng, device: &Device) -> Result<Var> {
    Var::from_tensor(&standard_normal(rng, &[classes, classes], device)?)
}

/// The rows of `table` for `labels` (`u32`): the label embedding of a batch.
fn embed(table: &Var, labels: &Tensor) -> Result<Tensor> {
    table.as_tensor().index_select(labels, 0)
}

/// A fully connected layer, `y = x Wᵀ + b`, `W` of shape `[out, in]` as in PyTorch.
pub struct Linear {
    /// `[out, in]`.
    pub weight: Var,
    /// `[out]`.
    pub bias: Var,
}

impl Linear {
    /// PyTorch's default initialisation: `kaiming_uniform_(a=√5)` for the weight, which is
    /// `U(±1/√fan_in)`, and `U(±1/√fan_in)` for the bias.
    pub fn new(
        inputs: usize,
        outputs: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (inputs as f32).sqrt();
        Ok(Self {
            weight: Var::from_tensor(&uniform(rng, &[outputs, inputs], bound, device)?)?,
            bias: Var::from_tensor(&uniform(rng, &[outputs], bound, device)?)?,
        })
    }

    /// `x Wᵀ + b` for `x` of shape `[batch, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())
    }

    /// The same, with the weights cut out of the gradient graph: gradients still flow to `x`.
    pub fn forward_frozen(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight.as_tensor().detach().t()?)?
            .broadcast_add(&self.bias.as_tensor().detach())
    }
}

/// BatchNorm1d over `[batch, features]`, with PyTorch's semantics.
pub struct BatchNorm1d {
    /// γ, learned; starts at 1.
    pub weight: Var,
    /// β, learned; starts at 0.
    pub bias: Var,
    /// Running mean, updated in training mode; starts at 0.
    pub running_mean: Tensor,
    /// Running (unbiased) variance, updated in training mode; starts at 1.
    pub running_var: Tensor,
    /// Training-mode batches seen.
    pub num_batches_tracked: i64,
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the newest batch in the running statistics.
    pub momentum: f64,
}

impl BatchNorm1d {
    /// A fresh layer with the reference's eps and momentum.
    pub fn new(features: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            weight: Var::ones(features, DType::F32, device)?,
            bias: Var::zeros(features, DType::F32, device)?,
            running_mean: Tensor::zeros(features, DType::F32, device)?,
            running_var: Tensor::ones(features, DType::F32, device)?,
            num_batches_tracked: 0,
            eps: BATCH_NORM_EPS,
            momentum: BATCH_NORM_MOMENTUM,
        })
    }

    /// Training mode: normalise with the batch's mean and biased variance, and move the running
    /// statistics towards the batch's mean and unbiased variance.
    pub fn forward_train(&mut self, x: &Tensor) -> Result<Tensor> {
        let batch = x.dim(0)?;
        if batch < 2 {
            candle_core::bail!("BatchNorm1d in training mode needs more than one sample");
        }
        let mean = x.mean_keepdim(0)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(0)?;
        let normalized = centered.broadcast_div(&(var.clone() + self.eps)?.sqrt()?)?;

        let m = self.momentum;
        let unbiased = (var.detach().squeeze(0)? * (batch as f64 / (batch as f64 - 1.0)))?;
        self.running_mean = ((&self.running_mean * (1.0 - m))? + (mean.detach().squeeze(0)? * m)?)?;
        self.running_var = ((&self.running_var * (1.0 - m))? + (unbiased * m)?)?;
        self.num_batches_tracked += 1;

        normalized
            .broadcast_mul(self.weight.as_tensor())?
            .broadcast_add(self.bias.as_tensor())
    }

    /// Evaluation mode: normalise with the running statistics.
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let scale = (self.running_var.clone() + self.eps)?.sqrt()?;
        x.broadcast_sub(&self.running_mean)?
            .broadcast_div(&scale)?
            .broadcast_mul(self.weight.as_tensor())?
            .broadcast_add(self.bias.as_tensor())
    }
}

/// `max(x, 0.2 x)`: LeakyReLU for a slope below one.
pub fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    x.maximum(&(x * LEAKY_SLOPE)?)
}

/// The generator: `100 → 128 → 256 → 512 → 1024 → 784`, BatchNorm on the three middle blocks,
/// LeakyReLU(0.2) after every hidden layer, Tanh at the end.
///
/// The class-conditional generator of `cgan.py` ([`Generator::conditional`]) is the same
/// network on `[label embedding, z]`: its first layer takes `classes` more inputs.
pub struct Generator {
    /// The five linear layers.
    pub linears: [Linear; 5],
    /// BatchNorm after linears 1, 2 and 3.
    pub norms: [BatchNorm1d; 3],
    /// `cgan.py`'s `label_emb`, `[classes, classes]`: `None` for the unconditional generator.
    pub label_embedding: Option<Var>,
}

/// The PyTorch `nn.Sequential` indices of the generator's Linear layers in `gan.py`.
pub const GENERATOR_LINEAR_INDICES: [usize; 5] = [0, 2, 5, 8, 11];
/// The PyTorch `nn.Sequential` indices of the generator's BatchNorm layers in `gan.py`.
pub const GENERATOR_NORM_INDICES: [usize; 3] = [3, 6, 9];
/// The PyTorch `nn.Sequential` indices of the discriminator's Linear layers in `gan.py`.
pub const DISCRIMINATOR_LINEAR_INDICES: [usize; 3] = [0, 2, 4];

impl Generator {
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
    /// first layer's input `z` (see [`Generator::input`]).
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

    /// Restores the state saved by [`Generator::state`] (extra tensors are ignored; missing or
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

/// Looks up `prefix + name`, checks its shape, converts it to f32 on `device`'s device.
fn take(
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    name: &str,
    dims: &[usize],
) -> Result<Tensor> {
    let key = format!("{prefix}{name}");
    let tensor = tensors
        .get(&key)
        .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {key}")))?;
    if tensor.dims() != dims {
        candle_core::bail!(
            "tensor {key} has shape {:?}, expected {:?}",
            tensor.dims(),
            dims
        );
    }
    tensor.to_dtype(DType::F32)
}

/// The discriminator: `784 → 512 → 256 → 1`, LeakyReLU(0.2) between, Sigmoid at the end.
/// [`Discriminator::logits`] stops before the sigmoid; the loss folds it in.
///
/// [`Discriminator::conditional`] is `cgan.py`'s: `[image, label embedding] → 512 → 512 →
/// 512 → 1`, dropout 0.4 on the second and third hidden layers, no sigmoid (its loss is MSE).
pub struct Discriminator {
    /// The linear layers, first to last.
    pub linears: Vec<Linear>,
    /// `cgan.py`'s `label_embedding`, `[classes, classes]`: `None` when unconditional.
    pub label_embedding: Option<Var>,
}

impl Discriminator {
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

    /// [`Discriminator::logits`] with the weights frozen: for the generator's step, where only
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

/// The mean squared error against a constant `target`: `cgan.py`'s `MSELoss` on a batch of
/// one kind (the generator's step: every fake should score 1).
pub fn mse(predictions: &Tensor, target: f64) -> Result<Tensor> {
    (predictions - target)?.sqr()?.mean_all()
}

/// The mean squared error against per-sample `targets` (same shape): the discriminator's
/// `(MSE(real, 1) + MSE(fake, 0)) / 2` over one batch of both halves.
pub fn mse_targets(predictions: &Tensor, targets: &Tensor) -> Result<Tensor> {
    (predictions - targets)?.sqr()?.mean_all()
}

/// Binary cross-entropy of `sigmoid(logits)` against a constant target (1 real, 0 fake),
/// averaged over the batch — PyTorch's `BCELoss()(Sigmoid(x), y)`, computed in the stable
/// form `softplus(x) − y·x` (the same value and gradient without the `log(0)` clamp).
pub fn bce_with_logits(logits: &Tensor, target: f64) -> Result<Tensor> {
    // softplus(x) = max(x, 0) + log(1 + exp(-|x|))
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    (softplus - (logits * target)?)?.mean_all()
}

/// Binary cross-entropy of `sigmoid(logits)` against per-sample `targets` (same shape),
/// averaged: the discriminator's loss on real and fake images in one batch.
pub fn bce_with_logit_targets(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    (softplus - (logits * targets)?)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parameter_counts_match_the_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let g = Generator::new(&mut rng, &Device::Cpu).unwrap();
        let d = Discriminator::new(&mut rng, &Device::Cpu).unwrap();
        let count = |vars: Vec<(String, Var)>| -> usize {
            vars.iter().map(|(_, v)| v.as_tensor().elem_count()).sum()
        };
        // 1,506,448 Linear weights and biases + 2 * (256 + 512 + 1024) BatchNorm affine
        // parameters = 1,510,032, the reference's count.
        assert_eq!(count(g.vars()), 1_510_032);
        assert_eq!(count(d.vars()), 784 * 512 + 512 + 512 * 256 + 256 + 256 + 1);
    }

    #[test]
    fn default_init_ranges_match_pytorch() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let g = Generator::new(&mut rng, &Device::Cpu).unwrap();
        for (linear, fan_in) in g.linears.iter().zip(GENERATOR_WIDTHS) {
            let bound = 1.0 / (fan_in as f32).sqrt();
            for t in [linear.weight.as_tensor(), linear.bias.as_tensor()] {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(
                    max <= bound && max > 0.95 * bound,
                    "fan_in {fan_in}: max {max}"
                );
            }
        }
        for norm in &g.norms {
            let w = norm.weight.as_tensor().to_vec1::<f32>().unwrap();
            let b = norm.bias.as_tensor().to_vec1::<f32>().unwrap();
            assert!(w.iter().all(|&x| x == 1.0) && b.iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn batch_norm_training_and_running_statistics() {
        let device = Device::Cpu;
        let mut bn = BatchNorm1d::new(2, &device).unwrap();
        let x = Tensor::new(&[[1f32, 10.], [3., 10.], [5., 13.]], &device).unwrap();
        let y = bn.forward_train(&x).unwrap().to_vec2::<f32>().unwrap();
        // Column 0: mean 3, biased var 8/3; eps 0.8.
        let s0 = (8f32 / 3.0 + 0.8).sqrt();
        let expected0 = [-2.0 / s0, 0.0, 2.0 / s0];
        for (row, e) in y.iter().zip(expected0) {
            assert!((row[0] - e).abs() < 1e-6);
        }
        // Running stats: 0.9 * init + 0.1 * batch, with the unbiased variance (4 for column 0).
        let rm = bn.running_mean.to_vec1::<f32>().unwrap();
        let rv = bn.running_var.to_vec1::<f32>().unwrap();
        assert!((rm[0] - 0.3).abs() < 1e-6 && (rm[1] - 1.1).abs() < 1e-6);
        assert!((rv[0] - (0.9 + 0.4)).abs() < 1e-6 && (rv[1] - (0.9 + 0.3)).abs() < 1e-6);
        assert_eq!(bn.num_batches_tracked, 1);
        // Eval mode uses the running statistics.
        let e = bn.forward_eval(&x).unwrap().to_vec2::<f32>().unwrap();
        assert!((e[0][0] - (1.0 - 0.3) / (1.3f32 + 0.8).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn bce_matches_the_definition() {
        let device = Device::Cpu;
        let logits = Tensor::new(&[[0.3f32], [-2.0], [5.0]], &device).unwrap();
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        for target in [0.0, 1.0] {
            let expected: f64 = [0.3, -2.0, 5.0]
                .iter()
                .map(|&x| {
                    let p = sigmoid(x);
                    -(target * p.ln() + (1.0 - target) * (1.0 - p).ln())
                })
                .sum::<f64>()
                / 3.0;
            let got = bce_with_logits(&logits, target)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                (f64::from(got) - expected).abs() < 1e-6,
                "{got} vs {expected}"
            );
        }
    }

    #[test]
    fn state_round_trips_with_pytorch_names() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let device = Device::Cpu;
        let mut g = Generator::new(&mut rng, &device).unwrap();
        let z = Tensor::randn(0f32, 1., (4, LATENT_DIM), &device).unwrap();
        g.forward_train(&z).unwrap();
        let state: HashMap<String, Tensor> = g.state().unwrap().into_iter().collect();
        assert!(state.contains_key("model.11.weight"));
        assert!(state.contains_key("model.9.running_var"));
        let mut h = Generator::new(&mut rng, &device).unwrap();
        h.load_state(&state, "").unwrap();
        let a = g.forward_eval(&z).unwrap().to_vec2::<f32>().unwrap();
        let b = h.forward_eval(&z).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
        assert_eq!(h.norms[0].num_batches_tracked, 1);
    }
}

//! The layers the reference networks are built of: Linear, BatchNorm1d (PyTorch's semantics),
//! LeakyReLU.

use candle_core::{DType, Device, Result, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::init::uniform;
use super::{BATCH_NORM_EPS, BATCH_NORM_MOMENTUM, LEAKY_SLOPE};

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

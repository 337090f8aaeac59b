//! The layers of the convolutional networks: a convolution (plain, strided, or after a nearest
//! upsampling) with PyTorch's initialisation, BatchNorm2d with PyTorch's semantics, and
//! `Dropout2d`'s channel masks.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor, Var};
use mcugan_float_model::conv::Conv2d as Geometry;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::norm_op::{BatchStatistics, NormTrain};
use super::phased::{self, PhasedGeometry};
use crate::model::init::uniform;
use crate::model::BATCH_NORM_MOMENTUM;

/// `N(mean, std)` samples as a tensor: `weights_init_normal` of the DCGAN scripts.
pub(crate) fn normal(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    mean: f32,
    std: f32,
    device: &Device,
) -> Result<Tensor> {
    let normal = Normal::new(mean, std).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| normal.sample(rng)).collect();
    Tensor::from_vec(values, shape, device)
}

/// A 2-D convolution `y = conv(x, W) + b` over `[batch, in, rows, columns]`, `W` of shape
/// `[out, in, kernel rows, kernel columns]` as in PyTorch, with an optional nearest upsampling
/// of the input before it (PyTorch's `Upsample` + `Conv2d`).
///
/// On the CPU it runs in the phased form the chip uses ([`phased::conv2d`]); elsewhere as
/// candle's `upsample_nearest2d` and `conv2d`.
pub struct Conv2d {
    /// `[out, in, kh, kw]`.
    pub weight: Var,
    /// `[out]`.
    pub bias: Var,
    phased: Arc<PhasedGeometry>,
}

impl Conv2d {
    /// PyTorch's default initialisation (`U(±1/√fan_in)` for weight and bias, fan_in = in ·
    /// kh · kw), for the convolution `geometry` describes (its input and output sizes are
    /// those of one image).
    pub fn new(geometry: Geometry, rng: &mut ChaCha8Rng, device: &Device) -> anyhow::Result<Self> {
        let bound = 1.0 / (geometry.row_len() as f32).sqrt();
        let [kh, kw] = geometry.kernel;
        let shape = if geometry.transposed {
            [geometry.in_channels, geometry.out_channels, kh, kw]
        } else {
            [geometry.out_channels, geometry.in_channels, kh, kw]
        };
        let weight = Var::from_tensor(&uniform(rng, &shape, bound, device)?)?;
        let bias = Var::from_tensor(&uniform(rng, &[geometry.out_channels], bound, device)?)?;
        Ok(Self {
            weight,
            bias,
            phased: Arc::new(PhasedGeometry::new(geometry)?),
        })
    }

    /// The convolution's geometry for one image.
    pub fn geometry(&self) -> &Geometry {
        self.phased.geometry()
    }

    /// The convolution of `x` (`[batch, in, rows, columns]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, self.weight.as_tensor(), self.bias.as_tensor())
    }

    /// The same, with the weights cut out of the gradient graph: gradients still flow to `x`.
    pub fn forward_frozen(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(
            x,
            &self.weight.as_tensor().detach(),
            &self.bias.as_tensor().detach(),
        )
    }

    /// The weight as `[out, in, kernel rows, kernel columns]`, whatever the kind (a transposed
    /// convolution's is stored `[in, out, ..]`, as PyTorch's `ConvTranspose2d` stores it).
    pub fn weight_out_in(&self) -> Result<Tensor> {
        self.out_in(self.weight.as_tensor())
    }

    /// `weight` (this layer's, perhaps detached) as `[out, in, ..]`.
    fn out_in(&self, weight: &Tensor) -> Result<Tensor> {
        if self.geometry().transposed {
            weight.transpose(0, 1)?.contiguous()
        } else {
            Ok(weight.clone())
        }
    }

    fn forward_with(&self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let g = self.geometry();
        let y = if x.device().is_cpu() {
            phased::conv2d(x, &self.out_in(weight)?, &self.phased)?
        } else if g.transposed {
            x.conv_transpose2d(weight, g.padding[0], 0, g.stride[0], 1)?
        } else {
            let x = match g.upsample {
                0 | 1 => x.clone(),
                u => x.upsample_nearest2d(g.input[0] * u, g.input[1] * u)?,
            };
            x.conv2d(weight, g.padding[0], g.stride[0], 1, 1)?
        };
        if y.device().is_cpu() {
            return y.apply_op2(bias, ChannelBias);
        }
        y.broadcast_add(&bias.reshape((1, g.out_channels, 1, 1))?)
    }
}

/// `y + bias` per channel of `[batch, channels, rows, columns]` on the CPU, whose backward pass
/// sums the gradient per channel in one contiguous sweep (candle's general reduction over the
/// batch and both spatial axes at once is many times slower).
struct ChannelBias;

impl candle_core::CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "channel-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (y, bias) = (f32_values(s1, l1)?, f32_values(s2, l2)?);
        let (_, channels, rows, cols) = l1.shape().dims4()?;
        if bias.len() != channels {
            candle_core::bail!("a bias of {} for {channels} channels", bias.len());
        }
        let plane = rows * cols;
        let mut out = y.to_vec();
        for (i, values) in out.chunks_mut(plane.max(1)).enumerate() {
            let b = bias[i % channels];
            values.iter_mut().for_each(|v| *v += b);
        }
        Ok((candle_core::CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        bias: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, channels, rows, cols) = grad.dims4()?;
        let values = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut sums = vec![0f32; channels];
        for (i, plane) in values.chunks(rows * cols).enumerate() {
            sums[i % channels] += plane.iter().sum::<f32>();
        }
        let grad_bias = Tensor::from_vec(sums, channels, bias.device())?;
        Ok((Some(grad.clone()), Some(grad_bias)))
    }
}

/// The contiguous f32 values of a CPU tensor.
fn f32_values<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(all) = storage else {
        candle_core::bail!("the channel bias takes f32 tensors");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("the channel bias takes contiguous tensors");
    };
    Ok(&all[start..end])
}

/// BatchNorm2d over `[batch, channels, rows, columns]`, with PyTorch's semantics: statistics
/// per channel over the batch and both spatial axes.
pub struct BatchNorm2d {
    /// γ, learned.
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

impl BatchNorm2d {
    /// A layer of `channels` with `eps`, γ drawn from `N(1, 0.02)` as `weights_init_normal`
    /// does, β 0.
    pub fn new(channels: usize, eps: f64, rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        Ok(Self {
            weight: Var::from_tensor(&normal(rng, &[channels], 1.0, 0.02, device)?)?,
            bias: Var::zeros(channels, DType::F32, device)?,
            running_mean: Tensor::zeros(channels, DType::F32, device)?,
            running_var: Tensor::ones(channels, DType::F32, device)?,
            num_batches_tracked: 0,
            eps,
            momentum: BATCH_NORM_MOMENTUM,
        })
    }

    fn channel_shape(&self, x: &Tensor) -> Result<(usize, usize)> {
        let (batch, channels, rows, cols) = x.dims4()?;
        if channels != self.running_mean.dim(0)? {
            candle_core::bail!(
                "BatchNorm2d of {} channels given {channels}",
                self.running_mean.dim(0)?
            );
        }
        Ok((channels, batch * rows * cols))
    }

    /// Training mode: normalise with the batch's per-channel mean and biased variance, and move
    /// the running statistics towards the mean and unbiased variance; then LeakyReLU with
    /// `slope`, if given. `frozen`: γ and β out of the gradient graph (gradients still flow to
    /// `x`). On the CPU one fused op ([`super::norm_op`]), elsewhere candle's tensor ops.
    pub fn forward_train(
        &mut self,
        x: &Tensor,
        frozen: bool,
        slope: Option<f32>,
    ) -> Result<Tensor> {
        if !x.device().is_cpu() {
            let y = self.forward_train_tensors(x, frozen)?;
            return match slope {
                Some(slope) => y.maximum(&(&y * f64::from(slope))?),
                None => Ok(y),
            };
        }
        let (channels, count) = self.channel_shape(x)?;
        if count < 2 {
            candle_core::bail!(
                "BatchNorm2d in training mode needs more than one value per channel"
            );
        }
        let statistics = Arc::new(std::sync::Mutex::new(BatchStatistics::default()));
        let op = NormTrain {
            eps: self.eps,
            slope,
            statistics: Arc::clone(&statistics),
        };
        let (gamma, beta) = self.affine(frozen);
        let y = x.contiguous()?.apply_op3(&gamma, &beta, op)?;
        let stats = statistics
            .lock()
            .map(|s| s.clone())
            .map_err(|_| candle_core::Error::Msg("BatchNorm2d's statistics were lost".into()))?;
        let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
        let device = x.device();
        self.track(
            &Tensor::from_vec(f32s(&stats.mean), channels, device)?,
            &Tensor::from_vec(f32s(&stats.variance), channels, device)?,
            count,
        )?;
        Ok(y)
    }

    /// γ and β, cut out of the gradient graph when `frozen`.
    fn affine(&self, frozen: bool) -> (Tensor, Tensor) {
        let (gamma, beta) = (self.weight.as_tensor(), self.bias.as_tensor());
        if frozen {
            (gamma.detach(), beta.detach())
        } else {
            (gamma.clone(), beta.clone())
        }
    }

    /// Moves the running statistics by the momentum towards a training batch's per-channel
    /// `mean` and biased `variance` over `count` values (stored unbiased, as PyTorch does).
    fn track(&mut self, mean: &Tensor, variance: &Tensor, count: usize) -> Result<()> {
        let m = self.momentum;
        let unbiased = (variance * (count as f64 / (count as f64 - 1.0)))?;
        self.running_mean = ((&self.running_mean * (1.0 - m))? + (mean * m)?)?;
        self.running_var = ((&self.running_var * (1.0 - m))? + (unbiased * m)?)?;
        self.num_batches_tracked += 1;
        Ok(())
    }

    /// [`BatchNorm2d::forward_train`] without the activation, written with candle's tensor ops:
    /// what runs on a GPU, and the reference the CPU op is tested against.
    pub fn forward_train_tensors(&mut self, x: &Tensor, frozen: bool) -> Result<Tensor> {
        let (channels, count) = self.channel_shape(x)?;
        if count < 2 {
            candle_core::bail!(
                "BatchNorm2d in training mode needs more than one value per channel"
            );
        }
        // Channels first, `[channels, batch, rows · columns]`: the statistics and, in the
        // backward pass, the gradients of the per-channel tensors are then sums over the
        // trailing axes, which candle reduces in contiguous runs.
        let (batch, _, rows, cols) = x.dims4()?;
        let xt = x
            .reshape((batch, channels, rows * cols))?
            .transpose(0, 1)?
            .contiguous()?;
        let mean = xt.mean_keepdim(2)?.mean_keepdim(1)?;
        let centered = xt.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(2)?.mean_keepdim(1)?;
        let normalized = centered.broadcast_div(&(var.clone() + self.eps)?.sqrt()?)?;

        self.track(
            &mean.detach().flatten_all()?,
            &var.detach().flatten_all()?,
            count,
        )?;

        let (gamma, beta) = self.affine(frozen);
        normalized
            .broadcast_mul(&gamma.reshape((channels, 1, 1))?)?
            .broadcast_add(&beta.reshape((channels, 1, 1))?)?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((batch, channels, rows, cols))
    }

    /// Evaluation mode: normalise with the running statistics.
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let (channels, _) = self.channel_shape(x)?;
        let per_channel = |t: &Tensor| t.reshape((1, channels, 1, 1));
        let scale = (self.running_var.clone() + self.eps)?.sqrt()?;
        x.broadcast_sub(&per_channel(&self.running_mean)?)?
            .broadcast_div(&per_channel(&scale)?)?
            .broadcast_mul(&per_channel(self.weight.as_tensor())?)?
            .broadcast_add(&per_channel(self.bias.as_tensor())?)
    }
}

/// `Dropout2d(p)`'s factors for a `[batch, channels, …]` tensor, as `[batch, channels, 1, 1]`:
/// each channel of each image kept with probability `1 − p` and scaled by `1/(1 − p)`, or
/// zeroed; drawn from `rng` image by image, channel by channel.
pub fn channel_dropout_mask(
    batch: usize,
    channels: usize,
    p: f32,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Tensor> {
    let keep = 1.0 / (1.0 - p);
    let values: Vec<f32> = (0..batch * channels)
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect();
    Tensor::from_vec(values, (batch, channels, 1, 1), device)
}

impl BatchNorm2d {
    /// The running statistics under `name.` (`running_mean`, `running_var`,
    /// `num_batches_tracked`), as PyTorch's `state_dict()` lists them.
    pub fn push_statistics(&self, name: &str, state: &mut Vec<(String, Tensor)>) -> Result<()> {
        state.push((format!("{name}.running_mean"), self.running_mean.clone()));
        state.push((format!("{name}.running_var"), self.running_var.clone()));
        let tracked = Tensor::new(&[self.num_batches_tracked], self.running_mean.device())?;
        state.push((format!("{name}.num_batches_tracked"), tracked));
        Ok(())
    }

    /// Restores the running statistics saved under `prefix + name.` (a missing
    /// `num_batches_tracked` reads as 0).
    pub fn load_statistics(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
        prefix: &str,
        name: &str,
    ) -> Result<()> {
        use crate::model::init::take;
        let dims = self.running_mean.dims().to_vec();
        let device = self.running_mean.device().clone();
        self.running_mean =
            take(tensors, prefix, &format!("{name}.running_mean"), &dims)?.to_device(&device)?;
        self.running_var =
            take(tensors, prefix, &format!("{name}.running_var"), &dims)?.to_device(&device)?;
        self.num_batches_tracked = match tensors.get(&format!("{prefix}{name}.num_batches_tracked"))
        {
            Some(t) => t
                .flatten_all()?
                .to_dtype(DType::I64)?
                .to_vec1::<i64>()?
                .first()
                .copied()
                .unwrap_or(0),
            None => 0,
        };
        Ok(())
    }
}

//! Parameter initialisation as PyTorch does it, from the caller's seeded random generator, and
//! the lookup of named tensors when a state is loaded.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// `U(-bound, bound)` samples as a tensor; all randomness comes from the caller's seeded RNG
/// (candle's CPU backend cannot be seeded).
pub(crate) fn uniform(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    bound: f32,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Tensor::from_vec(values, shape, device)
}

/// `N(0, 1)` samples as a tensor: PyTorch's initialisation of `nn.Embedding`.
pub(crate) fn standard_normal(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    device: &Device,
) -> Result<Tensor> {
    use rand_distr::{Distribution, StandardNormal};
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_vec(values, shape, device)
}

/// An `Embedding(classes, classes)` table, `[classes, classes]`, initialised as PyTorch does.
pub(crate) fn label_embedding(
    classes: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Var> {
    Var::from_tensor(&standard_normal(rng, &[classes, classes], device)?)
}

/// The rows of `table` for `labels` (`u32`): the label embedding of a batch.
pub(crate) fn embed(table: &Var, labels: &Tensor) -> Result<Tensor> {
    table.as_tensor().index_select(labels, 0)
}

/// Looks up `prefix + name`, checks its shape, converts it to f32 on `device`'s device.
pub(crate) fn take(
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

//! Adam exactly as PyTorch's `torch.optim.Adam` with its defaults (no weight decay, no
//! AMSGrad), with its moments exposed so that checkpoints can carry them.
//!
//! candle-nn's `AdamW` defaults to a weight decay of 0.01 and keeps its state private; the
//! reference has none and a resumed run needs the state.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Adam's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
}

impl AdamConfig {
    /// The reference's setting: lr 0.0002, betas (0.5, 0.999), PyTorch's eps 1e-8.
    pub const REFERENCE: AdamConfig = AdamConfig {
        lr: 2e-4,
        beta1: 0.5,
        beta2: 0.999,
        eps: 1e-8,
    };
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// The optimiser over a fixed list of named variables.
pub struct Adam {
    config: AdamConfig,
    steps: u64,
    slots: Vec<Slot>,
}

impl Adam {
    /// An optimiser with zero moments for `vars`.
    pub fn new(vars: Vec<(String, Var)>, config: AdamConfig) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let m = var.as_tensor().zeros_like()?;
                let v = var.as_tensor().zeros_like()?;
                Ok(Slot { name, var, m, v })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            steps: 0,
            slots,
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update from the gradients in `grads`; variables without a gradient are left alone
    /// (and their moments too), as PyTorch does for parameters whose `.grad` is `None`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        let AdamConfig {
            lr,
            beta1,
            beta2,
            eps,
        } = self.config;
        let t = self.steps as i32;
        let bias_correction1 = 1.0 - beta1.powi(t);
        let bias_correction2 = 1.0 - beta2.powi(t);
        let step_size = lr / bias_correction1;
        let sqrt_bc2 = bias_correction2.sqrt();
        for slot in &mut self.slots {
            let Some(grad) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            slot.m = ((&slot.m * beta1)? + (grad * (1.0 - beta1))?)?;
            slot.v = ((&slot.v * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
            let denom = ((slot.v.sqrt()? / sqrt_bc2)? + eps)?;
            let update = ((&slot.m / denom)? * step_size)?;
            slot.var.set(&(slot.var.as_tensor() - update)?)?;
        }
        Ok(())
    }

    /// The moments as named tensors: `<prefix><name>.exp_avg` and `.exp_avg_sq`, as PyTorch
    /// calls them.
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut state = Vec::with_capacity(2 * self.slots.len());
        for slot in &self.slots {
            state.push((format!("{prefix}{}.exp_avg", slot.name), slot.m.clone()));
            state.push((format!("{prefix}{}.exp_avg_sq", slot.name), slot.v.clone()));
        }
        state
    }

    /// Restores the moments saved by [`Adam::state`] and the step count.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        steps: u64,
    ) -> Result<()> {
        for slot in &mut self.slots {
            for (suffix, target) in [("exp_avg", &mut slot.m), ("exp_avg_sq", &mut slot.v)] {
                let key = format!("{prefix}{}.{suffix}", slot.name);
                let tensor = tensors
                    .get(&key)
                    .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {key}")))?;
                if tensor.dims() != target.dims() {
                    candle_core::bail!(
                        "tensor {key} has shape {:?}, expected {:?}",
                        tensor.dims(),
                        target.dims()
                    );
                }
                *target = tensor.clone();
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps on f(p) = Σ p², checked against the update written out by hand.
    #[test]
    fn matches_pytorch_adam_by_hand() {
        let device = Device::Cpu;
        let p = Var::new(&[1.0f32, -2.0], &device).unwrap();
        let config = AdamConfig::REFERENCE;
        let mut adam = Adam::new(vec![("p".into(), p.clone())], config).unwrap();
        let (mut m, mut v) = ([0f64; 2], [0f64; 2]);
        let mut x = [1.0f64, -2.0];
        for t in 1..=2 {
            let loss = p.as_tensor().sqr().unwrap().sum_all().unwrap();
            adam.step(&loss.backward().unwrap()).unwrap();
            for i in 0..2 {
                let g = 2.0 * x[i];
                m[i] = 0.5 * m[i] + 0.5 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let bc1 = 1.0 - 0.5f64.powi(t);
                let bc2 = 1.0 - 0.999f64.powi(t);
                x[i] -= config.lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + config.eps);
            }
        }
        let got = p.as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((f64::from(got[i]) - x[i]).abs() < 1e-6, "{got:?} vs {x:?}");
        }
        assert_eq!(adam.steps(), 2);
    }
}

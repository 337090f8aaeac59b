//! Adam exactly as PyTorch's `torch.optim.Adam` with its defaults (no weight decay, no
//! AMSGrad), with its moments exposed so that checkpoints can carry them.
//!
//! candle-nn's `AdamW` defaults to a weight decay of 0.01 and keeps its state private; the
//! reference has none and a resumed run needs the state.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Device, Layout, Result, Tensor, Var};

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

/// The two moments of one variable: host vectors on the CPU (updated in place by one fused
/// pass), tensors elsewhere.
enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Tensors { m: Tensor, v: Tensor },
}

struct Slot {
    name: String,
    var: Var,
    moments: Moments,
}

/// One Adam update of a contiguous f32 parameter on the CPU: reads the gradient, updates both
/// moments and the parameter in a single pass, allocating nothing.
struct FusedCpuUpdate<'a> {
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
    coefficients: StepCoefficients,
}

impl candle_core::InplaceOp2 for FusedCpuUpdate<'_> {
    fn name(&self) -> &'static str {
        "fused-adam"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<()> {
        let (param, grad) =
            crate::cpu::f32_operands("fused Adam", param, param_layout, grad, grad_layout)?;
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        if m.len() != param.len() || v.len() != param.len() {
            candle_core::bail!("fused Adam: mismatched lengths");
        }
        self.coefficients.update(param, grad, &mut m, &mut v);
        Ok(())
    }
}

/// The numbers one Adam step applies to every element, bias corrections folded in.
#[derive(Clone, Copy, Debug)]
pub struct StepCoefficients {
    beta1: f32,
    beta2: f32,
    step_size: f32,
    sqrt_bc2: f32,
    eps: f32,
}

impl StepCoefficients {
    /// The coefficients of step number `step` (from 1) under `config`.
    pub fn new(config: &AdamConfig, step: u64) -> Self {
        let t = i32::try_from(step).unwrap_or(i32::MAX);
        let bias_correction1 = 1.0 - config.beta1.powi(t);
        let bias_correction2 = 1.0 - config.beta2.powi(t);
        Self {
            beta1: config.beta1 as f32,
            beta2: config.beta2 as f32,
            step_size: (config.lr / bias_correction1) as f32,
            sqrt_bc2: bias_correction2.sqrt() as f32,
            eps: config.eps as f32,
        }
    }

    /// `[beta1, beta2, lr / bias correction 1, sqrt(bias correction 2), eps]`, the numbers a
    /// kernel needs to apply [`StepCoefficients::update`] itself.
    pub fn values(&self) -> [f32; 5] {
        [
            self.beta1,
            self.beta2,
            self.step_size,
            self.sqrt_bc2,
            self.eps,
        ]
    }

    /// Updates both moments and the parameter in one pass; all four slices have one length.
    pub fn update(&self, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2, c1, c2) = (self.beta1, self.beta2, 1.0 - self.beta1, 1.0 - self.beta2);
        for (((p, &g), m), v) in param
            .iter_mut()
            .zip(grad)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            *m = b1 * *m + c1 * g;
            *v = b2 * *v + c2 * g * g;
            *p -= self.step_size * *m / (v.sqrt() / self.sqrt_bc2 + self.eps);
        }
    }
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
        Self::with_moments(vars, config, true)
    }

    /// `fused`: keep the moments on the host and update in one pass, for CPU variables.
    fn with_moments(vars: Vec<(String, Var)>, config: AdamConfig, fused: bool) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let moments = if fused && var.device().is_cpu() {
                    let n = var.as_tensor().elem_count();
                    Moments::Host {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    }
                } else {
                    Moments::Tensors {
                        m: var.as_tensor().zeros_like()?,
                        v: var.as_tensor().zeros_like()?,
                    }
                };
                Ok(Slot { name, var, moments })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            steps: 0,
            slots,
        })
    }

    /// Changes the learning rate for the steps to come (a schedule).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// The hyperparameters in effect.
    pub fn config(&self) -> AdamConfig {
        self.config
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
        let coefficients = StepCoefficients::new(&self.config, self.steps);
        for slot in &mut self.slots {
            let Some(grad) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            match &mut slot.moments {
                Moments::Host { m, v } => {
                    let update = FusedCpuUpdate {
                        m: RefCell::new(m),
                        v: RefCell::new(v),
                        coefficients,
                    };
                    slot.var
                        .as_tensor()
                        .inplace_op2(&grad.contiguous()?, &update)?;
                }
                Moments::Tensors { m, v } => {
                    *m = ((&*m * beta1)? + (grad * (1.0 - beta1))?)?;
                    *v = ((&*v * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
                    let denom = ((v.sqrt()? / sqrt_bc2)? + eps)?;
                    let update = ((&*m / denom)? * step_size)?;
                    slot.var.set(&(slot.var.as_tensor() - update)?)?;
                }
            }
        }
        Ok(())
    }

    /// The moments as named tensors: `<prefix><name>.exp_avg` and `.exp_avg_sq`, as PyTorch
    /// calls them.
    pub fn state(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let mut state = Vec::with_capacity(2 * self.slots.len());
        for slot in &self.slots {
            let (m, v) = match &slot.moments {
                Moments::Host { m, v } => {
                    let shape = slot.var.as_tensor().shape();
                    (
                        Tensor::from_slice(m, shape, &Device::Cpu)?,
                        Tensor::from_slice(v, shape, &Device::Cpu)?,
                    )
                }
                Moments::Tensors { m, v } => (m.clone(), v.clone()),
            };
            state.push((format!("{prefix}{}.exp_avg", slot.name), m));
            state.push((format!("{prefix}{}.exp_avg_sq", slot.name), v));
        }
        Ok(state)
    }

    /// Restores the moments saved by [`Adam::state`] and the step count.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        steps: u64,
    ) -> Result<()> {
        for slot in &mut self.slots {
            let dims = slot.var.as_tensor().dims().to_vec();
            let read = |suffix: &str| -> Result<Tensor> {
                let key = format!("{prefix}{}.{suffix}", slot.name);
                let tensor = tensors
                    .get(&key)
                    .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {key}")))?;
                if tensor.dims() != dims.as_slice() {
                    candle_core::bail!(
                        "tensor {key} has shape {:?}, expected {:?}",
                        tensor.dims(),
                        dims
                    );
                }
                tensor.to_device(slot.var.device())
            };
            let (m, v) = (read("exp_avg")?, read("exp_avg_sq")?);
            slot.moments = match slot.moments {
                Moments::Host { .. } => Moments::Host {
                    m: m.flatten_all()?.to_vec1::<f32>()?,
                    v: v.flatten_all()?.to_vec1::<f32>()?,
                },
                Moments::Tensors { .. } => Moments::Tensors { m, v },
            };
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

    /// The fused CPU update and the tensor-op update (other devices) agree.
    #[test]
    fn fused_and_tensor_updates_agree() {
        let device = Device::Cpu;
        let init = Tensor::randn(0f32, 1., (64, 33), &device).unwrap();
        let target = Tensor::randn(0f32, 1., (64, 33), &device).unwrap();
        let mut results = Vec::new();
        for fused in [true, false] {
            let p = Var::from_tensor(&init).unwrap();
            let mut adam =
                Adam::with_moments(vec![("p".into(), p.clone())], AdamConfig::REFERENCE, fused)
                    .unwrap();
            for _ in 0..5 {
                let loss = (p.as_tensor() - &target)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap();
                adam.step(&loss.backward().unwrap()).unwrap();
            }
            let state = adam.state("").unwrap();
            results.push((
                p.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                state[1].1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            ));
        }
        // Each step moves a parameter by about lr at most; rounding differences between the
        // two paths may not exceed 1 % of the 5 steps' movement.
        let tolerance = 0.01 * 5.0 * AdamConfig::REFERENCE.lr as f32;
        for (a, b) in results[0].0.iter().zip(&results[1].0) {
            assert!((a - b).abs() < tolerance, "{a} vs {b}");
        }
        for (a, b) in results[0].1.iter().zip(&results[1].1) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1e-3), "{a} vs {b}");
        }
    }
}

//! The parameter store of the hand-written engines: a plain-float copy of what a
//! [`TrainState`] trains (values, gradients, Adam moments, BatchNorm statistics, the weight
//! average), copied in from candle and back.

use std::collections::HashMap;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::adam::{AdamConfig, StepCoefficients};
use crate::state::TrainState;

/// Elements per task of the parallel Adam pass.
pub(crate) const ADAM_CHUNK: usize = 1 << 15;

/// One trainable tensor: its values, gradient and Adam moments, all flat.
pub(crate) struct Param {
    pub(crate) value: Vec<f32>,
    pub(crate) grad: Vec<f32>,
    pub(crate) m: Vec<f32>,
    pub(crate) v: Vec<f32>,
}

impl Param {
    /// One Adam update from `grad`, in parallel chunks.
    pub(crate) fn adam_update(&mut self, coefficients: &StepCoefficients) {
        self.value
            .par_chunks_mut(ADAM_CHUNK)
            .zip(self.grad.par_chunks(ADAM_CHUNK))
            .zip(self.m.par_chunks_mut(ADAM_CHUNK))
            .zip(self.v.par_chunks_mut(ADAM_CHUNK))
            .for_each(|(((value, grad), m), v)| coefficients.update(value, grad, m, v));
    }

    pub(crate) fn new(value: Vec<f32>, m: Vec<f32>, v: Vec<f32>) -> anyhow::Result<Self> {
        if m.len() != value.len() || v.len() != value.len() {
            bail!("Adam moments of the wrong size");
        }
        Ok(Self {
            grad: vec![0.0; value.len()],
            value,
            m,
            v,
        })
    }
}

/// One network's parameters (in the order of its `vars()`) and its optimiser's step count.
#[derive(Default)]
pub(crate) struct Network {
    pub(crate) params: Vec<Param>,
    pub(crate) names: Vec<String>,
    pub(crate) shapes: Vec<Vec<usize>>,
    pub(crate) steps: u64,
}

impl Network {
    /// Copies the variables and the optimiser's moments out of candle.
    pub(crate) fn copy_in(
        vars: Vec<(String, candle_core::Var)>,
        optimizer: &crate::adam::Adam,
    ) -> anyhow::Result<Self> {
        let moments: HashMap<String, Tensor> = optimizer.state("")?.into_iter().collect();
        let mut params = Vec::with_capacity(vars.len());
        let mut names = Vec::with_capacity(vars.len());
        let mut shapes = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            let flat = |t: &Tensor| -> anyhow::Result<Vec<f32>> {
                Ok(t.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?)
            };
            let moment = |suffix: &str| -> anyhow::Result<Vec<f32>> {
                flat(
                    moments
                        .get(&format!("{name}.{suffix}"))
                        .with_context(|| format!("no Adam moment {suffix} for {name}"))?,
                )
            };
            params.push(Param::new(
                flat(var.as_tensor())?,
                moment("exp_avg")?,
                moment("exp_avg_sq")?,
            )?);
            shapes.push(var.as_tensor().dims().to_vec());
            names.push(name);
        }
        Ok(Self {
            params,
            names,
            shapes,
            steps: optimizer.steps(),
        })
    }

    /// Writes the values back into `vars` and the moments into `optimizer`.
    pub(crate) fn copy_out(
        &self,
        vars: Vec<(String, candle_core::Var)>,
        optimizer: &mut crate::adam::Adam,
    ) -> anyhow::Result<()> {
        let mut moments = HashMap::new();
        for ((param, name), shape) in self.params.iter().zip(&self.names).zip(&self.shapes) {
            let tensor =
                |values: &[f32]| Tensor::from_slice(values, shape.as_slice(), &Device::Cpu);
            moments.insert(format!("{name}.exp_avg"), tensor(&param.m)?);
            moments.insert(format!("{name}.exp_avg_sq"), tensor(&param.v)?);
        }
        for ((_, var), param) in vars.iter().zip(&self.params) {
            let shape = var.as_tensor().dims().to_vec();
            var.set(&Tensor::from_slice(&param.value, shape, var.device())?)?;
        }
        optimizer.load_state(&moments, "", self.steps)?;
        Ok(())
    }

    /// One Adam step over every parameter, in parallel chunks.
    pub(crate) fn adam_step(&mut self, config: &AdamConfig) {
        self.steps += 1;
        let coefficients = StepCoefficients::new(config, self.steps);
        self.params
            .par_iter_mut()
            .for_each(|p| p.adam_update(&coefficients));
    }
}

/// A BatchNorm layer's running statistics.
pub(crate) struct RunningStats {
    pub(crate) mean: Vec<f32>,
    pub(crate) var: Vec<f32>,
    pub(crate) batches_tracked: i64,
    pub(crate) momentum: f32,
    pub(crate) eps: f32,
}

/// The generator's weight average and its decay, when the recipe keeps one.
pub(crate) type WeightAverage = Option<(f32, Vec<Vec<f32>>)>;

/// A trainer's own copy of what a [`TrainState`] trains: both networks with their optimisers'
/// moments, the BatchNorm running statistics and the weight average.
pub(crate) struct HostCopy {
    pub(crate) generator: Network,
    pub(crate) discriminator: Network,
    pub(crate) norms: [RunningStats; 3],
    pub(crate) average: WeightAverage,
}

impl HostCopy {
    /// Copies everything out of `state`.
    pub(crate) fn copy_in(state: &TrainState) -> anyhow::Result<Self> {
        let mlp = state.generator.mlp().context(
            "the hand-written engines train gan.py's MLP only: train a convolutional GAN with \
             --engine candle",
        )?;
        let generator = Network::copy_in(state.generator.vars(), &state.opt_g)?;
        let discriminator = Network::copy_in(state.discriminator.vars(), &state.opt_d)?;
        let stats = |i: usize| -> anyhow::Result<RunningStats> {
            let norm = &mlp.norms[i];
            Ok(RunningStats {
                mean: norm.running_mean.to_device(&Device::Cpu)?.to_vec1()?,
                var: norm.running_var.to_device(&Device::Cpu)?.to_vec1()?,
                batches_tracked: norm.num_batches_tracked,
                momentum: norm.momentum as f32,
                eps: norm.eps as f32,
            })
        };
        let norms = [stats(0)?, stats(1)?, stats(2)?];
        let average = match (&state.average, state.recipe.g_ema) {
            (Some(average), Some(decay)) => {
                let by_name: HashMap<String, Tensor> = average.tensors().into_iter().collect();
                let values = generator
                    .names
                    .iter()
                    .map(|name| -> anyhow::Result<Vec<f32>> {
                        Ok(by_name
                            .get(name)
                            .with_context(|| format!("no weight average for {name}"))?
                            .flatten_all()?
                            .to_device(&Device::Cpu)?
                            .to_vec1()?)
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Some((decay as f32, values))
            }
            _ => None,
        };
        Ok(Self {
            generator,
            discriminator,
            norms,
            average,
        })
    }
}

/// Writes a trainer's copy back into `state`, ready for a checkpoint or an export.
pub(crate) fn store(
    state: &mut TrainState,
    generator: &Network,
    discriminator: &Network,
    norms: &[RunningStats; 3],
    average: &WeightAverage,
) -> anyhow::Result<()> {
    generator.copy_out(state.generator.vars(), &mut state.opt_g)?;
    discriminator.copy_out(state.discriminator.vars(), &mut state.opt_d)?;
    let mlp = state
        .generator
        .mlp_mut()
        .context("the hand-written engines train gan.py's MLP only")?;
    for (norm, stats) in mlp.norms.iter_mut().zip(norms) {
        let device = norm.running_mean.device().clone();
        norm.running_mean = Tensor::from_slice(&stats.mean, stats.mean.len(), &device)?;
        norm.running_var = Tensor::from_slice(&stats.var, stats.var.len(), &device)?;
        norm.num_batches_tracked = stats.batches_tracked;
    }
    if let (Some(average), Some((_, values))) = (&mut state.average, average) {
        let tensors: HashMap<String, Tensor> = generator
            .names
            .iter()
            .zip(&generator.shapes)
            .zip(values)
            .map(|((name, shape), v)| {
                Ok((
                    name.clone(),
                    Tensor::from_slice(v, shape.as_slice(), &Device::Cpu)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        average.load(&tensors, "")?;
    }
    Ok(())
}

//! The training step of the reference GAN written out by hand for the CPU: the same arithmetic
//! as [`TrainState::train_batch`], several times faster.
//!
//! At the reference's batch of 64, candle's autograd builds some 150 tensors per batch, allocates
//! each, and runs the element-wise ones on one thread; that bookkeeping costs more than the
//! matrix products. Here every buffer is allocated once, the forward and backward passes are
//! written out layer by layer (matrix products by the `gemm` crate, the one candle's CPU backend
//! uses, on a thread pool of our own), element-wise work is fused into single passes, and Adam
//! updates each generator layer as soon as its gradient is complete, beside the rest of the
//! backward pass and the discriminator's step. The discriminator's pass over the fakes is shared
//! by both steps: its weights do not change between the generator's step and its own, so the
//! reference computes the same thing twice.
//!
//! The state lives in [`TrainState`] (checkpoints, export, resume); [`FusedTrainer::new`] copies
//! it in and [`FusedTrainer::store_into`] copies it back. Random draws (dropout masks, shifts)
//! come from the state's generator in the same order as in candle's path, so both trainers follow
//! the same run; tests compare them batch by batch.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use gemm::Parallelism;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::adam::{AdamConfig, StepCoefficients};
use crate::engine::{Batch, TrainingStep};
use crate::gan::{DISCRIMINATOR_WIDTHS, GENERATOR_WIDTHS, IMAGE_PIXELS, LATENT_DIM, LEAKY_SLOPE};
use crate::recipe::{draw_shift, fill_dropout_mask, Recipe};
use crate::state::TrainState;

/// Side of the square images.
const SIDE: usize = 28;
/// Elements per task of the parallel Adam pass.
const ADAM_CHUNK: usize = 1 << 15;

/// One trainable tensor: its values, gradient and Adam moments, all flat.
pub(crate) struct Param {
    pub(crate) value: Vec<f32>,
    pub(crate) grad: Vec<f32>,
    pub(crate) m: Vec<f32>,
    pub(crate) v: Vec<f32>,
}

impl Param {
    /// One Adam update from `grad`, in parallel chunks.
    fn adam_update(&mut self, coefficients: &StepCoefficients) {
        self.value
            .par_chunks_mut(ADAM_CHUNK)
            .zip(self.grad.par_chunks(ADAM_CHUNK))
            .zip(self.m.par_chunks_mut(ADAM_CHUNK))
            .zip(self.v.par_chunks_mut(ADAM_CHUNK))
            .for_each(|(((value, grad), m), v)| coefficients.update(value, grad, m, v));
    }

    fn new(value: Vec<f32>, m: Vec<f32>, v: Vec<f32>) -> anyhow::Result<Self> {
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
    fn adam_step(&mut self, config: &AdamConfig) {
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
        let generator = Network::copy_in(state.generator.vars(), &state.opt_g)?;
        let discriminator = Network::copy_in(state.discriminator.vars(), &state.opt_d)?;
        let stats = |i: usize| -> anyhow::Result<RunningStats> {
            let norm = &state.generator.norms[i];
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
    for (norm, stats) in state.generator.norms.iter_mut().zip(norms) {
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

/// Activations and gradients of one batch, allocated for the largest batch seen.
#[derive(Default)]
struct Buffers {
    batch: usize,
    /// Generator: the output of each hidden block (after LeakyReLU), `[B, width]`.
    g_hidden: [Vec<f32>; 4],
    /// Generator: the normalised pre-activations of the three BatchNorm layers.
    g_xhat: [Vec<f32>; 3],
    /// Generator: `1 / sqrt(var + eps)` per feature of the three BatchNorm layers.
    g_inv_std: [Vec<f32>; 3],
    /// Generator: its output (the fakes), `[B, 784]`.
    fakes: Vec<f32>,
    /// Discriminator input: real images in rows `0..B`, fakes in rows `B..2B`.
    d_input: Vec<f32>,
    /// Discriminator hidden outputs (after LeakyReLU and dropout), `[2B, 512]` and `[2B, 256]`.
    d_hidden: [Vec<f32>; 2],
    /// Dropout factors of the two hidden layers, same shapes (empty without dropout).
    d_masks: [Vec<f32>; 2],
    /// Discriminator logits, `[2B]`.
    logits: Vec<f32>,
    /// Where each pixel of the shifted fakes came from (`u32::MAX`: padding), `[B, 784]`.
    fake_sources: Vec<u32>,
    /// Gradient scratch: the widest layer's `[2B, 1024]` twice, plus the image gradient.
    grad_a: Vec<f32>,
    grad_b: Vec<f32>,
    grad_images: Vec<f32>,
    /// Per-feature sums.
    column_a: Vec<f32>,
    column_b: Vec<f32>,
}

impl Buffers {
    fn ensure(&mut self, batch: usize, dropout: bool) {
        if self.batch >= batch && (!dropout || !self.d_masks[0].is_empty()) {
            return;
        }
        let b = batch.max(self.batch);
        let g = GENERATOR_WIDTHS;
        let d = DISCRIMINATOR_WIDTHS;
        for (i, buf) in self.g_hidden.iter_mut().enumerate() {
            *buf = vec![0.0; b * g[i + 1]];
        }
        for (i, buf) in self.g_xhat.iter_mut().enumerate() {
            *buf = vec![0.0; b * g[i + 2]];
        }
        for (i, buf) in self.g_inv_std.iter_mut().enumerate() {
            *buf = vec![0.0; g[i + 2]];
        }
        self.fakes = vec![0.0; b * IMAGE_PIXELS];
        self.d_input = vec![0.0; 2 * b * IMAGE_PIXELS];
        self.d_hidden = [vec![0.0; 2 * b * d[1]], vec![0.0; 2 * b * d[2]]];
        if dropout {
            self.d_masks = [vec![0.0; 2 * b * d[1]], vec![0.0; 2 * b * d[2]]];
        }
        self.logits = vec![0.0; 2 * b];
        self.fake_sources = vec![0; b * IMAGE_PIXELS];
        self.grad_a = vec![0.0; 2 * b * 1024];
        self.grad_b = vec![0.0; 2 * b * 1024];
        self.grad_images = vec![0.0; b * IMAGE_PIXELS];
        self.column_a = vec![0.0; 1024];
        self.column_b = vec![0.0; 1024];
        self.batch = b;
    }
}

/// The reference GAN's training step on the CPU, with its own buffers and thread pool.
pub struct FusedTrainer {
    generator: Network,
    discriminator: Network,
    norms: [RunningStats; 3],
    /// The generator's weight average and its decay, when the recipe keeps one.
    average: WeightAverage,
    adam: AdamConfig,
    recipe: Recipe,
    buffers: Buffers,
    last_batch: usize,
    pool: Arc<rayon::ThreadPool>,
    threads: usize,
}

/// The losses of one batch, as [`crate::train::BatchLosses`] has them.
#[derive(Clone, Copy, Debug)]
pub struct StepLosses {
    /// `(BCE(D(real), real label) + BCE(D(fake), 0)) / 2`.
    pub d_loss: f32,
    /// `BCE(D(G(z)), 1)`.
    pub g_loss: f32,
}

impl FusedTrainer {
    /// Copies `state` (networks, optimisers, running statistics, weight average) into a
    /// trainer that runs on `threads` CPU threads.
    pub fn new(state: &TrainState, threads: usize) -> anyhow::Result<Self> {
        let HostCopy {
            generator,
            discriminator,
            norms,
            average,
        } = HostCopy::copy_in(state)?;
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mcugan-train-{i}"))
            .build()
            .context("starting the training threads")?;
        Ok(Self {
            generator,
            discriminator,
            norms,
            average,
            adam: state.opt_g.config(),
            recipe: state.recipe,
            buffers: Buffers::default(),
            last_batch: 0,
            pool: Arc::new(pool),
            threads,
        })
    }

    /// Threads the trainer runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Copies the trained state back into `state`, ready for a checkpoint or an export.
    pub fn store_into(&self, state: &mut TrainState) -> anyhow::Result<()> {
        store(
            state,
            &self.generator,
            &self.discriminator,
            &self.norms,
            &self.average,
        )
    }

    /// The fakes of the last batch, `[batch, 784]` row-major in `[-1, 1]`.
    pub fn fakes(&self) -> &[f32] {
        &self.buffers.fakes[..self.last_batch * IMAGE_PIXELS]
    }

    /// One batch of the reference loop on `real` (`[batch, 784]` in `[-1, 1]`) with latent
    /// vectors `z` (`[batch, 100]`): the generator's step, then the discriminator's on the same
    /// fakes; `rng` is the run's generator (dropout masks and shifts, when the recipe has them).
    pub fn train_batch(
        &mut self,
        rng: &mut ChaCha8Rng,
        real: &[f32],
        z: &[f32],
    ) -> anyhow::Result<StepLosses> {
        let batch = z.len() / LATENT_DIM;
        if z.len() != batch * LATENT_DIM || real.len() != batch * IMAGE_PIXELS {
            bail!(
                "{} latent values and {} pixels do not make one batch",
                z.len(),
                real.len()
            );
        }
        if batch < 2 {
            bail!("BatchNorm1d in training mode needs more than one sample");
        }
        let pool = Arc::clone(&self.pool);
        Ok(pool.install(|| self.step(rng, real, z, batch)))
    }

    fn parallelism(&self) -> Parallelism {
        if self.threads > 1 {
            Parallelism::Rayon(self.threads)
        } else {
            Parallelism::None
        }
    }

    fn step(&mut self, rng: &mut ChaCha8Rng, real: &[f32], z: &[f32], b: usize) -> StepLosses {
        let recipe = self.recipe;
        let dropout = recipe.d_dropout > 0.0;
        self.buffers.ensure(b, dropout);
        self.last_batch = b;
        let par = self.parallelism();

        // Generator step: G(z), then D on the fakes (rows b..2b), gradient back to G.
        self.generator_forward(z, b, par);
        self.place_fakes(b, rng);
        if dropout {
            self.draw_masks(b, 2 * b, rng);
        }
        self.discriminator_forward(b, 2 * b, par);
        let g_logits = &self.buffers.logits[b..2 * b];
        let g_loss = g_logits
            .iter()
            .map(|&l| softplus(l) - f64::from(l))
            .sum::<f64>()
            / b as f64;
        let scale = 1.0 / b as f64;
        let dl: Vec<f32> = g_logits
            .iter()
            .map(|&l| ((sigmoid(l) - 1.0) * scale) as f32)
            .collect();
        self.discriminator_input_gradient(&dl, b, par);

        // The generator's Adam updates run layer by layer as the backward pass finishes with
        // them, alongside the rest of it and the discriminator's step, which does not read the
        // generator. The generator is out of `self` meanwhile, so that the borrows are apart.
        let mut generator = std::mem::take(&mut self.generator);
        generator.steps += 1;
        let coefficients = StepCoefficients::new(&self.adam, generator.steps);
        let d_loss = rayon::scope(|scope| {
            self.generator_backward(&mut generator.params, z, b, par, |param| {
                scope.spawn(move |_| param.adam_update(&coefficients));
            });
            self.discriminator_step(rng, real, b, par)
        });
        self.generator = generator;
        if let Some((decay, averages)) = &mut self.average {
            let rate = 1.0 - *decay;
            for (average, param) in averages.iter_mut().zip(&self.generator.params) {
                for (a, &v) in average.iter_mut().zip(&param.value) {
                    *a += rate * (v - *a);
                }
            }
        }
        StepLosses {
            d_loss,
            g_loss: g_loss as f32,
        }
    }

    /// The discriminator's step on `real` and the fakes already in its rows `b..2b`; returns
    /// its loss.
    fn discriminator_step(
        &mut self,
        rng: &mut ChaCha8Rng,
        real: &[f32],
        b: usize,
        par: Parallelism,
    ) -> f32 {
        let recipe = self.recipe;
        let dropout = recipe.d_dropout > 0.0;
        // Discriminator step on real (rows 0..b) and the same fakes (rows b..2b). Without
        // random shifts or dropout, D's pass over the fakes is the one just made: its weights
        // have not changed since.
        self.place_real(real, b, rng);
        if dropout {
            self.draw_masks(0, b, rng);
        }
        if recipe.translate > 0 || dropout {
            self.place_fakes(b, rng);
            if dropout {
                self.draw_masks(b, 2 * b, rng);
            }
            self.discriminator_forward(0, 2 * b, par);
        } else {
            self.discriminator_forward(0, b, par);
        }
        let real_label = recipe.real_label;
        let scale = 1.0 / (2 * b) as f64;
        let mut d_loss = 0.0;
        let mut dl = Vec::with_capacity(2 * b);
        for (row, &l) in self.buffers.logits[..2 * b].iter().enumerate() {
            let target = if row < b { real_label } else { 0.0 };
            d_loss += softplus(l) - target * f64::from(l);
            dl.push(((sigmoid(l) - target) * scale) as f32);
        }
        self.discriminator_backward(&dl, 2 * b, par);
        self.discriminator.adam_step(&self.adam);
        (d_loss * scale) as f32
    }

    /// Training-mode forward pass into `fakes`, updating the running statistics.
    fn generator_forward(&mut self, z: &[f32], b: usize, par: Parallelism) {
        let w = GENERATOR_WIDTHS;
        let p = &self.generator.params;
        let buf = &mut self.buffers;
        let hidden0 = &mut buf.g_hidden[0][..b * w[1]];
        matmul_a_bt(par, hidden0, z, &p[0].value, b, w[1], w[0]);
        bias_leaky_relu(hidden0, &p[1].value, None);
        for j in 0..3 {
            let (inputs, outputs) = (w[j + 1], w[j + 2]);
            let (before, after) = buf.g_hidden.split_at_mut(j + 1);
            let x = &before[j][..b * inputs];
            let h = &mut buf.g_xhat[j][..b * outputs];
            matmul_a_bt(par, h, x, &p[2 * j + 2].value, b, outputs, inputs);
            add_bias(h, &p[2 * j + 3].value);
            let mean = &mut buf.column_a[..outputs];
            let var = &mut buf.column_b[..outputs];
            column_sums(mean, h);
            mean.iter_mut().for_each(|m| *m /= b as f32);
            var.fill(0.0);
            for row in h.chunks_exact(outputs) {
                for ((v, &x), &m) in var.iter_mut().zip(row).zip(mean.iter()) {
                    *v += (x - m) * (x - m);
                }
            }
            var.iter_mut().for_each(|v| *v /= b as f32);
            let stats = &mut self.norms[j];
            let inv_std = &mut buf.g_inv_std[j][..outputs];
            let momentum = stats.momentum;
            let unbiased = b as f32 / (b as f32 - 1.0);
            for c in 0..outputs {
                inv_std[c] = 1.0 / (var[c] + stats.eps).sqrt();
                stats.mean[c] = stats.mean[c] * (1.0 - momentum) + mean[c] * momentum;
                stats.var[c] = stats.var[c] * (1.0 - momentum) + var[c] * unbiased * momentum;
            }
            stats.batches_tracked += 1;
            let gamma = &p[10 + 2 * j].value;
            let beta = &p[11 + 2 * j].value;
            let y = &mut after[0][..b * outputs];
            for (h_row, y_row) in h.chunks_exact_mut(outputs).zip(y.chunks_exact_mut(outputs)) {
                for c in 0..outputs {
                    let xhat = (h_row[c] - mean[c]) * inv_std[c];
                    h_row[c] = xhat;
                    y_row[c] = leaky_relu(gamma[c] * xhat + beta[c]);
                }
            }
        }
        let fakes = &mut buf.fakes[..b * w[5]];
        matmul_a_bt(
            par,
            fakes,
            &buf.g_hidden[3][..b * w[4]],
            &p[8].value,
            b,
            w[5],
            w[4],
        );
        for row in fakes.chunks_exact_mut(w[5]) {
            for (x, &bias) in row.iter_mut().zip(&p[9].value) {
                *x = tanh(*x + bias);
            }
        }
    }

    /// Copies the fakes into the discriminator's rows `b..2b`, shifted when the recipe says so.
    fn place_fakes(&mut self, b: usize, rng: &mut ChaCha8Rng) {
        let buf = &mut self.buffers;
        let rows = &mut buf.d_input[b * IMAGE_PIXELS..2 * b * IMAGE_PIXELS];
        let fakes = &buf.fakes[..b * IMAGE_PIXELS];
        let sources = &mut buf.fake_sources[..b * IMAGE_PIXELS];
        place_images(rows, fakes, self.recipe.translate, rng, Some(sources));
    }

    /// Copies the real images into the discriminator's rows `0..b`, shifted when the recipe
    /// says so.
    fn place_real(&mut self, real: &[f32], b: usize, rng: &mut ChaCha8Rng) {
        let rows = &mut self.buffers.d_input[..b * IMAGE_PIXELS];
        place_images(rows, real, self.recipe.translate, rng, None);
    }

    /// Fresh dropout masks for rows `r0..r1` of both hidden layers, first layer first.
    fn draw_masks(&mut self, r0: usize, r1: usize, rng: &mut ChaCha8Rng) {
        let d = DISCRIMINATOR_WIDTHS;
        let p = self.recipe.d_dropout;
        fill_dropout_mask(&mut self.buffers.d_masks[0][r0 * d[1]..r1 * d[1]], p, rng);
        fill_dropout_mask(&mut self.buffers.d_masks[1][r0 * d[2]..r1 * d[2]], p, rng);
    }

    /// The discriminator's pass over rows `r0..r1` of its input into `d_hidden` and `logits`.
    fn discriminator_forward(&mut self, r0: usize, r1: usize, par: Parallelism) {
        let d = DISCRIMINATOR_WIDTHS;
        let n = r1 - r0;
        let p = &self.discriminator.params;
        let buf = &mut self.buffers;
        let masks = |i: usize, width: usize| -> Option<&[f32]> {
            let mask = &buf.d_masks[i];
            (!mask.is_empty() && self.recipe.d_dropout > 0.0).then(|| &mask[r0 * width..r1 * width])
        };
        let (mask0, mask1) = (masks(0, d[1]), masks(1, d[2]));
        let (first, second) = buf.d_hidden.split_at_mut(1);
        let h1 = &mut first[0][r0 * d[1]..r1 * d[1]];
        let x = &buf.d_input[r0 * d[0]..r1 * d[0]];
        matmul_a_bt(par, h1, x, &p[0].value, n, d[1], d[0]);
        bias_leaky_relu(h1, &p[1].value, mask0);
        let h2 = &mut second[0][r0 * d[2]..r1 * d[2]];
        matmul_a_bt(par, h2, h1, &p[2].value, n, d[2], d[1]);
        bias_leaky_relu(h2, &p[3].value, mask1);
        let (weights, bias) = (&p[4].value, p[5].value[0]);
        for (logit, row) in buf.logits[r0..r1].iter_mut().zip(h2.chunks_exact(d[2])) {
            *logit = bias + dot(row, weights);
        }
    }

    /// Back from `dl` (d loss / d logit of rows `b..2b`) to the fakes: the gradient with respect
    /// to the generator's output, in `grad_images`.
    fn discriminator_input_gradient(&mut self, dl: &[f32], b: usize, par: Parallelism) {
        let d = DISCRIMINATOR_WIDTHS;
        let p = &self.discriminator.params;
        let buf = &mut self.buffers;
        let rows = b..2 * b;
        let dh2 = &mut buf.grad_a[..b * d[2]];
        let y2 = &buf.d_hidden[1][rows.start * d[2]..rows.end * d[2]];
        for (g_row, &g) in dh2.chunks_exact_mut(d[2]).zip(dl) {
            for (out, &w) in g_row.iter_mut().zip(&p[4].value) {
                *out = g * w;
            }
        }
        let masks = self.recipe.d_dropout > 0.0;
        leaky_relu_backward(
            dh2,
            y2,
            masks.then(|| &buf.d_masks[1][rows.start * d[2]..rows.end * d[2]]),
        );
        let dh1 = &mut buf.grad_b[..b * d[1]];
        matmul_a_b(par, dh1, dh2, &p[2].value, b, d[1], d[2]);
        leaky_relu_backward(
            dh1,
            &buf.d_hidden[0][rows.start * d[1]..rows.end * d[1]],
            masks.then(|| &buf.d_masks[0][rows.start * d[1]..rows.end * d[1]]),
        );
        let d_images = &mut buf.grad_images[..b * d[0]];
        matmul_a_b(par, d_images, dh1, &p[0].value, b, d[0], d[1]);
    }

    /// Back from `grad_images` through the generator (`params`) into its parameters'
    /// gradients; each parameter is handed to `ready` as soon as its gradient is complete and
    /// the rest of the pass no longer reads it, so its update can run alongside.
    fn generator_backward<'p>(
        &mut self,
        params: &'p mut [Param],
        z: &[f32],
        b: usize,
        par: Parallelism,
        mut ready: impl FnMut(&'p mut Param),
    ) {
        let w = GENERATOR_WIDTHS;
        let mut slots: Vec<Option<&'p mut Param>> = params.iter_mut().map(Some).collect();
        let mut take = |i: usize| slots[i].take().expect("each parameter is taken once");
        let buf = &mut self.buffers;
        // The gradient with respect to the fakes: through the shift, when there is one.
        let d_out = &mut buf.grad_a[..b * w[5]];
        if self.recipe.translate > 0 {
            d_out.fill(0.0);
            for (i, (row, sources)) in buf.grad_images[..b * w[5]]
                .chunks_exact(w[5])
                .zip(buf.fake_sources[..b * w[5]].chunks_exact(w[5]))
                .enumerate()
            {
                let target = &mut d_out[i * w[5]..(i + 1) * w[5]];
                for (&g, &source) in row.iter().zip(sources) {
                    if source != u32::MAX {
                        target[source as usize] += g;
                    }
                }
            }
        } else {
            d_out.copy_from_slice(&buf.grad_images[..b * w[5]]);
        }
        // Tanh.
        for (g, &y) in d_out.iter_mut().zip(&buf.fakes[..b * w[5]]) {
            *g *= 1.0 - y * y;
        }
        let (mut grad, mut next) = (&mut buf.grad_a, &mut buf.grad_b);
        let (weight, bias) = (take(8), take(9));
        let dh = &grad[..b * w[5]];
        matmul_at_b(
            par,
            &mut weight.grad,
            dh,
            &buf.g_hidden[3][..b * w[4]],
            b,
            w[5],
            w[4],
        );
        column_sums(&mut bias.grad, dh);
        matmul_a_b(par, &mut next[..b * w[4]], dh, &weight.value, b, w[4], w[5]);
        ready(weight);
        ready(bias);
        std::mem::swap(&mut grad, &mut next);
        for j in (0..3).rev() {
            let (inputs, outputs) = (w[j + 1], w[j + 2]);
            let du = &mut grad[..b * outputs];
            leaky_relu_backward(du, &buf.g_hidden[j + 1][..b * outputs], None);
            let xhat = &buf.g_xhat[j][..b * outputs];
            let (gamma, beta) = (take(10 + 2 * j), take(11 + 2 * j));
            column_sums(&mut beta.grad, du);
            gamma.grad.fill(0.0);
            for (du_row, x_row) in du.chunks_exact(outputs).zip(xhat.chunks_exact(outputs)) {
                for ((g, &d), &x) in gamma.grad.iter_mut().zip(du_row).zip(x_row) {
                    *g += d * x;
                }
            }
            let inv_std = &buf.g_inv_std[j][..outputs];
            let n = b as f32;
            for (du_row, x_row) in du.chunks_exact_mut(outputs).zip(xhat.chunks_exact(outputs)) {
                for c in 0..outputs {
                    let scale = gamma.value[c] * inv_std[c] / n;
                    du_row[c] = scale * (n * du_row[c] - beta.grad[c] - x_row[c] * gamma.grad[c]);
                }
            }
            ready(gamma);
            ready(beta);
            let dh = &grad[..b * outputs];
            let (weight, bias) = (take(2 * j + 2), take(2 * j + 3));
            let x = &buf.g_hidden[j][..b * inputs];
            matmul_at_b(par, &mut weight.grad, dh, x, b, outputs, inputs);
            column_sums(&mut bias.grad, dh);
            matmul_a_b(
                par,
                &mut next[..b * inputs],
                dh,
                &weight.value,
                b,
                inputs,
                outputs,
            );
            ready(weight);
            ready(bias);
            std::mem::swap(&mut grad, &mut next);
        }
        let du = &mut grad[..b * w[1]];
        leaky_relu_backward(du, &buf.g_hidden[0][..b * w[1]], None);
        let (weight, bias) = (take(0), take(1));
        matmul_at_b(par, &mut weight.grad, du, z, b, w[1], w[0]);
        column_sums(&mut bias.grad, du);
        ready(weight);
        ready(bias);
    }

    /// Back from `dl` (d loss / d logit of rows `0..rows`) into the discriminator's gradients.
    fn discriminator_backward(&mut self, dl: &[f32], rows: usize, par: Parallelism) {
        let d = DISCRIMINATOR_WIDTHS;
        let p = &mut self.discriminator.params;
        let buf = &mut self.buffers;
        let y2 = &buf.d_hidden[1][..rows * d[2]];
        let y1 = &buf.d_hidden[0][..rows * d[1]];
        // Output layer: dV2 = dlᵀ y2, dc2 = Σ dl.
        p[4].grad.fill(0.0);
        for (row, &g) in y2.chunks_exact(d[2]).zip(dl) {
            for (out, &y) in p[4].grad.iter_mut().zip(row) {
                *out += g * y;
            }
        }
        p[5].grad[0] = dl.iter().sum();
        let dh2 = &mut buf.grad_a[..rows * d[2]];
        for (g_row, &g) in dh2.chunks_exact_mut(d[2]).zip(dl) {
            for (out, &w) in g_row.iter_mut().zip(&p[4].value) {
                *out = g * w;
            }
        }
        let masks = self.recipe.d_dropout > 0.0;
        leaky_relu_backward(dh2, y2, masks.then(|| &buf.d_masks[1][..rows * d[2]]));
        matmul_at_b(par, &mut p[2].grad, dh2, y1, rows, d[2], d[1]);
        column_sums(&mut p[3].grad, dh2);
        let dh1 = &mut buf.grad_b[..rows * d[1]];
        matmul_a_b(par, dh1, dh2, &p[2].value, rows, d[1], d[2]);
        leaky_relu_backward(dh1, y1, masks.then(|| &buf.d_masks[0][..rows * d[1]]));
        let x = &buf.d_input[..rows * d[0]];
        matmul_at_b(par, &mut p[0].grad, dh1, x, rows, d[1], d[0]);
        column_sums(&mut p[1].grad, dh1);
    }
}

fn softplus(x: f32) -> f64 {
    let x = f64::from(x);
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-f64::from(x)).exp())
}

fn leaky_relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        x * LEAKY_SLOPE as f32
    }
}

/// `tanh(x)` to within 2e-7, branch-free so that loops over it vectorise (libm's `tanhf` is a
/// call per element, and the generator's output layer has 50,176 of them per batch).
fn tanh(x: f32) -> f32 {
    // tanh(±9) rounds to ±1 in f32.
    let e = exp(2.0 * x.clamp(-9.0, 9.0));
    (e - 1.0) / (e + 1.0)
}

/// `e^y` for `|y| ≤ 18` to a few units in the last place: `2^n · 2^f` with `n` the nearest
/// integer to `y / ln 2` and `2^f`, `|f| ≤ 1/2`, from its Taylor series in `f · ln 2`.
fn exp(y: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to nearest
    let t = y * std::f32::consts::LOG2_E;
    let n = (t + ROUND) - ROUND;
    let r = (t - n) * std::f32::consts::LN_2;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Adds `bias` to every row of `rows`.
fn add_bias(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (x, &b) in row.iter_mut().zip(bias) {
            *x += b;
        }
    }
}

/// `rows = LeakyReLU(rows + bias)`, times the dropout factors when there are some.
fn bias_leaky_relu(rows: &mut [f32], bias: &[f32], mask: Option<&[f32]>) {
    let width = bias.len();
    match mask {
        None => {
            for row in rows.chunks_exact_mut(width) {
                for (x, &b) in row.iter_mut().zip(bias) {
                    *x = leaky_relu(*x + b);
                }
            }
        }
        Some(mask) => {
            for (row, m_row) in rows.chunks_exact_mut(width).zip(mask.chunks_exact(width)) {
                for ((x, &b), &m) in row.iter_mut().zip(bias).zip(m_row) {
                    *x = leaky_relu(*x + b) * m;
                }
            }
        }
    }
}

/// `grad *= LeakyReLU'(·) · mask`, the activation's sign read from its output `y` (positive
/// output iff positive input: dropout factors are positive where they keep a unit).
fn leaky_relu_backward(grad: &mut [f32], y: &[f32], mask: Option<&[f32]>) {
    let slope = LEAKY_SLOPE as f32;
    match mask {
        None => {
            for (g, &y) in grad.iter_mut().zip(y) {
                *g *= if y > 0.0 { 1.0 } else { slope };
            }
        }
        Some(mask) => {
            for ((g, &y), &m) in grad.iter_mut().zip(y).zip(mask) {
                *g *= if y > 0.0 { m } else { slope * m };
            }
        }
    }
}

/// `out[c] = Σ_rows x[row][c]`, `out.len()` columns.
fn column_sums(out: &mut [f32], x: &[f32]) {
    out.fill(0.0);
    for row in x.chunks_exact(out.len()) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// Copies `images` into `rows`, each shifted by its own random offset (padding -1) when
/// `max_shift > 0`; `sources` records where each pixel came from (`u32::MAX`: padding).
fn place_images(
    rows: &mut [f32],
    images: &[f32],
    max_shift: usize,
    rng: &mut ChaCha8Rng,
    sources: Option<&mut [u32]>,
) {
    if max_shift == 0 {
        rows.copy_from_slice(images);
        return;
    }
    let mut sources = sources;
    for (i, (row, image)) in rows
        .chunks_exact_mut(IMAGE_PIXELS)
        .zip(images.chunks_exact(IMAGE_PIXELS))
        .enumerate()
    {
        let (dy, dx) = draw_shift(max_shift, rng);
        for y in 0..SIDE {
            for x in 0..SIDE {
                // The padded image's pixel (y + dy, x + dx) is the image's (y + dy − s, x + dx − s).
                let sy = (y + dy).checked_sub(max_shift).filter(|&v| v < SIDE);
                let sx = (x + dx).checked_sub(max_shift).filter(|&v| v < SIDE);
                let source = sy.zip(sx).map(|(sy, sx)| sy * SIDE + sx);
                row[y * SIDE + x] = source.map_or(-1.0, |s| image[s]);
                if let Some(sources) = sources.as_deref_mut() {
                    sources[i * IMAGE_PIXELS + y * SIDE + x] =
                        source.map_or(u32::MAX, |s| s as u32);
                }
            }
        }
    }
}

/// A row-major operand of [`matmul`]: its elements and the steps between rows and columns.
struct Operand<'a> {
    data: &'a [f32],
    row_step: usize,
    col_step: usize,
}

impl<'a> Operand<'a> {
    /// `data` as a row-major matrix of `cols` columns.
    fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_step: cols,
            col_step: 1,
        }
    }

    /// The transpose of `data`, a row-major matrix of `cols` columns.
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_step: 1,
            col_step: cols,
        }
    }

    /// Whether a `rows × cols` matrix with these steps lies inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_step + (cols - 1) * self.col_step < self.data.len()
    }
}

/// `out[m×n] = a[m×k] · b[k×n]` with `out` row-major and `a`, `b` read through their steps.
fn matmul(par: Parallelism, out: &mut [f32], a: Operand, b: Operand, m: usize, n: usize, k: usize) {
    assert!(out.len() >= m * n && a.fits(m, k) && b.fits(k, n));
    // SAFETY: every element the sizes and steps reach lies inside its slice (checked above),
    // and `out` does not alias the operands (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.col_step as isize,
            a.row_step as isize,
            b.data.as_ptr(),
            b.col_step as isize,
            b.row_step as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `out[m×n] = a[m×k] · b[n×k]ᵀ`, all row-major.
fn matmul_a_bt(
    par: Parallelism,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
) {
    let a = Operand::rows(a, k);
    let b = Operand::transposed(b, k);
    matmul(par, out, a, b, m, n, k);
}

/// `out[m×n] = a[m×k] · b[k×n]`, all row-major.
fn matmul_a_b(
    par: Parallelism,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
) {
    let a = Operand::rows(a, k);
    let b = Operand::rows(b, n);
    matmul(par, out, a, b, m, n, k);
}

/// `out[m×n] = a[k×m]ᵀ · b[k×n]`, all row-major: the weight gradient `dhᵀ x` over a batch of
/// `k` rows.
fn matmul_at_b(
    par: Parallelism,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    k: usize,
    m: usize,
    n: usize,
) {
    let a = Operand::transposed(a, m);
    let b = Operand::rows(b, n);
    matmul(par, out, a, b, m, n, k);
}

/// The fused step as a [`TrainingStep`]: the trainer and the training images it gathers
/// each batch from.
pub struct FusedStep {
    trainer: FusedTrainer,
    images: Vec<f32>,
    real_batch: Vec<f32>,
    losses: Vec<(f32, f32)>,
}

impl FusedStep {
    /// The step of `trainer` over `images` (`[n, 784]` row-major in `[-1, 1]`).
    pub fn new(trainer: FusedTrainer, images: Vec<f32>) -> Self {
        Self {
            trainer,
            images,
            real_batch: Vec::new(),
            losses: Vec::new(),
        }
    }
}

impl TrainingStep for FusedStep {
    fn describe(&self, _device: &candle_core::Device) -> String {
        let threads = self.trainer.threads();
        format!(
            "cpu (fused step, {threads} thread{} of {} cores)",
            if threads == 1 { "" } else { "s" },
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )
    }

    fn begin_epoch(&mut self, _order: &[u32], _latents: &[f32]) -> anyhow::Result<()> {
        // Batches read the epoch's order and latents where they lie.
        Ok(())
    }

    fn train_batch(&mut self, state: &mut TrainState, batch: &Batch) -> anyhow::Result<()> {
        self.real_batch.clear();
        for &i in &batch.order[batch.start..batch.start + batch.len] {
            let i = i as usize;
            let image = self
                .images
                .get(i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS)
                .context("an image index beyond the training images")?;
            self.real_batch.extend_from_slice(image);
        }
        let losses = self
            .trainer
            .train_batch(&mut state.rng, &self.real_batch, batch.z())?;
        self.losses.push((losses.d_loss, losses.g_loss));
        Ok(())
    }

    fn take_losses(&mut self) -> anyhow::Result<Vec<(f32, f32)>> {
        Ok(std::mem::take(&mut self.losses))
    }

    fn fakes(&mut self) -> anyhow::Result<Vec<f32>> {
        Ok(self.trainer.fakes().to_vec())
    }

    fn store_into(&mut self, state: &mut TrainState) -> anyhow::Result<()> {
        self.trainer.store_into(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adam::AdamConfig;
    use crate::test_support::{
        assert_losses_agree, assert_states_agree, batch, max_abs_difference,
    };

    /// Trains both trainers from the same state on the same batches and checks that they
    /// agree: losses and fakes to rounding, parameters to within a small share of Adam's step.
    fn same_as_candle(recipe: Recipe, batches: usize, b: usize) {
        let device = Device::Cpu;
        let adam = AdamConfig::REFERENCE;
        let mut reference = TrainState::with_recipe(5, adam, recipe, &device).unwrap();
        let mut state = TrainState::with_recipe(5, adam, recipe, &device).unwrap();
        let mut fused = FusedTrainer::new(&state, 2).unwrap();
        for i in 0..batches {
            let (real, z) = batch(i as u64, b);
            let expected = reference
                .train_batch(
                    &Tensor::from_slice(&real, (b, IMAGE_PIXELS), &device).unwrap(),
                    &Tensor::from_slice(&z, (b, LATENT_DIM), &device).unwrap(),
                    None,
                )
                .unwrap();
            let got = fused.train_batch(&mut state.rng, &real, &z).unwrap();
            let d = expected.d_loss.to_scalar::<f32>().unwrap();
            let g = expected.g_loss.to_scalar::<f32>().unwrap();
            assert_losses_agree(i, (d, g), (got.d_loss, got.g_loss));
            let fakes = expected
                .fakes
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let worst = max_abs_difference(&fakes, fused.fakes());
            assert!(worst < 1e-3, "batch {i}: fakes differ by {worst}");
        }
        assert_eq!(reference.rng.get_word_pos(), state.rng.get_word_pos());
        fused.store_into(&mut state).unwrap();
        assert_eq!(state.opt_g.steps(), batches as u64);
        assert_states_agree(&reference, &state, adam.lr as f32, recipe.g_ema.is_some());
    }

    #[test]
    fn the_reference_recipe_trains_as_candle_does() {
        same_as_candle(Recipe::REFERENCE, 3, 16);
    }

    #[test]
    fn the_small_data_recipe_trains_as_candle_does() {
        same_as_candle(Recipe::SMALL_DATA, 3, 16);
    }

    #[test]
    fn tanh_is_accurate() {
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let err = (f64::from(tanh(x)) - f64::from(x).tanh()).abs();
            worst = worst.max(err);
        }
        assert!(worst < 2e-7, "worst error {worst}");
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert_eq!(tanh(0.0), 0.0);
    }

    #[test]
    fn a_last_short_batch_and_bad_shapes() {
        let state = TrainState::new(1, AdamConfig::REFERENCE, &Device::Cpu).unwrap();
        let mut state2 = TrainState::new(1, AdamConfig::REFERENCE, &Device::Cpu).unwrap();
        let mut fused = FusedTrainer::new(&state, 1).unwrap();
        let (real, z) = batch(0, 8);
        fused.train_batch(&mut state2.rng, &real, &z).unwrap();
        let (real, z) = batch(1, 3);
        fused.train_batch(&mut state2.rng, &real, &z).unwrap();
        assert_eq!(fused.fakes().len(), 3 * IMAGE_PIXELS);
        assert!(fused.train_batch(&mut state2.rng, &real[..10], &z).is_err());
        let (real, z) = batch(2, 1);
        assert!(fused.train_batch(&mut state2.rng, &real, &z).is_err());
    }
}

//! The fused step's forward and backward passes, layer by layer.

use gemm::Parallelism;
use rand_chacha::ChaCha8Rng;

use super::math::*;
use super::{FusedTrainer, StepLosses};
use crate::adam::StepCoefficients;
use crate::cpu::matmul::{matmul_a_b, matmul_a_bt, matmul_at_b};
use crate::engine::params::Param;
use crate::model::{DISCRIMINATOR_WIDTHS, GENERATOR_WIDTHS, IMAGE_PIXELS};
use crate::recipe::fill_dropout_mask;

impl FusedTrainer {
    pub(super) fn parallelism(&self) -> Parallelism {
        if self.threads > 1 {
            Parallelism::Rayon(self.threads)
        } else {
            Parallelism::None
        }
    }

    pub(super) fn step(
        &mut self,
        rng: &mut ChaCha8Rng,
        real: &[f32],
        z: &[f32],
        b: usize,
    ) -> StepLosses {
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
    pub(super) fn discriminator_step(
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
    pub(super) fn generator_forward(&mut self, z: &[f32], b: usize, par: Parallelism) {
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
    pub(super) fn place_fakes(&mut self, b: usize, rng: &mut ChaCha8Rng) {
        let buf = &mut self.buffers;
        let rows = &mut buf.d_input[b * IMAGE_PIXELS..2 * b * IMAGE_PIXELS];
        let fakes = &buf.fakes[..b * IMAGE_PIXELS];
        let sources = &mut buf.fake_sources[..b * IMAGE_PIXELS];
        place_images(rows, fakes, self.recipe.translate, rng, Some(sources));
    }

    /// Copies the real images into the discriminator's rows `0..b`, shifted when the recipe
    /// says so.
    pub(super) fn place_real(&mut self, real: &[f32], b: usize, rng: &mut ChaCha8Rng) {
        let rows = &mut self.buffers.d_input[..b * IMAGE_PIXELS];
        place_images(rows, real, self.recipe.translate, rng, None);
    }

    /// Fresh dropout masks for rows `r0..r1` of both hidden layers, first layer first.
    pub(super) fn draw_masks(&mut self, r0: usize, r1: usize, rng: &mut ChaCha8Rng) {
        let d = DISCRIMINATOR_WIDTHS;
        let p = self.recipe.d_dropout;
        fill_dropout_mask(&mut self.buffers.d_masks[0][r0 * d[1]..r1 * d[1]], p, rng);
        fill_dropout_mask(&mut self.buffers.d_masks[1][r0 * d[2]..r1 * d[2]], p, rng);
    }

    /// The discriminator's pass over rows `r0..r1` of its input into `d_hidden` and `logits`.
    pub(super) fn discriminator_forward(&mut self, r0: usize, r1: usize, par: Parallelism) {
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
    pub(super) fn discriminator_input_gradient(&mut self, dl: &[f32], b: usize, par: Parallelism) {
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
    pub(super) fn generator_backward<'p>(
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
    pub(super) fn discriminator_backward(&mut self, dl: &[f32], rows: usize, par: Parallelism) {
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

//! The kernel step's forward and backward passes and Adam, as launches and matrix products.

use super::backend::{Backend, Kernel};
use super::layout::*;
use super::{Gradients, KernelTrainer, SLOPE};
use crate::adam::StepCoefficients;
use crate::model::{DISCRIMINATOR_WIDTHS, GENERATOR_WIDTHS, IMAGE_PIXELS, LATENT_DIM};

impl<B: Backend> KernelTrainer<B> {
    /// One batch: the generator's step, then the discriminator's on the same fakes.
    pub(super) fn step(
        &mut self,
        first: usize,
        b: usize,
        latent_row: usize,
        slot: usize,
    ) -> anyhow::Result<()> {
        let z = self.layout.latents + latent_row * LATENT_DIM;
        let fakes = self.layout.d_input + b * IMAGE_PIXELS;
        self.generator_forward(b, z, fakes)?;

        // The discriminator on the fakes, and the generator's loss.
        self.discriminator_forward(b, 2 * b)?;
        let (logits, dl, losses) = (self.layout.logits, self.layout.dl, self.layout.losses);
        let args = self
            .args()
            .buf(logits + b)
            .buf(dl + b)
            .buf(losses)
            .int(b)
            .int(slot);
        self.launch(Kernel::GeneratorLoss, 1, args)?;
        self.discriminator_backward(b, b, Gradients::OfInput)?;

        self.generator_backward(b, z, fakes)?;
        let steps = self.host.generator.steps + 1;
        self.adam_step(true, steps)?;
        self.discriminator_step(first, b, slot)
    }

    /// The generator's forward pass in training mode on the latent rows at `z`; its output
    /// lands in the discriminator's fake rows (`fakes`).
    pub(super) fn generator_forward(
        &mut self,
        b: usize,
        z: usize,
        fakes: usize,
    ) -> anyhow::Result<()> {
        let g = GENERATOR_WIDTHS;
        let l = &self.layout;
        let gen_values = l.generator.value_at;
        let (g_hidden, g_xhat, g_inv_std) = (l.g_hidden, l.g_xhat, l.g_inv_std);
        let (running_mean, running_var) = (l.running_mean, l.running_var);
        self.matmul(
            g_hidden[0],
            rows(z),
            transposed(gen_values[0]),
            b,
            g[1],
            g[0],
        )?;
        let args = self
            .args()
            .buf(g_hidden[0])
            .buf(gen_values[1])
            .int(b)
            .int(g[1])
            .real(SLOPE);
        self.launch(Kernel::AddBiasLeaky, b * g[1], args)?;
        for j in 0..3 {
            let (inputs, outputs) = (g[j + 1], g[j + 2]);
            self.matmul(
                g_xhat[j],
                rows(g_hidden[j]),
                transposed(gen_values[2 * j + 2]),
                b,
                outputs,
                inputs,
            )?;
            let stats = &self.host.norms[j];
            let (eps, momentum) = (stats.eps, stats.momentum);
            let args = self
                .args()
                .buf(g_xhat[j])
                .buf(g_hidden[j + 1])
                .buf(gen_values[2 * j + 3])
                .buf(gen_values[10 + 2 * j])
                .buf(gen_values[11 + 2 * j])
                .buf(g_inv_std[j])
                .buf(running_mean[j])
                .buf(running_var[j])
                .int(b)
                .int(outputs)
                .real(eps)
                .real(momentum)
                .real(SLOPE);
            self.launch(Kernel::BatchNormLeaky, outputs, args)?;
        }
        self.matmul(
            fakes,
            rows(g_hidden[3]),
            transposed(gen_values[8]),
            b,
            g[5],
            g[4],
        )?;
        let args = self.args().buf(fakes).buf(gen_values[9]).int(b).int(g[5]);
        self.launch(Kernel::AddBiasTanh, b * g[5], args)?;
        Ok(())
    }

    /// Back through the generator, from the discriminator's gradient at its input (the fake
    /// rows), to the generator's gradients.
    pub(super) fn generator_backward(
        &mut self,
        b: usize,
        z: usize,
        fakes: usize,
    ) -> anyhow::Result<()> {
        let g = GENERATOR_WIDTHS;
        let l = &self.layout;
        let (gen_values, gen_grads) = (l.generator.value_at, l.generator.grad_at);
        let (g_hidden, g_xhat, g_inv_std) = (l.g_hidden, l.g_xhat, l.g_inv_std);
        let (grad_a, grad_b, grad_images) = (l.grad_a, l.grad_b, l.grad_images);
        let args = self
            .args()
            .buf(grad_a)
            .buf(grad_images)
            .buf(fakes)
            .int(b * g[5]);
        self.launch(Kernel::TanhBackward, b * g[5], args)?;
        self.matmul(
            gen_grads[8],
            transposed(grad_a),
            rows(g_hidden[3]),
            g[5],
            g[4],
            b,
        )?;
        let args = self.args().buf(gen_grads[9]).buf(grad_a).int(b).int(g[5]);
        self.launch(Kernel::ColumnSums, g[5], args)?;
        self.matmul(grad_b, rows(grad_a), rows(gen_values[8]), b, g[4], g[5])?;
        let (mut grad, mut next) = (grad_b, grad_a);
        for j in (0..3).rev() {
            let (inputs, outputs) = (g[j + 1], g[j + 2]);
            let args = self
                .args()
                .buf(grad)
                .buf(g_hidden[j + 1])
                .buf(g_xhat[j])
                .buf(g_inv_std[j])
                .buf(gen_values[10 + 2 * j])
                .buf(gen_grads[10 + 2 * j])
                .buf(gen_grads[11 + 2 * j])
                .int(b)
                .int(outputs)
                .real(SLOPE);
            self.launch(Kernel::BatchNormBackward, outputs, args)?;
            self.matmul(
                gen_grads[2 * j + 2],
                transposed(grad),
                rows(g_hidden[j]),
                outputs,
                inputs,
                b,
            )?;
            let args = self
                .args()
                .buf(gen_grads[2 * j + 3])
                .buf(grad)
                .int(b)
                .int(outputs);
            self.launch(Kernel::ColumnSums, outputs, args)?;
            self.matmul(
                next,
                rows(grad),
                rows(gen_values[2 * j + 2]),
                b,
                inputs,
                outputs,
            )?;
            std::mem::swap(&mut grad, &mut next);
        }
        let args = self
            .args()
            .buf(grad)
            .buf(g_hidden[0])
            .int(b * g[1])
            .real(SLOPE);
        self.launch(Kernel::LeakyBackward, b * g[1], args)?;
        self.matmul(gen_grads[0], transposed(grad), rows(z), g[1], g[0], b)?;
        let args = self.args().buf(gen_grads[1]).buf(grad).int(b).int(g[1]);
        self.launch(Kernel::ColumnSums, g[1], args)?;
        Ok(())
    }

    /// The discriminator's step: real rows gathered, its pass over the fakes reused (its
    /// weights have not changed since).
    pub(super) fn discriminator_step(
        &mut self,
        first: usize,
        b: usize,
        slot: usize,
    ) -> anyhow::Result<()> {
        let (logits, dl, losses) = (self.layout.logits, self.layout.dl, self.layout.losses);
        let (data, d_input) = (self.layout.data, self.layout.d_input);
        let word_base = self.backend.word_base();
        let args = self
            .args()
            .buf(d_input)
            .buf(data)
            .word_buf(word_base, 0)
            .int(first)
            .int(b)
            .int(IMAGE_PIXELS);
        self.launch(Kernel::GatherRows, b * IMAGE_PIXELS, args)?;
        self.discriminator_forward(0, b)?;
        let bias_grad = self.layout.discriminator.grad_at[5];
        let args = self
            .args()
            .buf(logits)
            .buf(dl)
            .buf(losses)
            .buf(bias_grad)
            .int(b)
            .int(slot)
            .real(self.recipe.real_label as f32);
        self.launch(Kernel::DiscriminatorLoss, 1, args)?;
        self.discriminator_backward(0, 2 * b, Gradients::OfWeights)?;
        let steps = self.host.discriminator.steps + 1;
        self.adam_step(false, steps)
    }
    /// The discriminator's pass over rows `r0..r1` of its input into its hidden outputs and
    /// logits.
    pub(super) fn discriminator_forward(&mut self, r0: usize, r1: usize) -> anyhow::Result<()> {
        let d = DISCRIMINATOR_WIDTHS;
        let n = r1 - r0;
        let l = &self.layout;
        let [v0, c1, v2, c3, v4, c5, ..] = l.discriminator.value_at;
        let x = l.d_input + r0 * d[0];
        let h1 = l.d_hidden[0] + r0 * d[1];
        let h2 = l.d_hidden[1] + r0 * d[2];
        let logits = l.logits + r0;
        self.matmul(h1, rows(x), transposed(v0), n, d[1], d[0])?;
        let args = self.args().buf(h1).buf(c1).int(n).int(d[1]).real(SLOPE);
        self.launch(Kernel::AddBiasLeaky, n * d[1], args)?;
        self.matmul(h2, rows(h1), transposed(v2), n, d[2], d[1])?;
        let args = self.args().buf(h2).buf(c3).int(n).int(d[2]).real(SLOPE);
        self.launch(Kernel::AddBiasLeaky, n * d[2], args)?;
        let args = self
            .args()
            .buf(logits)
            .buf(h2)
            .buf(v4)
            .buf(c5)
            .int(n)
            .int(d[2]);
        self.launch(Kernel::RowLogits, n, args)
    }

    /// Back through the discriminator from d loss / d logit of its rows `r0..r0 + n`, into
    /// its parameters' gradients (the output bias's is the loss kernel's) or into its input
    /// (the fakes' gradient, in `grad_images`).
    pub(super) fn discriminator_backward(
        &mut self,
        r0: usize,
        n: usize,
        into: Gradients,
    ) -> anyhow::Result<()> {
        let d = DISCRIMINATOR_WIDTHS;
        let l = &self.layout;
        let (values, grads) = (l.discriminator.value_at, l.discriminator.grad_at);
        let (v0, v2, v4) = (values[0], values[2], values[4]);
        let x = l.d_input + r0 * d[0];
        let y1 = l.d_hidden[0] + r0 * d[1];
        let y2 = l.d_hidden[1] + r0 * d[2];
        let dl = l.dl + r0;
        let (grad_a, grad_b, grad_images) = (l.grad_a, l.grad_b, l.grad_images);
        let weights = into == Gradients::OfWeights;
        if weights {
            let args = self.args().buf(grads[4]).buf(y2).buf(dl).int(n).int(d[2]);
            self.launch(Kernel::WeightedColumnSums, d[2], args)?;
        }
        let args = self
            .args()
            .buf(grad_a)
            .buf(dl)
            .buf(v4)
            .buf(y2)
            .int(n)
            .int(d[2])
            .real(SLOPE);
        self.launch(Kernel::LogitBackward, n * d[2], args)?;
        if weights {
            self.matmul(grads[2], transposed(grad_a), rows(y1), d[2], d[1], n)?;
            let args = self.args().buf(grads[3]).buf(grad_a).int(n).int(d[2]);
            self.launch(Kernel::ColumnSums, d[2], args)?;
        }
        self.matmul(grad_b, rows(grad_a), rows(v2), n, d[1], d[2])?;
        let args = self.args().buf(grad_b).buf(y1).int(n * d[1]).real(SLOPE);
        self.launch(Kernel::LeakyBackward, n * d[1], args)?;
        if weights {
            self.matmul(grads[0], transposed(grad_b), rows(x), d[1], d[0], n)?;
            let args = self.args().buf(grads[1]).buf(grad_b).int(n).int(d[1]);
            self.launch(Kernel::ColumnSums, d[1], args)
        } else {
            self.matmul(grad_images, rows(grad_b), rows(v0), n, d[0], d[1])
        }
    }

    /// Adam step number `steps` over one whole network (and the generator's weight average).
    pub(super) fn adam_step(&mut self, generator: bool, steps: u64) -> anyhow::Result<()> {
        let [beta1, beta2, step_size, sqrt_bc2, eps] =
            StepCoefficients::new(&self.adam, steps).values();
        let layout = if generator {
            &self.layout.generator
        } else {
            &self.layout.discriminator
        };
        let (len, values, grads, m, v, average) = (
            layout.len,
            layout.values,
            layout.grads,
            layout.m,
            layout.v,
            layout.average,
        );
        let rate = match &self.host.average {
            Some((decay, _)) if generator => 1.0 - *decay,
            _ => 0.0,
        };
        let args = self.args().buf(values).buf(grads).buf(m).buf(v);
        let args = match average {
            Some(offset) => args.buf(offset),
            None => args.none(),
        };
        let args = args
            .int(len)
            .real(beta1)
            .real(beta2)
            .real(step_size)
            .real(sqrt_bc2)
            .real(eps)
            .real(rate);
        self.launch(Kernel::Adam, len, args)
    }
}

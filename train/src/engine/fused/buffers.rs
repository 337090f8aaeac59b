//! The fused step's activations and gradients, allocated once for the largest batch seen.

use crate::model::{DISCRIMINATOR_WIDTHS, GENERATOR_WIDTHS, IMAGE_PIXELS};

/// Activations and gradients of one batch, allocated for the largest batch seen.
#[derive(Default)]
pub(super) struct Buffers {
    pub(crate) batch: usize,
    /// Generator: the output of each hidden block (after LeakyReLU), `[B, width]`.
    pub(crate) g_hidden: [Vec<f32>; 4],
    /// Generator: the normalised pre-activations of the three BatchNorm layers.
    pub(crate) g_xhat: [Vec<f32>; 3],
    /// Generator: `1 / sqrt(var + eps)` per feature of the three BatchNorm layers.
    pub(crate) g_inv_std: [Vec<f32>; 3],
    /// Generator: its output (the fakes), `[B, 784]`.
    pub(crate) fakes: Vec<f32>,
    /// Discriminator input: real images in rows `0..B`, fakes in rows `B..2B`.
    pub(crate) d_input: Vec<f32>,
    /// Discriminator hidden outputs (after LeakyReLU and dropout), `[2B, 512]` and `[2B, 256]`.
    pub(crate) d_hidden: [Vec<f32>; 2],
    /// Dropout factors of the two hidden layers, same shapes (empty without dropout).
    pub(crate) d_masks: [Vec<f32>; 2],
    /// Discriminator logits, `[2B]`.
    pub(crate) logits: Vec<f32>,
    /// Where each pixel of the shifted fakes came from (`u32::MAX`: padding), `[B, 784]`.
    pub(crate) fake_sources: Vec<u32>,
    /// Gradient scratch: the widest layer's `[2B, 1024]` twice, plus the image gradient.
    pub(crate) grad_a: Vec<f32>,
    pub(crate) grad_b: Vec<f32>,
    pub(crate) grad_images: Vec<f32>,
    /// Per-feature sums.
    pub(crate) column_a: Vec<f32>,
    pub(crate) column_b: Vec<f32>,
}

impl Buffers {
    pub(crate) fn ensure(&mut self, batch: usize, dropout: bool) {
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

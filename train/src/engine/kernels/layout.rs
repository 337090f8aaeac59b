//! Where everything lives in the kernel step's arenas, and how a launch's arguments and a
//! row-major matrix product are written down.

use anyhow::ensure;

use super::backend::{ColumnMajorGemm, KernelArgs};
use crate::engine::params::{HostCopy, Network};
use crate::model::{DISCRIMINATOR_WIDTHS, GENERATOR_WIDTHS, IMAGE_PIXELS, LATENT_DIM};

/// Losses kept on the device between two reads.
pub(crate) const LOSS_SLOTS: usize = 512;

/// Hands out consecutive ranges of an arena.
#[derive(Default)]
pub(crate) struct Allocator {
    pub(crate) len: usize,
}

impl Allocator {
    pub(crate) fn take(&mut self, n: usize) -> usize {
        let offset = self.len;
        self.len += n;
        offset
    }
}

/// One network's parameters in the arena: values, gradients and Adam moments, each one
/// contiguous run of `len` floats in the order of the network's parameters.
pub(crate) struct NetworkLayout {
    pub(crate) len: usize,
    pub(crate) values: usize,
    pub(crate) grads: usize,
    pub(crate) m: usize,
    pub(crate) v: usize,
    /// The weight average (generator with a recipe that keeps one).
    pub(crate) average: Option<usize>,
    /// Where each parameter starts within a run.
    pub(crate) starts: Vec<usize>,
    /// Each parameter's values and gradient, as offsets into the arena (a copy of these is
    /// what a step reads, without allocating).
    pub(crate) value_at: [usize; MAX_PARAMS],
    pub(crate) grad_at: [usize; MAX_PARAMS],
}

/// Parameters of the larger network (the generator's 16).
pub(crate) const MAX_PARAMS: usize = 16;

impl NetworkLayout {
    pub(crate) fn new(
        arena: &mut Allocator,
        network: &Network,
        average: bool,
    ) -> anyhow::Result<Self> {
        ensure!(
            network.params.len() <= MAX_PARAMS,
            "a network of {} parameters (the kernel trainer knows the reference's)",
            network.params.len()
        );
        let mut starts = Vec::with_capacity(network.params.len());
        let mut len = 0;
        for param in &network.params {
            starts.push(len);
            len += param.value.len();
        }
        let (values, grads) = (arena.take(len), arena.take(len));
        let (mut value_at, mut grad_at) = ([0; MAX_PARAMS], [0; MAX_PARAMS]);
        for (i, start) in starts.iter().enumerate() {
            value_at[i] = values + start;
            grad_at[i] = grads + start;
        }
        Ok(Self {
            len,
            values,
            grads,
            m: arena.take(len),
            v: arena.take(len),
            average: average.then(|| arena.take(len)),
            starts,
            value_at,
            grad_at,
        })
    }
}

/// Where everything lives in the float arena (offsets), for batches of up to `batch` images.
pub(crate) struct Layout {
    pub(crate) generator: NetworkLayout,
    pub(crate) discriminator: NetworkLayout,
    /// Running mean and variance of the three BatchNorm layers.
    pub(crate) running_mean: [usize; 3],
    pub(crate) running_var: [usize; 3],
    /// The data set, `[images, 784]` in `[-1, 1]`.
    pub(crate) data: usize,
    /// The epoch's latent vectors, `[images, 100]`.
    pub(crate) latents: usize,
    /// Generator activations: hidden outputs `[B, width]`, BatchNorm's normalised inputs and
    /// `1 / sqrt(var + eps)`.
    pub(crate) g_hidden: [usize; 4],
    pub(crate) g_xhat: [usize; 3],
    pub(crate) g_inv_std: [usize; 3],
    /// The discriminator's input: real images in rows `0..B`, the fakes in rows `B..2B`.
    pub(crate) d_input: usize,
    pub(crate) d_hidden: [usize; 2],
    pub(crate) logits: usize,
    /// d loss / d logit, `[2B]`.
    pub(crate) dl: usize,
    /// Gradient scratch, `[2B, 1024]` each, and the gradient at the fakes, `[B, 784]`.
    pub(crate) grad_a: usize,
    pub(crate) grad_b: usize,
    pub(crate) grad_images: usize,
    /// Pairs (D loss, G loss), [`LOSS_SLOTS`] of them.
    pub(crate) losses: usize,
    /// Floats in all.
    pub(crate) floats: usize,
    /// Words: the epoch's order of the images.
    pub(crate) words: usize,
}

impl Layout {
    pub(crate) fn new(host: &HostCopy, images: usize, batch: usize) -> anyhow::Result<Self> {
        let g = GENERATOR_WIDTHS;
        let d = DISCRIMINATOR_WIDTHS;
        let mut arena = Allocator::default();
        let generator = NetworkLayout::new(&mut arena, &host.generator, host.average.is_some())?;
        let discriminator = NetworkLayout::new(&mut arena, &host.discriminator, false)?;
        let running_mean = [0, 1, 2].map(|j| arena.take(g[j + 2]));
        let running_var = [0, 1, 2].map(|j| arena.take(g[j + 2]));
        let data = arena.take(images * IMAGE_PIXELS);
        let latents = arena.take(images * LATENT_DIM);
        let g_hidden = [0, 1, 2, 3].map(|j| arena.take(batch * g[j + 1]));
        let g_xhat = [0, 1, 2].map(|j| arena.take(batch * g[j + 2]));
        let g_inv_std = [0, 1, 2].map(|j| arena.take(g[j + 2]));
        let d_input = arena.take(2 * batch * IMAGE_PIXELS);
        let d_hidden = [arena.take(2 * batch * d[1]), arena.take(2 * batch * d[2])];
        let logits = arena.take(2 * batch);
        let dl = arena.take(2 * batch);
        let grad_a = arena.take(2 * batch * 1024);
        let grad_b = arena.take(2 * batch * 1024);
        let grad_images = arena.take(batch * IMAGE_PIXELS);
        let losses = arena.take(2 * LOSS_SLOTS);
        Ok(Self {
            generator,
            discriminator,
            running_mean,
            running_var,
            data,
            latents,
            g_hidden,
            g_xhat,
            g_inv_std,
            d_input,
            d_hidden,
            logits,
            dl,
            grad_a,
            grad_b,
            grad_images,
            losses,
            floats: arena.len,
            words: images,
        })
    }
}

/// A row-major operand of [`KernelTrainer::matmul`]: its offset, and whether it is used
/// transposed.
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    pub(crate) offset: usize,
    pub(crate) transposed: bool,
}

/// `offset` as a row-major matrix.
pub(crate) fn rows(offset: usize) -> Operand {
    Operand {
        offset,
        transposed: false,
    }
}

/// The transpose of the row-major matrix at `offset`.
pub(crate) fn transposed(offset: usize) -> Operand {
    Operand {
        offset,
        transposed: true,
    }
}

/// The row-major product `C[m×n] = op(A)[m×k] · op(B)[k×n]` as the column-major call that
/// computes it: row-major `C` is column-major `Cᵀ = op(B)ᵀ · op(A)ᵀ`.
pub(crate) fn row_major_gemm(
    c: usize,
    a: Operand,
    b: Operand,
    m: usize,
    n: usize,
    k: usize,
) -> ColumnMajorGemm {
    // Row-major op(A) is [m×k]: stored [m×k] (leading dimension k) or, transposed, [k×m] (m).
    let lda = if a.transposed { m } else { k };
    let ldb = if b.transposed { k } else { n };
    ColumnMajorGemm {
        trans_a: b.transposed,
        trans_b: a.transposed,
        m: n,
        n: m,
        k,
        a: b.offset,
        lda: ldb,
        b: a.offset,
        ldb: lda,
        c,
        ldc: n,
    }
}

/// Builds one launch's [`KernelArgs`].
pub(crate) struct Args {
    pub(crate) args: KernelArgs,
    pub(crate) buffers: usize,
    pub(crate) ints: usize,
    pub(crate) reals: usize,
    pub(crate) base: u64,
}

impl Args {
    pub(crate) fn buf(mut self, offset: usize) -> Self {
        self.args.p[self.buffers] = self.base + 4 * offset as u64;
        self.buffers += 1;
        self
    }

    pub(crate) fn word_buf(mut self, word_base: u64, offset: usize) -> Self {
        self.args.p[self.buffers] = word_base + 4 * offset as u64;
        self.buffers += 1;
        self
    }

    /// A null buffer.
    pub(crate) fn none(mut self) -> Self {
        self.args.p[self.buffers] = 0;
        self.buffers += 1;
        self
    }

    pub(crate) fn int(mut self, value: usize) -> Self {
        self.args.i[self.ints] = value as i32;
        self.ints += 1;
        self
    }

    pub(crate) fn real(mut self, value: f32) -> Self {
        self.args.f[self.reals] = value;
        self.reals += 1;
        self
    }
}

//! The reference GAN's training step as a fixed sequence of kernels and matrix products over
//! one block of device memory: the shape a GPU needs to run the step without per-operation
//! allocations and host round trips.
//!
//! candle on CUDA allocates every intermediate tensor and launches each element-wise operation
//! on its own; at batch 64 that bookkeeping, not arithmetic, sets the pace. Here the data set,
//! the epoch's latent vectors, the parameters with their gradients and Adam moments, and every
//! activation live in one arena allocated once. A batch is some 60 launches — cuBLAS matrix
//! products and the kernels of `kernels.h` (bias with activation, BatchNorm forward and
//! backward each as one kernel, one Adam kernel per network) — and the host reads nothing back
//! until it asks for the losses.
//!
//! The step is written against [`Backend`]: [`cuda::CudaBackend`] runs it on an NVIDIA GPU,
//! and [`emulator::Emulator`] runs the same kernel source, compiled for the CPU, one thread at a
//! time. The tests train the emulated step beside [`crate::fused::FusedTrainer`] and require
//! the same losses, fakes and parameters, so the kernels and the order of the step are checked
//! on any machine; the CUDA backend adds only the launches and cuBLAS calls.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod emulator;

use anyhow::{bail, ensure, Context};

use crate::adam::{AdamConfig, StepCoefficients};
use crate::engine::{Batch, TrainingStep};
use crate::fused::{store, HostCopy, Network};
use crate::gan::{DISCRIMINATOR_WIDTHS, GENERATOR_WIDTHS, IMAGE_PIXELS, LATENT_DIM, LEAKY_SLOPE};
use crate::recipe::Recipe;
use crate::state::TrainState;

/// The arguments of one kernel launch, laid out as `struct KernelArgs` in `kernels.h`:
/// addresses of buffers, integers and reals, by position.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelArgs {
    /// Buffer addresses (device or host, as the backend's arena has them).
    pub p: [u64; 8],
    /// Integer arguments.
    pub i: [i32; 8],
    /// Real arguments.
    pub f: [f32; 8],
}

/// The kernels of `kernels.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Kernel {
    GatherRows,
    AddBiasLeaky,
    AddBiasTanh,
    BatchNormLeaky,
    RowLogits,
    GeneratorLoss,
    DiscriminatorLoss,
    LogitBackward,
    LeakyBackward,
    TanhBackward,
    ColumnSums,
    WeightedColumnSums,
    BatchNormBackward,
    Adam,
}

impl Kernel {
    /// Every kernel, in declaration order.
    pub const ALL: [Kernel; 14] = [
        Kernel::GatherRows,
        Kernel::AddBiasLeaky,
        Kernel::AddBiasTanh,
        Kernel::BatchNormLeaky,
        Kernel::RowLogits,
        Kernel::GeneratorLoss,
        Kernel::DiscriminatorLoss,
        Kernel::LogitBackward,
        Kernel::LeakyBackward,
        Kernel::TanhBackward,
        Kernel::ColumnSums,
        Kernel::WeightedColumnSums,
        Kernel::BatchNormBackward,
        Kernel::Adam,
    ];

    /// The kernel's name in `kernels.h`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::GatherRows => "gather_rows",
            Kernel::AddBiasLeaky => "add_bias_leaky",
            Kernel::AddBiasTanh => "add_bias_tanh",
            Kernel::BatchNormLeaky => "batch_norm_leaky",
            Kernel::RowLogits => "row_logits",
            Kernel::GeneratorLoss => "generator_loss",
            Kernel::DiscriminatorLoss => "discriminator_loss",
            Kernel::LogitBackward => "logit_backward",
            Kernel::LeakyBackward => "leaky_backward",
            Kernel::TanhBackward => "tanh_backward",
            Kernel::ColumnSums => "column_sums",
            Kernel::WeightedColumnSums => "weighted_column_sums",
            Kernel::BatchNormBackward => "batch_norm_backward",
            Kernel::Adam => "adam",
        }
    }
}

/// One single-precision matrix product in BLAS's column-major terms,
/// `C[m×n] = op(A)[m×k] · op(B)[k×n]` (`C` overwritten); operands are offsets into the float
/// arena.
#[derive(Clone, Copy, Debug)]
pub struct ColumnMajorGemm {
    /// Whether `A` is used transposed.
    pub trans_a: bool,
    /// Whether `B` is used transposed.
    pub trans_b: bool,
    /// Rows of `C`.
    pub m: usize,
    /// Columns of `C`.
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// `A`'s offset and leading dimension.
    pub a: usize,
    #[allow(missing_docs)]
    pub lda: usize,
    /// `B`'s offset and leading dimension.
    pub b: usize,
    #[allow(missing_docs)]
    pub ldb: usize,
    /// `C`'s offset and leading dimension.
    pub c: usize,
    #[allow(missing_docs)]
    pub ldc: usize,
}

/// Where the step runs: an arena of floats and one of 32-bit words, kernels and matrix products
/// over them. Work is queued in order; reads wait for it.
pub trait Backend {
    /// The address of the float arena's first element, as kernels see it.
    fn float_base(&mut self) -> u64;
    /// The address of the word arena's first element, as kernels see it.
    fn word_base(&mut self) -> u64;
    /// Runs `kernel` over `threads` threads.
    fn launch(&mut self, kernel: Kernel, threads: usize, args: &KernelArgs) -> anyhow::Result<()>;
    /// Runs one matrix product.
    fn gemm(&mut self, gemm: &ColumnMajorGemm) -> anyhow::Result<()>;
    /// Copies `values` into the float arena at `offset`.
    fn write_floats(&mut self, offset: usize, values: &[f32]) -> anyhow::Result<()>;
    /// Copies `values` into the word arena at `offset`.
    fn write_words(&mut self, offset: usize, values: &[u32]) -> anyhow::Result<()>;
    /// Copies the float arena from `offset` into `out`, once the queued work is done.
    fn read_floats(&mut self, offset: usize, out: &mut [f32]) -> anyhow::Result<()>;
}

impl Backend for Box<dyn Backend> {
    fn float_base(&mut self) -> u64 {
        (**self).float_base()
    }

    fn word_base(&mut self) -> u64 {
        (**self).word_base()
    }

    fn launch(&mut self, kernel: Kernel, threads: usize, args: &KernelArgs) -> anyhow::Result<()> {
        (**self).launch(kernel, threads, args)
    }

    fn gemm(&mut self, gemm: &ColumnMajorGemm) -> anyhow::Result<()> {
        (**self).gemm(gemm)
    }

    fn write_floats(&mut self, offset: usize, values: &[f32]) -> anyhow::Result<()> {
        (**self).write_floats(offset, values)
    }

    fn write_words(&mut self, offset: usize, values: &[u32]) -> anyhow::Result<()> {
        (**self).write_words(offset, values)
    }

    fn read_floats(&mut self, offset: usize, out: &mut [f32]) -> anyhow::Result<()> {
        (**self).read_floats(offset, out)
    }
}

/// A kernel trainer on whichever backend serves `device`: the GPU's for CUDA (with the
/// `cuda` feature), the emulator for the CPU (slow; it exists to check the step).
pub fn for_device(
    state: &TrainState,
    data: &[f32],
    batch: usize,
    device: &candle_core::Device,
) -> anyhow::Result<KernelTrainer<Box<dyn Backend>>> {
    match device {
        candle_core::Device::Cpu => KernelTrainer::new(state, data, batch, |floats, words| {
            Ok(Box::new(emulator::Emulator::new(floats, words)?) as Box<dyn Backend>)
        }),
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(cuda_device) => {
            KernelTrainer::new(state, data, batch, |floats, words| {
                Ok(
                    Box::new(cuda::CudaBackend::new(cuda_device, floats, words)?)
                        as Box<dyn Backend>,
                )
            })
        }
        other => bail!("the kernel trainer does not run on {other:?}"),
    }
}

/// Losses kept on the device between two reads.
const LOSS_SLOTS: usize = 512;

/// Hands out consecutive ranges of an arena.
#[derive(Default)]
struct Allocator {
    len: usize,
}

impl Allocator {
    fn take(&mut self, n: usize) -> usize {
        let offset = self.len;
        self.len += n;
        offset
    }
}

/// One network's parameters in the arena: values, gradients and Adam moments, each one
/// contiguous run of `len` floats in the order of the network's parameters.
struct NetworkLayout {
    len: usize,
    values: usize,
    grads: usize,
    m: usize,
    v: usize,
    /// The weight average (generator with a recipe that keeps one).
    average: Option<usize>,
    /// Where each parameter starts within a run.
    starts: Vec<usize>,
    /// Each parameter's values and gradient, as offsets into the arena (a copy of these is
    /// what a step reads, without allocating).
    value_at: [usize; MAX_PARAMS],
    grad_at: [usize; MAX_PARAMS],
}

/// Parameters of the larger network (the generator's 16).
const MAX_PARAMS: usize = 16;

impl NetworkLayout {
    fn new(arena: &mut Allocator, network: &Network, average: bool) -> anyhow::Result<Self> {
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
struct Layout {
    generator: NetworkLayout,
    discriminator: NetworkLayout,
    /// Running mean and variance of the three BatchNorm layers.
    running_mean: [usize; 3],
    running_var: [usize; 3],
    /// The data set, `[images, 784]` in `[-1, 1]`.
    data: usize,
    /// The epoch's latent vectors, `[images, 100]`.
    latents: usize,
    /// Generator activations: hidden outputs `[B, width]`, BatchNorm's normalised inputs and
    /// `1 / sqrt(var + eps)`.
    g_hidden: [usize; 4],
    g_xhat: [usize; 3],
    g_inv_std: [usize; 3],
    /// The discriminator's input: real images in rows `0..B`, the fakes in rows `B..2B`.
    d_input: usize,
    d_hidden: [usize; 2],
    logits: usize,
    /// d loss / d logit, `[2B]`.
    dl: usize,
    /// Gradient scratch, `[2B, 1024]` each, and the gradient at the fakes, `[B, 784]`.
    grad_a: usize,
    grad_b: usize,
    grad_images: usize,
    /// Pairs (D loss, G loss), [`LOSS_SLOTS`] of them.
    losses: usize,
    /// Floats in all.
    floats: usize,
    /// Words: the epoch's order of the images.
    words: usize,
}

impl Layout {
    fn new(host: &HostCopy, images: usize, batch: usize) -> anyhow::Result<Self> {
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
struct Operand {
    offset: usize,
    transposed: bool,
}

/// `offset` as a row-major matrix.
fn rows(offset: usize) -> Operand {
    Operand {
        offset,
        transposed: false,
    }
}

/// The transpose of the row-major matrix at `offset`.
fn transposed(offset: usize) -> Operand {
    Operand {
        offset,
        transposed: true,
    }
}

/// The row-major product `C[m×n] = op(A)[m×k] · op(B)[k×n]` as the column-major call that
/// computes it: row-major `C` is column-major `Cᵀ = op(B)ᵀ · op(A)ᵀ`.
fn row_major_gemm(
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
struct Args {
    args: KernelArgs,
    buffers: usize,
    ints: usize,
    reals: usize,
    base: u64,
}

impl Args {
    fn buf(mut self, offset: usize) -> Self {
        self.args.p[self.buffers] = self.base + 4 * offset as u64;
        self.buffers += 1;
        self
    }

    fn word_buf(mut self, word_base: u64, offset: usize) -> Self {
        self.args.p[self.buffers] = word_base + 4 * offset as u64;
        self.buffers += 1;
        self
    }

    /// A null buffer.
    fn none(mut self) -> Self {
        self.args.p[self.buffers] = 0;
        self.buffers += 1;
        self
    }

    fn int(mut self, value: usize) -> Self {
        self.args.i[self.ints] = value as i32;
        self.ints += 1;
        self
    }

    fn real(mut self, value: f32) -> Self {
        self.args.f[self.reals] = value;
        self.reals += 1;
        self
    }
}

/// The training step as kernels on a [`Backend`]; see the module documentation.
pub struct KernelTrainer<B: Backend> {
    backend: B,
    layout: Layout,
    host: HostCopy,
    adam: AdamConfig,
    recipe: Recipe,
    images: usize,
    batch: usize,
    /// Latent rows written by the last [`KernelTrainer::begin_epoch`].
    latent_rows: usize,
    /// Loss slots used since the last read, and the losses read but not yet taken.
    slots_used: usize,
    losses_read: Vec<(f32, f32)>,
    last_batch: usize,
}

/// What a pass back through the discriminator computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gradients {
    /// Its parameters' gradients (the discriminator's step).
    OfWeights,
    /// The gradient at its input (the generator's step).
    OfInput,
}

/// The slope of every LeakyReLU.
const SLOPE: f32 = LEAKY_SLOPE as f32;

impl<B: Backend> KernelTrainer<B> {
    /// Copies `state` and the data set (`[images, 784]` in `[-1, 1]`) into an arena that
    /// `backend` makes for it (`floats`, `words` long) for batches of up to `batch` images.
    pub fn new(
        state: &TrainState,
        data: &[f32],
        batch: usize,
        backend: impl FnOnce(usize, usize) -> anyhow::Result<B>,
    ) -> anyhow::Result<Self> {
        let recipe = state.recipe;
        if recipe.d_dropout > 0.0 || recipe.translate > 0 {
            bail!(
                "the kernel trainer runs the reference step (label smoothing and the weight \
                 average allowed); train with dropout or random shifts on the candle engine"
            );
        }
        if !data.len().is_multiple_of(IMAGE_PIXELS) {
            bail!("{} pixels are not whole 28x28 images", data.len());
        }
        let images = data.len() / IMAGE_PIXELS;
        if batch < 2 || images < 2 {
            bail!("BatchNorm1d in training mode needs batches of at least two images");
        }
        let host = HostCopy::copy_in(state)?;
        let layout = Layout::new(&host, images, batch)?;
        let mut backend =
            backend(layout.floats, layout.words).context("allocating the trainer's memory")?;
        backend.write_floats(layout.data, data)?;
        let mut trainer = Self {
            backend,
            layout,
            host,
            adam: state.opt_g.config(),
            recipe,
            images,
            batch,
            latent_rows: 0,
            slots_used: 0,
            losses_read: Vec::new(),
            last_batch: 0,
        };
        trainer.upload_state()?;
        Ok(trainer)
    }

    /// Copies the host copy of the parameters, moments, statistics and average to the arena.
    fn upload_state(&mut self) -> anyhow::Result<()> {
        let b = &mut self.backend;
        for (network, layout) in [
            (&self.host.generator, &self.layout.generator),
            (&self.host.discriminator, &self.layout.discriminator),
        ] {
            for (param, &start) in network.params.iter().zip(&layout.starts) {
                b.write_floats(layout.values + start, &param.value)?;
                b.write_floats(layout.m + start, &param.m)?;
                b.write_floats(layout.v + start, &param.v)?;
            }
        }
        if let (Some((_, values)), Some(average)) =
            (&self.host.average, self.layout.generator.average)
        {
            for (value, &start) in values.iter().zip(&self.layout.generator.starts) {
                b.write_floats(average + start, value)?;
            }
        }
        for (j, stats) in self.host.norms.iter().enumerate() {
            b.write_floats(self.layout.running_mean[j], &stats.mean)?;
            b.write_floats(self.layout.running_var[j], &stats.var)?;
        }
        Ok(())
    }

    /// Reads the arena's parameters, moments, statistics and average into the host copy.
    fn download_state(&mut self) -> anyhow::Result<()> {
        let b = &mut self.backend;
        for (network, layout) in [
            (&mut self.host.generator, &self.layout.generator),
            (&mut self.host.discriminator, &self.layout.discriminator),
        ] {
            for (param, &start) in network.params.iter_mut().zip(&layout.starts) {
                b.read_floats(layout.values + start, &mut param.value)?;
                b.read_floats(layout.m + start, &mut param.m)?;
                b.read_floats(layout.v + start, &mut param.v)?;
            }
        }
        if let (Some((_, values)), Some(average)) =
            (&mut self.host.average, self.layout.generator.average)
        {
            for (value, &start) in values.iter_mut().zip(&self.layout.generator.starts) {
                b.read_floats(average + start, value)?;
            }
        }
        for (j, stats) in self.host.norms.iter_mut().enumerate() {
            b.read_floats(self.layout.running_mean[j], &mut stats.mean)?;
            b.read_floats(self.layout.running_var[j], &mut stats.var)?;
        }
        Ok(())
    }

    /// Copies the trained state back into `state`, ready for a checkpoint or an export.
    pub fn store_into(&mut self, state: &mut TrainState) -> anyhow::Result<()> {
        self.download_state()?;
        let host = &self.host;
        store(
            state,
            &host.generator,
            &host.discriminator,
            &host.norms,
            &host.average,
        )
    }

    /// Starts an epoch: the order of the images and the latent vectors of its batches, one
    /// after another (`[rows, 100]`).
    pub fn begin_epoch(&mut self, order: &[u32], latents: &[f32]) -> anyhow::Result<()> {
        ensure!(
            order.len() == self.images && order.iter().all(|&i| (i as usize) < self.images),
            "the epoch's order is not an order of the {} images",
            self.images
        );
        ensure!(
            latents.len().is_multiple_of(LATENT_DIM) && latents.len() <= self.images * LATENT_DIM,
            "{} latent values do not fit the epoch",
            latents.len()
        );
        self.backend.write_words(0, order)?;
        self.backend.write_floats(self.layout.latents, latents)?;
        self.latent_rows = latents.len() / LATENT_DIM;
        Ok(())
    }

    /// Queues one batch of the reference loop: the images at positions `first..first + len`
    /// of the epoch's order, with latent rows `latent_row..latent_row + len`. Losses stay on
    /// the device until [`KernelTrainer::take_losses`].
    pub fn train_batch(
        &mut self,
        first: usize,
        len: usize,
        latent_row: usize,
    ) -> anyhow::Result<()> {
        ensure!(
            (2..=self.batch).contains(&len),
            "a batch of {len} images (this trainer takes 2 to {})",
            self.batch
        );
        ensure!(
            first + len <= self.images && latent_row + len <= self.latent_rows,
            "batch outside the epoch"
        );
        if self.slots_used == LOSS_SLOTS {
            self.read_losses()?;
        }
        self.step(first, len, latent_row, self.slots_used)?;
        self.slots_used += 1;
        self.host.generator.steps += 1;
        self.host.discriminator.steps += 1;
        for stats in &mut self.host.norms {
            stats.batches_tracked += 1;
        }
        self.last_batch = len;
        Ok(())
    }

    /// Reads the losses queued since the last read.
    fn read_losses(&mut self) -> anyhow::Result<()> {
        let mut values = vec![0.0; 2 * self.slots_used];
        self.backend.read_floats(self.layout.losses, &mut values)?;
        self.losses_read
            .extend(values.chunks_exact(2).map(|pair| (pair[0], pair[1])));
        self.slots_used = 0;
        Ok(())
    }

    /// The losses `(D, G)` of every batch since the last call, in order; waits for them.
    pub fn take_losses(&mut self) -> anyhow::Result<Vec<(f32, f32)>> {
        self.read_losses()?;
        Ok(std::mem::take(&mut self.losses_read))
    }

    /// The fakes of the last batch, `[batch, 784]` row-major in `[-1, 1]`; waits for them.
    pub fn fakes(&mut self) -> anyhow::Result<Vec<f32>> {
        let b = self.last_batch;
        let mut out = vec![0.0; b * IMAGE_PIXELS];
        self.backend
            .read_floats(self.layout.d_input + b * IMAGE_PIXELS, &mut out)?;
        Ok(out)
    }

    fn args(&mut self) -> Args {
        Args {
            args: KernelArgs::default(),
            buffers: 0,
            ints: 0,
            reals: 0,
            base: self.backend.float_base(),
        }
    }

    fn launch(&mut self, kernel: Kernel, threads: usize, args: Args) -> anyhow::Result<()> {
        self.backend.launch(kernel, threads, &args.args)
    }

    /// Row-major `c[m×n] = op(a)[m×k] · op(b)[k×n]`.
    fn matmul(
        &mut self,
        c: usize,
        a: Operand,
        b: Operand,
        m: usize,
        n: usize,
        k: usize,
    ) -> anyhow::Result<()> {
        self.backend.gemm(&row_major_gemm(c, a, b, m, n, k))
    }

    /// One batch: the generator's step, then the discriminator's on the same fakes.
    fn step(
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
    fn generator_forward(&mut self, b: usize, z: usize, fakes: usize) -> anyhow::Result<()> {
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
    fn generator_backward(&mut self, b: usize, z: usize, fakes: usize) -> anyhow::Result<()> {
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
    fn discriminator_step(&mut self, first: usize, b: usize, slot: usize) -> anyhow::Result<()> {
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
    fn discriminator_forward(&mut self, r0: usize, r1: usize) -> anyhow::Result<()> {
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
    fn discriminator_backward(
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
    fn adam_step(&mut self, generator: bool, steps: u64) -> anyhow::Result<()> {
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

/// The kernel step as a [`TrainingStep`] (the trainer holds the images on its device).
impl<B: Backend> TrainingStep for KernelTrainer<B> {
    fn describe(&self, device: &candle_core::Device) -> String {
        if device.is_cpu() {
            "cpu (kernel step, emulated)".to_string()
        } else {
            format!("{} (kernel step)", crate::device::device_name(device))
        }
    }

    fn begin_epoch(&mut self, order: &[u32], latents: &[f32]) -> anyhow::Result<()> {
        KernelTrainer::begin_epoch(self, order, latents)
    }

    fn train_batch(&mut self, _state: &mut TrainState, batch: &Batch) -> anyhow::Result<()> {
        KernelTrainer::train_batch(self, batch.start, batch.len, batch.latent_row)
    }

    fn take_losses(&mut self) -> anyhow::Result<Vec<(f32, f32)>> {
        KernelTrainer::take_losses(self)
    }

    fn fakes(&mut self) -> anyhow::Result<Vec<f32>> {
        KernelTrainer::fakes(self)
    }

    fn store_into(&mut self, state: &mut TrainState) -> anyhow::Result<()> {
        KernelTrainer::store_into(self, state)
    }
}

#[cfg(test)]
mod tests;

//! What the kernel step runs on: the kernels of `kernels.h`, their arguments, the matrix
//! products, and the [`Backend`] that runs them over its arenas.

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

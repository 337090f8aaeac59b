//! The kernels of `kernels.h` compiled for the CPU and run one thread at a time, with a plain
//! column-major matrix product: a [`Backend`] that computes what the GPU computes, slowly. The
//! tests check the kernel trainer with it on machines without a GPU.

use anyhow::{bail, ensure};

use super::{Backend, ColumnMajorGemm, Kernel, KernelArgs};

/// One emulated GPU thread of a kernel.
type EmulatedKernel = unsafe extern "C" fn(KernelArgs, u32);

extern "C" {
    fn emulated_gather_rows(args: KernelArgs, thread: u32);
    fn emulated_add_bias_leaky(args: KernelArgs, thread: u32);
    fn emulated_add_bias_tanh(args: KernelArgs, thread: u32);
    fn emulated_batch_norm_leaky(args: KernelArgs, thread: u32);
    fn emulated_row_logits(args: KernelArgs, thread: u32);
    fn emulated_generator_loss(args: KernelArgs, thread: u32);
    fn emulated_discriminator_loss(args: KernelArgs, thread: u32);
    fn emulated_logit_backward(args: KernelArgs, thread: u32);
    fn emulated_leaky_backward(args: KernelArgs, thread: u32);
    fn emulated_tanh_backward(args: KernelArgs, thread: u32);
    fn emulated_column_sums(args: KernelArgs, thread: u32);
    fn emulated_weighted_column_sums(args: KernelArgs, thread: u32);
    fn emulated_batch_norm_backward(args: KernelArgs, thread: u32);
    fn emulated_adam(args: KernelArgs, thread: u32);
}

fn emulated(kernel: Kernel) -> EmulatedKernel {
    match kernel {
        Kernel::GatherRows => emulated_gather_rows,
        Kernel::AddBiasLeaky => emulated_add_bias_leaky,
        Kernel::AddBiasTanh => emulated_add_bias_tanh,
        Kernel::BatchNormLeaky => emulated_batch_norm_leaky,
        Kernel::RowLogits => emulated_row_logits,
        Kernel::GeneratorLoss => emulated_generator_loss,
        Kernel::DiscriminatorLoss => emulated_discriminator_loss,
        Kernel::LogitBackward => emulated_logit_backward,
        Kernel::LeakyBackward => emulated_leaky_backward,
        Kernel::TanhBackward => emulated_tanh_backward,
        Kernel::ColumnSums => emulated_column_sums,
        Kernel::WeightedColumnSums => emulated_weighted_column_sums,
        Kernel::BatchNormBackward => emulated_batch_norm_backward,
        Kernel::Adam => emulated_adam,
    }
}

/// The CPU stand-in for a GPU: two arenas in host memory.
pub struct Emulator {
    floats: Vec<f32>,
    words: Vec<u32>,
}

impl Emulator {
    /// Arenas of `floats` and `words` elements, zeroed.
    pub fn new(floats: usize, words: usize) -> anyhow::Result<Self> {
        Ok(Self {
            floats: vec![0.0; floats],
            words: vec![0; words],
        })
    }

    /// Whether every address in `args` that is not null lies inside one of the arenas.
    fn addresses_inside(&mut self, args: &KernelArgs) -> bool {
        let floats = self.floats.as_ptr_range();
        let words = self.words.as_ptr_range();
        args.p.iter().all(|&p| {
            p == 0
                || (floats.start as u64..floats.end as u64).contains(&p)
                || (words.start as u64..words.end as u64).contains(&p)
        })
    }
}

impl Backend for Emulator {
    fn float_base(&mut self) -> u64 {
        self.floats.as_mut_ptr() as u64
    }

    fn word_base(&mut self) -> u64 {
        self.words.as_mut_ptr() as u64
    }

    fn launch(&mut self, kernel: Kernel, threads: usize, args: &KernelArgs) -> anyhow::Result<()> {
        if !self.addresses_inside(args) {
            bail!("{}: an argument points outside the arenas", kernel.name());
        }
        let run = emulated(kernel);
        for thread in 0..threads {
            // SAFETY: the kernel reads and writes through the addresses in `args`, which point
            // into this emulator's arenas (checked above); the kernel trainer sizes each launch
            // to the buffers it passes, and the tests check its results against the CPU trainer.
            unsafe { run(*args, thread as u32) };
        }
        Ok(())
    }

    fn gemm(&mut self, g: &ColumnMajorGemm) -> anyhow::Result<()> {
        let extent = |offset: usize, ld: usize, rows: usize, cols: usize| {
            offset + ld * cols.saturating_sub(1) + rows
        };
        let (a_rows, a_cols) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (b_rows, b_cols) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        ensure!(
            g.lda >= a_rows && g.ldb >= b_rows && g.ldc >= g.m,
            "gemm: a leading dimension is too small: {g:?}"
        );
        let len = self.floats.len();
        ensure!(
            extent(g.a, g.lda, a_rows, a_cols) <= len
                && extent(g.b, g.ldb, b_rows, b_cols) <= len
                && extent(g.c, g.ldc, g.m, g.n) <= len,
            "gemm: an operand lies outside the arena: {g:?}"
        );
        let mut c = vec![0f32; g.m * g.n];
        let x = &self.floats;
        for j in 0..g.n {
            for i in 0..g.m {
                let mut sum = 0.0f32;
                for l in 0..g.k {
                    let a = if g.trans_a {
                        x[g.a + l + i * g.lda]
                    } else {
                        x[g.a + i + l * g.lda]
                    };
                    let b = if g.trans_b {
                        x[g.b + j + l * g.ldb]
                    } else {
                        x[g.b + l + j * g.ldb]
                    };
                    sum += a * b;
                }
                c[i + j * g.m] = sum;
            }
        }
        for j in 0..g.n {
            for i in 0..g.m {
                self.floats[g.c + i + j * g.ldc] = c[i + j * g.m];
            }
        }
        Ok(())
    }

    fn write_floats(&mut self, offset: usize, values: &[f32]) -> anyhow::Result<()> {
        range(&mut self.floats, offset, values.len())?.copy_from_slice(values);
        Ok(())
    }

    fn write_words(&mut self, offset: usize, values: &[u32]) -> anyhow::Result<()> {
        range(&mut self.words, offset, values.len())?.copy_from_slice(values);
        Ok(())
    }

    fn read_floats(&mut self, offset: usize, out: &mut [f32]) -> anyhow::Result<()> {
        out.copy_from_slice(range(&mut self.floats, offset, out.len())?);
        Ok(())
    }
}

/// Elements `offset..offset + len` of `arena`, or an error when they are not all inside.
fn range<T>(arena: &mut [T], offset: usize, len: usize) -> anyhow::Result<&mut [T]> {
    let size = arena.len();
    offset
        .checked_add(len)
        .and_then(|end| arena.get_mut(offset..end))
        .ok_or_else(|| anyhow::anyhow!("{len} elements at {offset} lie outside an arena of {size}"))
}

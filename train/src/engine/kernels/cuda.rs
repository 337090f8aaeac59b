//! The kernel trainer's [`Backend`] on an NVIDIA GPU: the arenas in device memory, the kernels
//! as PTX built by nvcc (`build.rs`), matrix products by cuBLAS, all queued on candle's stream
//! for the device.

use std::sync::Arc;

use anyhow::Context;
use candle_core::cuda_backend::cudarc;
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
};

use super::{Backend, ColumnMajorGemm, Kernel, KernelArgs};

/// The kernels of `kernels.h`, as PTX.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));

/// Threads per block of every launch.
const BLOCK: usize = 256;

// SAFETY: `KernelArgs` is `repr(C)` plain data, laid out as the kernels' parameter struct.
unsafe impl DeviceRepr for KernelArgs {}

/// A GPU with the trainer's arenas and kernels.
pub struct CudaBackend {
    stream: Arc<CudaStream>,
    blas: Arc<CudaBlas>,
    functions: Vec<CudaFunction>,
    floats: CudaSlice<f32>,
    words: CudaSlice<u32>,
    float_base: u64,
    word_base: u64,
}

impl CudaBackend {
    /// Loads the kernels on `device` and allocates arenas of `floats` and `words` elements.
    pub fn new(
        device: &candle_core::CudaDevice,
        floats: usize,
        words: usize,
    ) -> anyhow::Result<Self> {
        let stream = device.cuda_stream();
        let blas = device.cublas_handle();
        let module = stream
            .context()
            .load_module(cudarc::nvrtc::Ptx::from_src(PTX))
            .context("loading the trainer's kernels")?;
        let functions = Kernel::ALL
            .iter()
            .map(|kernel| {
                module
                    .load_function(kernel.name())
                    .with_context(|| format!("kernel {}", kernel.name()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let floats_slice = stream
            .alloc_zeros::<f32>(floats.max(1))
            .with_context(|| format!("allocating {} MiB on the GPU", (floats * 4) >> 20))?;
        let words_slice = stream.alloc_zeros::<u32>(words.max(1))?;
        let float_base = floats_slice.device_ptr(&stream).0;
        let word_base = words_slice.device_ptr(&stream).0;
        Ok(Self {
            stream,
            blas,
            functions,
            floats: floats_slice,
            words: words_slice,
            float_base,
            word_base,
        })
    }

    fn float_address(&self, offset: usize) -> u64 {
        self.float_base + 4 * offset as u64
    }
}

fn operation(transposed: bool) -> cublasOperation_t {
    if transposed {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// `value` as a cuBLAS dimension.
fn dim(value: usize) -> anyhow::Result<i32> {
    i32::try_from(value).context("matrix dimension too large for cuBLAS")
}

impl Backend for CudaBackend {
    fn float_base(&mut self) -> u64 {
        self.float_base
    }

    fn word_base(&mut self) -> u64 {
        self.word_base
    }

    fn launch(&mut self, kernel: Kernel, threads: usize, args: &KernelArgs) -> anyhow::Result<()> {
        let index = Kernel::ALL
            .iter()
            .position(|&k| k == kernel)
            .context("unknown kernel")?;
        let blocks = u32::try_from(threads.div_ceil(BLOCK)).context("launch too large")?;
        let config = LaunchConfig {
            grid_dim: (blocks.max(1), 1, 1),
            block_dim: (BLOCK as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.stream.launch_builder(&self.functions[index]);
        launch.arg(args);
        // SAFETY: the kernel reads and writes through the addresses in `args`, offsets into
        // this backend's arenas chosen by the kernel trainer, which sizes every launch to the
        // buffers it passes (the emulator checks the same sequence on the CPU).
        unsafe { launch.launch(config) }.with_context(|| format!("launching {}", kernel.name()))?;
        Ok(())
    }

    fn gemm(&mut self, g: &ColumnMajorGemm) -> anyhow::Result<()> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the operands are ranges of the float arena laid out by the kernel trainer
        // (the emulator bounds-checks the same calls); cuBLAS runs on the arena's stream.
        unsafe {
            cudarc::cublas::result::sgemm(
                *self.blas.handle(),
                operation(g.trans_a),
                operation(g.trans_b),
                dim(g.m)?,
                dim(g.n)?,
                dim(g.k)?,
                &alpha,
                self.float_address(g.a) as *const f32,
                dim(g.lda)?,
                self.float_address(g.b) as *const f32,
                dim(g.ldb)?,
                &beta,
                self.float_address(g.c) as *mut f32,
                dim(g.ldc)?,
            )
        }
        .context("cuBLAS sgemm")?;
        Ok(())
    }

    fn write_floats(&mut self, offset: usize, values: &[f32]) -> anyhow::Result<()> {
        write(&self.stream, &mut self.floats, offset, values)
    }

    fn write_words(&mut self, offset: usize, values: &[u32]) -> anyhow::Result<()> {
        write(&self.stream, &mut self.words, offset, values)
    }

    fn read_floats(&mut self, offset: usize, out: &mut [f32]) -> anyhow::Result<()> {
        let end = offset + out.len();
        anyhow::ensure!(end <= self.floats.len(), "read outside the float arena");
        self.stream
            .memcpy_dtoh(&self.floats.slice(offset..end), out)?;
        self.stream.synchronize()?;
        Ok(())
    }
}

/// Copies `values` into `arena` at `offset`, on `stream`.
fn write<T: DeviceRepr>(
    stream: &Arc<CudaStream>,
    arena: &mut CudaSlice<T>,
    offset: usize,
    values: &[T],
) -> anyhow::Result<()> {
    let end = offset + values.len();
    anyhow::ensure!(end <= arena.len(), "write outside an arena");
    stream.memcpy_htod(values, &mut arena.slice_mut(offset..end))?;
    Ok(())
}

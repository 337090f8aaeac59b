//! Process-wide settings that make CPU training fast on small machines.
//!
//! Measured on a 2-core machine with the reference batch of 64 (see docs/src/measuring/training-speed.md): inside candle
//! the matrix products are too small for several GEMM threads to pay off (the fused trainer,
//! with no per-op overhead, uses every core), and candle's many short-lived
//! multi-megabyte tensors make glibc map and zero fresh pages on every step unless it is told
//! to keep freed memory.

pub(crate) mod matmul;

/// Threads for candle's CPU matrix products unless the user chose (`RAYON_NUM_THREADS`).
pub const DEFAULT_GEMM_THREADS: usize = 1;

/// Threads for the fused CPU trainer ([`crate::engine::fused`]): the number the user `chosen`, else
/// every core (its matrix products and Adam pass split well even at batch 64).
pub fn training_threads(chosen: Option<usize>) -> usize {
    match chosen {
        Some(n) => n.max(1),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// The GEMM threads candle's CPU matrix products take: what `RAYON_NUM_THREADS` says (the
/// variable candle reads when its pools start; a program sets it at its start, as the CLI's
/// `main` does from `--threads`), else [`DEFAULT_GEMM_THREADS`].
pub fn gemm_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_GEMM_THREADS)
}

/// Tunes the C allocator for training: every tensor from the heap (not fresh mmaps), freed
/// memory kept. Call at the start of a program, before other threads start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // Serve every tensor from the heap (not fresh mmaps) and never hand freed memory back.
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Tunes the C allocator for training (nothing to do on this platform).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}

/// The contiguous f32 elements an in-place CPU op works on: the target's, mutable, and the
/// source's; an error names `op` when a tensor is not contiguous f32 or the lengths differ.
pub fn f32_operands<'a>(
    op: &str,
    target: &'a mut candle_core::CpuStorage,
    target_layout: &candle_core::Layout,
    source: &'a candle_core::CpuStorage,
    source_layout: &candle_core::Layout,
) -> candle_core::Result<(&'a mut [f32], &'a [f32])> {
    use candle_core::CpuStorage;
    let (CpuStorage::F32(target), CpuStorage::F32(source)) = (target, source) else {
        candle_core::bail!("{op} needs f32 tensors");
    };
    let (Some((t0, t1)), Some((s0, s1))) = (
        target_layout.contiguous_offsets(),
        source_layout.contiguous_offsets(),
    ) else {
        candle_core::bail!("{op} needs contiguous tensors");
    };
    if t1 - t0 != s1 - s0 {
        candle_core::bail!("{op}: tensors of different lengths");
    }
    Ok((&mut target[t0..t1], &source[s0..s1]))
}

/// Threads of the phased convolutions ([`run_conv`]); 0: every core.
static CONV_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sets the threads the convolutional networks' convolutions run on (the CLI's `--threads`):
/// candle's own pool stays small for the MLP (see [`DEFAULT_GEMM_THREADS`]), so the
/// convolutions, where the work is, have pools of their own.
pub fn set_conv_threads(threads: usize) {
    CONV_THREADS.store(threads, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `work` on the convolutions' thread pool (one pool per thread count, built once), with
/// the matching `gemm` parallelism; on the caller's thread if no pool can start.
pub fn run_conv<T: Send>(work: impl FnOnce(gemm::Parallelism) -> T + Send) -> T {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Pools = Mutex<HashMap<usize, Option<Arc<rayon::ThreadPool>>>>;
    static POOLS: OnceLock<Pools> = OnceLock::new();
    let threads = match CONV_THREADS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => training_threads(None),
        n => n,
    };
    let pool = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(threads)
        .or_insert_with(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("mcugan-conv-{i}"))
                .build()
                .ok()
                .map(Arc::new)
        })
        .clone();
    match pool {
        Some(pool) if threads > 1 => pool.install(|| work(gemm::Parallelism::Rayon(threads))),
        _ => work(gemm::Parallelism::None),
    }
}
